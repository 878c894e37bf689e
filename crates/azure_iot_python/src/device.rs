//! `NativeDeviceClient`: the Rust half of `IoTHubDeviceClient` / `IoTHubModuleClient` (sync and
//! aio share it; the Python classes add the handler properties and the handler thread).
//!
//! Created from a [`Config`] that is checked at once (a bad connection string, key, certificate
//! or CA fails at creation); `connect` opens the Rust [`DeviceClient`], which reconnects by
//! its retry policy; `disconnect` closes it, and a later `connect` opens a new one.
//!
//! Inbound traffic (C2D messages, method requests, desired patches, connection-state changes,
//! background errors) is forwarded by one Rust task per enabled feature into one bounded
//! event queue; Python's handler thread (or asyncio task) takes events with `next_event` and
//! calls the handlers. No Rust task ever waits on Python or holds the GIL: a slow handler fills
//! the queue, and the client stops reading from the hub (TCP back-pressure) until it drains.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use azure_iot_core::Message;
use azure_iot_core::connection_string::DeviceConnectionString;
use azure_iot_core::method::{MethodRequest, MethodResponse};
use azure_iot_core::retry::{FixedInterval, NoRetry};
use azure_iot_core::sas::{ResourceUri, SasToken};
use azure_iot_device::{
    ClientOptions, ConnectionState, DEFAULT_TOKEN_TTL, DesiredPatch, DeviceClient,
    DisconnectReason, Incoming, Proxy, Transport, X509Certificate,
};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

#[cfg(unix)]
use crate::completions::{Completion, NativeCompletions};
use crate::edge::Workload;
use crate::errors::device_error;
use crate::message;
use crate::runtime::{awaitable, runtime, wait};
use crate::tokens::{self, EdgeTokens, SharedEdgeTokens, UserToken};

/// How many inbound events wait for the handlers at most.
const EVENT_CAPACITY: usize = 64;

/// How the client authenticates.
#[derive(Clone)]
enum Auth {
    /// A device or module connection string (with a key or a SAS token).
    ConnectionString(String),
    /// A symmetric key.
    SymmetricKey {
        host: String,
        device_id: String,
        module_id: Option<String>,
        key: String,
    },
    /// The application's SAS token, replaceable with `update_sastoken`.
    Token {
        host: String,
        device_id: String,
        module_id: Option<String>,
        token: Arc<UserToken>,
    },
    /// Tokens signed by the IoT Edge workload API (`create_from_edge_environment`).
    Edge {
        host: String,
        device_id: String,
        module_id: Option<String>,
        tokens: Arc<EdgeTokens>,
    },
    /// An X.509 certificate.
    X509 {
        host: String,
        device_id: String,
        module_id: Option<String>,
        certificate: X509Certificate,
    },
}

/// What a client is created from.
#[derive(Clone)]
struct Config {
    auth: Auth,
    options: ClientOptions,
}

/// Inbound traffic, in arrival order, for the handlers.
enum Event {
    /// A cloud-to-device message (boxed: it is much larger than the other events).
    Message(Box<Message>),
    /// A direct method call.
    Method(MethodRequest),
    /// A desired-properties patch.
    DesiredPatch(DesiredPatch),
    /// Connected (`true`) or disconnected (`false`).
    ConnectionState(bool),
    /// The application's SAS token expires soon (`on_new_sastoken_required`).
    NewSastokenRequired,
    /// A failure no call is waiting for (for `on_background_exception`): the exception class
    /// name (of `azure_iot_rs.exceptions`) and the message.
    Background(&'static str, String),
}

/// The inbound features a handler turns on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Feature {
    Messages,
    Methods,
    Desired,
}

impl Feature {
    fn parse(name: &str) -> PyResult<Self> {
        match name {
            "messages" => Ok(Self::Messages),
            "methods" => Ok(Self::Methods),
            "twin_patches" => Ok(Self::Desired),
            other => Err(PyValueError::new_err(format!(
                "feature: {other:?} is not one of messages, methods, twin_patches"
            ))),
        }
    }
}

/// The connection, when there is one, and what runs for it.
#[derive(Default)]
struct Connection {
    client: Option<DeviceClient>,
    /// Enabled features and their forwarding tasks (running while connected).
    features: Vec<(Feature, Option<AbortHandle>)>,
    /// The connection-state watcher.
    watcher: Option<AbortHandle>,
}

impl Connection {
    fn abort_tasks(&mut self) {
        for (_, task) in &mut self.features {
            if let Some(task) = task.take() {
                task.abort();
            }
        }
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
    }
}

