//! The Device Provisioning Service (ADR 9): enrollments, enrollment groups, registration
//! records and the registration flow, owned by an actor of its own beside the hub.
//!
//! Front-ends (HTTPS here, MQTT and AMQP in their modules) turn what a device sends into a
//! [`DeviceLogin`] and call [`Dps::authenticate`], [`Dps::register`] and
//! [`Dps::operation_status`]; every DPS rule (attestation, allocation, hub identity, error codes)
//! lives behind those three calls, so the transports cannot disagree.

// The front-ends arrive in steps (HTTPS here, MQTT and AMQP on dps-wire).
#![allow(dead_code)]

mod assign;
mod attestation;
pub(crate) mod certificates;
mod flow;
pub(crate) mod records;
pub(crate) mod state;
mod store;
pub(crate) mod tpm;

pub(crate) use store::DB_FILE as DPS_DB_FILE;
mod webhook;

use azure_iot_protocol::dps::ErrorDetails;
use azure_iot_protocol::dps::registration::OperationStatus;
use rustls_pki_types::CertificateDer;
use std::sync::Arc;

use azure_iot_core::sas::SharedAccessKey;

use crate::actor::Actor;
use crate::error::EmulatorError;
use crate::hub::Hub;
use crate::hub::policy::{Policies, Policy, Rights};
use state::DpsState;

/// Who is registering, as the front-end saw it.
#[derive(Debug, Clone)]
pub(crate) struct DeviceLogin {
    /// The id scope the device named (MQTT user name, HTTPS path, AMQP address).
    pub(crate) id_scope: String,
    /// The registration id the device named.
    pub(crate) registration_id: String,
    /// What it proves itself with.
    pub(crate) credential: DeviceCredential,
}

/// What a device proves itself with.
#[derive(Clone)]
pub(crate) enum DeviceCredential {
    /// A SAS token as sent (`SharedAccessSignature sr=…&sig=…&se=…[&skn=registration]`),
    /// verified over `sr` exactly as it appears in the token.
    SasToken(String),
    /// The TLS client certificate chain, leaf first.
    X509(Vec<CertificateDer<'static>>),
}

impl std::fmt::Debug for DeviceCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SasToken(_) => f.write_str("SasToken(<redacted>)"),
            Self::X509(chain) => write!(f, "X509({} certificates)", chain.len()),
        }
    }
}

/// A successful answer: 200 (final) or 202 (assigning, poll after `retry_after` seconds).
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// 200 or 202.
    pub(crate) status: u16,
    /// The operation status body.
    pub(crate) body: OperationStatus,
    /// Seconds to wait before polling (202 only).
    pub(crate) retry_after: Option<u32>,
}

/// A refused request: HTTP-style status (401, 404, 429, …), DPS's error body, optional retry
/// hint.
#[derive(Debug, Clone)]
pub(crate) struct DpsError {
    /// The HTTP status (front-ends map it to their own form).
    pub(crate) status: u16,
    /// DPS's error body (boxed: results stay small on the success path).
    pub(crate) details: Box<ErrorDetails>,
    /// Seconds to wait before trying again, if the refusal is temporary.
    pub(crate) retry_after: Option<u32>,
}

impl DpsError {
    /// An error with a six-digit DPS code; the status is the code's first three digits.
    pub(crate) fn new(error_code: i64, message: impl Into<String>) -> Self {
        let details = Box::new(ErrorDetails::new(error_code, message));
        Self {
            status: details.http_status().unwrap_or(500),
            details,
            retry_after: None,
        }
    }

    /// 503: what is not finished yet.
    pub(crate) fn not_finished(what: &str) -> Self {
        Self::new(
            503000,
            format!("{what} is not finished in this emulator yet"),
        )
    }
}

impl std::fmt::Display for DpsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.details.message, self.details.error_code)
    }
}

/// A handle on the DPS actor (ADR 9); cheap to clone. `Emulator` owns one; the MQTT and AMQP
/// front-ends receive a clone in their context structs.
#[derive(Clone)]
pub(crate) struct Dps {
    /// The DPS state thread.
    pub(super) actor: Actor<DpsState>,
    /// The linked hub (the emulator's), written through `Hub::call`.
    pub(super) hub: Hub,
    /// Fixed facts about this DPS.
    pub(super) info: Arc<DpsInfo>,
    /// The client custom allocation webhooks are called with (`webhook`).
    pub(super) webhooks: reqwest::Client,
}

