//! Connection strings: the `Key=Value;Key=Value` credentials the Azure portal hands out.
//!
//! Two families exist:
//!
//! * [`DeviceConnectionString`]: `HostName` + `DeviceId` (+ `ModuleId`) + exactly one
//!   credential: `SharedAccessKey` (optionally with `SharedAccessKeyName`, meaning the key is a
//!   hub policy key with DeviceConnect), `SharedAccessSignature` (a ready-made token), or
//!   `x509=true` (the certificate is supplied separately). `GatewayHostName` names an IoT Edge
//!   or protocol gateway to dial instead of the hub.
//! * [`ServiceConnectionString`]: `HostName` + `SharedAccessKeyName` + `SharedAccessKey`, a
//!   shared access policy of an IoT hub or of a Device Provisioning Service (the forms are the
//!   same; the host tells them apart).
//! * [`EventHubConnectionString`]: `Endpoint=sb://…` + `EntityPath` + a policy: the hub's
//!   built-in Event Hubs-compatible endpoint (`eventhub.rs`).
//!
//! Parsing follows the official SDKs: segments are split on `;`, each at its **first** `=`
//! (keys, tokens and base64 values contain `=`); key names are case-sensitive. Being strict
//! where the SDKs are strict and tolerant where users trip:
//!
//! * one trailing `;` is accepted; any other empty segment is an error (the Python SDK's rule);
//! * a known key spelt with different case (`hostname=`) is an error naming the right spelling,
//!   rather than a confusing "HostName is missing";
//! * a known key given twice is an error; unknown keys (`UseProvisioning`, future keys) are
//!   kept in order and written back by [`DeviceConnectionString::to_secret_string`];
//! * whitespace around keys and values is not significant and is dropped.
//!
//! Errors name the offending key or segment position, never a value, so a secret pasted in the
//! wrong place does not end up in a log. `Display` and `Debug` redact keys, tokens and the
//! values of unknown keys (a misspelt `SharedAccesKey=` holds a secret); the complete text is
//! only available from `to_secret_string()`.

use std::fmt;

use crate::sas::{SasError, SasToken, SharedAccessKey};

mod eventhub;
pub use eventhub::EventHubConnectionString;

/// Why a connection string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionStringError {
    /// The string is empty or only whitespace.
    #[error("the connection string is empty")]
    Empty,
    /// Segment number `position` (1-based) is empty, e.g. `a=b;;c=d`.
    #[error("segment {position} of the connection string is empty")]
    EmptySegment {
        /// 1-based position of the segment.
        position: usize,
    },
    /// Segment number `position` (1-based) has no `=`.
    #[error("segment {position} of the connection string has no `=`")]
    MissingEquals {
        /// 1-based position of the segment.
        position: usize,
    },
    /// Segment number `position` (1-based) has an empty key, e.g. `=value`.
    #[error("segment {position} of the connection string has an empty key")]
    EmptyKey {
        /// 1-based position of the segment.
        position: usize,
    },
    /// A known key is spelt with the wrong case.
    #[error("connection string key `{found}` must be spelt `{expected}`")]
    MisspelledKey {
        /// The key as written.
        found: String,
        /// The key's correct spelling.
        expected: &'static str,
    },
    /// A key appears more than once.
    #[error("connection string key `{0}` appears more than once")]
    DuplicateKey(&'static str),
    /// A required key is absent.
    #[error("connection string has no `{0}`")]
    MissingKey(&'static str),
    /// A key has an empty value.
    #[error("connection string key `{0}` has an empty value")]
    EmptyValue(&'static str),
    /// A value is malformed (bad base64 key, unparseable token, `x509` not true/false).
    #[error("connection string key `{key}` is invalid: {reason}")]
    InvalidValue {
        /// The key whose value is invalid.
        key: &'static str,
        /// What is wrong with it (never the value itself).
        reason: String,
    },
    /// More than one of `SharedAccessKey`, `SharedAccessSignature`, `x509=true` is present.
    #[error(
        "a device connection string needs exactly one of SharedAccessKey, SharedAccessSignature or x509=true"
    )]
    ConflictingCredentials,
    /// A key that makes no sense in this kind of connection string.
    #[error("`{key}` is not allowed in a {kind} connection string")]
    UnexpectedKey {
        /// The key.
        key: &'static str,
        /// `device`, `service` or `Event Hubs`.
        kind: &'static str,
    },
}

