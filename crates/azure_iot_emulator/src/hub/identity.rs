//! Device and module identities: what the registry stores, and their REST JSON shape.
//!
//! [`IdentityRecord`] is the stored form (also serialised into SQLite); [`IdentityBody`] is
//! what a client sends in `PUT /devices/{id}` and [`IdentityRecord::to_json`] what it gets
//! back. Validation follows the hub: ids from its character set and at most 128 characters,
//! keys that decode to 16–64 bytes, thumbprints of 40 or 64 hex digits.
//!
//! The record carries its twin ([`TwinState`]) so that an identity and its twin are one SQLite
//! row and one write: a create makes both, a delete removes both, and a twin write can never
//! land on an identity that no longer exists. Server-maintained members (`generationId`,
//! `etag`, the timestamps) are assigned by the state owner, never taken from a client body.
//! Connection state, last activity and the C2D count are not stored here at all: they are
//! live facts merged in when the JSON is rendered.

use azure_iot_core::sas::SharedAccessKey;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use azure_iot_protocol::identity::check_id;

use super::error::HubError;
use super::twin::TwinState;

/// Checks a device or module id against IoT Hub's rules ([`check_id`]): 1–128 characters of
/// ASCII letters, digits and `-:.+%_#*?!(),=@;$'`. `kind` (`device`, `module`) names the id in
/// the 400 message.
pub(crate) fn validate_id(kind: &str, id: &str) -> Result<(), HubError> {
    check_id(id).map_err(|e| HubError::invalid(format!("{kind} id: {e}")))
}

/// How an identity authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) enum AuthType {
    /// Symmetric keys: the device signs SAS tokens with its primary or secondary key.
    #[default]
    Sas,
    /// X.509 "thumbprint" authentication: the TLS client certificate's SHA-1 or SHA-256 must
    /// equal a registered thumbprint.
    SelfSigned,
    /// X.509 CA authentication: the client chain must lead to a CA registered with the hub
    /// and the leaf's common name must be the device id.
    CertificateAuthority,
    /// No credentials of its own (e.g. a module authenticated by its Edge runtime); such an
    /// identity can only connect with a policy token that grants DeviceConnect.
    None,
}

impl AuthType {
    /// Parses the `authentication.type` member case-insensitively; an unknown type is 400.
    fn parse(text: &str) -> Result<Self, HubError> {
        match text.to_ascii_lowercase().as_str() {
            "sas" => Ok(Self::Sas),
            "selfsigned" => Ok(Self::SelfSigned),
            "certificateauthority" => Ok(Self::CertificateAuthority),
            "none" => Ok(Self::None),
            _ => Err(HubError::invalid(format!(
                "authentication type `{text}` is not one of sas, selfSigned, certificateAuthority, none"
            ))),
        }
    }

    /// The wire spelling (`sas`, `selfSigned`, `certificateAuthority`, `none`), used in the
    /// identity JSON and as the twin's `authenticationType`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Sas => "sas",
            Self::SelfSigned => "selfSigned",
            Self::CertificateAuthority => "certificateAuthority",
            Self::None => "none",
        }
    }
}

/// `enabled` or `disabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Status {
    /// The identity may connect (the default when a body names no status).
    #[default]
    Enabled,
    /// Connections are refused and live ones closed; the registry and twin stay readable and
    /// writable from the service side.
    Disabled,
}

impl Status {
    /// Parses `status` case-insensitively (SDKs send `enabled` and `Enabled`); other values
    /// are 400.
    fn parse(text: &str) -> Result<Self, HubError> {
        match text.to_ascii_lowercase().as_str() {
            "enabled" => Ok(Self::Enabled),
            "disabled" => Ok(Self::Disabled),
            _ => Err(HubError::invalid(format!(
                "status `{text}` is not `enabled` or `disabled`"
            ))),
        }
    }

    /// The lower-case wire spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
        }
    }
}

/// An identity's credentials.
///
/// Only the members of `auth_type` are ever set (validation refuses keys on an X.509 identity
/// and thumbprints on a SAS one), so a device cannot authenticate by a method its registry
/// entry does not name. Two of each exist so a device can roll one while using the other.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Credentials {
    /// Which of the members below are in use.
    pub(crate) auth_type: AuthType,
    /// Base64 symmetric keys (SAS).
    pub(crate) primary_key: Option<String>,
    /// The second SAS key; a token signed with either is accepted.
    pub(crate) secondary_key: Option<String>,
    /// Upper-case hex thumbprints (self-signed X.509).
    pub(crate) primary_thumbprint: Option<String>,
    /// The second thumbprint; a certificate matching either is accepted.
    pub(crate) secondary_thumbprint: Option<String>,
}

