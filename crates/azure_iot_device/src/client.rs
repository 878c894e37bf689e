//! [`DeviceClient`]: the handle users hold, and the driver task that owns the connection.
//!
//! The handle sends [`Command`]s over a bounded channel; the driver (spawned by
//! [`DeviceClient::open`]) writes packets, reads the hub's answers and completes each caller's
//! oneshot. Every call is bounded by the one operation timeout, so nothing waits forever.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use azure_iot_core::Message;
use azure_iot_core::connection_string::DeviceConnectionString;
use azure_iot_core::message::MAX_MESSAGE_SIZE;
use azure_iot_core::method::{MethodRequest, MethodResponse};
use azure_iot_core::sas::{ResourceUri, SharedAccessKey};
use azure_iot_protocol::Identity;
use bytes::Bytes;
use futures_util::Stream;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::timeout;

use crate::auth::{Credential, TokenProvider, X509Certificate};
use crate::driver::{self, Connector};
use crate::error::{Error, ErrorKind, Result};
use crate::options::ClientOptions;
use crate::session::{Feature, Session};
use crate::transport;

/// Whether the client is connected, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Connected and authenticated.
    Connected,
    /// Not connected.
    Disconnected(DisconnectReason),
}

/// Why a client is disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The network connection was lost or the hub closed it.
    Network,
    /// The hub answered the keep-alive late or not at all.
    KeepAliveTimeout,
    /// The hub sent something that is not IoT Hub MQTT.
    ProtocolError,
    /// [`DeviceClient::close`] was called or every handle was dropped.
    ClosedByUser,
    /// The hub refused the credentials when the client reconnected (final). This is also how
    /// a device that was disabled or deleted meanwhile shows: IoT Hub refuses it with the same
    /// CONNACK code (5, not authorized) as a wrong key, so the client cannot tell them apart.
    Unauthorized,
    /// The hub refused the connection for a reason retrying cannot fix (final).
    Refused,
    /// The retry policy gave up reconnecting (final).
    RetriesExhausted,
    /// The SAS token the client was given has expired and it has no key to sign another
    /// (final; open a new client with a fresh token).
    ExpiredToken,
}

/// A device's twin as the device sees it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeviceTwin {
    /// Desired properties, including `$version`.
    pub desired: Value,
    /// Reported properties, including `$version`.
    pub reported: Value,
}

/// A desired-properties patch pushed by the hub.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DesiredPatch {
    /// The desired-properties version after this patch.
    pub version: i64,
    /// The patch (a JSON object; `null` removes a property).
    pub patch: Value,
}

pub(crate) struct TwinAnswer {
    pub(crate) status: u16,
    pub(crate) version: Option<i64>,
    pub(crate) body: Bytes,
}

pub(crate) enum Command {
    /// Boxed: a message with its system properties is large next to the other commands.
    SendEvent(Box<Message>, oneshot::Sender<Result<()>>),
    TwinGet(oneshot::Sender<Result<TwinAnswer>>),
    PatchReported(Bytes, oneshot::Sender<Result<TwinAnswer>>),
    RespondToMethod(MethodResponse, oneshot::Sender<Result<()>>),
    Subscribe(Sink, oneshot::Sender<Result<()>>),
    Close(oneshot::Sender<()>),
}

/// Where inbound messages of one kind go.
pub(crate) enum Sink {
    CloudToDevice(mpsc::UnboundedSender<Message>),
    Desired(mpsc::UnboundedSender<DesiredPatch>),
    Methods(mpsc::UnboundedSender<MethodRequest>),
}

impl Sink {
    pub(crate) fn feature(&self) -> Feature {
        match self {
            Self::CloudToDevice(_) => Feature::CloudToDevice,
            Self::Desired(_) => Feature::DesiredPatches,
            Self::Methods(_) => Feature::Methods,
        }
    }
}

