//! One device or module connection over MQTT 3.1.1.
//!
//! ```text
//!  CONNECT ─▶ username/client id ─▶ authenticate (state thread) ─▶ register link ─▶ CONNACK
//!  then one loop over:
//!    socket packets   PUBLISH (telemetry → log; twin GET/PATCH; method responses),
//!                     SUBSCRIBE/UNSUBSCRIBE (ACL-checked), PINGREQ, DISCONNECT
//!    telemetry acks   PUBACK each message, in order, once the log has committed it
//!    hub pushes       desired-property patches; the channel closing = replaced connection
//!    method calls     PUBLISH $iothub/methods/POST/..., answer routed back by $rid
//!    deadlines        1.5 × keep-alive without a packet; SAS token expiry
//! ```
//!
//! Anything IoT Hub does not allow — QoS 2, a topic outside the identity's own, an unknown
//! subscription, an oversize message, a second CONNECT — ends this connection only, as the
//! hub does, with the reason logged.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use azure_iot_core::method::{DirectMethodResponse, json_or_null};
use azure_iot_protocol::Identity;
use azure_iot_protocol::mqtt::codec::{
    ConnAck, Connect, ConnectReturnCode, MAX_PACKET_BYTES, Packet, PubAck, Publish, QoS, SubAck,
    SubscribeReasonCode, UnsubAck, packet_name, read_packet, write_packet,
};
use azure_iot_protocol::mqtt::{DownstreamTopic, HubUsername, TopicFilter, UpstreamTopic};
use azure_iot_protocol::request_id::RequestIdGenerator;
use bytes::BytesMut;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::MqttContext;
use crate::hub::c2d::C2dDelivery;
use crate::hub::devices::Push;
use crate::hub::error::{ErrorCode, HubError};
use crate::hub::faults::SessionFaults;
use crate::hub::methods::MethodCall;
use crate::hub::state::now;

/// How long a client has to send CONNECT after the TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The hub's cap on the keep-alive interval it honours (1767 s ÷ 1.5).
const MAX_KEEP_ALIVE: Duration = Duration::from_secs(1177);
/// Telemetry messages a connection may have waiting for the log before reading pauses.
const MAX_PENDING_ACKS: usize = 1024;
/// Hub pushes buffered per connection before a slow device is disconnected.
const PUSH_CAPACITY: usize = 64;
/// How fresh `lastActivityTime` is kept while a device sends.
const ACTIVITY_RESOLUTION: Duration = Duration::from_secs(1);
/// Method calls buffered per connection.
const METHOD_CAPACITY: usize = 64;

/// Why a session ended (for the log).
type Closed = String;

type Ack = (Option<u16>, oneshot::Receiver<Result<u64, String>>);

/// Serves one connection until it ends.
pub(crate) async fn run<S>(
    io: S,
    peer: SocketAddr,
    ctx: Arc<MqttContext>,
    client_certificate: Vec<rustls_pki_types::CertificateDer<'static>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut io = io;
    let mut buffer = BytesMut::with_capacity(4096);
    let connect = match tokio::time::timeout(CONNECT_TIMEOUT, first_packet(&mut io, &mut buffer))
        .await
    {
        Ok(Ok(Packet::Connect(connect))) => connect,
        Ok(Ok(other)) => {
            tracing::info!(%peer, packet = ?packet_name(&other), "first packet was not CONNECT; closing");
            return;
        }
        Ok(Err(reason)) => {
            tracing::debug!(%peer, %reason, "connection closed before CONNECT");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "no CONNECT within {CONNECT_TIMEOUT:?}; closing");
            return;
        }
    };
    let Some(mut session) = Session::open(io, buffer, connect, peer, ctx, client_certificate).await
    else {
        return;
    };
    let reason = session.serve().await;
    tracing::info!(identity = %session.identity, %peer, %reason, "device disconnected");
    session.close().await;
}

