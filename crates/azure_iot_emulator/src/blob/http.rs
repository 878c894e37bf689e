//! The blob REST subset over HTTPS: `/{container}/{blob…}` with a service SAS in the query.
//!
//! | request | operation | success |
//! |---|---|---|
//! | `PUT` + `x-ms-blob-type: BlockBlob` | Put Blob | 201 |
//! | `PUT ?comp=block&blockid=…` | Put Block | 201 |
//! | `PUT ?comp=blocklist` + `<BlockList>` XML | Put Block List | 201 |
//! | `GET` / `HEAD` | Get Blob / Get Blob Properties | 200 (206 for one `x-ms-range` / `Range`) |
//! | `DELETE` | Delete Blob | 202 |
//!
//! The blob name is the percent-decoded rest of the path (`%2F` is a `/` inside the name, as
//! the C and C# SDKs send it). Every answer carries `x-ms-request-id` and `x-ms-version`;
//! errors are Azure Storage's XML body with `x-ms-error-code`. The SAS is checked before the
//! body is read. `If-None-Match: *` (the Python storage SDK's default for a new blob) refuses
//! to overwrite with 409 `BlobAlreadyExists`. A read may ask for one byte range. Leases,
//! snapshots, metadata and the other blob types are not served (400
//! `UnsupportedQueryParameter`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::sas::VERSION;
use super::{BlobEndpoint, BlobError, BlobProperties, Permission, file_body};

/// The largest Put Block List body (50,000 ids fit easily).
const MAX_BLOCK_LIST_BYTES: usize = 8 * 1024 * 1024;

/// The endpoint's routes.
pub(crate) fn router(endpoint: Arc<BlobEndpoint>) -> Router {
    Router::new()
        .route(
            "/{container}/{*blob}",
            put(put_any).get(get_blob).delete(delete_blob),
        )
        .fallback(|| async {
            error(BlobError::new(
                400,
                "InvalidUri",
                "the endpoint serves /{container}/{blob} only",
            ))
        })
        .with_state(endpoint)
}

async fn put_any(
    State(ep): State<Arc<BlobEndpoint>>,
    Path((container, blob)): Path<(String, String)>,
    request: Request,
) -> Response {
    match put_inner(&ep, &container, &blob, request).await {
        Ok(response) => response,
        Err(e) => error(e),
    }
}

async fn put_inner(
    ep: &BlobEndpoint,
    container: &str,
    blob: &str,
    request: Request,
) -> Result<Response, BlobError> {
    authorize(
        ep,
        request.uri().query(),
        container,
        blob,
        Permission::Write,
    )?;
    let query = query_pairs(request.uri().query());
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let headers = request.headers().clone();
    let content_type = header_text(&headers, "x-ms-blob-content-type");
    match param("comp").as_deref() {
        None => {
            let blob_type = header_text(&headers, "x-ms-blob-type").unwrap_or_default();
            if !blob_type.eq_ignore_ascii_case("BlockBlob") {
                return Err(BlobError::new(
                    400,
                    "InvalidHeaderValue",
                    "Put Blob needs x-ms-blob-type: BlockBlob (the only blob type served)",
                ));
            }
            if header_text(&headers, "if-none-match").as_deref() == Some("*")
                && ep.files.properties(container, blob).await.is_ok()
            {
                return Err(BlobError::new(
                    409,
                    "BlobAlreadyExists",
                    "the specified blob already exists",
                ));
            }
            let content_type =
                content_type.or_else(|| header_text(&headers, header::CONTENT_TYPE.as_str()));
            let properties = ep
                .files
                .put_blob(container, blob, content_type, request.into_body())
                .await?;
            Ok(created(Some(&properties)))
        }
        Some("block") => {
            let id = param("blockid").ok_or_else(|| {
                BlobError::new(
                    400,
                    "MissingRequiredQueryParameter",
                    "Put Block needs blockid",
                )
            })?;
            ep.files
                .put_block(container, blob, &id, request.into_body())
                .await?;
            Ok(created(None))
        }
        Some("blocklist") => {
            let body = axum::body::to_bytes(request.into_body(), MAX_BLOCK_LIST_BYTES)
                .await
                .map_err(|_| {
                    BlobError::new(
                        413,
                        "RequestBodyTooLarge",
                        format!("a block list may be at most {MAX_BLOCK_LIST_BYTES} bytes"),
                    )
                })?;
            let ids = block_ids(&body)?;
            let properties = ep
                .files
                .put_block_list(container, blob, &ids, content_type)
                .await?;
            Ok(created(Some(&properties)))
        }
        Some(other) => Err(BlobError::new(
            400,
            "UnsupportedQueryParameter",
            format!("comp={other} is not served by the emulator's blob endpoint"),
        )),
    }
}

