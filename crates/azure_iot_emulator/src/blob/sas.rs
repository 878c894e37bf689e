//! Service SAS for the blob endpoint: what the hub signs for a device's upload and what the
//! endpoint checks on every request.
//!
//! The string to sign follows Azure Storage's service SAS layout for versions 2020-12-06 and
//! later (permissions, start, expiry, canonicalized resource `/blob/{account}/{container}[/{blob}]`,
//! identifier, IP, protocol, version, resource, snapshot time, encryption scope, and the five
//! response-header overrides, one a line), signed with HMAC-SHA256 under the account key and
//! base64-encoded. The signature is compared in constant time (`ring::hmac::verify`).

use std::collections::HashMap;

use azure_iot_core::datetime::parse_timestamp;
use base64::Engine as _;
use ring::hmac;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The service version the endpoint signs with and announces in `x-ms-version`.
pub(crate) const VERSION: &str = "2021-08-06";

/// What a request wants to do with a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permission {
    /// Get Blob, Get Blob Properties (`r`).
    Read,
    /// Put Blob, Put Block, Put Block List (`w`; `c` also allows creating).
    Write,
    /// Delete Blob (`d`).
    Delete,
}

impl Permission {
    fn granted_by(self, sp: &str) -> bool {
        match self {
            Self::Read => sp.contains('r'),
            Self::Write => sp.contains('w') || sp.contains('c'),
            Self::Delete => sp.contains('d'),
        }
    }
}

/// Why a SAS does not authorize a request (the storage error code and a message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SasRefusal {
    /// `AuthenticationFailed` or `AuthorizationPermissionMismatch`.
    pub(crate) code: &'static str,
    /// What is wrong, without the signature.
    pub(crate) message: String,
}

fn failed(message: impl Into<String>) -> SasRefusal {
    SasRefusal {
        code: "AuthenticationFailed",
        message: message.into(),
    }
}