struct Inner {
    config: Config,
    connection: Mutex<Connection>,
    events_tx: mpsc::Sender<Event>,
    events_rx: tokio::sync::Mutex<mpsc::Receiver<Event>>,
    /// Held while a connect opens its client: two concurrent connects would open two
    /// connections with one identity, the second throwing the first off the hub.
    connecting: tokio::sync::Mutex<()>,
    /// `true` once shut down: `next_event` answers `None` from then on.
    shut_down: watch::Sender<bool>,
    /// The timer that fires `on_new_sastoken_required` (clients with the application's token).
    token_alarm: Mutex<Option<AbortHandle>>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A poisoned lock only means a panic elsewhere; the state itself stays consistent.
        self.connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn client(&self) -> Option<DeviceClient> {
        self.lock().client.clone()
    }

    /// The client, unless it has ended for good (closed, credentials refused, retries given
    /// up, token expired): such a client is dropped, so that the next `connect` opens anew.
    fn live_client(&self) -> Option<DeviceClient> {
        let mut connection = self.lock();
        let ended = connection.client.as_ref().is_some_and(|c| {
            matches!(
                c.connection_state(),
                ConnectionState::Disconnected(reason) if is_final(reason)
            )
        });
        if ended {
            connection.abort_tasks();
            connection.client = None;
        }
        connection.client.clone()
    }

    async fn connect(self: Arc<Self>) -> PyResult<()> {
        if self.live_client().is_some() {
            return Ok(());
        }
        let _one_at_a_time = self.connecting.lock().await;
        if self.live_client().is_some() {
            return Ok(()); // another connect finished meanwhile
        }
        let Config { auth, options } = self.config.clone();
        let opened = match auth {
            Auth::ConnectionString(cs) => DeviceClient::from_connection_string(&cs, options).await,
            Auth::SymmetricKey {
                host,
                device_id,
                module_id,
                key,
            } => {
                DeviceClient::from_symmetric_key(
                    &host,
                    &device_id,
                    module_id.as_deref(),
                    &key,
                    options,
                )
                .await
            }
            Auth::Token {
                host,
                device_id,
                module_id,
                token,
            } => {
                DeviceClient::from_token_provider(
                    &host,
                    &device_id,
                    module_id.as_deref(),
                    token.provider(),
                    options,
                )
                .await
            }
            Auth::Edge {
                host,
                device_id,
                module_id,
                tokens,
            } => {
                DeviceClient::from_token_provider(
                    &host,
                    &device_id,
                    module_id.as_deref(),
                    SharedEdgeTokens(tokens),
                    options,
                )
                .await
            }
            Auth::X509 {
                host,
                device_id,
                module_id,
                certificate,
            } => {
                DeviceClient::from_x509(
                    &host,
                    &device_id,
                    module_id.as_deref(),
                    &certificate,
                    options,
                )
                .await
            }
        };
        let client = opened.map_err(device_error)?;
        let duplicate = {
            let mut connection = self.lock();
            if connection.client.is_some() {
                true // another connect won the race; keep its client
            } else {
                connection.client = Some(client.clone());
                connection.watcher = Some(self.spawn_watcher(&client));
                let features: Vec<Feature> = connection.features.iter().map(|f| f.0).collect();
                connection.features = features
                    .into_iter()
                    .map(|f| (f, Some(self.spawn_feature(&client, f))))
                    .collect();
                false
            }
        };
        if duplicate {
            client.close().await;
        }
        Ok(())
    }

    async fn connected_client(self: Arc<Self>) -> PyResult<DeviceClient> {
        self.clone().connect().await?;
        // Connected just now, or by another caller; a disconnect meanwhile makes this fail.
        self.client().ok_or_else(|| {
            crate::errors::NoConnectionError::new_err("the client was disconnected meanwhile")
        })
    }

    async fn disconnect(self: Arc<Self>) {
        let client = {
            let mut connection = self.lock();
            connection.abort_tasks();
            connection.client.take()
        };
        if let Some(client) = client {
            client.close().await;
            // Never waits: a queue nobody drains must not hang a disconnect.
            let _ = self.events_tx.try_send(Event::ConnectionState(false));
        }
    }

    /// (Re)starts the `on_new_sastoken_required` timer for the application's current token.
    fn start_token_alarm(&self) {
        let Auth::Token { token, .. } = &self.config.auth else {
            return;
        };
        let due = tokens::new_token_due(token.expires_at());
        let tx = self.events_tx.clone();
        let task = runtime()
            .spawn(async move {
                due.await;
                let _ = tx.send(Event::NewSastokenRequired).await;
            })
            .abort_handle();
        let mut alarm = self
            .token_alarm
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(old) = alarm.replace(task) {
            old.abort();
        }
    }

