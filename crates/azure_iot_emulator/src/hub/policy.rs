//! Shared access policies: named key pairs with rights, checked on every service request.
//!
//! The emulator creates the five policies a new IoT hub has (`iothubowner`, `service`,
//! `device`, `registryRead`, `registryReadWrite`) with random keys on first start and keeps
//! them. A request's SAS token names its policy in `skn`; the token must be signed with one of
//! that policy's keys, be unexpired, have a resource (`sr`) that covers the hub, and the policy
//! must grant the right the operation needs.
//!
//! Rights per operation family follow the hub's documentation: registry reads need
//! RegistryRead, identity writes and bulk calls RegistryWrite, and twins, queries, direct
//! methods, C2D and feedback ServiceConnect. Devices may also connect with a policy token
//! (`skn` set) when the policy grants DeviceConnect; that check lives with device
//! authentication. Policies are fixed after the first start: their keys are persisted so that
//! connection strings written to `hub.json` stay valid across restarts.

use std::time::SystemTime;

use azure_iot_core::sas::{SasError, SasToken, SharedAccessKey};

use super::error::{ErrorCode, HubError};

/// Rights a policy can grant: a small bit set (the portal's four permissions), persisted in
/// the `policies` table as its bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rights(u8);

impl Rights {
    /// Read the identity registry and statistics.
    pub(crate) const REGISTRY_READ: Rights = Rights(1);
    /// Create, update and delete identities, bulk registry calls, CA certificates.
    pub(crate) const REGISTRY_WRITE: Rights = Rights(2);
    /// Service-side operations: twins, queries, methods, C2D, feedback, telemetry reading.
    pub(crate) const SERVICE_CONNECT: Rights = Rights(4);
    /// Act as any device: connect with a policy token instead of the device's own key.
    pub(crate) const DEVICE_CONNECT: Rights = Rights(8);

    const NAMES: [(Rights, &'static str); 4] = [
        (Self::REGISTRY_READ, "RegistryRead"),
        (Self::REGISTRY_WRITE, "RegistryWrite"),
        (Self::SERVICE_CONNECT, "ServiceConnect"),
        (Self::DEVICE_CONNECT, "DeviceConnect"),
    ];

    /// Both sets of rights (`const`, for [`DEFAULT_POLICIES`]).
    pub(crate) const fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    /// Whether every right in `other` is granted.
    pub(crate) fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    /// The stored form.
    pub(crate) fn bits(self) -> u8 {
        self.0
    }

    /// From the stored form; unknown bits are dropped rather than granted.
    pub(crate) fn from_bits(bits: u8) -> Rights {
        Rights(bits & 0x0f)
    }

    /// `RegistryRead, ServiceConnect`-style text, as the portal shows rights.
    pub(crate) fn describe(self) -> String {
        Self::NAMES
            .iter()
            .filter(|(r, _)| self.contains(*r))
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One named policy.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    /// The name tokens carry in `skn` (case-sensitive).
    pub(crate) name: String,
    /// Primary key; tokens signed with it or with the secondary are accepted.
    pub(crate) primary: SharedAccessKey,
    /// Secondary key.
    pub(crate) secondary: SharedAccessKey,
    /// What a token of this policy may do.
    pub(crate) rights: Rights,
}

/// The policies a new hub has, with the rights each grants.
pub(crate) const DEFAULT_POLICIES: [(&str, Rights); 5] = [
    (
        "iothubowner",
        Rights::REGISTRY_READ
            .union(Rights::REGISTRY_WRITE)
            .union(Rights::SERVICE_CONNECT)
            .union(Rights::DEVICE_CONNECT),
    ),
    ("service", Rights::SERVICE_CONNECT),
    ("device", Rights::DEVICE_CONNECT),
    ("registryRead", Rights::REGISTRY_READ),
    (
        "registryReadWrite",
        Rights::REGISTRY_READ.union(Rights::REGISTRY_WRITE),
    ),
];

/// All policies of the hub.
#[derive(Debug, Clone, Default)]
pub(crate) struct Policies {
    policies: Vec<Policy>,
}

impl Policies {
    /// The given policies, in the order they were created.
    pub(crate) fn new(policies: Vec<Policy>) -> Self {
        Self { policies }
    }

    /// The policy named `name` (exact match, as the hub matches `skn`).
    pub(crate) fn get(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.name == name)
    }

    /// Every policy, in creation order (for `hub.json` connection strings).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Policy> {
        self.policies.iter()
    }

