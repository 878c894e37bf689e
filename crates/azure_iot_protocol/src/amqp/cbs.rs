//! CBS (claims-based security) put-token: the request a client sends on the `$cbs` link and
//! the answer the hub sends back, both built and parsed here for both roles.
//!
//! # Design
//!
//! ```text
//!   client                                        hub / emulator
//!   PutToken::new(..).to_message()  ── $cbs ──▶  PutToken::parse(&message)
//!   PutTokenAnswer::parse(&message) ◀── $cbs ──  PutTokenAnswer::to(&request, 200, "OK").to_message()
//! ```
//!
//! What the SDKs send differs (see `amqp.md` §2 and the golden vectors): Node sends a string
//! message id, `to` = `$cbs` and `reply-to` = `cbs`; Python (uamqp) a **ulong** message id and
//! neither; Java a uuid; application-property values may be strings or symbols. The answer's
//! `correlation-id` is the request's message id **with its AMQP type kept** (C reads it as a
//! ulong, Java casts it to a UUID), so [`PutToken`] keeps the [`MessageId`] as received. The
//! hub answers `status-code` as an AMQP **int** 200 (Node fails on anything else); clients
//! accept 200 and 202 (Event Hubs' value).
//!
//! The token is a secret: `Debug` never shows it and no error quotes it.

use std::fmt;

use fe2o3_amqp_types::messaging::{
    AmqpValue, ApplicationProperties, Body, Header, Message, MessageId, Properties,
};
use fe2o3_amqp_types::primitives::{SimpleValue, Value};

use super::AmqpMessage;
use super::address::Address;

/// The put-token `type` of a SAS token, as every SDK sends it.
pub const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";
/// The IoT Hub spelling of the SAS token type, which the hub accepts too.
pub const IOT_HUB_SAS_TOKEN_TYPE: &str = "azure-devices.net:sastoken";
/// The put-token operation name.
pub const PUT_TOKEN: &str = "put-token";
/// The `reply-to` the Node and Java SDKs use.
pub const CBS_REPLY_TO: &str = "cbs";
/// The longest token accepted; longer input is refused before it is looked at.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Why a CBS message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CbsError {
    /// The `operation` is not `put-token` (or is missing).
    #[error("unsupported CBS operation `{0}`; only put-token is served")]
    Operation(String),
    /// A required application property is missing or not text.
    #[error("the CBS request has no `{0}` application property")]
    Missing(&'static str),
    /// The token `type` is not a SAS token type.
    #[error("unsupported CBS token type `{0}`")]
    TokenType(String),
    /// The body is not a token string (an `amqp-value` string, or UTF-8 data).
    #[error("the put-token body is not a token string")]
    Body,
    /// The token is longer than [`MAX_TOKEN_LEN`].
    #[error("the put-token token is {0} bytes long; at most {MAX_TOKEN_LEN} are accepted")]
    TooLong(usize),
    /// An answer has no integer `status-code`.
    #[error("the CBS answer has no integer status-code")]
    Status,
}

/// A put-token request.
#[derive(Clone, PartialEq, Eq)]
pub struct PutToken {
    /// The audience (`name`): what the token is for, e.g. `{host}` or
    /// `{host}/devices/{id}`, as the client wrote it (see [`CbsAudience`]).
    pub audience: String,
    /// The token (a secret).
    pub token: String,
    /// The token type (`type`).
    pub token_type: String,
    /// The request's message id, with its AMQP type kept for the answer's correlation id.
    pub message_id: Option<MessageId>,
    /// Where the client wants the answer (`reply-to`), if it said.
    pub reply_to: Option<String>,
}

impl fmt::Debug for PutToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutToken")
            .field("audience", &self.audience)
            .field("token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("message_id", &self.message_id)
            .field("reply_to", &self.reply_to)
            .finish()
    }
}

impl PutToken {
    /// A request putting SAS `token` for `audience`, with `message_id`; `to` = `$cbs` and
    /// `reply-to` = `cbs` as the Node SDK sends them.
    pub fn new(
        audience: impl Into<String>,
        token: impl Into<String>,
        message_id: impl Into<MessageId>,
    ) -> Self {
        Self {
            audience: audience.into(),
            token: token.into(),
            token_type: SAS_TOKEN_TYPE.to_owned(),
            message_id: Some(message_id.into()),
            reply_to: Some(CBS_REPLY_TO.to_owned()),
        }
    }

