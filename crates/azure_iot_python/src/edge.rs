//! The IoT Edge workload API, as a module inside an Edge deployment reaches it
//! (`create_from_edge_environment`): the trust bundle (the CA of the Edge hub's certificate)
//! and signatures for the module's SAS tokens, made by the Edge daemon with the module's key,
//! which the module never sees.
//!
//! The daemon listens where `IOTEDGE_WORKLOADURI` says: `unix:///var/run/iotedge/workload.sock`
//! or `http://host:port/`. Two calls, as azure-iot-device 2.x makes them:
//! `GET /trust-bundle?api-version=…` → `{"certificate": PEM}` and
//! `POST /modules/{module}/genid/{generation}/sign?api-version=…` with
//! `{"keyId": "primary", "algo": "HMACSHA256", "data": base64(text)}` → `{"digest": base64}`.
//! Each is one HTTP/1.1 request on its own connection (`Connection: close`); the answer is
//! read up to [`MAX_RESPONSE`] bytes.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azure_iot_core::encoding::encode_component;
use azure_iot_core::sas::ResourceUri;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest answer read from the daemon (a trust bundle is a few certificates).
const MAX_RESPONSE: usize = 1 << 20;

/// What went wrong talking to the workload API (never holds a signature or a token).
#[derive(Debug)]
pub(crate) struct WorkloadError(String);

impl fmt::Display for WorkloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WorkloadError {}

fn failed(what: impl Into<String>) -> WorkloadError {
    WorkloadError(what.into())
}

/// Where the daemon listens.
#[derive(Clone, Debug)]
enum Endpoint {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
}

/// The workload API of one module.
#[derive(Clone, Debug)]
pub(crate) struct Workload {
    endpoint: Endpoint,
    /// `Host` header value.
    authority: String,
    module_id: String,
    generation_id: String,
    api_version: String,
}

impl Workload {
    /// The workload API at `uri` (`unix:///path` or `http://host[:port][/]`) for a module.
    pub(crate) fn new(
        uri: &str,
        module_id: &str,
        generation_id: &str,
        api_version: &str,
    ) -> Result<Self, WorkloadError> {
        let (endpoint, authority) = if let Some(path) = uri.strip_prefix("unix://") {
            let path = path.trim_end_matches('/');
            if path.is_empty() {
                return Err(failed("IOTEDGE_WORKLOADURI names no socket path"));
            }
            (Endpoint::Unix(PathBuf::from(path)), "localhost".to_owned())
        } else if let Some(rest) = uri.strip_prefix("http://") {
            let authority = rest.trim_end_matches('/');
            if authority.is_empty() || authority.contains('/') {
                return Err(failed(
                    "IOTEDGE_WORKLOADURI is not http://host[:port]/ or unix:///path",
                ));
            }
            let (host, port) = match authority.rsplit_once(':') {
                Some((host, port)) => (
                    host,
                    port.parse::<u16>()
                        .map_err(|_| failed("IOTEDGE_WORKLOADURI's port is not a number"))?,
                ),
                None => (authority, 80),
            };
            let endpoint = Endpoint::Tcp {
                host: host.to_owned(),
                port,
            };
            (endpoint, authority.to_owned())
        } else {
            return Err(failed(
                "IOTEDGE_WORKLOADURI must start with unix:// or http://",
            ));
        };
        Ok(Self {
            endpoint,
            authority,
            module_id: module_id.to_owned(),
            generation_id: generation_id.to_owned(),
            api_version: api_version.to_owned(),
        })
    }

    /// The trust bundle: PEM certificates to verify the Edge hub with.
    pub(crate) async fn trust_bundle(&self) -> Result<String, WorkloadError> {
        let path = format!(
            "/trust-bundle?api-version={}",
            encode_component(&self.api_version)
        );
        let answer = self.request("GET", &path, None).await?;
        match answer.get("certificate") {
            Some(Value::String(pem)) => Ok(pem.clone()),
            _ => Err(failed("the trust bundle holds no certificate")),
        }
    }

    /// The daemon's HMAC-SHA256 of `text` with the module's primary key, base64.
    async fn sign(&self, text: &str) -> Result<String, WorkloadError> {
        let path = format!(
            "/modules/{}/genid/{}/sign?api-version={}",
            encode_component(&self.module_id),
            encode_component(&self.generation_id),
            encode_component(&self.api_version)
        );
        let body = serde_json::json!({
            "keyId": "primary",
            "algo": "HMACSHA256",
            "data": STANDARD.encode(text.as_bytes()),
        })
        .to_string();
        let answer = self.request("POST", &path, Some(body)).await?;
        match answer.get("digest") {
            Some(Value::String(digest)) => Ok(digest.clone()),
            _ => Err(failed("the signing answer holds no digest")),
        }
    }

    /// A SAS token for `resource` that lives `ttl`, signed by the daemon.
    pub(crate) async fn token(
        &self,
        resource: &ResourceUri,
        ttl: Duration,
    ) -> Result<String, WorkloadError> {
        let expiry = (SystemTime::now() + ttl)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let sr = encode_component(resource.as_str());
        let digest = self.sign(&format!("{sr}\n{expiry}")).await?;
        Ok(format!(
            "SharedAccessSignature sr={sr}&sig={}&se={expiry}",
            encode_component(&digest)
        ))
    }

    /// One request; the JSON answer of a 2xx status.
    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<Value, WorkloadError> {
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: azure_iot_rs/{}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.authority,
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        let unreachable =
            |e: std::io::Error| failed(format!("the IoT Edge workload API is unreachable: {e}"));
        let raw = match &self.endpoint {
            #[cfg(unix)]
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(unreachable)?;
                exchange(stream, &head, &body).await
            }
            #[cfg(not(unix))]
            Endpoint::Unix(_) => {
                return Err(failed("unix sockets are not available on this platform"));
            }
            Endpoint::Tcp { host, port } => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(unreachable)?;
                exchange(stream, &head, &body).await
            }
        }
        .map_err(|e| failed(format!("the IoT Edge workload API failed: {e}")))?;
        parse_response(&raw)
    }
}

/// Writes the request and reads the whole answer (the daemon closes after it).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    head: &str,
    body: &str,
) -> std::io::Result<Vec<u8>> {
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.flush().await?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE as u64 + 1)
        .read_to_end(&mut raw)
        .await?;
    if raw.len() > MAX_RESPONSE {
        return Err(std::io::Error::other("the answer is larger than 1 MiB"));
    }
    Ok(raw)
}

/// The JSON body of an HTTP/1.1 answer with a 2xx status (plain or chunked body).
fn parse_response(raw: &[u8]) -> Result<Value, WorkloadError> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| failed("the workload API's answer is not HTTP"))?;
    let head = std::str::from_utf8(&raw[..split])
        .map_err(|_| failed("the workload API's answer is not HTTP"))?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| failed("the workload API's answer has no status"))?;
    let chunked = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body).ok_or_else(|| failed("the workload API's chunked body is cut"))?;
    }
    if !(200..300).contains(&status) {
        return Err(failed(format!("the workload API answered status {status}")));
    }
    serde_json::from_slice(&body)
        .map_err(|e| failed(format!("the workload API's answer is not JSON: {e}")))
}

/// The body of a chunked transfer encoding, or `None` if it is malformed.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}
