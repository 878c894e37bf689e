//! File upload: the hub hands out a blob SAS URI, the device writes the blob to storage, then
//! tells the hub how it went (which queues a file-upload notification for the back end).
//!
//! These are HTTPS calls to the hub (`POST /devices/{id}/files`, `POST
//! /devices/{id}/files/notifications`) and to the storage endpoint the hub names, whatever the
//! client's transport: IoT Hub offers file upload only over HTTPS. The HTTP client is built on
//! first use, from the connection's own TLS settings (its trusted roots, its X.509 certificate),
//! so a client that never uploads pays nothing for it. Requests carry a SAS token signed like
//! the connection's (none for X.509 devices, whose certificate authenticates them) and are
//! bounded by the operation timeout.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use azure_iot_protocol::Identity;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::auth::Credential;
use crate::error::{Error, ErrorKind, Result};
use crate::supervisor::Auth;
use crate::transport::Dial;

/// The api-version of the hub's device file-upload calls.
const API_VERSION: &str = "2021-04-12";
/// The storage REST version the blob upload speaks.
const STORAGE_VERSION: &str = "2021-08-06";

/// Where to upload one file: the hub's answer to [`DeviceClient::get_storage_info_for_blob`].
///
/// [`DeviceClient::get_storage_info_for_blob`]: crate::DeviceClient::get_storage_info_for_blob
///
/// `Debug` leaves out the SAS token.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlobUploadInfo {
    /// Names this upload in [`notify_blob_upload_status`](crate::DeviceClient::notify_blob_upload_status).
    pub correlation_id: String,
    /// The storage account's host (with a port when not 443).
    pub host_name: String,
    /// The container.
    pub container_name: String,
    /// The blob: `{deviceId}/{name asked for}`.
    pub blob_name: String,
    /// The blob's SAS query string, starting with `?`. A secret: it grants writing the blob.
    pub sas_token: String,
}

impl std::fmt::Debug for BlobUploadInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobUploadInfo")
            .field("correlation_id", &self.correlation_id)
            .field("host_name", &self.host_name)
            .field("container_name", &self.container_name)
            .field("blob_name", &self.blob_name)
            .finish_non_exhaustive()
    }
}

impl BlobUploadInfo {
    /// The blob's URI with its SAS token: `https://{host}/{container}/{blob}{sas}`, as every
    /// SDK builds it (the blob name percent-encoded, its `/` kept). A secret, like the token.
    pub fn sas_uri(&self) -> String {
        let blob: Vec<String> = self
            .blob_name
            .split('/')
            .map(|segment| percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string())
            .collect();
        format!(
            "https://{}/{}/{}{}",
            self.host_name,
            self.container_name,
            blob.join("/"),
            self.sas_token
        )
    }

    fn from_json(value: &Value) -> Result<Self> {
        let field = |name: &str| {
            value[name].as_str().map(str::to_owned).ok_or_else(|| {
                Error::new(
                    ErrorKind::Protocol,
                    format!("the hub's file-upload answer has no {name}"),
                )
            })
        };
        Ok(Self {
            correlation_id: field("correlationId")?,
            host_name: field("hostName")?,
            container_name: field("containerName")?,
            blob_name: field("blobName")?,
            sas_token: field("sasToken")?,
        })
    }
}

/// Characters percent-encoded in a blob path segment (RFC 3986 unreserved characters stay).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A client's file-upload side: what it needs to call the hub over HTTPS.
pub(crate) struct FileUploads {
    auth: Arc<Auth>,
    identity: Identity,
    /// `https://{host}[:{port}]`.
    base: String,
    dial: Dial,
    timeout: Duration,
    http: OnceLock<reqwest::Client>,
}

