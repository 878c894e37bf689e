//! AMQP connections shared by device clients (multiplexing and pooling).
//!
//! ```text
//!  DeviceClient ─ supervisor ─ AmqpEngine ──┐ seat        SharedConnection (one socket)
//!  DeviceClient ─ supervisor ─ AmqpEngine ──┼───────────▶  ├ $cbs session: CBS task
//!  DeviceClient ─ supervisor ─ AmqpEngine ──┘             │  (put-token per audience)
//!        │ commands ▲ events                               ├ session of device 1 ─ unit 1
//!        ▼          │                                       ├ session of device 2 ─ unit 2
//!      unit task (session + links of one device) ─────────▶ └ …
//! ```
//!
//! Every device has its own session, token (put on the connection's `$cbs` links, audience
//! `{host}/devices/{id}`) and links, as the C# and Java SDKs pool them; what devices share is
//! the socket, TLS and the CBS links. A device whose token is refused fails alone; one that
//! leaves ends its session and frees its seat; the connection closes when its last device
//! has left. When a connection fails, each device on it reconnects by its own retry policy,
//! and the pool seats them on a new connection.
//!
//! IoT Hub accepts at most 999 device tokens per connection; [`AmqpPool::new`] takes the
//! most devices one connection carries (C# uses 995, Java 1,000 and 500 over WebSockets),
//! and the pool opens as many connections as its devices need.

mod connection;
pub(crate) mod unit;

use std::sync::{Arc, Weak};

use fe2o3_amqp::session::SessionHandle;
use tokio::sync::Mutex;

pub(crate) use connection::{Seat, SharedConnection};

use crate::error::{Error, ErrorKind, Result};
use crate::transport::Dial;

/// The most devices IoT Hub accepts on one AMQP connection (tokens per connection).
pub const MAX_DEVICES_PER_CONNECTION: usize = 999;

/// A pool of AMQP connections that device and module clients share: give the same pool to
/// each client's [`ClientOptions::amqp_pool`](crate::ClientOptions::amqp_pool).
///
/// Cloning gives another handle on the same pool. Connections are opened as devices join
/// and closed when their last device leaves, so an idle pool holds nothing.
///
/// ```no_run
/// # async fn run(connection_strings: Vec<String>) -> Result<(), azure_iot_device::Error> {
/// use azure_iot_device::{AmqpPool, ClientOptions, DeviceClient};
/// let pool = AmqpPool::new(995)?;
/// let mut clients = Vec::new();
/// for cs in &connection_strings {
///     let options = ClientOptions::default().amqp_pool(pool.clone());
///     clients.push(DeviceClient::from_connection_string(cs, options).await?);
/// }
/// println!("{} devices on {} connections", clients.len(), pool.connections().await);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AmqpPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    max_devices: usize,
    /// The TLS configuration of the pool's clients without a certificate, by the CA they
    /// trust (`None`: the operating system's roots), built once.
    tls: std::sync::Mutex<Option<(Option<String>, Arc<rustls::ClientConfig>)>>,
    /// The pool's connections (weak: a connection lives while devices are seated on it).
    /// Held while choosing or opening a connection, so that devices joining at once fill
    /// one connection instead of each opening their own.
    connections: Mutex<Vec<(DialKey, Weak<SharedConnection>)>>,
}

/// What makes two clients' connections interchangeable.
#[derive(Clone, PartialEq, Eq)]
struct DialKey {
    host: String,
    port: u16,
    websockets: bool,
}

impl DialKey {
    fn of(dial: &Dial) -> Self {
        Self {
            host: dial.host.clone(),
            port: dial.port,
            websockets: dial.transport.websocket_subprotocol().is_some(),
        }
    }
}

impl std::fmt::Debug for AmqpPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpPool")
            .field("max_devices_per_connection", &self.inner.max_devices)
            .finish_non_exhaustive()
    }
}

