//! The IoT Hub message: telemetry (device to cloud), cloud-to-device messages and module
//! input/output messages all share it.
//!
//! A [`Message`] is a body, application properties (string pairs, insertion order kept) and
//! [`SystemProperties`] (the ones IoT Hub defines: message id, correlation id, content type,
//! expiry ...). Each transport maps the same model to its wire form: MQTT property bags,
//! AMQP properties and annotations, HTTP headers.
//!
//! Messages are built with [`Message::builder`]; [`MessageBuilder::build`] refuses a message
//! over IoT Hub's 256 KiB limit ([`MAX_MESSAGE_SIZE`]) so that a client fails *before* it
//! sends, with an error that says how large the message was. The size counts what the hub
//! counts: the body plus every property name and value.

use std::fmt;

use bytes::Bytes;
use time::OffsetDateTime;

/// The largest message IoT Hub accepts: 256 KiB, body and properties together.
pub const MAX_MESSAGE_SIZE: usize = 256 * 1024;

/// Why a message could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Body and properties together exceed [`MAX_MESSAGE_SIZE`].
    #[error("message is {size} bytes (body and properties); IoT Hub accepts at most {limit}")]
    TooLarge {
        /// The message's size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// An application property name is empty.
    #[error("application property names must not be empty")]
    EmptyPropertyName,
    /// An application property name starts with `$.`, which every transport reserves for
    /// system properties.
    #[error(
        "application property name `{0}` starts with `$.`, which is reserved for system properties"
    )]
    ReservedPropertyName(String),
}

/// The feedback a cloud-to-device sender asks for (`iothub-ack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AckMode {
    /// No feedback (the default).
    #[default]
    None,
    /// Feedback when the device completes the message.
    Positive,
    /// Feedback when the message expires, is rejected or exceeds its delivery count.
    Negative,
    /// Both.
    Full,
}

impl AckMode {
    /// The wire value: `none`, `positive`, `negative` or `full`.
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::None => "none",
            AckMode::Positive => "positive",
            AckMode::Negative => "negative",
            AckMode::Full => "full",
        }
    }

    /// Parses a wire value, ignoring ASCII case.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::None, Self::Positive, Self::Negative, Self::Full]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(text))
    }
}

impl fmt::Display for AckMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The properties IoT Hub defines. All optional; set the ones you need.
///
/// The MQTT wire names (`$.mid` ...) are in `azure_iot_protocol::mqtt::property_bag`; the HTTP
/// header names in `azure_iot_protocol::http`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SystemProperties {
    /// Message id (`$.mid`), chosen by the sender.
    pub message_id: Option<String>,
    /// Correlation id (`$.cid`).
    pub correlation_id: Option<String>,
    /// User id (`$.uid`).
    pub user_id: Option<String>,
    /// Destination (`$.to`); the hub sets it on cloud-to-device messages.
    pub to: Option<String>,
    /// Content type of the body (`$.ct`), e.g. `application/json`. Required for message
    /// routing on the body.
    pub content_type: Option<String>,
    /// Content encoding of the body (`$.ce`), e.g. `utf-8`.
    pub content_encoding: Option<String>,
    /// Absolute expiry (`$.exp`).
    pub expiry_time_utc: Option<OffsetDateTime>,
    /// Creation time (`$.ctime`).
    pub creation_time_utc: Option<OffsetDateTime>,
    /// Output name of a module message (`$.on`).
    pub output_name: Option<String>,
    /// Input name of a message delivered to a module input.
    pub input_name: Option<String>,
    /// Plug and Play component name (`$.sub`).
    pub component_name: Option<String>,
    /// Interface id (`$.ifid`); IoT Hub knows only the security-message interface.
    pub interface_id: Option<String>,
    /// Message schema (`$.schema`).
    pub message_schema: Option<String>,
    /// Feedback requested by a cloud-to-device sender (`iothub-ack`).
    pub ack: Option<AckMode>,
    /// Device that sent the message, stamped by the hub (`$.cdid`).
    pub connection_device_id: Option<String>,
    /// Module that sent the message, stamped by the hub (`$.cmid`).
    pub connection_module_id: Option<String>,
    /// How the sender authenticated, stamped by the hub.
    pub connection_auth_method: Option<String>,
    /// When the hub enqueued the message.
    pub enqueued_time: Option<OffsetDateTime>,
    /// Hub-assigned sequence number.
    pub sequence_number: Option<u64>,
    /// How many times a cloud-to-device message was delivered.
    pub delivery_count: Option<u32>,
    /// Lock token of a cloud-to-device message (AMQP and HTTPS settlement).
    pub lock_token: Option<String>,
    /// Distributed tracing id (`$.diagid`).
    pub diagnostic_id: Option<String>,
    /// Distributed tracing context (`$.diagctx`).
    pub diagnostic_context: Option<String>,
    /// System properties this crate does not model, by wire name without the `$.` prefix,
    /// kept so that nothing a sender wrote is lost.
    pub other: Vec<(String, String)>,
}

