//! Event Hubs connection strings: `Endpoint=sb://{host}[:port]/;SharedAccessKeyName=…;
//! SharedAccessKey=…;EntityPath={event hub}` — what the portal shows for an IoT hub's
//! built-in Event Hubs-compatible endpoint, and what an emulator announces for its own.
//!
//! Parsed with the same segment rules as the IoT Hub forms (split on `;`, each at its first
//! `=`, known keys case-sensitive with misspellings named, whitespace dropped). Keys the
//! Event Hubs SDKs also read (`UseDevelopmentEmulator`, …) are kept as unknown keys; a
//! ready-made `SharedAccessSignature` is refused (this type signs its own tokens).

use std::fmt;

use super::{
    ConnectionStringError, DEVICE_ID, Fields, GATEWAY_HOST_NAME, HOST_NAME, MODULE_ID, Result,
    SHARED_ACCESS_KEY, SHARED_ACCESS_KEY_NAME, SHARED_ACCESS_SIGNATURE, Writer, X509, parse_key,
    redact,
};
use crate::sas::SharedAccessKey;

const ENDPOINT: &str = "Endpoint";
const ENTITY_PATH: &str = "EntityPath";
const KIND: &str = "Event Hubs";

/// An Event Hubs connection string with a shared access policy and an entity (event hub).
///
/// `Display` and `Debug` redact the key; [`to_secret_string`](Self::to_secret_string) gives
/// the whole text.
#[derive(Clone)]
pub struct EventHubConnectionString {
    host: String,
    port: Option<u16>,
    entity_path: String,
    key_name: String,
    key: SharedAccessKey,
    extra: Vec<(String, String)>,
}

impl EventHubConnectionString {
    /// Parses `Endpoint=sb://host[:port]/;SharedAccessKeyName=…;SharedAccessKey=…;EntityPath=…`.
    pub fn parse(text: &str) -> Result<Self> {
        let mut fields = Fields::parse(text)?;
        for key in [
            HOST_NAME,
            DEVICE_ID,
            MODULE_ID,
            SHARED_ACCESS_SIGNATURE,
            X509,
            GATEWAY_HOST_NAME,
        ] {
            if fields.get(key).is_some() {
                return Err(ConnectionStringError::UnexpectedKey { key, kind: KIND });
            }
        }
        let endpoint = take_unknown(&mut fields, ENDPOINT)?
            .ok_or(ConnectionStringError::MissingKey(ENDPOINT))?;
        let (host, port) = parse_endpoint(&endpoint)?;
        let entity_path = take_unknown(&mut fields, ENTITY_PATH)?
            .ok_or(ConnectionStringError::MissingKey(ENTITY_PATH))?;
        if entity_path.contains('/') {
            return Err(ConnectionStringError::InvalidValue {
                key: ENTITY_PATH,
                reason: "an event hub name has no `/`".to_owned(),
            });
        }
        let key_name = fields.required(SHARED_ACCESS_KEY_NAME)?;
        let key = parse_key(&fields.required(SHARED_ACCESS_KEY)?)?;
        Ok(Self {
            host,
            port,
            entity_path,
            key_name,
            key,
            extra: fields.unknown,
        })
    }

    /// Builds one from its parts (`port` `None`: the AMQPS default, 5671).
    pub fn new(
        host: impl Into<String>,
        port: Option<u16>,
        entity_path: impl Into<String>,
        key_name: impl Into<String>,
        key: SharedAccessKey,
    ) -> Self {
        Self {
            host: host.into(),
            port,
            entity_path: entity_path.into(),
            key_name: key_name.into(),
            key,
            extra: Vec::new(),
        }
    }

    /// The namespace's host name (from `Endpoint`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port in `Endpoint`, if it names one.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// `EntityPath`: the event hub's name.
    pub fn entity_path(&self) -> &str {
        &self.entity_path
    }

    /// `SharedAccessKeyName`: the policy name.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// `SharedAccessKey`: the policy key.
    pub fn key(&self) -> &SharedAccessKey {
        &self.key
    }

    /// Keys this crate does not know (`UseDevelopmentEmulator`, …), in order.
    pub fn unknown_keys(&self) -> &[(String, String)] {
        &self.extra
    }

    /// The complete connection string, key included. Never log it.
    pub fn to_secret_string(&self) -> String {
        self.format(true)
    }

    fn format(&self, secrets: bool) -> String {
        let mut out = Writer::default();
        let endpoint = match self.port {
            Some(port) => format!("sb://{}:{port}/", self.host),
            None => format!("sb://{}/", self.host),
        };
        out.pair(ENDPOINT, &endpoint);
        out.pair(SHARED_ACCESS_KEY_NAME, &self.key_name);
        out.pair(SHARED_ACCESS_KEY, &redact(secrets, || self.key.to_base64()));
        out.pair(ENTITY_PATH, &self.entity_path);
        out.unknown(&self.extra, secrets);
        out.0
    }
}

/// Takes an unknown-to-[`Fields`] key, refusing a duplicate or a misspelling.
fn take_unknown(fields: &mut Fields, key: &'static str) -> Result<Option<String>> {
    let mut found = None;
    let mut rest = Vec::with_capacity(fields.unknown.len());
    for (k, v) in std::mem::take(&mut fields.unknown) {
        if k == key {
            if v.is_empty() {
                return Err(ConnectionStringError::EmptyValue(key));
            }
            if found.replace(v).is_some() {
                return Err(ConnectionStringError::DuplicateKey(key));
            }
        } else if k.eq_ignore_ascii_case(key) {
            return Err(ConnectionStringError::MisspelledKey {
                found: k,
                expected: key,
            });
        } else {
            rest.push((k, v));
        }
    }
    fields.unknown = rest;
    Ok(found)
}

