//! One device or module connection over MQTT 3.1.1: a codec and flow adapter over the device
//! core (`crate::device`), which holds every IoT Hub rule.
//!
//! ```text
//!  CONNECT ─▶ username/client id ─▶ DeviceCore::open ─▶ resume kept features ─▶ CONNACK
//!  then one loop over:
//!    socket packets   PUBLISH (telemetry, twin GET/PATCH, method responses) → core calls,
//!                     SUBSCRIBE/UNSUBSCRIBE (ACL-checked) → features, PINGREQ, DISCONNECT
//!    telemetry acks   PUBACK each message, in order, once its commit resolves
//!    core events      desired patches, C2D messages, method requests → PUBLISH; close
//!    deadlines        1.5 × keep-alive without a packet; credential expiry
//! ```
//!
//! Twin responses, desired patches and method requests go out at QoS 0 whatever QoS the
//! subscription was granted, as IoT Hub sends them (a real hub's logs show `q0` to a client
//! that subscribed at QoS 1); cloud-to-device messages at the granted QoS, their PUBACK being
//! the completion.
//!
//! What is MQTT's stays here: topics and filters, packet ids, QoS, in-order PUBACKs, the
//! retain flag (the hub marks such a message `mqtt-retain`), and the refusal → CONNACK code
//! mapping. Anything MQTT at IoT Hub does not allow — QoS 2, a topic outside the identity's
//! own, an unknown subscription, an oversize message, a second CONNECT — ends this connection
//! only, as the hub does, with the reason logged.
//!
//! Memory: a hub holds many idle connections, so an idle one keeps only what it must. The
//! connection task holds the session and its serve loop; the connect and close phases run
//! boxed, freed when done. Reads pass through an 8 KiB stack chunk into a read buffer that is
//! let go once its packets are taken, and a write buffer that grew past 1 KiB for a large
//! message is let go after its flush (a batch of acknowledgements keeps its buffer, so the
//! ingest path does not allocate per flush). Idle, a session holds no buffer of its own.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use azure_iot_protocol::Identity;
use azure_iot_protocol::mqtt::codec::{
    ConnAck, Connect, ConnectReturnCode, MAX_PACKET_BYTES, Packet, PubAck, Publish, QoS, SubAck,
    SubscribeReasonCode, UnsubAck, packet_name, read_packet, write_packet,
};
use azure_iot_protocol::mqtt::{
    DownstreamTopic, HubUsername, InputsFilterForm, TopicFilter, UpstreamTopic,
};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use super::MqttContext;
use super::wire::{Closed, Next, Wire};
use crate::device::{
    Acknowledge, Commit, DeviceConnection, Event, Feature, OpenRequest, RefusalReason,
    twin_error_body,
};
use crate::hub::c2d::C2dDelivery;
use crate::hub::error::HubError;
use crate::hub::queue::Settle;

/// The hub's cap on the keep-alive interval it honours (1767 s ÷ 1.5).
pub(super) const MAX_KEEP_ALIVE: Duration = Duration::from_secs(1177);
/// Telemetry messages a connection may have waiting for the log before reading pauses.
const MAX_PENDING_ACKS: usize = 1024;
/// Bytes read from the socket at most per read (through the stack, see [`read_some`]).
const READ_CHUNK: usize = 8 * 1024;

/// A telemetry PUBACK waiting for its commit: the packet id (none at QoS 0) and the commit.
type Ack = (Option<u16>, Commit);

/// What a session waits for besides the device's packets.
enum Work {
    /// A telemetry commit finished: the packet id, when to acknowledge, and whether it is
    /// durable.
    Ack(Option<u16>, Acknowledge, Result<(), String>),
    /// The device core has something for the device.
    Event(Event),
    /// The device's SAS token expired.
    Expired,
}

/// Serves one connection until it ends.
///
/// The returned future is what the connection's task holds for its whole life, so it is kept
/// to the session and its serve loop (4.5 KiB): the connect phase (reading CONNECT,
/// authentication, CONNACK), whose future is several KB larger and is done after one round
/// trip, runs boxed and is freed once the session is open; so is the closing phase.
pub(crate) fn run<S>(
    io: S,
    peer: SocketAddr,
    ctx: Arc<MqttContext>,
    client_certificate: Vec<rustls_pki_types::CertificateDer<'static>>,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let opening = Box::pin(open_session(io, peer, ctx, client_certificate));
    async move {
        // Awaited by value: the box is dropped as soon as the session is open.
        let Some(mut session) = opening.await else {
            return;
        };
        let reason = session.serve().await;
        tracing::info!(identity = %session.identity, %peer, %reason, "device disconnected");
        Box::pin(session.close()).await;
    }
}