impl SystemProperties {
    /// Bytes the string-valued properties add to a message's size.
    fn size(&self) -> usize {
        let strings = [
            &self.message_id,
            &self.correlation_id,
            &self.user_id,
            &self.to,
            &self.content_type,
            &self.content_encoding,
            &self.output_name,
            &self.input_name,
            &self.component_name,
            &self.interface_id,
            &self.message_schema,
            &self.connection_device_id,
            &self.connection_module_id,
            &self.connection_auth_method,
            &self.lock_token,
            &self.diagnostic_id,
            &self.diagnostic_context,
        ];
        let timestamps = [
            self.expiry_time_utc,
            self.creation_time_utc,
            self.enqueued_time,
        ];
        // Timestamps travel as 28-character ISO 8601 strings.
        strings
            .iter()
            .flat_map(|s| s.as_deref())
            .map(str::len)
            .sum::<usize>()
            + timestamps.iter().flatten().count() * 28
            + self
                .other
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// An IoT Hub message. Build one with [`Message::builder`] or [`Message::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    body: Bytes,
    properties: Vec<(String, String)>,
    system: SystemProperties,
}

impl Message {
    /// A message with `body` and no properties.
    pub fn new(body: impl Into<Bytes>) -> Result<Self, MessageError> {
        Self::builder(body).build()
    }

    /// Starts building a message with `body`.
    ///
    /// ```
    /// use azure_iot_core::message::Message;
    /// let message = Message::builder(r#"{"temperature":21.5}"#)
    ///     .content_type("application/json")
    ///     .content_encoding("utf-8")
    ///     .property("alert", "false")
    ///     .build()?;
    /// assert_eq!(message.property("alert"), Some("false"));
    /// # Ok::<(), azure_iot_core::message::MessageError>(())
    /// ```
    pub fn builder(body: impl Into<Bytes>) -> MessageBuilder {
        MessageBuilder {
            message: Message {
                body: body.into(),
                properties: Vec::new(),
                system: SystemProperties::default(),
            },
            error: None,
        }
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The application properties, in insertion order.
    pub fn properties(&self) -> &[(String, String)] {
        &self.properties
    }

    /// One application property.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The system properties.
    pub fn system_properties(&self) -> &SystemProperties {
        &self.system
    }

    /// The size IoT Hub counts against [`MAX_MESSAGE_SIZE`]: body plus every property name
    /// and value.
    pub fn size(&self) -> usize {
        self.body.len()
            + self
                .properties
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + self.system.size()
    }

    /// Takes the message apart.
    pub fn into_parts(self) -> (Bytes, Vec<(String, String)>, SystemProperties) {
        (self.body, self.properties, self.system)
    }

    /// Turns the message back into a builder, e.g. to change a property and build again.
    pub fn into_builder(self) -> MessageBuilder {
        MessageBuilder {
            message: self,
            error: None,
        }
    }
}

/// Builds a [`Message`]; see [`Message::builder`].
#[derive(Debug, Clone)]
#[must_use = "call build() to get the message"]
pub struct MessageBuilder {
    message: Message,
    error: Option<MessageError>,
}

macro_rules! string_setters {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        pub fn $name(mut self, value: impl Into<String>) -> Self {
            self.message.system.$name = Some(value.into());
            self
        }
    )*};
}

