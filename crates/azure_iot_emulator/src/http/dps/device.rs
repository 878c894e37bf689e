//! The DPS device API over HTTPS: register, poll, and the status lookup. Credentials: a SAS
//! token in `Authorization`, or else the TLS client certificate.
//! A TPM device's first register (no `Authorization`, `tpm` in the body) is answered 401 with
//! its TPM challenge (`{message, authenticationKey, keyName: "registration"}`); it registers
//! again with a SAS token signed by the key the challenge gave its TPM.
//!
//! | request | answer |
//! |---|---|
//! | `PUT /{idScope}/registrations/{id}/register[?forceRegistration=true]` | 202 `{operationId, status: assigning}` + `retry-after` |
//! | `GET /{idScope}/registrations/{id}/operations/{operationId}` | 200 final status with `registrationState` |
//! | `POST /{idScope}/registrations/{id}` | 200 the registration state |

use axum::extract::{Extension, FromRequestParts, Request};
use axum::response::Response;
use http::{HeaderValue, Method, StatusCode, header};

use super::{AppState, json, no_route, read_body};
use crate::dps::{Answer, DeviceCredential, DeviceLogin, Dps, DpsError};
use crate::http::Peer;
use azure_iot_protocol::dps::registration::{RegistrationRequest, TpmRegistration};

pub(super) async fn handle(
    state: &AppState,
    dps: &Dps,
    segments: &[String],
    request: Request,
) -> Result<Response, DpsError> {
    let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
    let words: Vec<&str> = lower.iter().map(String::as_str).collect();
    match (request.method().clone(), words.as_slice()) {
        (Method::PUT, [_, "registrations", _, "register"]) => {
            if request.headers().get(header::AUTHORIZATION).is_none() {
                let (parts, body) = request.into_parts();
                let bytes = read_body(state, Request::new(body)).await?;
                let register = RegistrationRequest::from_body(&bytes).ok();
                if let Some(tpm) = register.and_then(|r| r.tpm) {
                    return tpm_challenge(dps, segments, &tpm).await;
                }
                let request = Request::from_parts(parts, axum::body::Body::from(bytes));
                return register_with_login(state, dps, segments, request).await;
            }
            register_with_login(state, dps, segments, request).await
        }
        (Method::GET, [_, "registrations", _, "operations", _]) => {
            let operation = segments.get(4).cloned().unwrap_or_default();
            let (login, _) = login(segments, request).await?;
            answer(dps.operation_status(&login, &operation).await?)
        }
        (Method::POST, [_, "registrations", _]) => {
            let (login, _) = login(segments, request).await?;
            Ok(json(
                StatusCode::OK,
                &dps.registration_status(&login).await?,
            ))
        }
        _ => Err(no_route(&request)),
    }
}

/// A register request with a credential (a SAS token, or else the TLS client certificate).
async fn register_with_login(
    state: &AppState,
    dps: &Dps,
    segments: &[String],
    request: Request,
) -> Result<Response, DpsError> {
    let (login, request) = login(segments, request).await?;
    let force = crate::http::query_pairs(request.uri().query())
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("forceRegistration") && v == "true");
    let body = read_body(state, request).await?;
    let body = RegistrationRequest::from_body(&body).map_err(|e| {
        DpsError::invalid(format!(
            "the register body is not a DeviceRegistration: {e}"
        ))
    })?;
    answer(dps.register(&login, body, force).await?)
}

/// A TPM device's first register (no `Authorization`, its EK and SRK in the body): 401 with
/// the activation blob the device's TPM opens (`authenticationKey`), and the key name its SAS
/// token must use (the C client requires `keyName`).
async fn tpm_challenge(
    dps: &Dps,
    segments: &[String],
    tpm: &TpmRegistration,
) -> Result<Response, DpsError> {
    let scope = segments.first().map(String::as_str).unwrap_or_default();
    let registration = segments.get(2).map(String::as_str).unwrap_or_default();
    let blob = dps.tpm_challenge(scope, registration, tpm).await?;
    Ok(json(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({
            "message": "answer the TPM challenge: sign a SAS token with the key in authenticationKey",
            "authenticationKey": blob,
            "keyName": azure_iot_protocol::dps::DEVICE_KEY_NAME,
        }),
    ))
}

/// The login a device request carries: scope and registration id from the path, the SAS token
/// from `Authorization`, or the TLS client certificate.
async fn login(segments: &[String], request: Request) -> Result<(DeviceLogin, Request), DpsError> {
    let (mut parts, body) = request.into_parts();
    let token = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .map(str::to_owned);
    let credential = match token {
        Some(token) => DeviceCredential::SasToken(token),
        None => {
            let peer = Extension::<Peer>::from_request_parts(&mut parts, &())
                .await
                .ok()
                .map(|Extension(p)| p.1)
                .unwrap_or_default();
            if peer.is_empty() {
                return Err(DpsError::unauthorized(
                    "the request has neither a SAS token nor a client certificate",
                ));
            }
            DeviceCredential::X509(peer)
        }
    };
    let login = DeviceLogin {
        id_scope: segments.first().cloned().unwrap_or_default(),
        registration_id: segments.get(2).cloned().unwrap_or_default(),
        credential,
    };
    Ok((login, Request::from_parts(parts, body)))
}

/// The status, the operation status as JSON, and `retry-after` (whole seconds) when polling
/// must wait.
fn answer(answer: Answer) -> Result<Response, DpsError> {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = json(status, &answer.body);
    if let Some(seconds) = answer.retry_after {
        response.headers_mut().insert(
            azure_iot_protocol::dps::RETRY_AFTER,
            HeaderValue::from(seconds),
        );
    }
    Ok(response)
}
