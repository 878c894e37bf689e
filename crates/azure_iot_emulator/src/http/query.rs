//! `POST /devices/query` with continuation paging.
//!
//! The page size comes from `x-ms-max-item-count` (default 100, at most 1000). When more
//! results remain, the response carries `x-ms-continuation`; the client echoes it to get the
//! next page. The header is absent on the last page (the Node SDK loops forever on an empty
//! one). The token is opaque to clients: base64 of the offset into the result list, which is in
//! a stable order (device id, then module id), so pages neither skip nor repeat while the
//! registry is unchanged.
//!
//! Parsing and evaluation live in `azure_iot_query` (the hub's SQL-like grammar: `SELECT`,
//! `TOP`, `WHERE`, `GROUP BY`, `IS_DEFINED`, case-insensitive property names). This handler
//! picks the documents for the collection, runs the query over a snapshot taken in one state
//! call (so a page is consistent in itself, unlike the real hub's eventually consistent
//! index), and cuts the page. `x-ms-item-type` says what the rows are: `twin` for `SELECT *`
//! over twins, `raw` for projections and aggregates, as the SPEC's `QueryResult.type`. A query
//! that does not parse is 400 with the parser's reason.

use axum::extract::State;
use axum::response::Response;
use azure_iot_query::{Collection, Query};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

use super::{ApiError, AppState, Body, json_ok};
use crate::hub::policy::Rights;

/// Page size when the request has no `x-ms-max-item-count` (Node sends none by default; the
/// C# and Node SDKs' own default is 100).
const DEFAULT_PAGE: usize = 100;
/// The largest page the hub serves.
const MAX_PAGE: usize = 1000;
/// Marks a continuation token as ours, so a token from elsewhere is refused, not misread.
const TOKEN_PREFIX: &str = "offset:";

/// The request body: `{"query": "SELECT ..."}`.
#[derive(Deserialize)]
struct QueryBody {
    /// The query text.
    query: String,
}

/// `POST /devices/query`: one page of results as a JSON array, with `x-ms-item-type` and,
/// when more remain, `x-ms-continuation`. A `x-ms-max-item-count` outside 1–1000 or a
/// continuation token this hub did not issue is 400.
pub(crate) async fn query(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Reading twins through a query is allowed to registry readers as well as service apps.
    if app.authorize(&headers, Rights::SERVICE_CONNECT).is_err() {
        app.authorize(&headers, Rights::REGISTRY_READ)?;
    }
    let body: QueryBody = body.json().await?;
    let query = Query::parse(&body.query).map_err(|e| ApiError::invalid(format!("query: {e}")))?;
    let (page_size, offset) = paging(&headers)?;
    let documents = match query.collection() {
        Collection::Devices => app.hub.call(|s| s.twin_documents(false)).await?,
        Collection::Modules => app.hub.call(|s| s.twin_documents(true)).await?,
        Collection::Jobs => app.hub.call(|s| s.device_job_documents()).await?,
    };
    let results = query.execute(documents.iter());
    let (page, next) = cut_page(&results, page_size, offset);
    // Job rows are named in the PascalCase the C# SDK parses (`DeviceJob`); twins and raw
    // rows keep the SPEC's spelling.
    let item_type = match query.item_type() {
        azure_iot_query::ItemType::DeviceJob => "DeviceJob",
        other => other.as_str(),
    };
    let mut response = json_ok(Value::Array(page));
    let response_headers = response.headers_mut();
    response_headers.insert("x-ms-item-type", HeaderValue::from_static(item_type));
    if let Some(token) = next.and_then(|n| HeaderValue::from_str(&encode_token(n)).ok()) {
        response_headers.insert("x-ms-continuation", token);
    }
    Ok(response)
}

/// The page size (`x-ms-max-item-count`, default 100, 1–1000) and the offset (from
/// `x-ms-continuation`, 0 without one) of a paged request; 400 for a bad size or a token this
/// hub did not issue. Shared by `/devices/query` and `/jobs/v2/query`.
pub(super) fn paging(headers: &HeaderMap) -> Result<(usize, usize), ApiError> {
    let page_size = match headers.get("x-ms-max-item-count") {
        None => DEFAULT_PAGE,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(format!("x-ms-max-item-count must be 1 to {MAX_PAGE}"))
            })?,
    };
    let offset = match headers.get("x-ms-continuation") {
        None => 0,
        Some(value) => decode_token(value.to_str().unwrap_or_default())
            .ok_or_else(|| ApiError::invalid("x-ms-continuation is not a token this hub issued"))?,
    };
    Ok((page_size, offset))
}

/// The page of `results` at `offset`, and the offset of the next page if more remain.
pub(super) fn cut_page<T: Clone>(
    results: &[T],
    page_size: usize,
    offset: usize,
) -> (Vec<T>, Option<usize>) {
    let page: Vec<T> = results
        .iter()
        .skip(offset)
        .take(page_size)
        .cloned()
        .collect();
    let next = offset + page.len();
    (page, (next < results.len()).then_some(next))
}

/// The continuation token for the page starting at `offset` (URL-safe base64, no padding,
/// so it travels in a header unchanged).
pub(super) fn encode_token(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("{TOKEN_PREFIX}{offset}"))
}

/// The offset in a token from [`encode_token`]; `None` for anything else.
fn decode_token(token: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix(TOKEN_PREFIX)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_foreign_ones_are_refused() {
        for n in [0, 1, 100, usize::MAX] {
            assert_eq!(decode_token(&encode_token(n)), Some(n));
        }
        assert_eq!(decode_token(""), None);
        assert_eq!(decode_token("bm9wZQ"), None);
        assert_eq!(decode_token("%%%"), None);
    }
}