impl AmqpPool {
    /// A pool whose connections carry at most `max_devices_per_connection` devices each
    /// (1 to [`MAX_DEVICES_PER_CONNECTION`]).
    pub fn new(max_devices_per_connection: usize) -> Result<Self> {
        if !(1..=MAX_DEVICES_PER_CONNECTION).contains(&max_devices_per_connection) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "an AMQP connection carries 1 to {MAX_DEVICES_PER_CONNECTION} devices, not {max_devices_per_connection}"
                ),
            ));
        }
        Ok(Self::with_limit(max_devices_per_connection))
    }

    /// A pool for one client alone: its own connection, as without pooling.
    pub(crate) fn private() -> Self {
        Self::with_limit(1)
    }

    fn with_limit(max_devices: usize) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                max_devices,
                tls: std::sync::Mutex::new(None),
                connections: Mutex::new(Vec::new()),
            }),
        }
    }

    /// How many connections the pool has open now.
    pub async fn connections(&self) -> usize {
        let connections = self.inner.connections.lock().await;
        connections
            .iter()
            .filter(|(_, c)| c.upgrade().is_some_and(|c| !c.is_broken()))
            .count()
    }

    /// How many devices are connected through the pool now.
    pub async fn devices(&self) -> usize {
        let connections = self.inner.connections.lock().await;
        connections
            .iter()
            .filter_map(|(_, c)| c.upgrade())
            .map(|c| c.seated())
            .sum()
    }

    /// The TLS configuration for a client that trusts `trusted` (PEM; `None`: the system's
    /// roots) and has no certificate: the one built for the previous such client when it
    /// trusted the same.
    pub(crate) fn tls_config(&self, trusted: Option<&str>) -> Result<Arc<rustls::ClientConfig>> {
        let mut cached = self.inner.tls.lock().map_err(|_| {
            Error::new(
                ErrorKind::Connect,
                "the pool's TLS settings are unavailable",
            )
        })?;
        if let Some((pem, config)) = cached.as_ref()
            && pem.as_deref() == trusted
        {
            return Ok(config.clone());
        }
        let config = crate::transport::tls_config(trusted, None)?;
        *cached = Some((trusted.map(str::to_owned), config.clone()));
        Ok(config)
    }

    /// A seat for one device and its session: on a connection of the pool with room, or on a
    /// new one. A device with a token (`(audience, token)`) puts it on the connection's `$cbs`
    /// node before it begins its session, as the SDKs do: the hub lets a connection open only
    /// a few sessions before its first token, and devices joining a new connection at once
    /// would otherwise exceed that. A device authenticated by its TLS certificate (no token)
    /// always gets a new connection. A connection found to have no channel left for the
    /// session is marked full and the device seated elsewhere.
    pub(crate) async fn seat_with_session(
        &self,
        dial: &Dial,
        token: Option<(&str, &str)>,
    ) -> Result<(Seat, SessionHandle<()>)> {
        // A new connection always has a channel for its first device, so the second try
        // succeeds or fails for another reason; the third is only for a race.
        for _ in 0..3 {
            let seat = self.seat(dial, token.is_none()).await?;
            if let Some((audience, token)) = token {
                seat.connection().put_token(audience, token).await?;
            }
            if let Some(session) = seat.connection().begin_session().await? {
                return Ok((seat, session));
            }
        }
        Err(Error::new(
            ErrorKind::Connect,
            "no AMQP connection had a channel for a new session",
        ))
    }

    /// A seat for one device: on a connection of the pool with room, or on a new one.
    async fn seat(&self, dial: &Dial, private: bool) -> Result<Seat> {
        let key = DialKey::of(dial);
        let mut connections = self.inner.connections.lock().await;
        connections.retain(|(_, c)| c.upgrade().is_some_and(|c| !c.is_broken()));
        if !private {
            let open = connections
                .iter()
                .filter(|(k, _)| *k == key)
                .filter_map(|(_, c)| c.upgrade())
                .find(|c| c.has_room(self.inner.max_devices));
            if let Some(connection) = open {
                return Ok(connection.seat());
            }
        }
        let connection = SharedConnection::open(dial, private).await?;
        let seat = connection.seat();
        connections.push((key, Arc::downgrade(&connection)));
        Ok(seat)
    }
}
