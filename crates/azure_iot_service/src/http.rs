//! The HTTPS pipeline every service client of this workspace sends its requests through: one
//! reqwest client on the ring TLS configuration, a SAS token of a shared access policy on every
//! request, the retry policy, and error bodies (IoT Hub's two formats, DPS's) turned into typed
//! [`Error`]s.
//!
//! [`ServiceClient`](crate::ServiceClient) is built on it, and so is the provisioning service
//! client (`azure_iot_provisioning_service`): a [`Pipeline`] serves any host whose SAS
//! audience is its host name, with the api-version its caller names (ADR 0016).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_iot_core::encoding::encode_component;
use azure_iot_core::retry::{Classify, ErrorClass, RetryAttempt, RetryPolicy};
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use azure_iot_protocol::tls::{client_config_builder, root_store};

use crate::credential::{SharedAccessPolicy, TokenSource};
use crate::error::{Error, ErrorKind, HubErrorBody, Result};
use crate::options::HttpOptions;

/// One request: method, path, query parameters, headers, JSON body, and whether it may be
/// sent twice.
#[derive(Debug)]
pub struct Request {
    method: Method,
    path: String,
    query: Vec<(&'static str, String)>,
    headers: Vec<(&'static str, String)>,
    body: Option<Bytes>,
    /// Whether sending it twice has the effect of sending it once.
    idempotent: bool,
    /// An error status whose body the caller reads itself (bulk's 400).
    also_ok: Option<u16>,
    timeout: Option<Duration>,
}

impl Request {
    /// A request for `path` (already percent-encoded), idempotent unless the method is POST.
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        let idempotent = method != Method::POST;
        Self {
            method,
            path: path.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            idempotent,
            also_ok: None,
            timeout: None,
        }
    }

    /// The body: `body` as JSON.
    pub fn json(mut self, body: &impl Serialize) -> Result<Self> {
        let bytes = serde_json::to_vec(body).map_err(|e| {
            Error::with_source(
                ErrorKind::InvalidArgument,
                "the body cannot be serialized",
                e,
            )
        })?;
        self.body = Some(bytes.into());
        Ok(self)
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Adds a query parameter (percent-encoded when sent).
    pub fn query(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.query.push((name, value.into()));
        self
    }

    /// The `If-Match` header of `condition`.
    pub fn if_match(self, condition: &crate::IfMatch) -> Self {
        let value = condition.header_value();
        self.header("If-Match", value)
    }

    /// Whether the request may be repeated after the service may have acted on it.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// Treats `status` as an answer rather than an error (its body is the caller's to read).
    pub fn also_ok(mut self, status: u16) -> Self {
        self.also_ok = Some(status);
        self
    }

    /// A timeout of this request instead of the options' one.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// A successful answer.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// The body read as JSON `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::with_source(
                ErrorKind::Protocol,
                format!(
                    "the service's answer ({}) is not the JSON this client expects",
                    self.status
                ),
                e,
            )
        })
    }

    /// A response header, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The HTTPS side of a service client: requests to one host, signed with one shared access
/// policy, retried by one policy.
///
/// Cheap to clone: clones share the connection pool and the token cache. `Debug` shows the
/// base URL and the policy name, never the key.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<PipelineInner>,
}

struct PipelineInner {
    client: reqwest::Client,
    base: String,
    api_version: &'static str,
    tokens: Arc<TokenSource>,
    tls: Arc<rustls::ClientConfig>,
    retry: azure_iot_core::retry::SharedRetryPolicy,
    timeout: Duration,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("base", &self.inner.base)
            .field("api_version", &self.inner.api_version)
            .field("policy", &self.policy_name())
            .finish()
    }
}

/// A TLS client configuration (ring provider) trusting `trusted_ca_pem`, or the operating
/// system's roots when it is `None`.
pub(crate) fn tls_config(trusted_ca_pem: Option<&str>) -> Result<rustls::ClientConfig> {
    let roots = root_store(trusted_ca_pem).map_err(|e| {
        let kind = if e.is_invalid_argument() {
            ErrorKind::InvalidArgument
        } else {
            ErrorKind::Transport
        };
        Error::with_source(kind, e.to_string(), e)
    })?;
    Ok(client_config_builder(roots)
        .map_err(|e| Error::with_source(ErrorKind::Transport, "TLS configuration", e))?
        .with_no_client_auth())
}

impl Pipeline {
    /// A pipeline to `https://{host}` (and `options`' port) whose requests carry
    /// `api-version={api_version}` and a SAS token for the audience `host` signed with
    /// `policy`.
    pub fn new(
        host: &str,
        policy: SharedAccessPolicy,
        options: &HttpOptions,
        api_version: &'static str,
    ) -> Result<Self> {
        if host.is_empty() {
            return Err(Error::invalid("the host name is empty"));
        }
        let tls = tls_config(options.trusted_ca_pem.as_deref())?;
        let tokens = Arc::new(TokenSource::new(host, policy, options.token_ttl));
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(tls.clone())
            .user_agent(concat!("azure-iot-rs-service/", env!("CARGO_PKG_VERSION")));
        if let Some(address) = options.connect_address {
            builder = builder.resolve(host, SocketAddr::new(address, options.https_port));
        }
        let client = builder
            .build()
            .map_err(|e| Error::with_source(ErrorKind::Transport, "HTTP client set-up", e))?;
        let base = if options.https_port == 443 {
            format!("https://{host}")
        } else {
            format!("https://{host}:{}", options.https_port)
        };
        Ok(Self {
            inner: Arc::new(PipelineInner {
                client,
                base,
                api_version,
                tokens,
                tls: Arc::new(tls),
                retry: options.retry_policy.clone(),
                timeout: options.request_timeout,
            }),
        })
    }