    fn stop_token_alarm(&self) {
        let task = self
            .token_alarm
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.abort();
        }
    }

    /// Makes `token` the client's token and reconnects with it (as azure-iot-device 2.x's
    /// reauthorization: a disconnect, then a connect, also when it was not connected).
    async fn update_token(self: Arc<Self>, token: SasToken) -> PyResult<()> {
        let Auth::Token { token: current, .. } = &self.config.auth else {
            return Err(crate::errors::ClientError::new_err(
                "Cannot update sastoken when client was not created with one",
            ));
        };
        current.replace(token);
        self.start_token_alarm();
        self.clone().disconnect().await;
        self.connect().await
    }

    /// Reports the current state, then every change, until the client ends.
    fn spawn_watcher(&self, client: &DeviceClient) -> AbortHandle {
        let mut states = client.watch_connection_state();
        let tx = self.events_tx.clone();
        runtime()
            .spawn(async move {
                let mut last = None;
                loop {
                    let state = states.borrow_and_update().clone();
                    let connected = state == ConnectionState::Connected;
                    if last != Some(connected) {
                        last = Some(connected);
                        if tx.send(Event::ConnectionState(connected)).await.is_err() {
                            return;
                        }
                        // A connection lost without `disconnect` is also a background error,
                        // as the official clients report it.
                        if let ConnectionState::Disconnected(reason) = state
                            && reason != DisconnectReason::ClosedByUser
                        {
                            let dropped = Event::Background(
                                "ConnectionDroppedError",
                                format!("the connection was lost: {reason:?}"),
                            );
                            if tx.send(dropped).await.is_err() {
                                return;
                            }
                        }
                    }
                    if states.changed().await.is_err() {
                        return;
                    }
                }
            })
            .abort_handle()
    }

    /// Subscribes to `feature` and forwards what arrives into the event queue.
    fn spawn_feature(&self, client: &DeviceClient, feature: Feature) -> AbortHandle {
        let client = client.clone();
        let tx = self.events_tx.clone();
        runtime()
            .spawn(async move {
                let failed = match feature {
                    Feature::Messages => match client.cloud_to_device_messages().await {
                        Ok(s) => return forward(s, tx, |m| Event::Message(Box::new(m))).await,
                        Err(e) => e,
                    },
                    Feature::Methods => match client.method_requests().await {
                        Ok(s) => return forward(s, tx, Event::Method).await,
                        Err(e) => e,
                    },
                    Feature::Desired => match client.desired_property_patches().await {
                        Ok(s) => return forward(s, tx, Event::DesiredPatch).await,
                        Err(e) => e,
                    },
                };
                let _ = tx
                    .send(Event::Background(
                        "ClientError",
                        format!("enabling {feature:?} failed: {failed}"),
                    ))
                    .await;
            })
            .abort_handle()
    }

    fn enable(&self, feature: Feature) {
        let mut connection = self.lock();
        if connection.features.iter().any(|f| f.0 == feature) {
            return;
        }
        let task = connection
            .client
            .as_ref()
            .map(|client| self.spawn_feature(client, feature));
        connection.features.push((feature, task));
    }

    fn disable(&self, feature: Feature) {
        let mut connection = self.lock();
        connection.features.retain_mut(|(f, task)| {
            if *f != feature {
                return true;
            }
            if let Some(task) = task.take() {
                task.abort();
            }
            false
        });
    }

    async fn next_event(self: Arc<Self>, timeout: Duration) -> Option<Event> {
        let mut shut_down = self.shut_down.subscribe();
        if *shut_down.borrow_and_update() {
            return None;
        }
        // The timeout covers waiting for the queue too (a second reader may hold it).
        let next = async {
            let mut events = self.events_rx.lock().await;
            events.recv().await
        };
        tokio::select! {
            event = next => event,
            _ = shut_down.changed() => None,
            _ = tokio::time::sleep(timeout) => None,
        }
    }
}

/// Whether a client disconnected for `reason` has ended for good (it does not reconnect).
fn is_final(reason: DisconnectReason) -> bool {
    !matches!(
        reason,
        DisconnectReason::Network
            | DisconnectReason::KeepAliveTimeout
            | DisconnectReason::ProtocolError
    )
}

