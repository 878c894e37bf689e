//! Service credentials: a shared access policy (name and key) that signs short-lived SAS
//! tokens, renewed before they expire.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use azure_iot_core::{ResourceUri, SasToken, ServiceConnectionString, SharedAccessKey};

use crate::error::{Error, Result};

/// A shared access policy of the hub: its name (`iothubowner`, `service`, `registryRead`, ...)
/// and key. Tokens it signs are scoped to the whole hub.
///
/// `Debug` shows the policy name, never the key.
#[derive(Clone)]
pub struct SharedAccessPolicy {
    name: String,
    key: SharedAccessKey,
}

impl SharedAccessPolicy {
    /// A policy from its name and base64 key.
    pub fn new(name: impl Into<String>, key_base64: &str) -> Result<Self> {
        let name = name.into();
        if name.is_empty() {
            return Err(Error::invalid("the shared access policy name is empty"));
        }
        let key = SharedAccessKey::from_base64(key_base64).map_err(|e| {
            Error::with_source(
                crate::ErrorKind::InvalidArgument,
                format!("the key of policy {name} is not valid base64"),
                e,
            )
        })?;
        Ok(Self { name, key })
    }

    /// The policy in a connection string `HostName=...;SharedAccessKeyName=...;SharedAccessKey=...`.
    pub fn from_connection_string(cs: &ServiceConnectionString) -> Self {
        Self {
            name: cs.key_name().to_owned(),
            key: cs.key().clone(),
        }
    }

    /// The host name and the policy of a connection string
    /// `HostName=...;SharedAccessKeyName=...;SharedAccessKey=...` (an IoT Hub's or a DPS's):
    /// what a service client is made from.
    pub fn parse_connection_string(connection_string: &str) -> Result<(String, Self)> {
        let cs = ServiceConnectionString::parse(connection_string)?;
        Ok((cs.host_name().to_owned(), Self::from_connection_string(&cs)))
    }

    /// The policy name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for SharedAccessPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedAccessPolicy")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Signs tokens for one hub and hands out a cached one until 85 % of its life has passed, so
/// that a request never carries a token about to expire and most requests sign nothing.
pub(crate) struct TokenSource {
    resource: ResourceUri,
    policy: SharedAccessPolicy,
    ttl: Duration,
    cached: Mutex<Option<(SasToken, SystemTime)>>,
}

impl TokenSource {
    pub(crate) fn new(host: &str, policy: SharedAccessPolicy, ttl: Duration) -> Self {
        Self::for_resource(ResourceUri::hub(host), policy, ttl)
    }

    /// Tokens for another resource than a hub host (an event hub: `sb://{host}/{name}`).
    pub(crate) fn for_resource(
        resource: ResourceUri,
        policy: SharedAccessPolicy,
        ttl: Duration,
    ) -> Self {
        Self {
            resource,
            policy,
            ttl: ttl.max(Duration::from_secs(1)),
            cached: Mutex::new(None),
        }
    }

    /// A valid token, and the time after which it should be renewed.
    pub(crate) fn token(&self) -> (SasToken, SystemTime) {
        self.token_at(SystemTime::now())
    }

    /// [`token`](Self::token) as of `now`.
    fn token_at(&self, now: SystemTime) -> (SasToken, SystemTime) {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((token, renew_at)) = cached.as_ref()
            && now < *renew_at
        {
            return (token.clone(), *renew_at);
        }
        let token = SasToken::generate(
            &self.resource,
            &self.policy.key,
            Some(&self.policy.name),
            now + self.ttl,
        );
        // Expiry is whole seconds: schedule from the expiry the token carries.
        let life = token
            .expires_at()
            .duration_since(now)
            .unwrap_or(Duration::ZERO);
        let renew_at = now + life.mul_f64(0.85);
        *cached = Some((token.clone(), renew_at));
        (token, renew_at)
    }

    /// The token's `Authorization` header value.
    pub(crate) fn header(&self) -> String {
        self.token().0.secret().to_owned()
    }

    pub(crate) fn policy_name(&self) -> &str {
        &self.policy.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_string_gives_host_and_policy() {
        let (host, policy) = SharedAccessPolicy::parse_connection_string(
            "HostName=dps.example;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=c2VjcmV0c2VjcmV0c2VjcmV0",
        )
        .unwrap();
        assert_eq!(host, "dps.example");
        assert_eq!(policy.name(), "provisioningserviceowner");
        let e = SharedAccessPolicy::parse_connection_string("HostName=h;SharedAccessKey=c2VjcmV0")
            .err()
            .unwrap();
        assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
    }

    #[test]
    fn tokens_are_cached_and_debug_hides_the_key() {
        let policy = SharedAccessPolicy::new("iothubowner", "c2VjcmV0c2VjcmV0c2VjcmV0").unwrap();
        assert!(!format!("{policy:?}").contains("c2Vj"));
        let source = TokenSource::new("hub.example", policy, Duration::from_secs(3600));
        let (first, renew_at) = source.token();
        let (second, _) = source.token();
        assert_eq!(first.secret(), second.secret());
        assert!(first.secret().contains("skn=iothubowner"));
        let life = renew_at.duration_since(SystemTime::now()).unwrap();
        assert!(life > Duration::from_secs(3000) && life < Duration::from_secs(3100));
        // Once the renewal time comes, a new token is signed, expiring a full life later.
        let (renewed, next) = source.token_at(renew_at);
        assert_ne!(renewed.secret(), first.secret());
        assert!(renewed.expires_at() > first.expires_at());
        assert!(next > renew_at);
    }

    #[test]
    fn a_bad_key_or_name_is_an_invalid_argument() {
        assert!(SharedAccessPolicy::new("p", "not base64!").is_err());
        assert!(SharedAccessPolicy::new("", "c2VjcmV0").is_err());
    }
}
