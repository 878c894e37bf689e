//! The HTTPS front-end: the service REST API (and, with the device endpoints, the WebSocket
//! upgrades) on one TLS port.
//!
//! ```text
//! TcpListener ─▶ TLS (rustls) ─▶ hyper HTTP/1.1 ─▶ axum Router ─▶ handler ─▶ Hub::call ─▶ state
//!                                                      │
//!                                     authorize (SAS, policy rights) first
//! ```
//!
//! Handlers are thin: check the token, decode the request, run one closure on the state
//! thread, encode the answer. Bodies are read with a size limit and decoded by hand so that
//! every malformed request gets an IoT Hub error body, not a framework's plain-text one.
//!
//! Conventions shared by every handler, taken from what the official service SDKs send and
//! accept:
//!
//! * `api-version` is accepted whatever its value (Python and Node send `2021-04-12`, the
//!   Node generated client `2020-09-30`, others older ones) and never branched on.
//! * Path ids arrive percent-encoded (Node `encodeURIComponent`, Python `quote`); axum decodes
//!   them before lookup. `/devices/` and `/devices` are the same route (Node lists devices
//!   with the trailing slash).
//! * JSON bodies go out with `Content-Type: application/json; charset=utf-8`: Node only
//!   parses a body whose content type says JSON.
//! * Success codes are the ones Python's generated client insists on (it raises on any other
//!   code): 200 for identity PUTs even on create, 204 for deletes.
//! * Every request is authorized before its body is read, so an unauthenticated client
//!   learns nothing about what a valid body would be and cannot make the emulator buffer
//!   bodies.

mod certificates;
mod configurations;
mod device;
mod dps;
mod error;
mod exportimport;
mod faults;
mod feedback;
mod files;
mod jobs;
mod methods;
mod monitor;
mod query;
mod registry;
mod server;
mod twins;
mod websocket;

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub(crate) use device::query_pairs;
pub(crate) use error::ApiError;
pub(crate) use server::serve;
pub(crate) use websocket::Peer;

use crate::hub::Hub;
use crate::hub::error::ErrorCode;
use crate::hub::policy::{Policies, Rights};
use crate::mqtt::MqttContext;

/// The largest request body accepted (bulk calls of 100 devices with twins fit easily).
/// Larger bodies are 413 `MessageTooLarge` before any JSON parsing.
pub(crate) const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The state thread.
    pub(crate) hub: Hub,
    /// A copy of the hub's policies, so authorizing a request does not queue behind the state
    /// thread (policies do not change after start-up).
    pub(crate) policies: Arc<Policies>,
    /// The hub host name tokens must cover (`sr`), as in the connection strings.
    pub(crate) hostname: Arc<str>,
    /// For MQTT sessions arriving as WebSocket upgrades.
    pub(crate) mqtt: Arc<MqttContext>,
    /// For AMQP connections arriving as WebSocket upgrades.
    pub(crate) amqp: Arc<crate::amqp::AmqpContext>,
    /// How long a request body may take to arrive ([`Body`]).
    pub(crate) body_timeout: std::time::Duration,
    /// The device core the device HTTPS API is a stateless front-end over.
    pub(crate) device: crate::device::DeviceCore,
    /// The blob endpoint file uploads go to (`None`: file upload answers 501).
    pub(crate) blob: Option<Arc<crate::blob::BlobEndpoint>>,
    /// The Device Provisioning Service (`None`: DPS requests answer 501).
    pub(crate) dps: Option<crate::dps::Dps>,
}

impl AppState {
    /// Checks the request's SAS token for `needed` rights: 401 `IotHubUnauthorizedAccess`
    /// with a reason when it lacks them (see `Policies::authorize`). A header that is not
    /// visible ASCII counts as missing.
    pub(crate) fn authorize(&self, headers: &HeaderMap, needed: Rights) -> Result<(), ApiError> {
        let header = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        self.policies
            .authorize(header, &self.hostname, needed, SystemTime::now())
            .map(|_| ())
            .map_err(ApiError::from)
    }
}

