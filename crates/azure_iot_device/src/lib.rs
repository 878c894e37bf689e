//! Azure IoT Hub device and module client.
//!
//! ```text
//!  DeviceClient (Clone)             driver task (one per connection)
//!  ─────────────────────            ─────────────────────────────────────────────
//!  send_event ─┐                    ┌─ Session (sans-IO): packets ⇄ operations,
//!  get_twin    ├─ Command channel ─▶│   packet ids, twin request ids, subscriptions
//!  respond…    ┘   (bounded)        ├─ socket: TLS 1.2/1.3 (rustls, ring) to :8883
//!  Incoming<Message | DesiredPatch  ├─ keep-alive: PINGREQ after keep-alive idle,
//!   | MethodRequest>  ◀─────────────┤   disconnect if no PINGRESP in half of it
//!  watch<ConnectionState> ◀─────────┘
//! ```
//!
//! * Credentials: a connection string ([`DeviceClient::from_connection_string`], with a key or
//!   a ready-made token), a symmetric key ([`DeviceClient::from_symmetric_key`]), tokens from
//!   the application ([`DeviceClient::from_token_provider`], asked before every connection),
//!   or an X.509 certificate ([`DeviceClient::from_x509`]).
//! * Every operation finishes on the hub's answer (`send_event` on the PUBACK,
//!   `update_reported_properties` on the twin response) and is bounded by one operation
//!   timeout ([`ClientOptions::operation_timeout`]): nothing waits forever.
//! * The connection is opened with `clean_session = false`, as the official SDKs do, so the
//!   hub keeps undelivered cloud-to-device messages for the device.
//! * Inbound messages arrive as [`Incoming`] streams; subscriptions are made when a stream is
//!   first asked for.
//! * Keys never leave the private `Credential` type except as signed tokens; `Debug` output and
//!   errors never contain them.
//!
//! * A lost connection is re-established by the retry policy
//!   ([`ClientOptions::retry_policy`]): every PUBLISH the hub had not acknowledged is sent
//!   again (DUP set), subscriptions are renewed, and the twin is read again so that a
//!   desired-properties change made meanwhile reaches the desired-patch stream (as one patch
//!   holding the whole desired document, once). Refused credentials are final.
//!
//! * A client holding a key renews its SAS token at 85 % of the token's life: MQTT 3.1.1 can
//!   only change credentials by reconnecting, so it reconnects without reporting a
//!   disconnection and resends in-flight PUBLISHes; no operation fails. A client given a
//!   ready-made token ends with [`DisconnectReason::ExpiredToken`] once the token expires.
//!
//! * Transports: MQTT over TLS (port 8883) and, with the default `mqtt_ws` feature, MQTT over
//!   WebSockets (port 443) via [`ClientOptions::transport`]; either through an HTTP `CONNECT`
//!   proxy ([`ClientOptions::proxy`], Basic authentication; TLS to the hub runs inside the
//!   tunnel).
//!
//! Not yet implemented (each fails explicitly rather than pretending): AMQP and HTTPS
//! transports.
//!
//! ```no_run
//! # async fn run() -> Result<(), azure_iot_device::Error> {
//! use azure_iot_device::{ClientOptions, DeviceClient, Message};
//! let client = DeviceClient::from_connection_string(
//!     "HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=…",
//!     ClientOptions::default(),
//! )
//! .await?;
//! client.send_event(Message::new("{\"temperature\":21.5}").expect("small message")).await?;
//! client.close().await;
//! # Ok(()) }
//! ```

mod auth;
mod client;
mod driver;
mod error;
mod module;
mod options;
mod session;
mod transport;

pub use auth::{TokenProvider, TokenProviderError, X509Certificate};
pub use azure_iot_core::Message;
pub use azure_iot_core::method::{MethodRequest, MethodResponse};
pub use client::{
    ConnectionState, DesiredPatch, DeviceClient, DeviceTwin, DisconnectReason, Incoming,
};
pub use error::{Error, ErrorKind, Result};
pub use module::ModuleClient;
pub use options::{
    ClientOptions, DEFAULT_KEEP_ALIVE, DEFAULT_MAX_PENDING_OPERATIONS, DEFAULT_OPERATION_TIMEOUT,
    DEFAULT_TOKEN_TTL, Proxy, Transport,
};
