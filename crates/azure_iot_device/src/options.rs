//! [`ClientOptions`]: everything about a connection that is not the identity.

use std::time::Duration;

use azure_iot_core::retry::{RetryPolicy, SharedRetryPolicy};

/// The default time one operation may take, from the call to the hub's answer.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// The default MQTT keep-alive (the official SDKs use 60 s; IoT Hub allows up to 1177 s).
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(60);
/// How long the SAS tokens the client signs live (the official SDKs use one hour).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// How often a client over HTTPS polls for cloud-to-device messages by default.
pub const DEFAULT_HTTPS_POLL_INTERVAL: Duration = Duration::from_secs(10);
/// How many operations may wait for the connection at once by default.
pub const DEFAULT_MAX_PENDING_OPERATIONS: usize = 256;
/// How many inbound messages each stream holds for the application by default.
pub const DEFAULT_INBOUND_CAPACITY: usize = 64;

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
    pub(crate) https_port: Option<u16>,
    pub(crate) https_poll_interval: Duration,
    pub(crate) transport: Transport,
    pub(crate) retry_policy: SharedRetryPolicy,
    pub(crate) proxy: Option<Proxy>,
    pub(crate) gateway_host_name: Option<String>,
    pub(crate) max_pending_operations: usize,
    pub(crate) inbound_capacity: usize,
    #[cfg(feature = "amqp")]
    pub(crate) amqp_pool: Option<crate::amqp::AmqpPool>,
    #[cfg(feature = "https")]
    pub(crate) http_client: Option<reqwest::Client>,
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
            https_port: None,
            https_poll_interval: DEFAULT_HTTPS_POLL_INTERVAL,
            transport: Transport::Mqtt,
            retry_policy: SharedRetryPolicy::default(),
            proxy: None,
            gateway_host_name: None,
            max_pending_operations: DEFAULT_MAX_PENDING_OPERATIONS,
            inbound_capacity: DEFAULT_INBOUND_CAPACITY,
            #[cfg(feature = "amqp")]
            amqp_pool: None,
            #[cfg(feature = "https")]
            http_client: None,
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

    /// The lifetime set by [`token_ttl`](Self::token_ttl) (one hour by default), for token
    /// providers that sign with a key the client does not hold, such as a TPM.
    pub fn token_lifetime(&self) -> Duration {
        self.token_ttl
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

    /// The port to dial instead of the transport's (8883 for MQTT, 5671 for AMQP, 443 for
    /// WebSockets), for a
    /// gateway or an emulator that listens elsewhere.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The hub's HTTPS port instead of 443, for file upload (an emulator that listens
    /// elsewhere). Clients over WebSockets use [`port`](Self::port) when this is not set.
    pub fn https_port(mut self, port: u16) -> Self {
        self.https_port = Some(port);
        self
    }

    /// Over [`Transport::Https`], how often to ask the hub for cloud-to-device messages once
    /// the application receives them (after a message, the next poll is at once). Default
    /// [`DEFAULT_HTTPS_POLL_INTERVAL`]; at least 1 s.
    pub fn https_poll_interval(mut self, interval: Duration) -> Self {
        self.https_poll_interval = interval.max(Duration::from_secs(1));
        self
    }

    /// The transport (MQTT over TLS by default).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// How many operations (sends, twin requests, method answers, subscriptions) the client
    /// holds at once, connected or reconnecting: from the call until the hub's answer
    /// (256 by default, at least 1). A call beyond that waits for room, still within its
    /// operation timeout, so memory stays bounded while the hub is unreachable. An operation
    /// whose caller timed out or dropped its future is never sent afterwards.
    pub fn max_pending_operations(mut self, operations: usize) -> Self {
        self.max_pending_operations = operations;
        self
    }

    /// How many inbound messages each stream (cloud-to-device messages, desired patches,
    /// method calls) holds for the application (64 by default, at least 1). When a stream is
    /// full the client stops reading from the hub until the application takes from it (TCP
    /// back-pressure: the hub holds what it could not send); keep-alive goes on meanwhile, so
    /// a slow application does not lose the connection.
    pub fn inbound_capacity(mut self, messages: usize) -> Self {
        self.inbound_capacity = messages;
        self
    }

    /// Dial `host` (an IoT Edge gateway, a transparent gateway) instead of the hub's host
    /// name; the identity and the SAS tokens still name the hub. A connection string's
    /// `GatewayHostName` sets the same thing; this option wins over it.
    pub fn gateway_host_name(mut self, host: impl Into<String>) -> Self {
        self.gateway_host_name = Some(host.into());
        self
    }

    /// Reach the hub through an HTTP proxy (`CONNECT` tunnel). Usually paired with
    /// [`Transport::MqttWebSockets`], since proxies tend to allow only port 443; TLS to the hub
    /// runs inside the tunnel, so the proxy sees neither messages nor credentials.
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// Share AMQP connections with the other clients given the same `pool` (multiplexing):
    /// each client has its own session, token and links on a connection of the pool, and
    /// the pool opens another connection when one holds its
    /// [maximum](crate::AmqpPool::new) of devices. Sets the transport to
    /// [`Transport::Amqp`] unless [`Transport::AmqpWebSockets`] was chosen. Clients with an
    /// X.509 certificate always get a connection of their own (the certificate authenticates
    /// the TLS connection, so it cannot carry other devices).
    #[cfg(feature = "amqp")]
    pub fn amqp_pool(mut self, pool: crate::amqp::AmqpPool) -> Self {
        if !self.transport.is_amqp() {
            self.transport = Transport::Amqp;
        }
        self.amqp_pool = Some(pool);
        self
    }

    /// Share one HTTP client, and so its connection pool, with the other clients given the
    /// same one (multiplexing over HTTPS): the HTTPS transport's requests and file upload's
    /// calls to the hub and the blob service go through `client` instead of a client of
    /// this device's own. Requests from many devices then reuse a few keep-alive connections
    /// (HTTP/1.1) or one (HTTP/2, when the server offers it), each request still carrying its
    /// own device's SAS token. `client` brings its own TLS settings, proxy and timeouts:
    /// build it with [`net::http_client`](crate::net::http_client) or trust the hub's CA
    /// yourself; [`trusted_ca_pem`](Self::trusted_ca_pem) and [`proxy`](Self::proxy) then
    /// apply to the other transports only. Clients with an X.509 certificate ignore it (the
    /// certificate belongs to the TLS connection, which cannot carry other devices).
    #[cfg(feature = "https")]
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http_client = Some(client);
        self
    }

    /// The AMQP pool the client joins, if any (`None` without the `amqp` feature).
    #[cfg(feature = "amqp")]
    pub(crate) fn amqp_pool_ref(&self) -> Option<&crate::amqp::AmqpPool> {
        self.amqp_pool.as_ref()
    }

    /// The AMQP pool the client joins, if any (`None` without the `amqp` feature).
    #[cfg(not(feature = "amqp"))]
    pub(crate) fn amqp_pool_ref(&self) -> Option<&NoPool> {
        None
    }

    /// The hub's HTTPS port: [`https_port`](Self::https_port), else the WebSocket
    /// transports' port, else 443.
    pub(crate) fn effective_https_port(&self) -> u16 {
        match self.https_port {
            Some(port) => port,
            None if self.transport.websocket_subprotocol().is_some() => self.effective_port(),
            #[cfg(feature = "https")]
            None if self.transport == Transport::Https => self.effective_port(),
            None => 443,
        }
    }

    pub(crate) fn effective_port(&self) -> u16 {
        self.port.unwrap_or(match self.transport {
            Transport::Mqtt => 8883,
            #[cfg(feature = "mqtt_ws")]
            Transport::MqttWebSockets => 443,
            #[cfg(feature = "amqp")]
            Transport::Amqp => 5671,
            #[cfg(feature = "amqp_ws")]
            Transport::AmqpWebSockets => 443,
            #[cfg(feature = "https")]
            Transport::Https => 443,
        })
    }
}

