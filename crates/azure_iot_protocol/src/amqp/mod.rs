//! IoT Hub over AMQP 1.0, sans I/O, for both roles: link addresses, CBS put-token, and the
//! message mapping. Built on `fe2o3-amqp-types` only (the types, not the connection engine),
//! so the service client, the emulator and (later) the device client share one grammar.
//!
//! ```text
//!   client (service / device)                              hub (emulator)
//!   Address::to_string / absolute ─── attach ──────────▶  Address::parse
//!   PutToken::to_message        ─── $cbs transfer ────▶  PutToken::parse, CbsAudience::parse
//!   PutTokenAnswer::parse       ◀── $cbs transfer ─────  PutTokenAnswer::to(..).to_message
//!   message::to_amqp            ─── transfer ─────────▶  message::from_amqp
//!   message::from_amqp          ◀── transfer ──────────  message::to_amqp
//! ```
//!
//! * [`address`]: every address the hub serves, absolute or bare, any case.
//! * [`cbs`]: the put-token request and answer, the audience forms.
//! * [`batch`]: several messages in one transfer (`message-format` `0x80013700`).
//! * [`device`]: twin and method messages (requests, answers, desired patches).
//! * [`message`]: [`azure_iot_core::Message`] ↔ AMQP properties, application properties and
//!   annotations.
//! * [`value`]: a property or annotation value in its AMQP type ([`PropertyValue`]).
//!
//! As everywhere in this crate, formatting is exact and parsing liberal and total: the
//! golden tests read every frame the official SDKs sent (`testdata/vectors/amqp-*.jsonl`),
//! and property tests feed arbitrary input to every parser.

pub mod address;
pub mod batch;
pub mod cbs;
pub mod device;
pub mod message;
pub mod value;

#[cfg(test)]
mod vectors;

pub use address::{Address, AddressError};
pub use batch::{BATCH_FORMAT, BatchError, decode_batch, encode_batch};
pub use cbs::{CbsAudience, CbsError, PutToken, PutTokenAnswer};
pub use message::{MappingError, from_amqp, message_id_text, to_amqp};
pub use value::PropertyValue;

/// An AMQP message as both roles send and receive it: any body.
pub type AmqpMessage = fe2o3_amqp_types::messaging::Message<
    fe2o3_amqp_types::messaging::Body<fe2o3_amqp_types::primitives::Value>,
>;
