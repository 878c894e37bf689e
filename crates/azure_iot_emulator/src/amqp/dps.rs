//! A device registering with the Device Provisioning Service over AMQP: link adapters over
//! the DPS core (`crate::dps`), which holds every DPS rule.
//!
//! ```text
//!  login   SASL PLAIN  {idScope}/registrations/{regId} + SAS token ─▶ Dps::authenticate once
//!                      the connection is open (refused: the connection is closed with
//!                      amqp:unauthorized-access and DPS's message)
//!          or no SASL / ANONYMOUS / EXTERNAL + TLS client certificate ─▶ Dps::authenticate at
//!                      the first DPS link (refused: that link is detached likewise)
//!  links   a pair at {idScope}/registrations/{regId} (or amqps://{host}/{idScope}/…)
//!          client sender  ─▶ requests: `iotdps-operation-type` = iotdps-register (body: one
//!                            data section, JSON or empty; `iotdps-forceRegistration`) or
//!                            iotdps-get-operationstatus (`iotdps-operation-id`)
//!          client receiver ◀─ answers: the request's correlation-id, the operation status as
//!                            one data section, `retry-after` and `Retry-After` when set
//! ```
//!
//! A request the core refuses is settled `rejected` with an error whose description is DPS's
//! JSON error body (C# parses it from there) and whose info carries `retry-after` and
//! `Retry-After` when DPS says when to try again; the link stays usable. Requests of one link
//! are answered one at a time, in order, so a device has at most one request in flight per
//! link (and a session at most `MAX_LINKS_PER_SESSION` links). Answers wait, bounded, for
//! the receiver link when the client sent its request before attaching it.
//!
//! Every link of a connection must name the registration the connection logged in as: one
//! SASL PLAIN login is one device. An X.509 connection's login is its first link's
//! registration, with the certificate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use azure_iot_protocol::amqp::AmqpMessage;
use azure_iot_protocol::amqp::device::data_bytes;
use azure_iot_protocol::dps::{
    AMQP_FORCE_REGISTRATION, AMQP_OPERATION_ID, AMQP_OPERATION_REGISTER, AMQP_OPERATION_STATUS,
    AMQP_OPERATION_TYPE, RETRY_AFTER, registration_path,
};
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp_types::definitions::{self, AmqpError, ErrorCondition, Fields};
use fe2o3_amqp_types::messaging::{
    ApplicationProperties, Body, Data, Message, MessageId, Properties,
};
use fe2o3_amqp_types::primitives::{Binary, SimpleValue, Symbol, Value};

use super::{AmqpContext, ConnectionState, Replies, error, forward_replies};
use crate::dps::{Answer, DeviceLogin, DpsError};

/// The spelling of the retry hint the C# SDK reads (the others read [`RETRY_AFTER`]).
const RETRY_AFTER_CSHARP: &str = "Retry-After";
/// DPS's code for a request message it cannot read (400004, "argument invalid").
const INVALID_REQUEST: i64 = 400_004;
/// How long an X.509 login holds on a connection (a certificate does not expire like a
/// token; the connection's life bounds it).
const CERTIFICATE_GRANT: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// A connection's DPS side: its login and the answers on their way to each registration's
/// receiver link.
#[derive(Default)]
pub(super) struct DpsState {
    login: Mutex<Login>,
    answers: Mutex<HashMap<String, Replies>>,
}

/// Where a connection stands with DPS.
#[derive(Default)]
enum Login {
    /// Nothing yet: an X.509 device logs in at its first link.
    #[default]
    None,
    /// SASL PLAIN named this login; checked once the connection is open.
    Unchecked(DeviceLogin),
    /// Authenticated by the core.
    Checked(Arc<DeviceLogin>),
}

/// The id scope and registration id a DPS address names: `{idScope}/registrations/{regId}`,
/// optionally after `amqps://{host}/`. `None` if it is not one.
fn registration_of(address: &str) -> Option<(&str, &str)> {
    let path = match address.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, path)| path),
        None => address,
    };
    let (scope, registration) = path.trim_start_matches('/').split_once("/registrations/")?;
    let registration = registration.trim_end_matches('/');
    (!scope.is_empty() && !registration.is_empty() && !registration.contains('/'))
        .then_some((scope, registration))
}