/// Stands for `AmqpPool` when the `amqp` feature is off.
#[cfg(not(feature = "amqp"))]
pub(crate) enum NoPool {}

#[cfg(not(feature = "amqp"))]
impl NoPool {
    pub(crate) fn tls_config(
        &self,
        _trusted: Option<&str>,
    ) -> crate::Result<std::sync::Arc<rustls::ClientConfig>> {
        match *self {}
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
    /// AMQP 1.0 over TLS, port 5671: cloud-to-device messages can also be abandoned and
    /// rejected, events sent in batches, the token renewed without reconnecting, and many
    /// devices share a connection ([`ClientOptions::amqp_pool`]).
    #[cfg(feature = "amqp")]
    Amqp,
    /// AMQP 1.0 over a WebSocket (`wss://{host}/$iothub/websocket`, subprotocol
    /// `AMQPWSB10`) on port 443.
    #[cfg(feature = "amqp_ws")]
    AmqpWebSockets,
    /// IoT Hub's device REST API on port 443: telemetry (single and batched) and
    /// cloud-to-device messages by polling (complete, abandon, reject), for networks that
    /// allow only plain HTTPS requests. No connection is held: nothing arrives between
    /// polls, and twins and direct methods do not exist there (their calls fail with
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported)).
    #[cfg(feature = "https")]
    Https,
}

impl Transport {
    /// Whether this is one of the AMQP transports.
    pub fn is_amqp(self) -> bool {
        match self {
            #[cfg(feature = "amqp")]
            Self::Amqp => true,
            #[cfg(feature = "amqp_ws")]
            Self::AmqpWebSockets => true,
            _ => false,
        }
    }