    /// Checks an `Authorization` header value for a service operation on `hostname` that needs
    /// `needed`. Every failure is a 401 `IotHubUnauthorizedAccess` whose message says why,
    /// without echoing the token.
    ///
    /// The checks run in the order a client can fix them: header present, token parses, `skn`
    /// present and known, signature valid with either key, `se` in the future, `sr` covers
    /// the hub host (case-insensitive host, segment-wise prefix), and finally the right.
    /// Signature and expiry are verified before the rights so a forged token learns nothing
    /// about what a policy grants. Bearer (AAD) tokens are refused: there is no directory.
    pub(crate) fn authorize(
        &self,
        header: Option<&str>,
        hostname: &str,
        needed: Rights,
        now: SystemTime,
    ) -> Result<&Policy, HubError> {
        let unauthorized = |why: String| HubError::new(ErrorCode::IotHubUnauthorizedAccess, why);
        let header = header.ok_or_else(|| {
            unauthorized(
                "the request has no Authorization header with a SharedAccessSignature".into(),
            )
        })?;
        let token = SasToken::parse(header.trim()).map_err(|e| {
            unauthorized(format!(
                "the Authorization header is not a valid SAS token: {e}"
            ))
        })?;
        let name = token.key_name().ok_or_else(|| {
            unauthorized("the SAS token names no shared access policy (skn)".into())
        })?;
        let policy = self.get(name).ok_or_else(|| {
            unauthorized(format!("there is no shared access policy named `{name}`"))
        })?;
        token
            .verify([&policy.primary, &policy.secondary], now)
            .map_err(|e| match e {
                SasError::Expired { .. } => unauthorized("the SAS token has expired".into()),
                _ => unauthorized(format!(
                    "the SAS token signature does not match policy `{name}`"
                )),
            })?;
        if !token.covers(hostname) {
            return Err(unauthorized(format!(
                "the SAS token resource does not cover the hub `{hostname}`"
            )));
        }
        if !policy.rights.contains(needed) {
            return Err(unauthorized(format!(
                "policy `{name}` does not grant {} (it grants {})",
                needed.describe(),
                policy.rights.describe()
            )));
        }
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use azure_iot_core::sas::ResourceUri;

    use super::*;

    fn policies() -> Policies {
        Policies::new(
            DEFAULT_POLICIES
                .iter()
                .map(|(name, rights)| Policy {
                    name: (*name).into(),
                    primary: SharedAccessKey::from_bytes(vec![name.len() as u8; 32]).unwrap(),
                    secondary: SharedAccessKey::from_bytes(vec![7; 32]).unwrap(),
                    rights: *rights,
                })
                .collect(),
        )
    }

    fn token(policy: &Policy, resource: &str, expiry: u64) -> String {
        SasToken::generate(
            &ResourceUri::custom(resource),
            &policy.primary,
            Some(&policy.name),
            UNIX_EPOCH + Duration::from_secs(expiry),
        )
        .secret()
        .to_owned()
    }

    #[test]
    fn rights_are_enforced() {
        let p = policies();
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let owner = token(p.get("iothubowner").unwrap(), "h", 2000);
        let read = token(p.get("registryRead").unwrap(), "h", 2000);
        assert!(
            p.authorize(Some(&owner), "h", Rights::REGISTRY_WRITE, now)
                .is_ok()
        );
        assert!(
            p.authorize(Some(&read), "h", Rights::REGISTRY_READ, now)
                .is_ok()
        );
        let err = p
            .authorize(Some(&read), "h", Rights::REGISTRY_WRITE, now)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::IotHubUnauthorizedAccess);
        assert!(
            err.message.contains("does not grant RegistryWrite"),
            "{}",
            err.message
        );
    }

    #[test]
    fn bad_tokens_are_refused_without_echoing_them() {
        let p = policies();
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let owner = p.get("iothubowner").unwrap();
        let expired = token(owner, "h", 999);
        let other_hub = token(owner, "other", 2000);
        let forged = token(
            &Policy {
                primary: SharedAccessKey::from_bytes(vec![9; 32]).unwrap(),
                ..owner.clone()
            },
            "h",
            2000,
        );
        for (header, why) in [
            (None, "no Authorization"),
            (Some("Bearer x"), "not a valid SAS"),
            (Some(expired.as_str()), "expired"),
            (Some(other_hub.as_str()), "does not cover"),
            (Some(forged.as_str()), "signature does not match"),
        ] {
            let err = p
                .authorize(header, "h", Rights::REGISTRY_READ, now)
                .unwrap_err();
            assert!(err.message.contains(why), "{why}: {}", err.message);
            if let Some(h) = header {
                assert!(!err.message.contains(h));
            }
        }
    }
}