async fn first_packet<S: AsyncRead + Unpin>(
    io: &mut S,
    buffer: &mut BytesMut,
) -> Result<Packet, Closed> {
    loop {
        if let Some(packet) = read_packet(buffer, MAX_PACKET_BYTES).map_err(|e| e.to_string())? {
            return Ok(packet);
        }
        if io.read_buf(buffer).await.map_err(|e| e.to_string())? == 0 {
            return Err("the client closed the connection".into());
        }
    }
}

struct Session<S> {
    io: S,
    read_buf: BytesMut,
    write_buf: BytesMut,
    ctx: Arc<MqttContext>,
    peer: SocketAddr,
    identity: Identity,
    connection: u64,
    clean_session: bool,
    auth_method: &'static str,
    keep_alive: Option<Duration>,
    expires_at: Option<SystemTime>,
    subscriptions: BTreeMap<String, (TopicFilter, QoS)>,
    next_packet_id: u16,
    pushes: mpsc::Receiver<Push>,
    methods: Option<mpsc::Receiver<MethodCall>>,
    pending_methods: HashMap<String, oneshot::Sender<DirectMethodResponse>>,
    request_ids: RequestIdGenerator,
    acks: VecDeque<Ack>,
    /// Cloud-to-device messages delivered at QoS 1 and not yet acknowledged: packet id →
    /// message id. The device's PUBACK completes the message.
    c2d_inflight: HashMap<u16, u64>,
    /// Deliveries handed over while a SUBSCRIBE is processed, published once it is recorded.
    pending_c2d: Vec<C2dDelivery>,
    /// Injected faults this connection applies.
    faults: SessionFaults,
    /// When this connection last reported activity to the hub state.
    last_touch: Option<Instant>,
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// Authenticates the CONNECT, registers the connection and sends CONNACK.
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
            if !username.host().eq_ignore_ascii_case(&ctx.hostname) {
                return Err(refuse(
                    ConnectReturnCode::NotAuthorized,
                    format!(
                        "the user name names hub `{}`, this is `{}`",
                        username.host(),
                        ctx.hostname
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
        let hostname = ctx.hostname.clone();
        let who = identity.clone();
        let grant = ctx
            .hub
            .call(move |s| {
                s.authenticate_device(
                    &who,
                    &hostname,
                    Some(password.as_str()),
                    &client_certificate,
                    SystemTime::now(),
                )
            })
            .await;
        let grant = match grant {
            Ok(Ok(grant)) => grant,
            Ok(Err(refusal)) => {
                tracing::info!(%peer, %identity, reason = %refusal.reason, "CONNECT refused");
                let code = match refusal.code {
                    1 => ConnectReturnCode::RefusedProtocolVersion,
                    2 => ConnectReturnCode::BadClientId,
                    3 => ConnectReturnCode::ServiceUnavailable,
                    4 => ConnectReturnCode::BadUserNamePassword,
                    _ => ConnectReturnCode::NotAuthorized,
                };
                let _ = send_connack(&mut io, code).await;
                return None;
            }
            Err(_) => {
                let _ = send_connack(&mut io, ConnectReturnCode::ServiceUnavailable).await;
                return None;
            }
        };
        if let Some(model_id) = username.model_id().map(str::to_owned) {
            let who = identity.clone();
            let _ = ctx.hub.call(move |s| s.set_model_id(&who, &model_id)).await;
        }
        let (push_tx, pushes) = mpsc::channel(PUSH_CAPACITY);
        let who = identity.clone();
        let clean = connect.clean_session;
        let Ok((connection, session_present, kept)) = ctx
            .hub
            .call(move |s| s.connect_device(who, push_tx, clean))
            .await
        else {
            let _ = send_connack(&mut io, ConnectReturnCode::ServiceUnavailable).await;
            return None;
        };
        let keep_alive = (connect.keep_alive > 0)
            .then(|| Duration::from_secs(u64::from(connect.keep_alive)).min(MAX_KEEP_ALIVE));
        let mut session = Session {
            io,
            read_buf,
            write_buf: BytesMut::with_capacity(4096),
            ctx,
            peer,
            identity,
            connection,
            clean_session: connect.clean_session,
            auth_method: grant.auth_method,
            keep_alive,
            expires_at: grant.expires_at,
            subscriptions: BTreeMap::new(),
            next_packet_id: 0,
            pushes,
            methods: None,
            pending_methods: HashMap::new(),
            request_ids: RequestIdGenerator::new(),
            acks: VecDeque::new(),
            c2d_inflight: HashMap::new(),
            pending_c2d: Vec::new(),
            faults: SessionFaults::default(),
            last_touch: None,
        };
        let who = session.identity.clone();
        session.faults = session
            .ctx
            .hub
            .call(move |s| s.session_faults(&who))
            .await
            .unwrap_or_default();
        // A kept session (clean session 0) resumes its subscriptions.
        for filter in kept {
            if let Ok(parsed) = TopicFilter::parse(&filter) {
                session.activate(&parsed).await;
                session
                    .subscriptions
                    .insert(filter, (parsed, QoS::AtLeastOnce));
            }
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
        let mut keep_alive_deadline = self.keep_alive_deadline();
        let expiry = self.expiry_deadline();
        let mut shutdown = self.ctx.shutdown.clone();
        if *shutdown.borrow() {
            return "the emulator is shutting down".into();
        }
        loop {
            // Drain every complete packet already buffered before waiting for more.
            match read_packet(&mut self.read_buf, MAX_PACKET_BYTES) {
                Err(e) => return e.to_string(),
                Ok(Some(packet)) => {
                    keep_alive_deadline = self.keep_alive_deadline();
                    if let Err(reason) = self.handle(packet).await {
                        return reason;
                    }
                    continue;
                }
                Ok(None) => {}
            }
            if let Err(e) = self.flush().await {
                return format!("write failed: {e}");
            }
            let reading = self.acks.len() < MAX_PENDING_ACKS;
            tokio::select! {
                read = self.io.read_buf(&mut self.read_buf), if reading => match read {
                    Ok(0) => return "the device closed the connection".into(),
                    Ok(_) => {}
                    Err(e) => return format!("read failed: {e}"),
                },
                (packet_id, committed) = next_ack(&mut self.acks) => match committed {
                    Ok(Ok(_)) => {
                        if let Some(delay) = self.faults.puback_delay {
                            tokio::time::sleep(delay).await;
                        }
                        if let Some(pkid) = packet_id.filter(|_| !self.faults.withhold_pubacks)
                            && let Err(e) = self.write(&Packet::PubAck(PubAck::new(pkid)))
                        {
                            return e;
                        }
                    }
                    // Not durable, so not acknowledged: the device will resend after reconnecting.
                    _ => return "the telemetry log could not store a message".into(),
                },
                push = self.pushes.recv() => match push {
                    Some(Push::DesiredPatch(patch)) => {
                        if let Err(e) = self.deliver_desired(patch) {
                            return e;
                        }
                    }
                    Some(Push::Faults(faults)) => self.faults = faults,
                    Some(Push::Close(reason)) => return reason,
                    Some(Push::CloudToDevice(delivery)) => {
                        if let Err(e) = self.deliver_c2d(*delivery).await {
                            return e;
                        }
                    }
                    None => return "replaced by a new connection of the same identity (or the identity was deleted)".into(),
                },
                call = next_method(&mut self.methods) => match call {
                    Some(call) => {
                        if let Err(e) = self.deliver_method(call) {
                            return e;
                        }
                    }
                    None => self.methods = None,
                },
                _ = sleep_until(keep_alive_deadline) => {
                    return "no packet within 1.5 × the keep-alive interval".into();
                }
                _ = sleep_until(expiry) => return "the SAS token expired".into(),
                _ = shutdown.changed() => return "the emulator is shutting down".into(),
            }
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
                    if !self.may_subscribe(&parsed) {
                        return Err(format!(
                            "{} may not subscribe to `{}`",
                            self.identity, filter.path
                        ));
                    }
                    // IoT Hub grants at most QoS 1.
                    let qos = if filter.qos == QoS::AtMostOnce {
                        QoS::AtMostOnce
                    } else {
                        QoS::AtLeastOnce
                    };
                    self.activate(&parsed).await;
                    self.subscriptions.insert(filter.path, (parsed, qos));
                    codes.push(SubscribeReasonCode::Success(qos));
                }
                self.save_subscriptions().await;
                self.write(&Packet::SubAck(SubAck::new(subscribe.pkid, codes)))?;
                for delivery in std::mem::take(&mut self.pending_c2d) {
                    self.deliver_c2d(delivery).await?;
                }
                Ok(())
            }
            Packet::Unsubscribe(unsubscribe) => {
                for filter in &unsubscribe.topics {
                    if let Some((parsed, _)) = self.subscriptions.remove(filter) {
                        self.deactivate(&parsed).await;
                    }
                }
                self.save_subscriptions().await;
                self.write(&Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))
            }
            Packet::PingReq => self.write(&Packet::PingResp),
            // The PUBACK of a cloud-to-device message completes it; acknowledgements of other
            // deliveries (twin responses, method requests, desired patches) need no action.
            Packet::PubAck(ack) => {
                if let Some(id) = self.c2d_inflight.remove(&ack.pkid) {
                    self.complete_c2d(id).await;
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
                let (reply, committed) = oneshot::channel();
                self.ctx.telemetry.append_with(
                    self.identity.device_id().to_owned(),
                    self.identity.module_id().map(str::to_owned),
                    self.auth_method,
                    now(),
                    message,
                    reply,
                );
                let packet_id = (publish.qos == QoS::AtLeastOnce).then_some(publish.pkid);
                self.acks.push_back((packet_id, committed));
                // lastActivityTime: at most one state-thread job a second, not one a message,
                // and nothing waits for it.
                if self
                    .last_touch
                    .is_none_or(|at| at.elapsed() >= ACTIVITY_RESOLUTION)
                {
                    self.last_touch = Some(Instant::now());
                    let who = self.identity.clone();
                    self.ctx.hub.tell(move |s| s.touch_device(&who));
                }
                Ok(())
            }
            UpstreamTopic::TwinGet { request_id }
            | UpstreamTopic::TwinPatchReported { request_id, .. }
                if self.faults.throttle_twin =>
            {
                self.ack_request(&publish)?;
                let throttled = HubError::new(
                    ErrorCode::Throttled,
                    "fault injection: twin requests are throttled",
                );
                self.twin_error(&request_id, &throttled)
            }
            UpstreamTopic::TwinGet { request_id } => {
                self.ack_request(&publish)?;
                let who = self.identity.clone();
                let result = self.ctx.hub.call(move |s| s.device_twin(&who)).await;
                match result {
                    Ok(Ok(twin)) => {
                        self.twin_response(200, &request_id, None, twin.to_string().into_bytes())
                    }
                    Ok(Err(e)) => self.twin_error(&request_id, &e),
                    Err(_) => Err("the hub is shutting down".into()),
                }
            }
            UpstreamTopic::TwinPatchReported { request_id, .. } => {
                self.ack_request(&publish)?;
                let patch: Result<Value, _> = serde_json::from_slice(&publish.payload);
                let who = self.identity.clone();
                let result = match patch {
                    Err(e) => Err(HubError::invalid(format!(
                        "the reported patch is not JSON: {e}"
                    ))),
                    Ok(patch) => self
                        .ctx
                        .hub
                        .call(move |s| s.patch_reported(&who, &patch))
                        .await
                        .map_err(|_| "the hub is shutting down".to_owned())?,
                };
                match result {
                    Ok(version) => self.twin_response(204, &request_id, Some(version), Vec::new()),
                    Err(e) => self.twin_error(&request_id, &e),
                }
            }
            UpstreamTopic::MethodResponse { status, request_id } => {
                self.ack_request(&publish)?;
                if let Some(reply) = self.pending_methods.remove(&request_id) {
                    let payload = json_or_null(&publish.payload).unwrap_or_else(|_| {
                        Value::String(String::from_utf8_lossy(&publish.payload).into_owned())
                    });
                    let _ = reply.send(DirectMethodResponse::new(status, payload));
                } else {
                    tracing::debug!(identity = %self.identity, %request_id, "method response for no pending call (late or unknown); dropped");
                }
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

    /// Tells the hub what a subscription asks for.
    async fn activate(&mut self, filter: &TopicFilter) {
        let who = self.identity.clone();
        let connection = self.connection;
        match filter {
            TopicFilter::CloudToDevice { device_id } => {
                let device = device_id.clone();
                // The subscription is recorded first so that the deliveries find their QoS.
                let deliveries = self
                    .ctx
                    .hub
                    .call(move |s| s.subscribe_c2d(&device, connection, true))
                    .await
                    .unwrap_or_default();
                self.pending_c2d.extend(deliveries);
            }
            TopicFilter::DesiredPatches => {
                let _ = self
                    .ctx
                    .hub
                    .call(move |s| s.subscribe_desired(&who, connection, true))
                    .await;
            }
            TopicFilter::MethodRequests if self.methods.is_none() => {
                let (tx, rx) = mpsc::channel(METHOD_CAPACITY);
                self.methods = Some(rx);
                let _ = self
                    .ctx
                    .hub
                    .call(move |s| s.subscribe_methods(who, tx))
                    .await;
            }
            _ => {}
        }
    }

    async fn deactivate(&mut self, filter: &TopicFilter) {
        match filter {
            TopicFilter::DesiredPatches => {
                let who = self.identity.clone();
                let connection = self.connection;
                let _ = self
                    .ctx
                    .hub
                    .call(move |s| s.subscribe_desired(&who, connection, false))
                    .await;
            }
            // Dropping the receiver closes the hub's target for this connection.
            TopicFilter::MethodRequests => self.methods = None,
            TopicFilter::CloudToDevice { device_id } => {
                let device = device_id.clone();
                let connection = self.connection;
                let _ = self
                    .ctx
                    .hub
                    .call(move |s| s.subscribe_c2d(&device, connection, false))
                    .await;
            }
            _ => {}
        }
    }

    async fn save_subscriptions(&mut self) {
        if self.clean_session {
            return;
        }
        let who = self.identity.clone();
        let connection = self.connection;
        let filters: BTreeSet<String> = self.subscriptions.keys().cloned().collect();
        let _ = self
            .ctx
            .hub
            .call(move |s| s.save_subscriptions(&who, connection, filters))
            .await;
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
        let Some(qos) = self.delivery_qos(|f| matches!(f, TopicFilter::TwinResponses)) else {
            tracing::debug!(identity = %self.identity, "twin request without a subscription to $iothub/twin/res/#; no response sent");
            return Ok(());
        };
        let topic = DownstreamTopic::TwinResponse {
            status,
            request_id: request_id.to_owned(),
            version,
        };
        self.publish(topic.to_string(), body, qos).map(drop)
    }

    /// An error answer with the body every SDK can read (Node needs a non-zero `errorCode`).
    fn twin_error(&mut self, request_id: &str, error: &HubError) -> Result<(), Closed> {
        let body = json!({
            "errorCode": error.code.number(),
            "message": error.message,
            "trackingId": "",
            "timestampUtc": now(),
        });
        self.twin_response(
            error.code.status(),
            request_id,
            None,
            body.to_string().into_bytes(),
        )
    }

    fn deliver_desired(&mut self, patch: Value) -> Result<(), Closed> {
        let Some(qos) = self.delivery_qos(|f| matches!(f, TopicFilter::DesiredPatches)) else {
            return Ok(());
        };
        let version = patch
            .get("$version")
            .and_then(Value::as_i64)
            .unwrap_or_default();
        let topic = DownstreamTopic::DesiredPatch { version };
        self.publish(topic.to_string(), patch.to_string().into_bytes(), qos)
            .map(drop)
    }

    async fn deliver_c2d(&mut self, delivery: C2dDelivery) -> Result<(), Closed> {
        let Some(qos) = self.delivery_qos(|f| matches!(f, TopicFilter::CloudToDevice { .. }))
        else {
            // Not subscribed (any more): the lock is released when the connection ends.
            return Ok(());
        };
        let topic = DownstreamTopic::cloud_to_device(self.identity.device_id(), &delivery.message);
        let pkid = self.publish(topic.to_string(), delivery.message.body().to_vec(), qos)?;
        match pkid {
            Some(pkid) => {
                self.c2d_inflight.insert(pkid, delivery.id);
            }
            // At QoS 0 delivery is completion.
            None => self.complete_c2d(delivery.id).await,
        }
        Ok(())
    }

    async fn complete_c2d(&mut self, id: u64) {
        let device = self.identity.device_id().to_owned();
        let connection = self.connection;
        let _ = self
            .ctx
            .hub
            .call(move |s| s.complete_c2d(&device, connection, id))
            .await;
    }

    fn deliver_method(&mut self, call: MethodCall) -> Result<(), Closed> {
        let Some(qos) = self.delivery_qos(|f| matches!(f, TopicFilter::MethodRequests)) else {
            // Unsubscribed while the call was queued: dropping `reply` tells the caller.
            return Ok(());
        };
        let request_id = self.request_ids.next_id();
        let topic = DownstreamTopic::MethodRequest {
            method_name: call.method_name,
            request_id: request_id.clone(),
        };
        self.pending_methods.retain(|_, reply| !reply.is_closed());
        self.pending_methods.insert(request_id, call.reply);
        self.publish(
            topic.to_string(),
            call.payload.to_string().into_bytes(),
            qos,
        )
        .map(drop)
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
        write_packet(packet, &mut self.write_buf).map_err(|e| e.to_string())
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.write_buf.is_empty() {
            self.io.write_all(&self.write_buf).await?;
            self.write_buf.clear();
            self.io.flush().await?;
        }
        Ok(())
    }

    fn keep_alive_deadline(&self) -> Option<Instant> {
        self.keep_alive.map(|k| Instant::now() + k.mul_f32(1.5))
    }

    fn expiry_deadline(&self) -> Option<Instant> {
        self.expires_at.map(|at| {
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            Instant::now() + left
        })
    }

    async fn close(mut self) {
        // Whatever the log already committed is acknowledged before closing; the rest is not
        // (the device resends it).
        while let Some((packet_id, committed)) = self.acks.pop_front() {
            match committed.await {
                Ok(Ok(_)) => {
                    if let Some(pkid) = packet_id {
                        let _ = self.write(&Packet::PubAck(PubAck::new(pkid)));
                    }
                }
                _ => break,
            }
        }
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
        let who = self.identity.clone();
        let connection = self.connection;
        let clean = self.clean_session;
        let _ = self
            .ctx
            .hub
            .call(move |s| {
                // Unacknowledged cloud-to-device messages are delivered again next time.
                s.release_c2d(who.device_id(), connection);
                s.disconnect_device(&who, connection, clean);
            })
            .await;
    }
}

async fn send_connack<S: AsyncWrite + Unpin>(
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

async fn next_ack(
    acks: &mut VecDeque<Ack>,
) -> (
    Option<u16>,
    Result<Result<u64, String>, oneshot::error::RecvError>,
) {
    match acks.front_mut() {
        Some((packet_id, committed)) => {
            let result = committed.await;
            let packet_id = *packet_id;
            acks.pop_front();
            (packet_id, result)
        }
        None => std::future::pending().await,
    }
}

async fn next_method(methods: &mut Option<mpsc::Receiver<MethodCall>>) -> Option<MethodCall> {
    match methods {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