impl Credentials {
    /// The REST `authentication` object. Both sub-objects are always present, with `null`
    /// members, as the hub renders them: clients index into them without checking.
    fn to_json(&self) -> Value {
        json!({
            "symmetricKey": {
                "primaryKey": self.primary_key,
                "secondaryKey": self.secondary_key,
            },
            "x509Thumbprint": {
                "primaryThumbprint": self.primary_thumbprint,
                "secondaryThumbprint": self.secondary_thumbprint,
            },
            "type": self.auth_type.as_str(),
        })
    }
}

/// A stored device or module identity with its twin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct IdentityRecord {
    /// Case-sensitive device id (validated by [`validate_id`]).
    pub(crate) device_id: String,
    /// `Some` for a module identity; the store keys it as `""` for the device itself.
    pub(crate) module_id: Option<String>,
    /// Assigned at creation and never changed: a device deleted and created again under the
    /// same id gets a new one, which is how clients and feedback records tell the two apart.
    pub(crate) generation_id: String,
    /// Identity ETag (base64 of a decimal sequence number, the hub's shape); new on every
    /// identity write. Distinct from the twin ETag.
    pub(crate) etag: String,
    /// Whether the identity may connect.
    pub(crate) status: Status,
    /// Free text of at most 128 characters, usually why a device was disabled.
    pub(crate) status_reason: Option<String>,
    /// When `status` last changed; [`NEVER`] until it does.
    pub(crate) status_updated_time: String,
    /// How the identity authenticates.
    pub(crate) credentials: Credentials,
    /// `capabilities.iotEdge`: the device is an IoT Edge gateway.
    pub(crate) iot_edge: bool,
    /// Edge scope of this device (`ms-azure-iot-edge://...`), stored and echoed, not enforced.
    pub(crate) device_scope: Option<String>,
    /// Scopes of the Edge parents (stored and echoed, not enforced).
    pub(crate) parent_scopes: Vec<String>,
    /// Module `managedBy` (e.g. `IotEdge`); modules only.
    pub(crate) managed_by: Option<String>,
    /// Stored value of `lastActivityTime`; the live value from the connection bookkeeping wins
    /// when there is one (activity is not written per message).
    pub(crate) last_activity_time: String,
    /// Stored value of `connectionStateUpdatedTime`, overridden by live state in the same way.
    pub(crate) connection_state_updated_time: String,
    /// The identity's twin, stored in the same row.
    pub(crate) twin: TwinState,
}

/// The time IoT Hub reports for "never" (.NET's `DateTime.MinValue`); the SDKs parse it as an
/// ordinary date, so it is used instead of `null`.
pub(crate) const NEVER: &str = "0001-01-01T00:00:00Z";

impl IdentityRecord {
    /// The REST JSON of the identity (`GET /devices/{id}` and friends).
    ///
    /// `connected` and `c2d_count` come from live state, not storage. Device-only members
    /// (`status`, `statusReason`, `capabilities`, scopes) are left out of a module's JSON and
    /// `moduleId`/`managedBy` out of a device's, as in the hub's `Device` and `Module`
    /// shapes. `connectionState` is capitalised (`Connected`), unlike `status`.
    pub(crate) fn to_json(&self, connected: bool, c2d_count: u64) -> Value {
        let mut out = json!({
            "deviceId": self.device_id,
            "generationId": self.generation_id,
            "etag": self.etag,
            "connectionState": if connected { "Connected" } else { "Disconnected" },
            "connectionStateUpdatedTime": self.connection_state_updated_time,
            "lastActivityTime": self.last_activity_time,
            "cloudToDeviceMessageCount": c2d_count,
            "authentication": self.credentials.to_json(),
        });
        let map = out.as_object_mut();
        if let Some(map) = map {
            match &self.module_id {
                Some(module) => {
                    map.insert("moduleId".into(), json!(module));
                    map.insert("managedBy".into(), json!(self.managed_by));
                }
                None => {
                    map.insert("status".into(), json!(self.status.as_str()));
                    map.insert("statusReason".into(), json!(self.status_reason));
                    map.insert("statusUpdatedTime".into(), json!(self.status_updated_time));
                    map.insert("capabilities".into(), json!({"iotEdge": self.iot_edge}));
                    map.insert("deviceScope".into(), json!(self.device_scope));
                    map.insert("parentScopes".into(), json!(self.parent_scopes));
                }
            }
        }
        out
    }
}