/// The account key and name SAS tokens are signed with.
pub(crate) struct Signer {
    account: String,
    key: hmac::Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for `account` with the raw key bytes.
    pub(crate) fn new(account: &str, key: &[u8]) -> Self {
        Self {
            account: account.to_owned(),
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    fn canonical(&self, container: &str, blob: Option<&str>) -> String {
        match blob {
            Some(blob) => format!("/blob/{}/{container}/{blob}", self.account),
            None => format!("/blob/{}/{container}", self.account),
        }
    }

    fn string_to_sign(&self, fields: &Fields, canonical: &str) -> String {
        [
            fields.get("sp"),
            fields.get("st"),
            fields.get("se"),
            canonical,
            fields.get("si"),
            fields.get("sip"),
            fields.get("spr"),
            fields.get("sv"),
            fields.get("sr"),
            fields.get("snapshot"),
            fields.get("ses"),
            fields.get("rscc"),
            fields.get("rscd"),
            fields.get("rsce"),
            fields.get("rscl"),
            fields.get("rsct"),
        ]
        .join("\n")
    }

    /// A blob SAS query string (starting with `?`, as IoT Hub hands it out) granting
    /// `permissions` on `container/blob` until `expiry`, HTTPS only.
    pub(crate) fn sign_blob(
        &self,
        container: &str,
        blob: &str,
        permissions: &str,
        expiry: OffsetDateTime,
    ) -> String {
        self.sign(container, Some(blob), permissions, expiry)
    }

    /// A container SAS query string (`sr=c`, starting with `?`) granting `permissions` on
    /// every blob of `container` until `expiry`, HTTPS only.
    pub(crate) fn sign_container(
        &self,
        container: &str,
        permissions: &str,
        expiry: OffsetDateTime,
    ) -> String {
        self.sign(container, None, permissions, expiry)
    }

    fn sign(
        &self,
        container: &str,
        blob: Option<&str>,
        permissions: &str,
        expiry: OffsetDateTime,
    ) -> String {
        let resource = if blob.is_some() { "b" } else { "c" };
        let se = expiry
            .replace_nanosecond(0)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();
        let mut fields = Fields::default();
        fields.0.insert("sv".into(), VERSION.into());
        fields.0.insert("sr".into(), resource.into());
        fields.0.insert("sp".into(), permissions.into());
        fields.0.insert("se".into(), se.clone());
        fields.0.insert("spr".into(), "https".into());
        let canonical = self.canonical(container, blob);
        let signature = hmac::sign(
            &self.key,
            self.string_to_sign(&fields, &canonical).as_bytes(),
        );
        let sig = base64::engine::general_purpose::STANDARD.encode(signature.as_ref());
        let enc = |v: &str| {
            percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        format!(
            "?sv={VERSION}&sr={resource}&sp={permissions}&se={}&spr=https&sig={}",
            enc(&se),
            enc(&sig)
        )
    }

    /// Checks the SAS in `query` (raw query string) for `permission` on `container/blob` at
    /// `now`: the signature (for the blob, or for its whole container with `sr=c`), the
    /// permissions, the start and expiry times.
    pub(crate) fn verify(
        &self,
        query: Option<&str>,
        container: &str,
        blob: &str,
        permission: Permission,
        now: OffsetDateTime,
    ) -> Result<(), SasRefusal> {
        let fields = Fields::parse(query.unwrap_or_default());
        let Some(sig) = fields.0.get("sig") else {
            return Err(failed(
                "the request carries no shared access signature (sig); the container is private",
            ));
        };
        let canonical = match fields.get("sr") {
            "b" => self.canonical(container, Some(blob)),
            "c" => self.canonical(container, None),
            other => {
                return Err(failed(format!(
                    "signed resource (sr) `{other}` is not supported: use b or c"
                )));
            }
        };
        let signature = base64::engine::general_purpose::STANDARD
            .decode(sig.as_bytes())
            .map_err(|_| failed("the signature (sig) is not base64"))?;
        hmac::verify(
            &self.key,
            self.string_to_sign(&fields, &canonical).as_bytes(),
            &signature,
        )
        .map_err(|_| {
            failed("the signature does not match: the SAS is for another blob, or was altered")
        })?;
        let expiry = parse_timestamp(fields.get("se"))
            .ok_or_else(|| failed("the signed expiry (se) is missing or not a time"))?;
        if now >= expiry {
            return Err(failed("the SAS expired (se is in the past)"));
        }
        if let Some(start) = fields.0.get("st").and_then(|st| parse_timestamp(st))
            && now < start
        {
            return Err(failed("the SAS is not valid yet (st is in the future)"));
        }
        if !permission.granted_by(fields.get("sp")) {
            return Err(SasRefusal {
                code: "AuthorizationPermissionMismatch",
                message: format!(
                    "the SAS permissions (sp) do not allow this operation ({permission:?})"
                ),
            });
        }
        Ok(())
    }
}

/// The SAS fields of a query string, percent-decoded.
#[derive(Default)]
struct Fields(HashMap<String, String>);

impl Fields {
    fn parse(query: &str) -> Self {
        let mut fields = Self::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            fields.0.insert(decode(k), decode(v));
        }
        fields
    }

    fn get(&self, name: &str) -> &str {
        self.0.get(name).map(String::as_str).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use time::Duration;

    use super::*;

    fn signer() -> Signer {
        Signer::new("acct", b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn a_signed_blob_sas_verifies_for_its_blob_and_permissions_only() {
        let s = signer();
        let now = OffsetDateTime::now_utc();
        let sas = s.sign_blob("c", "dev1/a b.txt", "rw", now + Duration::hours(1));
        assert!(sas.starts_with("?sv="), "{sas}");
        let q = Some(&sas[1..]);
        s.verify(q, "c", "dev1/a b.txt", Permission::Write, now)
            .unwrap();
        s.verify(q, "c", "dev1/a b.txt", Permission::Read, now)
            .unwrap();
        let e = s
            .verify(q, "c", "dev1/a b.txt", Permission::Delete, now)
            .unwrap_err();
        assert_eq!(e.code, "AuthorizationPermissionMismatch");
        let e = s
            .verify(q, "c", "dev1/other", Permission::Read, now)
            .unwrap_err();
        assert_eq!(e.code, "AuthenticationFailed");
        let e = s
            .verify(
                q,
                "c",
                "dev1/a b.txt",
                Permission::Read,
                now + Duration::hours(2),
            )
            .unwrap_err();
        assert!(e.message.contains("expired"), "{}", e.message);
        let other = Signer::new("acct", b"another key, another key, 123456");
        assert!(
            other
                .verify(q, "c", "dev1/a b.txt", Permission::Read, now)
                .is_err()
        );
        assert!(
            s.verify(None, "c", "dev1/a b.txt", Permission::Read, now)
                .is_err()
        );
    }

    #[test]
    fn a_container_sas_covers_every_blob_of_its_container_only() {
        let s = signer();
        let now = OffsetDateTime::now_utc();
        let sas = s.sign_container("exports", "rwl", now + Duration::hours(1));
        assert!(sas.contains("sr=c"), "{sas}");
        let q = Some(&sas[1..]);
        s.verify(q, "exports", "devices.txt", Permission::Write, now)
            .unwrap();
        s.verify(q, "exports", "a/b", Permission::Read, now)
            .unwrap();
        assert!(
            s.verify(q, "other", "devices.txt", Permission::Read, now)
                .is_err()
        );
        assert!(
            s.verify(q, "exports", "devices.txt", Permission::Delete, now)
                .is_err()
        );
    }

    #[test]
    fn an_altered_sas_fails() {
        let s = signer();
        let now = OffsetDateTime::now_utc();
        let sas = s.sign_blob("c", "b", "r", now + Duration::hours(1));
        let widened = sas.replace("sp=r", "sp=rwd");
        assert!(
            s.verify(Some(&widened[1..]), "c", "b", Permission::Delete, now)
                .is_err()
        );
    }
}
