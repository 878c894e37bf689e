//! The cloud-to-device message a service sends, and its feedback mode: the public model,
//! checked before anything is sent and turned into the hub's AMQP form by the shared mapping
//! in [`azure_iot_protocol::amqp::message`].

use std::time::{Duration, SystemTime};

use azure_iot_core::message::{AckMode, Message};
use bytes::Bytes;

use super::AmqpMessage;
use crate::error::{Error, Result};

/// Which delivery outcomes of a cloud-to-device message produce a feedback record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FeedbackMode {
    /// No feedback (the default).
    #[default]
    None,
    /// When the device completes the message.
    Positive,
    /// When the message expires, exceeds its delivery count or is rejected or purged.
    Negative,
    /// Both.
    Full,
}

impl FeedbackMode {
    fn ack(self) -> AckMode {
        match self {
            FeedbackMode::None => AckMode::None,
            FeedbackMode::Positive => AckMode::Positive,
            FeedbackMode::Negative => AckMode::Negative,
            FeedbackMode::Full => AckMode::Full,
        }
    }
}

/// The largest cloud-to-device message body IoT Hub accepts.
pub const MAX_C2D_BODY: usize = 64 * 1024;

/// A cloud-to-device message.
///
/// ```
/// use std::time::Duration;
/// use azure_iot_service::{CloudToDeviceMessage, FeedbackMode};
///
/// let message = CloudToDeviceMessage::new("reboot")
///     .message_id("cmd-42")
///     .feedback(FeedbackMode::Full)
///     .time_to_live(Duration::from_secs(600))
///     .property("priority", "high");
/// ```
#[derive(Debug, Clone, Default)]
pub struct CloudToDeviceMessage {
    body: Bytes,
    pub(super) message_id: Option<String>,
    correlation_id: Option<String>,
    user_id: Option<String>,
    content_type: Option<String>,
    content_encoding: Option<String>,
    expiry: Option<SystemTime>,
    feedback: FeedbackMode,
    properties: Vec<(String, String)>,
}

impl CloudToDeviceMessage {
    /// A message with `body`.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Self {
            body: body.into(),
            ..Self::default()
        }
    }

    /// The message id (a UUID is generated when none is set; feedback names it).
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    /// The correlation id.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// The user id.
    pub fn user_id(mut self, id: impl Into<String>) -> Self {
        self.user_id = Some(id.into());
        self
    }

    /// The body's content type (`application/json`).
    pub fn content_type(mut self, value: impl Into<String>) -> Self {
        self.content_type = Some(value.into());
        self
    }

    /// The body's content encoding (`utf-8`).
    pub fn content_encoding(mut self, value: impl Into<String>) -> Self {
        self.content_encoding = Some(value.into());
        self
    }

    /// When the message expires if the device has not completed it (the hub's default TTL
    /// applies otherwise).
    pub fn expiry_time(mut self, at: SystemTime) -> Self {
        self.expiry = Some(at);
        self
    }

    /// Expires `ttl` from now.
    pub fn time_to_live(self, ttl: Duration) -> Self {
        self.expiry_time(SystemTime::now() + ttl)
    }

    /// Which outcomes produce feedback.
    pub fn feedback(mut self, mode: FeedbackMode) -> Self {
        self.feedback = mode;
        self
    }

    /// Adds an application property, delivered to the device with the message.
    pub fn property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((name.into(), value.into()));
        self
    }

    /// Checks the rules IoT Hub enforces, before anything is sent.
    pub(super) fn check(&self) -> Result<()> {
        if self.body.len() > MAX_C2D_BODY {
            return Err(Error::invalid(format!(
                "a cloud-to-device message body is at most {MAX_C2D_BODY} bytes, this one has {}",
                self.body.len()
            )));
        }
        if let Some((name, _)) = self
            .properties
            .iter()
            .find(|(n, _)| n.is_empty() || n.eq_ignore_ascii_case("iothub-ack") || !n.is_ascii())
        {
            return Err(Error::invalid(format!(
                "the property name {name:?} is not allowed (empty, reserved or not ASCII)"
            )));
        }
        Ok(())
    }

    /// The AMQP message for the hub: `to` names the device, `message_id` is the id to use;
    /// the mapping is the protocol crate's, the one the emulator reads with.
    pub(super) fn to_amqp(&self, to: String, message_id: String) -> Result<AmqpMessage> {
        let mut builder = Message::builder(self.body.clone())
            .to(to)
            .message_id(message_id)
            .ack(self.feedback.ack());
        if let Some(id) = &self.correlation_id {
            builder = builder.correlation_id(id.clone());
        }
        if let Some(id) = &self.user_id {
            builder = builder.user_id(id.clone());
        }
        if let Some(value) = &self.content_type {
            builder = builder.content_type(value.clone());
        }
        if let Some(value) = &self.content_encoding {
            builder = builder.content_encoding(value.clone());
        }
        if let Some(at) = self.expiry {
            builder = builder.expiry_time_utc(at.into());
        }
        for (name, value) in &self.properties {
            builder = builder.property(name.clone(), value.clone());
        }
        let message = builder
            .build()
            .map_err(|e| Error::with_source(crate::ErrorKind::InvalidArgument, e.to_string(), e))?;
        Ok(azure_iot_protocol::amqp::to_amqp(&message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use fe2o3_amqp_types::messaging::MessageId;
    use fe2o3_amqp_types::primitives::SimpleValue;

    #[test]
    fn messages_are_checked_and_carry_their_properties() {
        let too_big = CloudToDeviceMessage::new(vec![0u8; MAX_C2D_BODY + 1]);
        assert_eq!(
            too_big.check().unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        let reserved = CloudToDeviceMessage::new("x").property("iothub-ack", "full");
        assert!(reserved.check().is_err());
        let system = CloudToDeviceMessage::new("x").property("$.mid", "m");
        assert_eq!(
            system
                .to_amqp("/devices/d/messages/devicebound".into(), "m".into())
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidArgument
        );
        let amqp = CloudToDeviceMessage::new("x")
            .feedback(FeedbackMode::Full)
            .correlation_id("c")
            .property("k", "v")
            .to_amqp("/devices/d/messages/devicebound".into(), "m".into())
            .unwrap();
        let app = amqp.application_properties.unwrap();
        assert_eq!(
            app.get("iothub-ack"),
            Some(&SimpleValue::String("full".into()))
        );
        assert_eq!(app.get("k"), Some(&SimpleValue::String("v".into())));
        let props = amqp.properties.unwrap();
        assert_eq!(props.message_id, Some(MessageId::String("m".into())));
        assert_eq!(props.correlation_id, Some(MessageId::String("c".into())));
        assert_eq!(props.to.as_deref(), Some("/devices/d/messages/devicebound"));
    }
}
