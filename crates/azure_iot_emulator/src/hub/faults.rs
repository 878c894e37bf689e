//! Fault injection for tests: make the hub misbehave the ways a real one does.
//!
//! Faults are per identity. One-shot faults act at once (`DropConnection`) or on the next
//! connects (`RefuseConnects`); session faults (`DelayPubacks`, `WithholdPubacks`,
//! `ThrottleTwin`) last until cleared and reach a live connection at once. `ExpireServiceTokens`
//! is hub-wide: it ends every service AMQP connection's CBS grant. Available in process
//! ([`crate::EmulatorHandle::inject`]) and over HTTPS (`POST /$emulator/faults`).

use std::collections::HashMap;
use std::time::Duration;

use azure_iot_protocol::Identity;
use serde::Deserialize;
use tokio::sync::watch;

use super::HubState;
use super::devices::Push;
use crate::device::RefusalReason;

/// A fault to inject. JSON (for `POST /$emulator/faults`):
/// `{"type": "dropConnection" | "refuseConnects" | "delayPubacks" | "withholdPubacks" |
/// "throttleTwin", "deviceId": "...", "moduleId": "..."?, ...}` with `count` and `reason` (or
/// the MQTT `returnCode`) for `refuseConnects` and `milliseconds` for `delayPubacks`; or
/// `{"type": "expireServiceTokens"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum Fault {
    /// Close the identity's current connection now (the device sees a network drop).
    DropConnection {
        /// The device.
        device_id: String,
        /// The module, for a module identity.
        #[serde(default)]
        module_id: Option<String>,
    },
    /// Refuse the identity's next `count` connection attempts for `reason`; each protocol
    /// answers as it does for that reason (MQTT: CONNACK 3 for `serverUnavailable`, 4 for
    /// `badCredentials`, 5 for `notAuthorized`). JSON: `"reason": "notAuthorized"`, or the MQTT
    /// return code as `"returnCode": 5` (the older form, still accepted).
    RefuseConnects {
        /// The device.
        device_id: String,
        /// The module, for a module identity.
        #[serde(default)]
        module_id: Option<String>,
        /// How many attempts to refuse.
        count: u32,
        /// Why they are refused.
        #[serde(alias = "returnCode")]
        reason: RefusalReason,
    },
    /// Acknowledge each telemetry message `milliseconds` late (until cleared; MQTT: the
    /// PUBACK).
    DelayPubacks {
        /// The device.
        device_id: String,
        /// The module, for a module identity.
        #[serde(default)]
        module_id: Option<String>,
        /// The delay.
        milliseconds: u64,
    },
    /// Log telemetry but never acknowledge it (until cleared).
    WithholdPubacks {
        /// The device.
        device_id: String,
        /// The module, for a module identity.
        #[serde(default)]
        module_id: Option<String>,
    },
    /// Answer twin requests with 429 Too Many Requests (until cleared).
    ThrottleTwin {
        /// The device.
        device_id: String,
        /// The module, for a module identity.
        #[serde(default)]
        module_id: Option<String>,
    },
    /// End every service AMQP connection's CBS grant now, as if its token had expired: its
    /// C2D and feedback links close with `amqp:unauthorized-access` at their next use, until
    /// a fresh token is put. Hub-wide, one-shot; no identity.
    ExpireServiceTokens,
}

impl Fault {
    /// The identity a fault is about; `None` for the hub-wide ones.
    fn identity(&self) -> Option<Identity> {
        let (device, module) = match self {
            Fault::ExpireServiceTokens => return None,
            Fault::DropConnection {
                device_id,
                module_id,
            }
            | Fault::RefuseConnects {
                device_id,
                module_id,
                ..
            }
            | Fault::DelayPubacks {
                device_id,
                module_id,
                ..
            }
            | Fault::WithholdPubacks {
                device_id,
                module_id,
            }
            | Fault::ThrottleTwin {
                device_id,
                module_id,
            } => (device_id, module_id),
        };
        Some(match module {
            Some(m) => Identity::module(device.clone(), m.clone()),
            None => Identity::device(device.clone()),
        })
    }
}

/// The faults a live connection applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SessionFaults {
    pub(crate) puback_delay: Option<Duration>,
    pub(crate) withhold_pubacks: bool,
    pub(crate) throttle_twin: bool,
}

/// All injected faults.
#[derive(Debug)]
pub(crate) struct Faults {
    refuse: HashMap<Identity, (u32, RefusalReason)>,
    sessions: HashMap<Identity, SessionFaults>,
    /// The service grant generation the AMQP front-end compares grants with.
    grant_generation: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            refuse: HashMap::new(),
            sessions: HashMap::new(),
            grant_generation: watch::channel(0).0,
        }
    }
}

impl Faults {
    /// Follows the service grant generation (moved on by `ExpireServiceTokens`).
    pub(crate) fn grant_generation(&self) -> watch::Receiver<u64> {
        self.grant_generation.subscribe()
    }

    /// The session faults of `identity`.
    pub(crate) fn session(&self, identity: &Identity) -> SessionFaults {
        self.sessions.get(identity).cloned().unwrap_or_default()
    }

    /// If the next connect of `identity` is to be refused, why (and one fewer refusals
    /// remain).
    pub(crate) fn take_refusal(&mut self, identity: &Identity) -> Option<RefusalReason> {
        let (left, code) = self.refuse.get_mut(identity)?;
        let code = *code;
        *left -= 1;
        if *left == 0 {
            self.refuse.remove(identity);
        }
        Some(code)
    }
}

impl HubState {
    /// Applies `fault`.
    pub(crate) fn inject(&mut self, fault: Fault) -> Result<(), String> {
        let Some(identity) = fault.identity() else {
            // The hub-wide faults.
            self.faults.grant_generation.send_modify(|g| *g += 1);
            return Ok(());
        };
        match fault {
            Fault::ExpireServiceTokens => return Ok(()),
            Fault::DropConnection { .. } => {
                self.links
                    .close(&identity, "fault injection: connection dropped");
                return Ok(());
            }
            Fault::RefuseConnects { count, reason, .. } => {
                if count > 0 {
                    self.faults.refuse.insert(identity, (count, reason));
                }
                return Ok(());
            }
            Fault::DelayPubacks { milliseconds, .. } => {
                self.faults
                    .sessions
                    .entry(identity.clone())
                    .or_default()
                    .puback_delay = Some(Duration::from_millis(milliseconds));
            }
            Fault::WithholdPubacks { .. } => {
                self.faults
                    .sessions
                    .entry(identity.clone())
                    .or_default()
                    .withhold_pubacks = true;
            }
            Fault::ThrottleTwin { .. } => {
                self.faults
                    .sessions
                    .entry(identity.clone())
                    .or_default()
                    .throttle_twin = true;
            }
        }
        let current = self.faults.session(&identity);
        self.links.push(&identity, Push::Faults(current));
        Ok(())
    }

    /// Clears every fault (of one identity's device, if given).
    pub(crate) fn clear_faults(&mut self, device_id: Option<&str>) {
        let matches = |i: &Identity| device_id.is_none_or(|d| i.device_id() == d);
        self.faults.refuse.retain(|i, _| !matches(i));
        let cleared: Vec<Identity> = self
            .faults
            .sessions
            .keys()
            .filter(|i| matches(i))
            .cloned()
            .collect();
        for identity in cleared {
            self.faults.sessions.remove(&identity);
            self.links
                .push(&identity, Push::Faults(SessionFaults::default()));
        }
    }
}
