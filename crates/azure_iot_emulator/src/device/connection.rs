//! One authenticated device connection as the hub sees it, whatever protocol carries it.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::time::{Duration, SystemTime};

use azure_iot_core::message::Message;
use azure_iot_core::method::{DirectMethodResponse, json_or_null};
use azure_iot_protocol::Identity;
use azure_iot_protocol::request_id::RequestIdGenerator;
use futures_util::FutureExt;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{DeviceCore, Feature, Refusal};
use crate::hub::c2d::C2dDelivery;
use crate::hub::devices::{Grant, Push};
use crate::hub::error::{ErrorCode, HubError};
use crate::hub::faults::SessionFaults;
use crate::hub::methods::MethodCall;
use crate::hub::queue::{Lock, Settle};
use crate::hub::state::now;

/// Hub pushes buffered per connection before a slow device is disconnected.
const PUSH_CAPACITY: usize = 64;
/// Method calls buffered per connection.
const METHOD_CAPACITY: usize = 64;
/// How fresh `lastActivityTime` is kept while a device sends.
const ACTIVITY_RESOLUTION: Duration = Duration::from_secs(1);

/// A telemetry message on its way into the durable log.
pub(crate) struct Commit {
    durable: oneshot::Receiver<Result<u64, String>>,
    acknowledge: Acknowledge,
}

/// When the front-end acknowledges a durable message (injected faults change it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acknowledge {
    /// At once.
    Now,
    /// After this delay.
    After(Duration),
    /// Never (the device will resend it).
    Never,
}

impl Commit {
    /// Resolves once the message is durable; an error (for the log) means it never will be,
    /// and must not be acknowledged. Cancel-safe.
    pub(crate) async fn durable(&mut self) -> Result<(), String> {
        match (&mut self.durable).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("the telemetry log could not store a message: {e}")),
            Err(_) => Err("the telemetry log is gone".into()),
        }
    }

    /// When to acknowledge the message once it is durable.
    pub(crate) fn acknowledge(&self) -> Acknowledge {
        self.acknowledge
    }
}

/// Something the hub sends the device.
#[derive(Debug)]
pub(crate) enum Event {
    /// A desired-properties patch with its `$version`.
    DesiredPatch {
        /// The patch's `$version`.
        version: i64,
        /// The patch, JSON.
        body: Vec<u8>,
    },
    /// A cloud-to-device message, locked to this connection until it is settled.
    CloudToDevice(Box<C2dDelivery>),
    /// A direct-method invocation; answer it with [`DeviceConnection::answer_method`].
    MethodRequest {
        /// The method's name.
        name: String,
        /// Names the invocation in the answer.
        request_id: String,
        /// The JSON payload.
        payload: Vec<u8>,
    },
    /// The hub ends the connection (replaced, identity deleted or disabled, fault injected).
    Close(String),
}

/// One live connection of a device or module.
pub(crate) struct DeviceConnection {
    core: DeviceCore,
    identity: Identity,
    connection: u64,
    auth_method: &'static str,
    expires_at: Option<SystemTime>,
    persistent: bool,
    session_present: bool,
    /// Features kept from the previous connection of a persistent session.
    resumed: BTreeSet<Feature>,
    features: BTreeSet<Feature>,
    pushes: mpsc::Receiver<Push>,
    methods: Option<mpsc::Receiver<MethodCall>>,
    pending_methods: HashMap<String, oneshot::Sender<DirectMethodResponse>>,
    request_ids: RequestIdGenerator,
    faults: SessionFaults,
    last_touch: Option<Instant>,
}

impl DeviceConnection {
    /// Registers an authenticated connection with the hub.
    pub(super) async fn register(
        core: DeviceCore,
        identity: Identity,
        grant: Grant,
        persistent: bool,
    ) -> Result<Self, Refusal> {
        let (push_tx, pushes) = mpsc::channel(PUSH_CAPACITY);
        let who = identity.clone();
        let (connection, session_present, resumed, faults) = core
            .hub
            .call(move |s| {
                let (connection, present, kept) =
                    s.connect_device(who.clone(), push_tx, !persistent);
                (connection, present, kept, s.session_faults(&who))
            })
            .await
            .map_err(|_| Refusal::unavailable())?;
        Ok(Self {
            core,
            identity,
            connection,
            auth_method: grant.auth_method,
            expires_at: grant.expires_at,
            persistent,
            session_present,
            resumed,
            features: BTreeSet::new(),
            pushes,
            methods: None,
            pending_methods: HashMap::new(),
            request_ids: RequestIdGenerator::new(),
            faults,
            last_touch: None,
        })
    }

