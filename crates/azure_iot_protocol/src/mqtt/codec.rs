//! MQTT 3.1.1 packets on the wire.
//!
//! The packet encoder and decoder are `rumqttc::mqttbytes::v4` (all 14 packet types, both
//! directions). This module is the only place that names that crate: it re-exports the packet
//! types and wraps framing in two functions with the limits IoT Hub applies, so that the
//! codec can be swapped without touching the client or the emulator (see
//! `docs/adr/0005-mqtt-codec.md`).

use bytes::BytesMut;

pub use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, LastWill, Login, Packet, PubAck, Publish, SubAck,
    Subscribe, SubscribeFilter, SubscribeReasonCode, UnsubAck, Unsubscribe,
};
pub use rumqttc::mqttbytes::{Protocol, QoS};

use crate::mqtt::topic::MAX_TOPIC_BYTES;

/// The largest packet IoT Hub traffic needs: a 256 KiB message plus the longest topic (which
/// carries the properties) plus framing. Anything larger ends the connection, as on the hub.
pub const MAX_PACKET_BYTES: usize = 256 * 1024 + MAX_TOPIC_BYTES + 16;

/// Why bytes could not be read as a packet. Any of these ends the connection.
#[derive(Debug, thiserror::Error)]
#[error("malformed MQTT packet: {message}")]
pub struct CodecError {
    message: String,
    protocol_level: Option<u8>,
}

impl CodecError {
    fn new(message: String) -> Self {
        Self {
            message,
            protocol_level: None,
        }
    }

    /// The protocol level of a CONNECT that asked for a version other than MQTT 3.1.1: a
    /// server answers it with CONNACK 0x01 before closing (MQTT-3.1.2-2).
    pub fn unsupported_protocol_level(&self) -> Option<u8> {
        self.protocol_level
    }
}

/// Takes the next complete packet off the front of `buffer`.
///
/// `Ok(None)` means more bytes are needed; the buffer is left as it was.
pub fn read_packet(buffer: &mut BytesMut, max_size: usize) -> Result<Option<Packet>, CodecError> {
    match Packet::read(buffer, max_size) {
        Ok(packet) => Ok(Some(packet)),
        Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
        Err(rumqttc::mqttbytes::Error::InvalidProtocolLevel(level)) => Err(CodecError {
            message: format!("unsupported protocol level {level}"),
            protocol_level: Some(level),
        }),
        Err(e) => Err(CodecError::new(e.to_string())),
    }
}

/// Appends `packet`'s bytes to `buffer`.
///
/// A string field longer than MQTT's 16-bit length prefix can say (a topic, filter, client
/// id, user name or password over 65,535 bytes) is an error, not a truncated length.
pub fn write_packet(packet: &Packet, buffer: &mut BytesMut) -> Result<(), CodecError> {
    let long = |field: &str, len: usize| {
        (len > usize::from(u16::MAX)).then(|| {
            CodecError::new(format!(
                "a {field} of {len} bytes; MQTT strings are at most 65,535 bytes"
            ))
        })
    };
    let too_long = match packet {
        Packet::Publish(p) => long("topic", p.topic.len()),
        Packet::Subscribe(s) => s
            .filters
            .iter()
            .find_map(|f| long("topic filter", f.path.len())),
        Packet::Unsubscribe(u) => u.topics.iter().find_map(|t| long("topic filter", t.len())),
        Packet::Connect(c) => long("client id", c.client_id.len()).or_else(|| {
            c.login.as_ref().and_then(|l| {
                long("user name", l.username.len()).or_else(|| long("password", l.password.len()))
            })
        }),
        _ => None,
    };
    if let Some(error) = too_long {
        return Err(error);
    }
    packet
        .write(buffer, MAX_PACKET_BYTES)
        .map(|_| ())
        .map_err(|e| CodecError::new(e.to_string()))
}

/// The packet type's name as the MQTT specification writes it, for logs and errors.
pub fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// rumqttc writes a string's length as `len as u16`: a 70,000-byte topic would go out
    /// with a wrong length and corrupt the stream. It is refused instead.
    #[test]
    fn strings_longer_than_a_16_bit_length_are_refused() {
        let mut buffer = BytesMut::new();
        let publish = Publish::new("t".repeat(70_000), QoS::AtLeastOnce, b"x".to_vec());
        let error = write_packet(&Packet::Publish(publish), &mut buffer).unwrap_err();
        assert!(error.to_string().contains("70000 bytes"), "{error}");
        assert!(buffer.is_empty(), "nothing written");
        let fits = Publish::new("t".repeat(65_535), QoS::AtMostOnce, b"x".to_vec());
        write_packet(&Packet::Publish(fits), &mut buffer).unwrap();
    }

    #[test]
    fn packets_round_trip_and_partial_input_waits() {
        let mut publish = Publish::new(
            "devices/d/messages/events/",
            QoS::AtLeastOnce,
            b"hi".to_vec(),
        );
        publish.pkid = 7;
        let mut buffer = BytesMut::new();
        write_packet(&Packet::Publish(publish.clone()), &mut buffer).unwrap();
        let full = buffer.clone();
        let mut partial = BytesMut::from(&full[..full.len() - 1]);
        assert!(
            read_packet(&mut partial, MAX_PACKET_BYTES)
                .unwrap()
                .is_none()
        );
        assert_eq!(
            partial.len(),
            full.len() - 1,
            "an incomplete packet is not consumed"
        );
        let packet = read_packet(&mut buffer, MAX_PACKET_BYTES).unwrap().unwrap();
        assert_eq!(packet, Packet::Publish(publish));
        assert!(buffer.is_empty());
    }

    #[test]
    fn oversize_and_garbage_are_errors() {
        let mut big = Publish::new("t", QoS::AtLeastOnce, vec![0u8; 1000]);
        big.pkid = 1;
        let mut buffer = BytesMut::new();
        Packet::Publish(big).write(&mut buffer, usize::MAX).unwrap();
        assert!(read_packet(&mut buffer, 100).is_err());
        let mut garbage = BytesMut::from(&[0xF0u8, 0x00][..]);
        assert!(read_packet(&mut garbage, MAX_PACKET_BYTES).is_err());
    }

    proptest! {
        #[test]
        fn reading_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buffer = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = read_packet(&mut buffer, MAX_PACKET_BYTES) {}
        }
    }
}