    /// The TLS configuration (for other connections to the same service: AMQP).
    pub(crate) fn tls(&self) -> &Arc<rustls::ClientConfig> {
        &self.inner.tls
    }

    /// The token source (for other connections to the same service: CBS).
    pub(crate) fn tokens(&self) -> &Arc<TokenSource> {
        &self.inner.tokens
    }

    /// Sends `request`, retrying what the policy allows; a status ≥ 300 is an error.
    pub async fn send(&self, request: Request) -> Result<Reply> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            match self.send_once(&request).await {
                Ok(reply) => return Ok(reply),
                Err(failure) => {
                    let class = failure.error.error_class();
                    let may_repeat = request.idempotent
                        || !failure.reached_hub
                        || class == ErrorClass::Throttled;
                    // Permanent failures are final whatever the policy would say.
                    let delay = if may_repeat && class.is_retryable() {
                        self.inner.retry.next_delay(&RetryAttempt::new(
                            attempt,
                            class,
                            started.elapsed(),
                        ))
                    } else {
                        None
                    };
                    let Some(delay) = delay else {
                        return Err(failure.error);
                    };
                    tracing::debug!(
                        method = %request.method,
                        path = %request.path,
                        attempt,
                        ?delay,
                        error = %failure.error,
                        "retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn send_once(&self, request: &Request) -> Result<Reply, Failure> {
        let inner = &*self.inner;
        let mut url = format!(
            "{}{}?api-version={}",
            inner.base, request.path, inner.api_version
        );
        for (name, value) in &request.query {
            url.push('&');
            url.push_str(name);
            url.push('=');
            url.push_str(&encode_component(value));
        }
        let mut builder = inner
            .client
            .request(request.method.clone(), &url)
            .timeout(request.timeout.unwrap_or(inner.timeout))
            .header("Authorization", inner.tokens.header())
            .header("Accept", "application/json");
        for (name, value) in &request.headers {
            builder = builder.header(*name, value);
        }
        if let Some(body) = &request.body {
            builder = builder
                .header(
                    "Content-Type",
                    HeaderValue::from_static("application/json; charset=utf-8"),
                )
                .body(body.clone());
        }
        let response = builder.send().await.map_err(|e| {
            let reached_hub = !e.is_connect();
            let tls = tls_failure(&e);
            let kind = if tls.is_some() {
                ErrorKind::Tls
            } else if e.is_timeout() {
                ErrorKind::Timeout
            } else {
                ErrorKind::Transport
            };
            let what = if let Some(tls) = &tls {
                tls.as_str()
            } else if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "could not connect"
            } else {
                "failed"
            };
            Failure {
                error: Error::with_source(
                    kind,
                    format!("{} {}: {what}", request.method, request.path),
                    e.without_url(),
                ),
                reached_hub,
            }
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| Failure {
            error: Error::with_source(
                ErrorKind::Transport,
                format!("{} {}: the answer broke off", request.method, request.path),
                e.without_url(),
            ),
            reached_hub: true,
        })?;
        let reply = Reply {
            status,
            headers,
            body,
        };
        if status.as_u16() < 300 || request.also_ok == Some(status.as_u16()) {
            return Ok(reply);
        }
        Err(Failure {
            error: reply.into_error(&request.method, &request.path),
            reached_hub: true,
        })
    }

    /// The name of the shared access policy requests are signed with.
    pub fn policy_name(&self) -> &str {
        self.inner.tokens.policy_name()
    }
}

impl Reply {
    /// The typed error this (error) answer stands for.
    pub fn into_error(self, method: &Method, path: &str) -> Error {
        let Reply {
            status,
            headers,
            body,
        } = self;
        let parsed = HubErrorBody::parse(&body);
        // IoT Hub's header names the code (`DeviceNotFound`) in both body formats; its newer
        // body format only has the number. DPS's body has the number, its header may too.
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let code = header("iothub-errorcode")
            .or(parsed.code)
            .or_else(|| header("x-ms-error-code"));
        let message = format!(
            "{method} {path}: {}",
            parsed
                .message
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned())
        );
        Error::from_hub(status.as_u16(), code, parsed.tracking_id, message)
    }
}

/// The TLS error in `error`'s chain, if the failure was TLS's (certificate, handshake).
pub(crate) fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    find_rustls(error).map(|tls| format!("TLS with the service failed: {tls}"))
}

/// Walks sources and the errors that `io::Error`s wrap (their `source()` skips the wrapped
/// error itself, which is where rustls puts its own).
fn find_rustls<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        // Only what a retry cannot fix: trust and incompatibility, not a garbled record.
        return matches!(
            tls,
            rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::PeerIncompatible(_)
                | rustls::Error::UnsupportedNameType
        )
        .then_some(tls);
    }
    if let Some(inner) = error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        && let Some(tls) = find_rustls(inner)
    {
        return Some(tls);
    }
    error.source().and_then(find_rustls)
}

/// A failed attempt, and whether the hub may have acted on it.
struct Failure {
    error: Error,
    reached_hub: bool,
}
