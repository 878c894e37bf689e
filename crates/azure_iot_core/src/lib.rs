//! Core types of the Azure IoT toolkit: everything about IoT Hub and DPS that is data, not I/O.
//!
//! # Design
//!
//! This crate has no network code, no async runtime and no global state. It is shared by the
//! device, service and provisioning clients and by the emulator, so that the client that
//! writes a connection string, token or twin patch and the emulator that reads it agree by
//! construction — and golden data captured from the official SDKs (`testdata/vectors/`) checks
//! that both agree with the real world.
//!
//! ```text
//!                 ┌──────────────────── azure_iot_core ────────────────────┐
//!  text from the  │ connection_string ──▶ sas (keys, tokens: sign/verify)  │
//!  user / portal ─▶ message (body, app + system properties, 256 KiB)      │
//!                 │ twin (twins, patches)   method (direct methods)        │
//!                 │ retry (policies, error classes)   datetime   encoding  │
//!                 └────────────────────────────────────────────────────────┘
//!                      ▲                ▲                    ▲
//!             azure_iot_protocol   clients (device, service,  emulator
//!             (wire grammar)       provisioning)
//! ```
//!
//! * [`connection_string`]: parse and format device, module and policy connection strings;
//!   secrets are redacted from `Display` and `Debug`.
//! * [`sas`]: shared access keys and SAS tokens: generate (the Python SDK's exact bytes) and
//!   parse + verify every official SDK's variant, in constant time.
//! * [`message`]: the message model with every system property IoT Hub knows; the 256 KiB
//!   limit is checked when a message is built.
//! * [`twin`], [`method`]: serde models for twins, twin patches and direct methods.
//! * [`retry`]: retry policies (none, exponential backoff with jitter, fixed, custom) and the
//!   transient/throttled/permanent classification they act on.
//! * [`datetime`], [`encoding`]: the timestamp and percent-encoding rules every format above
//!   shares.
//!
//! Parsers here are total: any input gives a value or a typed error that says what is wrong,
//! never a panic. Property tests check format → parse round trips; fuzz targets in `fuzz/`
//! feed them arbitrary bytes.

pub mod connection_string;
pub mod datetime;
pub mod encoding;
pub mod message;
pub mod method;
pub mod retry;
pub mod sas;
pub mod twin;

pub use connection_string::{
    ConnectionString, ConnectionStringError, DeviceConnectionString, DeviceCredential,
    EventHubConnectionString, ServiceConnectionString,
};
pub use message::{
    AckMode, MAX_MESSAGE_SIZE, Message, MessageBuilder, MessageError, SystemProperties,
};
pub use retry::{ErrorClass, ExponentialBackoff, NoRetry, RetryPolicy};
pub use sas::{ResourceUri, SasError, SasToken, SharedAccessKey};
