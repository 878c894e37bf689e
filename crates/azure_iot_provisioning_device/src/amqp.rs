//! DPS over AMQP 1.0 (TLS on 5671, or a WebSocket on 443), `dps.md` §5 and
//! `next-transports.md` §3.4.
//!
//! SASL PLAIN with user `{idScope}/registrations/{registrationId}` and the SAS token as
//! password (no SASL layer for X.509: the certificate authenticates TLS); one session with a
//! sender and a receiver link, both addressed `{idScope}/registrations/{registrationId}`, link
//! property `com.microsoft:api-version`. A request carries `iotdps-operation-type` (and
//! `iotdps-operation-id` for a poll) and a fresh correlation id; DPS answers on the receiver
//! with the same correlation id, the operation status as one data section and `retry-after`
//! (or `Retry-After`) as an application property. A request DPS refuses is settled `rejected`
//! with its JSON error body as the error description (as C# reads it) and the retry hint in
//! the error's info.
//!
//! TPM attestation logs in with the SASL `TPM` mechanism instead of PLAIN (the `sasl_tpm`
//! module runs it on the stream; the library then opens without SASL).

use azure_iot_device::net::{Dial, Stream};
use azure_iot_protocol::amqp::AmqpMessage;
use azure_iot_protocol::amqp::device::data_bytes;
use azure_iot_protocol::dps::{
    AMQP_API_VERSION, AMQP_FORCE_REGISTRATION, AMQP_OPERATION_ID, AMQP_OPERATION_REGISTER,
    AMQP_OPERATION_STATUS, AMQP_OPERATION_TYPE, API_VERSION, ErrorDetails, RETRY_AFTER,
    registration_path,
};
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use fe2o3_amqp_types::definitions::{self, Fields};
use fe2o3_amqp_types::messaging::{
    ApplicationProperties, Body, Data, Message, MessageId, Outcome, Properties,
};
use fe2o3_amqp_types::primitives::{Binary, SimpleValue, Symbol, Value};

use crate::error::{Error, Result};
use crate::flow::{Exchange, Reply, parse_retry_after};

/// The largest frame offered (DPS answers are small).
const MAX_FRAME: u32 = 64 * 1024;

/// How the connection logs in.
pub(crate) enum Login {
    /// No SASL layer (X.509: the certificate authenticates TLS).
    None,
    /// SASL PLAIN with this SAS token as password.
    Plain(String),
    /// SASL `TPM` with this TPM, its token living this long.
    #[cfg(feature = "tpm")]
    Tpm(crate::tpm::TpmAttestation, std::time::Duration),
}

/// An AMQP connection to DPS with the registration's two links.
pub(crate) struct AmqpExchange {
    connection: ConnectionHandle<()>,
    session: SessionHandle<()>,
    sender: Sender,
    receiver: Receiver,
}

