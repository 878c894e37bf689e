//! The DPS service API over HTTPS (`dps-service.md`): individual enrollments, enrollment
//! groups, bulk operations, queries and registration states, authorized by a SAS token of the
//! `provisioningserviceowner` policy whose `sr` covers the DPS host name.
//!
//! Queries accept `*` and `SELECT * FROM <collection> [WHERE <condition>]` (the condition is
//! the hub's query language, evaluated on the item's JSON). Paging: `x-ms-max-item-count`
//! (default and maximum 100 items), `x-ms-continuation` (an opaque offset, sent back only when
//! more items follow), and `x-ms-item-type` in PascalCase.

use std::time::SystemTime;

use axum::extract::Request;
use axum::response::Response;
use azure_iot_protocol::dps::enrollment::{
    BulkEnrollmentGroupOperation, BulkEnrollmentOperation, BulkOperationError, EnrollmentGroup,
    IndividualEnrollment, QuerySpecification, item_type,
};
use http::{HeaderValue, Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{AppState, header_text, json, no_route, read_body};
use crate::dps::state::{DpsState, Stored};
use crate::dps::{Dps, DpsError};
use crate::hub::policy::Rights;

/// Most items in one query page (and the default page size).
const MAX_PAGE: usize = 100;

pub(super) async fn handle(
    state: &AppState,
    dps: &Dps,
    segments: &[String],
    request: Request,
) -> Result<Response, DpsError> {
    let collection = segments.first().map(|s| s.to_ascii_lowercase());
    let third = segments.get(2).map(|s| s.to_ascii_lowercase());
    let id = segments.get(1).cloned();
    let method = request.method().clone();
    let needed = if method == Method::GET
        || (method == Method::POST
            && (third.as_deref() == Some("query")
                || id
                    .as_deref()
                    .is_some_and(|i| i.eq_ignore_ascii_case("query"))))
    {
        Rights::REGISTRY_READ
    } else {
        Rights::REGISTRY_WRITE
    };
    authorize(dps, &request, needed)?;
    let if_match = header_text(request.headers(), "if-match").map(str::to_owned);
    match (collection.as_deref(), segments.len(), third.as_deref()) {
        (Some("enrollments"), _, _) => {
            items::<IndividualEnrollment>(state, dps, &method, id, third, if_match, request).await
        }
        (Some("enrollmentgroups"), _, _) => {
            items::<EnrollmentGroup>(state, dps, &method, id, third, if_match, request).await
        }
        (Some("registrations"), 2, None) => {
            let Some(id) = id else {
                return Err(no_route(&request));
            };
            match method {
                Method::GET => {
                    let record = dps.actor.call(move |s| s.registration(&id)).await??;
                    Ok(json(StatusCode::OK, &record.state))
                }
                Method::DELETE => {
                    dps.actor
                        .call(move |s| s.delete_registration(&id, if_match.as_deref()))
                        .await??;
                    Ok(no_content())
                }
                _ => Err(no_route(&request)),
            }
        }
        (Some("registrations"), 3, Some("query")) if method == Method::POST => {
            let group = id.unwrap_or_default();
            let paging = Paging::from(&request);
            let body = read_body(state, request).await?;
            let filter = Filter::parse(&body)?;
            let documents = dps
                .actor
                .call(move |s| s.group_registrations(&group))
                .await?;
            Ok(page(
                filter.apply(documents),
                paging,
                item_type::DEVICE_REGISTRATION,
            ))
        }
        _ => Err(no_route(&request)),
    }
}

/// The routes of one kind of enrollment: `POST /` (bulk), `POST /query`, `GET|PUT|DELETE /{id}`
/// and `POST /{id}/attestationmechanism`.
async fn items<E: Stored + DeserializeOwned + BulkItem>(
    state: &AppState,
    dps: &Dps,
    method: &Method,
    id: Option<String>,
    third: Option<String>,
    if_match: Option<String>,
    request: Request,
) -> Result<Response, DpsError> {
    match (method.clone(), id, third.as_deref()) {
        (Method::POST, None, None) => {
            let body = read_body(state, request).await?;
            let (mode, list) = E::bulk(&body)?;
            let result = dps
                .actor
                .call(move |s| s.bulk::<E>(mode, list, E::bulk_error))
                .await??;
            Ok(json(StatusCode::OK, &result))
        }
        (Method::POST, Some(id), None) if id.eq_ignore_ascii_case("query") => {
            let paging = Paging::from(&request);
            let body = read_body(state, request).await?;
            let filter = Filter::parse(&body)?;
            let documents = dps
                .actor
                .call(|s: &mut DpsState| s.documents::<E>())
                .await?;
            Ok(page(filter.apply(documents), paging, E::ITEM_TYPE))
        }
        (Method::GET, Some(id), None) => {
            let item = dps.actor.call(move |s| s.get::<E>(&id)).await??;
            Ok(json(StatusCode::OK, &item))
        }
        (Method::PUT, Some(id), None) => {
            let body = read_body(state, request).await?;
            let item: E = decode(&body, E::KIND)?;
            let item = dps
                .actor
                .call(move |s| s.put::<E>(&id, item, if_match.as_deref()))
                .await??;
            Ok(json(StatusCode::OK, &item))
        }
        (Method::DELETE, Some(id), None) => {
            dps.actor
                .call(move |s| s.delete::<E>(&id, if_match.as_deref()))
                .await??;
            Ok(no_content())
        }
        (Method::POST, Some(id), Some("attestationmechanism")) => {
            let item = dps.actor.call(move |s| s.get::<E>(&id)).await??;
            Ok(json(StatusCode::OK, item.attestation()))
        }
        _ => Err(no_route(&request)),
    }
}

/// What bulk calls need per kind.
trait BulkItem: Stored {
    /// `x-ms-item-type` of its queries.
    const ITEM_TYPE: &'static str;
    /// Decodes a bulk body.
    fn bulk(
        body: &[u8],
    ) -> Result<(azure_iot_protocol::dps::enrollment::BulkMode, Vec<Self>), DpsError>;
    /// The failure entry for one item.
    fn bulk_error(item: &Self, error: &DpsError) -> BulkOperationError;
}

impl BulkItem for IndividualEnrollment {
    const ITEM_TYPE: &'static str = item_type::ENROLLMENT;
    fn bulk(
        body: &[u8],
    ) -> Result<(azure_iot_protocol::dps::enrollment::BulkMode, Vec<Self>), DpsError> {
        let op: BulkEnrollmentOperation = decode(body, "bulk enrollment operation")?;
        Ok((op.mode, op.enrollments))
    }
    fn bulk_error(item: &Self, error: &DpsError) -> BulkOperationError {
        BulkOperationError {
            registration_id: Some(item.registration_id.clone()),
            enrollment_group_id: None,
            error_code: error.details.error_code,
            error_status: error.details.message.clone(),
        }
    }
}

impl BulkItem for EnrollmentGroup {
    const ITEM_TYPE: &'static str = item_type::ENROLLMENT_GROUP;
    fn bulk(
        body: &[u8],
    ) -> Result<(azure_iot_protocol::dps::enrollment::BulkMode, Vec<Self>), DpsError> {
        let op: BulkEnrollmentGroupOperation = decode(body, "bulk enrollment group operation")?;
        Ok((op.mode, op.enrollment_groups))
    }
    fn bulk_error(item: &Self, error: &DpsError) -> BulkOperationError {
        BulkOperationError {
            registration_id: None,
            enrollment_group_id: Some(item.enrollment_group_id.clone()),
            error_code: error.details.error_code,
            error_status: error.details.message.clone(),
        }
    }
}

/// Checks the SAS token against the DPS policy and host name.
pub(super) fn authorize(dps: &Dps, request: &Request, needed: Rights) -> Result<(), DpsError> {
    let info = dps.info();
    info.policies
        .authorize(
            header_text(request.headers(), "authorization"),
            &info.hostname,
            needed,
            SystemTime::now(),
        )
        .map(|_| ())
        .map_err(|e| DpsError::unauthorized(e.message))
}

/// Decodes a JSON body; what does not fit (an unknown attestation type, a missing member) is
/// 400 saying why.
fn decode<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, DpsError> {
    serde_json::from_slice(body)
        .map_err(|e| DpsError::invalid(format!("the body is not a valid {what}: {e}")))
}

/// 204 without a body.
pub(super) fn no_content() -> Response {
    use axum::response::IntoResponse;
    StatusCode::NO_CONTENT.into_response()
}

/// A query's condition: none for `*` (or `SELECT *` without `WHERE`).
struct Filter(Option<azure_iot_query::Condition>);

impl Filter {
    fn parse(body: &[u8]) -> Result<Self, DpsError> {
        let spec: QuerySpecification = decode(body, "query specification")?;
        let text = spec.query.trim();
        if text.is_empty() || text == "*" {
            return Ok(Self(None));
        }
        let lower = text.to_ascii_lowercase();
        let words: Vec<&str> = lower.split_whitespace().collect();
        if words.len() < 4 || words[0] != "select" || words[1] != "*" || words[2] != "from" {
            return Err(DpsError::invalid(
                "a query is `*` or `SELECT * FROM <collection> [WHERE <condition>]`",
            ));
        }
        match lower.find(" where ") {
            None if words.len() == 4 => Ok(Self(None)),
            Some(at) => {
                let condition = text.get(at + " where ".len()..).unwrap_or_default();
                azure_iot_query::Condition::parse(condition)
                    .map(|c| Self(Some(c)))
                    .map_err(|e| DpsError::invalid(format!("the query condition is invalid: {e}")))
            }
            None => Err(DpsError::invalid(
                "a query is `*` or `SELECT * FROM <collection> [WHERE <condition>]`",
            )),
        }
    }

    fn apply(&self, documents: Vec<Value>) -> Vec<Value> {
        match &self.0 {
            None => documents,
            Some(condition) => documents
                .into_iter()
                .filter(|d| condition.matches(d))
                .collect(),
        }
    }
}

/// The page a query asks for.
struct Paging {
    size: usize,
    start: usize,
}

impl From<&Request> for Paging {
    fn from(request: &Request) -> Self {
        let headers = request.headers();
        let size = header_text(headers, "x-ms-max-item-count")
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|n| *n > 0)
            .map_or(MAX_PAGE, |n| n.min(MAX_PAGE));
        let start = header_text(headers, "x-ms-continuation")
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        Self { size, start }
    }
}

/// One page of `items` with the paging headers.
fn page(items: Vec<Value>, paging: Paging, kind: &'static str) -> Response {
    let end = paging.start.saturating_add(paging.size).min(items.len());
    let slice: Vec<Value> = items
        .get(paging.start.min(items.len())..end)
        .unwrap_or_default()
        .to_vec();
    let mut response = json(StatusCode::OK, &slice);
    let headers = response.headers_mut();
    headers.insert("x-ms-item-type", HeaderValue::from_static(kind));
    headers.insert("x-ms-max-item-count", HeaderValue::from(paging.size));
    if end < items.len() {
        headers.insert("x-ms-continuation", HeaderValue::from(end));
    }
    response
}
