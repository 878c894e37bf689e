//! The device core: what IoT Hub does for a connected device or module, whatever protocol
//! carried it there.
//!
//! Every device front-end (MQTT now; AMQP and HTTPS next) is a codec and flow adapter over
//! this module. The front-end decodes its wire form, calls the core, and encodes the answer;
//! the IoT Hub rules live here, once:
//!
//! ```text
//!  front-end (mqtt/, later amqp/, http/)            device core (this module)
//!  ─────────────────────────────────────            ─────────────────────────────────────────
//!  CONNECT / SASL / HTTP auth ── DeviceCore::open ─▶ authenticate (SAS key, policy token,
//!      ◀── DeviceConnection or Refusal ───────────   X.509), register the live connection
//!  telemetry ────────────────── send_telemetry ───▶ stamp system properties, durable log,
//!      ◀── Commit (resolves once durable) ────────   activity; injected ack faults
//!  twin GET / PATCH reported ── get_twin/patch ───▶ twin rules, error bodies, throttling
//!  method answer ────────────── answer_method ────▶ route to the waiting invocation
//!  subscribe / unsubscribe ──── subscribe ────────▶ C2D locks, desired pushes, method target
//!  settle C2D ───────────────── settle_c2d ───────▶ complete / abandon / reject on the queue
//!      ◀── Event (desired patch, C2D message, method request, close) ── next_event
//!  socket ends ──────────────── close ────────────▶ release locks, keep a persistent session
//! ```
//!
//! A refusal is neutral ([`RefusalReason`]); each front-end maps it to its own wire form (an
//! MQTT CONNACK code, `amqp:unauthorized-access`, HTTP 401/403). Hub state never sees a topic
//! filter or a return code: a connection's subscriptions are [`Feature`]s.

mod connection;
mod request;

pub(crate) use connection::{Acknowledge, Commit, DeviceConnection, Event, twin_error_body};

use std::sync::Arc;
use std::time::SystemTime;

use azure_iot_protocol::Identity;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Deserializer};

use crate::hub::Hub;
pub(crate) use crate::hub::devices::Grant;
use crate::telemetry::TelemetryLog;

/// What a connection can ask the hub to send it. A persistent session (MQTT clean session 0)
/// keeps its features between connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Feature {
    /// Cloud-to-device messages (devices only).
    CloudToDevice,
    /// Messages routed to a module's inputs (modules only).
    ModuleInputs,
    /// Answers to twin requests.
    TwinResponses,
    /// Desired-property patches.
    DesiredPatches,
    /// Direct-method requests.
    Methods,
}

/// Why a device may not connect, in words every protocol can express.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalReason {
    /// The client speaks a protocol version the hub does not (MQTT return code 1).
    UnsupportedProtocol,
    /// The client or identity id is malformed (MQTT 2).
    IdentifierRejected,
    /// The hub cannot serve the connection now (MQTT 3, AMQP `amqp:internal-error`, HTTP 503).
    ServerUnavailable,
    /// The credentials are malformed (MQTT 4, HTTP 401).
    BadCredentials,
    /// The credentials do not grant this identity (MQTT 5, AMQP `amqp:unauthorized-access`,
    /// HTTP 401).
    NotAuthorized,
}

impl RefusalReason {
    /// The camel-case name used in the fault API's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnsupportedProtocol => "unsupportedProtocol",
            Self::IdentifierRejected => "identifierRejected",
            Self::ServerUnavailable => "serverUnavailable",
            Self::BadCredentials => "badCredentials",
            Self::NotAuthorized => "notAuthorized",
        }
    }

    /// The reason an MQTT CONNACK return code (1 to 5) stands for; the fault API keeps
    /// accepting those numbers.
    pub fn from_mqtt_return_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::UnsupportedProtocol,
            2 => Self::IdentifierRejected,
            3 => Self::ServerUnavailable,
            4 => Self::BadCredentials,
            5 => Self::NotAuthorized,
            _ => return None,
        })
    }

    fn from_name(name: &str) -> Option<Self> {
        [
            Self::UnsupportedProtocol,
            Self::IdentifierRejected,
            Self::ServerUnavailable,
            Self::BadCredentials,
            Self::NotAuthorized,
        ]
        .into_iter()
        .find(|r| r.as_str().eq_ignore_ascii_case(name))
    }
}

