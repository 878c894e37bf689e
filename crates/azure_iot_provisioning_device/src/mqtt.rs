//! DPS over MQTT 3.1.1 (TLS on 8883, or a WebSocket on 443), `dps.md` §3.
//!
//! CONNECT with client id = registration id, clean session, the DPS user name
//! ([`DpsUsername`]) and the SAS token as password (none for X.509); SUBSCRIBE
//! `$dps/registrations/res/#`; each request is a QoS 1 PUBLISH to the register or
//! operation-status topic with a fresh `$rid`, answered by a PUBLISH on
//! `$dps/registrations/res/{status}/?$rid=…[&retry-after=…]` ([`DownstreamTopic::DpsResponse`]).
//! Packets are framed by `azure_iot_protocol::mqtt::codec`; topics and user names are the ones
//! the emulator parses.

use azure_iot_device::net::{Connection, Dial};
use azure_iot_protocol::mqtt::client::is_unauthorized;
use azure_iot_protocol::mqtt::codec::{
    Connect, ConnectReturnCode, MAX_PACKET_BYTES, Packet, PubAck, Publish, QoS, Subscribe,
    read_packet, write_packet,
};
use azure_iot_protocol::mqtt::{DownstreamTopic, DpsUsername, TopicFilter, UpstreamTopic};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::flow::{Exchange, Reply};

/// Keep-alive announced in CONNECT; a registration sends a request at least every
/// `retry-after`, well within it.
const KEEP_ALIVE_SECS: u16 = 60;

/// An MQTT connection to DPS with the response subscription in place.
pub(crate) struct MqttExchange {
    io: Connection,
    buffer: BytesMut,
    next_packet_id: u16,
}

impl MqttExchange {
    /// Connects and subscribes. A refused CONNECT is [`Error::Unauthorized`] (codes 4 and 5)
    /// or [`Error::Service`].
    pub(crate) async fn connect(
        dial: &Dial,
        id_scope: &str,
        registration_id: &str,
        client_version: &str,
        password: Option<String>,
    ) -> Result<Self> {
        let mut this = Self {
            io: dial.connect().await?,
            buffer: BytesMut::with_capacity(4096),
            next_packet_id: 0,
        };
        let mut connect = Connect::new(registration_id);
        connect.keep_alive = KEEP_ALIVE_SECS;
        connect.clean_session = true;
        let username = DpsUsername::new(id_scope, registration_id, client_version);
        connect.set_login(username.to_string(), password.unwrap_or_default());
        this.send(&Packet::Connect(connect)).await?;
        match this.read().await? {
            Packet::ConnAck(ack) => check_connack(ack.code)?,
            other => return Err(unexpected("CONNACK", &other)),
        }
        let id = this.packet_id();
        let subscribe = Subscribe::new(TopicFilter::DpsResponses.to_string(), QoS::AtLeastOnce);
        let mut subscribe = subscribe;
        subscribe.pkid = id;
        this.send(&Packet::Subscribe(subscribe)).await?;
        loop {
            match this.read().await? {
                Packet::SubAck(ack) if ack.pkid == id => {
                    use azure_iot_protocol::mqtt::codec::SubscribeReasonCode;
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure))
                    {
                        return Err(Error::Protocol(
                            "DPS refused the subscription to its responses".to_owned(),
                        ));
                    }
                    return Ok(this);
                }
                Packet::PingResp => {}
                other => return Err(unexpected("SUBACK", &other)),
            }
        }
    }

    /// Sends DISCONNECT and closes the stream, ignoring failures (the result is in hand).
    pub(crate) async fn close(mut self) {
        let _ = self.send(&Packet::Disconnect).await;
        let _ = self.io.shutdown().await;
    }

    fn packet_id(&mut self) -> u16 {
        self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
        self.next_packet_id
    }

    async fn send(&mut self, packet: &Packet) -> Result<()> {
        let mut bytes = BytesMut::new();
        write_packet(packet, &mut bytes)
            .map_err(|e| Error::InvalidArgument(format!("cannot encode the MQTT packet: {e}")))?;
        self.io
            .write_all(&bytes)
            .await
            .map_err(|e| Error::transport("writing to DPS failed", e))?;
        // A TLS stream may hold the record until flushed.
        self.io
            .flush()
            .await
            .map_err(|e| Error::transport("writing to DPS failed", e))
    }

    async fn read(&mut self) -> Result<Packet> {
        loop {
            if let Some(packet) = read_packet(&mut self.buffer, MAX_PACKET_BYTES)
                .map_err(|e| Error::Protocol(e.to_string()))?
            {
                return Ok(packet);
            }
            let n = self
                .io
                .read_buf(&mut self.buffer)
                .await
                .map_err(|e| Error::transport("reading from DPS failed", e))?;
            if n == 0 {
                return Err(Error::Transport {
                    message: "DPS closed the MQTT connection".to_owned(),
                    source: None,
                });
            }
        }
    }

    /// Publishes `payload` to `topic` and waits for the response naming `request_id`.
    async fn request(
        &mut self,
        topic: UpstreamTopic,
        request_id: &str,
        payload: Vec<u8>,
    ) -> Result<Reply> {
        let mut publish = Publish::new(topic.to_string(), QoS::AtLeastOnce, payload);
        publish.pkid = self.packet_id();
        self.send(&Packet::Publish(publish)).await?;
        loop {
            match self.read().await? {
                Packet::Publish(response) => {
                    if response.qos == QoS::AtLeastOnce {
                        self.send(&Packet::PubAck(PubAck::new(response.pkid)))
                            .await?;
                    }
                    if let Some(reply) = reply_to(&response, request_id)? {
                        return Ok(reply);
                    }
                }
                Packet::PubAck(_) | Packet::PingResp => {}
                other => return Err(unexpected("PUBLISH", &other)),
            }
        }
    }
}

