//! The emulator-only CA registry of the DPS: `GET /$emulator/dps/certificates`,
//! `GET|PUT|DELETE /$emulator/dps/certificates/{name}` (`dps::certificates`).
//!
//! Azure registers a DPS instance's CAs through its management plane (ARM), which the
//! emulator does not serve; this route stands in for it (`azure-iot dps ca`, tests). It is
//! authorized like the service API, by a `provisioningserviceowner` SAS token for the DPS host
//! (reads need RegistryRead, changes RegistryWrite), answers the hub's `CertificateDescription`
//! shape, takes the hub's PUT body (`{"properties": {"certificate": "<PEM or base64 DER>"}}`
//! or `{"certificate": …}`), and fails with DPS's error body.

use axum::extract::Request;
use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::Value;

use super::service::{authorize, no_content};
use super::{AppState, json, no_route, read_body};
use crate::dps::{Dps, DpsError};
use crate::hub::policy::Rights;

/// Answers a request whose path starts `/$emulator/dps/certificates`; `segments` are the
/// decoded path segments.
pub(super) async fn handle(
    state: &AppState,
    dps: &Dps,
    segments: &[String],
    request: Request,
) -> Result<Response, DpsError> {
    let is_route = segments.len() <= 4
        && segments
            .get(1)
            .is_some_and(|s| s.eq_ignore_ascii_case("dps"))
        && segments
            .get(2)
            .is_some_and(|s| s.eq_ignore_ascii_case("certificates"));
    if !is_route {
        return Err(no_route(&request));
    }
    let name = segments.get(3).cloned();
    let method = request.method().clone();
    let needed = if method == Method::GET {
        Rights::REGISTRY_READ
    } else {
        Rights::REGISTRY_WRITE
    };
    authorize(dps, &request, needed)?;
    match (method, name) {
        (Method::GET, None) => Ok(json(
            StatusCode::OK,
            &dps.actor.call(|s| s.list_cas()).await?,
        )),
        (Method::GET, Some(name)) => Ok(json(
            StatusCode::OK,
            &dps.actor.call(move |s| s.get_ca(&name)).await??,
        )),
        (Method::PUT, Some(name)) => {
            let body = read_body(state, request).await?;
            let body: Value = serde_json::from_slice(&body)
                .map_err(|e| DpsError::invalid(format!("the body is not JSON: {e}")))?;
            let certificate = crate::http::certificates::certificate_text(&body)
                .ok_or_else(|| {
                    DpsError::invalid("the body needs properties.certificate (PEM or base64 DER)")
                })?
                .to_owned();
            let described = dps
                .actor
                .call(move |s| s.put_ca(&name, &certificate))
                .await??;
            Ok(json(StatusCode::OK, &described))
        }
        (Method::DELETE, Some(name)) => {
            dps.actor.call(move |s| s.delete_ca(&name)).await??;
            Ok(no_content())
        }
        _ => Err(no_route(&request)),
    }
}