    /// The WebSocket subprotocol, for the transports that run over a WebSocket.
    pub(crate) fn websocket_subprotocol(self) -> Option<&'static str> {
        match self {
            #[cfg(feature = "mqtt_ws")]
            Self::MqttWebSockets => Some("mqtt"),
            #[cfg(feature = "amqp_ws")]
            Self::AmqpWebSockets => Some("AMQPWSB10"),
            _ => None,
        }
    }
}

/// An HTTP proxy that tunnels connections with `CONNECT`.
///
/// `Debug` shows the proxy's address and user name, never the password.
///
/// ```
/// use azure_iot_device::Proxy;
///
/// let proxy = Proxy::from_url("http://alice:s3cret@proxy.example:3128")?;
/// assert_eq!(proxy.address(), ("proxy.example", 3128));
/// assert!(!format!("{proxy:?}").contains("s3cret"));
/// # Ok::<(), azure_iot_device::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) credentials: Option<(String, String)>,
}

impl Proxy {
    /// A proxy at `host:port`, without authentication.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            credentials: None,
        }
    }

    /// A proxy from `http://[user:password@]host[:port]` (port 80 when absent), as the
    /// `HTTPS_PROXY` environment variable usually holds it. `user` and `password` are
    /// percent-decoded.
    pub fn from_url(url: &str) -> crate::Result<Self> {
        let invalid = |why: &str| {
            crate::Error::new(
                crate::ErrorKind::InvalidArgument,
                format!("the proxy URL is not http://[user:password@]host[:port]: {why}"),
            )
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| invalid("it must start with http://"))?;
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let port_of = |text: &str| {
            text.parse::<u16>()
                .map_err(|_| invalid("the port is not a number"))
        };
        let (host, port) = match hostport.strip_prefix('[') {
            // An IPv6 literal: [::1] or [::1]:3128.
            Some(v6) => {
                let (host, after) = v6
                    .split_once(']')
                    .ok_or_else(|| invalid("an IPv6 address lacks its closing ]"))?;
                match after.strip_prefix(':') {
                    Some(port) => (host, port_of(port)?),
                    None if after.is_empty() => (host, 80),
                    None => return Err(invalid("text after the IPv6 address")),
                }
            }
            None => match hostport.split_once(':') {
                Some((host, port)) => (host, port_of(port)?),
                None => (hostport, 80),
            },
        };
        if host.is_empty() || host.contains('/') {
            return Err(invalid("no host"));
        }
        let credentials = match userinfo {
            Some(info) => {
                let (user, password) = info.split_once(':').unwrap_or((info, ""));
                let decode = |t: &str| azure_iot_core::encoding::decode_component(t).into_owned();
                Some((decode(user), decode(password)))
            }
            None => None,
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            credentials,
        })
    }

    /// Authenticates to the proxy with HTTP Basic.
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// The proxy's host and port.
    pub fn address(&self) -> (&str, u16) {
        (&self.host, self.port)
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_parse() {
        let p = Proxy::from_url("http://proxy.example:3128").unwrap();
        assert_eq!(p.address(), ("proxy.example", 3128));
        assert_eq!(p.credentials, None);
        let p = Proxy::from_url("http://u%40corp:p%3Aw@10.0.0.1/").unwrap();
        assert_eq!(p.address(), ("10.0.0.1", 80));
        assert_eq!(p.credentials, Some(("u@corp".into(), "p:w".into())));
        let p = Proxy::from_url("http://[::1]:8080").unwrap();
        assert_eq!(p.address(), ("::1", 8080));
        for bad in [
            "proxy:3128",
            "https://p:1",
            "http://",
            "http://p:port",
            "http://[::1",
            "http://p/x",
        ] {
            let err = Proxy::from_url(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
        }
        let with_secret = Proxy::from_url("http://a:topsecret@p:1").unwrap();
        assert!(!format!("{with_secret:?}").contains("topsecret"));
    }

    proptest::proptest! {
        #[test]
        fn any_proxy_url_gives_a_proxy_or_an_invalid_argument(url in "\\PC{0,60}") {
            if let Err(e) = Proxy::from_url(&url) {
                proptest::prop_assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
            }
        }

        #[test]
        fn parsed_proxies_keep_their_parts(
            host in "[a-z][a-z0-9.-]{0,20}",
            port in 1u16..,
            user in "[a-zA-Z0-9]{1,8}",
            password in "[a-zA-Z0-9@:%/]{0,12}",
        ) {
            let encoded = azure_iot_core::encoding::encode_component(&password);
            let proxy = Proxy::from_url(&format!("http://{user}:{encoded}@{host}:{port}")).unwrap();
            proptest::prop_assert_eq!(proxy.address(), (host.as_str(), port));
            proptest::prop_assert_eq!(proxy.credentials, Some((user, password)));
        }
    }
}
