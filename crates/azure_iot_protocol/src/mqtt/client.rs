//! The client role of IoT Hub MQTT as a state machine without I/O, in the style of
//! quinn-proto.
//!
//! [`Client`] is one device's (or module's) MQTT session. It never touches a socket or a
//! clock: the caller (an I/O pump, or a test on a simulated clock) feeds it what happened and
//! asks it what to do next.
//!
//! * Input: [`Client::connect`] (a new connection), [`Client::handle_packet`] (a packet read
//!   from the hub), [`Client::handle_timeout`] (the deadline from [`Client::poll_timeout`]
//!   passed), [`Client::connection_lost`], and one method per operation
//!   ([`Client::send_telemetry`], [`Client::twin_get`], [`Client::patch_reported`],
//!   [`Client::method_response`], [`Client::subscribe`], [`Client::complete`],
//!   [`Client::cancel`]). Every input takes `now`.
//! * Output: [`Client::poll_transmit`] (the next packet to write), [`Client::poll_timeout`]
//!   (when to call [`Client::handle_timeout`]), [`Client::poll_event`] (what the application
//!   must learn: acknowledgements, inbound messages, the connection's end).
//!
//! Call order for a pump: after any input, drain `poll_transmit` to the socket and
//! `poll_event` to the application, then wait for the socket, a command, or
//! `poll_timeout`.
//!
//! What the machine owns:
//!
//! * **Packet ids.** Ids are 1..=65 535, given in turn; an id still in flight (a PUBLISH
//!   without its PUBACK, a SUBSCRIBE without its SUBACK, a cancelled PUBLISH whose PUBACK may
//!   still come on this connection) is skipped, so a late acknowledgement can never complete
//!   the wrong operation.
//! * **The in-flight set and its bound.** At most `max_in_flight` PUBLISHes wait for their
//!   PUBACK on the wire; operations beyond that wait in order, unsent, and go out as
//!   acknowledgements free room. An operation carries a deadline: once it has passed the
//!   operation is never sent (again), and [`Event::Expired`] says so. [`Client::cancel`]
//!   does the same for a caller that went away.
//! * **Keep-alive.** After `keep_alive` without sending anything the client sends PINGREQ;
//!   if no PINGRESP comes within half a keep-alive the connection is dead
//!   ([`Event::ConnectionLost`] with [`LossReason::KeepAliveTimeout`]). While the
//!   application has paused reading ([`Client::pause_reading`], back-pressure from full
//!   inbound streams) PINGREQs still go out, so the hub keeps the connection, but a missing
//!   PINGRESP is not held against the hub: it sits unread in the socket.
//! * **Resume.** CONNECT has `clean_session = false`, as the official SDKs do. After a new
//!   CONNACK the client subscribes again to every feature it had, then sends every PUBLISH
//!   the hub had not acknowledged again, in the original order, with the same packet id and
//!   DUP set, then the operations that waited.
//! * **In-order PUBACKs** (MQTT 3.1.1 §4.6.0-2): inbound QoS 1 PUBLISHes are acknowledged in
//!   the order they arrived. A cloud-to-device message is acknowledged when the application
//!   completes it ([`Client::complete`]); everything else at once, but never ahead of an
//!   earlier message that is still being handled.
//!
//! It is IoT Hub-aware as far as a device needs: topics, property bags, the CONNECT user
//! name, twin request ids. Twin documents are not parsed here; that is the caller's business.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use azure_iot_core::Message;
use azure_iot_core::method::{MethodRequest, MethodResponse};
use bytes::Bytes;

use crate::Identity;
use crate::mqtt::codec::{
    Connect, ConnectReturnCode, Packet, PubAck, Publish, QoS, Subscribe, SubscribeFilter,
    SubscribeReasonCode, packet_name,
};
use crate::mqtt::{DownstreamTopic, HubUsername, PropertyBag, TopicFilter, UpstreamTopic};
use crate::request_id::RequestIdGenerator;

