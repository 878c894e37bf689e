//! Cloud-to-device feedback over REST (`/messages/serviceBound/feedback`), as the Python
//! service SDK and `az iot` read it.
//!
//! `GET` answers 204 when there is nothing, else 200 with a JSON array of up to 64 records and
//! the batch's lock token in `ETag` (quoted). `DELETE .../{lockToken}` completes the batch;
//! `POST .../{lockToken}/abandon` returns it to the queue. A batch not completed within 60 s
//! is delivered again.
//!
//! All three need ServiceConnect. The lock token is made here, before the state call, so the
//! records are locked under it in the same step that hands them out: two concurrent receivers
//! never get the same record. Records stay stored until completed, so an emulator restart
//! between receive and complete delivers them again (at-least-once, as on the hub). The
//! token in the path may be quoted or not (clients copy the `ETag` header as is).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::Value;

use super::{ApiError, AppState, json_ok};
use crate::hub::inbox::InboxKind;
use crate::hub::policy::Rights;

/// `GET /messages/serviceBound/feedback`: 204 when nothing is deliverable, else 200 with a
/// batch locked under a new token returned in `ETag`.
pub(crate) async fn receive(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::SERVICE_CONNECT)?;
    let token = crate::hub::queue::new_lock_token();
    let lock = token.clone();
    match app
        .hub
        .call(move |s| s.take_inbox(InboxKind::Feedback, lock))
        .await?
    {
        None => Ok(StatusCode::NO_CONTENT.into_response()),
        Some(taken) => {
            let mut response = json_ok(Value::Array(taken.records));
            if let Ok(etag) = HeaderValue::from_str(&format!("\"{token}\"")) {
                response.headers_mut().insert(header::ETAG, etag);
            }
            Ok(response)
        }
    }
}

/// `DELETE /messages/serviceBound/feedback/{lockToken}`: removes the batch for good (204). A
/// token that holds nothing (completed already, lock expired, never issued) is 412
/// `PreconditionFailed`.
pub(crate) async fn complete(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.authorize(&headers, Rights::SERVICE_CONNECT)?;
    let token = token.trim_matches('"').to_owned();
    app.hub
        .call(move |s| s.complete_inbox(InboxKind::Feedback, &token))
        .await??;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /messages/serviceBound/feedback/{lockToken}/abandon`: unlocks the batch so the next
/// receive gets it again (204); the same 412 for a token that holds nothing.
pub(crate) async fn abandon(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.authorize(&headers, Rights::SERVICE_CONNECT)?;
    let token = token.trim_matches('"').to_owned();
    app.hub
        .call(move |s| s.abandon_inbox(InboxKind::Feedback, &token))
        .await??;
    Ok(StatusCode::NO_CONTENT)
}
