//! The built-in Event Hubs-compatible endpoint (ADR 17): the hub's telemetry log read by the
//! official Event Hubs SDKs.
//!
//! ```text
//!  Event Hubs SDK ──TLS :5671 / WSS :443 (/$servicebus/websocket)──▶ amqp::run (same listener)
//!     SASL ANONYMOUS/MSSBCBS + CBS put-token (audience sb://{host}[:port]/{entity}[/…],
//!         type servicebus.windows.net:sastoken, a policy with ServiceConnect)
//!     or SASL PLAIN {policy} / key or SAS token     ──▶ the entity's grant (`grant_key`)
//!     links, by address ([`address`]):
//!       {entity}/ConsumerGroups/{cg}/Partitions/{p} (out)  consumer: selector filter ([`filter`])
//!            → start; events from the telemetry log ([`event`]), credit-bound, live tail on
//!            the log's commit watch; epochs ([`epoch`])
//!       $management (in/out)                     READ com.microsoft:eventhub / :partition
//!                                                ([`management`])
//!       /messages/events/$management, /messages/events/ConsumerGroups/… (out)
//!            a client logged in with a hub policy: detached with amqp:link:redirect to the
//!            entity's address on this very listener ([`redirect`])
//! ```
//!
//! * **Same host and port as the hub.** Event Hubs clients dial `{Endpoint host}:5671`; the
//!   emulator tells them apart from IoT Hub clients by link address and CBS audience, so no
//!   extra port, certificate name or host name is needed. The entity (`EntityPath`) is the
//!   hub's name (the first label of its host name).
//! * **Reads never touch the writer.** A consumer reads its partition through the log's
//!   read-only pool, at most [`consumer::READ_BATCH`] events at a time, and sends each only
//!   when the link has credit, settled as Event Hubs sends them; caught up, it waits on the log's commit watch, so a new event
//!   goes out as soon as it is committed.
//! * **Errors are Event Hubs'.** An unknown entity, consumer group or partition detaches the
//!   link with `amqp:not-found`; a bad filter with `com.microsoft:argument-error`; a position
//!   beyond the end with `com.microsoft:argument-out-of-range`; an epoch conflict with
//!   `amqp:link:stolen`; no or an expired token with `amqp:unauthorized-access`.

pub(crate) mod address;
mod consumer;
mod epoch;
mod event;
pub(crate) mod filter;
mod management;
mod redirect;

use std::sync::Arc;
use std::time::SystemTime;

use azure_iot_core::SharedAccessKey;

use super::truncated;
use crate::hub::policy::{Policies, Rights};
use crate::telemetry::TelemetryLog;

pub(super) use consumer::{Consumer, is_consumer_attach, link_acceptor, serve_consumer};
pub(super) use management::serve_requests as serve_management_requests;
pub(super) use redirect::redirect;

/// The consumer group every event hub has.
pub(crate) const DEFAULT_CONSUMER_GROUP: &str = "$Default";

/// The most consumer groups an entity may have (Event Hubs Standard's quota).
pub(crate) const MAX_CONSUMER_GROUPS: usize = 20;

/// How long a SASL PLAIN login with a policy's key (not a token) holds.
const KEY_LOGIN: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// The endpoint's configuration and shared state.
pub(crate) struct EventHubs {
    /// The host name clients dial (the hub's).
    pub(crate) hostname: Arc<str>,
    /// The AMQP-over-TLS port (for redirects and audiences).
    pub(crate) port: u16,
    /// The entity name (the hub's name).
    pub(crate) entity: String,
    /// The consumer groups, `$Default` first.
    pub(crate) consumer_groups: Vec<String>,
    /// The telemetry log the consumers read.
    pub(crate) telemetry: TelemetryLog,
    /// Epoch receivers of every connection.
    pub(crate) epochs: Arc<epoch::Epochs>,
    /// When the entity was created (this start of the emulator), for `$management`.
    pub(crate) created_at: SystemTime,
}

