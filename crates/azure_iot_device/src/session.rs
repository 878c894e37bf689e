//! The MQTT session of one device or module, without I/O.
//!
//! [`Session`] turns operations into packets (choosing packet ids and twin request ids) and
//! turns the packets the hub sends into [`Inbound`] events that name the operation they
//! answer. The driver in [`crate::client`] owns the socket, the clock and the callers'
//! completion channels; everything about the protocol is decided here, so it is tested
//! without a network.

use std::collections::HashSet;

use azure_iot_core::Message;
use azure_iot_core::method::{MethodRequest, MethodResponse};
use azure_iot_protocol::Identity;
use azure_iot_protocol::mqtt::codec::{
    Connect, ConnectReturnCode, Packet, PubAck, Publish, QoS, Subscribe, SubscribeFilter,
    SubscribeReasonCode, packet_name,
};
use azure_iot_protocol::mqtt::{
    DownstreamTopic, HubUsername, PropertyBag, TopicFilter, UpstreamTopic,
};
use azure_iot_protocol::request_id::RequestIdGenerator;
use bytes::Bytes;

/// The `DeviceClientType` this client announces.
pub(crate) const CLIENT_TYPE: &str = concat!("azure-iot-rs/", env!("CARGO_PKG_VERSION"));

/// Something the hub sent, decoded.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// The hub acknowledged the QoS 1 publish with this packet id.
    PubAck(u16),
    /// The hub answered SUBSCRIBE `pkid`; `granted` is false if it refused any filter.
    SubAck { pkid: u16, granted: bool },
    /// A cloud-to-device message (already acknowledged by [`Session::ack_for`]).
    CloudToDevice(Box<Message>),
    /// The answer to twin request `request_id`.
    TwinResponse {
        request_id: String,
        status: u16,
        version: Option<i64>,
        body: Bytes,
    },
    /// A desired-properties patch.
    DesiredPatch { version: i64, body: Bytes },
    /// A direct method call.
    Method(MethodRequest),
    /// PINGRESP.
    Pong,
}

/// Why an inbound packet was not understood. The driver ends the connection on any of these,
/// as a broker would on a protocol violation.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Violation(pub(crate) String);

/// The state of one device's MQTT session.
#[derive(Debug)]
pub(crate) struct Session {
    identity: Identity,
    host: String,
    model_id: Option<String>,
    client_type: String,
    next_pkid: u16,
    request_ids: RequestIdGenerator,
    subscribed: HashSet<Feature>,
}

/// What a subscription is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Feature {
    CloudToDevice,
    TwinResponses,
    DesiredPatches,
    Methods,
}

impl Session {
    pub(crate) fn new(
        identity: Identity,
        host: impl Into<String>,
        model_id: Option<String>,
        product_info: Option<&str>,
    ) -> Self {
        let client_type = match product_info {
            Some(info) => format!("{CLIENT_TYPE} {info}"),
            None => CLIENT_TYPE.to_owned(),
        };
        Self {
            identity,
            host: host.into(),
            model_id,
            client_type,
            next_pkid: 0,
            request_ids: RequestIdGenerator::new(),
            subscribed: HashSet::new(),
        }
    }

    /// The identity this session is for.
    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    /// CONNECT for this identity. `clean_session` is false so the hub keeps subscriptions
    /// and undelivered C2D messages across reconnects.
    pub(crate) fn connect(&self, password: &str, keep_alive_secs: u16) -> Packet {
        let username = HubUsername::new(
            self.host.clone(),
            self.identity.clone(),
            &self.client_type,
            self.model_id.as_deref(),
        );
        let mut connect = Connect::new(self.identity.client_id());
        connect.keep_alive = keep_alive_secs;
        connect.clean_session = false;
        connect.set_login(username.to_string(), password);
        Packet::Connect(connect)
    }

    /// Whether `code` means the credentials were refused (as opposed to another refusal).
    pub(crate) fn is_unauthorized(code: ConnectReturnCode) -> bool {
        matches!(
            code,
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized
        )
    }

    fn pkid(&mut self) -> u16 {
        // Packet ids are 1..=65535; a wrapped id is only reused after 65 535 later
        // operations, long after the hub answered or the operation timed out.
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        self.next_pkid
    }