/// Moves everything `incoming` yields into the event queue until either ends.
async fn forward<T>(mut incoming: Incoming<T>, tx: mpsc::Sender<Event>, wrap: fn(T) -> Event) {
    while let Some(item) = incoming.recv().await {
        if tx.send(wrap(item)).await.is_err() {
            return;
        }
    }
}

/// The event as `(kind, payload)`: `("message", dict)`, `("method", (name, request_id,
/// payload_json))`, `("twin_patch", patch_json)`, `("connection_state", bool)`,
/// `("background", text)`.
fn event_to_python(py: Python<'_>, event: Event) -> PyResult<Py<PyAny>> {
    let pair = match event {
        Event::Message(m) => ("message", message::to_python(py, &m)?.into_any()),
        Event::Method(m) => (
            "method",
            (m.name, m.request_id, m.payload.to_string())
                .into_pyobject(py)?
                .into_any(),
        ),
        Event::DesiredPatch(p) => {
            let mut patch = p.patch;
            if let Value::Object(map) = &mut patch {
                map.entry("$version").or_insert(Value::from(p.version));
            }
            (
                "twin_patch",
                patch.to_string().into_pyobject(py)?.into_any(),
            )
        }
        Event::NewSastokenRequired => ("new_sastoken_required", PyTuple::empty(py).into_any()),
        Event::ConnectionState(c) => (
            "connection_state",
            pyo3::types::PyBool::new(py, c).to_owned().into_any(),
        ),
        Event::Background(class, text) => {
            ("background", (class, text).into_pyobject(py)?.into_any())
        }
    };
    Ok(
        PyTuple::new(py, [pair.0.into_pyobject(py)?.into_any(), pair.1])?
            .into_any()
            .unbind(),
    )
}

/// The transport a Python client names (`mqtt`, `mqtt_ws`, `amqp`, `amqp_ws`, `https`).
pub(crate) fn transport_arg(name: &str) -> PyResult<Transport> {
    match name {
        "mqtt" => Ok(Transport::Mqtt),
        "mqtt_ws" => Ok(Transport::MqttWebSockets),
        "amqp" => Ok(Transport::Amqp),
        "amqp_ws" => Ok(Transport::AmqpWebSockets),
        "https" => Ok(Transport::Https),
        other => Err(PyValueError::new_err(format!(
            "transport: {other:?} is not one of mqtt, mqtt_ws, amqp, amqp_ws, https"
        ))),
    }
}

/// Checks a CA bundle (PEM) now, so that a bad one fails at creation.
pub(crate) fn check_ca(pem: &str) -> PyResult<()> {
    let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PyValueError::new_err(format!("server_verification_cert is not PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(PyValueError::new_err(
            "server_verification_cert holds no certificate",
        ));
    }
    Ok(())
}

/// The Rust half of the Python device and module clients.
#[pyclass(module = "azure_iot_rs._native", frozen)]
pub(crate) struct NativeDeviceClient {
    inner: Arc<Inner>,
}

