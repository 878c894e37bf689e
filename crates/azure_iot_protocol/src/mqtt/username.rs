//! MQTT CONNECT usernames for IoT Hub and DPS.
//!
//! * IoT Hub: `{hubHost}/{clientId}/?api-version={v}&DeviceClientType={ua}[&model-id={dtmi}]`.
//!   The host is always the hub's, even when a gateway is dialled.
//! * DPS: `{idScope}/registrations/{registrationId}/api-version={v}&ClientVersion={ua}`.
//!
//! Formatting writes what the current IoT Hub docs describe (API version [`HUB_API_VERSION`]),
//! every value percent-encoded. Parsing accepts every SDK's variant: any API version, any
//! parameter order, unknown parameters, a missing query, values encoded or raw (Node sends the
//! model id raw), and `+` kept literal (it is not a space here).

use std::fmt;

use azure_iot_core::encoding::{decode_component, encode_component};

use crate::identity::{Identity, IdentityError};

/// The IoT Hub MQTT API version our clients send.
pub const HUB_API_VERSION: &str = "2021-04-12";

/// The DPS API version our clients send.
pub const DPS_API_VERSION: &str = "2021-10-01";

/// Why a username was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsernameError {
    /// The part before the query is not `{host}/{clientId}`.
    #[error("an IoT Hub MQTT username is `{{host}}/{{clientId}}/?{{query}}`")]
    NotHubForm,
    /// The part before the query is not `{idScope}/registrations/{registrationId}`.
    #[error("a DPS MQTT username is `{{idScope}}/registrations/{{registrationId}}/{{query}}`")]
    NotDpsForm,
    /// The client id inside the username is not a valid identity.
    #[error("the username's client id is invalid: {0}")]
    ClientId(#[from] IdentityError),
}

/// A parsed or to-be-sent IoT Hub username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubUsername {
    host: String,
    identity: Identity,
    params: Vec<(String, String)>,
}

impl HubUsername {
    /// The username our device and module clients send.
    pub fn new(
        host: impl Into<String>,
        identity: Identity,
        client_type: &str,
        model_id: Option<&str>,
    ) -> Self {
        let mut params = vec![
            ("api-version".to_owned(), HUB_API_VERSION.to_owned()),
            ("DeviceClientType".to_owned(), client_type.to_owned()),
        ];
        if let Some(model_id) = model_id {
            params.push(("model-id".to_owned(), model_id.to_owned()));
        }
        Self {
            host: host.into(),
            identity,
            params,
        }
    }

    /// Parses a username from a CONNECT packet.
    pub fn parse(username: &str) -> Result<Self, UsernameError> {
        let (path, query) = match username.split_once("/?") {
            Some((path, query)) => (path, query),
            None => (username.strip_suffix('/').unwrap_or(username), ""),
        };
        let (host, client_id) = path.split_once('/').ok_or(UsernameError::NotHubForm)?;
        if host.is_empty() {
            return Err(UsernameError::NotHubForm);
        }
        Ok(Self {
            host: host.to_owned(),
            identity: Identity::parse_client_id(client_id)?,
            params: parse_params(query),
        })
    }

    /// The hub host name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The identity named in the username.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// A query parameter, decoded.
    pub fn param(&self, key: &str) -> Option<&str> {
        find(&self.params, key)
    }

    /// `api-version`.
    pub fn api_version(&self) -> Option<&str> {
        self.param("api-version")
    }

    /// `DeviceClientType`: the SDK's user agent.
    pub fn client_type(&self) -> Option<&str> {
        self.param("DeviceClientType")
    }

    /// `model-id`: the Plug and Play model (DTMI), if the device declared one.
    pub fn model_id(&self) -> Option<&str> {
        self.param("model-id").filter(|m| !m.is_empty())
    }
}

impl fmt::Display for HubUsername {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/?", self.host, self.identity)?;
        write_params(f, &self.params)
    }
}