impl Exchange for MqttExchange {
    async fn register(&mut self, body: &[u8]) -> Result<Reply> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let topic = UpstreamTopic::DpsRegister {
            request_id: request_id.clone(),
        };
        self.request(topic, &request_id, body.to_vec()).await
    }

    async fn poll(&mut self, operation_id: &str) -> Result<Reply> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let topic = UpstreamTopic::DpsOperationStatus {
            request_id: request_id.clone(),
            operation_id: operation_id.to_owned(),
        };
        // The Python and Node SDKs send a single space.
        self.request(topic, &request_id, b" ".to_vec()).await
    }
}

/// The reply in `publish` if it answers `request_id`; `None` for a response to another
/// request (a late answer to an earlier one).
pub(crate) fn reply_to(publish: &Publish, request_id: &str) -> Result<Option<Reply>> {
    let topic = publish.topic.as_str();
    match DownstreamTopic::parse(topic) {
        Ok(DownstreamTopic::DpsResponse {
            status,
            request_id: rid,
            retry_after,
        }) => Ok((rid == request_id).then(|| Reply {
            status,
            body: publish.payload.to_vec(),
            retry_after,
        })),
        Ok(_) => Err(Error::Protocol(format!(
            "DPS published to `{}`, which is not a response topic",
            topic.chars().take(200).collect::<String>()
        ))),
        Err(e) => Err(Error::Protocol(format!(
            "an unreadable response topic: {e}"
        ))),
    }
}

/// The error for a refused CONNECT.
pub(crate) fn check_connack(code: ConnectReturnCode) -> Result<()> {
    if code == ConnectReturnCode::Success {
        return Ok(());
    }
    if is_unauthorized(code) {
        return Err(Error::Unauthorized {
            error_code: None,
            message: format!("MQTT CONNACK {code:?}"),
        });
    }
    Err(Error::Service {
        status: 503,
        error_code: None,
        message: format!("DPS refused the MQTT connection: {code:?}"),
    })
}

fn unexpected(wanted: &str, got: &Packet) -> Error {
    Error::Protocol(format!(
        "expected {wanted}, DPS sent {}",
        azure_iot_protocol::mqtt::codec::packet_name(got)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(topic: &str, payload: &str) -> Publish {
        Publish::new(topic, QoS::AtLeastOnce, payload.as_bytes().to_vec())
    }

    #[test]
    fn responses_are_matched_by_request_id() {
        let p = publish(
            "$dps/registrations/res/202/?$rid=abc&retry-after=3",
            r#"{"operationId":"op","status":"assigning"}"#,
        );
        let reply = reply_to(&p, "abc").unwrap().unwrap();
        assert_eq!(reply.status, 202);
        assert_eq!(reply.retry_after, Some(3));
        assert_eq!(reply_to(&p, "other").unwrap(), None);
        let done = publish("$dps/registrations/res/200/?$rid=abc", "{}");
        assert_eq!(reply_to(&done, "abc").unwrap().unwrap().retry_after, None);
    }

    #[test]
    fn other_topics_are_protocol_errors() {
        let p = publish("devices/d/messages/devicebound/", "x");
        assert!(matches!(reply_to(&p, "abc"), Err(Error::Protocol(_))));
    }

    #[test]
    fn refused_connects_are_typed() {
        assert!(check_connack(ConnectReturnCode::Success).is_ok());
        assert!(matches!(
            check_connack(ConnectReturnCode::NotAuthorized),
            Err(Error::Unauthorized { .. })
        ));
        assert!(matches!(
            check_connack(ConnectReturnCode::BadUserNamePassword),
            Err(Error::Unauthorized { .. })
        ));
        assert!(matches!(
            check_connack(ConnectReturnCode::ServiceUnavailable),
            Err(Error::Service { .. })
        ));
    }
}
