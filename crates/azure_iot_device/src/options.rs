//! [`ClientOptions`]: everything about a connection that is not the identity.

use std::time::Duration;

use azure_iot_core::retry::{RetryPolicy, SharedRetryPolicy};

/// The default time one operation may take, from the call to the hub's answer.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// The default MQTT keep-alive (the official SDKs use 60 s; IoT Hub allows up to 1177 s).
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(60);
/// How long the SAS tokens the client signs live (the official SDKs use one hour).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Connection options. Start from [`ClientOptions::default`] and change what you need.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub(crate) operation_timeout: Duration,
    pub(crate) keep_alive: Duration,
    pub(crate) token_ttl: Duration,
    pub(crate) trusted_ca_pem: Option<String>,
    pub(crate) model_id: Option<String>,
    pub(crate) product_info: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) transport: Transport,
    pub(crate) retry_policy: SharedRetryPolicy,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            keep_alive: DEFAULT_KEEP_ALIVE,
            token_ttl: DEFAULT_TOKEN_TTL,
            trusted_ca_pem: None,
            model_id: None,
            product_info: None,
            port: None,
            transport: Transport::Mqtt,
            retry_policy: SharedRetryPolicy::default(),
        }
    }
}

impl ClientOptions {
    /// The one timeout every operation has: connecting, sending, a twin request, a method
    /// response. An operation that has not finished by then fails with
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout); it never hangs.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// The MQTT keep-alive interval, rounded down to seconds (at most 65 535 s).
    pub fn keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// How long the SAS tokens the client signs from a key live.
    pub fn token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = ttl;
        self
    }

    /// Trust these PEM certificates instead of the operating system's roots (an emulator, a
    /// gateway with a private CA).
    pub fn trusted_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.trusted_ca_pem = Some(pem.into());
        self
    }

    /// The IoT Plug and Play model id the device announces (`model-id` in the user name).
    pub fn model_id(mut self, model_id: impl Into<String>) -> Self {
        self.model_id = Some(model_id.into());
        self
    }

    /// Text appended to the client type the hub records (`DeviceClientType`).
    pub fn product_info(mut self, info: impl Into<String>) -> Self {
        self.product_info = Some(info.into());
        self
    }

    /// How the client reconnects after it lost the connection (default: exponential
    /// backoff with jitter, no limit; refused credentials are never retried). Use
    /// [`NoRetry`](azure_iot_core::retry::NoRetry) to stay disconnected.
    pub fn retry_policy(mut self, policy: impl RetryPolicy + 'static) -> Self {
        self.retry_policy = SharedRetryPolicy::new(policy);
        self
    }

    /// The port to dial instead of the transport's (8883 for MQTT, 443 for WebSockets), for a
    /// gateway or an emulator that listens elsewhere.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The transport (MQTT over TLS by default).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    pub(crate) fn effective_port(&self) -> u16 {
        self.port.unwrap_or(match self.transport {
            Transport::Mqtt => 8883,
            #[cfg(feature = "mqtt_ws")]
            Transport::MqttWebSockets => 443,
        })
    }
}

/// How the client reaches the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Transport {
    /// MQTT 3.1.1 over TLS, port 8883.
    #[default]
    Mqtt,
    /// MQTT 3.1.1 over a WebSocket (`wss://{host}/$iothub/websocket`, subprotocol `mqtt`) on
    /// port 443, for networks that only let HTTPS out.
    #[cfg(feature = "mqtt_ws")]
    MqttWebSockets,
}
