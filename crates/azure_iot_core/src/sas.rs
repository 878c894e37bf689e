//! Shared access keys and shared access signature (SAS) tokens.
//!
//! A SAS token proves possession of a symmetric key without sending it:
//!
//! ```text
//! SharedAccessSignature sr={resource}&sig={signature}&se={expiry}[&skn={policy}]
//!   signature = base64(HMAC-SHA256(key, sr_as_written + "\n" + se_as_written))
//! ```
//!
//! **Generation** writes the canonical form (the Python SDK's, byte for byte): `sr` and `sig`
//! percent-encoded with [`encode_component`], fields in the order `sr`, `sig`, `se`, `skn`.
//!
//! **Verification** (what the emulator does) accepts every official SDK's variant: fields in
//! any order, unknown fields ignored, `sr` encoded or not (the C SDK does not encode it), `sig`
//! with upper- or lower-case hex escapes. The signature is checked against `sr` and `se`
//! *exactly as they were written*, because that is what each SDK signed, and the comparison is
//! constant-time (`ring::hmac::verify`). Scope checks ([`SasToken::covers`]) decode `sr` and
//! apply the segment-prefix rule.
//!
//! Neither keys nor signatures appear in `Debug` output or in error messages.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use ring::hmac;

use crate::encoding::{decode_component, decode_component_strict, encode_component};

/// The literal that starts every SAS token, including its single trailing space.
pub const SAS_PREFIX: &str = "SharedAccessSignature ";

/// The token lifetime every official SDK uses by default: one hour.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// What went wrong with a key or a token. Never carries secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SasError {
    /// The key is empty or not valid base64.
    #[error("the shared access key is not valid base64 (or is empty)")]
    InvalidKey,
    /// The token does not start with `SharedAccessSignature `.
    #[error("a SAS token must start with `SharedAccessSignature `")]
    MissingPrefix,
    /// A `&`-separated field has no `=`.
    #[error("SAS token field `{0}` has no `=`")]
    MalformedField(String),
    /// A required field (`sr`, `sig` or `se`) is absent or empty.
    #[error("SAS token has no `{0}` field")]
    MissingField(&'static str),
    /// A field appears more than once.
    #[error("SAS token has more than one `{0}` field")]
    DuplicateField(String),
    /// `sig` is not percent-encoded base64.
    #[error("SAS token `sig` is not percent-encoded base64")]
    InvalidSignatureEncoding,
    /// `se` is not a decimal number of seconds since the Unix epoch.
    #[error("SAS token `se` is not a decimal number of seconds since 1970")]
    InvalidExpiry,
    /// The token's expiry (`se`, seconds since the Unix epoch) has passed.
    #[error("SAS token expired at {expiry} (seconds since 1970)")]
    Expired {
        /// The token's `se`.
        expiry: u64,
    },
    /// The signature does not match any of the keys it was checked against.
    #[error("SAS token signature does not match the key")]
    SignatureMismatch,
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    RandomUnavailable,
    /// The token's resource (`sr`) does not cover the resource being accessed.
    #[error("SAS token resource does not cover `{0}`")]
    OutOfScope(String),
}

/// A symmetric key: the bytes behind a base64 `SharedAccessKey`.
///
/// `Debug` prints `SharedAccessKey(<redacted>)`. There is deliberately no `PartialEq`: keys are
/// compared by verifying signatures, which is constant-time.
#[derive(Clone)]
pub struct SharedAccessKey {
    key: hmac::Key,
    bytes: Vec<u8>,
}