impl std::fmt::Debug for FileUploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileUploads")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl FileUploads {
    pub(crate) fn new(
        auth: Arc<Auth>,
        identity: Identity,
        dial: Dial,
        port: u16,
        timeout: Duration,
    ) -> Self {
        let host = &dial.host;
        let base = if port == 443 {
            format!("https://{host}")
        } else {
            format!("https://{host}:{port}")
        };
        Self {
            auth,
            identity,
            base,
            dial,
            timeout,
            http: OnceLock::new(),
        }
    }

    /// Calls the hub and the blob service through `client` (a pool shared with other
    /// devices, [`ClientOptions::http_client`](crate::ClientOptions::http_client)).
    pub(crate) fn with_http_client(self, client: reqwest::Client) -> Self {
        // A fresh OnceLock: setting it cannot fail.
        let _ = self.http.set(client);
        self
    }

    fn http(&self) -> Result<&reqwest::Client> {
        if let Some(client) = self.http.get() {
            return Ok(client);
        }
        let client = crate::transport::http_client(&self.dial, self.timeout)?;
        Ok(self.http.get_or_init(|| client))
    }

    /// The device's path on the hub (`/devices/{id}`), or the error for a module.
    fn device_path(&self) -> Result<String> {
        if self.identity.is_module() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "IoT Hub offers file upload to devices, not modules",
            ));
        }
        let id = percent_encoding::utf8_percent_encode(self.identity.device_id(), SEGMENT);
        Ok(format!("{}/devices/{id}", self.base))
    }

    /// POSTs `body` to the hub at `path`, signed; the answer's body when it succeeded.
    async fn post(&self, url: &str, body: &Value, what: &str) -> Result<Bytes> {
        let mut request = self
            .http()?
            .post(format!("{url}?api-version={API_VERSION}"))
            .json(body);
        if !matches!(self.auth.credential, Credential::X509) {
            let (token, _) = self.auth.password().await?;
            request = request.header("Authorization", token);
        }
        let response = request.send().await.map_err(|e| transport_error(what, e))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport_error(what, e))?;
        if (200..300).contains(&status) {
            Ok(bytes)
        } else {
            Err(status_error(what, status, &bytes))
        }
    }

    /// `POST /devices/{id}/files`: where to upload `blob_name`.
    pub(crate) async fn storage_info(&self, blob_name: &str) -> Result<BlobUploadInfo> {
        if blob_name.is_empty() || blob_name.len() > 1024 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "a blob name is 1 to 1,024 characters, not {}",
                    blob_name.len()
                ),
            ));
        }
        let url = format!("{}/files", self.device_path()?);
        let what = "asking the hub where to upload";
        let body = self
            .post(&url, &json!({ "blobName": blob_name }), what)
            .await?;
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| Error::with_source(ErrorKind::Protocol, format!("{what}: not JSON"), e))?;
        BlobUploadInfo::from_json(&value)
    }

    /// `POST /devices/{id}/files/notifications`: how the upload `correlation_id` went.
    pub(crate) async fn notify(
        &self,
        correlation_id: &str,
        is_success: bool,
        status_code: i32,
        status_description: &str,
    ) -> Result<()> {
        let url = format!("{}/files/notifications", self.device_path()?);
        let body = json!({
            "correlationId": correlation_id,
            "isSuccess": is_success,
            "statusCode": status_code,
            "statusDescription": status_description,
        });
        self.post(&url, &body, "notifying the hub of an upload")
            .await
            .map(drop)
    }

    /// Writes `data` as a block blob at `info`'s SAS URI (one Put Blob).
    pub(crate) async fn put_blob(&self, info: &BlobUploadInfo, data: Bytes) -> Result<()> {
        let request = self
            .http()?
            .put(info.sas_uri())
            .header("x-ms-blob-type", "BlockBlob")
            .header("x-ms-version", STORAGE_VERSION)
            .header("Content-Type", "application/octet-stream")
            .body(data);
        storage_call(request, "uploading the blob").await
    }

    /// Writes what `reader` yields as a block blob at `info`'s SAS URI: blocks of
    /// [`BLOCK_SIZE`], [`BLOCKS_IN_FLIGHT`] at once (so at most their product is held in
    /// memory, whatever the size), each retried after a network failure or a storage error
    /// 5xx up to [`BLOCK_ATTEMPTS`] times (an interrupted upload resumes where it was, within
    /// the SAS lifetime), then the block list that commits them. `progress` hears the bytes
    /// stored so far after each block. Returns the blob's size.
    pub(crate) async fn put_blocks<R>(
        &self,
        info: &BlobUploadInfo,
        mut reader: R,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64>
    where
        R: tokio::io::AsyncRead + Unpin + Send,
    {
        use futures_util::StreamExt;
        use tokio::io::AsyncReadExt;

        let base = info.sas_uri();
        let mut ids: Vec<String> = Vec::new();
        let mut in_flight = futures_util::stream::FuturesUnordered::new();
        let mut stored = 0u64;
        let mut ended = false;
        while !ended || !in_flight.is_empty() {
            if !ended && in_flight.len() < BLOCKS_IN_FLIGHT {
                let mut block = Vec::with_capacity(BLOCK_SIZE);
                while block.len() < BLOCK_SIZE {
                    let read = (&mut reader)
                        .take((BLOCK_SIZE - block.len()) as u64)
                        .read_to_end(&mut block)
                        .await
                        .map_err(|e| {
                            Error::with_source(ErrorKind::InvalidArgument, "reading the file", e)
                        })?;
                    if read == 0 {
                        ended = true;
                        break;
                    }
                }
                if !block.is_empty() {
                    if ids.len() == MAX_BLOCKS {
                        return Err(Error::new(
                            ErrorKind::InvalidArgument,
                            format!(
                                "a block blob holds at most {MAX_BLOCKS} blocks of {BLOCK_SIZE} bytes"
                            ),
                        ));
                    }
                    let id = block_id(ids.len());
                    ids.push(id.clone());
                    let url = format!(
                        "{base}&comp=block&blockid={}",
                        percent_encoding::utf8_percent_encode(&id, SEGMENT)
                    );
                    let block = Bytes::from(block);
                    in_flight.push(self.put_block(url, block));
                }
                continue;
            }
            if let Some(done) = in_flight.next().await {
                stored += done?;
                progress(stored);
            }
        }
        let mut list = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        for id in &ids {
            list.push_str("<Latest>");
            list.push_str(id);
            list.push_str("</Latest>");
        }
        list.push_str("</BlockList>");
        let request = self
            .http()?
            .put(format!("{base}&comp=blocklist"))
            .header("x-ms-version", STORAGE_VERSION)
            .header("Content-Type", "application/xml")
            .body(list);
        storage_call(request, "committing the blob's blocks").await?;
        Ok(stored)
    }

    /// Puts one block, retrying what a retry can fix; the block's size once stored.
    async fn put_block(&self, url: String, block: Bytes) -> Result<u64> {
        let mut attempt = 1;
        loop {
            let request = self
                .http()?
                .put(url.as_str())
                .header("x-ms-version", STORAGE_VERSION)
                .body(block.clone());
            match storage_call(request, "uploading a block").await {
                Ok(()) => return Ok(block.len() as u64),
                Err(e) if attempt < BLOCK_ATTEMPTS && retryable(&e) => {
                    tracing::debug!(error = %e, attempt, "a block upload failed; trying again");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The size of a block of a streamed upload.
pub(crate) const BLOCK_SIZE: usize = 4 * 1024 * 1024;
/// Blocks of a streamed upload on their way at once.
pub(crate) const BLOCKS_IN_FLIGHT: usize = 4;
/// Tries per block.
const BLOCK_ATTEMPTS: u32 = 4;
/// The most blocks a block blob has (Azure Storage's limit).
const MAX_BLOCKS: usize = 50_000;

/// The id of block `index`: base64 of a fixed-width name (a blob's block ids must all have
/// the same length).
fn block_id(index: usize) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("block-{index:06}"))
}

/// Whether trying again may work: no answer, or a storage server error.
fn retryable(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Connect | ErrorKind::Disconnected | ErrorKind::Timeout
    ) || matches!(e.kind(), ErrorKind::Status(status) if status >= 500)
}

/// Sends a storage request; `Ok` on a 2xx answer.
async fn storage_call(request: reqwest::RequestBuilder, what: &str) -> Result<()> {
    let response = request.send().await.map_err(|e| transport_error(what, e))?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    let body = response.bytes().await.unwrap_or_default();
    Err(status_error(what, status, &body))
}

/// A request that got no answer. reqwest's message names the URL, whose query may hold a SAS
/// token: keep only the kind of failure.
fn transport_error(what: &str, e: reqwest::Error) -> Error {
    let (kind, why) = if e.is_timeout() {
        (ErrorKind::Timeout, "timed out")
    } else if e.is_connect() {
        (ErrorKind::Connect, "cannot connect")
    } else {
        (ErrorKind::Disconnected, "the connection failed")
    };
    Error::with_source(kind, format!("{what}: {why}"), e.without_url())
}

/// An answer with an error status: the hub's (or storage's) error code, when it gave one.
fn status_error(what: &str, status: u16, body: &[u8]) -> Error {
    let code = error_code(body);
    let kind = match status {
        401 => ErrorKind::Unauthorized,
        400 | 413 => ErrorKind::InvalidArgument,
        403 | 404 | 409 | 412 => ErrorKind::Refused,
        _ => ErrorKind::Status(status),
    };
    let detail = code.map(|c| format!(" ({c})")).unwrap_or_default();
    Error::new(kind, format!("{what}: status {status}{detail}"))
}

/// The error code of a hub error body (`{"Message":"ErrorCode:Name;…"}`) or a storage error
/// body (`<Code>Name</Code>`).
fn error_code(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        let message = value["Message"].as_str().or(value["message"].as_str())?;
        let code = message.strip_prefix("ErrorCode:")?.split(';').next()?;
        return Some(code.to_owned());
    }
    let start = text.find("<Code>")? + "<Code>".len();
    let end = text[start..].find("</Code>")? + start;
    Some(text[start..end].to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn info(blob: &str) -> BlobUploadInfo {
        BlobUploadInfo {
            correlation_id: "c1".into(),
            host_name: "account.blob.core.windows.net".into(),
            container_name: "uploads".into(),
            blob_name: blob.into(),
            sas_token: "?sv=2021&sig=SECRET".into(),
        }
    }

    #[test]
    fn the_sas_uri_is_built_as_every_sdk_builds_it() {
        assert_eq!(
            info("dev1/logs/a b+c.txt").sas_uri(),
            "https://account.blob.core.windows.net/uploads/dev1/logs/a%20b%2Bc.txt?sv=2021&sig=SECRET"
        );
    }

    #[test]
    fn debug_leaves_out_the_sas_token() {
        let shown = format!("{:?}", info("dev1/x"));
        assert!(
            shown.contains("dev1/x") && !shown.contains("SECRET"),
            "{shown}"
        );
    }

    #[test]
    fn error_codes_of_the_hub_and_of_storage() {
        let hub =
            br#"{"Message":"ErrorCode:DeviceNotFound;no such device","ExceptionMessage":"x"}"#;
        assert_eq!(error_code(hub).as_deref(), Some("DeviceNotFound"));
        let storage = b"<?xml version=\"1.0\"?><Error><Code>AuthenticationFailed</Code></Error>";
        assert_eq!(error_code(storage).as_deref(), Some("AuthenticationFailed"));
        assert_eq!(error_code(b"oops"), None);
        let e = status_error("uploading", 403, storage);
        assert_eq!(e.kind(), ErrorKind::Refused);
        assert!(e.to_string().contains("403 (AuthenticationFailed)"), "{e}");
    }

    #[test]
    fn an_answer_without_a_field_is_a_protocol_error() {
        let value =
            json!({"correlationId": "c", "hostName": "h", "containerName": "c", "blobName": "b"});
        let e = BlobUploadInfo::from_json(&value).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        assert!(e.to_string().contains("sasToken"), "{e}");
    }
}