/// SASL PLAIN: if `user` is a DPS identity (`{idScope}/registrations/{regId}`), keeps its
/// login with `token` for [`check_plain`] and says so.
pub(super) fn plain(state: &ConnectionState, user: &str, token: String) -> bool {
    let Some((scope, registration)) = registration_of(user) else {
        return false;
    };
    let Ok(login) = crate::provisioning::login(scope, registration, Some(&token), &[]) else {
        return false;
    };
    if let Ok(mut slot) = state.dps.login.lock() {
        *slot = Login::Unchecked(login);
    }
    true
}

/// Once the connection is open: authenticates a SASL PLAIN DPS login with the core, and
/// grants it for as long as its token holds. `Err` with DPS's message when refused.
pub(super) async fn check_plain(
    state: &ConnectionState,
    context: &AmqpContext,
) -> Result<(), String> {
    let unchecked = match state.dps.login.lock() {
        Ok(mut slot) => match std::mem::take(&mut *slot) {
            Login::Unchecked(login) => login,
            other => {
                *slot = other;
                return Ok(());
            }
        },
        Err(_) => return Err("the connection's DPS login is unavailable".into()),
    };
    log_in(state, context, unchecked).await.map(drop)
}

/// Authenticates `login` with the core and keeps it as the connection's, with a grant (so
/// the connection lives while its credential holds).
async fn log_in(
    state: &ConnectionState,
    context: &AmqpContext,
    login: DeviceLogin,
) -> Result<Arc<DeviceLogin>, String> {
    context
        .dps
        .authenticate(&login)
        .await
        .map_err(|e| e.to_string())?;
    let expiry = match &login.credential {
        crate::dps::DeviceCredential::SasToken(token) => azure_iot_core::SasToken::parse(token)
            .map(|t| t.expires_at())
            .map_err(|e| format!("the SAS token cannot be read: {e}"))?,
        crate::dps::DeviceCredential::X509(_) => SystemTime::now() + CERTIFICATE_GRANT,
    };
    let key = registration_path(&login.id_scope, &login.registration_id);
    let login = Arc::new(login);
    if let Ok(mut slot) = state.dps.login.lock() {
        *slot = Login::Checked(login.clone());
    }
    state.grant(key, expiry, None)?;
    Ok(login)
}

/// The login a DPS link at `address` acts under: the connection's, if it names the same
/// registration; else, for a connection without one, the TLS client certificate's. A refusal
/// (to detach the link with) is logged.
async fn link_login(
    state: &ConnectionState,
    context: &AmqpContext,
    address: &str,
) -> Result<Arc<DeviceLogin>, definitions::Error> {
    let login = find_login(state, context, address).await;
    if let Err(refusal) = &login {
        tracing::info!(address = %super::truncated(address), reason = ?refusal.description, "DPS link refused");
    }
    login
}

async fn find_login(
    state: &ConnectionState,
    context: &AmqpContext,
    address: &str,
) -> Result<Arc<DeviceLogin>, definitions::Error> {
    let unauthorized = |why: String| error(AmqpError::UnauthorizedAccess, why);
    let (scope, registration) = registration_of(address).ok_or_else(|| {
        error(
            AmqpError::NotFound,
            format!(
                "`{}` is not a DPS address ({{idScope}}/registrations/{{registrationId}})",
                super::truncated(address)
            ),
        )
    })?;
    let current = match state.dps.login.lock() {
        Ok(slot) => match &*slot {
            Login::Checked(login) => Some(login.clone()),
            _ => None,
        },
        Err(_) => None,
    };
    if let Some(login) = current {
        if login.id_scope == scope && login.registration_id == registration {
            return Ok(login);
        }
        return Err(unauthorized(format!(
            "this connection is registration `{}` of scope `{}`; a link for another registration needs its own connection",
            login.registration_id, login.id_scope
        )));
    }
    let login = crate::provisioning::login(scope, registration, None, &state.certificates)
        .map_err(|e| unauthorized(e.to_string()))?;
    log_in(state, context, login).await.map_err(unauthorized)
}

/// Runs `f` on the answers on their way to the receiver link of registration `key` (`None`
/// if the connection's state is unusable).
fn answers_for<T>(
    state: &ConnectionState,
    key: &str,
    f: impl FnOnce(&mut Replies) -> T,
) -> Option<T> {
    let mut answers = state.dps.answers.lock().ok()?;
    let replies = answers
        .entry(key.to_owned())
        .or_insert_with(|| Replies::new("DPS answers"));
    Some(f(replies))
}