/// The service REST API.
///
/// Routes, with the right each needs:
///
/// * registry (RegistryRead / RegistryWrite): `/devices`, `/devices/{id}`,
///   `/devices/{id}/modules[/{mid}]`, bulk `POST /devices`, `/statistics/devices`,
///   `/certificates[/{name}]`, `/configurations[/{id}]`, `/configurations/testQueries`,
///   `/devices/{id}/applyConfigurationContent` (see `configurations`), import/export jobs
///   `/jobs/create`, `/jobs`, `/jobs/{id}` (see `exportimport`);
/// * service (ServiceConnect): `/twins/{id}[/modules/{mid}]`, `.../methods`, jobs v2
///   (`/jobs/v2/{id}`, `/jobs/v2/{id}/cancel`, `/jobs/v2/query`),
///   `/devices/query` (RegistryRead also accepted), `/devices/{id}/commands` (purge),
///   `/messages/serviceBound/feedback...`, `/statistics/service`;
/// * devices: `/$iothub/websocket` and `/` (MQTT or AMQP over WebSockets, for the hub or DPS;
///   the protocol authenticates; C#'s DPS clients upgrade at `/`), and
///   `/$servicebus/websocket` (AMQP for the Event Hubs-compatible endpoint);
///   the device HTTPS API (device or module SAS, or the TLS client certificate):
///   `/devices/{id}[/modules/{mid}]/messages/events`, `/devices/{id}/messages/devicebound[/…]`,
///   `/devices/{id}/files[/notifications[/{correlationId}]]` (see `device`);
/// * emulator only: `/$emulator/telemetry` (read the telemetry log), `/$emulator/faults`,
///   `/$emulator/blob/containers/{name}/sas` (a container SAS for import/export jobs), and
///   `/$emulator/files[/{blob}]` (list and download uploaded files; ServiceConnect).
///
/// Every request first passes the classification layer (DPS or hub); unknown paths reach
/// [`unsupported`].
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/devices", get(registry::list_devices).post(registry::bulk))
        .route(
            "/devices/",
            get(registry::list_devices).post(registry::bulk),
        )
        .route("/devices/query", post(query::query))
        .route(
            "/devices/{id}",
            get(registry::get_device)
                .put(registry::put_device)
                .delete(registry::delete_device),
        )
        .route("/devices/{id}/modules", get(registry::list_modules))
        .route("/devices/{id}/modules/", get(registry::list_modules))
        .route(
            "/devices/{id}/modules/{mid}",
            get(registry::get_module)
                .put(registry::put_module)
                .delete(registry::delete_module),
        )
        .route(
            "/devices/{id}/commands",
            axum::routing::delete(registry::purge_commands),
        )
        .route("/statistics/devices", get(registry::device_statistics))
        .route("/statistics/service", get(registry::service_statistics))
        .route(
            "/twins/{id}",
            get(twins::get_twin)
                .patch(twins::patch_twin)
                .put(twins::replace_twin),
        )
        .route(
            "/twins/{id}/modules/{mid}",
            get(twins::get_module_twin)
                .patch(twins::patch_module_twin)
                .put(twins::replace_module_twin),
        )
        .route("/$iothub/websocket", get(websocket::upgrade))
        .route("/$servicebus/websocket", get(websocket::upgrade))
        .route("/$servicebus/websocket/", get(websocket::upgrade))
        .route("/", get(websocket::upgrade_at_root))
        .route(
            "/devices/{id}/messages/events",
            post(device::events::send_device),
        )
        .route(
            "/devices/{id}/modules/{mid}/messages/events",
            post(device::events::send_module),
        )
        .route("/devices/{id}/files", post(device::files::create_upload))
        .route("/devices/{id}/files/", post(device::files::create_upload))
        .route(
            "/devices/{id}/files/notifications",
            post(device::files::complete_upload),
        )
        .route(
            "/devices/{id}/files/notifications/",
            post(device::files::complete_upload),
        )
        .route(
            "/devices/{id}/files/notifications/{correlation}",
            post(device::files::complete_upload_named),
        )
        .route("/$emulator/files", get(files::list))
        .route("/$emulator/files/{*name}", get(files::download))
        .merge(device_bound_routes("devicebound"))
        .merge(device_bound_routes("deviceBound"))
        .route("/devices/{id}/twin", any(device::twin_or_method))
        .route("/devices/{id}/twin/{*rest}", any(device::twin_or_method))
        .route("/devices/{id}/methods", any(device::twin_or_method))
        .route("/devices/{id}/methods/{*rest}", any(device::twin_or_method))
        .route("/configurations", get(configurations::list))
        .route("/configurations/", get(configurations::list))
        .route(
            "/configurations/testQueries",
            post(configurations::test_queries),
        )
        .route(
            "/configurations/{id}",
            get(configurations::get)
                .put(configurations::put)
                .delete(configurations::delete),
        )
        .route(
            "/devices/{id}/applyConfigurationContent",
            post(configurations::apply_content),
        )
        .route("/jobs", get(exportimport::list))
        .route("/jobs/create", post(exportimport::create))
        .route(
            "/jobs/{id}",
            get(exportimport::get).delete(exportimport::cancel),
        )
        .route(
            "/$emulator/blob/containers/{name}/sas",
            post(exportimport::container_sas),
        )
        .route("/certificates", get(certificates::list))
        .route(
            "/certificates/{name}",
            get(certificates::get)
                .put(certificates::put)
                .delete(certificates::delete),
        )
        .route("/$emulator/telemetry", get(monitor::telemetry))
        .route(
            "/$emulator/faults",
            post(faults::inject).delete(faults::clear),
        )
        .route("/messages/serviceBound/feedback", get(feedback::receive))
        .route(
            "/messages/serviceBound/feedback/{token}",
            axum::routing::delete(feedback::complete),
        )
        .route(
            "/messages/serviceBound/feedback/{token}/abandon",
            post(feedback::abandon),
        )
        .route("/jobs/v2/query", get(jobs::query))
        .route("/jobs/v2/{id}", get(jobs::get).put(jobs::create))
        .route("/jobs/v2/{id}/cancel", post(jobs::cancel))
        .route("/twins/{id}/methods", post(methods::invoke_device))
        .route(
            "/twins/{id}/modules/{mid}/methods",
            post(methods::invoke_module),
        )
        .fallback(unsupported)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            classify,
        ))
        .with_state(state)
}