/// A parsed or to-be-sent DPS username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpsUsername {
    id_scope: String,
    registration_id: String,
    params: Vec<(String, String)>,
}

impl DpsUsername {
    /// The username our provisioning client sends.
    pub fn new(
        id_scope: impl Into<String>,
        registration_id: impl Into<String>,
        client_version: &str,
    ) -> Self {
        Self {
            id_scope: id_scope.into(),
            registration_id: registration_id.into(),
            params: vec![
                ("api-version".to_owned(), DPS_API_VERSION.to_owned()),
                ("ClientVersion".to_owned(), client_version.to_owned()),
            ],
        }
    }

    /// Parses a username from a CONNECT packet.
    pub fn parse(username: &str) -> Result<Self, UsernameError> {
        let (id_scope, rest) = username
            .split_once("/registrations/")
            .ok_or(UsernameError::NotDpsForm)?;
        let (registration_id, query) = rest.split_once('/').unwrap_or((rest, ""));
        if id_scope.is_empty() || registration_id.is_empty() {
            return Err(UsernameError::NotDpsForm);
        }
        Ok(Self {
            id_scope: id_scope.to_owned(),
            registration_id: decode_component(registration_id).into_owned(),
            params: parse_params(query.strip_prefix('?').unwrap_or(query)),
        })
    }

    /// The DPS id scope.
    pub fn id_scope(&self) -> &str {
        &self.id_scope
    }

    /// The registration id (also the CONNECT client id).
    pub fn registration_id(&self) -> &str {
        &self.registration_id
    }

    /// A query parameter, decoded.
    pub fn param(&self, key: &str) -> Option<&str> {
        find(&self.params, key)
    }

    /// `api-version`.
    pub fn api_version(&self) -> Option<&str> {
        self.param("api-version")
    }
}

impl fmt::Display for DpsUsername {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/registrations/{}/",
            self.id_scope,
            encode_component(&self.registration_id)
        )?;
        write_params(f, &self.params)
    }
}

/// Is this CONNECT username a DPS one? The emulator serves IoT Hub and DPS on one port and
/// tells them apart here: DPS usernames have `/registrations/` and no `/?` (every hub SDK
/// writes `/?` before its query).
pub fn is_dps_username(username: &str) -> bool {
    username.contains("/registrations/") && !username.contains("/?")
}

fn parse_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                decode_component(k).into_owned(),
                decode_component(v).into_owned(),
            )
        })
        .collect()
}

