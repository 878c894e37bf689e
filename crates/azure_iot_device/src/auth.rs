//! Credentials: what a device or module proves itself with, and the MQTT password it yields.

use std::fmt;
use std::time::{Duration, SystemTime};

use azure_iot_core::connection_string::{DeviceConnectionString, DeviceCredential};
use azure_iot_core::sas::{ResourceUri, SasToken, SharedAccessKey};

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
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key { key_name, .. } => f
                .debug_struct("Key")
                .field("key_name", key_name)
                .finish_non_exhaustive(),
            Self::Token(token) => f.debug_tuple("Token").field(token).finish(),
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
                "the connection string says x509=true: X.509 authentication is not supported by \
                 this client yet; use a SharedAccessKey or SharedAccessSignature",
            )),
            _ => Err(Error::new(
                ErrorKind::InvalidArgument,
                "the connection string's credential is not supported by this client",
            )),
        }
    }

    /// The MQTT password for one connection (a token for `resource` valid for `ttl`), and
    /// the token's expiry if the client can sign another one when it nears.
    pub(crate) fn password(
        &self,
        resource: &ResourceUri,
        ttl: Duration,
    ) -> (String, Option<SystemTime>) {
        match self {
            Self::Key { key, key_name } => {
                let token = SasToken::generate_with_ttl(resource, key, key_name.as_deref(), ttl);
                (token.secret().to_owned(), Some(token.expires_at()))
            }
            Self::Token(token) => (token.secret().to_owned(), None),
        }
    }
}
