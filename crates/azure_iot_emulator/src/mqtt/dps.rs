//! A device registering with the Device Provisioning Service over MQTT 3.1.1: a codec and
//! flow adapter over the DPS core (`crate::dps`), which holds every DPS rule.
//!
//! ```text
//!  CONNECT (user name {idScope}/registrations/{regId}/…, client id = regId,
//!           password = SAS token, or none with a TLS client certificate)
//!     ─▶ Dps::authenticate ─▶ CONNACK 0, or 5 (refused) / 3 (DPS busy) and close
//!  then one loop over:
//!    SUBSCRIBE   $dps/registrations/res/# granted QoS 1; any other filter 0x80
//!    PUBLISH     $dps/registrations/PUT/iotdps-register/?$rid={rid}          → Dps::register
//!                $dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={op}
//!                                                                           → Dps::operation_status
//!                answered on $dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]
//!                with the operation status or DPS's error body (always JSON)
//!    PINGREQ, DISCONNECT; 1.5 × keep-alive without a packet ends the connection
//! ```
//!
//! Requests are answered one at a time, in order: the connection is not read while the core
//! works on one, so a device cannot have more than one request in flight and the answers it
//! does not read push back through TCP. The request id is echoed as sent, first in the
//! answer's query (Python reads only what follows `?$`). A request's QoS 1 PUBACK goes out
//! before its answer; answers go out at QoS 1 (DPS grants at most that), and the device's
//! PUBACKs of them need nothing. Anything DPS over MQTT does not allow (QoS 2, a topic that
//! is not a DPS request, a second CONNECT) ends the connection, as DPS does.

use std::net::SocketAddr;
use std::sync::Arc;

use azure_iot_protocol::mqtt::codec::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, QoS, SubAck, Subscribe,
    SubscribeReasonCode, UnsubAck, packet_name,
};
use azure_iot_protocol::mqtt::{DownstreamTopic, DpsUsername, TopicFilter, UpstreamTopic};
use bytes::BytesMut;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};

use super::MqttContext;
use super::session::send_connack;
use super::wire::{Closed, Next, Wire};
use crate::dps::{Answer, DeviceLogin, DpsError};

/// Serves a DPS connection whose CONNECT (`connect`, its user name already classified as
/// DPS) has been read, with `read_buf` holding whatever followed it.
pub(crate) async fn serve<S>(
    mut io: S,
    read_buf: BytesMut,
    connect: Connect,
    peer: SocketAddr,
    ctx: Arc<MqttContext>,
    certificates: Vec<CertificateDer<'static>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let login = match open(&connect, &ctx, &certificates).await {
        Ok(login) => login,
        Err((code, reason)) => {
            tracing::info!(%peer, client_id = %connect.client_id, %reason, "DPS CONNECT refused");
            let _ = send_connack(&mut io, code).await;
            return;
        }
    };
    tracing::info!(%peer, registration_id = %login.registration_id, "DPS device connected");
    let mut connection = Connection {
        wire: Wire::new(io, read_buf, connect.keep_alive),
        ctx,
        login,
        subscribed: None,
        next_packet_id: 0,
    };
    let reason = match connection.write(&Packet::ConnAck(ConnAck::new(
        ConnectReturnCode::Success,
        false,
    ))) {
        Ok(()) => connection.serve().await,
        Err(reason) => reason,
    };
    tracing::info!(%peer, registration_id = %connection.login.registration_id, %reason, "DPS device disconnected");
    connection.wire.close().await;
}

