//! IoT Hub and DPS over MQTT 3.1.1: topic grammar, property bags, CONNECT usernames.
//!
//! This module holds what is specific to IoT Hub and DPS on top of plain MQTT, shared by the
//! device client (which formats upstream topics and parses downstream ones) and the emulator
//! (the reverse), plus the packet codec both use ([`codec`]) and the device side's session
//! state machine without I/O ([`client`]).

pub mod client;
pub mod codec;
pub mod property_bag;
pub mod topic;
pub mod username;

pub use property_bag::PropertyBag;
pub use topic::{DownstreamTopic, InputsFilterForm, TopicError, TopicFilter, UpstreamTopic};
pub use username::{DpsUsername, HubUsername, UsernameError, is_dps_username};