type Result<T> = std::result::Result<T, ConnectionStringError>;

const HOST_NAME: &str = "HostName";
const DEVICE_ID: &str = "DeviceId";
const MODULE_ID: &str = "ModuleId";
const SHARED_ACCESS_KEY: &str = "SharedAccessKey";
const SHARED_ACCESS_KEY_NAME: &str = "SharedAccessKeyName";
const SHARED_ACCESS_SIGNATURE: &str = "SharedAccessSignature";
const GATEWAY_HOST_NAME: &str = "GatewayHostName";
const X509: &str = "x509";

const KNOWN_KEYS: [&str; 8] = [
    HOST_NAME,
    DEVICE_ID,
    MODULE_ID,
    SHARED_ACCESS_KEY,
    SHARED_ACCESS_KEY_NAME,
    SHARED_ACCESS_SIGNATURE,
    GATEWAY_HOST_NAME,
    X509,
];

/// How a device or module proves its identity.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DeviceCredential {
    /// The device's (or module's) own symmetric key.
    SharedAccessKey(SharedAccessKey),
    /// A hub policy key (with DeviceConnect permission) and its name, used to sign tokens for
    /// this device.
    PolicyKey {
        /// The policy name (`skn`).
        key_name: String,
        /// The policy key.
        key: SharedAccessKey,
    },
    /// A ready-made token. It cannot be renewed from the connection string.
    SharedAccessSignature(SasToken),
    /// An X.509 client certificate, supplied separately.
    X509,
}

/// A device or module connection string.
#[derive(Clone)]
pub struct DeviceConnectionString {
    host_name: String,
    device_id: String,
    module_id: Option<String>,
    gateway_host_name: Option<String>,
    credential: DeviceCredential,
    extra: Vec<(String, String)>,
}

/// A shared access policy connection string for an IoT hub or a DPS instance.
#[derive(Clone)]
pub struct ServiceConnectionString {
    host_name: String,
    key_name: String,
    key: SharedAccessKey,
    extra: Vec<(String, String)>,
}

/// Either kind of connection string, as told apart by the presence of `DeviceId`.
#[derive(Debug, Clone)]
pub enum ConnectionString {
    /// Has a `DeviceId`.
    Device(DeviceConnectionString),
    /// Has a `SharedAccessKeyName` and no `DeviceId`.
    Service(ServiceConnectionString),
}

impl ConnectionString {
    /// Parses either kind; see the [module docs](self) for the rules.
    pub fn parse(text: &str) -> Result<Self> {
        let fields = Fields::parse(text)?;
        if fields.get(DEVICE_ID).is_some() {
            DeviceConnectionString::from_fields(fields).map(Self::Device)
        } else if fields.get(SHARED_ACCESS_KEY_NAME).is_some() {
            ServiceConnectionString::from_fields(fields).map(Self::Service)
        } else {
            Err(ConnectionStringError::MissingKey(DEVICE_ID))
        }
    }
}