/// Cloud-to-device polling under one spelling of the path (C# writes `deviceBound`, the
/// others `devicebound`).
fn device_bound_routes(segment: &str) -> Router<AppState> {
    let base = format!("/devices/{{id}}/messages/{segment}");
    Router::new()
        .route(&base, get(device::c2d::receive))
        .route(
            &format!("{base}/{{token}}"),
            axum::routing::delete(device::c2d::complete_or_reject),
        )
        .route(
            &format!("{base}/{{token}}/abandon"),
            post(device::c2d::abandon),
        )
}

/// The classification step (`crate::route`): requests for the Device Provisioning Service
/// (by path, or by a DPS host name of its own) never reach the hub's routes; they go to `dps`. WebSocket upgrades
/// are not classified here: MQTT and AMQP over WebSockets are for the hub or DPS alike (C#'s
/// DPS clients upgrade at `/` on the DPS host name), and the tunnelled protocol tells them
/// apart.
async fn classify(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    if websocket::is_upgrade(&request) {
        return next.run(request).await;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let names = state.dps.as_ref().map(|d| crate::route::HostNames {
        hub: &state.hostname,
        dps: &d.info().hostname,
    });
    match crate::route::http(host, request.uri().path(), names) {
        crate::route::Service::Hub => next.run(request).await,
        crate::route::Service::Dps => match state.dps.clone() {
            Some(dps) => dps::handle(state, dps, request).await,
            None => ApiError::new(ErrorCode::NotImplemented, crate::route::DPS_UNSUPPORTED)
                .into_response(),
        },
    }
}

/// Anything else: a known IoT Hub feature the emulator does not have yet answers 501 and says
/// so; an unknown path is a 404. Never a silent success.
///
/// "Known" includes digital twins, the other service-bound
/// endpoints and every unrouted path under `/devices/` (a device SDK on its HTTP transport
/// asking for something not served gets an explicit 501 `NotImplemented` it can report, not
/// a 404 it would read as an unknown device).
async fn unsupported(request: Request) -> ApiError {
    let path = request.uri().path();
    let known = ["/digitaltwins", "/messages/serviceBound", "/devices/"];
    if known.iter().any(|p| path.starts_with(p)) {
        ApiError::new(
            ErrorCode::NotImplemented,
            format!(
                "{} {path} is not supported by the emulator",
                request.method()
            ),
        )
    } else {
        ApiError::new(
            ErrorCode::EndpointNotFound,
            format!("no IoT Hub endpoint {} {path}", request.method()),
        )
    }
}

/// A request's body, not read yet: handlers authorize the request first and only then read
/// it ([`Body::json`]), so a client without credentials cannot make the emulator buffer
/// bodies (up to [`MAX_BODY_BYTES`] each).
///
/// Read with [`MAX_BODY_BYTES`] as the limit, within the body timeout, and decoded by hand
/// (not axum's `Json` extractor) so that every body failure (too large, empty, not JSON,
/// wrong shape) is an IoT Hub error body with the hub's code, which the SDKs parse, rather
/// than axum's plain-text rejection. A body that does not arrive in full within
/// [`crate::config::Limits::body_timeout`] is 408 and the connection closes (its unread
/// rest would otherwise be taken for the next request).
pub(crate) struct Body {
    body: axum::body::Body,
    timeout: std::time::Duration,
}

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        Ok(Self {
            body: request.into_body(),
            timeout: state.body_timeout,
        })
    }
}