    fn publish(&mut self, topic: String, payload: Bytes) -> (u16, Publish) {
        let pkid = self.pkid();
        let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload);
        publish.pkid = pkid;
        (pkid, publish)
    }

    /// A telemetry PUBLISH (QoS 1) for `message`.
    pub(crate) fn telemetry(&mut self, message: &Message) -> (u16, Publish) {
        let topic = UpstreamTopic::Telemetry {
            identity: self.identity.clone(),
            properties: PropertyBag::from_message(message),
        };
        self.publish(topic.to_string(), message.body().clone())
    }

    /// A twin GET; returns the request id the answer will carry.
    pub(crate) fn twin_get(&mut self) -> (String, u16, Publish) {
        let request_id = self.request_ids.next_id();
        let topic = UpstreamTopic::TwinGet {
            request_id: request_id.clone(),
        };
        let (pkid, packet) = self.publish(topic.to_string(), Bytes::new());
        (request_id, pkid, packet)
    }

    /// A reported-properties PATCH with `body` (a JSON object).
    pub(crate) fn patch_reported(&mut self, body: Bytes) -> (String, u16, Publish) {
        let request_id = self.request_ids.next_id();
        let topic = UpstreamTopic::TwinPatchReported {
            request_id: request_id.clone(),
            version: None,
        };
        let (pkid, packet) = self.publish(topic.to_string(), body);
        (request_id, pkid, packet)
    }

    /// The answer to a direct method call.
    pub(crate) fn method_response(&mut self, response: &MethodResponse) -> (u16, Publish) {
        let topic = UpstreamTopic::MethodResponse {
            status: response.status,
            request_id: response.request_id.clone(),
        };
        self.publish(topic.to_string(), response.body())
    }

    /// SUBSCRIBE for `feature`, or `None` if this session already holds it.
    pub(crate) fn subscribe(&mut self, feature: Feature) -> Option<(u16, Packet)> {
        if self.subscribed.contains(&feature) {
            return None;
        }
        let filter = self.filter(feature)?;
        let pkid = self.pkid();
        let mut subscribe =
            Subscribe::new_many([SubscribeFilter::new(filter.to_string(), QoS::AtLeastOnce)]);
        subscribe.pkid = pkid;
        Some((pkid, Packet::Subscribe(subscribe)))
    }

    /// Records that the hub granted `feature`'s subscription.
    pub(crate) fn subscribed(&mut self, feature: Feature) {
        self.subscribed.insert(feature);
    }

    /// Forgets every subscription: after a reconnect they are made again.
    pub(crate) fn clear_subscriptions(&mut self) {
        self.subscribed.clear();
    }

    fn filter(&self, feature: Feature) -> Option<TopicFilter> {
        Some(match feature {
            Feature::CloudToDevice if self.identity.is_module() => return None,
            Feature::CloudToDevice => TopicFilter::CloudToDevice {
                device_id: self.identity.device_id().to_owned(),
            },
            Feature::TwinResponses => TopicFilter::TwinResponses,
            Feature::DesiredPatches => TopicFilter::DesiredPatches,
            Feature::Methods => TopicFilter::MethodRequests,
        })
    }

    /// The PUBACK the hub expects for an inbound QoS 1 PUBLISH.
    pub(crate) fn ack_for(publish: &Publish) -> Option<Packet> {
        (publish.qos == QoS::AtLeastOnce).then(|| Packet::PubAck(PubAck::new(publish.pkid)))
    }

    /// Decodes a packet from the hub. `Ok(None)` for packets that need no action.
    pub(crate) fn decode(&self, packet: Packet) -> Result<Option<Inbound>, Violation> {
        match packet {
            Packet::PubAck(ack) => Ok(Some(Inbound::PubAck(ack.pkid))),
            Packet::SubAck(ack) => Ok(Some(Inbound::SubAck {
                pkid: ack.pkid,
                granted: ack
                    .return_codes
                    .iter()
                    .all(|code| matches!(code, SubscribeReasonCode::Success(_))),
            })),
            Packet::PingResp => Ok(Some(Inbound::Pong)),
            Packet::Publish(publish) => self.decode_publish(publish).map(Some),
            Packet::UnsubAck(_) => Ok(None),
            other => Err(Violation(format!(
                "the hub sent an unexpected {} packet",
                packet_name(&other)
            ))),
        }
    }

    fn decode_publish(&self, publish: Publish) -> Result<Inbound, Violation> {
        let topic = DownstreamTopic::parse(&publish.topic)
            .map_err(|e| Violation(format!("the hub published to an unknown topic: {e}")))?;
        match topic {
            DownstreamTopic::CloudToDevice { properties, .. } => properties
                .to_message(publish.payload)
                .map(|message| Inbound::CloudToDevice(Box::new(message)))
                .map_err(|e| Violation(format!("cloud-to-device message: {e}"))),
            DownstreamTopic::TwinResponse {
                status,
                request_id,
                version,
            } => Ok(Inbound::TwinResponse {
                request_id,
                status,
                version,
                body: publish.payload,
            }),
            DownstreamTopic::DesiredPatch { version } => Ok(Inbound::DesiredPatch {
                version,
                body: publish.payload,
            }),
            DownstreamTopic::MethodRequest {
                method_name,
                request_id,
            } => MethodRequest::from_wire(method_name, request_id, &publish.payload)
                .map(Inbound::Method)
                .map_err(|e| Violation(format!("method payload is not JSON: {e}"))),
            other => Err(Violation(format!(
                "the hub published to a topic a device does not receive: {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session::new(Identity::device("dev 1"), "hub.example", None, None)
    }

    #[test]
    fn connect_names_the_identity_and_keeps_the_session() {
        let Packet::Connect(connect) = session().connect("pw", 60) else {
            panic!("not CONNECT")
        };
        assert_eq!(connect.client_id, "dev 1");
        assert!(!connect.clean_session);
        let login = connect.login.expect("login");
        assert!(
            login
                .username
                .starts_with("hub.example/dev 1/?api-version=2021-04-12")
        );
        assert_eq!(login.password, "pw");
    }

    #[test]
    fn telemetry_topic_carries_properties_and_packet_ids_advance() {
        let mut s = session();
        let message = Message::builder("x")
            .message_id("m1")
            .property("k", "v")
            .build()
            .expect("message");
        let (first, p) = s.telemetry(&message);
        assert_eq!(p.topic, "devices/dev%201/messages/events/%24.mid=m1&k=v");
        assert_eq!(p.qos, QoS::AtLeastOnce);
        let (second, _) = s.telemetry(&message);
        assert_eq!((first, second), (1, 2));
    }

    #[test]
    fn packet_ids_skip_zero_when_they_wrap() {
        let mut s = session();
        s.next_pkid = u16::MAX;
        assert_eq!(s.pkid(), 1);
    }

    #[test]
    fn subscribes_once_per_feature_and_modules_have_no_c2d() {
        let mut s = session();
        assert!(s.subscribe(Feature::Methods).is_some());
        s.subscribed(Feature::Methods);
        assert!(s.subscribe(Feature::Methods).is_none());
        let mut module = Session::new(Identity::module("d", "m"), "h", None, None);
        assert!(module.subscribe(Feature::CloudToDevice).is_none());
    }

    #[test]
    fn decodes_twin_answers_and_method_calls() {
        let s = session();
        let answer = Publish::new(
            "$iothub/twin/res/204/?$rid=7&$version=3",
            QoS::AtMostOnce,
            "",
        );
        match s.decode(Packet::Publish(answer)) {
            Ok(Some(Inbound::TwinResponse {
                request_id,
                status: 204,
                version: Some(3),
                ..
            })) => assert_eq!(request_id, "7"),
            other => panic!("{other:?}"),
        }
        let call = Publish::new(
            "$iothub/methods/POST/reboot/?$rid=1",
            QoS::AtMostOnce,
            "{\"a\":1}",
        );
        match s.decode(Packet::Publish(call)) {
            Ok(Some(Inbound::Method(m))) => assert_eq!(
                (m.name.as_str(), m.payload["a"].as_i64()),
                ("reboot", Some(1))
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_what_a_hub_never_sends() {
        let s = session();
        assert!(s.decode(Packet::PingReq).is_err());
        let wrong = Publish::new("devices/x/messages/events/", QoS::AtMostOnce, "");
        assert!(s.decode(Packet::Publish(wrong)).is_err());
        let bad_json = Publish::new("$iothub/methods/POST/m/?$rid=1", QoS::AtMostOnce, "{");
        assert!(s.decode(Packet::Publish(bad_json)).is_err());
    }
}