/// The most PUBLISHes [`Config::max_in_flight`] may allow: leaves ids for SUBSCRIBEs and
/// cancelled PUBLISHes, so that a free packet id always exists.
pub const MAX_IN_FLIGHT_LIMIT: usize = 65_000;

/// What a [`Client`] is for and how it behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// The device or module.
    pub identity: Identity,
    /// The hub's host name, as the CONNECT user name carries it.
    pub host: String,
    /// The IoT Plug and Play model id, if any.
    pub model_id: Option<String>,
    /// The `DeviceClientType` announced in the user name.
    pub client_type: String,
    /// The MQTT keep-alive; zero turns it off. Whole seconds go on the wire.
    pub keep_alive: Duration,
    /// How many PUBLISHes may wait for their PUBACK at once (1 to [`MAX_IN_FLIGHT_LIMIT`]).
    pub max_in_flight: usize,
}

/// A handle for one operation, named again in the [`Event`] that ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// A cloud-to-device message waiting to be completed with [`Client::complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delivery(u64);

/// What a subscription is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feature {
    /// Cloud-to-device messages (devices only).
    CloudToDevice,
    /// Answers to twin requests.
    TwinResponses,
    /// Desired-properties patches.
    DesiredPatches,
    /// Direct method calls.
    Methods,
}

/// Why a connection ended from the client's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LossReason {
    /// No PINGRESP within half a keep-alive after PINGREQ.
    KeepAliveTimeout,
    /// The hub sent something IoT Hub never sends (the detail says what).
    Protocol(String),
}

/// Something the application must learn.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// The hub accepted the connection; the session has been resumed on it.
    Connected,
    /// The hub refused the connection with this CONNACK code.
    Refused(ConnectReturnCode),
    /// The hub acknowledged the PUBLISH of this operation (for a twin request the answer
    /// comes later as [`Event::TwinResponse`]).
    Acked(OpId),
    /// The hub answered a [`Client::subscribe`] call.
    Subscribed {
        /// The operation.
        op: OpId,
        /// The feature.
        feature: Feature,
        /// False if the hub refused the filter.
        granted: bool,
    },
    /// The operation's deadline passed before it was (again) sent; it never will be.
    Expired(OpId),
    /// A cloud-to-device message; complete it with [`Client::complete`].
    CloudToDevice {
        /// The message.
        message: Box<Message>,
        /// What completes it.
        delivery: Delivery,
    },
    /// The answer to a twin request.
    TwinResponse {
        /// The request id the request carried.
        request_id: String,
        /// The status (200, 204, 4xx…).
        status: u16,
        /// The twin version, on a reported-properties answer.
        version: Option<i64>,
        /// The body.
        body: Bytes,
    },
    /// A desired-properties patch.
    DesiredPatch {
        /// The desired version after the patch.
        version: i64,
        /// The patch (JSON).
        body: Bytes,
    },
    /// A direct method call.
    MethodRequest(MethodRequest),
    /// The connection is dead; the caller closes the socket and may [`Client::connect`] again.
    ConnectionLost(LossReason),
}

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// No connection (before the first, or after one was lost).
    Down,
    /// CONNECT sent, no CONNACK yet.
    Connecting,
    /// CONNACK received.
    Up,
}

/// What an operation publishes.
#[derive(Debug)]
struct Outbound {
    op: OpId,
    topic: String,
    payload: Bytes,
    deadline: Instant,
}

/// A packet id's owner.
#[derive(Debug)]
enum Flight {
    /// A PUBLISH waiting for its PUBACK; `order` keeps resends in the original order.
    Publish { order: u64, outbound: Outbound },
    /// A cancelled PUBLISH: its PUBACK may still come on this connection, so the id stays
    /// taken until then (or until the connection ends).
    Cancelled,
    /// A SUBSCRIBE waiting for its SUBACK.
    Subscribe(Feature),
}

/// A subscription's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    /// Wanted; to be sent once connected.
    Wanted,
    /// SUBSCRIBE sent on this connection.
    Pending,
    /// SUBACK received on this connection.
    Granted,
}

