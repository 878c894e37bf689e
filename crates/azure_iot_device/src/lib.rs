//! Azure IoT Hub device and module client.
//!
//! ```text
//!  DeviceClient (Clone)            supervisor task (transport-neutral, one per client)
//!  ─────────────────────           ────────────────────────────────────────────────────
//!  send_event ─┐ permit (1 of      reconnect by retry policy · SAS renewal at 85 %
//!  get_twin    ├ max_pending) ───▶ fail waiters on a final error · cancel operations
//!  respond…    ┘ + Command          whose caller left · desired resync after reconnect
//!  Incoming<Message | Received-    bounded inbound streams (full ⇒ stop reading)
//!   Message | DesiredPatch |  ◀──── │ Engine trait: connect / submit / cancel / settle /
//!   MethodRequest> (bounded)        │ next(reading)
//!  watch<ConnectionState>  ◀─────── ▼
//!                                  MqttEngine: I/O pump (socket ⇄ packets, sleep until
//!                                  poll_timeout) over the sans-IO session
//!                                  azure_iot_protocol::mqtt::client (packet ids, in-flight
//!                                  bound, keep-alive, DUP resend, resubscribe, in-order
//!                                  PUBACKs)
//!                                  AmqpEngine: a seat on a pooled AMQP connection (CBS
//!                                  put-token per device) and a unit task owning the
//!                                  device's session and links
//!                                  HttpsEngine: one request per operation, C2D by polling
//! ```
//!
//! The protocol lives in the sans-IO session of `azure_iot_protocol`, tested on a simulated
//! clock; the MQTT engine only moves bytes and time. What every transport needs alike
//! (reconnect, renewal, flow control, resync, inbound buffering) lives once in the
//! supervisor, over an engine trait: the AMQP engine shares one connection among many
//! clients, and the HTTPS engine is request/response (see `engine`).
//!
//! * Credentials: a connection string ([`DeviceClient::from_connection_string`], with a key or
//!   a ready-made token), a symmetric key ([`DeviceClient::from_symmetric_key`]), tokens from
//!   the application ([`DeviceClient::from_token_provider`], asked before every connection),
//!   or an X.509 certificate ([`DeviceClient::from_x509`]).
//! * Every operation finishes on the hub's answer (`send_event` on the PUBACK or AMQP
//!   disposition,
//!   `update_reported_properties` on the twin response) and is bounded by one operation
//!   timeout ([`ClientOptions::operation_timeout`]): nothing waits forever.
//! * The connection is opened with `clean_session = false`, as the official SDKs do, so the
//!   hub keeps undelivered cloud-to-device messages for the device.
//! * Inbound messages arrive as bounded [`Incoming`] streams
//!   ([`ClientOptions::inbound_capacity`]); subscriptions are made when a stream is first asked
//!   for. A full stream stops the client reading from the hub (TCP back-pressure) while
//!   keep-alive goes on.
//! * Cloud-to-device messages are completed as they enter their stream, or settled by the
//!   application ([`ReceivedMessage`]: complete, abandon, reject; over MQTT only completion
//!   exists, the others fail with [`ErrorKind::Unsupported`]; over AMQP all three are the
//!   dispositions accepted, released and rejected).
//! * At most [`ClientOptions::max_pending_operations`] operations are held at once, connected
//!   or not; a call beyond that waits within its timeout. An operation whose caller timed out
//!   or dropped its future is never sent afterwards.
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
//!   A [`TokenProvider`] is asked before every connection and, unless it says it is not
//!   [`renewable`](TokenProvider::renewable) (its tokens change on the application's
//!   schedule), at 85 % of each token's life.
//!
//! * A gateway (IoT Edge, a transparent gateway) is dialled instead of the hub with
//!   [`ClientOptions::gateway_host_name`] or a connection string's `GatewayHostName`; the
//!   identity and the tokens still name the hub.
//!
//! * Transports ([`ClientOptions::transport`]): MQTT over TLS (port 8883, the default), MQTT
//!   over WebSockets (port 443, feature `mqtt_ws`), AMQP 1.0 over TLS (port 5671, feature
//!   `amqp`), AMQP over WebSockets (port 443, feature `amqp_ws`) and IoT Hub's device REST
//!   API (port 443, feature `https`; all four features are on by default); any of them
//!   through an HTTP `CONNECT` proxy ([`ClientOptions::proxy`], Basic authentication; TLS to
//!   the hub runs inside the tunnel).
//!
//! * Choosing a transport: MQTT is the lightest for one device, and the only one the hub
//!   answers over a single round trip per operation. AMQP is for what MQTT cannot do:
//!   abandoning and rejecting cloud-to-device messages, batches
//!   ([`DeviceClient::send_event_batch`]), renewing the token without reconnecting, and many
//!   devices on one connection ([`AmqpPool`], up to 999 per connection as IoT Hub allows).
//!   The WebSocket variants are for networks that only let port 443 out. HTTPS holds no
//!   connection: telemetry and batches as single requests, cloud-to-device messages by
//!   polling ([`ClientOptions::https_poll_interval`]), no twins or methods — for devices that
//!   wake, send and sleep. Many HTTPS devices share one connection pool when they are given
//!   the same HTTP client ([`ClientOptions::http_client`]); each request carries its device's
//!   token.
//!
//! * File upload ([`DeviceClient::upload_file`], or [`DeviceClient::get_storage_info_for_blob`]
//!   and [`DeviceClient::notify_blob_upload_status`] around the application's own upload) goes
//!   over HTTPS whatever the transport, as on IoT Hub.
//!
//! * Over AMQP no SASL layer is used (as in the Node and C# SDKs): each device's SAS token is
//!   put on the connection's `$cbs` node, audience the token's `sr`, and renewed there at
//!   85 % of its life; an X.509 device is authenticated by its TLS certificate and gets a
//!   connection of its own. Each device has its own session with the links it needs
//!   (telemetry from the start; cloud-to-device, twin and methods when first asked for, and
//!   again after a reconnect).
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