/// Whether `name` is a valid consumer group name: 1 to 50 letters, digits, `.`, `-`, `_`,
/// starting and ending with a letter or digit (Event Hubs' rule), or `$Default`.
pub(crate) fn valid_consumer_group(name: &str) -> bool {
    if name.eq_ignore_ascii_case(DEFAULT_CONSUMER_GROUP) {
        return true;
    }
    let bytes = name.as_bytes();
    (1..=50).contains(&bytes.len())
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// The desired capability with which an Event Hubs receiver asks for last-enqueued-event
/// information on every event (`track_last_enqueued_event_properties`).
pub(crate) const RUNTIME_METRIC_CAPABILITY: &str = "com.microsoft:enable-receiver-runtime-metric";

/// Whether the peer's `attach` asks for [`RUNTIME_METRIC_CAPABILITY`].
pub(crate) fn asks_runtime_metric(attach: &fe2o3_amqp_types::performatives::Attach) -> bool {
    attach
        .desired_capabilities
        .as_ref()
        .is_some_and(|caps| caps.iter().any(|c| c.as_str() == RUNTIME_METRIC_CAPABILITY))
}

/// The hub's name (the entity of its Event Hubs-compatible endpoint): the first label of its
/// host name.
pub(crate) fn entity_name(hostname: &str) -> &str {
    hostname.split('.').next().unwrap_or(hostname)
}

/// The `Endpoint=sb://…` of the endpoint: no port when it is the Event Hubs default (5671),
/// since the Python SDK would put a port into the TLS server name.
pub(crate) fn endpoint(hostname: &str, port: u16) -> String {
    if port == crate::config::DEFAULT_AMQP_PORT {
        format!("sb://{hostname}/")
    } else {
        format!("sb://{hostname}:{port}/")
    }
}

/// The Event Hubs connection string of a policy.
pub(crate) fn connection_string(
    hostname: &str,
    port: u16,
    policy: &str,
    key: &SharedAccessKey,
) -> String {
    format!(
        "Endpoint={};SharedAccessKeyName={policy};SharedAccessKey={};EntityPath={}",
        endpoint(hostname, port),
        key.to_base64(),
        entity_name(hostname)
    )
}

impl EventHubs {
    /// The endpoint of the hub `hostname` on AMQP port `port`, with `$Default` and
    /// `consumer_groups` (validated by the builder), reading `telemetry`.
    pub(crate) fn new(
        hostname: Arc<str>,
        port: u16,
        consumer_groups: &[String],
        telemetry: TelemetryLog,
    ) -> Self {
        let mut groups = vec![DEFAULT_CONSUMER_GROUP.to_owned()];
        for group in consumer_groups {
            if !groups.iter().any(|g| g.eq_ignore_ascii_case(group)) {
                groups.push(group.clone());
            }
        }
        Self {
            entity: entity_name(&hostname).to_owned(),
            hostname,
            port,
            consumer_groups: groups,
            telemetry,
            epochs: Arc::default(),
            created_at: SystemTime::now(),
        }
    }

    /// The grant key of the entity (what CBS and SASL PLAIN logins for it grant).
    pub(crate) fn grant_key(&self) -> String {
        format!("eventhubs:{}", self.entity.to_ascii_lowercase())
    }

    /// Whether `entity` names this endpoint's entity.
    pub(crate) fn is_entity(&self, entity: &str) -> bool {
        entity.eq_ignore_ascii_case(&self.entity)
    }

    /// The consumer group as configured, if `name` is one (case-insensitive).
    pub(crate) fn consumer_group(&self, name: &str) -> Option<&str> {
        self.consumer_groups
            .iter()
            .find(|g| g.eq_ignore_ascii_case(name))
            .map(String::as_str)
    }

    /// The address clients are redirected to (`amqps://{host}:{port}/{entity}/{rest}`).
    pub(crate) fn address(&self, rest: &str) -> String {
        format!(
            "amqps://{}:{}/{}/{rest}",
            self.hostname, self.port, self.entity
        )
    }

    /// For a CBS audience: `None` when it does not name this entity (the caller goes on with
    /// IoT Hub's audiences); otherwise whether the token grants it (its expiry) or why not.
    pub(crate) fn check_audience(
        &self,
        policies: &Policies,
        audience: &str,
        token: &str,
    ) -> Option<Result<SystemTime, String>> {
        let decoded = azure_iot_core::encoding::decode_component(audience);
        let rest = decoded.split_once("://").map_or(&*decoded, |(_, r)| r);
        let (host, path) = rest.split_once('/')?;
        let entity = path.split('/').next()?;
        if !self.is_entity(entity) || entity.eq_ignore_ascii_case("devices") {
            return None;
        }
        let bare_host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        if !bare_host.eq_ignore_ascii_case(&self.hostname) {
            return Some(Err(format!(
                "the audience host `{}` is not this endpoint (`{}`)",
                truncated(host),
                self.hostname
            )));
        }
        // The token must cover the audience (its `sr` is the audience or a prefix of it).
        let target = format!("{host}/{}", path.trim_end_matches('/'));
        Some(check_token(policies, token, &target))
    }

    /// SASL PLAIN for the endpoint: user = a policy name, password = its key or a SAS token
    /// for the entity. The expiry of the login.
    pub(crate) fn check_plain(
        &self,
        policies: &Policies,
        user: &str,
        password: &str,
    ) -> Result<SystemTime, String> {
        if password.starts_with("SharedAccessSignature ") {
            let target = format!("{}/{}", self.hostname, self.entity);
            return check_token(policies, password, &target);
        }
        let policy = policies.get(user).ok_or_else(|| {
            format!(
                "there is no shared access policy named `{}`",
                truncated(user)
            )
        })?;
        let offered = SharedAccessKey::from_base64(password)
            .map_err(|_| "the password is neither a key nor a SAS token".to_owned())?;
        let probe = b"azure-iot-emulator sasl plain";
        let signature = offered.sign(probe);
        if !(policy.primary.verify(probe, &signature) || policy.secondary.verify(probe, &signature))
        {
            return Err(format!("the key does not match policy `{}`", policy.name));
        }
        if !policy.rights.contains(Rights::SERVICE_CONNECT) {
            return Err(format!(
                "policy `{}` does not grant ServiceConnect (Event Hubs Listen)",
                policy.name
            ));
        }
        Ok(SystemTime::now() + KEY_LOGIN)
    }
}

/// Checks a SAS token for the endpoint: a policy with ServiceConnect, signature, expiry, and
/// a resource covering `target`. Returns its expiry.
///
/// Event Hubs SDKs sign with the key's text (its base64 characters) as the HMAC key, as
/// Service Bus does, where IoT Hub SDKs use the decoded key bytes; both are accepted.
fn check_token(policies: &Policies, token: &str, target: &str) -> Result<SystemTime, String> {
    let token = azure_iot_core::SasToken::parse(token.trim())
        .map_err(|e| format!("the token is not a valid SAS token: {e}"))?;
    let name = token
        .key_name()
        .ok_or("the SAS token names no shared access policy (skn)")?;
    let policy = policies.get(name).ok_or_else(|| {
        format!(
            "there is no shared access policy named `{}`",
            truncated(name)
        )
    })?;
    let text_key =
        |key: &SharedAccessKey| SharedAccessKey::from_bytes(key.to_base64().into_bytes());
    let mut keys = vec![policy.primary.clone(), policy.secondary.clone()];
    keys.extend(text_key(&policy.primary).ok());
    keys.extend(text_key(&policy.secondary).ok());
    token
        .verify(keys.iter(), SystemTime::now())
        .map_err(|e| match e {
            azure_iot_core::SasError::Expired { .. } => "the SAS token has expired".to_owned(),
            _ => format!("the SAS token signature does not match policy `{name}`"),
        })?;
    if !token.covers(target) {
        return Err(format!(
            "the SAS token resource does not cover `{}`",
            truncated(target)
        ));
    }
    if !policy.rights.contains(Rights::SERVICE_CONNECT) {
        return Err(format!(
            "policy `{name}` does not grant ServiceConnect (Event Hubs Listen)"
        ));
    }
    Ok(token.expires_at())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_group_names_follow_event_hubs_rules() {
        for ok in [
            "$Default",
            "$default",
            "cg",
            "a.b-c_d",
            "1",
            &"a".repeat(50),
        ] {
            assert!(valid_consumer_group(ok), "{ok}");
        }
        for bad in ["", "-cg", "cg-", "c g", "c/g", "$other", &"a".repeat(51)] {
            assert!(!valid_consumer_group(bad), "{bad}");
        }
    }

    #[test]
    fn the_endpoint_names_a_port_only_when_it_is_not_5671() {
        assert_eq!(endpoint("localhost", 5671), "sb://localhost/");
        assert_eq!(endpoint("hub.example", 15671), "sb://hub.example:15671/");
        assert_eq!(entity_name("my-hub.azure-devices.net"), "my-hub");
        assert_eq!(entity_name("localhost"), "localhost");
    }
}