impl Body {
    /// A body already in memory (tests).
    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        Self {
            body: axum::body::Body::from(bytes.into()),
            timeout: std::time::Duration::from_secs(30),
        }
    }

    /// Reads the whole body (after the request is authorized).
    pub(crate) async fn bytes(self) -> Result<Bytes, ApiError> {
        self.bytes_up_to(MAX_BODY_BYTES).await
    }

    /// Reads the whole body, refusing one over `limit` bytes with 413 `MessageTooLarge`.
    pub(crate) async fn bytes_up_to(self, limit: usize) -> Result<Bytes, ApiError> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, axum::body::to_bytes(self.body, limit)).await {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e))
                if std::error::Error::source(&e)
                    .is_some_and(|inner| inner.is::<http_body_util::LengthLimitError>()) =>
            {
                Err(ApiError::new(
                    ErrorCode::MessageTooLarge,
                    format!("the request body exceeds {limit} bytes"),
                ))
            }
            // Malformed framing (a bad chunk size) or a connection that broke mid-body.
            Ok(Err(e)) => Err(ApiError::invalid(format!(
                "the request body could not be read: {e}"
            ))),
            Err(_) => Err(ApiError::new(
                ErrorCode::RequestTimeout,
                format!("the request body did not arrive within {timeout:?}"),
            )),
        }
    }

    /// Reads the body and decodes it as JSON of type `T`; a bad body is a 400 saying where.
    pub(crate) async fn json<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        let bytes = self.bytes().await?;
        if bytes.is_empty() {
            return Err(ApiError::invalid(
                "the request body is empty; JSON was expected",
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::invalid(format!(
                "the request body is not valid JSON for this operation: {e}"
            ))
        })
    }
}

/// A `top=n` query value: `max` when absent; 400 when not a number from 1 to `max` (never
/// silently clamped).
pub(crate) fn parse_top(text: Option<&str>, max: usize) -> Result<usize, ApiError> {
    match text {
        None => Ok(max),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::invalid(format!("top must be 1 to {max}"))),
    }
}

/// The `If-Match` header, if any, as sent: quotes are stripped later by `check_if_match`,
/// because Python and Node quote the ETag and Python's configuration client does not.
pub(crate) fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A `200 OK` JSON response (the success code of every read and of identity and twin
/// writes).
pub(crate) fn json_ok(value: Value) -> Response {
    json_response(StatusCode::OK, value)
}

/// A JSON response with `status` and the JSON content type Node needs to parse it.
pub(crate) fn json_response(status: StatusCode, value: Value) -> Response {
    let mut response = (status, value.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(error::JSON));
    response
}