impl SharedAccessKey {
    /// Decodes a base64 key (padded or not). Fails with [`SasError::InvalidKey`] if it is empty
    /// or not base64.
    pub fn from_base64(text: &str) -> Result<Self, SasError> {
        let text = text.trim();
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| STANDARD_NO_PAD.decode(text))
            .map_err(|_| SasError::InvalidKey)?;
        Self::from_bytes(bytes)
    }

    /// Wraps raw key bytes. Fails with [`SasError::InvalidKey`] if `bytes` is empty.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, SasError> {
        if bytes.is_empty() {
            return Err(SasError::InvalidKey);
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            bytes,
        })
    }

    /// A new random 32-byte key, the size IoT Hub and DPS generate.
    ///
    /// Fails with [`SasError::RandomUnavailable`] only if the operating system's random source
    /// fails.
    pub fn generate() -> Result<Self, SasError> {
        use ring::rand::{SecureRandom, SystemRandom};
        let mut bytes = vec![0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SasError::RandomUnavailable)?;
        Self::from_bytes(bytes)
    }

    /// The key as standard padded base64, as it appears in connection strings.
    ///
    /// This is the secret itself: never log it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(&self.bytes)
    }

    /// HMAC-SHA256 of `message` under this key.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        hmac::sign(&self.key, message).as_ref().to_vec()
    }

    /// Checks `signature` against HMAC-SHA256 of `message` in constant time.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        hmac::verify(&self.key, message, signature).is_ok()
    }

    /// Derives a device key from a DPS enrollment-group key:
    /// `HMAC-SHA256(group_key, registration_id)`.
    pub fn derive_for_registration(&self, registration_id: &str) -> Self {
        let bytes = self.sign(registration_id.as_bytes());
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            bytes,
        }
    }
}

impl fmt::Debug for SharedAccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedAccessKey(<redacted>)")
    }
}

/// The resource a token grants access to, unencoded (`{host}/devices/{id}` and so on).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceUri(String);

impl ResourceUri {
    /// `{host}/devices/{device_id}`: a device's own key, or a policy key scoped to one device.
    pub fn device(host: &str, device_id: &str) -> Self {
        Self(format!("{host}/devices/{device_id}"))
    }

    /// `{host}/devices/{device_id}/modules/{module_id}`.
    pub fn module(host: &str, device_id: &str, module_id: &str) -> Self {
        Self(format!("{host}/devices/{device_id}/modules/{module_id}"))
    }

    /// `{host}`: a hub (or DPS) shared access policy.
    pub fn hub(host: &str) -> Self {
        Self(host.to_owned())
    }

    /// `{id_scope}/registrations/{registration_id}`: a DPS device registration.
    pub fn dps_registration(id_scope: &str, registration_id: &str) -> Self {
        Self(format!("{id_scope}/registrations/{registration_id}"))
    }

    /// Any other resource, taken as given (unencoded).
    pub fn custom(resource: impl Into<String>) -> Self {
        Self(resource.into())
    }

    /// The unencoded resource text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SAS token, generated or parsed.
///
/// The token text is a bearer credential: it is only available through [`SasToken::secret`],
/// and `Debug` shows the resource and expiry but not the signature.
#[derive(Clone, PartialEq, Eq)]
pub struct SasToken {
    text: String,
    /// `sr` exactly as written in the token.
    resource_raw: String,
    /// `se` exactly as written.
    expiry_raw: String,
    expiry: u64,
    signature: Vec<u8>,
    key_name: Option<String>,
}

impl SasToken {
    /// Signs a token for `resource` that expires at `expires_at` (rounded down to a second).
    ///
    /// `key_name` is the `skn` field: the policy name for a hub or DPS policy key, `None` for a
    /// device or module key.
    pub fn generate(
        resource: &ResourceUri,
        key: &SharedAccessKey,
        key_name: Option<&str>,
        expires_at: SystemTime,
    ) -> Self {
        let signed = Self::generate_with_signer(resource, key_name, expires_at, |message| {
            Ok::<_, std::convert::Infallible>(key.sign(message))
        });
        match signed {
            Ok(token) => token,
            Err(never) => match never {},
        }
    }