#[pymethods]
impl NativeDeviceClient {
    /// Checks the credentials and options and makes a client; nothing is sent until
    /// `connect`. `auth` is `"connection_string"` (`credential` = the string), `"symmetric_key"`
    /// (`credential` = the key), `"sastoken"` (`credential` = the token), `"x509"`
    /// (`credential` = (cert PEM, key PEM)) or `"edge"` (`credential` = (workload URI,
    /// module generation id, API version): the trust bundle is fetched and a first token
    /// signed now). `proxy` is (host, port, user, password) of an HTTP `CONNECT` proxy.
    #[new]
    #[pyo3(signature = (auth, credential, hostname=None, device_id=None, module_id=None,
        server_verification_cert=None, transport="mqtt", keep_alive=None, sastoken_ttl=None,
        connection_retry=true, connection_retry_interval=None, product_info=None,
        gateway_hostname=None, port=None, operation_timeout=None, https_port=None, proxy=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        auth: &str,
        credential: &Bound<'_, PyAny>,
        hostname: Option<String>,
        device_id: Option<String>,
        module_id: Option<String>,
        server_verification_cert: Option<String>,
        transport: &str,
        keep_alive: Option<u64>,
        sastoken_ttl: Option<u64>,
        connection_retry: bool,
        connection_retry_interval: Option<f64>,
        product_info: Option<String>,
        gateway_hostname: Option<String>,
        port: Option<u16>,
        operation_timeout: Option<f64>,
        https_port: Option<u16>,
        proxy: Option<ProxyArg>,
    ) -> PyResult<Self> {
        let require = |value: Option<String>, what: &str| {
            value
                .filter(|v| !v.is_empty())
                .ok_or_else(|| PyValueError::new_err(format!("{what} is required")))
        };
        let mut gateway = gateway_hostname.filter(|g| !g.is_empty());
        let mut trust_bundle = None;
        let auth = match auth {
            "connection_string" => {
                let text: String = credential.extract()?;
                let cs = DeviceConnectionString::parse(&text).map_err(|e| {
                    PyValueError::new_err(format!("connection_string is invalid: {e}"))
                })?;
                if cs.gateway_host_name().is_some() {
                    gateway = None; // the connection string's own gateway wins
                }
                Auth::ConnectionString(text)
            }
            "sastoken" => {
                let text: String = credential.extract()?;
                Auth::Token {
                    host: require(hostname, "hostname")?,
                    device_id: require(device_id, "device_id")?,
                    module_id,
                    token: UserToken::new(UserToken::parse(&text)?),
                }
            }
            "edge" => {
                let (uri, generation_id, api_version): (String, String, String) =
                    credential.extract()?;
                let host = require(hostname, "hostname")?;
                let device_id = require(device_id, "device_id")?;
                let module = require(module_id, "module_id")?;
                let (tokens, bundle) = edge_credentials(
                    py,
                    EdgeModule {
                        uri,
                        generation_id,
                        api_version,
                        resource: ResourceUri::module(&host, &device_id, &module),
                        module_id: module.clone(),
                        ttl: sastoken_ttl.map_or(DEFAULT_TOKEN_TTL, Duration::from_secs),
                    },
                )?;
                trust_bundle = Some(bundle);
                Auth::Edge {
                    host,
                    device_id,
                    module_id: Some(module),
                    tokens,
                }
            }
            "symmetric_key" => {
                let key: String = credential.extract()?;
                azure_iot_core::SharedAccessKey::from_base64(&key)
                    .map_err(|_| PyValueError::new_err("symmetric_key is not valid base64"))?;
                Auth::SymmetricKey {
                    host: require(hostname, "hostname")?,
                    device_id: require(device_id, "device_id")?,
                    module_id,
                    key,
                }
            }
            "x509" => {
                let (cert, key): (String, String) = credential.extract()?;
                Auth::X509 {
                    host: require(hostname, "hostname")?,
                    device_id: require(device_id, "device_id")?,
                    module_id,
                    certificate: X509Certificate::from_pem(&cert, &key)
                        .map_err(|e| PyValueError::new_err(format!("x509: {e}")))?,
                }
            }
            other => {
                return Err(PyValueError::new_err(format!(
                    "auth: {other:?} is not one of connection_string, symmetric_key, sastoken, \
                     x509, edge"
                )));
            }
        };
        let mut options = ClientOptions::default().transport(transport_arg(transport)?);
        if let Some(ca) = server_verification_cert.or(trust_bundle) {
            check_ca(&ca)?;
            options = options.trusted_ca_pem(ca);
        }
        if let Some(gateway) = gateway {
            options = options.gateway_host_name(gateway);
        }
        if let Some((host, port, user, password)) = proxy {
            let mut proxy = Proxy::new(host, port);
            if let Some(user) = user {
                proxy = proxy.basic_auth(user, password.unwrap_or_default());
            }
            options = options.proxy(proxy);
        }
        if let Some(seconds) = keep_alive {
            options = options.keep_alive(Duration::from_secs(seconds));
        }
        if let Some(seconds) = sastoken_ttl {
            if seconds == 0 {
                return Err(PyValueError::new_err("sastoken_ttl must be positive"));
            }
            options = options.token_ttl(Duration::from_secs(seconds));
        }
        if !connection_retry {
            options = options.retry_policy(NoRetry);
        } else if let Some(seconds) = connection_retry_interval {
            options = options.retry_policy(FixedInterval {
                interval: seconds_arg("connection_retry_interval", seconds)?,
                max_retries: None,
            });
        }
        if let Some(info) = product_info {
            options = options.product_info(info);
        }
        if let Some(port) = port {
            options = options.port(port);
        }
        if let Some(port) = https_port {
            options = options.https_port(port);
        }
        if let Some(seconds) = operation_timeout {
            options = options.operation_timeout(seconds_arg("operation_timeout", seconds)?);
        }
        let (events_tx, events_rx) = mpsc::channel(EVENT_CAPACITY);
        let inner = Arc::new(Inner {
            config: Config { auth, options },
            connection: Mutex::new(Connection::default()),
            events_tx,
            events_rx: tokio::sync::Mutex::new(events_rx),
            connecting: tokio::sync::Mutex::new(()),
            shut_down: watch::Sender::new(false),
            token_alarm: Mutex::new(None),
        });
        inner.start_token_alarm();
        Ok(Self { inner })
    }

    /// Replaces the application's SAS token (parsed here: `ValueError`) and reconnects with
    /// it (blocking). `ClientError` if the client was not created with a token.
    fn update_sastoken(&self, py: Python<'_>, sastoken: &str) -> PyResult<()> {
        let token = UserToken::parse(sastoken)?;
        wait(py, self.inner.clone().update_token(token))
    }

    /// Replaces the SAS token and reconnects (awaitable).
    fn update_sastoken_async<'py>(
        &self,
        py: Python<'py>,
        sastoken: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let token = UserToken::parse(sastoken)?;
        awaitable(py, self.inner.clone().update_token(token))
    }

    /// Whether the client is connected now.
    #[getter]
    fn connected(&self) -> bool {
        self.inner
            .client()
            .is_some_and(|c| c.connection_state() == ConnectionState::Connected)
    }

    /// Connects (blocking); does nothing if connected.
    fn connect(&self, py: Python<'_>) -> PyResult<()> {
        wait(py, self.inner.clone().connect())
    }

    /// Connects (awaitable).
    fn connect_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.inner.clone().connect())
    }

    /// Disconnects (blocking); a later `connect` opens a new connection.
    fn disconnect(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.inner.clone();
        wait(py, async move {
            inner.disconnect().await;
            Ok(())
        })
    }

    /// Disconnects (awaitable).
    fn disconnect_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        awaitable(py, async move {
            inner.disconnect().await;
            Ok(())
        })
    }

    /// Disconnects and ends the event queue for good (blocking).
    fn shutdown(&self, py: Python<'_>) -> PyResult<()> {
        self.inner.shut_down.send_replace(true);
        self.inner.stop_token_alarm();
        self.disconnect(py)
    }

    /// Shuts down (awaitable).
    fn shutdown_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.inner.shut_down.send_replace(true);
        self.inner.stop_token_alarm();
        self.disconnect_async(py)
    }

    /// Sends a message (blocking; connects first if needed); returns on the hub's ack.
    fn send_message(
        &self,
        py: Python<'_>,
        data: &[u8],
        custom_properties: Vec<(String, String)>,
        system: Vec<(String, String)>,
    ) -> PyResult<()> {
        let message = message::to_rust(data, custom_properties, system)?;
        wait(py, send(self.inner.clone(), message))
    }

    /// Sends a message (awaitable).
    fn send_message_async<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
        custom_properties: Vec<(String, String)>,
        system: Vec<(String, String)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let message = message::to_rust(data, custom_properties, system)?;
        awaitable(py, send(self.inner.clone(), message))
    }

    /// Sends a message and queues the outcome in `completions` under `op` (the `aio`
    /// clients' send: see module `completions`). Returns at once.
    #[cfg(unix)]
    fn send_message_queued(
        &self,
        completions: PyRef<'_, NativeCompletions>,
        op: u64,
        data: &[u8],
        custom_properties: Vec<(String, String)>,
        system: Vec<(String, String)>,
    ) -> PyResult<()> {
        let message = message::to_rust(data, custom_properties, system)?;
        let completion = Completion::new(completions.shared.clone(), op);
        let inner = self.inner.clone();
        runtime().spawn(async move {
            completion.finish(send(inner, message).await);
        });
        Ok(())
    }

    /// The twin as JSON text `{"desired": …, "reported": …}` (blocking).
    fn get_twin(&self, py: Python<'_>) -> PyResult<String> {
        wait(py, get_twin(self.inner.clone()))
    }

    /// The twin as JSON text (awaitable).
    fn get_twin_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, get_twin(self.inner.clone()))
    }

    /// Patches reported properties with a JSON object (text) (blocking).
    fn patch_twin_reported_properties(&self, py: Python<'_>, patch_json: &str) -> PyResult<()> {
        let patch = json_arg("reported_properties_patch", patch_json)?;
        wait(py, patch_reported(self.inner.clone(), patch))
    }

    /// Patches reported properties (awaitable).
    fn patch_twin_reported_properties_async<'py>(
        &self,
        py: Python<'py>,
        patch_json: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let patch = json_arg("reported_properties_patch", patch_json)?;
        awaitable(py, patch_reported(self.inner.clone(), patch))
    }

    /// Answers a method call (blocking).
    fn send_method_response(
        &self,
        py: Python<'_>,
        request_id: String,
        status: i32,
        payload_json: &str,
    ) -> PyResult<()> {
        let payload = json_arg("payload", payload_json)?;
        let response = MethodResponse::new(request_id, status, payload);
        wait(py, respond(self.inner.clone(), response))
    }

    /// Answers a method call (awaitable).
    fn send_method_response_async<'py>(
        &self,
        py: Python<'py>,
        request_id: String,
        status: i32,
        payload_json: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let payload = json_arg("payload", payload_json)?;
        let response = MethodResponse::new(request_id, status, payload);
        awaitable(py, respond(self.inner.clone(), response))
    }

    /// Asks the hub where to upload the file `blob_name` (blocking): `(correlation_id,
    /// host_name, container_name, blob_name, sas_token)`.
    fn get_storage_info_for_blob(&self, py: Python<'_>, blob_name: String) -> PyResult<BlobInfo> {
        wait(py, storage_info(self.inner.clone(), blob_name))
    }

    /// Asks the hub where to upload a file (awaitable).
    fn get_storage_info_for_blob_async<'py>(
        &self,
        py: Python<'py>,
        blob_name: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, storage_info(self.inner.clone(), blob_name))
    }

    /// Tells the hub how the upload `correlation_id` went (blocking).
    fn notify_blob_upload_status(
        &self,
        py: Python<'_>,
        correlation_id: String,
        is_success: bool,
        status_code: i32,
        status_description: String,
    ) -> PyResult<()> {
        let status = UploadStatus {
            correlation_id,
            is_success,
            status_code,
            status_description,
        };
        wait(py, notify_upload(self.inner.clone(), status))
    }

    /// Tells the hub how an upload went (awaitable).
    fn notify_blob_upload_status_async<'py>(
        &self,
        py: Python<'py>,
        correlation_id: String,
        is_success: bool,
        status_code: i32,
        status_description: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let status = UploadStatus {
            correlation_id,
            is_success,
            status_code,
            status_description,
        };
        awaitable(py, notify_upload(self.inner.clone(), status))
    }

    /// Uploads `data` as the blob `{deviceId}/{blob_name}` and reports the outcome to the hub
    /// (blocking).
    fn upload_file(&self, py: Python<'_>, blob_name: String, data: &[u8]) -> PyResult<()> {
        wait(py, upload(self.inner.clone(), blob_name, data.to_vec()))
    }

    /// Uploads a file (awaitable).
    fn upload_file_async<'py>(
        &self,
        py: Python<'py>,
        blob_name: String,
        data: &[u8],
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, upload(self.inner.clone(), blob_name, data.to_vec()))
    }

    /// Turns an inbound feature on (`messages`, `methods`, `twin_patches`): subscribed now if
    /// connected, else on `connect`.
    fn enable_feature(&self, feature: &str) -> PyResult<()> {
        self.inner.enable(Feature::parse(feature)?);
        Ok(())
    }

    /// Turns an inbound feature off.
    fn disable_feature(&self, feature: &str) -> PyResult<()> {
        self.inner.disable(Feature::parse(feature)?);
        Ok(())
    }

    /// The next inbound event as `(kind, payload)`, or `None` after `timeout` seconds or once
    /// shut down (blocking, GIL released).
    fn next_event(&self, py: Python<'_>, timeout: f64) -> PyResult<Option<Py<PyAny>>> {
        let timeout = seconds_arg("timeout", timeout)?;
        let event = wait(py, {
            let inner = self.inner.clone();
            async move { Ok(inner.next_event(timeout).await) }
        })?;
        event.map(|e| event_to_python(py, e)).transpose()
    }

    /// The next inbound event (awaitable).
    fn next_event_async<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let timeout = seconds_arg("timeout", timeout)?;
        let inner = self.inner.clone();
        awaitable(py, async move {
            match inner.next_event(timeout).await {
                Some(event) => Python::attach(|py| event_to_python(py, event).map(Some)),
                None => Ok(None),
            }
        })
    }
}