impl<'de> Deserialize<'de> for RefusalReason {
    /// A name (`"notAuthorized"`) or, for existing users of the fault API, an MQTT CONNACK
    /// return code (`5`).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Name(String),
            Code(u8),
        }
        match Wire::deserialize(deserializer)? {
            Wire::Name(name) => Self::from_name(&name).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown refusal reason `{name}`: expected unsupportedProtocol, identifierRejected, serverUnavailable, badCredentials or notAuthorized"
                ))
            }),
            Wire::Code(code) => Self::from_mqtt_return_code(code).ok_or_else(|| {
                serde::de::Error::custom("an MQTT CONNACK refusal code must be 1 to 5")
            }),
        }
    }
}

/// A refused connection: the reason, and words for the log (never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) reason: RefusalReason,
    pub(crate) detail: String,
}

impl Refusal {
    /// The credentials do not grant the identity.
    pub(crate) fn not_authorized(detail: impl Into<String>) -> Self {
        Self {
            reason: RefusalReason::NotAuthorized,
            detail: detail.into(),
        }
    }

    /// The hub cannot serve the connection (it is shutting down).
    pub(crate) fn unavailable() -> Self {
        Self {
            reason: RefusalReason::ServerUnavailable,
            detail: "the hub is shutting down".into(),
        }
    }
}

/// What a connecting device presents.
pub(crate) struct OpenRequest {
    /// The device or module.
    pub(crate) identity: Identity,
    /// A SAS token, if the protocol carried one (MQTT password, CBS put-token, HTTP header).
    pub(crate) sas_token: Option<String>,
    /// The TLS client certificate chain, leaf first (empty if none).
    pub(crate) certificates: Vec<CertificateDer<'static>>,
    /// Keep subscriptions and undelivered messages' routing when the connection ends (MQTT
    /// clean session 0).
    pub(crate) persistent: bool,
    /// The Plug and Play model id the device declared.
    pub(crate) model_id: Option<String>,
}

/// The device core's handle on the hub: cheap to clone, one per front-end or connection.
#[derive(Clone)]
pub(crate) struct DeviceCore {
    pub(crate) hub: Hub,
    pub(crate) telemetry: TelemetryLog,
    /// The hub's host name, which SAS tokens must name.
    pub(crate) hostname: Arc<str>,
}

impl DeviceCore {
    /// Authenticates `request` and registers the connection, replacing (and so closing) any
    /// older connection of the same identity.
    pub(crate) async fn open(&self, request: OpenRequest) -> Result<DeviceConnection, Refusal> {
        let OpenRequest {
            identity,
            sas_token,
            certificates,
            persistent,
            model_id,
        } = request;
        let grant = self
            .authenticate(&identity, sas_token.as_deref(), &certificates)
            .await?;
        self.register(identity, grant, persistent, model_id).await
    }

    /// Checks that a SAS token or client certificate chain grants `identity` (registered,
    /// enabled, signature and expiry, or certificate thumbprint or CA), without connecting
    /// it: for protocols that authenticate before they connect (an AMQP CBS put-token).
    pub(crate) async fn authenticate(
        &self,
        identity: &Identity,
        sas_token: Option<&str>,
        certificates: &[CertificateDer<'static>],
    ) -> Result<Grant, Refusal> {
        let hostname = self.hostname.clone();
        let who = identity.clone();
        let sas_token = sas_token.map(str::to_owned);
        let certificates = certificates.to_vec();
        self.hub
            .call(move |s| {
                s.authenticate_device(
                    &who,
                    &hostname,
                    sas_token.as_deref(),
                    &certificates,
                    SystemTime::now(),
                )
            })
            .await
            .map_err(|_| Refusal::unavailable())?
    }

    /// Registers an authenticated connection of `identity`, replacing (and so closing) any
    /// older connection of it.
    pub(crate) async fn register(
        &self,
        identity: Identity,
        grant: Grant,
        persistent: bool,
        model_id: Option<String>,
    ) -> Result<DeviceConnection, Refusal> {
        if let Some(model_id) = model_id {
            let who = identity.clone();
            let _ = self
                .hub
                .call(move |s| s.set_model_id(&who, &model_id))
                .await;
        }
        DeviceConnection::register(self.clone(), identity, grant, persistent).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_reasons_read_names_and_mqtt_codes() {
        let by_name: RefusalReason = serde_json::from_str("\"serverUnavailable\"").unwrap();
        assert_eq!(by_name, RefusalReason::ServerUnavailable);
        let by_code: RefusalReason = serde_json::from_str("4").unwrap();
        assert_eq!(by_code, RefusalReason::BadCredentials);
        assert!(serde_json::from_str::<RefusalReason>("6").is_err());
        assert!(serde_json::from_str::<RefusalReason>("\"nope\"").is_err());
        for code in 1..=5 {
            let reason = RefusalReason::from_mqtt_return_code(code).unwrap();
            assert_eq!(RefusalReason::from_name(reason.as_str()), Some(reason));
        }
    }
}
