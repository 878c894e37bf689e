//! The device side of the hub state: live connections, authentication of connecting devices,
//! persistent sessions, direct-method routing, and the twin operations devices perform. The
//! device core (`crate::device`) is its only caller; front-ends go through that core.
//!
//! The device core registers each authenticated connection as a
//! [`DeviceLink`]: a connection id and a channel the hub pushes desired-property patches into.
//! Only one link per identity exists: a new connection replaces the old one, whose push
//! channel is dropped, which is how the old connection learns it must close (IoT Hub's
//! "ConnectionForcefullyClosedOnNewConnection").

use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use azure_iot_core::sas::{SasError, SasToken, SharedAccessKey};
use azure_iot_protocol::Identity;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::HubState;
use super::c2d::C2dDelivery;
use super::error::HubError;
use super::faults::SessionFaults;
use super::identity::{AuthType, Status};
use super::methods::MethodCall;
use super::policy::Rights;
use super::state::now;
use crate::device::{Feature, Refusal};

/// Something the hub pushes to a connected device.
#[derive(Debug)]
pub(crate) enum Push {
    /// A desired-properties patch, including `"$version"`.
    DesiredPatch(Value),
    /// A cloud-to-device message, locked to this connection until it is completed.
    CloudToDevice(Box<C2dDelivery>),
    /// The faults the connection must apply from now on.
    Faults(SessionFaults),
    /// Close the connection, for this reason.
    Close(String),
}

/// A live connection of one identity.
pub(crate) struct DeviceLink {
    pub(crate) connection: u64,
    pushes: mpsc::Sender<Push>,
    desired: bool,
}

/// Either a method target now, or a receiver that yields one when the identity subscribes.
pub(crate) enum MethodTarget {
    Ready(mpsc::Sender<MethodCall>),
    Wait(oneshot::Receiver<mpsc::Sender<MethodCall>>),
}

/// What a successful authentication grants.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    /// When the credential expires (the connection is closed then).
    pub(crate) expires_at: Option<SystemTime>,
    /// `sas` or `x509Certificate`, stamped on telemetry.
    pub(crate) auth_method: &'static str,
}

/// Connection state of every identity.
#[derive(Default)]
pub(crate) struct Links {
    live: HashMap<Identity, DeviceLink>,
    next_connection: u64,
    /// What persistent sessions (MQTT clean session 0) asked for, kept between connections.
    sessions: HashMap<Identity, BTreeSet<Feature>>,
    method_targets: HashMap<Identity, mpsc::Sender<MethodCall>>,
    method_waiters: HashMap<Identity, Vec<oneshot::Sender<mpsc::Sender<MethodCall>>>>,
    /// Connection-state and last-activity times (runtime only, like the connection state).
    activity: HashMap<Identity, Activity>,
}

/// When an identity's connection state last changed, and when it was last active
/// (connected, sent, or disconnected), as ISO 8601 timestamps.
#[derive(Debug, Clone, Default)]
pub(crate) struct Activity {
    pub(crate) state_changed: Option<String>,
    pub(crate) last: Option<String>,
}

impl Links {
    /// The identity's activity times, if it ever connected since the emulator started.
    pub(super) fn activity(&self, identity: &Identity) -> Option<&Activity> {
        self.activity.get(identity)
    }

    /// Records activity of a connected identity (telemetry).
    pub(super) fn touch(&mut self, identity: &Identity) {
        if self.live.contains_key(identity) {
            self.activity.entry(identity.clone()).or_default().last = Some(super::state::now());
        }
    }

    pub(super) fn is_connected(&self, identity: &Identity) -> bool {
        self.live.contains_key(identity)
    }

    pub(super) fn connected_devices(&self) -> usize {
        let devices: std::collections::HashSet<&str> =
            self.live.keys().map(Identity::device_id).collect();
        devices.len()
    }

    /// Drops everything about a deleted identity; its connection closes.
    pub(super) fn forget(&mut self, identity: &Identity) {
        self.activity.remove(identity);
        self.live.remove(identity);
        self.sessions.remove(identity);
        self.method_targets.remove(identity);
    }