/// `sb://host[:port][/]` (the scheme in any case; `amqps://` accepted too).
fn parse_endpoint(endpoint: &str) -> Result<(String, Option<u16>)> {
    let invalid = |reason: &str| ConnectionStringError::InvalidValue {
        key: ENDPOINT,
        reason: reason.to_owned(),
    };
    let (scheme, rest) = endpoint
        .split_once("://")
        .ok_or_else(|| invalid("it is not a URL of the form sb://host/"))?;
    if !scheme.eq_ignore_ascii_case("sb") && !scheme.eq_ignore_ascii_case("amqps") {
        return Err(invalid("its scheme is not sb://"));
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') || authority.contains('@') {
        return Err(invalid(
            "it has a path or user part; only sb://host[:port]/ is allowed",
        ));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => {
            let port: u16 = port
                .parse()
                .map_err(|_| invalid("its port is not a number from 1 to 65535"))?;
            if port == 0 {
                return Err(invalid("its port is not a number from 1 to 65535"));
            }
            (host, Some(port))
        }
        None => (authority, None),
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == ';') {
        return Err(invalid("it has no valid host name"));
    }
    Ok((host.to_owned(), port))
}

impl std::str::FromStr for EventHubConnectionString {
    type Err = ConnectionStringError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Redacted: the key is written as `<redacted>`.
impl fmt::Display for EventHubConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format(false))
    }
}

impl fmt::Debug for EventHubConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EventHubConnectionString")
            .field(&self.format(false))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    fn parse(text: &str) -> Result<EventHubConnectionString> {
        EventHubConnectionString::parse(text)
    }

    #[test]
    fn the_portal_form_parses_and_formats_back() {
        let text = format!(
            "Endpoint=sb://iothub-ns-x.servicebus.windows.net/;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY};EntityPath=myhub"
        );
        let cs = parse(&text).unwrap();
        assert_eq!(cs.host(), "iothub-ns-x.servicebus.windows.net");
        assert_eq!(cs.port(), None);
        assert_eq!(cs.entity_path(), "myhub");
        assert_eq!(cs.key_name(), "iothubowner");
        assert_eq!(cs.key().to_base64(), KEY);
        assert_eq!(
            parse(&cs.to_secret_string()).unwrap().to_secret_string(),
            cs.to_secret_string()
        );
        assert!(!format!("{cs:?} {cs}").contains(KEY));
    }

    #[test]
    fn a_port_key_order_and_emulator_flag_are_accepted() {
        let cs = parse(&format!(
            "EntityPath=hub;SharedAccessKey={KEY};Endpoint=sb://localhost:5673;SharedAccessKeyName=p;UseDevelopmentEmulator=true;"
        ))
        .unwrap();
        assert_eq!((cs.host(), cs.port()), ("localhost", Some(5673)));
        assert_eq!(
            cs.unknown_keys(),
            [("UseDevelopmentEmulator".to_owned(), "true".to_owned())]
        );
    }

    #[test]
    fn bad_strings_name_the_key_never_the_value() {
        let base = format!("SharedAccessKeyName=p;SharedAccessKey={KEY};EntityPath=e");
        let cases = [
            (base.clone(), ConnectionStringError::MissingKey(ENDPOINT)),
            (
                format!("Endpoint=sb://h/;SharedAccessKeyName=p;SharedAccessKey={KEY}"),
                ConnectionStringError::MissingKey(ENTITY_PATH),
            ),
            (
                format!("endpoint=sb://h/;{base}"),
                ConnectionStringError::MisspelledKey {
                    found: "endpoint".into(),
                    expected: ENDPOINT,
                },
            ),
            (
                format!("HostName=h;Endpoint=sb://h/;{base}"),
                ConnectionStringError::UnexpectedKey {
                    key: HOST_NAME,
                    kind: KIND,
                },
            ),
            (
                format!("Endpoint=sb://h/;Endpoint=sb://g/;{base}"),
                ConnectionStringError::DuplicateKey(ENDPOINT),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(&text).err(), Some(expected), "{text}");
        }
        for endpoint in [
            "https://h/",
            "sb://",
            "sb://h:0/",
            "sb://h:99999/",
            "sb://h/path",
            "h",
        ] {
            let err = parse(&format!("Endpoint={endpoint};{base}")).err();
            assert!(
                matches!(
                    err,
                    Some(ConnectionStringError::InvalidValue { key: ENDPOINT, .. })
                ),
                "{endpoint}: {err:?}"
            );
        }
        let err =
            parse("Endpoint=sb://h/;SharedAccessKeyName=p;SharedAccessKey=s3cr3t!;EntityPath=e")
                .err();
        let err = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("SharedAccessKey") && !err.contains("s3cr3t"),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(
            host in "[a-z][a-z0-9-]{0,20}(\\.[a-z0-9-]{1,10}){0,3}",
            port in proptest::option::of(1u16..),
            entity in "[A-Za-z0-9._$-]{1,30}",
            key_name in "[A-Za-z0-9]{1,20}",
            key in proptest::collection::vec(any::<u8>(), 1..64),
        ) {
            let key = SharedAccessKey::from_bytes(key).unwrap();
            let cs = EventHubConnectionString::new(host, port, entity, key_name, key);
            prop_assert_eq!(parse(&cs.to_secret_string()).unwrap().to_secret_string(), cs.to_secret_string());
        }

        #[test]
        fn parsing_never_panics(text in ".{0,200}") {
            let _ = parse(&text);
        }
    }
}