/// Reads CONNECT (within the limits' `connect_timeout`), authenticates it and answers CONNACK; `None`
/// if the connection ended or was refused (the reason is logged).
async fn open_session<S>(
    mut io: S,
    peer: SocketAddr,
    ctx: Arc<MqttContext>,
    client_certificate: Vec<rustls_pki_types::CertificateDer<'static>>,
) -> Option<Session<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut buffer = BytesMut::new();
    let connect_timeout = ctx.limits.connect_timeout;
    let connect = match tokio::time::timeout(connect_timeout, first_packet(&mut io, &mut buffer))
        .await
    {
        Ok(Ok(Packet::Connect(connect))) => connect,
        Ok(Ok(other)) => {
            tracing::info!(%peer, packet = ?packet_name(&other), "first packet was not CONNECT; closing");
            return None;
        }
        Ok(Err(reason)) => {
            tracing::debug!(%peer, %reason, "connection closed before CONNECT");
            return None;
        }
        Err(_) => {
            tracing::info!(%peer, "no CONNECT within {connect_timeout:?}; closing");
            return None;
        }
    };
    if let Some(login) = &connect.login
        && crate::route::mqtt(&login.username) == crate::route::Service::Dps
    {
        // A device registering with DPS: served here, in this boxed phase, for its whole
        // (short) life; the hub's session never exists.
        super::dps::serve(io, buffer, connect, peer, ctx, client_certificate).await;
        return None;
    }
    release_if_empty(&mut buffer);
    Session::open(io, buffer, connect, peer, ctx, client_certificate).await
}

async fn first_packet<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    buffer: &mut BytesMut,
) -> Result<Packet, Closed> {
    loop {
        match read_packet(buffer, MAX_PACKET_BYTES) {
            Ok(Some(packet)) => return Ok(packet),
            Ok(None) => {}
            Err(e) => {
                // MQTT-3.1.2-2: another protocol version gets CONNACK 0x01, then the close.
                if e.unsupported_protocol_level().is_some() {
                    let _ = send_connack(io, ConnectReturnCode::RefusedProtocolVersion).await;
                }
                return Err(e.to_string());
            }
        }
        if read_some(io, buffer).await.map_err(|e| e.to_string())? == 0 {
            return Err("the client closed the connection".into());
        }
    }
}