/// An inbound QoS 1 PUBLISH whose PUBACK has not been sent.
#[derive(Debug)]
struct Unacked {
    delivery: u64,
    pkid: u16,
    done: bool,
}

/// The session of one device or module. See the module documentation. `Debug` shows its
/// state, never the packets it holds (a queued CONNECT carries the SAS token).
pub struct Client {
    config: Config,
    link: Link,
    next_op: u64,
    next_pkid: u16,
    next_order: u64,
    next_delivery: u64,
    request_ids: RequestIdGenerator,
    /// Packet id → owner, on the wire (or to be resent on resume).
    flights: BTreeMap<u16, Flight>,
    /// How many of `flights` are `Flight::Publish` or `Flight::Cancelled` (a cancelled PUBLISH
    /// keeps its slot until its PUBACK or the end of the connection).
    publishes_in_flight: usize,
    /// Operations not yet sent, in order.
    waiting: VecDeque<Outbound>,
    /// Packet ids to send again with DUP, in order (after a resume).
    resend: VecDeque<u16>,
    subscriptions: BTreeMap<Feature, Sub>,
    /// Callers waiting for a feature's SUBACK.
    sub_waiters: HashMap<Feature, Vec<OpId>>,
    /// Control packets to send before anything else (CONNECT, SUBSCRIBE, PUBACK, PINGREQ…).
    control: VecDeque<Packet>,
    unacked: VecDeque<Unacked>,
    events: VecDeque<Event>,
    last_sent: Option<Instant>,
    ping_sent: Option<Instant>,
    reading_paused: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("identity", &self.config.identity)
            .field("link", &self.link)
            .field("in_flight", &self.publishes_in_flight)
            .field("waiting", &self.waiting.len())
            .field("resend", &self.resend.len())
            .field("control_packets", &self.control.len())
            .field("unacked_inbound", &self.unacked.len())
            .field("subscriptions", &self.subscriptions)
            .field("reading_paused", &self.reading_paused)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A session with nothing in flight and no connection.
    pub fn new(config: Config) -> Self {
        let config = Config {
            max_in_flight: config.max_in_flight.clamp(1, MAX_IN_FLIGHT_LIMIT),
            ..config
        };
        Self {
            config,
            link: Link::Down,
            next_op: 0,
            next_pkid: 0,
            next_order: 0,
            next_delivery: 0,
            request_ids: RequestIdGenerator::new(),
            flights: BTreeMap::new(),
            publishes_in_flight: 0,
            waiting: VecDeque::new(),
            resend: VecDeque::new(),
            subscriptions: BTreeMap::new(),
            sub_waiters: HashMap::new(),
            control: VecDeque::new(),
            unacked: VecDeque::new(),
            events: VecDeque::new(),
            last_sent: None,
            ping_sent: None,
            reading_paused: false,
        }
    }

    /// The identity this session is for.
    pub fn identity(&self) -> &Identity {
        &self.config.identity
    }

    /// Whether the hub has accepted the current connection.
    pub fn is_connected(&self) -> bool {
        self.link == Link::Up
    }

    /// How many PUBLISHes wait for a PUBACK (including those to resend, and cancelled ones
    /// still on the wire).
    pub fn in_flight(&self) -> usize {
        self.publishes_in_flight
    }

    /// How many operations wait to be sent for the first time.
    pub fn queued(&self) -> usize {
        self.waiting.len()
    }

    /// The CONNECT for this identity, as [`Client::connect`] queues it.
    fn connect_packet(&self, password: Option<&str>) -> Packet {
        let username = HubUsername::new(
            self.config.host.clone(),
            self.config.identity.clone(),
            &self.config.client_type,
            self.config.model_id.as_deref(),
        );
        let mut connect = Connect::new(self.config.identity.client_id());
        connect.keep_alive = u16::try_from(self.config.keep_alive.as_secs()).unwrap_or(u16::MAX);
        connect.clean_session = false;
        // X.509 authenticates in TLS; the hub still wants the user name.
        connect.set_login(username.to_string(), password.unwrap_or_default());
        Packet::Connect(connect)
    }