    /// Whether the hub kept a session from an earlier connection (MQTT's session present).
    pub(crate) fn session_present(&self) -> bool {
        self.session_present
    }

    /// The features the kept session had; the front-end resumes them with
    /// [`subscribe`](Self::subscribe).
    pub(crate) fn resumed_features(&self) -> BTreeSet<Feature> {
        self.resumed.clone()
    }

    /// When the credential expires; the front-end closes the connection then.
    pub(crate) fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// Accepts a telemetry message: the hub stamps who sent it and how it authenticated, and
    /// when; the returned [`Commit`] resolves once the message is durable in the log. Waits
    /// while the log's queue is full (back-pressure to this connection).
    ///
    /// Not an `async fn`: the message (about 570 bytes) moves straight into the log's future
    /// instead of also staying in this one's arguments, and every connection's serve loop
    /// reserves room for this future even while it is idle.
    ///
    /// `typed`: the application properties with their AMQP types (an AMQP device's), stored in
    /// place of the message's text ones.
    pub(crate) fn send_telemetry(
        &mut self,
        message: Message,
        typed: Option<Vec<(String, crate::telemetry::PropertyValue)>>,
    ) -> impl Future<Output = Commit> + '_ {
        let (reply, committed) = oneshot::channel();
        let Self {
            core,
            identity,
            auth_method,
            faults,
            last_touch,
            ..
        } = self;
        // Shared from here on: the log's future borrows the core while this one runs.
        let (core, identity, faults): (&DeviceCore, &Identity, &SessionFaults) =
            (core, identity, faults);
        let stamp = crate::telemetry::Stamp {
            device_id: identity.device_id().to_owned(),
            module_id: identity.module_id().map(str::to_owned),
            auth_method,
            enqueued_time: now(),
        };
        let append = core.telemetry.append_typed(stamp, message, typed, reply);
        // `map`, not an async block awaiting `append`: the block would keep a second,
        // moved-from slot for the log's 1.6 KiB future.
        append.map(move |()| {
            // lastActivityTime: at most one state-thread job a second, not one a message, and
            // nothing waits for it.
            if last_touch.is_none_or(|at| at.elapsed() >= ACTIVITY_RESOLUTION) {
                *last_touch = Some(Instant::now());
                let who = identity.clone();
                core.hub.tell(move |s| s.touch_device(&who));
            }
            let acknowledge = match (faults.withhold_pubacks, faults.puback_delay) {
                (true, _) => Acknowledge::Never,
                (false, Some(delay)) => Acknowledge::After(delay),
                (false, None) => Acknowledge::Now,
            };
            Commit {
                durable: committed,
                acknowledge,
            }
        })
    }

    /// The twin as the device sees it (`{"desired": …, "reported": …}`), JSON.
    pub(crate) async fn get_twin(&self) -> Result<Vec<u8>, HubError> {
        self.check_twin_throttle()?;
        let who = self.identity.clone();
        let twin = self
            .core
            .hub
            .call(move |s| s.device_twin(&who))
            .await
            .map_err(|_| shutting_down())??;
        Ok(twin.to_string().into_bytes())
    }

    /// Applies a reported-properties patch (JSON); returns the new reported `$version`.
    pub(crate) async fn patch_reported(&self, patch: &[u8]) -> Result<i64, HubError> {
        self.check_twin_throttle()?;
        let patch: Value = serde_json::from_slice(patch)
            .map_err(|e| HubError::invalid(format!("the reported patch is not JSON: {e}")))?;
        let who = self.identity.clone();
        self.core
            .hub
            .call(move |s| s.patch_reported(&who, &patch))
            .await
            .map_err(|_| shutting_down())?
    }

    fn check_twin_throttle(&self) -> Result<(), HubError> {
        if self.faults.throttle_twin {
            return Err(HubError::new(
                ErrorCode::Throttled,
                "fault injection: twin requests are throttled",
            ));
        }
        Ok(())
    }

    /// The device's answer to method request `request_id`: status and payload (JSON, or
    /// text the hub passes on as a JSON string). An answer for no pending call (late, or
    /// unknown) is dropped, as the hub does.
    pub(crate) fn answer_method(&mut self, request_id: &str, status: i32, payload: &[u8]) {
        if let Some(reply) = self.pending_methods.remove(request_id) {
            let payload = json_or_null(payload)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()));
            let _ = reply.send(DirectMethodResponse::new(status, payload));
        } else {
            tracing::debug!(identity = %self.identity, %request_id, "method response for no pending call (late or unknown); dropped");
        }
    }

    /// Turns `feature` on or off. Turning cloud-to-device messages on returns the messages
    /// waiting, now locked to this connection.
    pub(crate) async fn subscribe(&mut self, feature: Feature, on: bool) -> Vec<C2dDelivery> {
        let changed = if on {
            self.features.insert(feature)
        } else {
            self.features.remove(&feature)
        };
        let who = self.identity.clone();
        let connection = self.connection;
        let mut deliveries = Vec::new();
        match feature {
            Feature::CloudToDevice if changed => {
                let device = who.device_id().to_owned();
                deliveries = self
                    .core
                    .hub
                    .call(move |s| s.subscribe_c2d(&device, connection, on))
                    .await
                    .unwrap_or_default();
            }
            Feature::DesiredPatches if changed => {
                let _ = self
                    .core
                    .hub
                    .call(move |s| s.subscribe_desired(&who, connection, on))
                    .await;
            }
            Feature::Methods if changed && on => {
                let (tx, rx) = mpsc::channel(METHOD_CAPACITY);
                self.methods = Some(rx);
                let _ = self
                    .core
                    .hub
                    .call(move |s| s.subscribe_methods(who, tx))
                    .await;
            }
            // Dropping the receiver closes the hub's target for this connection.
            Feature::Methods if changed => self.methods = None,
            _ => {}
        }
        if changed && self.persistent {
            let features = self.features.clone();
            let who = self.identity.clone();
            let _ = self
                .core
                .hub
                .call(move |s| s.save_subscriptions(&who, connection, features))
                .await;
        }
        deliveries
    }

    /// Settles a cloud-to-device message this connection received: complete, abandon or
    /// reject. Fails with `DeviceMessageLockLost` if the message is not locked to it.
    pub(crate) async fn settle_c2d(&self, id: u64, settle: Settle) -> Result<(), HubError> {
        let device = self.identity.device_id().to_owned();
        let lock = Lock::Connection(self.connection);
        self.core
            .hub
            .call(move |s| s.settle_c2d(&device, &lock, Some(id), settle))
            .await
            .map_err(|_| shutting_down())?
    }

    /// The next thing the hub sends this connection. Cancel-safe: use it in `select!`.
    pub(crate) async fn next_event(&mut self) -> Event {
        loop {
            tokio::select! {
                push = self.pushes.recv() => match push {
                    Some(Push::DesiredPatch(patch)) => {
                        let version = patch.get("$version").and_then(Value::as_i64).unwrap_or_default();
                        return Event::DesiredPatch { version, body: patch.to_string().into_bytes() };
                    }
                    Some(Push::CloudToDevice(delivery)) => return Event::CloudToDevice(delivery),
                    Some(Push::Faults(faults)) => self.faults = faults,
                    Some(Push::Close(reason)) => return Event::Close(reason),
                    None => return Event::Close("replaced by a new connection of the same identity (or the identity was deleted)".into()),
                },
                call = next_method(&mut self.methods) => match call {
                    Some(call) => {
                        let request_id = self.request_ids.next_id();
                        self.pending_methods.retain(|_, reply| !reply.is_closed());
                        self.pending_methods.insert(request_id.clone(), call.reply);
                        return Event::MethodRequest {
                            name: call.method_name,
                            request_id,
                            payload: call.payload.to_string().into_bytes(),
                        };
                    }
                    None => self.methods = None,
                },
            }
        }
    }

    /// Ends the connection: its locked cloud-to-device messages are delivered again later,
    /// and a persistent session keeps its features for the next connection.
    pub(crate) async fn close(self) {
        let who = self.identity.clone();
        let connection = self.connection;
        let persistent = self.persistent;
        let _ = self
            .core
            .hub
            .call(move |s| {
                s.release_c2d(who.device_id(), connection);
                s.disconnect_device(&who, connection, !persistent);
            })
            .await;
    }
}

/// The body of a twin error answer that every SDK can read (Node needs a non-zero
/// `errorCode`).
pub(crate) fn twin_error_body(error: &HubError) -> Vec<u8> {
    json!({
        "errorCode": error.code.number(),
        "message": error.message,
        "trackingId": "",
        "timestampUtc": now(),
    })
    .to_string()
    .into_bytes()
}

/// The error of a request the state thread did not answer (the hub is stopping).
pub(super) fn shutting_down() -> HubError {
    HubError::new(ErrorCode::ServerError, "the hub is shutting down")
}

async fn next_method(methods: &mut Option<mpsc::Receiver<MethodCall>>) -> Option<MethodCall> {
    match methods {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