/// A connected device client (a module connection string also works here, but
/// [`ModuleClient`](crate::ModuleClient) says what a module can do).
///
/// Cheap to clone; every clone drives the same connection. The connection closes when
/// [`close`](Self::close) is called or the last clone is dropped.
///
/// When the connection is lost the client reconnects by its retry policy
/// ([`ClientOptions::retry_policy`]): operations issued meanwhile wait (within their timeout),
/// messages the hub had not acknowledged are sent again, subscriptions are renewed, and a
/// desired-properties change made while the device was away is delivered on the
/// desired-patch stream. Refused credentials end the client with
/// [`DisconnectReason::Unauthorized`]. A key-based client renews its SAS token before it
/// expires without failing anything in flight.
#[derive(Clone, Debug)]
pub struct DeviceClient {
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<ConnectionState>,
    identity: Identity,
    operation_timeout: Duration,
}

/// The identity `device_id` / `module_id` names, if both are ids IoT Hub accepts.
fn identity_of(device_id: &str, module_id: Option<&str>) -> Result<Identity> {
    let check = |what: &str, id: &str| {
        azure_iot_protocol::identity::check_id(id).map_err(|e| {
            Error::with_source(ErrorKind::InvalidArgument, format!("{what} id: {e}"), e)
        })
    };
    check("device", device_id)?;
    Ok(match module_id {
        Some(module) => {
            check("module", module)?;
            Identity::module(device_id, module)
        }
        None => Identity::device(device_id),
    })
}

impl DeviceClient {
    /// Connects with a device or module connection string
    /// (`HostName=…;DeviceId=…[;ModuleId=…];SharedAccessKey=…` or `SharedAccessSignature=…`;
    /// `GatewayHostName` is dialled instead of `HostName` when present).
    ///
    /// Returns once the hub accepted the connection; a refused key fails here with
    /// [`ErrorKind::Unauthorized`].
    pub async fn from_connection_string(
        connection_string: &str,
        options: ClientOptions,
    ) -> Result<Self> {
        let cs = DeviceConnectionString::parse(connection_string).map_err(|e| {
            Error::with_source(
                ErrorKind::InvalidArgument,
                "the device connection string is invalid",
                e,
            )
        })?;
        let credential = Credential::from_connection_string(&cs)?;
        let identity = match cs.module_id() {
            Some(module) => Identity::module(cs.device_id(), module),
            None => Identity::device(cs.device_id()),
        };
        Self::open(
            cs.host_name(),
            cs.connect_host(),
            identity,
            credential,
            None,
            options,
        )
        .await
    }

    /// Connects as `device_id` (or, with `module_id`, that module) of the hub `host_name`
    /// with its symmetric key (base64), signing a fresh token for every connection.
    pub async fn from_symmetric_key(
        host_name: &str,
        device_id: &str,
        module_id: Option<&str>,
        key_base64: &str,
        options: ClientOptions,
    ) -> Result<Self> {
        let key = SharedAccessKey::from_base64(key_base64).map_err(|e| {
            Error::with_source(
                ErrorKind::InvalidArgument,
                "the symmetric key is not valid base64",
                e,
            )
        })?;
        Self::open(
            host_name,
            host_name,
            identity_of(device_id, module_id)?,
            Credential::Key {
                key,
                key_name: None,
            },
            None,
            options,
        )
        .await
    }

    /// Connects as `device_id` (or, with `module_id`, that module) with SAS tokens the
    /// application supplies: `provider` is asked for one before every connection, including
    /// the renewal at 85 % of the previous token's life, so the client never needs the key.
    pub async fn from_token_provider(
        host_name: &str,
        device_id: &str,
        module_id: Option<&str>,
        provider: impl TokenProvider,
        options: ClientOptions,
    ) -> Result<Self> {
        Self::open(
            host_name,
            host_name,
            identity_of(device_id, module_id)?,
            Credential::Provider(std::sync::Arc::new(provider)),
            None,
            options,
        )
        .await
    }