/// The body of `PUT /devices/{id}` or `PUT /devices/{id}/modules/{mid}` (and the identity part
/// of a bulk entry). Unknown members are ignored, as the hub does; read-only members
/// (`etag`, `connectionState` ...) are accepted and ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IdentityBody {
    /// Must equal the id in the URL when present and non-empty.
    pub(crate) device_id: Option<String>,
    /// Must equal the module id in the URL when both are present.
    pub(crate) module_id: Option<String>,
    /// `enabled` (default) or `disabled`, any case.
    pub(crate) status: Option<String>,
    /// At most 128 characters.
    pub(crate) status_reason: Option<String>,
    /// Credentials; absent means SAS with generated keys.
    pub(crate) authentication: Option<AuthenticationBody>,
    /// `{iotEdge}`; absent means not an Edge device.
    pub(crate) capabilities: Option<CapabilitiesBody>,
    /// Edge device scope, stored as given.
    pub(crate) device_scope: Option<String>,
    /// Edge parent scopes, stored as given.
    pub(crate) parent_scopes: Option<Vec<String>>,
    /// Module `managedBy`, stored as given.
    pub(crate) managed_by: Option<String>,
}

/// The `authentication` member of an identity body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuthenticationBody {
    /// `sas`, `selfSigned`, `certificateAuthority` or `none`; inferred when absent.
    #[serde(rename = "type")]
    pub(crate) auth_type: Option<String>,
    /// `{primaryKey, secondaryKey}`; empty strings count as absent (Node sends `""`).
    pub(crate) symmetric_key: Option<KeyPairBody>,
    /// `{primaryThumbprint, secondaryThumbprint}`.
    pub(crate) x509_thumbprint: Option<ThumbprintBody>,
}

/// `authentication.symmetricKey`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeyPairBody {
    /// Base64 key, 16–64 bytes decoded; generated when missing.
    pub(crate) primary_key: Option<String>,
    /// Base64 key, 16–64 bytes decoded; generated when missing.
    pub(crate) secondary_key: Option<String>,
}

/// `authentication.x509Thumbprint`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ThumbprintBody {
    /// 40 or 64 hex digits, any case; required for `selfSigned`.
    pub(crate) primary_thumbprint: Option<String>,
    /// 40 or 64 hex digits, any case; optional.
    pub(crate) secondary_thumbprint: Option<String>,
}

/// `capabilities` of a device body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CapabilitiesBody {
    /// Whether the device is an IoT Edge device.
    pub(crate) iot_edge: Option<bool>,
}

/// What a validated body asks for: the client-settable part of an [`IdentityRecord`], with
/// defaults applied. SAS keys may still be missing here; the state owner fills them with
/// [`Credentials::fill_missing_keys`], because only it knows whether this is a create or an
/// update.
pub(crate) struct IdentitySpec {
    /// Requested status.
    pub(crate) status: Status,
    /// Requested status reason.
    pub(crate) status_reason: Option<String>,
    /// Validated credentials (keys possibly still to be filled in).
    pub(crate) credentials: Credentials,
    /// Requested `capabilities.iotEdge`.
    pub(crate) iot_edge: bool,
    /// Requested Edge device scope.
    pub(crate) device_scope: Option<String>,
    /// Requested Edge parent scopes.
    pub(crate) parent_scopes: Vec<String>,
    /// Requested module `managedBy`.
    pub(crate) managed_by: Option<String>,
}

