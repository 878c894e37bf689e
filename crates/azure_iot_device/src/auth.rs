//! Credentials: what a device or module proves itself with, and the MQTT password it yields.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use azure_iot_core::connection_string::{DeviceConnectionString, DeviceCredential};
use azure_iot_core::sas::{ResourceUri, SasToken, SharedAccessKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, ErrorKind, Result};

/// How the client authenticates.
///
/// `Debug` never shows a key or a token's signature.
#[derive(Clone)]
pub(crate) enum Credential {
    /// A symmetric key: the client signs a fresh token for every connection.
    Key {
        key: SharedAccessKey,
        /// `Some(policy)` for a hub policy key, `None` for the device's own key.
        key_name: Option<String>,
    },
    /// A ready-made token; it cannot be renewed, so a connection after its expiry is refused.
    Token(SasToken),
    /// Tokens from the application, asked for before every connection.
    Provider(Arc<dyn TokenProvider>),
    /// An X.509 client certificate, presented in the TLS handshake (no MQTT password).
    X509,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key { key_name, .. } => f
                .debug_struct("Key")
                .field("key_name", key_name)
                .finish_non_exhaustive(),
            Self::Token(token) => f.debug_tuple("Token").field(token).finish(),
            Self::Provider(_) => f.write_str("Provider"),
            Self::X509 => f.write_str("X509"),
        }
    }
}

impl Credential {
    /// The credential a connection string carries.
    pub(crate) fn from_connection_string(cs: &DeviceConnectionString) -> Result<Self> {
        match cs.credential() {
            DeviceCredential::SharedAccessKey(key) => Ok(Self::Key {
                key: key.clone(),
                key_name: None,
            }),
            DeviceCredential::PolicyKey { key_name, key } => Ok(Self::Key {
                key: key.clone(),
                key_name: Some(key_name.clone()),
            }),
            DeviceCredential::SharedAccessSignature(token) => Ok(Self::Token(token.clone())),
            DeviceCredential::X509 => Err(Error::new(
                ErrorKind::InvalidArgument,
                "the connection string says x509=true: open the client with \
                 DeviceClient::from_x509 and the certificate instead",
            )),
            _ => Err(Error::new(
                ErrorKind::InvalidArgument,
                "the connection string's credential is not supported by this client",
            )),
        }
    }

    /// The MQTT password for one connection (a token for `resource` valid for `ttl`), and
    /// the token's expiry if the client can get another one when it nears.
    pub(crate) async fn password(
        &self,
        resource: &ResourceUri,
        ttl: Duration,
    ) -> Result<(String, Option<SystemTime>)> {
        match self {
            Self::Key { key, key_name } => {
                let token = SasToken::generate_with_ttl(resource, key, key_name.as_deref(), ttl);
                Ok((token.secret().to_owned(), Some(token.expires_at())))
            }
            Self::Token(token) => Ok((token.secret().to_owned(), None)),
            Self::Provider(provider) => {
                let text = provider.token().await.map_err(|e| {
                    let message = format!("the token provider failed: {e}");
                    Error::new(ErrorKind::Connect, message).with_boxed_source(e)
                })?;
                // Tokens read from files or pipes often end with a newline.
                let token = SasToken::parse(text.trim()).map_err(|e| {
                    Error::with_source(
                        ErrorKind::InvalidArgument,
                        "the token provider returned something that is not a SAS token",
                        e,
                    )
                })?;
                let renew = provider.renewable().then(|| token.expires_at());
                Ok((token.secret().to_owned(), renew))
            }
            Self::X509 => Ok((String::new(), None)),
        }
    }
}

/// The error a [`TokenProvider`] may fail with.
pub type TokenProviderError = Box<dyn std::error::Error + Send + Sync>;

/// Supplies SAS tokens to a client that holds no key: from a secure element, a vault, a back
/// end. The client asks before every connection (the first, each reconnect, and each renewal
/// at 85 % of the previous token's life), so each token only has to outlive one connection.
///
/// Any `Fn() -> impl Future<Output = Result<String, E>>` is a provider:
///
/// ```
/// use azure_iot_device::TokenProvider;
///
/// fn provider() -> impl TokenProvider {
///     || async { Ok::<_, std::io::Error>(std::fs::read_to_string("/run/secrets/iot-token")?) }
/// }
/// ```
pub trait TokenProvider: Send + Sync + 'static {
    /// A fresh token, `SharedAccessSignature sr=…&sig=…&se=…`, for the client's identity.
    fn token(
        &self,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<String, TokenProviderError>> + Send + '_>>;

    /// Whether the client asks for a fresh token at 85 % of the current one's life (the
    /// default). A provider whose tokens the application replaces on its own schedule (such
    /// as the Python package's `update_sastoken`, which then reconnects) answers `false`: the
    /// client asks it only when it connects, and a token that expires meanwhile ends the
    /// connection as the hub closes it.
    fn renewable(&self) -> bool {
        true
    }
}

impl<F, Fut, E> TokenProvider for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<String, E>> + Send + 'static,
    E: Into<TokenProviderError>,
{
    fn token(
        &self,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<String, TokenProviderError>> + Send + '_>>
    {
        let pending = self();
        Box::pin(async move { pending.await.map_err(Into::into) })
    }
}

/// A device's X.509 certificate chain (leaf first) and private key.
///
/// `Debug` shows neither the key nor the certificate bytes.
#[derive(Clone)]
pub struct X509Certificate {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: std::sync::Arc<PrivateKeyDer<'static>>,
}

impl X509Certificate {
    /// Reads a PEM certificate chain (the device certificate first, then any intermediates)
    /// and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(certificate_pem: &str, key_pem: &str) -> Result<Self> {
        let chain = CertificateDer::pem_slice_iter(certificate_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::InvalidArgument,
                    "the device certificate is not valid PEM",
                    e,
                )
            })?;
        if chain.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "the device certificate PEM holds no certificate",
            ));
        }
        // The key's bytes stay out of the message; only the kind of failure is reported.
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| {
            Error::new(
                ErrorKind::InvalidArgument,
                "the device private key is not a PEM PKCS#8, PKCS#1 or SEC1 key",
            )
        })?;
        Ok(Self {
            chain,
            key: std::sync::Arc::new(key),
        })
    }

    /// The certificate chain, the device certificate first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }
}

impl fmt::Debug for X509Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509Certificate")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A provider of one fixed token that says whether it wants renewals.
    struct Fixed {
        token: String,
        renewable: bool,
    }

    impl TokenProvider for Fixed {
        fn token(
            &self,
        ) -> Pin<
            Box<dyn Future<Output = std::result::Result<String, TokenProviderError>> + Send + '_>,
        > {
            Box::pin(async move { Ok(self.token.clone()) })
        }

        fn renewable(&self) -> bool {
            self.renewable
        }
    }

    #[tokio::test]
    async fn only_renewable_providers_get_a_renewal_time() {
        let resource = ResourceUri::device("hub.example", "dev");
        let key = SharedAccessKey::from_bytes(vec![7; 32]).unwrap();
        let token = SasToken::generate_with_ttl(&resource, &key, None, Duration::from_secs(60));
        for renewable in [true, false] {
            let provider = Fixed {
                token: token.secret().to_owned(),
                renewable,
            };
            let credential = Credential::Provider(Arc::new(provider));
            let (password, renew) = credential
                .password(&resource, Duration::from_secs(60))
                .await
                .unwrap();
            assert_eq!(password, token.secret());
            assert_eq!(renew.is_some(), renewable);
        }
    }
}