    /// The AMQP message: properties (`message-id`, `to`, `reply-to`), application properties
    /// `operation`, `type`, `name` (string keys and values), and the token as an
    /// `amqp-value` string.
    pub fn to_message(&self) -> AmqpMessage {
        let mut properties = Properties::builder().to(Address::Cbs.to_string());
        if let Some(id) = &self.message_id {
            properties = properties.message_id(id.clone());
        }
        if let Some(reply_to) = &self.reply_to {
            properties = properties.reply_to(reply_to.clone());
        }
        Message::builder()
            .properties(properties.build())
            .application_properties(
                ApplicationProperties::builder()
                    .insert("operation", PUT_TOKEN)
                    .insert("type", self.token_type.as_str())
                    .insert("name", self.audience.as_str())
                    .build(),
            )
            .body(Body::Value(AmqpValue(Value::String(self.token.clone()))))
            .build()
    }

    /// Reads a request as the hub does: `operation` must be `put-token`, `type` a SAS token
    /// type, `name` present; the token may be an `amqp-value` string (every SDK) or UTF-8
    /// data. `expiration` and other properties are ignored.
    pub fn parse(message: &AmqpMessage) -> Result<Self, CbsError> {
        let operation = app_text(message, "operation").unwrap_or_default();
        if operation != PUT_TOKEN {
            return Err(CbsError::Operation(truncated(&operation)));
        }
        let token_type = app_text(message, "type").ok_or(CbsError::Missing("type"))?;
        if token_type != SAS_TOKEN_TYPE && token_type != IOT_HUB_SAS_TOKEN_TYPE {
            return Err(CbsError::TokenType(truncated(&token_type)));
        }
        let audience = app_text(message, "name").ok_or(CbsError::Missing("name"))?;
        let token = match &message.body {
            Body::Value(AmqpValue(Value::String(token))) => token.clone(),
            Body::Data(sections) if sections.len() == 1 => sections
                .iter()
                .next()
                .and_then(|d| std::str::from_utf8(&d.0).ok())
                .ok_or(CbsError::Body)?
                .to_owned(),
            _ => return Err(CbsError::Body),
        };
        if token.len() > MAX_TOKEN_LEN {
            return Err(CbsError::TooLong(token.len()));
        }
        let properties = message.properties.as_ref();
        Ok(Self {
            audience,
            token,
            token_type,
            message_id: properties.and_then(|p| p.message_id.clone()),
            reply_to: properties.and_then(|p| p.reply_to.clone()),
        })
    }
}

/// The hub's answer to a put-token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutTokenAnswer {
    /// `status-code`: 200 on success; 401 bad or expired token, 404 unknown identity.
    pub status_code: i32,
    /// `status-description`.
    pub description: String,
    /// The request's message id, its AMQP type kept.
    pub correlation_id: Option<MessageId>,
    /// The request's `reply-to`, echoed as `to`.
    pub to: Option<String>,
}

impl PutTokenAnswer {
    /// The answer to `request` with `status_code` and `description`.
    pub fn to(request: &PutToken, status_code: i32, description: impl Into<String>) -> Self {
        Self {
            status_code,
            description: description.into(),
            correlation_id: request.message_id.clone(),
            to: request.reply_to.clone(),
        }
    }

    /// Whether the token was accepted (200, or 202 as Event Hubs answers).
    pub fn is_success(&self) -> bool {
        matches!(self.status_code, 200 | 202)
    }

    /// Whether this answers the request with `message_id` (same type and value).
    pub fn answers(&self, message_id: &MessageId) -> bool {
        self.correlation_id.as_ref() == Some(message_id)
    }

    /// The AMQP message: an empty header, properties (`correlation-id`, `to`), application
    /// properties `status-code` (int) and `status-description` (string), a null body.
    pub fn to_message(&self) -> AmqpMessage {
        let mut properties = Properties::builder();
        if let Some(id) = &self.correlation_id {
            properties = properties.correlation_id(id.clone());
        }
        if let Some(to) = &self.to {
            properties = properties.to(to.clone());
        }
        Message::builder()
            .header(Header::default())
            .properties(properties.build())
            .application_properties(
                ApplicationProperties::builder()
                    .insert("status-code", SimpleValue::Int(self.status_code))
                    .insert(
                        "status-description",
                        SimpleValue::String(self.description.clone()),
                    )
                    .build(),
            )
            .body(Body::Value(AmqpValue(Value::Null)))
            .build()
    }