    /// A token for `resource` expiring at `expires_at` whose signature `sign` computes over
    /// the string to sign (`{encoded resource}\n{expiry}`): for a key kept elsewhere (a TPM, an
    /// HSM) that computes HMAC-SHA256 itself. `sign`'s error is returned as is.
    pub fn generate_with_signer<E>(
        resource: &ResourceUri,
        key_name: Option<&str>,
        expires_at: SystemTime,
        sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
    ) -> Result<Self, E> {
        let expiry = expires_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let resource_raw = encode_component(resource.as_str()).into_owned();
        let expiry_raw = expiry.to_string();
        let signature = sign(format!("{resource_raw}\n{expiry_raw}").as_bytes())?;
        let signature_b64 = STANDARD.encode(&signature);
        let mut text = format!(
            "{SAS_PREFIX}sr={resource_raw}&sig={}&se={expiry_raw}",
            encode_component(&signature_b64)
        );
        if let Some(name) = key_name {
            text.push_str("&skn=");
            text.push_str(&encode_component(name));
        }
        Ok(Self {
            text,
            resource_raw,
            expiry_raw,
            expiry,
            signature,
            key_name: key_name.map(str::to_owned),
        })
    }

    /// Signs a token that lives `ttl` from now (the system clock).
    pub fn generate_with_ttl(
        resource: &ResourceUri,
        key: &SharedAccessKey,
        key_name: Option<&str>,
        ttl: Duration,
    ) -> Self {
        Self::generate(resource, key, key_name, SystemTime::now() + ttl)
    }