impl IdentityBody {
    /// Validates the body for identity `device_id`/`module_id` (from the URL): ids in the body,
    /// if present, must match; keys are generated where missing (as the hub does for `sas`).
    pub(crate) fn validate(
        self,
        device_id: &str,
        module_id: Option<&str>,
    ) -> Result<IdentitySpec, HubError> {
        if let Some(body_id) = self.device_id.as_deref().filter(|id| !id.is_empty())
            && body_id != device_id
        {
            return Err(HubError::invalid(format!(
                "deviceId `{body_id}` in the body does not match `{device_id}` in the URL"
            )));
        }
        if let (Some(body_module), Some(url_module)) = (
            self.module_id.as_deref().filter(|m| !m.is_empty()),
            module_id,
        ) && body_module != url_module
        {
            return Err(HubError::invalid(format!(
                "moduleId `{body_module}` in the body does not match `{url_module}` in the URL"
            )));
        }
        let status = self
            .status
            .as_deref()
            .map(Status::parse)
            .transpose()?
            .unwrap_or_default();
        if let Some(reason) = &self.status_reason
            && reason.chars().count() > 128
        {
            return Err(HubError::invalid(
                "statusReason is longer than 128 characters",
            ));
        }
        let credentials = self.authentication.unwrap_or_default().validate()?;
        Ok(IdentitySpec {
            status,
            status_reason: self.status_reason,
            credentials,
            iot_edge: self.capabilities.and_then(|c| c.iot_edge).unwrap_or(false),
            device_scope: self.device_scope,
            parent_scopes: self.parent_scopes.unwrap_or_default(),
            managed_by: self.managed_by,
        })
    }
}

impl AuthenticationBody {
    /// Checks the credentials against their type: SAS identities take keys only (each 16–64
    /// bytes), `selfSigned` ones a primary thumbprint and no keys, `certificateAuthority` and
    /// `none` neither. Without a `type`, a thumbprint means `selfSigned` (as the Node SDK
    /// infers) and anything else `sas`.
    fn validate(self) -> Result<Credentials, HubError> {
        let keys = self.symmetric_key.unwrap_or_default();
        let prints = self.x509_thumbprint.unwrap_or_default();
        let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let (primary_key, secondary_key) =
            (non_empty(keys.primary_key), non_empty(keys.secondary_key));
        let (primary_thumbprint, secondary_thumbprint) = (
            non_empty(prints.primary_thumbprint),
            non_empty(prints.secondary_thumbprint),
        );
        // Like the Node SDK: a thumbprint without a type means self-signed.
        let auth_type = match self.auth_type.as_deref() {
            Some(t) => AuthType::parse(t)?,
            None if primary_thumbprint.is_some() || secondary_thumbprint.is_some() => {
                AuthType::SelfSigned
            }
            None => AuthType::Sas,
        };
        let mut credentials = Credentials {
            auth_type,
            ..Credentials::default()
        };
        match auth_type {
            AuthType::Sas => {
                if primary_thumbprint.is_some() || secondary_thumbprint.is_some() {
                    return Err(HubError::invalid(
                        "a sas identity cannot have X.509 thumbprints",
                    ));
                }
                credentials.primary_key = primary_key
                    .map(|k| checked_key("primaryKey", k))
                    .transpose()?;
                credentials.secondary_key = secondary_key
                    .map(|k| checked_key("secondaryKey", k))
                    .transpose()?;
            }
            AuthType::SelfSigned => {
                if primary_key.is_some() || secondary_key.is_some() {
                    return Err(HubError::invalid(
                        "a selfSigned identity cannot have symmetric keys",
                    ));
                }
                let primary = primary_thumbprint.ok_or_else(|| {
                    HubError::invalid("a selfSigned identity needs a primaryThumbprint")
                })?;
                credentials.primary_thumbprint = Some(checked_thumbprint(&primary)?);
                credentials.secondary_thumbprint = secondary_thumbprint
                    .as_deref()
                    .map(checked_thumbprint)
                    .transpose()?;
            }
            AuthType::CertificateAuthority | AuthType::None => {
                if primary_key.is_some()
                    || secondary_key.is_some()
                    || primary_thumbprint.is_some()
                    || secondary_thumbprint.is_some()
                {
                    return Err(HubError::invalid(format!(
                        "a {} identity has neither keys nor thumbprints",
                        auth_type.as_str()
                    )));
                }
            }
        }
        Ok(credentials)
    }
}

/// A given key must be standard base64 that decodes to 16–64 bytes, the range the hub
/// accepts; it is stored as sent (trimmed), so the client reads back exactly its own key.
fn checked_key(name: &str, text: String) -> Result<String, HubError> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| HubError::invalid(format!("{name} is not valid base64")))?;
    if !(16..=64).contains(&bytes.len()) {
        return Err(HubError::invalid(format!(
            "{name} must decode to 16 to 64 bytes, not {}",
            bytes.len()
        )));
    }
    Ok(text.trim().to_owned())
}