/// Checks the CONNECT and authenticates its login with the DPS core: the login, or the
/// CONNACK code to refuse with and why.
async fn open(
    connect: &Connect,
    ctx: &MqttContext,
    certificates: &[CertificateDer<'static>],
) -> Result<DeviceLogin, (ConnectReturnCode, String)> {
    let login = connect.login.as_ref().ok_or_else(|| {
        (
            ConnectReturnCode::BadUserNamePassword,
            "CONNECT has no user name".to_owned(),
        )
    })?;
    let username = DpsUsername::parse(&login.username).map_err(|e| {
        (
            ConnectReturnCode::BadUserNamePassword,
            format!("user name: {e}"),
        )
    })?;
    if connect.client_id != username.registration_id() {
        return Err((
            ConnectReturnCode::BadClientId,
            format!(
                "the client id `{}` is not the registration id `{}` of the user name",
                connect.client_id,
                username.registration_id()
            ),
        ));
    }
    let refused = |e: DpsError| (connack_code(&e), e.to_string());
    let device = crate::provisioning::login(
        username.id_scope(),
        username.registration_id(),
        Some(login.password.as_str()),
        certificates,
    )
    .map_err(refused)?;
    ctx.dps.authenticate(&device).await.map_err(refused)?;
    Ok(device)
}

/// The CONNACK code for a refusal: the service being busy or failing is "unavailable" (3),
/// so the device tries again; anything else (a wrong key, an unknown scope or registration)
/// is "not authorized" (5).
fn connack_code(error: &DpsError) -> ConnectReturnCode {
    if error.status == 429 || error.status >= 500 {
        ConnectReturnCode::ServiceUnavailable
    } else {
        ConnectReturnCode::NotAuthorized
    }
}

/// One authenticated DPS connection.
struct Connection<S> {
    wire: Wire<S>,
    ctx: Arc<MqttContext>,
    login: DeviceLogin,
    /// The QoS granted to `$dps/registrations/res/#`, once subscribed.
    subscribed: Option<QoS>,
    next_packet_id: u16,
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// The connection's loop; returns why it ended.
    async fn serve(&mut self) -> Closed {
        let mut shutdown = self.ctx.shutdown.clone();
        if *shutdown.borrow() {
            return "the emulator is shutting down".into();
        }
        loop {
            // A DPS connection has nothing to do but answer its device's packets.
            let work = std::future::pending::<std::convert::Infallible>();
            let packet = match self.wire.next(&mut shutdown, true, work).await {
                Ok(Next::Packet(packet)) => packet,
                Ok(Next::Other(never)) => match never {},
                Err(reason) => return reason,
            };
            if let Err(reason) = self.handle(packet).await {
                return reason;
            }
        }
    }

    async fn handle(&mut self, packet: Packet) -> Result<(), Closed> {
        match packet {
            Packet::Publish(publish) => self.on_publish(publish).await,
            Packet::Subscribe(subscribe) => self.on_subscribe(subscribe),
            Packet::Unsubscribe(unsubscribe) => {
                if unsubscribe
                    .topics
                    .iter()
                    .any(|t| matches!(TopicFilter::parse(t), Ok(TopicFilter::DpsResponses)))
                {
                    self.subscribed = None;
                }
                self.write(&Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))
            }
            Packet::PingReq => self.write(&Packet::PingResp),
            // Acknowledgements of answers: nothing to do.
            Packet::PubAck(_) => Ok(()),
            Packet::Disconnect => Err("the device disconnected".into()),
            Packet::Connect(_) => Err("a second CONNECT on the same connection".into()),
            other => Err(format!("{} is not used with DPS", packet_name(&other))),
        }
    }

    /// Grants `$dps/registrations/res/#` at QoS 0 or 1 (DPS grants at most 1) and refuses
    /// every other filter with 0x80.
    fn on_subscribe(&mut self, subscribe: Subscribe) -> Result<(), Closed> {
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        for filter in &subscribe.filters {
            if matches!(
                TopicFilter::parse(&filter.path),
                Ok(TopicFilter::DpsResponses)
            ) {
                let qos = if filter.qos == QoS::AtMostOnce {
                    QoS::AtMostOnce
                } else {
                    QoS::AtLeastOnce
                };
                self.subscribed = Some(qos);
                codes.push(SubscribeReasonCode::Success(qos));
            } else {
                tracing::info!(registration_id = %self.login.registration_id, filter = %filter.path, "DPS subscription refused");
                codes.push(SubscribeReasonCode::Failure);
            }
        }
        self.write(&Packet::SubAck(SubAck::new(subscribe.pkid, codes)))
    }

    async fn on_publish(&mut self, publish: Publish) -> Result<(), Closed> {
        if publish.qos == QoS::ExactlyOnce {
            return Err("QoS 2 is not supported by DPS".into());
        }
        let topic =
            UpstreamTopic::parse(&publish.topic).map_err(|e| format!("publish refused: {e}"))?;
        let (request_id, result) = match topic {
            UpstreamTopic::DpsRegister { request_id } => {
                self.ack(&publish)?;
                let result = match crate::provisioning::register_request(&publish.payload) {
                    // MQTT has no forceRegistration flag.
                    Ok(request) => self.ctx.dps.register(&self.login, request, false).await,
                    Err(e) => Err(e),
                };
                (request_id, result)
            }
            UpstreamTopic::DpsOperationStatus {
                request_id,
                operation_id,
            } => {
                self.ack(&publish)?;
                // Python URL-quotes the operation id in the topic.
                let operation_id = azure_iot_core::encoding::decode_component(&operation_id);
                let result = self
                    .ctx
                    .dps
                    .operation_status(&self.login, &operation_id)
                    .await;
                (request_id, result)
            }
            _ => {
                return Err(format!(
                    "`{}` is not a DPS request topic",
                    truncated(&publish.topic)
                ));
            }
        };
        self.answer(request_id, result)
    }

    /// PUBACK for a QoS 1 request, sent before its answer.
    fn ack(&mut self, publish: &Publish) -> Result<(), Closed> {
        if publish.qos == QoS::AtLeastOnce {
            self.write(&Packet::PubAck(PubAck::new(publish.pkid)))?;
        }
        Ok(())
    }

    /// Publishes the answer to request `request_id` on `$dps/registrations/res/…`, if the
    /// device subscribed (as any MQTT server, DPS delivers only to subscribers).
    fn answer(
        &mut self,
        request_id: String,
        result: Result<Answer, DpsError>,
    ) -> Result<(), Closed> {
        let (status, retry_after, body) = match &result {
            Ok(answer) => (
                answer.status,
                answer.retry_after,
                crate::provisioning::answer_body(answer),
            ),
            Err(error) => (
                error.status,
                error.retry_after,
                crate::provisioning::error_body(error),
            ),
        };
        let Some(qos) = self.subscribed else {
            tracing::debug!(registration_id = %self.login.registration_id, status, "DPS request without a subscription to $dps/registrations/res/#; no answer sent");
            return Ok(());
        };
        let topic = DownstreamTopic::DpsResponse {
            status,
            request_id,
            retry_after,
        };
        let mut publish = Publish::new(topic.to_string(), qos, body);
        if qos == QoS::AtLeastOnce {
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            publish.pkid = self.next_packet_id;
        }
        self.write(&Packet::Publish(publish))
    }

    fn write(&mut self, packet: &Packet) -> Result<(), Closed> {
        self.wire.write(packet)
    }
}

/// At most 64 characters of client text, for the log.
fn truncated(text: &str) -> String {
    text.chars().take(64).collect()
}
