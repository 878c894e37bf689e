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
//! | HTTPS | the path (and `Host`, when DPS has a host name of its own) | `/{idScope}/registrations/…`, `/enrollments…`, `/enrollmentGroups…`, `/registrations/…`, the emulator's `/$emulator/dps/…`; a distinct DPS host name |
//!
//! Hub traffic never has these shapes (hub user names carry `/?`, hub SASL identities are
//! `{id}@sas.{hub}` or `{policy}@root.{hub}`, hub paths start with `/devices`, `/twins`, …), so
//! the classification is unambiguous. The DPS service roots match in any case.
//!
//! By default DPS has the hub's host name (it resolves wherever the hub's does, and the
//! server certificate covers it), so nothing the client sends before its first request or
//! CONNECT names a service: the classification never depends on the host name. Only a DPS
//! host name of its own (`--dps-hostname`) is also honoured: every request to it is DPS's.
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

/// The host names an HTTPS request may name in `Host`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostNames<'a> {
    /// The hub's host name.
    pub(crate) hub: &'a str,
    /// DPS's host name: the hub's unless configured apart.
    pub(crate) dps: &'a str,
}

impl HostNames<'_> {
    /// DPS's host name when it is not the hub's: the only case where `Host` tells.
    fn distinct_dps(&self) -> Option<&str> {
        (!self.dps.eq_ignore_ascii_case(self.hub)).then_some(self.dps)
    }
}

/// Classifies an HTTPS request by its path, and by its `Host` (without port) when DPS has a
/// host name of its own (`names`; `None` where there is no DPS).
pub(crate) fn http(host: Option<&str>, path: &str, names: Option<HostNames<'_>>) -> Service {
    if let (Some(host), Some(dps)) = (host, names.as_ref().and_then(HostNames::distinct_dps)) {
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
    if first == Some("$emulator") && segments.clone().next() == Some("dps") {
        return Service::Dps;
    }
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

    /// DPS with a host name of its own.
    const DISTINCT: Option<HostNames<'static>> = Some(HostNames {
        hub: "hub",
        dps: "dps.localhost",
    });
    /// DPS on the hub's host name (the default).
    const SHARED: Option<HostNames<'static>> = Some(HostNames {
        hub: "localhost",
        dps: "LOCALHOST",
    });

    #[test]
    fn http_on_a_shared_host_name_is_told_by_path() {
        let host = Some("localhost:443");
        for dps in [
            "/0ne00000001/registrations/dev1/register",
            "/0ne00000001/registrations/dev1/operations/4.abc",
            "/enrollments/e1",
            "/enrollments/query",
            "/enrollmentGroups/g1",
            "/enrollmentGroups/g1/attestationmechanism",
            "/registrations/dev1",
            "/registrations/g1/query",
            "/$emulator/dps/certificates",
            "/$emulator/dps/certificates/root",
        ] {
            assert_eq!(http(host, dps, SHARED), Service::Dps, "{dps}");
        }
        for hub in [
            "/devices/dev1",
            "/devices/registrations",
            "/devices/query",
            "/twins/registrations",
            "/jobs/v2/j1",
            "/configurations/c1",
            "/statistics/service",
            "/messages/serviceBound/feedback",
            "/certificates/c1",
            "/digitaltwins/d1",
            "/$iothub/websocket",
            "/$emulator/faults",
            "/$emulator/dpsx",
            "/",
            "",
        ] {
            assert_eq!(http(host, hub, SHARED), Service::Hub, "{hub}");
        }
    }

    #[test]
    fn http_hosts_and_paths() {
        let dps = DISTINCT;
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