/// Reads what the connection has, at most [`READ_CHUNK`] bytes, and appends it to `buffer`;
/// 0 at the end of the stream. The bytes pass through the stack, so a connection waiting for
/// its next packet holds no read buffer of its own (`buffer` is allocated for what arrived,
/// and let go by [`release_if_empty`] once its packets are taken). Cancel-safe: nothing is
/// read unless the read completes.
pub(super) async fn read_some<S: AsyncRead + Unpin>(
    io: &mut S,
    buffer: &mut BytesMut,
) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| {
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut read = ReadBuf::uninit(&mut chunk);
        match Pin::new(&mut *io).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                buffer.extend_from_slice(read.filled());
                Poll::Ready(Ok(read.filled().len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Lets go of `buffer`'s memory once every packet in it is taken. The packets decoded from
/// it share its block, so without this an idle connection would keep the block of its last
/// read alive; this costs no allocation (the next read allocates for what it brings).
pub(super) fn release_if_empty(buffer: &mut BytesMut) {
    if buffer.is_empty() {
        *buffer = BytesMut::new();
    }
}

/// The MQTT CONNACK code for a neutral refusal.
fn connack_code(reason: RefusalReason) -> ConnectReturnCode {
    match reason {
        RefusalReason::UnsupportedProtocol => ConnectReturnCode::RefusedProtocolVersion,
        RefusalReason::IdentifierRejected => ConnectReturnCode::BadClientId,
        RefusalReason::ServerUnavailable => ConnectReturnCode::ServiceUnavailable,
        RefusalReason::BadCredentials => ConnectReturnCode::BadUserNamePassword,
        _ => ConnectReturnCode::NotAuthorized,
    }
}

/// The feature a subscription asks the hub for.
fn feature_of(filter: &TopicFilter) -> Option<Feature> {
    Some(match filter {
        TopicFilter::CloudToDevice { .. } => Feature::CloudToDevice,
        TopicFilter::ModuleInputs { .. } => Feature::ModuleInputs,
        TopicFilter::TwinResponses => Feature::TwinResponses,
        TopicFilter::DesiredPatches => Feature::DesiredPatches,
        TopicFilter::MethodRequests => Feature::Methods,
        _ => return None,
    })
}

/// The filter that resumes a kept `feature` for `identity`.
fn filter_of(feature: Feature, identity: &Identity) -> TopicFilter {
    match feature {
        Feature::CloudToDevice => TopicFilter::CloudToDevice {
            device_id: identity.device_id().to_owned(),
        },
        Feature::ModuleInputs => TopicFilter::ModuleInputs {
            identity: identity.clone(),
            form: InputsFilterForm::Inputs,
        },
        Feature::TwinResponses => TopicFilter::TwinResponses,
        Feature::DesiredPatches => TopicFilter::DesiredPatches,
        Feature::Methods => TopicFilter::MethodRequests,
    }
}

struct Session<S> {
    wire: Wire<S>,
    ctx: Arc<MqttContext>,
    peer: SocketAddr,
    identity: Identity,
    device: DeviceConnection,
    subscriptions: BTreeMap<String, (TopicFilter, QoS)>,
    next_packet_id: u16,
    acks: VecDeque<Ack>,
    /// Cloud-to-device messages delivered at QoS 1 and not yet acknowledged: packet id →
    /// message id. The device's PUBACK completes the message.
    c2d_inflight: HashMap<u16, u64>,
    /// Deliveries handed over while a SUBSCRIBE is processed, published once it is recorded.
    pending_c2d: Vec<C2dDelivery>,
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// Authenticates the CONNECT through the device core, resumes a kept session and sends
    /// CONNACK.
    async fn open(
        mut io: S,
        read_buf: BytesMut,
        connect: Connect,
        peer: SocketAddr,
        ctx: Arc<MqttContext>,
        client_certificate: Vec<rustls_pki_types::CertificateDer<'static>>,
    ) -> Option<Self> {
        let refuse = |code: ConnectReturnCode, reason: String| (code, reason);
        let checked = (|| {
            let login = connect.login.as_ref().ok_or_else(|| {
                refuse(
                    ConnectReturnCode::BadUserNamePassword,
                    "CONNECT has no user name".into(),
                )
            })?;
            let username = HubUsername::parse(&login.username).map_err(|e| {
                refuse(
                    ConnectReturnCode::BadUserNamePassword,
                    format!("user name: {e}"),
                )
            })?;
            let identity = Identity::parse_client_id(&connect.client_id)
                .map_err(|e| refuse(ConnectReturnCode::BadClientId, format!("client id: {e}")))?;
            if username.identity() != &identity {
                return Err(refuse(
                    ConnectReturnCode::BadUserNamePassword,
                    format!(
                        "the user name names {} but the client id is {identity}",
                        username.identity()
                    ),
                ));
            }
            if !username.host().eq_ignore_ascii_case(&ctx.device.hostname) {
                return Err(refuse(
                    ConnectReturnCode::NotAuthorized,
                    format!(
                        "the user name names hub `{}`, this is `{}`",
                        username.host(),
                        ctx.device.hostname
                    ),
                ));
            }
            Ok((identity, username, login.password.clone()))
        })();
        let (identity, username, password) = match checked {
            Ok(ok) => ok,
            Err((code, reason)) => {
                tracing::info!(%peer, client_id = %connect.client_id, %reason, "CONNECT refused");
                let _ = send_connack(&mut io, code).await;
                return None;
            }
        };
        let request = OpenRequest {
            identity: identity.clone(),
            sas_token: Some(password).filter(|p| !p.is_empty()),
            certificates: client_certificate,
            persistent: !connect.clean_session,
            model_id: username.model_id().map(str::to_owned),
        };
        let device = match ctx.device.open(request).await {
            Ok(device) => device,
            Err(refusal) => {
                tracing::info!(%peer, %identity, reason = %refusal.detail, "CONNECT refused");
                let _ = send_connack(&mut io, connack_code(refusal.reason)).await;
                return None;
            }
        };
        let session_present = device.session_present();
        let mut session = Session {
            wire: Wire::new(io, read_buf, connect.keep_alive),
            ctx,
            peer,
            identity,
            device,
            subscriptions: BTreeMap::new(),
            next_packet_id: 0,
            acks: VecDeque::new(),
            c2d_inflight: HashMap::new(),
            pending_c2d: Vec::new(),
        };
        // A kept session (clean session 0) resumes what it had subscribed to.
        for feature in session.device.resumed_features() {
            let filter = filter_of(feature, &session.identity);
            let deliveries = session.device.subscribe(feature, true).await;
            session.pending_c2d.extend(deliveries);
            session
                .subscriptions
                .insert(filter.to_string(), (filter, QoS::AtLeastOnce));
        }
        let connack = Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, session_present));
        if session.write(&connack).is_err() {
            return None;
        }
        // Messages queued while the device was away follow the CONNACK.
        for delivery in std::mem::take(&mut session.pending_c2d) {
            if session.deliver_c2d(delivery).await.is_err() {
                return None;
            }
        }
        if session.flush().await.is_err() {
            return None;
        }
        tracing::info!(identity = %session.identity, peer = %session.peer, session_present, "device connected");
        Some(session)
    }

    /// The connection's main loop; returns why it ended.
    async fn serve(&mut self) -> Closed {
        let expiry = self.expiry_deadline();
        let mut shutdown = self.ctx.shutdown.clone();
        if *shutdown.borrow() {
            return "the emulator is shutting down".into();
        }
        loop {
            let reading = self.acks.len() < MAX_PENDING_ACKS;
            let (acks, device) = (&mut self.acks, &mut self.device);
            let work = async {
                tokio::select! {
                    (packet_id, acknowledge, durable) = next_ack(acks) => {
                        Work::Ack(packet_id, acknowledge, durable)
                    }
                    event = device.next_event() => Work::Event(event),
                    _ = sleep_until(expiry) => Work::Expired,
                }
            };
            let outcome = match self.wire.next(&mut shutdown, reading, work).await {
                Err(reason) => return reason,
                Ok(Next::Packet(packet)) => self.handle(packet).await,
                Ok(Next::Other(Work::Ack(packet_id, acknowledge, durable))) => match durable {
                    Ok(()) => {
                        match acknowledge {
                            Acknowledge::Now => {}
                            Acknowledge::After(delay) => tokio::time::sleep(delay).await,
                            Acknowledge::Never => continue,
                        }
                        match packet_id {
                            Some(pkid) => self.write(&Packet::PubAck(PubAck::new(pkid))),
                            None => Ok(()),
                        }
                    }
                    // Not durable, so not acknowledged: the device will resend after reconnecting.
                    Err(reason) => Err(reason),
                },
                Ok(Next::Other(Work::Event(event))) => self.on_event(event).await,
                Ok(Next::Other(Work::Expired)) => Err("the SAS token expired".into()),
            };
            if let Err(reason) = outcome {
                return reason;
            }
        }
    }

    async fn on_event(&mut self, event: Event) -> Result<(), Closed> {
        match event {
            Event::DesiredPatch { version, body } => {
                if self
                    .delivery_qos(|f| matches!(f, TopicFilter::DesiredPatches))
                    .is_none()
                {
                    return Ok(());
                }
                let topic = DownstreamTopic::DesiredPatch { version };
                self.publish(topic.to_string(), body, QoS::AtMostOnce)
                    .map(drop)
            }
            Event::CloudToDevice(delivery) => self.deliver_c2d(*delivery).await,
            Event::MethodRequest {
                name,
                request_id,
                payload,
            } => {
                // Unsubscribed while the call was queued: nobody answers it, and the caller's
                // response timeout ends it.
                if self
                    .delivery_qos(|f| matches!(f, TopicFilter::MethodRequests))
                    .is_none()
                {
                    return Ok(());
                }
                let topic = DownstreamTopic::MethodRequest {
                    method_name: name,
                    request_id,
                };
                self.publish(topic.to_string(), payload, QoS::AtMostOnce)
                    .map(drop)
            }
            Event::Close(reason) => Err(reason),
        }
    }

    async fn handle(&mut self, packet: Packet) -> Result<(), Closed> {
        match packet {
            Packet::Publish(publish) => self.on_publish(publish).await,
            Packet::Subscribe(subscribe) => {
                let mut codes = Vec::with_capacity(subscribe.filters.len());
                for filter in subscribe.filters {
                    let parsed = TopicFilter::parse(&filter.path)
                        .map_err(|e| format!("subscription refused: {e}"))?;
                    let feature = feature_of(&parsed)
                        .filter(|_| self.may_subscribe(&parsed))
                        .ok_or_else(|| {
                            format!("{} may not subscribe to `{}`", self.identity, filter.path)
                        })?;
                    // IoT Hub grants at most QoS 1.
                    let qos = if filter.qos == QoS::AtMostOnce {
                        QoS::AtMostOnce
                    } else {
                        QoS::AtLeastOnce
                    };
                    // Recorded first, so that the deliveries find their QoS.
                    self.subscriptions.insert(filter.path, (parsed, qos));
                    let deliveries = self.device.subscribe(feature, true).await;
                    self.pending_c2d.extend(deliveries);
                    codes.push(SubscribeReasonCode::Success(qos));
                }
                self.write(&Packet::SubAck(SubAck::new(subscribe.pkid, codes)))?;
                // Not `for`: its `next()` result would keep a 600-byte slot across the await.
                let mut pending = std::mem::take(&mut self.pending_c2d).into_iter();
                loop {
                    let Some(delivery) = pending.next() else {
                        break;
                    };
                    self.deliver_c2d(delivery).await?;
                }
                Ok(())
            }
            Packet::Unsubscribe(unsubscribe) => {
                for filter in &unsubscribe.topics {
                    if let Some((parsed, _)) = self.subscriptions.remove(filter)
                        && let Some(feature) = feature_of(&parsed)
                        && !self
                            .subscriptions
                            .values()
                            .any(|(f, _)| feature_of(f) == Some(feature))
                    {
                        self.device.subscribe(feature, false).await;
                    }
                }
                self.write(&Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))
            }
            Packet::PingReq => self.write(&Packet::PingResp),
            // The PUBACK of a cloud-to-device message completes it; acknowledgements of other
            // deliveries (twin responses, method requests, desired patches) need no action.
            Packet::PubAck(ack) => {
                if let Some(id) = self.c2d_inflight.remove(&ack.pkid) {
                    self.settle_c2d(id, Settle::Complete).await;
                }
                Ok(())
            }
            Packet::Disconnect => Err("the device disconnected".into()),
            Packet::Connect(_) => Err("a second CONNECT on the same connection".into()),
            other => Err(format!("{} is not used with IoT Hub", packet_name(&other))),
        }
    }

    async fn on_publish(&mut self, publish: Publish) -> Result<(), Closed> {
        if publish.qos == QoS::ExactlyOnce {
            return Err("QoS 2 is not supported by IoT Hub".into());
        }
        if publish.topic.contains('\0') {
            return Err("a topic containing U+0000 (MQTT-1.5.3-2)".into());
        }
        let topic =
            UpstreamTopic::parse(&publish.topic).map_err(|e| format!("publish refused: {e}"))?;
        match topic {
            UpstreamTopic::Telemetry {
                identity,
                properties,
            } => {
                if identity != self.identity {
                    return Err(format!("{} may not send as {identity}", self.identity));
                }
                let mut message = properties
                    .to_message(publish.payload)
                    .map_err(|e| format!("telemetry refused: {e}"))?;
                if publish.retain {
                    // IoT Hub does not retain; it marks the message instead.
                    message = message
                        .into_builder()
                        .property("mqtt-retain", "true")
                        .build()
                        .map_err(|e| format!("telemetry refused: {e}"))?;
                }
                let committed = self.device.send_telemetry(message, None).await;
                let packet_id = (publish.qos == QoS::AtLeastOnce).then_some(publish.pkid);
                self.acks.push_back((packet_id, committed));
                Ok(())
            }
            UpstreamTopic::TwinGet { request_id } => {
                self.ack_request(&publish)?;
                match self.device.get_twin().await {
                    Ok(twin) => self.twin_response(200, &request_id, None, twin),
                    Err(e) => self.twin_error(&request_id, &e),
                }
            }
            UpstreamTopic::TwinPatchReported { request_id, .. } => {
                self.ack_request(&publish)?;
                match self.device.patch_reported(&publish.payload).await {
                    Ok(version) => self.twin_response(204, &request_id, Some(version), Vec::new()),
                    Err(e) => self.twin_error(&request_id, &e),
                }
            }
            UpstreamTopic::MethodResponse { status, request_id } => {
                self.ack_request(&publish)?;
                self.device
                    .answer_method(&request_id, status, &publish.payload);
                Ok(())
            }
            UpstreamTopic::DpsRegister { .. } | UpstreamTopic::DpsOperationStatus { .. } => {
                Err("DPS topics on an IoT Hub connection".into())
            }
            other => Err(format!("unsupported topic {other:?}")),
        }
    }

    /// PUBACK for a QoS 1 request publish (twin, method response): processed on receipt.
    fn ack_request(&mut self, publish: &Publish) -> Result<(), Closed> {
        if publish.qos == QoS::AtLeastOnce {
            self.write(&Packet::PubAck(PubAck::new(publish.pkid)))?;
        }
        Ok(())
    }

    fn may_subscribe(&self, filter: &TopicFilter) -> bool {
        match filter {
            TopicFilter::CloudToDevice { device_id } => {
                !self.identity.is_module() && device_id == self.identity.device_id()
            }
            TopicFilter::ModuleInputs { identity, .. } => identity == &self.identity,
            TopicFilter::TwinResponses
            | TopicFilter::DesiredPatches
            | TopicFilter::MethodRequests => true,
            _ => false,
        }
    }

    /// The QoS to deliver at on the first subscription matching `kind`, if any.
    fn delivery_qos(&self, wanted: impl Fn(&TopicFilter) -> bool) -> Option<QoS> {
        self.subscriptions
            .values()
            .find(|(f, _)| wanted(f))
            .map(|(_, qos)| *qos)
    }

    fn twin_response(
        &mut self,
        status: u16,
        request_id: &str,
        version: Option<i64>,
        body: Vec<u8>,
    ) -> Result<(), Closed> {
        // The hub answers only a connection subscribed to twin responses (the request itself
        // is carried out); see docs/CONFORMANCE.md.
        if self
            .delivery_qos(|f| matches!(f, TopicFilter::TwinResponses))
            .is_none()
        {
            tracing::debug!(identity = %self.identity, "twin request without a subscription to $iothub/twin/res/#; no response sent");
            return Ok(());
        }
        let topic = DownstreamTopic::TwinResponse {
            status,
            request_id: request_id.to_owned(),
            version,
        };
        self.publish(topic.to_string(), body, QoS::AtMostOnce)
            .map(drop)
    }

    fn twin_error(&mut self, request_id: &str, error: &HubError) -> Result<(), Closed> {
        self.twin_response(
            error.code.status(),
            request_id,
            None,
            twin_error_body(error),
        )
    }

    /// Publishes a cloud-to-device message; at QoS 0 (delivery is completion) completes it.
    ///
    /// Not an `async fn`: the delivery (about 600 bytes) is published before the future
    /// exists, so the future (which the serve loop reserves room for) keeps only its id.
    fn deliver_c2d(
        &mut self,
        delivery: C2dDelivery,
    ) -> impl Future<Output = Result<(), Closed>> + Send + '_ {
        let settle_now = self.publish_c2d(delivery);
        async move {
            if let Some((id, settle)) = settle_now? {
                self.settle_c2d(id, settle).await;
            }
            Ok(())
        }
    }

    /// Publishes a cloud-to-device message if the device is subscribed; returns the id of a
    /// message to settle at once: completed at QoS 0, rejected if it cannot be an MQTT
    /// PUBLISH.
    fn publish_c2d(&mut self, delivery: C2dDelivery) -> Result<Option<(u64, Settle)>, Closed> {
        let Some(qos) = self.delivery_qos(|f| matches!(f, TopicFilter::CloudToDevice { .. }))
        else {
            // Not subscribed (any more): the lock is released when the connection ends.
            return Ok(None);
        };
        let topic = DownstreamTopic::cloud_to_device(self.identity.device_id(), &delivery.message)
            .to_string();
        if topic.len() > usize::from(u16::MAX) {
            // Its properties do not fit an MQTT topic: it can never be delivered over MQTT, so
            // it is dead-lettered (the sender gets `Rejected` feedback if it asked).
            tracing::warn!(identity = %self.identity, bytes = topic.len(), "a cloud-to-device message's properties make a topic longer than MQTT allows; rejected");
            return Ok(Some((delivery.id, Settle::Reject)));
        }
        let pkid = self.publish(topic, delivery.message.body().to_vec(), qos)?;
        match pkid {
            Some(pkid) => {
                self.c2d_inflight.insert(pkid, delivery.id);
                Ok(None)
            }
            // At QoS 0 delivery is completion.
            None => Ok(Some((delivery.id, Settle::Complete))),
        }
    }

    /// A device over MQTT can only complete a cloud-to-device message (its PUBACK); the hub
    /// itself rejects one that cannot be published.
    async fn settle_c2d(&mut self, id: u64, settle: Settle) {
        if let Err(e) = self.device.settle_c2d(id, settle).await {
            tracing::debug!(identity = %self.identity, error = %e.message, "C2D settlement settled nothing");
        }
    }

    /// Publishes to the device; returns the packet id of a QoS 1 publish.
    fn publish(
        &mut self,
        topic: String,
        payload: Vec<u8>,
        qos: QoS,
    ) -> Result<Option<u16>, Closed> {
        let mut publish = Publish::new(topic, qos, payload);
        let mut packet_id = None;
        if qos == QoS::AtLeastOnce {
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            publish.pkid = self.next_packet_id;
            packet_id = Some(publish.pkid);
        }
        self.write(&Packet::Publish(publish))?;
        Ok(packet_id)
    }

    fn write(&mut self, packet: &Packet) -> Result<(), Closed> {
        self.wire.write(packet)
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        self.wire.flush().await
    }

    fn expiry_deadline(&self) -> Option<Instant> {
        self.device.expires_at().map(|at| {
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            Instant::now() + left
        })
    }

    async fn close(mut self) {
        // Whatever the log commits is acknowledged before closing; the rest is not (the device
        // resends it).
        while let Some((packet_id, mut committed)) = self.acks.pop_front() {
            match committed.durable().await {
                Ok(()) => {
                    if let Some(pkid) = packet_id {
                        let _ = self.write(&Packet::PubAck(PubAck::new(pkid)));
                    }
                }
                _ => break,
            }
        }
        self.wire.close().await;
        // Unacknowledged cloud-to-device messages are delivered again next time.
        self.device.close().await;
    }
}