    /// Connects as `device_id` (or, with `module_id`, that module) authenticated by an X.509
    /// certificate: self-signed and registered by thumbprint, or signed by a CA registered
    /// with the hub (the certificate's common name must be the device id).
    ///
    /// A certificate the hub does not accept fails here with [`ErrorKind::Unauthorized`].
    pub async fn from_x509(
        host_name: &str,
        device_id: &str,
        module_id: Option<&str>,
        certificate: &X509Certificate,
        options: ClientOptions,
    ) -> Result<Self> {
        Self::open(
            host_name,
            host_name,
            identity_of(device_id, module_id)?,
            Credential::X509,
            Some(certificate),
            options,
        )
        .await
    }

    async fn open(
        host_name: &str,
        connect_host: &str,
        identity: Identity,
        credential: Credential,
        certificate: Option<&X509Certificate>,
        options: ClientOptions,
    ) -> Result<Self> {
        let tls = transport::tls_config(options.trusted_ca_pem.as_deref(), certificate)?;
        let session = Session::new(
            identity.clone(),
            host_name,
            options.model_id.clone(),
            options.product_info.as_deref(),
        );
        let resource = match identity.module_id() {
            Some(module) => ResourceUri::module(host_name, identity.device_id(), module),
            None => ResourceUri::device(host_name, identity.device_id()),
        };
        let keep_alive_secs = u16::try_from(options.keep_alive.as_secs()).unwrap_or(u16::MAX);
        let connector = Connector {
            tls,
            host: connect_host.to_owned(),
            port: options.effective_port(),
            transport: options.transport,
            proxy: options.proxy.clone(),
            credential,
            resource,
            token_ttl: options.token_ttl,
            keep_alive_secs,
            timeout: options.operation_timeout,
        };
        let link = connector.connect(&session).await?;
        let (commands_tx, commands_rx) = mpsc::channel(options.max_pending_operations.max(1));
        let (state_tx, state_rx) = watch::channel(ConnectionState::Connected);
        driver::spawn(driver::Parts {
            session,
            connector,
            retry: options.retry_policy.clone(),
            commands: commands_rx,
            link,
            state: state_tx,
        });
        tracing::debug!(client_id = %identity.client_id(), "connected");
        Ok(Self {
            commands: commands_tx,
            state: state_rx,
            identity,
            operation_timeout: options.operation_timeout,
        })
    }