impl Drop for NativeDeviceClient {
    /// A client dropped while connected is closed in the background (the interpreter never
    /// waits for it).
    fn drop(&mut self) {
        let inner = self.inner.clone();
        inner.stop_token_alarm();
        if inner.client().is_some() {
            runtime().spawn(inner.disconnect());
        }
    }
}

/// An HTTP `CONNECT` proxy as Python passes it: (host, port, user, password).
type ProxyArg = (String, u16, Option<String>, Option<String>);

/// What `create_from_edge_environment` read from the environment.
struct EdgeModule {
    uri: String,
    module_id: String,
    generation_id: String,
    api_version: String,
    resource: ResourceUri,
    ttl: Duration,
}

/// The token source and the trust bundle of an IoT Edge module, fetched now as
/// azure-iot-device 2.x does at creation: an unreachable daemon or a trust bundle it will
/// not give is an `OSError`, a first token it will not sign a `ValueError`.
fn edge_credentials(py: Python<'_>, module: EdgeModule) -> PyResult<(Arc<EdgeTokens>, String)> {
    let workload = Workload::new(
        &module.uri,
        &module.module_id,
        &module.generation_id,
        &module.api_version,
    )
    .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let tokens = Arc::new(EdgeTokens {
        workload,
        resource: module.resource,
        ttl: module.ttl,
    });
    let fetch = tokens.clone();
    let bundle = wait(py, async move {
        tokio::time::timeout(EDGE_TIMEOUT, fetch.workload.trust_bundle())
            .await
            .map_err(|_| "the IoT Edge workload API did not answer in time".to_owned())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| PyOSError::new_err(format!("Unexpected failure in IoTEdge: {e}")))
    })?;
    let check = tokens.clone();
    wait(py, async move {
        tokio::time::timeout(
            EDGE_TIMEOUT,
            check.workload.token(&check.resource, check.ttl),
        )
        .await
        .map_err(|_| "the IoT Edge workload API did not answer in time".to_owned())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map(drop)
        .map_err(|e| {
            PyValueError::new_err(format!(
                "Could not create a SasToken using the values provided, or in the Edge \
                     environment: {e}"
            ))
        })
    })?;
    Ok((tokens, bundle))
}

