//! The IoT Hub and Device Provisioning Service wire grammar, sans I/O.
//!
//! # Design
//!
//! Everything here turns values into wire text and wire text into values, or runs a protocol
//! state machine on inputs it is given, and nothing else: no sockets, no clock, no runtime. The device client formats what it sends and parses what it
//! receives with exactly the code the emulator uses for the opposite direction (the shape
//! mini-redis and h2 use for a protocol core shared by both roles), and golden data captured
//! from the official SDKs keeps both honest.
//!
//! ```text
//!            device / module client                      emulator
//!   UpstreamTopic::to_string ──── PUBLISH ────▶ UpstreamTopic::parse
//!   DownstreamTopic::parse   ◀─── PUBLISH ───── DownstreamTopic::to_string
//!   TopicFilter::to_string   ──── SUBSCRIBE ──▶ TopicFilter::parse
//!   HubUsername::to_string   ──── CONNECT ────▶ HubUsername::parse
//!   PropertyBag::from_message / to_message       (inside topics, both ways)
//!   http::message_headers / message_from_headers (HTTPS, both ways)
//!   amqp::Address, amqp::PutToken, amqp::to_amqp / from_amqp (AMQP, both ways)
//! ```
//!
//! * [`configuration`]: configurations (automatic device management): the REST models and the
//!   hub's rules on ids and content, checked by the service client before sending and
//!   enforced by the emulator.
//! * [`export_import`]: import/export devices jobs (`JobProperties`) and their blob names.
//! * [`dps`]: the Device Provisioning Service's JSON bodies (registration, enrollments).
//! * [`jobs`]: IoT Hub jobs v2 bodies (job requests and responses, per-device job rows).
//! * [`amqp`]: IoT Hub AMQP link addresses, CBS put-token and the AMQP message mapping.
//! * [`mqtt::topic`]: every IoT Hub and DPS topic and subscription filter, both directions.
//! * [`mqtt::property_bag`]: message properties in topics, with the per-SDK tolerance rules.
//! * [`mqtt::username`]: CONNECT usernames for IoT Hub and DPS.
//! * [`mqtt::codec`]: the MQTT 3.1.1 packet codec (rumqttc's `mqttbytes`, framed with IoT
//!   Hub's limit).
//! * [`mqtt::client`]: the device side's MQTT session as a state machine: time comes in as a
//!   `now` parameter with each packet and operation, packets, deadlines and events go out (the
//!   quinn-proto shape), so keep-alive, resend and packet-id rules are tested without a clock
//!   or a socket.
//! * [`identity`]: device / module identities and MQTT client ids.
//! * [`request_id`]: `$rid` generation.
//! * [`http`]: HTTP header names for message properties.
//! * [`tpm`]: TPM 2.0 structures of DPS's TPM attestation (public areas, object Names, the
//!   activation blob, the default registration id from an EK), marshalled both ways.
//! * [`tls`]: the roots a client trusts and its rustls configuration (ring provider); the one
//!   place that touches the system, to read the operating system's root store.
//!
//! Formatting is exact (what the official SDKs' parsers require); parsing is liberal (every
//! variant the official SDKs send) and total: any input gives a value or a typed error.

pub mod amqp;
pub mod configuration;
pub mod dps;
pub mod export_import;
pub mod http;
pub mod identity;
pub mod jobs;
pub mod mqtt;
pub mod request_id;
pub mod tls;
pub mod tpm;

pub use identity::{Identity, IdentityError};
