//! The token providers of the Python clients (the Rust client asks its
//! [`TokenProvider`] for a token whenever it connects):
//!
//! * [`UserToken`]: the token the application gave (`create_from_sastoken`, or a connection
//!   string with `SharedAccessSignature`), replaced by `update_sastoken`. Not renewable: the
//!   Rust client never asks for a fresh one on its own; instead, as azure-iot-device 2.x does,
//!   the client fires `on_new_sastoken_required` [`NEW_TOKEN_MARGIN`] before the token expires
//!   ([`new_token_due`]), and `update_sastoken` reconnects with the new token.
//! * [`EdgeTokens`]: tokens signed by the IoT Edge workload API for a module
//!   (`create_from_edge_environment`), renewed like tokens signed from a key.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use azure_iot_core::sas::{ResourceUri, SasToken};
use azure_iot_device::{TokenProvider, TokenProviderError};
use pyo3::PyResult;
use pyo3::exceptions::PyValueError;

use crate::edge::Workload;

/// How long before a user token expires `on_new_sastoken_required` fires (azure-iot-device
/// 2.x's token update margin).
pub(crate) const NEW_TOKEN_MARGIN: Duration = Duration::from_secs(120);

/// The boxed future a [`TokenProvider`] returns.
type TokenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<String, TokenProviderError>> + Send + 'a>>;

/// The application's current SAS token.
pub(crate) struct UserToken(Mutex<SasToken>);

impl UserToken {
    /// Parses a token (`ValueError` if it is not one; the message never holds it).
    pub(crate) fn parse(text: &str) -> PyResult<SasToken> {
        SasToken::parse(text.trim())
            .map_err(|e| PyValueError::new_err(format!("sastoken is not a SAS token: {e}")))
    }

    /// Holds `token` as the current one.
    pub(crate) fn new(token: SasToken) -> Arc<Self> {
        Arc::new(Self(Mutex::new(token)))
    }

    fn current(&self) -> std::sync::MutexGuard<'_, SasToken> {
        // A poisoned lock only means a panic elsewhere; the token itself is whole.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `token` the current one (the next connection uses it).
    pub(crate) fn replace(&self, token: SasToken) {
        *self.current() = token;
    }

    /// When the current token expires.
    pub(crate) fn expires_at(&self) -> SystemTime {
        self.current().expires_at()
    }

    /// The provider the Rust client reads this token through.
    pub(crate) fn provider(self: &Arc<Self>) -> UserTokenProvider {
        UserTokenProvider(self.clone())
    }
}

/// Hands the Rust client the application's current token; never asks for renewals.
pub(crate) struct UserTokenProvider(Arc<UserToken>);

impl TokenProvider for UserTokenProvider {
    fn token(&self) -> TokenFuture<'_> {
        let text = self.0.current().secret().to_owned();
        Box::pin(async move { Ok(text) })
    }

    fn renewable(&self) -> bool {
        false
    }
}

/// Waits until `on_new_sastoken_required` is due for a token expiring at `expires_at`:
/// [`NEW_TOKEN_MARGIN`] before it (at once if that has passed). One timer, no polling.
pub(crate) async fn new_token_due(expires_at: SystemTime) {
    let due = expires_at
        .checked_sub(NEW_TOKEN_MARGIN)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let wait = due
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    tokio::time::sleep(wait).await;
}

/// Module tokens signed by the IoT Edge workload API.
pub(crate) struct EdgeTokens {
    pub(crate) workload: Workload,
    pub(crate) resource: ResourceUri,
    pub(crate) ttl: Duration,
}

impl TokenProvider for EdgeTokens {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(async move {
            self.workload
                .token(&self.resource, self.ttl)
                .await
                .map_err(Into::into)
        })
    }
}

/// Lets one [`EdgeTokens`] serve every connection of a client.
pub(crate) struct SharedEdgeTokens(pub(crate) Arc<EdgeTokens>);

impl TokenProvider for SharedEdgeTokens {
    fn token(&self) -> TokenFuture<'_> {
        self.0.token()
    }
}