/// How long creating an IoT Edge client waits for each workload API call.
const EDGE_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn seconds_arg(what: &str, seconds: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(seconds).map_err(|_| {
        PyValueError::new_err(format!("{what}: {seconds} is not a duration in seconds"))
    })
}

fn json_arg(what: &str, text: &str) -> PyResult<Value> {
    serde_json::from_str(text)
        .map_err(|e| PyValueError::new_err(format!("{what} is not JSON: {e}")))
}

async fn send(inner: Arc<Inner>, message: Message) -> PyResult<()> {
    let client = inner.connected_client().await?;
    client.send_event(message).await.map_err(device_error)
}

async fn get_twin(inner: Arc<Inner>) -> PyResult<String> {
    let client = inner.connected_client().await?;
    let twin = client.get_twin().await.map_err(device_error)?;
    Ok(serde_json::json!({"desired": twin.desired, "reported": twin.reported}).to_string())
}

async fn patch_reported(inner: Arc<Inner>, patch: Value) -> PyResult<()> {
    let client = inner.connected_client().await?;
    client
        .update_reported_properties(&patch)
        .await
        .map(drop)
        .map_err(device_error)
}

async fn respond(inner: Arc<Inner>, response: MethodResponse) -> PyResult<()> {
    let client = inner.connected_client().await?;
    client
        .respond_to_method(response)
        .await
        .map_err(device_error)
}