impl AmqpExchange {
    /// Opens the connection (logging in with `login`), the session and both links. A SASL
    /// refusal is [`Error::Unauthorized`].
    pub(crate) async fn connect(
        dial: &Dial,
        id_scope: &str,
        registration_id: &str,
        client_version: &str,
        login: Login,
    ) -> Result<Self> {
        let address = registration_path(id_scope, registration_id);
        let stream = dial.connect().await?;
        let builder = Connection::builder()
            .container_id(uuid::Uuid::new_v4().to_string())
            .hostname(dial.host())
            .max_frame_size(MAX_FRAME);
        let opened = match login {
            Login::Plain(password) => {
                builder
                    .sasl_profile(SaslProfile::Plain {
                        username: address.clone(),
                        password,
                    })
                    .open_with_stream(Stream(stream))
                    .await
            }
            Login::None => builder.open_with_stream(Stream(stream)).await,
            #[cfg(feature = "tpm")]
            Login::Tpm(tpm, ttl) => {
                let mut stream = Stream(stream);
                crate::sasl_tpm::negotiate(&mut stream, id_scope, registration_id, &tpm, ttl)
                    .await?;
                builder.open_with_stream(stream).await
            }
        };
        let mut connection = opened.map_err(|e| {
            use fe2o3_amqp::connection::OpenError;
            match e {
                OpenError::SaslError { .. } => Error::Unauthorized {
                    error_code: None,
                    message: "DPS refused the SASL PLAIN login".to_owned(),
                },
                other => Error::transport("DPS refused the AMQP connection", other),
            }
        })?;
        let mut session = Session::begin(&mut connection)
            .await
            .map_err(|e| Error::transport("DPS refused the AMQP session", e))?;
        let mut properties = Fields::default();
        properties.insert(
            Symbol::from(AMQP_API_VERSION),
            Value::String(API_VERSION.to_owned()),
        );
        properties.insert(
            Symbol::from(azure_iot_protocol::dps::AMQP_CLIENT_VERSION),
            Value::String(client_version.to_owned()),
        );
        let sender = Sender::builder()
            .name(format!("sender-{}", uuid::Uuid::new_v4().simple()))
            .target(address.as_str())
            .properties(properties.clone())
            .attach(&mut session)
            .await
            .map_err(|e| link_refused("sender", e))?;
        let receiver = Receiver::builder()
            .name(format!("receiver-{}", uuid::Uuid::new_v4().simple()))
            .source(address.as_str())
            .properties(properties)
            .attach(&mut session)
            .await
            .map_err(|e| link_refused("receiver", e))?;
        Ok(Self {
            connection,
            session,
            sender,
            receiver,
        })
    }

    /// Sends `message` and waits for the answer with its correlation id.
    async fn request(&mut self, message: AmqpMessage, correlation: MessageId) -> Result<Reply> {
        let outcome = self
            .sender
            .send(message)
            .await
            .map_err(|e| Error::transport("sending the request to DPS failed", e))?;
        match outcome {
            Outcome::Accepted(_) => {}
            Outcome::Rejected(rejected) => return Ok(rejection_reply(rejected.error.as_ref())),
            Outcome::Released(_) | Outcome::Modified(_) => {
                return Err(Error::Protocol(
                    "DPS released the request instead of accepting or rejecting it".to_owned(),
                ));
            }
        }
        loop {
            let delivery = self
                .receiver
                .recv::<Body<Value>>()
                .await
                .map_err(|e| Error::transport("receiving DPS's answer failed", e))?;
            self.receiver
                .accept(&delivery)
                .await
                .map_err(|e| Error::transport("settling DPS's answer failed", e))?;
            let message = delivery.into_message();
            let answers = message
                .properties
                .as_ref()
                .and_then(|p| p.correlation_id.as_ref())
                == Some(&correlation);
            if answers {
                return Ok(answer_reply(&message));
            }
        }
    }

    /// Closes the links, session and connection, ignoring failures (the result is in hand).
    pub(crate) async fn close(mut self) {
        let _ = self.sender.close().await;
        let _ = self.receiver.close().await;
        let _ = self.session.end().await;
        let _ = self.connection.close().await;
    }
}

impl Exchange for AmqpExchange {
    async fn register(&mut self, body: &[u8]) -> Result<Reply> {
        let correlation = MessageId::String(uuid::Uuid::new_v4().to_string());
        let message = request_message(
            correlation.clone(),
            &[
                (
                    AMQP_OPERATION_TYPE,
                    SimpleValue::String(AMQP_OPERATION_REGISTER.to_owned()),
                ),
                (AMQP_FORCE_REGISTRATION, SimpleValue::Bool(false)),
            ],
            body,
        );
        self.request(message, correlation).await
    }

    async fn poll(&mut self, operation_id: &str) -> Result<Reply> {
        let correlation = MessageId::String(uuid::Uuid::new_v4().to_string());
        let message = request_message(
            correlation.clone(),
            &[
                (
                    AMQP_OPERATION_TYPE,
                    SimpleValue::String(AMQP_OPERATION_STATUS.to_owned()),
                ),
                (
                    AMQP_OPERATION_ID,
                    SimpleValue::String(operation_id.to_owned()),
                ),
            ],
            b"",
        );
        self.request(message, correlation).await
    }
}