fn find<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn write_params(f: &mut fmt::Formatter<'_>, params: &[(String, String)]) -> fmt::Result {
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            f.write_str("&")?;
        }
        write!(f, "{}={}", encode_component(k), encode_component(v))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_sdk_username_parses() {
        let cases = [
            // Python device, then Python PnP (model id encoded, api-version 2020-09-30).
            (
                "localhost/dev-vectors/?api-version=2019-10-01&DeviceClientType=azure-iot-device-iothub-py%2F2.14.0%283.11.7%3BLinux%20%231%20SMP%20PREEMPT_DYNAMIC%20%400%3Bx86_64%29",
                Identity::device("dev-vectors"),
                None,
            ),
            (
                "localhost/dev-vectors/?api-version=2020-09-30&DeviceClientType=py&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1",
                Identity::device("dev-vectors"),
                Some("dtmi:com:example:Thermostat;1"),
            ),
            // Node PnP: model id raw, before DeviceClientType.
            (
                "localhost/dev-vectors/?api-version=2021-04-12&model-id=dtmi:com:example:Thermostat;1&DeviceClientType=azure-iot-device%2F1.18.4%20(node%20v20.20.2%3B%20Debian%2012%3B%20x64)",
                Identity::device("dev-vectors"),
                Some("dtmi:com:example:Thermostat;1"),
            ),
            // Node module.
            (
                "localhost/dev-vectors/mod-v/?api-version=2021-04-12&DeviceClientType=x",
                Identity::module("dev-vectors", "mod-v"),
                None,
            ),
            // No query at all; trailing slash or not.
            ("hub.azure-devices.net/d1/", Identity::device("d1"), None),
            ("hub.azure-devices.net/d1", Identity::device("d1"), None),
        ];
        for (text, identity, model) in cases.clone() {
            let u = HubUsername::parse(text).unwrap();
            assert_eq!(u.identity(), &identity, "{text}");
            assert_eq!(u.model_id(), model, "{text}");
            assert!(!is_dps_username(text), "{text}");
        }
        let node = HubUsername::parse(cases[2].0).unwrap();
        assert_eq!(
            node.client_type(),
            Some("azure-iot-device/1.18.4 (node v20.20.2; Debian 12; x64)")
        );
        assert_eq!(node.api_version(), Some("2021-04-12"));
    }

    #[test]
    fn our_hub_username() {
        let u = HubUsername::new(
            "h.azure-devices.net",
            Identity::module("d", "m"),
            "azure-iot-rs/0.1 (linux)",
            Some("dtmi:x;1"),
        );
        assert_eq!(
            u.to_string(),
            "h.azure-devices.net/d/m/?api-version=2021-04-12&DeviceClientType=azure-iot-rs%2F0.1%20%28linux%29&model-id=dtmi%3Ax%3B1"
        );
    }

    #[test]
    fn dps_usernames() {
        let text = "0ne00000001/registrations/reg-1/api-version=2019-03-31&ClientVersion=azure-iot-provisioning-devicesdk%2F1.0";
        let u = DpsUsername::parse(text).unwrap();
        assert_eq!(u.id_scope(), "0ne00000001");
        assert_eq!(u.registration_id(), "reg-1");
        assert_eq!(u.api_version(), Some("2019-03-31"));
        assert_eq!(
            u.param("ClientVersion"),
            Some("azure-iot-provisioning-devicesdk/1.0")
        );
        assert!(is_dps_username(text));
        let ours = DpsUsername::new("0ne1", "r 1", "rs/0.1");
        assert_eq!(
            ours.to_string(),
            "0ne1/registrations/r%201/api-version=2021-10-01&ClientVersion=rs%2F0.1"
        );
        assert_eq!(DpsUsername::parse(&ours.to_string()), Ok(ours));
    }

    #[test]
    fn bad_usernames() {
        assert_eq!(HubUsername::parse("nohost"), Err(UsernameError::NotHubForm));
        assert_eq!(
            HubUsername::parse("/d/?a=b"),
            Err(UsernameError::NotHubForm)
        );
        assert_eq!(
            HubUsername::parse("h/a/b/c/?x=1"),
            Err(UsernameError::ClientId(IdentityError::TooManySegments))
        );
        assert_eq!(
            DpsUsername::parse("scope/reg"),
            Err(UsernameError::NotDpsForm)
        );
        assert_eq!(
            DpsUsername::parse("/registrations/x"),
            Err(UsernameError::NotDpsForm)
        );
    }

    proptest! {
        #[test]
        fn hub_round_trip(
            host in "[a-z0-9.-]{1,20}",
            // The C# SDK's id alphabet without `?`: an id with `?` after a `/` makes any
            // username ambiguous.
            device in "[A-Za-z0-9\\-:.+%_#*!(),=@;$']{1,20}",
            module in proptest::option::of("[A-Za-z0-9\\-:.+%_#*!(),=@;$']{1,20}"),
            client_type in "\\PC{0,30}",
            model in proptest::option::of("\\PC{1,30}"),
        ) {
            let identity = match module {
                Some(m) => Identity::module(device, m),
                None => Identity::device(device),
            };
            let u = HubUsername::new(host, identity, &client_type, model.as_deref());
            prop_assert_eq!(HubUsername::parse(&u.to_string()), Ok(u));
        }

        #[test]
        fn parsers_never_panic(text in "\\PC*") {
            let _ = HubUsername::parse(&text);
            let _ = DpsUsername::parse(&text);
            let _ = is_dps_username(&text);
        }
    }
}