/// The client's sender link at a DPS address: its requests, answered in order.
pub(super) async fn serve_requests(
    mut receiver: Receiver,
    address: String,
    state: Arc<ConnectionState>,
    context: Arc<AmqpContext>,
) {
    let login = match link_login(&state, &context, &address).await {
        Ok(login) => login,
        Err(refusal) => {
            let _ = receiver.close_with_error(refusal).await;
            return;
        }
    };
    let key = registration_path(&login.id_scope, &login.registration_id);
    loop {
        let delivery = match receiver.recv::<Body<Value>>().await {
            Ok(delivery) => delivery,
            Err(_) => break,
        };
        let message = delivery.message();
        let correlation = message
            .properties
            .as_ref()
            .and_then(|p| p.correlation_id.clone());
        match request(&context, &login, message).await {
            Ok(answer) => {
                let _ = receiver.accept(&delivery).await;
                let reply = answer_message(correlation, &answer);
                let delivered = answers_for(&state, &key, |answers| answers.deliver(reply))
                    .unwrap_or_else(|| {
                        Err("the connection's DPS answers are unavailable".to_owned())
                    });
                if let Err(why) = delivered {
                    let _ = receiver
                        .close_with_error(error(AmqpError::ResourceLimitExceeded, why))
                        .await;
                    return;
                }
            }
            Err(refusal) => {
                tracing::debug!(registration_id = %login.registration_id, %refusal, "DPS request refused");
                let _ = receiver.reject(&delivery, rejection(&refusal)).await;
            }
        }
    }
    let _ = receiver.close().await;
}

/// The client's receiver link at a DPS address: the answers to its registration's requests.
pub(super) async fn serve_answers(
    sender: Sender,
    address: String,
    state: Arc<ConnectionState>,
    context: Arc<AmqpContext>,
) {
    let login = match link_login(&state, &context, &address).await {
        Ok(login) => login,
        Err(refusal) => {
            let _ = sender.close_with_error(refusal).await;
            return;
        }
    };
    let key = registration_path(&login.id_scope, &login.registration_id);
    let Some(answers) = answers_for(&state, &key, Replies::attach) else {
        let _ = sender.close().await;
        return;
    };
    // The connection state holds the other end of `answers`: let go of it, or this task and
    // the state would keep each other alive after the connection ends.
    drop(state);
    forward_replies(sender, answers, context.shutdown.clone()).await;
}

/// Carries out one request message.
async fn request(
    context: &AmqpContext,
    login: &DeviceLogin,
    message: &AmqpMessage,
) -> Result<Answer, DpsError> {
    let operation = application_property(message, AMQP_OPERATION_TYPE);
    match operation {
        Some(SimpleValue::String(op)) if op == AMQP_OPERATION_REGISTER => {
            let request = crate::provisioning::register_request(&data_bytes(message))?;
            let force = match application_property(message, AMQP_FORCE_REGISTRATION) {
                Some(SimpleValue::Bool(force)) => *force,
                Some(SimpleValue::String(text)) => text.eq_ignore_ascii_case("true"),
                _ => false,
            };
            context.dps.register(login, request, force).await
        }
        Some(SimpleValue::String(op)) if op == AMQP_OPERATION_STATUS => {
            match application_property(message, AMQP_OPERATION_ID) {
                Some(SimpleValue::String(id)) if !id.is_empty() => {
                    context.dps.operation_status(login, id).await
                }
                _ => Err(DpsError::new(
                    INVALID_REQUEST,
                    format!("an operation-status request needs `{AMQP_OPERATION_ID}`"),
                )),
            }
        }
        other => Err(DpsError::new(
            INVALID_REQUEST,
            format!(
                "`{AMQP_OPERATION_TYPE}` must be `{AMQP_OPERATION_REGISTER}` or `{AMQP_OPERATION_STATUS}`, not {}",
                match other {
                    Some(SimpleValue::String(op)) => format!("`{}`", super::truncated(op)),
                    Some(_) => "a value that is not a string".to_owned(),
                    None => "missing".to_owned(),
                }
            ),
        )),
    }
}