    /// Parses a token as any official SDK writes it (see the module docs).
    ///
    /// Parsing checks the syntax only; use [`verify`](Self::verify) and
    /// [`covers`](Self::covers) to decide whether to trust it.
    pub fn parse(text: &str) -> Result<Self, SasError> {
        let fields = text
            .strip_prefix(SAS_PREFIX)
            .ok_or(SasError::MissingPrefix)?;
        let mut sr = None;
        let mut sig = None;
        let mut se = None;
        let mut skn = None;
        for field in fields.split('&') {
            let (name, value) = field
                .split_once('=')
                .ok_or_else(|| SasError::MalformedField(truncate(field, 16)))?;
            let slot = match name {
                "sr" => &mut sr,
                "sig" => &mut sig,
                "se" => &mut se,
                "skn" => &mut skn,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(SasError::DuplicateField(name.to_owned()));
            }
        }
        let resource_raw = non_empty(sr, "sr")?;
        let expiry_raw = non_empty(se, "se")?;
        let sig = non_empty(sig, "sig")?;
        if !expiry_raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SasError::InvalidExpiry);
        }
        let expiry = expiry_raw.parse().map_err(|_| SasError::InvalidExpiry)?;
        let signature = decode_component_strict(sig)
            .and_then(|b64| STANDARD.decode(b64.as_bytes()).ok())
            .ok_or(SasError::InvalidSignatureEncoding)?;
        Ok(Self {
            text: text.to_owned(),
            resource_raw: resource_raw.to_owned(),
            expiry_raw: expiry_raw.to_owned(),
            expiry,
            signature,
            key_name: skn.map(|n| decode_component(n).into_owned()),
        })
    }

    /// The whole token text (`SharedAccessSignature sr=...`): what goes into an MQTT password,
    /// an `Authorization` header or a CBS put-token. It is a credential; never log it.
    pub fn secret(&self) -> &str {
        &self.text
    }

    /// `sr` exactly as written in the token.
    pub fn resource_raw(&self) -> &str {
        &self.resource_raw
    }

    /// `sr` percent-decoded once.
    pub fn resource(&self) -> String {
        decode_component(&self.resource_raw).into_owned()
    }

    /// Expiry in seconds since the Unix epoch.
    pub fn expiry_unix(&self) -> u64 {
        self.expiry
    }

    /// Expiry as a point in time. An expiry past the end of year 9999 counts as then (any
    /// `se` a client sends must not overflow the platform's time type).
    pub fn expires_at(&self) -> SystemTime {
        /// 9999-12-31T23:59:59Z.
        const LATEST: u64 = 253_402_300_799;
        UNIX_EPOCH + Duration::from_secs(self.expiry.min(LATEST))
    }

    /// The `skn` field (a policy name), decoded.
    pub fn key_name(&self) -> Option<&str> {
        self.key_name.as_deref()
    }

    /// Checks the signature against `key` in constant time.
    pub fn signature_matches(&self, key: &SharedAccessKey) -> bool {
        let signed = format!("{}\n{}", self.resource_raw, self.expiry_raw);
        key.verify(signed.as_bytes(), &self.signature)
    }

    /// Checks that the token has not expired at `now` and that its signature matches one of
    /// `keys` (typically a primary and a secondary key).
    pub fn verify<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k SharedAccessKey>,
        now: SystemTime,
    ) -> Result<(), SasError> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if self.expiry <= now {
            return Err(SasError::Expired {
                expiry: self.expiry,
            });
        }
        // Check every key so the time taken does not reveal which one matched.
        let mut matched = false;
        for key in keys {
            matched |= self.signature_matches(key);
        }
        if matched {
            Ok(())
        } else {
            Err(SasError::SignatureMismatch)
        }
    }

    /// Does this token's resource cover `target` (unencoded, e.g. `myhub/devices/dev1`)?
    ///
    /// The rule is a segment-wise prefix: `h/devices` covers `h/devices/d1` but not
    /// `h/devicesX`. The first segment (host or DPS id scope) compares case-insensitively and
    /// any `scheme://` is ignored. `sr` is decoded once; if that does not match, it is decoded
    /// a second time, because the C# SDK double-encodes device ids.
    pub fn covers(&self, target: &str) -> bool {
        let once = decode_component(&self.resource_raw);
        if scope_covers(&once, target) {
            return true;
        }
        let twice = decode_component(&once);
        twice != once && scope_covers(&twice, target)
    }

    /// [`covers`](Self::covers) for a device or module identity on `host`, returning
    /// [`SasError::OutOfScope`] when it does not.
    pub fn check_covers_identity(
        &self,
        host: &str,
        device_id: &str,
        module_id: Option<&str>,
    ) -> Result<(), SasError> {
        let target = match module_id {
            Some(module) => ResourceUri::module(host, device_id, module),
            None => ResourceUri::device(host, device_id),
        };
        if self.covers(target.as_str()) {
            Ok(())
        } else {
            Err(SasError::OutOfScope(target.0))
        }
    }
}

impl fmt::Debug for SasToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasToken")
            .field("resource", &self.resource_raw)
            .field("expiry", &self.expiry)
            .field("key_name", &self.key_name)
            .field("signature", &"<redacted>")
            .finish()
    }
}

impl std::str::FromStr for SasToken {
    type Err = SasError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn non_empty<'a>(value: Option<&'a str>, name: &'static str) -> Result<&'a str, SasError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or(SasError::MissingField(name))
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// Segment-prefix match of an unencoded scope against an unencoded target.
fn scope_covers(scope: &str, target: &str) -> bool {
    let scope = strip_scheme(scope).trim_end_matches('/');
    let target = strip_scheme(target).trim_end_matches('/');
    let (scope_host, scope_path) = scope.split_once('/').unwrap_or((scope, ""));
    let (target_host, target_path) = target.split_once('/').unwrap_or((target, ""));
    if !scope_host.eq_ignore_ascii_case(target_host) {
        return false;
    }
    scope_path.is_empty()
        || target_path == scope_path
        || (target_path.starts_with(scope_path)
            && target_path.as_bytes().get(scope_path.len()) == Some(&b'/'))
}

fn strip_scheme(uri: &str) -> &str {
    uri.split_once("://").map_or(uri, |(_, rest)| rest)
}

#[cfg(test)]
mod tests;