    /// A new connection is open: queues CONNECT (`password` is the SAS token, `None` for
    /// X.509). Whatever the last connection left unsent stays for the resume.
    pub fn connect(&mut self, now: Instant, password: Option<&str>) {
        self.reset_connection();
        self.control.push_back(self.connect_packet(password));
        self.link = Link::Connecting;
        self.last_sent = Some(now);
    }

    /// The connection ended (socket closed, reset, or given up by the caller). Operations
    /// stay: they are sent again on the next connection.
    pub fn connection_lost(&mut self, _now: Instant) {
        self.reset_connection();
    }

    /// Queues DISCONNECT (the caller closes the socket after writing it).
    pub fn disconnect(&mut self, _now: Instant) {
        if self.link == Link::Up {
            self.control.push_back(Packet::Disconnect);
        }
        self.link = Link::Down;
    }

    /// Forgets everything that belonged to the last connection.
    fn reset_connection(&mut self) {
        self.link = Link::Down;
        self.control.clear();
        self.resend.clear();
        // Inbound messages not acknowledged are redelivered by the hub (persistent session).
        self.unacked.clear();
        self.ping_sent = None;
        self.reading_paused = false;
        let flights = std::mem::take(&mut self.flights);
        let mut resend: Vec<(u64, u16, Outbound)> = Vec::new();
        for (pkid, flight) in flights {
            match flight {
                Flight::Publish { order, outbound } => resend.push((order, pkid, outbound)),
                // A cancelled PUBLISH's PUBACK cannot come on another connection.
                Flight::Cancelled => {}
                Flight::Subscribe(_) => {}
            }
        }
        resend.sort_by_key(|(order, ..)| *order);
        // Cancelled PUBLISHes end with the connection and free their slots.
        self.publishes_in_flight = resend.len();
        for (order, pkid, outbound) in resend {
            self.flights
                .insert(pkid, Flight::Publish { order, outbound });
            self.resend.push_back(pkid);
        }
        for sub in self.subscriptions.values_mut() {
            *sub = Sub::Wanted;
        }
    }

    /// The next operation id.
    fn op(&mut self) -> OpId {
        self.next_op += 1;
        OpId(self.next_op)
    }

    /// A free packet id: the next in turn that is not in flight (never 0).
    fn pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.flights.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    fn enqueue(&mut self, topic: String, payload: Bytes, deadline: Instant) -> OpId {
        let op = self.op();
        self.waiting.push_back(Outbound {
            op,
            topic,
            payload,
            deadline,
        });
        op
    }

    /// Sends `message` as telemetry (or module output); [`Event::Acked`] on its PUBACK.
    /// Not sent once `deadline` has passed.
    pub fn send_telemetry(&mut self, _now: Instant, message: &Message, deadline: Instant) -> OpId {
        let topic = UpstreamTopic::Telemetry {
            identity: self.config.identity.clone(),
            properties: PropertyBag::from_message(message),
        };
        self.enqueue(topic.to_string(), message.body().clone(), deadline)
    }

    /// Asks for the twin; the answer is an [`Event::TwinResponse`] with the returned request
    /// id. Subscribes to twin responses first if needed (without a SUBACK to wait for: the
    /// hub handles a connection's packets in order).
    pub fn twin_get(&mut self, now: Instant, deadline: Instant) -> (OpId, String) {
        self.ensure_subscribed(now, Feature::TwinResponses);
        let request_id = self.request_ids.next_id();
        let topic = UpstreamTopic::TwinGet {
            request_id: request_id.clone(),
        };
        (
            self.enqueue(topic.to_string(), Bytes::new(), deadline),
            request_id,
        )
    }