    /// Reads an answer as a client does: `status-code` of any integer type, a missing
    /// description read as empty.
    pub fn parse(message: &AmqpMessage) -> Result<Self, CbsError> {
        let status_code = match app_value(message, "status-code") {
            Some(SimpleValue::Int(n)) => *n,
            Some(SimpleValue::Long(n)) => i32::try_from(*n).map_err(|_| CbsError::Status)?,
            Some(SimpleValue::Uint(n)) => i32::try_from(*n).map_err(|_| CbsError::Status)?,
            Some(SimpleValue::Ulong(n)) => i32::try_from(*n).map_err(|_| CbsError::Status)?,
            Some(SimpleValue::Short(n)) => i32::from(*n),
            Some(SimpleValue::Ushort(n)) => i32::from(*n),
            _ => return Err(CbsError::Status),
        };
        let properties = message.properties.as_ref();
        Ok(Self {
            status_code,
            description: app_text(message, "status-description").unwrap_or_default(),
            correlation_id: properties.and_then(|p| p.correlation_id.clone()),
            to: properties.and_then(|p| p.to.clone()),
        })
    }
}

/// What a put-token `name` names, read liberally: `{host}` (Node, C# grouped SAS),
/// `https://{host}` (Python), `sb://` or `amqps://` forms, `{host}/devices/{id}[/modules/{m}]`
/// raw (C, C#, Java) or percent-encoded as a whole (Node: `host%2Fdevices%2Fdev1`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CbsAudience {
    /// The host, lower-cased.
    pub host: String,
    /// The device, for an identity-scoped audience.
    pub device_id: Option<String>,
    /// The module, for a module-scoped audience.
    pub module_id: Option<String>,
}

impl CbsAudience {
    /// Parses an audience; `None` if it is not one of the forms above.
    ///
    /// ```
    /// use azure_iot_protocol::amqp::CbsAudience;
    /// let node = CbsAudience::parse("Hub.example%2Fdevices%2Fdev1").unwrap();
    /// assert_eq!(node, CbsAudience::parse("hub.example/devices/dev1").unwrap());
    /// assert_eq!(node.host, "hub.example");
    /// assert_eq!(node.device_id.as_deref(), Some("dev1"));
    /// assert_eq!(CbsAudience::parse("https://hub.example").unwrap().device_id, None);
    /// ```
    pub fn parse(name: &str) -> Option<Self> {
        if name.is_empty() || name.len() > super::address::MAX_ADDRESS_LEN {
            return None;
        }
        let decoded = azure_iot_core::encoding::decode_component(name);
        let rest = match decoded.split_once("://") {
            Some((_, rest)) => rest,
            None => &decoded,
        };
        let rest = rest.trim_end_matches('/');
        let mut parts = rest.split('/');
        let host = parts.next().filter(|h| !h.is_empty())?;
        let segments: Vec<&str> = parts.collect();
        let id = |raw: &str| {
            let id = azure_iot_core::encoding::decode_component(raw).into_owned();
            crate::identity::check_id(&id).ok().map(|()| id)
        };
        let (device_id, module_id) = match segments.as_slice() {
            [] => (None, None),
            [d, device] if d.eq_ignore_ascii_case("devices") => (Some(id(device)?), None),
            [d, device, m, module]
                if d.eq_ignore_ascii_case("devices") && m.eq_ignore_ascii_case("modules") =>
            {
                (Some(id(device)?), Some(id(module)?))
            }
            _ => return None,
        };
        Some(Self {
            host: host.to_ascii_lowercase(),
            device_id,
            module_id,
        })
    }

    /// The SAS resource this audience names (`{host}` or `{host}/devices/{id}[/modules/{m}]`).
    pub fn resource(&self) -> String {
        let mut resource = self.host.clone();
        if let Some(device) = &self.device_id {
            resource.push_str("/devices/");
            resource.push_str(device);
            if let Some(module) = &self.module_id {
                resource.push_str("/modules/");
                resource.push_str(module);
            }
        }
        resource
    }
}