fn application_property<'a>(message: &'a AmqpMessage, name: &str) -> Option<&'a SimpleValue> {
    message.application_properties.as_ref()?.0.get(name)
}

/// The answer message: the request's correlation id, the operation status as one data
/// section (Node parses the section's bytes as JSON), and the retry hint in both spellings.
fn answer_message(correlation: Option<MessageId>, answer: &Answer) -> AmqpMessage {
    let mut properties = ApplicationProperties::builder();
    if let Some(seconds) = answer.retry_after {
        let seconds = i32::try_from(seconds).unwrap_or(i32::MAX);
        properties = properties
            .insert(RETRY_AFTER, SimpleValue::Int(seconds))
            .insert(RETRY_AFTER_CSHARP, SimpleValue::Int(seconds));
    }
    Message::builder()
        .properties(Properties {
            correlation_id: correlation,
            ..Default::default()
        })
        .application_properties(properties.build())
        .body(Body::Data(
            vec![Data(Binary::from(crate::provisioning::answer_body(answer)))].into(),
        ))
        .build()
}

/// The `rejected` outcome's error for a refused request: a condition for the status, DPS's
/// JSON error body as the description (C# reads it from there), the retry hint in the info.
fn rejection(refusal: &DpsError) -> definitions::Error {
    let condition: ErrorCondition = match refusal.status {
        401 | 403 => AmqpError::UnauthorizedAccess.into(),
        404 => AmqpError::NotFound.into(),
        429 => AmqpError::ResourceLimitExceeded.into(),
        500.. => AmqpError::InternalError.into(),
        _ => ErrorCondition::Custom(Symbol::from("com.microsoft:argument-error")),
    };
    let description = String::from_utf8(crate::provisioning::error_body(refusal))
        .unwrap_or_else(|_| refusal.to_string());
    let info = refusal.retry_after.map(|seconds| {
        let mut info = Fields::default();
        info.insert(Symbol::from(RETRY_AFTER), Value::Ulong(u64::from(seconds)));
        info.insert(
            Symbol::from(RETRY_AFTER_CSHARP),
            Value::Ulong(u64::from(seconds)),
        );
        info
    });
    definitions::Error::new(condition, Some(description), info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dps_addresses() {
        assert_eq!(
            registration_of("0ne1/registrations/dev1"),
            Some(("0ne1", "dev1"))
        );
        assert_eq!(
            registration_of("amqps://global.example/0ne1/registrations/dev1"),
            Some(("0ne1", "dev1"))
        );
        assert_eq!(registration_of("/devices/d/messages/events"), None);
        assert_eq!(registration_of("0ne1/registrations/"), None);
        assert_eq!(registration_of("0ne1/registrations/a/b"), None);
    }

    #[test]
    fn a_refusal_carries_the_json_body_and_the_retry_hint() {
        let mut refusal = DpsError::new(429_001, "slow down");
        refusal.retry_after = Some(3);
        let error = rejection(&refusal);
        let body: serde_json::Value =
            serde_json::from_str(error.description.as_deref().unwrap()).unwrap();
        assert_eq!(body["errorCode"], 429_001);
        let info = error.info.unwrap();
        assert_eq!(
            info.get(&Symbol::from("retry-after")),
            Some(&Value::Ulong(3))
        );
        assert_eq!(
            info.get(&Symbol::from("Retry-After")),
            Some(&Value::Ulong(3))
        );
        assert!(rejection(&DpsError::new(404_001, "x")).info.is_none());
    }

    #[test]
    fn an_answer_is_one_data_section_with_both_retry_spellings() {
        let answer = Answer {
            status: 202,
            body: serde_json::from_str(r#"{"operationId":"op","status":"assigning"}"#).unwrap(),
            retry_after: Some(2),
        };
        let message = answer_message(Some(MessageId::String("c1".into())), &answer);
        let body: serde_json::Value = serde_json::from_slice(&data_bytes(&message)).unwrap();
        assert_eq!(body["operationId"], "op");
        assert!(matches!(message.body, Body::Data(_)));
        assert_eq!(
            application_property(&message, "retry-after"),
            Some(&SimpleValue::Int(2))
        );
        assert_eq!(
            application_property(&message, "Retry-After"),
            Some(&SimpleValue::Int(2))
        );
        assert_eq!(
            message.properties.unwrap().correlation_id,
            Some(MessageId::String("c1".into()))
        );
    }
}