async fn get_blob(
    State(ep): State<Arc<BlobEndpoint>>,
    Path((container, blob)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let result = async {
        authorize(&ep, uri.query(), &container, &blob, Permission::Read)?;
        let (mut file, properties) = ep.files.open_blob(&container, &blob).await?;
        let asked = header_text(&headers, "x-ms-range")
            .or_else(|| header_text(&headers, header::RANGE.as_str()));
        let range = match asked {
            Some(text) => Some(byte_range(&text, properties.size)?),
            None => None,
        };
        let (status, length) = match range {
            Some((start, end)) => {
                file.seek(std::io::SeekFrom::Start(start))
                    .await
                    .map_err(|e| BlobError::new(500, "InternalError", e.to_string()))?;
                (StatusCode::PARTIAL_CONTENT, end - start + 1)
            }
            None => (StatusCode::OK, properties.size),
        };
        let mut response = file_body(file.take(length)).into_response();
        *response.status_mut() = status;
        let headers = response.headers_mut();
        common_headers(headers);
        blob_headers(headers, &properties);
        if let Ok(length) = HeaderValue::from_str(&length.to_string()) {
            headers.insert(header::CONTENT_LENGTH, length);
        }
        if let Some((start, end)) = range
            && let Ok(value) =
                HeaderValue::from_str(&format!("bytes {start}-{end}/{}", properties.size))
        {
            headers.insert(header::CONTENT_RANGE, value);
        }
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        let content_type = properties
            .content_type
            .as_deref()
            .and_then(|t| HeaderValue::from_str(t).ok())
            .unwrap_or(HeaderValue::from_static("application/octet-stream"));
        headers.insert(header::CONTENT_TYPE, content_type);
        headers.insert("x-ms-blob-type", HeaderValue::from_static("BlockBlob"));
        Ok(response)
    }
    .await;
    result.unwrap_or_else(error)
}

async fn delete_blob(
    State(ep): State<Arc<BlobEndpoint>>,
    Path((container, blob)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    let result = async {
        authorize(&ep, uri.query(), &container, &blob, Permission::Delete)?;
        ep.files.delete(&container, &blob).await?;
        let mut response = StatusCode::ACCEPTED.into_response();
        common_headers(response.headers_mut());
        Ok(response)
    }
    .await;
    result.unwrap_or_else(error)
}

/// The inclusive byte range `bytes=start-[end]` asks for within a blob of `size` bytes (an
/// end past the blob is cut to it, as Azure does); one that starts past the end is 416.
fn byte_range(text: &str, size: u64) -> Result<(u64, u64), BlobError> {
    let invalid = || {
        BlobError::new(
            416,
            "InvalidRange",
            format!("the range `{text}` is not within the blob's {size} bytes"),
        )
    };
    let spec = text.trim().strip_prefix("bytes=").ok_or_else(|| {
        BlobError::new(400, "InvalidHeaderValue", "a range must be bytes=start-end")
    })?;
    let (start, end) = spec.split_once('-').ok_or_else(|| {
        BlobError::new(400, "InvalidHeaderValue", "a range must be bytes=start-end")
    })?;
    let start: u64 = start.trim().parse().map_err(|_| {
        BlobError::new(400, "InvalidHeaderValue", "a range must be bytes=start-end")
    })?;
    let end = match end.trim() {
        "" => u64::MAX,
        end => end.parse().map_err(|_| {
            BlobError::new(400, "InvalidHeaderValue", "a range must be bytes=start-end")
        })?,
    };
    if start >= size || end < start {
        return Err(invalid());
    }
    Ok((start, end.min(size - 1)))
}

/// Checks the container and the SAS before anything else.
fn authorize(
    ep: &BlobEndpoint,
    query: Option<&str>,
    container: &str,
    blob: &str,
    permission: Permission,
) -> Result<(), BlobError> {
    if !super::valid_container_name(container) {
        return Err(BlobError::new(
            400,
            "InvalidResourceName",
            "a container name is 3 to 63 lowercase letters, digits and single hyphens",
        ));
    }
    ep.signer
        .verify(
            query,
            container,
            blob,
            permission,
            OffsetDateTime::now_utc(),
        )
        .map_err(|refusal| BlobError::new(403, refusal.code, refusal.message))
}

fn created(properties: Option<&BlobProperties>) -> Response {
    let mut response = StatusCode::CREATED.into_response();
    let headers = response.headers_mut();
    common_headers(headers);
    headers.insert(
        "x-ms-request-server-encrypted",
        HeaderValue::from_static("true"),
    );
    if let Some(properties) = properties {
        blob_headers(headers, properties);
    }
    response
}

fn common_headers(headers: &mut HeaderMap) {
    let id = uuid::Uuid::new_v4().hyphenated().to_string();
    if let Ok(id) = HeaderValue::from_str(&id) {
        headers.insert("x-ms-request-id", id);
    }
    headers.insert("x-ms-version", HeaderValue::from_static(VERSION));
    if let Ok(date) = HeaderValue::from_str(&http_date(OffsetDateTime::now_utc())) {
        headers.insert(header::DATE, date);
    }
}

fn blob_headers(headers: &mut HeaderMap, properties: &BlobProperties) {
    if let Ok(etag) = HeaderValue::from_str(&properties.etag) {
        headers.insert(header::ETAG, etag);
    }
    if let Ok(modified) = HeaderValue::from_str(&http_date(properties.last_modified)) {
        headers.insert(header::LAST_MODIFIED, modified);
    }
}

/// An Azure Storage error: XML body, `x-ms-error-code`.
fn error(e: BlobError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{}</Code><Message>{}</Message></Error>",
        e.code,
        xml_escape(&e.message)
    );
    tracing::debug!(status = e.status, code = e.code, message = %e.message, "blob request failed");
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    common_headers(headers);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    headers.insert("x-ms-error-code", HeaderValue::from_static(e.code));
    response
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn xml_unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The block ids of a `<BlockList>` body, in order (`Latest`, `Committed` and `Uncommitted`
/// alike: the emulator keeps only uncommitted blocks, so each must have been put).
fn block_ids(body: &[u8]) -> Result<Vec<String>, BlobError> {
    let invalid = |why: &str| BlobError::new(400, "InvalidXmlDocument", why.to_owned());
    let text = std::str::from_utf8(body).map_err(|_| invalid("the block list is not UTF-8"))?;
    if !text.contains("<BlockList>") {
        return Err(invalid("the body is not a <BlockList> document"));
    }
    let mut ids = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        let Some(end) = rest.find('>') else { break };
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if matches!(tag, "Latest" | "Committed" | "Uncommitted") {
            let close = format!("</{tag}>");
            let stop = rest
                .find(&close)
                .ok_or_else(|| invalid("an element of the block list is not closed"))?;
            ids.push(xml_unescape(rest[..stop].trim()));
            rest = &rest[stop + close.len()..];
        }
    }
    Ok(ids)
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    crate::http::query_pairs(query)
}

/// An RFC 7231 date (`Thu, 03 Dec 2026 06:30:00 GMT`).
fn http_date(t: OffsetDateTime) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[t.weekday().number_days_from_monday() as usize],
        t.day(),
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_lists_parse_in_order() {
        let xml = b"<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n<BlockList><Latest>MDA=</Latest><Uncommitted>MDE=</Uncommitted><Committed>MDI=</Committed></BlockList>";
        assert_eq!(block_ids(xml).unwrap(), ["MDA=", "MDE=", "MDI="]);
        assert!(block_ids(b"<Other/>").is_err());
        assert!(block_ids(b"<BlockList><Latest>x</BlockList>").is_err());
    }

    #[test]
    fn byte_ranges_are_cut_to_the_blob() {
        assert_eq!(byte_range("bytes=0-33554431", 3600).unwrap(), (0, 3599));
        assert_eq!(byte_range("bytes=10-19", 3600).unwrap(), (10, 19));
        assert_eq!(byte_range("bytes=100-", 3600).unwrap(), (100, 3599));
        assert_eq!(byte_range("bytes=3600-", 3600).unwrap_err().status, 416);
        assert_eq!(byte_range("bytes=0-0", 0).unwrap_err().status, 416);
        assert_eq!(byte_range("items=0-1", 10).unwrap_err().status, 400);
    }

    #[test]
    fn http_dates_are_rfc_7231() {
        let t = time::Date::from_calendar_date(2026, time::Month::December, 3)
            .unwrap()
            .with_hms(6, 30, 5)
            .unwrap()
            .assume_utc();
        assert_eq!(http_date(t), "Thu, 03 Dec 2026 06:30:05 GMT");
    }
}