impl std::str::FromStr for ConnectionString {
    type Err = ConnectionStringError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl DeviceConnectionString {
    /// Parses a device or module connection string.
    pub fn parse(text: &str) -> Result<Self> {
        Self::from_fields(Fields::parse(text)?)
    }

    /// Builds one from its parts, for a device (`module_id` `None`) or a module.
    pub fn new(
        host_name: impl Into<String>,
        device_id: impl Into<String>,
        module_id: Option<String>,
        credential: DeviceCredential,
    ) -> Self {
        Self {
            host_name: host_name.into(),
            device_id: device_id.into(),
            module_id,
            gateway_host_name: None,
            credential,
            extra: Vec::new(),
        }
    }

    /// Sets `GatewayHostName`.
    pub fn with_gateway_host_name(mut self, gateway: impl Into<String>) -> Self {
        self.gateway_host_name = Some(gateway.into());
        self
    }

    fn from_fields(mut fields: Fields) -> Result<Self> {
        let host_name = fields.required(HOST_NAME)?;
        let device_id = fields.required(DEVICE_ID)?;
        let module_id = fields.take(MODULE_ID);
        let gateway_host_name = fields.take(GATEWAY_HOST_NAME);
        let key = fields.take(SHARED_ACCESS_KEY);
        let key_name = fields.take(SHARED_ACCESS_KEY_NAME);
        let token = fields.take(SHARED_ACCESS_SIGNATURE);
        let x509 = match fields.take(X509) {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(_) => {
                return Err(ConnectionStringError::InvalidValue {
                    key: X509,
                    reason: "expected `true` or `false`".into(),
                });
            }
        };
        let credential = match (key, token, x509) {
            (Some(key), None, false) => {
                let key = parse_key(&key)?;
                match key_name {
                    Some(key_name) => DeviceCredential::PolicyKey { key_name, key },
                    None => DeviceCredential::SharedAccessKey(key),
                }
            }
            (None, Some(token), false) => {
                reject_key_name(key_name)?;
                DeviceCredential::SharedAccessSignature(SasToken::parse(&token).map_err(
                    |e: SasError| ConnectionStringError::InvalidValue {
                        key: SHARED_ACCESS_SIGNATURE,
                        reason: e.to_string(),
                    },
                )?)
            }
            (None, None, true) => {
                reject_key_name(key_name)?;
                DeviceCredential::X509
            }
            (None, None, false) => {
                return Err(ConnectionStringError::MissingKey(SHARED_ACCESS_KEY));
            }
            _ => return Err(ConnectionStringError::ConflictingCredentials),
        };
        Ok(Self {
            host_name,
            device_id,
            module_id,
            gateway_host_name,
            credential,
            extra: fields.unknown,
        })
    }

    /// `HostName`: the hub's host name (also when a gateway is dialled).
    pub fn host_name(&self) -> &str {
        &self.host_name
    }

    /// The hub name: `HostName` up to its first `.`.
    pub fn hub_name(&self) -> &str {
        hub_name(&self.host_name)
    }

    /// `DeviceId`.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// `ModuleId`, for a module identity.
    pub fn module_id(&self) -> Option<&str> {
        self.module_id.as_deref()
    }

    /// `GatewayHostName`, when the client must dial an IoT Edge or protocol gateway.
    pub fn gateway_host_name(&self) -> Option<&str> {
        self.gateway_host_name.as_deref()
    }

    /// The host to open a socket to: the gateway if there is one, else the hub.
    pub fn connect_host(&self) -> &str {
        self.gateway_host_name.as_deref().unwrap_or(&self.host_name)
    }

    /// The credential.
    pub fn credential(&self) -> &DeviceCredential {
        &self.credential
    }

    /// Keys this crate does not know, in the order they appeared.
    pub fn unknown_keys(&self) -> &[(String, String)] {
        &self.extra
    }

    /// The complete connection string, secrets included. Never log it.
    pub fn to_secret_string(&self) -> String {
        self.format(true)
    }

    fn format(&self, secrets: bool) -> String {
        let mut out = Writer::default();
        out.pair(HOST_NAME, &self.host_name);
        out.pair(DEVICE_ID, &self.device_id);
        if let Some(module) = &self.module_id {
            out.pair(MODULE_ID, module);
        }
        match &self.credential {
            DeviceCredential::SharedAccessKey(key) => {
                out.pair(SHARED_ACCESS_KEY, &redact(secrets, || key.to_base64()))
            }
            DeviceCredential::PolicyKey { key_name, key } => {
                out.pair(SHARED_ACCESS_KEY_NAME, key_name);
                out.pair(SHARED_ACCESS_KEY, &redact(secrets, || key.to_base64()));
            }
            DeviceCredential::SharedAccessSignature(token) => out.pair(
                SHARED_ACCESS_SIGNATURE,
                &redact(secrets, || token.secret().to_owned()),
            ),
            DeviceCredential::X509 => out.pair(X509, "true"),
        }
        if let Some(gateway) = &self.gateway_host_name {
            out.pair(GATEWAY_HOST_NAME, gateway);
        }
        out.unknown(&self.extra, secrets);
        out.0
    }
}

impl std::str::FromStr for DeviceConnectionString {
    type Err = ConnectionStringError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Redacted: keys and tokens are written as `<redacted>`.
impl fmt::Display for DeviceConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format(false))
    }
}