impl Credentials {
    /// Fills in SAS keys the request left out: from `existing` (an update that does not
    /// mention keys keeps them; the Node SDK sends empty ones on every update), else new random
    /// ones (a create), as the hub does.
    pub(crate) fn fill_missing_keys(
        &mut self,
        existing: Option<&Credentials>,
    ) -> Result<(), HubError> {
        if self.auth_type != AuthType::Sas {
            return Ok(());
        }
        let keep = existing.filter(|e| e.auth_type == AuthType::Sas);
        for (slot, old) in [
            (
                &mut self.primary_key,
                keep.and_then(|e| e.primary_key.clone()),
            ),
            (
                &mut self.secondary_key,
                keep.and_then(|e| e.secondary_key.clone()),
            ),
        ] {
            if slot.is_none() {
                *slot = match old {
                    Some(key) => Some(key),
                    None => Some(
                        SharedAccessKey::generate()
                            .map(|k| k.to_base64())
                            .map_err(HubError::storage)?,
                    ),
                };
            }
        }
        Ok(())
    }
}

/// A thumbprint is 40 (SHA-1) or 64 (SHA-256) hex digits; stored upper-case.
fn checked_thumbprint(text: &str) -> Result<String, HubError> {
    let text = text.trim();
    if !(text.len() == 40 || text.len() == 64) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(HubError::invalid(
            "an X.509 thumbprint must be 40 or 64 hexadecimal digits",
        ));
    }
    Ok(text.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_hub_alphabet() {
        for ok in [
            "d1",
            "a-b:c.d+e%f_g#h*i?j!k(l)m,n=o@p;q$r's",
            &"x".repeat(128),
        ] {
            validate_id("device", ok).unwrap();
        }
        for bad in ["", "a b", "a/b", "é", &"x".repeat(129)] {
            assert!(validate_id("device", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sas_keys_are_generated_or_checked() {
        let mut spec = IdentityBody::default().validate("d", None).unwrap();
        assert_eq!(spec.credentials.auth_type, AuthType::Sas);
        assert_eq!(spec.credentials.primary_key, None);
        spec.credentials.fill_missing_keys(None).unwrap();
        assert!(spec.credentials.primary_key.is_some() && spec.credentials.secondary_key.is_some());
        let mut update = IdentityBody::default().validate("d", None).unwrap();
        update
            .credentials
            .fill_missing_keys(Some(&spec.credentials))
            .unwrap();
        assert_eq!(
            update.credentials, spec.credentials,
            "an update without keys keeps them"
        );
        let body: IdentityBody = serde_json::from_value(json!({
            "authentication": {"symmetricKey": {"primaryKey": "", "secondaryKey": ""}}
        }))
        .unwrap();
        assert_eq!(
            body.validate("d", None).unwrap().credentials.primary_key,
            None
        );
        let short: IdentityBody = serde_json::from_value(json!({
            "authentication": {"symmetricKey": {"primaryKey": "AAAA"}}
        }))
        .unwrap();
        assert!(short.validate("d", None).is_err());
    }

    #[test]
    fn thumbprints_imply_self_signed() {
        let body: IdentityBody = serde_json::from_value(json!({
            "authentication": {"x509Thumbprint": {"primaryThumbprint": "ab".repeat(20)}}
        }))
        .unwrap();
        let spec = body.validate("d", None).unwrap();
        assert_eq!(spec.credentials.auth_type, AuthType::SelfSigned);
        assert_eq!(spec.credentials.primary_thumbprint, Some("AB".repeat(20)));
        let bad: IdentityBody = serde_json::from_value(json!({
            "authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": "xyz"}}
        }))
        .unwrap();
        assert!(bad.validate("d", None).is_err());
    }

    #[test]
    fn body_ids_must_match_the_url() {
        let body: IdentityBody = serde_json::from_value(json!({"deviceId": "other"})).unwrap();
        assert!(body.validate("d", None).is_err());
        let body: IdentityBody =
            serde_json::from_value(json!({"deviceId": "d", "status": "Disabled"})).unwrap();
        assert_eq!(body.validate("d", None).unwrap().status, Status::Disabled);
    }
}