    /// Patches reported properties with `body` (a JSON object); answered like
    /// [`Client::twin_get`].
    pub fn patch_reported(
        &mut self,
        now: Instant,
        body: Bytes,
        deadline: Instant,
    ) -> (OpId, String) {
        self.ensure_subscribed(now, Feature::TwinResponses);
        let request_id = self.request_ids.next_id();
        let topic = UpstreamTopic::TwinPatchReported {
            request_id: request_id.clone(),
            version: None,
        };
        (self.enqueue(topic.to_string(), body, deadline), request_id)
    }

    /// Answers a direct method call; [`Event::Acked`] on its PUBACK.
    pub fn method_response(
        &mut self,
        _now: Instant,
        response: &MethodResponse,
        deadline: Instant,
    ) -> OpId {
        let topic = UpstreamTopic::MethodResponse {
            status: response.status,
            request_id: response.request_id.clone(),
        };
        self.enqueue(topic.to_string(), response.body(), deadline)
    }

    /// Subscribes to `feature` (kept across reconnects); [`Event::Subscribed`] when the hub
    /// answered, at once if it already granted it on this connection. `None` for a feature
    /// this identity cannot have (cloud-to-device messages for a module).
    pub fn subscribe(&mut self, now: Instant, feature: Feature) -> Option<OpId> {
        filter(&self.config.identity, feature)?;
        let op = self.op();
        if self.subscriptions.get(&feature) == Some(&Sub::Granted) {
            self.events.push_back(Event::Subscribed {
                op,
                feature,
                granted: true,
            });
            return Some(op);
        }
        self.sub_waiters.entry(feature).or_default().push(op);
        self.want(now, feature);
        Some(op)
    }

    /// Subscribes without a caller waiting for the SUBACK.
    fn ensure_subscribed(&mut self, now: Instant, feature: Feature) {
        if !self.subscriptions.contains_key(&feature) {
            self.want(now, feature);
        }
    }

    fn want(&mut self, _now: Instant, feature: Feature) {
        let state = self.subscriptions.entry(feature).or_insert(Sub::Wanted);
        if *state == Sub::Wanted && self.link == Link::Up {
            self.send_subscribe(feature);
        }
    }

    fn send_subscribe(&mut self, feature: Feature) {
        let Some(filter) = filter(&self.config.identity, feature) else {
            return;
        };
        let pkid = self.pkid();
        let mut subscribe =
            Subscribe::new_many([SubscribeFilter::new(filter.to_string(), QoS::AtLeastOnce)]);
        subscribe.pkid = pkid;
        self.flights.insert(pkid, Flight::Subscribe(feature));
        self.subscriptions.insert(feature, Sub::Pending);
        self.control.push_back(Packet::Subscribe(subscribe));
    }

    /// The operation's caller went away: it is never sent (again). Returns whether it was
    /// still waiting for its acknowledgement.
    pub fn cancel(&mut self, op: OpId) -> bool {
        if let Some(index) = self.waiting.iter().position(|o| o.op == op) {
            self.waiting.remove(index);
            return true;
        }
        let pkid = self.flights.iter().find_map(|(pkid, flight)| match flight {
            Flight::Publish { outbound, .. } if outbound.op == op => Some(*pkid),
            _ => None,
        });
        if let Some(pkid) = pkid {
            // The PUBLISH is on the wire: its id stays taken, and its in-flight slot with it,
            // until its PUBACK or the end of the connection. Otherwise an application that
            // keeps cancelling while the hub withholds PUBACKs would use up every packet id.
            self.flights.insert(pkid, Flight::Cancelled);
            self.resend.retain(|p| *p != pkid);
            return true;
        }
        false
    }

    /// The application has handled the cloud-to-device message `delivery`: its PUBACK goes
    /// out once every earlier inbound message has been acknowledged. `false` if it belongs to
    /// a connection that has ended (the hub will deliver it again) or was completed already.
    pub fn complete(&mut self, _now: Instant, delivery: Delivery) -> bool {
        let Some(entry) = self
            .unacked
            .iter_mut()
            .find(|u| u.delivery == delivery.0 && !u.done)
        else {
            return false;
        };
        entry.done = true;
        self.flush_acks();
        true
    }