    /// [`forget`](Self::forget) for a device and all its modules.
    pub(super) fn forget_device(&mut self, device_id: &str) {
        let doomed: Vec<Identity> = self
            .live
            .keys()
            .chain(self.sessions.keys())
            .chain(self.method_targets.keys())
            .filter(|i| i.device_id() == device_id)
            .cloned()
            .collect();
        for identity in doomed {
            self.forget(&identity);
        }
    }

    pub(super) fn push_desired(&mut self, identity: &Identity, patch: Value) {
        if self.live.get(identity).is_some_and(|l| l.desired) {
            self.push(identity, Push::DesiredPatch(patch));
        }
    }

    /// Closes the identity's live connection, if any.
    pub(super) fn close(&mut self, identity: &Identity, reason: &str) {
        if let Some(link) = self.live.remove(identity) {
            // If the channel is full the dropped sender closes the connection all the same.
            let _ = link.pushes.try_send(Push::Close(reason.to_owned()));
            self.method_targets.remove(identity);
        }
    }

    /// [`close`](Self::close) for a device and all its modules.
    pub(super) fn close_device(&mut self, device_id: &str, reason: &str) {
        let live: Vec<Identity> = self
            .live
            .keys()
            .filter(|i| i.device_id() == device_id)
            .cloned()
            .collect();
        for identity in live {
            self.close(&identity, reason);
        }
    }

    /// Hands `push` to the identity's live connection, if any.
    pub(super) fn push(&mut self, identity: &Identity, push: Push) {
        let Some(link) = self.live.get(identity) else {
            return;
        };
        if link.pushes.try_send(push).is_err() {
            // A device that does not drain its pushes is disconnected rather than buffered
            // without bound; it gets the current twin when it reconnects.
            tracing::info!(%identity, "device is not keeping up with what the hub sends it; closing its connection");
            self.live.remove(identity);
        }
    }

    pub(super) fn method_target(&mut self, identity: Identity) -> MethodTarget {
        if let Some(target) = self
            .method_targets
            .get(&identity)
            .filter(|t| !t.is_closed())
        {
            return MethodTarget::Ready(target.clone());
        }
        let (tx, rx) = oneshot::channel();
        let waiters = self.method_waiters.entry(identity).or_default();
        waiters.retain(|w| !w.is_closed());
        waiters.push(tx);
        MethodTarget::Wait(rx)
    }
}

impl HubState {
    /// The registry generation id of a device or module, if it is registered (what the
    /// Event Hubs-compatible endpoint stamps as `iothub-connection-auth-generation-id`).
    pub(crate) fn generation_id(&self, device_id: &str, module_id: Option<&str>) -> Option<String> {
        self.record(device_id, module_id)
            .ok()
            .map(|r| r.generation_id.clone())
    }