/// A request: correlation id, application properties, the body as one data section.
fn request_message(
    correlation: MessageId,
    application: &[(&str, SimpleValue)],
    body: &[u8],
) -> AmqpMessage {
    let mut properties = ApplicationProperties::builder();
    for (name, value) in application {
        properties = properties.insert(*name, value.clone());
    }
    Message::builder()
        .properties(Properties {
            correlation_id: Some(correlation),
            ..Default::default()
        })
        .application_properties(properties.build())
        .body(Body::Data(vec![Data(Binary::from(body.to_vec()))].into()))
        .build()
}

/// An answer message as a reply: the body's operation status decides (its own status code
/// is ignored, as the Node SDK does), so the status is 200.
fn answer_reply(message: &AmqpMessage) -> Reply {
    let retry_after = message.application_properties.as_ref().and_then(|props| {
        [RETRY_AFTER, "Retry-After"]
            .iter()
            .find_map(|name| props.get(*name))
            .and_then(simple_seconds)
    });
    Reply {
        status: 200,
        body: data_bytes(message),
        retry_after,
    }
}

/// A rejected request as a reply: the status from DPS's error code in the description (500
/// when it has none), the retry hint from the error's info.
fn rejection_reply(error: Option<&definitions::Error>) -> Reply {
    let description = error
        .and_then(|e| e.description.clone())
        .unwrap_or_default();
    let status = serde_json::from_str::<ErrorDetails>(&description)
        .ok()
        .and_then(|d| d.http_status())
        .unwrap_or(500);
    let retry_after = error
        .and_then(|e| e.info.as_ref())
        .and_then(|info| {
            [RETRY_AFTER, "Retry-After"]
                .iter()
                .find_map(|name| info.get(&Symbol::from(*name)))
        })
        .and_then(value_seconds);
    Reply {
        status,
        body: description.into_bytes(),
        retry_after,
    }
}

fn simple_seconds(value: &SimpleValue) -> Option<u32> {
    value_seconds(&Value::from(value.clone()))
}

/// Whole seconds from a number or text.
fn value_seconds(value: &Value) -> Option<u32> {
    match value {
        Value::String(text) => parse_retry_after(text),
        Value::Int(n) => u32::try_from(*n).ok(),
        Value::Long(n) => u32::try_from(*n).ok(),
        Value::Uint(n) => Some(*n),
        Value::Ulong(n) => u32::try_from(*n).ok(),
        _ => None,
    }
}

fn link_refused(which: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    // An X.509 device is authenticated when its first DPS link attaches: a refusal there
    // is DPS refusing the certificate.
    Error::Unauthorized {
        error_code: None,
        message: format!("DPS refused the {which} link: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_read_the_body_and_either_retry_spelling() {
        for name in ["retry-after", "Retry-After"] {
            let message = Message::builder()
                .application_properties(
                    ApplicationProperties::builder()
                        .insert(name, SimpleValue::String("3".into()))
                        .build(),
                )
                .body(Body::Data(vec![Data(Binary::from(b"{}".to_vec()))].into()))
                .build();
            let reply = answer_reply(&message);
            assert_eq!(reply.retry_after, Some(3), "{name}");
            assert_eq!(reply.body, b"{}");
        }
    }

    #[test]
    fn rejections_carry_the_error_body_status_and_hint() {
        let body = r#"{"errorCode":429001,"trackingId":"t","message":"slow down"}"#;
        let mut info = Fields::default();
        info.insert(Symbol::from("Retry-After"), Value::Ulong(4));
        let error = definitions::Error::new(
            definitions::AmqpError::ResourceLimitExceeded,
            Some(body.to_owned()),
            Some(info),
        );
        let reply = rejection_reply(Some(&error));
        assert_eq!(reply.status, 429);
        assert_eq!(reply.retry_after, Some(4));
        let unauthorised = definitions::Error::new(
            definitions::AmqpError::UnauthorizedAccess,
            Some(r#"{"errorCode":401002,"message":"no"}"#.to_owned()),
            None,
        );
        assert_eq!(rejection_reply(Some(&unauthorised)).status, 401);
        assert_eq!(rejection_reply(None).status, 500);
    }
}