impl fmt::Debug for DeviceConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DeviceConnectionString")
            .field(&self.format(false))
            .finish()
    }
}

impl ServiceConnectionString {
    /// Parses a policy connection string (`HostName;SharedAccessKeyName;SharedAccessKey`).
    pub fn parse(text: &str) -> Result<Self> {
        Self::from_fields(Fields::parse(text)?)
    }

    /// Builds one from its parts.
    pub fn new(
        host_name: impl Into<String>,
        key_name: impl Into<String>,
        key: SharedAccessKey,
    ) -> Self {
        Self {
            host_name: host_name.into(),
            key_name: key_name.into(),
            key,
            extra: Vec::new(),
        }
    }

    fn from_fields(mut fields: Fields) -> Result<Self> {
        for key in [
            DEVICE_ID,
            MODULE_ID,
            SHARED_ACCESS_SIGNATURE,
            X509,
            GATEWAY_HOST_NAME,
        ] {
            if fields.get(key).is_some() {
                return Err(ConnectionStringError::UnexpectedKey {
                    key,
                    kind: "service",
                });
            }
        }
        let host_name = fields.required(HOST_NAME)?;
        let key_name = fields.required(SHARED_ACCESS_KEY_NAME)?;
        let key = parse_key(&fields.required(SHARED_ACCESS_KEY)?)?;
        Ok(Self {
            host_name,
            key_name,
            key,
            extra: fields.unknown,
        })
    }

    /// `HostName`: the hub's (or DPS's) host name.
    pub fn host_name(&self) -> &str {
        &self.host_name
    }

    /// The hub (or DPS) name: `HostName` up to its first `.`.
    pub fn hub_name(&self) -> &str {
        hub_name(&self.host_name)
    }

    /// `SharedAccessKeyName`: the policy name.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// `SharedAccessKey`: the policy key.
    pub fn key(&self) -> &SharedAccessKey {
        &self.key
    }

    /// Keys this crate does not know, in the order they appeared.
    pub fn unknown_keys(&self) -> &[(String, String)] {
        &self.extra
    }

    /// The complete connection string, key included. Never log it.
    pub fn to_secret_string(&self) -> String {
        self.format(true)
    }

    fn format(&self, secrets: bool) -> String {
        let mut out = Writer::default();
        out.pair(HOST_NAME, &self.host_name);
        out.pair(SHARED_ACCESS_KEY_NAME, &self.key_name);
        out.pair(SHARED_ACCESS_KEY, &redact(secrets, || self.key.to_base64()));
        out.unknown(&self.extra, secrets);
        out.0
    }
}

impl std::str::FromStr for ServiceConnectionString {
    type Err = ConnectionStringError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Redacted: the key is written as `<redacted>`.
impl fmt::Display for ServiceConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format(false))
    }
}

impl fmt::Debug for ServiceConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ServiceConnectionString")
            .field(&self.format(false))
            .finish()
    }
}

/// Segments split into known keys (by index in [`KNOWN_KEYS`]) and unknown ones.
struct Fields {
    known: [Option<String>; KNOWN_KEYS.len()],
    unknown: Vec<(String, String)>,
}