    /// Sends the PUBACKs that are due, in arrival order.
    fn flush_acks(&mut self) {
        while self.unacked.front().is_some_and(|u| u.done) {
            if let Some(u) = self.unacked.pop_front() {
                self.control.push_back(Packet::PubAck(PubAck::new(u.pkid)));
            }
        }
    }

    /// The application cannot take more inbound messages: the caller stops reading the
    /// socket. PINGREQs still go out; a missing PINGRESP is not counted until
    /// [`Client::resume_reading`].
    pub fn pause_reading(&mut self, _now: Instant) {
        self.reading_paused = true;
    }

    /// Reading goes on; an outstanding PINGREQ gets half a keep-alive from `now`.
    pub fn resume_reading(&mut self, now: Instant) {
        if self.reading_paused && self.ping_sent.is_some() {
            self.ping_sent = Some(now);
        }
        self.reading_paused = false;
    }

    /// When [`Client::handle_timeout`] must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut deadline = if self.link == Link::Up {
            self.keep_alive_deadline()
        } else {
            None
        };
        let mut earliest = |at: Instant| {
            deadline = Some(deadline.map_or(at, |d: Instant| d.min(at)));
        };
        // An operation that expires while it waits must be reported, connected or not.
        if let Some(outbound) = self.waiting.front() {
            earliest(outbound.deadline);
        }
        if self.link != Link::Up {
            for flight in self.flights.values() {
                if let Flight::Publish { outbound, .. } = flight {
                    earliest(outbound.deadline);
                }
            }
        }
        deadline
    }

    fn keep_alive_deadline(&self) -> Option<Instant> {
        let keep_alive = self.config.keep_alive;
        if keep_alive.is_zero() {
            return None;
        }
        let idle = self.last_sent.map(|sent| sent + keep_alive);
        match self.ping_sent {
            Some(sent) if !self.reading_paused => {
                let answer_by = sent + keep_alive / 2;
                Some(idle.map_or(answer_by, |idle| idle.min(answer_by)))
            }
            _ => idle,
        }
    }

    /// Time has reached a deadline from [`Client::poll_timeout`]: sends PINGREQ, declares
    /// the connection dead, or expires operations.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire(now);
        if self.link != Link::Up || self.config.keep_alive.is_zero() {
            return;
        }
        let keep_alive = self.config.keep_alive;
        if let Some(sent) = self.ping_sent
            && !self.reading_paused
            && now >= sent + keep_alive / 2
        {
            self.reset_connection();
            self.events
                .push_back(Event::ConnectionLost(LossReason::KeepAliveTimeout));
            return;
        }
        if self.last_sent.is_none_or(|sent| now >= sent + keep_alive) {
            self.control.push_back(Packet::PingReq);
            if self.ping_sent.is_none() {
                self.ping_sent = Some(now);
            }
            // Counts as sent now, so the next PINGREQ (while reading is paused) comes a
            // keep-alive later.
            self.last_sent = Some(now);
        }
    }

    /// Drops operations whose deadline has passed and that are not on the wire: those
    /// waiting to be sent, and, while disconnected, those waiting to be sent again.
    fn expire(&mut self, now: Instant) {
        let mut expired = Vec::new();
        self.waiting.retain(|o| {
            let keep = o.deadline > now;
            if !keep {
                expired.push(o.op);
            }
            keep
        });
        if self.link != Link::Up {
            let mut gone = Vec::new();
            for (pkid, flight) in &self.flights {
                if let Flight::Publish { outbound, .. } = flight
                    && outbound.deadline <= now
                {
                    gone.push((*pkid, outbound.op));
                }
            }
            for (pkid, op) in gone {
                self.flights.remove(&pkid);
                self.publishes_in_flight -= 1;
                self.resend.retain(|p| *p != pkid);
                expired.push(op);
            }
        }
        self.events.extend(expired.into_iter().map(Event::Expired));
    }

    /// The next packet to write, if any. Operations whose deadline has passed by `now` are
    /// dropped here instead of being sent.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Packet> {
        let packet = self.next_packet(now)?;
        self.last_sent = Some(now);
        Some(packet)
    }

    fn next_packet(&mut self, now: Instant) -> Option<Packet> {
        if let Some(packet) = self.control.pop_front() {
            return Some(packet);
        }
        if self.link != Link::Up {
            return None;
        }
        while let Some(pkid) = self.resend.pop_front() {
            match self.flights.get(&pkid) {
                Some(Flight::Publish { outbound, .. }) if outbound.deadline <= now => {
                    let op = outbound.op;
                    self.flights.remove(&pkid);
                    self.publishes_in_flight -= 1;
                    self.events.push_back(Event::Expired(op));
                }
                Some(Flight::Publish { outbound, .. }) => {
                    let mut publish = Publish::new(
                        outbound.topic.clone(),
                        QoS::AtLeastOnce,
                        outbound.payload.clone(),
                    );
                    publish.pkid = pkid;
                    publish.dup = true;
                    return Some(Packet::Publish(publish));
                }
                _ => {}
            }
        }
        self.expire(now);
        if self.publishes_in_flight >= self.config.max_in_flight {
            return None;
        }
        let outbound = self.waiting.pop_front()?;
        let pkid = self.pkid();
        let mut publish = Publish::new(
            outbound.topic.clone(),
            QoS::AtLeastOnce,
            outbound.payload.clone(),
        );
        publish.pkid = pkid;
        self.next_order += 1;
        self.flights.insert(
            pkid,
            Flight::Publish {
                order: self.next_order,
                outbound,
            },
        );
        self.publishes_in_flight += 1;
        Some(Packet::Publish(publish))
    }

    /// The next thing the application must learn, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A packet read from the hub. `Err` for a packet IoT Hub never sends a device: the
    /// connection is then over (as after [`Client::connection_lost`]) and
    /// [`Event::ConnectionLost`] says why.
    pub fn handle_packet(&mut self, now: Instant, packet: Packet) -> Result<(), LossReason> {
        let result = self.dispatch(now, packet);
        if let Err(reason) = &result {
            self.reset_connection();
            self.events.push_back(Event::ConnectionLost(reason.clone()));
        }
        result
    }

    fn dispatch(&mut self, now: Instant, packet: Packet) -> Result<(), LossReason> {
        match (self.link, packet) {
            (Link::Connecting, Packet::ConnAck(ack)) => {
                if ack.code == ConnectReturnCode::Success {
                    self.link = Link::Up;
                    self.resume(now);
                    self.events.push_back(Event::Connected);
                } else {
                    self.link = Link::Down;
                    self.events.push_back(Event::Refused(ack.code));
                }
                Ok(())
            }
            (Link::Up, Packet::PubAck(ack)) => {
                match self.flights.remove(&ack.pkid) {
                    Some(Flight::Publish { outbound, .. }) => {
                        self.publishes_in_flight -= 1;
                        self.events.push_back(Event::Acked(outbound.op));
                    }
                    Some(Flight::Cancelled) => self.publishes_in_flight -= 1,
                    None => {}
                    Some(other) => {
                        self.flights.insert(ack.pkid, other);
                        return Err(LossReason::Protocol(format!(
                            "the hub sent PUBACK for SUBSCRIBE {}",
                            ack.pkid
                        )));
                    }
                }
                Ok(())
            }
            (Link::Up, Packet::SubAck(ack)) => {
                let granted = ack
                    .return_codes
                    .iter()
                    .all(|code| matches!(code, SubscribeReasonCode::Success(_)));
                match self.flights.remove(&ack.pkid) {
                    Some(Flight::Subscribe(feature)) => {
                        if granted {
                            self.subscriptions.insert(feature, Sub::Granted);
                        } else {
                            self.subscriptions.remove(&feature);
                        }
                        for op in self.sub_waiters.remove(&feature).unwrap_or_default() {
                            self.events.push_back(Event::Subscribed {
                                op,
                                feature,
                                granted,
                            });
                        }
                    }
                    Some(other) => {
                        self.flights.insert(ack.pkid, other);
                    }
                    None => {}
                }
                Ok(())
            }
            (Link::Up, Packet::PingResp) => {
                self.ping_sent = None;
                Ok(())
            }
            (Link::Up, Packet::UnsubAck(_)) => Ok(()),
            (Link::Up, Packet::Publish(publish)) => self.inbound(publish),
            (_, other) => Err(LossReason::Protocol(format!(
                "the hub sent an unexpected {} packet",
                packet_name(&other)
            ))),
        }
    }

    /// After CONNACK: subscribe again, then resend (already queued by the reset), then the
    /// operations that waited (sent by `poll_transmit` as room allows).
    fn resume(&mut self, now: Instant) {
        self.last_sent = Some(now);
        let wanted: Vec<Feature> = self
            .subscriptions
            .iter()
            .filter(|(_, s)| **s == Sub::Wanted)
            .map(|(f, _)| *f)
            .collect();
        for feature in wanted {
            self.send_subscribe(feature);
        }
    }

    fn inbound(&mut self, publish: Publish) -> Result<(), LossReason> {
        let topic = DownstreamTopic::parse(&publish.topic).map_err(|e| {
            LossReason::Protocol(format!("the hub published to an unknown topic: {e}"))
        })?;
        let event = match topic {
            DownstreamTopic::CloudToDevice { properties, .. } => {
                let message = properties
                    .to_message(publish.payload)
                    .map_err(|e| LossReason::Protocol(format!("cloud-to-device message: {e}")))?;
                self.next_delivery += 1;
                let delivery = Delivery(self.next_delivery);
                if publish.qos == QoS::AtLeastOnce {
                    self.unacked.push_back(Unacked {
                        delivery: delivery.0,
                        pkid: publish.pkid,
                        done: false,
                    });
                }
                self.events.push_back(Event::CloudToDevice {
                    message: Box::new(message),
                    delivery,
                });
                return Ok(());
            }
            DownstreamTopic::TwinResponse {
                status,
                request_id,
                version,
            } => Event::TwinResponse {
                request_id,
                status,
                version,
                body: publish.payload,
            },
            DownstreamTopic::DesiredPatch { version } => Event::DesiredPatch {
                version,
                body: publish.payload,
            },
            DownstreamTopic::MethodRequest {
                method_name,
                request_id,
            } => MethodRequest::from_wire(method_name, request_id, &publish.payload)
                .map(Event::MethodRequest)
                .map_err(|e| LossReason::Protocol(format!("method payload is not JSON: {e}")))?,
            other => {
                return Err(LossReason::Protocol(format!(
                    "the hub published to a topic a device does not receive: {other}"
                )));
            }
        };
        if publish.qos == QoS::AtLeastOnce {
            self.next_delivery += 1;
            self.unacked.push_back(Unacked {
                delivery: self.next_delivery,
                pkid: publish.pkid,
                done: true,
            });
            self.flush_acks();
        }
        self.events.push_back(event);
        Ok(())
    }
}

/// The topic filter for `feature`, or `None` if `identity` cannot have it.
fn filter(identity: &Identity, feature: Feature) -> Option<TopicFilter> {
    Some(match feature {
        Feature::CloudToDevice if identity.is_module() => return None,
        Feature::CloudToDevice => TopicFilter::CloudToDevice {
            device_id: identity.device_id().to_owned(),
        },
        Feature::TwinResponses => TopicFilter::TwinResponses,
        Feature::DesiredPatches => TopicFilter::DesiredPatches,
        Feature::Methods => TopicFilter::MethodRequests,
    })
}

/// Whether a CONNACK code means the credentials were refused (as opposed to another refusal).
pub fn is_unauthorized(code: ConnectReturnCode) -> bool {
    matches!(
        code,
        ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized
    )
}

#[cfg(test)]
mod tests;