impl MessageBuilder {
    /// Adds an application property, replacing one with the same name.
    ///
    /// An empty name or one starting with `$.` makes [`build`](Self::build) fail.
    pub fn property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        if name.is_empty() {
            self.error.get_or_insert(MessageError::EmptyPropertyName);
        } else if name.starts_with("$.") {
            self.error
                .get_or_insert(MessageError::ReservedPropertyName(name.clone()));
        }
        let value = value.into();
        match self.message.properties.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.message.properties.push((name, value)),
        }
        self
    }

    string_setters! {
        /// Sets the message id.
        message_id;
        /// Sets the correlation id.
        correlation_id;
        /// Sets the user id.
        user_id;
        /// Sets the destination (`to`).
        to;
        /// Sets the body's content type, e.g. `application/json`.
        content_type;
        /// Sets the body's content encoding, e.g. `utf-8`.
        content_encoding;
        /// Sets the output name (module messages).
        output_name;
        /// Sets the input name (messages delivered to a module input).
        input_name;
        /// Sets the Plug and Play component name.
        component_name;
        /// Sets the interface id.
        interface_id;
        /// Sets the message schema.
        message_schema;
        /// Sets the connection device id (stamped by the hub).
        connection_device_id;
        /// Sets the connection module id (stamped by the hub).
        connection_module_id;
        /// Sets the connection authentication method (stamped by the hub).
        connection_auth_method;
        /// Sets the lock token.
        lock_token;
        /// Sets the distributed tracing id.
        diagnostic_id;
        /// Sets the distributed tracing context.
        diagnostic_context;
    }

    /// Marks the message as a security message (interface id
    /// `urn:azureiot:Security:SecurityAgent:1`).
    pub fn security_message(self) -> Self {
        self.interface_id(SECURITY_INTERFACE_ID)
    }

    /// Sets the absolute expiry time.
    pub fn expiry_time_utc(mut self, at: OffsetDateTime) -> Self {
        self.message.system.expiry_time_utc = Some(at);
        self
    }

    /// Sets the creation time.
    pub fn creation_time_utc(mut self, at: OffsetDateTime) -> Self {
        self.message.system.creation_time_utc = Some(at);
        self
    }

    /// Sets the enqueued time (stamped by the hub).
    pub fn enqueued_time(mut self, at: OffsetDateTime) -> Self {
        self.message.system.enqueued_time = Some(at);
        self
    }

    /// Sets the sequence number (stamped by the hub).
    pub fn sequence_number(mut self, number: u64) -> Self {
        self.message.system.sequence_number = Some(number);
        self
    }

    /// Sets the delivery count (stamped by the hub).
    pub fn delivery_count(mut self, count: u32) -> Self {
        self.message.system.delivery_count = Some(count);
        self
    }

    /// Sets the feedback a cloud-to-device sender asks for.
    pub fn ack(mut self, mode: AckMode) -> Self {
        self.message.system.ack = Some(mode);
        self
    }

    /// Keeps a system property this crate does not model (wire name without `$.`).
    pub fn other_system_property(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.message.system.other.push((name.into(), value.into()));
        self
    }

    /// Replaces all system properties at once.
    pub fn system_properties(mut self, system: SystemProperties) -> Self {
        self.message.system = system;
        self
    }

    /// Finishes the message, checking property names and the 256 KiB limit.
    pub fn build(self) -> Result<Message, MessageError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let size = self.message.size();
        if size > MAX_MESSAGE_SIZE {
            return Err(MessageError::TooLarge {
                size,
                limit: MAX_MESSAGE_SIZE,
            });
        }
        Ok(self.message)
    }
}

/// The interface id that marks a security message.
pub const SECURITY_INTERFACE_ID: &str = "urn:azureiot:Security:SecurityAgent:1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_with_system_and_application_properties() {
        let m = Message::builder("hi")
            .message_id("m1")
            .correlation_id("c1")
            .property("a", "1")
            .property("b", "2")
            .property("a", "3")
            .ack(AckMode::Full)
            .security_message()
            .build()
            .unwrap();
        assert_eq!(m.body().as_ref(), b"hi");
        assert_eq!(
            m.properties(),
            &[("a".into(), "3".into()), ("b".into(), "2".into())]
        );
        assert_eq!(m.system_properties().message_id.as_deref(), Some("m1"));
        assert_eq!(m.system_properties().ack, Some(AckMode::Full));
        assert_eq!(
            m.system_properties().interface_id.as_deref(),
            Some(SECURITY_INTERFACE_ID)
        );
    }

    #[test]
    fn size_limit_counts_body_and_properties() {
        let exactly = Message::new(vec![0u8; MAX_MESSAGE_SIZE]).unwrap();
        assert_eq!(exactly.size(), MAX_MESSAGE_SIZE);
        assert_eq!(
            Message::new(vec![0u8; MAX_MESSAGE_SIZE + 1]).unwrap_err(),
            MessageError::TooLarge {
                size: MAX_MESSAGE_SIZE + 1,
                limit: MAX_MESSAGE_SIZE
            }
        );
        let err = Message::builder(vec![0u8; MAX_MESSAGE_SIZE - 3])
            .property("ab", "cd")
            .build()
            .unwrap_err();
        assert_eq!(
            err,
            MessageError::TooLarge {
                size: MAX_MESSAGE_SIZE + 1,
                limit: MAX_MESSAGE_SIZE
            }
        );
        let err = Message::builder(vec![0u8; MAX_MESSAGE_SIZE - 1])
            .message_id("xy")
            .build()
            .unwrap_err();
        assert!(matches!(err, MessageError::TooLarge { .. }));
    }

    #[test]
    fn reserved_and_empty_property_names_are_refused() {
        assert_eq!(
            Message::builder("").property("", "v").build().unwrap_err(),
            MessageError::EmptyPropertyName
        );
        assert_eq!(
            Message::builder("")
                .property("$.mid", "v")
                .build()
                .unwrap_err(),
            MessageError::ReservedPropertyName("$.mid".into())
        );
    }

    #[test]
    fn ack_modes_parse_and_print() {
        for mode in [
            AckMode::None,
            AckMode::Positive,
            AckMode::Negative,
            AckMode::Full,
        ] {
            assert_eq!(AckMode::parse(mode.as_str()), Some(mode));
            assert_eq!(AckMode::parse(&mode.as_str().to_uppercase()), Some(mode));
        }
        assert_eq!(AckMode::parse("sometimes"), None);
    }
}