/// An application property as text (string or symbol values).
fn app_text(message: &AmqpMessage, name: &str) -> Option<String> {
    match app_value(message, name)? {
        SimpleValue::String(s) => Some(s.clone()),
        SimpleValue::Symbol(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn app_value<'a>(message: &'a AmqpMessage, name: &str) -> Option<&'a SimpleValue> {
    message.application_properties.as_ref()?.get(name)
}

/// At most 64 characters of untrusted text, for an error message.
fn truncated(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp_types::messaging::Data;
    use proptest::prelude::*;

    #[test]
    fn a_request_round_trips_and_hides_its_token() {
        let request = PutToken::new("hub.example", "SharedAccessSignature sr=x", 7u64);
        let parsed = PutToken::parse(&request.to_message()).unwrap();
        assert_eq!(parsed, request);
        assert_eq!(parsed.message_id, Some(MessageId::Ulong(7)));
        assert!(!format!("{parsed:?}").contains("SharedAccessSignature"));
    }

    #[test]
    fn the_answer_keeps_the_type_of_the_message_id() {
        for id in [
            MessageId::Ulong(0),
            MessageId::String("4e1402ee".into()),
            MessageId::Uuid([7u8; 16].into()),
        ] {
            let request = PutToken::new("hub", "t", id.clone());
            let answer = PutTokenAnswer::to(&request, 200, "OK");
            let parsed = PutTokenAnswer::parse(&answer.to_message()).unwrap();
            assert_eq!(parsed, answer);
            assert!(parsed.answers(&id) && parsed.is_success());
            assert_eq!(parsed.to.as_deref(), Some("cbs"));
        }
    }

    #[test]
    fn bad_requests_are_typed_errors() {
        let good = PutToken::new("hub", "t", 1u64).to_message();
        let with = |f: &dyn Fn(&mut AmqpMessage)| {
            let mut m = good.clone();
            f(&mut m);
            PutToken::parse(&m)
        };
        assert_eq!(
            with(&|m| {
                m.application_properties
                    .as_mut()
                    .unwrap()
                    .insert("operation".into(), "delete-token".into());
            }),
            Err(CbsError::Operation("delete-token".into()))
        );
        assert_eq!(
            with(&|m| {
                m.application_properties
                    .as_mut()
                    .unwrap()
                    .insert("type".into(), "jwt".into());
            }),
            Err(CbsError::TokenType("jwt".into()))
        );
        assert_eq!(
            with(&|m| m.body = Body::Value(AmqpValue(Value::Int(1)))),
            Err(CbsError::Body)
        );
        assert_eq!(
            with(&|m| m.body = Body::Value(AmqpValue(Value::String("x".repeat(5000))))),
            Err(CbsError::TooLong(5000))
        );
        assert_eq!(
            with(&|m| m.body = Body::Data(vec![Data(b"t".to_vec().into())].into()))
                .unwrap()
                .token,
            "t"
        );
        assert_eq!(
            with(&|m| m.application_properties = None),
            Err(CbsError::Operation(String::new()))
        );
    }

    #[test]
    fn audiences_in_every_sdk_form() {
        let hub = CbsAudience {
            host: "hub.example".into(),
            device_id: None,
            module_id: None,
        };
        for name in [
            "hub.example",
            "HUB.example",
            "https://hub.example",
            "sb://hub.example/",
            "amqps://hub.example",
        ] {
            assert_eq!(CbsAudience::parse(name).as_ref(), Some(&hub), "{name}");
        }
        // Node encodes the whole resource; C# encodes the id only.
        let module = CbsAudience::parse("hub.example%2Fdevices%2Fd%2A1%2Fmodules%2Fm").unwrap();
        assert_eq!(module.device_id.as_deref(), Some("d*1"));
        assert_eq!(module.module_id.as_deref(), Some("m"));
        assert_eq!(module.resource(), "hub.example/devices/d*1/modules/m");
        assert_eq!(
            CbsAudience::parse("hub.example/devices/d%2A1/modules/m"),
            Some(module)
        );
        for bad in [
            "",
            "/devices/d",
            "hub/other/d",
            "hub/devices/",
            "hub/devices/a b",
        ] {
            assert_eq!(CbsAudience::parse(bad), None, "{bad}");
        }
    }

    fn arbitrary_simple() -> impl Strategy<Value = SimpleValue> {
        prop_oneof![
            ".{0,20}".prop_map(SimpleValue::String),
            any::<i32>().prop_map(SimpleValue::Int),
            any::<i64>().prop_map(SimpleValue::Long),
            any::<u64>().prop_map(SimpleValue::Ulong),
            Just(SimpleValue::Null),
            ".{0,10}".prop_map(|s| SimpleValue::Symbol(s.into())),
        ]
    }

    proptest! {
        #[test]
        fn any_cbs_message_is_read_without_panicking(
            operation in prop_oneof![Just("put-token".to_owned()), ".{0,12}"],
            kind in prop_oneof![Just(SAS_TOKEN_TYPE.to_owned()), ".{0,12}"],
            name in ".{0,40}",
            status in arbitrary_simple(),
            body in prop_oneof![
                ".{0,40}".prop_map(|s| Body::Value(AmqpValue(Value::String(s)))),
                proptest::collection::vec(any::<u8>(), 0..40)
                    .prop_map(|b| Body::Data(vec![Data(b.into())].into())),
                any::<i64>().prop_map(|n| Body::Value(AmqpValue(Value::Long(n)))),
                Just(Body::Empty),
            ],
        ) {
            let message = Message::builder()
                .application_properties(
                    ApplicationProperties::builder()
                        .insert("operation", operation)
                        .insert("type", kind)
                        .insert("name", name.clone())
                        .insert("status-code", status)
                        .build(),
                )
                .body(body)
                .build();
            let _ = PutToken::parse(&message);
            let _ = PutTokenAnswer::parse(&message);
            let _ = CbsAudience::parse(&name);
        }
    }
}
