//! Client options: [`HttpOptions`] for the HTTPS pipeline every service client shares, and
//! [`ServiceClientOptions`] for the hub's service client (HTTPS plus AMQP).

use std::net::IpAddr;
use std::time::Duration;

use azure_iot_core::ExponentialBackoff;
use azure_iot_core::retry::{RetryPolicy, SharedRetryPolicy};

/// The REST API version this client speaks (the one the official SDKs use).
pub const API_VERSION: &str = "2021-04-12";

/// Options of the HTTPS [`Pipeline`](crate::http::Pipeline): trust, port, timeouts, token
/// lifetime and retries. The hub's [`ServiceClient`](crate::ServiceClient) and the
/// provisioning service client both take them.
///
/// ```
/// use std::time::Duration;
/// use azure_iot_service::HttpOptions;
///
/// let options = HttpOptions::default()
///     .request_timeout(Duration::from_secs(30))
///     .https_port(8443);
/// ```
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub(crate) trusted_ca_pem: Option<String>,
    pub(crate) https_port: u16,
    pub(crate) connect_address: Option<IpAddr>,
    pub(crate) request_timeout: Duration,
    pub(crate) token_ttl: Duration,
    pub(crate) retry_policy: SharedRetryPolicy,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            trusted_ca_pem: None,
            https_port: 443,
            connect_address: None,
            request_timeout: Duration::from_secs(60),
            token_ttl: azure_iot_core::sas::DEFAULT_TOKEN_TTL,
            retry_policy: SharedRetryPolicy::new(ExponentialBackoff {
                max_retries: Some(4),
                max_elapsed: Some(Duration::from_secs(60)),
                ..ExponentialBackoff::default()
            }),
        }
    }
}

impl HttpOptions {
    /// Trust this CA (PEM) instead of the operating system's roots: the emulator's `ca.pem`.
    pub fn trusted_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.trusted_ca_pem = Some(pem.into());
        self
    }

    /// The HTTPS port (443 on Azure).
    pub fn https_port(mut self, port: u16) -> Self {
        self.https_port = port;
        self
    }

    /// Connect to `address` instead of resolving the service's host name, which still names
    /// the service in TLS (server name and certificate check), in the `Host` header and in the
    /// SAS token. For a name DNS does not know: an emulator started with a host name that is
    /// not in DNS, or a service behind a private address.
    pub fn connect_address(mut self, address: IpAddr) -> Self {
        self.connect_address = Some(address);
        self
    }

    /// How long one HTTP request may take (60 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The lifetime of the SAS tokens the client signs (1 hour); renewed on the next request
    /// after 85 % of it. Lifetimes of seconds are for tests; at least 1 s.
    pub fn token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = ttl;
        self
    }

    /// How transient failures are retried. The default is exponential backoff with jitter,
    /// at most 4 retries within 60 s; [`NoRetry`](azure_iot_core::NoRetry) turns retries off.
    /// Permanent failures (bad request, not found, unauthorized, untrusted certificate, ...)
    /// are never retried, whatever the policy says.
    ///
    /// Only requests that are safe to repeat are retried after the service may have seen
    /// them; a direct method call, a create or a bulk operation is retried only when it never
    /// reached the service or the service answered 429.
    pub fn retry_policy(mut self, policy: impl RetryPolicy + 'static) -> Self {
        self.retry_policy = SharedRetryPolicy::new(policy);
        self
    }
}

/// Options for a [`ServiceClient`](crate::ServiceClient): the [`HttpOptions`] and the AMQP port.
///
/// ```
/// use std::time::Duration;
/// use azure_iot_service::ServiceClientOptions;
///
/// let options = ServiceClientOptions::default()
///     .request_timeout(Duration::from_secs(30))
///     .https_port(8443);
/// ```
#[derive(Debug, Clone)]
pub struct ServiceClientOptions {
    pub(crate) http: HttpOptions,
    pub(crate) amqp_port: u16,
}

impl Default for ServiceClientOptions {
    fn default() -> Self {
        Self {
            http: HttpOptions::default(),
            amqp_port: 5671,
        }
    }
}

impl ServiceClientOptions {
    /// Trust this CA (PEM) instead of the operating system's roots: the emulator's `ca.pem`.
    pub fn trusted_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.http = self.http.trusted_ca_pem(pem);
        self
    }

    /// The HTTPS port (443 on the real hub).
    pub fn https_port(mut self, port: u16) -> Self {
        self.http = self.http.https_port(port);
        self
    }

    /// The AMQP port for cloud-to-device messages and feedback (5671 on the real hub).
    pub fn amqp_port(mut self, port: u16) -> Self {
        self.amqp_port = port;
        self
    }

    /// How long one HTTP request may take, and how long an AMQP operation may wait (60 s).
    /// A direct method call waits for its own response and connect timeouts on top of this.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.http = self.http.request_timeout(timeout);
        self
    }

    /// The lifetime of the SAS tokens the client signs (1 hour). Tokens are renewed after 85 %
    /// of it: on the AMQP connection by a new CBS put-token, over HTTPS on the next request.
    /// Lifetimes of seconds are for tests; at least 1 s.
    pub fn token_ttl(mut self, ttl: Duration) -> Self {
        self.http = self.http.token_ttl(ttl);
        self
    }

    /// How transient failures are retried: see [`HttpOptions::retry_policy`].
    pub fn retry_policy(mut self, policy: impl RetryPolicy + 'static) -> Self {
        self.http = self.http.retry_policy(policy);
        self
    }

    /// The HTTPS part of these options.
    pub fn http(&self) -> &HttpOptions {
        &self.http
    }
}