/// Where to upload a file, as Python gets it: `(correlation_id, host_name, container_name,
/// blob_name, sas_token)`.
type BlobInfo = (String, String, String, String, String);

/// The outcome of an upload, for the hub.
struct UploadStatus {
    correlation_id: String,
    is_success: bool,
    status_code: i32,
    status_description: String,
}

async fn storage_info(inner: Arc<Inner>, blob_name: String) -> PyResult<BlobInfo> {
    let client = inner.connected_client().await?;
    let info = client
        .get_storage_info_for_blob(&blob_name)
        .await
        .map_err(device_error)?;
    Ok((
        info.correlation_id,
        info.host_name,
        info.container_name,
        info.blob_name,
        info.sas_token,
    ))
}

async fn notify_upload(inner: Arc<Inner>, status: UploadStatus) -> PyResult<()> {
    let client = inner.connected_client().await?;
    client
        .notify_blob_upload_status(
            &status.correlation_id,
            status.is_success,
            status.status_code,
            &status.status_description,
        )
        .await
        .map_err(device_error)
}

async fn upload(inner: Arc<Inner>, blob_name: String, data: Vec<u8>) -> PyResult<()> {
    let client = inner.connected_client().await?;
    client
        .upload_file(&blob_name, data)
        .await
        .map_err(device_error)
}