/// Fixed facts about the emulator's DPS (decided at start-up).
pub(crate) struct DpsInfo {
    /// The id scope devices name.
    pub(crate) id_scope: String,
    /// The DPS service host name (service API tokens' `sr`, the certificate's names).
    pub(crate) hostname: String,
    /// The linked hub's host name: what devices are assigned to.
    pub(crate) hub_hostname: String,
    /// Seconds a device is told to wait before polling.
    pub(crate) retry_after: u32,
    /// How long a custom allocation webhook may take.
    pub(crate) webhook_timeout: std::time::Duration,
    /// The `provisioningserviceowner` policy (the service API's only one).
    pub(crate) policies: Policies,
}

/// The service API's shared access policy.
pub(crate) const OWNER_POLICY: &str = "provisioningserviceowner";

/// How the DPS starts: what the builder and the data directory decide.
pub(crate) struct DpsOptions {
    /// The DPS service host name.
    pub(crate) hostname: String,
    /// The hub host name devices are assigned to.
    pub(crate) hub_hostname: String,
    /// Seconds a device is told to wait before polling.
    pub(crate) retry_after: u32,
    /// How long a custom allocation webhook may take.
    pub(crate) webhook_timeout: std::time::Duration,
    /// The emulator's CA (PEM): webhook certificates must chain to it.
    pub(crate) ca_pem: String,
}

impl Dps {
    /// Opens `dps.db` (in `dir`, or in memory), creating the id scope and the policy keys on
    /// first start, and starts the DPS state thread. Blocking: run it off the async workers.
    pub(crate) fn start(
        dir: Option<&std::path::Path>,
        durability: crate::config::Durability,
        options: DpsOptions,
        hub: Hub,
    ) -> Result<(Self, std::thread::JoinHandle<()>), EmulatorError> {
        let store = store::DpsStore::open(dir, durability)?;
        let id_scope = match store.meta("id_scope")? {
            Some(scope) => scope,
            None => {
                let scope = new_id_scope()?;
                store.set_meta("id_scope", &scope)?;
                scope
            }
        };
        let mut keys = Vec::new();
        for name in ["owner_primary_key", "owner_secondary_key"] {
            let key = match store.meta(name)? {
                Some(text) => SharedAccessKey::from_base64(&text).map_err(|e| {
                    EmulatorError::Storage(format!("dps.db holds an unreadable {name}: {e}"))
                })?,
                None => {
                    let key = SharedAccessKey::generate()
                        .map_err(|e| EmulatorError::Config(e.to_string()))?;
                    store.set_meta(name, &key.to_base64())?;
                    key
                }
            };
            keys.push(key);
        }
        let (Some(secondary), Some(primary)) = (keys.pop(), keys.pop()) else {
            return Err(EmulatorError::Config(
                "the DPS policy keys are missing".into(),
            ));
        };
        let policies = Policies::new(vec![Policy {
            name: OWNER_POLICY.into(),
            primary,
            secondary,
            rights: Rights::REGISTRY_READ.union(Rights::REGISTRY_WRITE),
        }]);
        let webhooks = webhook::client(&options.ca_pem, options.webhook_timeout)
            .map_err(|e| EmulatorError::Tls(format!("the DPS webhook client: {e}")))?;
        let state = DpsState::load(store)?;
        let (actor, thread) = Actor::spawn("dps-state", state)?;
        let info = Arc::new(DpsInfo {
            id_scope,
            hostname: options.hostname,
            hub_hostname: options.hub_hostname,
            retry_after: options.retry_after,
            webhook_timeout: options.webhook_timeout,
            policies,
        });
        Ok((
            Self {
                actor,
                hub,
                info,
                webhooks,
            },
            thread,
        ))
    }

    /// The DPS id scope (to tell an unknown scope from ours early).
    pub(crate) fn id_scope(&self) -> &str {
        &self.info.id_scope
    }

    /// Fixed facts about this DPS.
    pub(crate) fn info(&self) -> &DpsInfo {
        &self.info
    }

    /// The service connection string of the `provisioningserviceowner` policy. Never log it.
    pub(crate) fn connection_string(&self) -> String {
        let key = self
            .info
            .policies
            .get(OWNER_POLICY)
            .map(|p| p.primary.clone());
        match key {
            Some(key) => azure_iot_core::connection_string::ServiceConnectionString::new(
                self.info.hostname.clone(),
                OWNER_POLICY.to_owned(),
                key,
            )
            .to_secret_string(),
            None => String::new(),
        }
    }
}

/// A new id scope: `0ne` and eight upper-case hex digits, as DPS makes them.
fn new_id_scope() -> Result<String, EmulatorError> {
    let mut bytes = [0u8; 4];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| EmulatorError::Config("the random number generator failed".into()))?;
    Ok(format!(
        "0ne{}",
        bytes.iter().map(|b| format!("{b:02X}")).collect::<String>()
    ))
}