pub(super) async fn send_connack<S: AsyncWrite + Unpin>(
    io: &mut S,
    code: ConnectReturnCode,
) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    if write_packet(&Packet::ConnAck(ConnAck::new(code, false)), &mut buf).is_ok() {
        io.write_all(&buf).await?;
        io.flush().await?;
    }
    io.shutdown().await
}

/// The oldest waiting acknowledgement once its message is durable (cancel-safe: it stays queued
/// until then).
async fn next_ack(acks: &mut VecDeque<Ack>) -> (Option<u16>, Acknowledge, Result<(), String>) {
    match acks.front_mut() {
        Some((packet_id, committed)) => {
            let result = committed.durable().await;
            let out = (*packet_id, committed.acknowledge());
            acks.pop_front();
            (out.0, out.1, result)
        }
        None => std::future::pending().await,
    }
}

pub(super) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future that `f` returns, without calling it.
    fn output_size<A, B, C, D, F>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_connection_task_holds_only_the_session_and_its_loop() {
        // Every connection's task holds this future for its whole life: 12.6 KiB when the
        // connect phase was part of it, 4.5 KiB now (the session, 1.2 KiB of it TLS state,
        // and its serve loop) since that phase is boxed and freed after CONNACK.
        let size = output_size(run::<crate::net::Stream>);
        assert!(size <= 5 * 1024, "the connection future is {size} bytes");
    }
}