#[cfg(feature = "amqp")]
mod amqp;
mod auth;
mod client;
mod engine;
mod error;
#[cfg(feature = "https")]
mod files;
mod module;
mod options;
mod supervisor;
mod transport;

/// How the client reaches the hub, for sibling clients that must dial the same way (the
/// provisioning device client): TLS on the ring provider with the given roots and client
/// certificate, through an HTTP proxy, inside a WebSocket at `/$iothub/websocket` for the
/// WebSocket transports; and an HTTPS client on the same settings.
pub mod net {
    #[cfg(feature = "https")]
    pub use crate::transport::http_client;
    pub use crate::transport::{Connection, Dial, Io, Stream, tls_config};
}

#[cfg(feature = "amqp")]
pub use amqp::{AmqpPool, MAX_DEVICES_PER_CONNECTION};
pub use auth::{TokenProvider, TokenProviderError, X509Certificate};
pub use azure_iot_core::Message;
pub use azure_iot_core::method::{MethodRequest, MethodResponse};
pub use client::{
    ConnectionState, DesiredPatch, DeviceClient, DeviceTwin, DisconnectReason, Incoming,
    ReceivedMessage,
};
pub use error::{Error, ErrorKind, Result};
#[cfg(feature = "https")]
pub use files::BlobUploadInfo;
pub use module::ModuleClient;
pub use options::{
    ClientOptions, DEFAULT_HTTPS_POLL_INTERVAL, DEFAULT_INBOUND_CAPACITY, DEFAULT_KEEP_ALIVE,
    DEFAULT_MAX_PENDING_OPERATIONS, DEFAULT_OPERATION_TIMEOUT, DEFAULT_TOKEN_TTL, Proxy, Transport,
};