impl Fields {
    fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ConnectionStringError::Empty);
        }
        let text = text.strip_suffix(';').unwrap_or(text);
        let mut fields = Fields {
            known: Default::default(),
            unknown: Vec::new(),
        };
        for (index, segment) in text.split(';').enumerate() {
            let position = index + 1;
            if segment.trim().is_empty() {
                return Err(ConnectionStringError::EmptySegment { position });
            }
            let (key, value) = segment
                .split_once('=')
                .ok_or(ConnectionStringError::MissingEquals { position })?;
            let key = key.trim();
            if key.is_empty() {
                return Err(ConnectionStringError::EmptyKey { position });
            }
            match KNOWN_KEYS.iter().position(|k| *k == key) {
                Some(slot) => {
                    let name = KNOWN_KEYS[slot];
                    let value = value.trim();
                    if value.is_empty() {
                        return Err(ConnectionStringError::EmptyValue(name));
                    }
                    if fields.known[slot].replace(value.to_owned()).is_some() {
                        return Err(ConnectionStringError::DuplicateKey(name));
                    }
                }
                None => {
                    if let Some(expected) = KNOWN_KEYS
                        .iter()
                        .find(|k| k.eq_ignore_ascii_case(key) && **k != X509)
                    {
                        return Err(ConnectionStringError::MisspelledKey {
                            found: key.to_owned(),
                            expected,
                        });
                    }
                    // `X509=true` is accepted as `x509` (the C# SDK's spelling varies).
                    if key.eq_ignore_ascii_case(X509) {
                        let slot = KNOWN_KEYS.len() - 1;
                        if fields.known[slot]
                            .replace(value.trim().to_owned())
                            .is_some()
                        {
                            return Err(ConnectionStringError::DuplicateKey(X509));
                        }
                        continue;
                    }
                    fields
                        .unknown
                        .push((key.to_owned(), value.trim().to_owned()));
                }
            }
        }
        Ok(fields)
    }

    fn slot(key: &str) -> usize {
        KNOWN_KEYS.iter().position(|k| *k == key).unwrap_or(0)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.known[Self::slot(key)].as_deref()
    }

    fn take(&mut self, key: &str) -> Option<String> {
        self.known[Self::slot(key)].take()
    }

    fn required(&mut self, key: &'static str) -> Result<String> {
        self.take(key).ok_or(ConnectionStringError::MissingKey(key))
    }
}

fn parse_key(text: &str) -> Result<SharedAccessKey> {
    SharedAccessKey::from_base64(text).map_err(|e| ConnectionStringError::InvalidValue {
        key: SHARED_ACCESS_KEY,
        reason: e.to_string(),
    })
}

fn reject_key_name(key_name: Option<String>) -> Result<()> {
    match key_name {
        Some(_) => Err(ConnectionStringError::UnexpectedKey {
            key: SHARED_ACCESS_KEY_NAME,
            kind: "token or X.509 device",
        }),
        None => Ok(()),
    }
}

fn redact(show: bool, secret: impl FnOnce() -> String) -> String {
    if show {
        secret()
    } else {
        "<redacted>".to_owned()
    }
}

fn hub_name(host: &str) -> &str {
    host.split('.').next().unwrap_or(host)
}

#[derive(Default)]
struct Writer(String);

impl Writer {
    /// Unknown keys are redacted too when secrets are hidden: a misspelt key
    /// (`SharedAccesKey=...`) may well hold a secret.
    fn unknown(&mut self, extra: &[(String, String)], secrets: bool) {
        for (k, v) in extra {
            self.pair(k, if secrets { v } else { "<redacted>" });
        }
    }

    fn pair(&mut self, key: &str, value: &str) {
        if !self.0.is_empty() {
            self.0.push(';');
        }
        self.0.push_str(key);
        self.0.push('=');
        self.0.push_str(value);
    }
}

#[cfg(test)]
mod tests;