    /// The device (and module) this client is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The connection state now; [`watch_connection_state`](Self::watch_connection_state)
    /// to follow changes.
    pub fn connection_state(&self) -> ConnectionState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every change of the connection state.
    pub fn watch_connection_state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// Sends telemetry (or, for a module with an output name set, a module output message);
    /// returns once the hub acknowledged it (PUBACK).
    ///
    /// A message larger than IoT Hub's 256 KiB limit is refused here, before anything is sent.
    pub async fn send_event(&self, message: Message) -> Result<()> {
        if message.size() > MAX_MESSAGE_SIZE {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "message is {} bytes; IoT Hub accepts at most {MAX_MESSAGE_SIZE}",
                    message.size()
                ),
            ));
        }
        self.call("send_event", |tx| Command::SendEvent(Box::new(message), tx))
            .await
    }

    /// The device's twin (desired and reported properties).
    pub async fn get_twin(&self) -> Result<DeviceTwin> {
        let answer = self.call("get_twin", Command::TwinGet).await?;
        ok_status("twin GET", &answer)?;
        let mut doc: Value = serde_json::from_slice(&answer.body).map_err(|e| {
            Error::with_source(ErrorKind::Protocol, "the twin the hub sent is not JSON", e)
        })?;
        Ok(DeviceTwin {
            desired: doc.get_mut("desired").map(Value::take).unwrap_or_default(),
            reported: doc.get_mut("reported").map(Value::take).unwrap_or_default(),
        })
    }

    /// Patches reported properties with `patch` (a JSON object; `null` removes a property);
    /// returns the new reported-properties version.
    pub async fn update_reported_properties(&self, patch: &Value) -> Result<i64> {
        if !patch.is_object() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a reported-properties patch must be a JSON object",
            ));
        }
        let body = Bytes::from(patch.to_string());
        let answer = self
            .call("update_reported_properties", |tx| {
                Command::PatchReported(body, tx)
            })
            .await?;
        ok_status("reported-properties PATCH", &answer)?;
        answer.version.ok_or_else(|| {
            Error::new(
                ErrorKind::Protocol,
                "the hub accepted the reported patch without saying the new version",
            )
        })
    }

    /// Starts receiving cloud-to-device messages (subscribes on first call). A later call
    /// replaces the stream; the earlier one ends.
    ///
    /// The hub considers a message delivered once the client holds it: drain the stream.
    pub async fn cloud_to_device_messages(&self) -> Result<Incoming<Message>> {
        if self.identity.is_module() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "modules do not receive cloud-to-device messages",
            ));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.call("subscribe", |done| {
            Command::Subscribe(Sink::CloudToDevice(tx), done)
        })
        .await?;
        Ok(Incoming(rx))
    }

    /// Starts receiving desired-property patches (subscribes on first call).
    pub async fn desired_property_patches(&self) -> Result<Incoming<DesiredPatch>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.call("subscribe", |done| {
            Command::Subscribe(Sink::Desired(tx), done)
        })
        .await?;
        Ok(Incoming(rx))
    }

    /// Starts receiving direct method calls (subscribes on first call); answer each with
    /// [`respond_to_method`](Self::respond_to_method).
    pub async fn method_requests(&self) -> Result<Incoming<MethodRequest>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.call("subscribe", |done| {
            Command::Subscribe(Sink::Methods(tx), done)
        })
        .await?;
        Ok(Incoming(rx))
    }

    /// Answers a direct method call.
    pub async fn respond_to_method(&self, response: MethodResponse) -> Result<()> {
        self.call("respond_to_method", |tx| {
            Command::RespondToMethod(response, tx)
        })
        .await
    }

    /// Disconnects (MQTT DISCONNECT) and ends every stream. Operations still waiting fail
    /// with [`ErrorKind::Closed`].
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Close(tx)).await.is_ok() {
            let _ = timeout(self.operation_timeout, rx).await;
        }
    }

    /// Queues a command and waits for its answer, all within the operation timeout.
    async fn call<T>(
        &self,
        what: &'static str,
        command: impl FnOnce(oneshot::Sender<Result<T>>) -> Command,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let work = async {
            self.commands
                .send(command(tx))
                .await
                .map_err(|_| self.gone())?;
            rx.await.map_err(|_| self.gone())?
        };
        timeout(self.operation_timeout, work).await.map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                format!(
                    "{what} did not finish within the operation timeout ({:?})",
                    self.operation_timeout
                ),
            )
        })?
    }

    fn gone(&self) -> Error {
        match &*self.state.borrow() {
            ConnectionState::Disconnected(DisconnectReason::ClosedByUser) => {
                Error::new(ErrorKind::Closed, "the client was closed")
            }
            ConnectionState::Disconnected(DisconnectReason::Unauthorized) => Error::new(
                ErrorKind::Unauthorized,
                "the hub refused the credentials when the client reconnected",
            ),
            ConnectionState::Disconnected(reason) => Error::new(
                ErrorKind::Disconnected,
                format!("the connection to the hub was lost ({reason:?})"),
            ),
            ConnectionState::Connected => Error::new(
                ErrorKind::Disconnected,
                "the connection to the hub was lost",
            ),
        }
    }
}

fn ok_status(what: &str, answer: &TwinAnswer) -> Result<()> {
    if (200..300).contains(&answer.status) {
        return Ok(());
    }
    let detail = String::from_utf8_lossy(&answer.body);
    Err(Error::new(
        ErrorKind::Status(answer.status),
        format!(
            "the hub answered the {what} with {}: {detail}",
            answer.status
        ),
    ))
}

/// A stream of inbound messages of one kind. It ends when the client closes or the
/// connection is lost.
#[derive(Debug)]
pub struct Incoming<T>(mpsc::UnboundedReceiver<T>);

impl<T> Incoming<T> {
    /// The next item, or `None` once the stream has ended.
    pub async fn recv(&mut self) -> Option<T> {
        self.0.recv().await
    }
}

impl<T> Stream for Incoming<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}
