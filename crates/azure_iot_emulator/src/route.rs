//! Which service a connection or request is for: the IoT Hub or the Device Provisioning
//! Service.
//!
//! The real services have their own host names and ports; the emulator serves both on the same
//! listeners (8883, 5671, 443) and tells them apart from what the client sends first, between
//! the TLS accept loop and the front-ends:
//!
//! | protocol | told by | DPS form |
//! |---|---|---|
//! | MQTT | CONNECT user name | `{idScope}/registrations/{registrationId}/api-version=…` (no `/?`) |
//! | AMQP | SASL PLAIN identity, or a link address | `{idScope}/registrations/{registrationId}` |
//! | HTTPS | `Host`, then the path | the DPS host name; `/{idScope}/registrations/…`, `/enrollments…`, `/enrollmentGroups…`, `/registrations/…` |
//!
//! Hub traffic never has these shapes (hub user names carry `/?`, hub SASL identities are
//! `{id}@sas.{hub}` or `{policy}@root.{hub}`, hub paths start with `/devices`, `/twins`, …), so
//! the classification is unambiguous.
//!
//! What is classified as DPS goes to DPS's front-end of that protocol, each an adapter over the
//! one DPS core (`crate::dps`): `http::dps` for a DPS request, `mqtt::dps` for a DPS CONNECT,
//! `amqp::dps` for a DPS SASL identity or link address (an AMQP connection may also reach DPS
//! without SASL, an X.509 device with its TLS client certificate: its link addresses tell).
//! WebSocket upgrades are not classified by their HTTP request: the hub and DPS share
//! `/$iothub/websocket` (and `/`, where C#'s DPS clients upgrade), and the tunnelled MQTT or
//! AMQP is classified as on its own port.

use azure_iot_protocol::mqtt::is_dps_username;

/// The service a connection or request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    /// The IoT Hub.
    Hub,
    /// The Device Provisioning Service.
    Dps,
}

/// What an HTTPS client is told when it asks for DPS of an HTTPS front-end that has none
/// (unit-test contexts).
pub(crate) const DPS_UNSUPPORTED: &str =
    "the Device Provisioning Service is not supported by this emulator yet";

/// Classifies an MQTT connection by its CONNECT user name.
pub(crate) fn mqtt(username: &str) -> Service {
    if is_dps_username(username) {
        Service::Dps
    } else {
        Service::Hub
    }
}

/// Classifies an AMQP connection by its SASL PLAIN identity (authcid) or a link address.
pub(crate) fn amqp(identity_or_address: &str) -> Service {
    let path = identity_or_address
        .split_once("://")
        .map_or(identity_or_address, |(_, rest)| {
            rest.find('/').map_or("", |i| &rest[i..])
        });
    let mut segments = path.trim_start_matches('/').split('/');
    match (segments.next(), segments.next()) {
        (Some(scope), Some("registrations")) if !scope.is_empty() && !scope.contains('@') => {
            Service::Dps
        }
        _ => Service::Hub,
    }
}

/// The first path segments of the hub's own REST API: a device, module or configuration may be
/// called `registrations`, so `/twins/registrations` is the hub's.
const HUB_ROOTS: &[&str] = &[
    "devices",
    "twins",
    "digitaltwins",
    "configurations",
    "jobs",
    "modules",
    "statistics",
    "certificates",
    "messages",
];

/// Classifies an HTTPS request by its `Host` (without port) and path.
pub(crate) fn http(host: Option<&str>, path: &str, dps_hostname: Option<&str>) -> Service {
    if let (Some(host), Some(dps)) = (host, dps_hostname) {
        let host = host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        if host.eq_ignore_ascii_case(dps) {
            return Service::Dps;
        }
    }
    let mut segments = path.trim_start_matches('/').split('/');
    let first = segments.next();
    if first.is_some_and(|f| {
        ["enrollments", "enrollmentGroups", "registrations"]
            .iter()
            .any(|root| f.eq_ignore_ascii_case(root))
    }) {
        return Service::Dps;
    }
    match (first, segments.next()) {
        (Some(first), Some("registrations"))
            if !first.is_empty() && !first.starts_with('$') && !HUB_ROOTS.contains(&first) =>
        {
            Service::Dps
        }
        _ => Service::Hub,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_user_names() {
        assert_eq!(
            mqtt("0ne00000001/registrations/dev1/api-version=2019-03-31&ClientVersion=x"),
            Service::Dps
        );
        assert_eq!(
            mqtt("hub.azure-devices.net/dev1/?api-version=2021-04-12"),
            Service::Hub
        );
    }

    #[test]
    fn amqp_identities_and_addresses() {
        assert_eq!(amqp("0ne00000001/registrations/dev1"), Service::Dps);
        assert_eq!(
            amqp("amqps://global.azure-devices-provisioning.net/0ne00000001/registrations/dev1"),
            Service::Dps
        );
        assert_eq!(amqp("dev1@sas.hub"), Service::Hub);
        assert_eq!(amqp("iothubowner@sas.root.hub"), Service::Hub);
        assert_eq!(amqp("/devices/dev1/messages/events"), Service::Hub);
        assert_eq!(amqp("/messages/devicebound"), Service::Hub);
        assert_eq!(amqp("$cbs"), Service::Hub);
        assert_eq!(amqp(""), Service::Hub);
    }

    #[test]
    fn http_hosts_and_paths() {
        let dps = Some("dps.localhost");
        assert_eq!(
            http(Some("dps.localhost:443"), "/devices/x", dps),
            Service::Dps
        );
        assert_eq!(http(Some("DPS.localhost"), "/", dps), Service::Dps);
        assert_eq!(
            http(Some("hub"), "/0ne00000001/registrations/dev1/register", dps),
            Service::Dps
        );
        assert_eq!(http(None, "/enrollments/e1", None), Service::Dps);
        assert_eq!(
            http(None, "/enrollmentGroups/g/attestationmechanism", None),
            Service::Dps
        );
        assert_eq!(http(Some("hub"), "/devices/dev1", dps), Service::Hub);
        assert_eq!(
            http(Some("hub"), "/devices/registrations", dps),
            Service::Hub
        );
        assert_eq!(http(Some("hub"), "/twins/d1", None), Service::Hub);
        assert_eq!(http(Some("hub"), "/$iothub/websocket", None), Service::Hub);
        assert_eq!(http(Some("hub"), "", None), Service::Hub);
    }
}