    /// Checks a connecting identity's credentials: a SAS token (the password) signed with the
    /// identity's own key or with a policy that grants DeviceConnect, unexpired, whose resource
    /// covers the identity on `hostname`; or, without a password, the TLS client certificate
    /// (DER) whose thumbprint the identity registered.
    pub(crate) fn authenticate_device(
        &mut self,
        identity: &Identity,
        hostname: &str,
        password: Option<&str>,
        client_chain: &[rustls_pki_types::CertificateDer<'static>],
        now: SystemTime,
    ) -> Result<Grant, Refusal> {
        if let Some(reason) = self.faults.take_refusal(identity) {
            return Err(Refusal {
                reason,
                detail: "fault injection: connect refused".into(),
            });
        }
        let record = self
            .record(identity.device_id(), identity.module_id())
            .map_err(|_| Refusal::not_authorized(format!("{identity} is not registered")))?;
        let device_enabled = self
            .record(identity.device_id(), None)
            .map(|d| d.status == Status::Enabled)
            .unwrap_or(false);
        if !device_enabled {
            return Err(Refusal::not_authorized(format!(
                "device {} is disabled",
                identity.device_id()
            )));
        }
        let Some(password) = password.filter(|p| !p.is_empty()) else {
            if client_chain.is_empty() {
                return Err(Refusal::not_authorized(
                    "neither a SAS token (password) nor a client certificate was presented",
                ));
            }
            let credentials = record.credentials.clone();
            return self.authenticate_certificate(identity, &credentials, client_chain);
        };
        let token = SasToken::parse(password).map_err(|e| {
            Refusal::not_authorized(format!("the password is not a SAS token: {e}"))
        })?;
        let keys: Vec<SharedAccessKey> = match token.key_name() {
            Some(name) => {
                let policy = self.policies().get(name).ok_or_else(|| {
                    Refusal::not_authorized(format!("no shared access policy named `{name}`"))
                })?;
                if !policy.rights.contains(Rights::DEVICE_CONNECT) {
                    return Err(Refusal::not_authorized(format!(
                        "policy `{name}` does not grant DeviceConnect"
                    )));
                }
                vec![policy.primary.clone(), policy.secondary.clone()]
            }
            None => {
                if record.credentials.auth_type != AuthType::Sas {
                    return Err(Refusal::not_authorized(format!(
                        "{identity} authenticates with {}, not a SAS key",
                        record.credentials.auth_type.as_str()
                    )));
                }
                [
                    &record.credentials.primary_key,
                    &record.credentials.secondary_key,
                ]
                .into_iter()
                .flatten()
                .filter_map(|k| SharedAccessKey::from_base64(k).ok())
                .collect()
            }
        };
        token.verify(keys.iter(), now).map_err(|e| match e {
            SasError::Expired { .. } => Refusal::not_authorized("the SAS token has expired"),
            _ => Refusal::not_authorized("the SAS token signature does not match"),
        })?;
        token
            .check_covers_identity(hostname, identity.device_id(), identity.module_id())
            .map_err(|_| {
                Refusal::not_authorized(format!("the SAS token does not cover {identity}"))
            })?;
        Ok(Grant {
            expires_at: Some(token.expires_at()),
            auth_method: "sas",
        })
    }

    /// Registers a new connection of `identity`, replacing (and so closing) any older one.
    /// Returns the connection id, whether a session was kept (clean session 0), and that
    /// session's subscriptions.
    pub(crate) fn connect_device(
        &mut self,
        identity: Identity,
        pushes: mpsc::Sender<Push>,
        clean_session: bool,
    ) -> (u64, bool, BTreeSet<Feature>) {
        self.links.next_connection += 1;
        let connection = self.links.next_connection;
        let replaced = self.links.live.remove(&identity);
        if replaced.is_some() {
            // The old connection ends: IoT Hub reports it before the new one.
            self.emit_connection(&identity, false);
        }
        if let Some(old) = replaced {
            tracing::info!(%identity, "a new connection replaces the existing one");
            // The old connection's cloud-to-device locks end now, not when its task gets round
            // to closing: the new connection's subscription must find those messages.
            if !identity.is_module() {
                self.release_c2d(identity.device_id(), old.connection);
            }
        }
        self.links.method_targets.remove(&identity);
        let kept = if clean_session {
            self.links.sessions.remove(&identity);
            None
        } else {
            self.links.sessions.get(&identity).cloned()
        };
        let at = super::state::now();
        let activity = self.links.activity.entry(identity.clone()).or_default();
        activity.state_changed = Some(at.clone());
        activity.last = Some(at);
        self.emit_connection(&identity, true);
        self.links.live.insert(
            identity,
            DeviceLink {
                connection,
                pushes,
                desired: false,
            },
        );
        let present = kept.is_some();
        (connection, present, kept.unwrap_or_default())
    }

    /// Records that `identity` just sent something.
    pub(crate) fn touch_device(&mut self, identity: &Identity) {
        self.links.touch(identity);
    }

    /// The injected faults a connection of `identity` applies.
    pub(crate) fn session_faults(&self, identity: &Identity) -> SessionFaults {
        self.faults.session(identity)
    }

    /// Forgets a connection (if it is still the identity's current one).
    pub(crate) fn disconnect_device(
        &mut self,
        identity: &Identity,
        connection: u64,
        clean_session: bool,
    ) {
        if self
            .links
            .live
            .get(identity)
            .is_some_and(|l| l.connection == connection)
        {
            self.links.live.remove(identity);
            self.links.method_targets.remove(identity);
            let at = super::state::now();
            let activity = self.links.activity.entry(identity.clone()).or_default();
            activity.state_changed = Some(at.clone());
            activity.last = Some(at);
            if clean_session {
                self.links.sessions.remove(identity);
            }
            self.emit_connection(identity, false);
        }
    }

    /// Records what a live connection of a persistent session asked for (kept across
    /// reconnects).
    pub(crate) fn save_subscriptions(
        &mut self,
        identity: &Identity,
        connection: u64,
        features: BTreeSet<Feature>,
    ) {
        if self.is_current(identity, connection) {
            self.links.sessions.insert(identity.clone(), features);
        }
    }

    fn is_current(&self, identity: &Identity, connection: u64) -> bool {
        self.links
            .live
            .get(identity)
            .is_some_and(|l| l.connection == connection)
    }

    /// Turns desired-property patches on or off for a live connection.
    pub(crate) fn subscribe_desired(&mut self, identity: &Identity, connection: u64, on: bool) {
        if let Some(link) = self
            .links
            .live
            .get_mut(identity)
            .filter(|l| l.connection == connection)
        {
            link.desired = on;
        }
    }

    /// A device front-end reports that `identity` now receives method calls on `target`.
    pub(crate) fn subscribe_methods(
        &mut self,
        identity: Identity,
        target: mpsc::Sender<MethodCall>,
    ) {
        if let Some(waiters) = self.links.method_waiters.remove(&identity) {
            for waiter in waiters {
                let _ = waiter.send(target.clone());
            }
        }
        self.links.method_targets.insert(identity, target);
    }

    /// Whether an invocation is waiting for `identity` to subscribe to methods.
    #[cfg(test)]
    pub(crate) fn pending_method_waiters(&self, identity: &Identity) -> bool {
        self.links
            .method_waiters
            .get(identity)
            .is_some_and(|w| w.iter().any(|w| !w.is_closed()))
    }

    /// The twin as a device sees it: `{"desired": {...}, "reported": {...}}` with `$version`s.
    pub(crate) fn device_twin(&self, identity: &Identity) -> Result<Value, HubError> {
        let record = self.record(identity.device_id(), identity.module_id())?;
        Ok(record.twin.properties_json(false))
    }

    /// A device's reported-properties patch. Returns the new reported version.
    pub(crate) fn patch_reported(
        &mut self,
        identity: &Identity,
        patch: &Value,
    ) -> Result<i64, HubError> {
        let mut record = self
            .record(identity.device_id(), identity.module_id())?
            .clone();
        let version = record.twin.patch_reported(patch, &now())?;
        let routed = self
            .routes(crate::telemetry::MessageSource::TwinChangeEvents)
            .then(|| record.clone());
        self.save(record)?;
        if let (Some(record), Value::Object(written)) = (routed, patch) {
            self.emit_twin_change(
                &record,
                super::routed::TwinOp::Update,
                None,
                Some(("reported", written)),
            );
        }
        // Target conditions may read reported properties.
        self.reconcile_twin(identity.device_id(), identity.module_id());
        Ok(version)
    }

    /// Records the Plug and Play model id a device declared when it connected.
    pub(crate) fn set_model_id(
        &mut self,
        identity: &Identity,
        model_id: &str,
    ) -> Result<(), HubError> {
        let record = self.record(identity.device_id(), identity.module_id())?;
        if record.twin.model_id == model_id {
            return Ok(());
        }
        let mut record = record.clone();
        record.twin.model_id = model_id.to_owned();
        self.save(record)
    }
}
