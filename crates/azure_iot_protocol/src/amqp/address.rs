//! IoT Hub AMQP link addresses (the `source` or `target` of an attach, and a C2D message's
//! `to`), parsed and formatted.
//!
//! # Design
//!
//! One enum names every address the hub serves, for both roles. The SDKs spell them
//! differently, so parsing is liberal and formatting exact:
//!
//! * absolute (`amqps://{host}[:port]/devices/...`: C, C#, Python) or bare
//!   (`/devices/...`: Node, Java); the scheme and authority are dropped;
//! * fixed segments compare ASCII-case-insensitively (C# and the C service SDK send
//!   `deviceBound`, the others `devicebound`);
//! * device and module ids are percent-decoded (Node and C# encode them, Python does not) and
//!   must then be valid IoT Hub ids.
//!
//! [`Address`]'s `Display` writes the bare form Node sends, with the casing the hub documents
//! and ids percent-encoded; [`Address::absolute`] adds `amqps://{host}`. An address that is
//! none of these is [`AddressError::Unknown`], never a panic.

use std::fmt;

use azure_iot_core::encoding::{decode_component, encode_component};

use crate::identity::{IdentityError, check_id};

/// The longest address accepted; longer input is refused before it is looked at.
pub const MAX_ADDRESS_LEN: usize = 1024;

/// An IoT Hub AMQP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// `$cbs`: put-token requests and their answers.
    Cbs,
    /// `/messages/devicebound`: the service sends cloud-to-device messages here.
    ServiceDeviceBound,
    /// `/messages/serviceBound/feedback`: the service receives delivery feedback here.
    Feedback,
    /// `/messages/serviceBound/filenotifications`: the service receives file-upload
    /// notifications here.
    FileNotifications,
    /// `/devices/{d}[/modules/{m}]/messages/events`: telemetry (device sender), and a module's
    /// input messages (module receiver, as Node and C# use it).
    Events {
        /// The device.
        device_id: String,
        /// The module, for a module identity.
        module_id: Option<String>,
    },
    /// `/devices/{d}[/modules/{m}]/messages/devicebound`: cloud-to-device messages (device
    /// receiver); also the `to` of a C2D message.
    DeviceBound {
        /// The device.
        device_id: String,
        /// The module, for a module identity.
        module_id: Option<String>,
    },
    /// `/devices/{d}[/modules/{m}]/twin`: twin requests and responses (a link pair).
    Twin {
        /// The device.
        device_id: String,
        /// The module, for a module identity.
        module_id: Option<String>,
    },
    /// `/devices/{d}[/modules/{m}]/methods/devicebound`: direct methods (a link pair).
    Methods {
        /// The device.
        device_id: String,
        /// The module, for a module identity.
        module_id: Option<String>,
    },
}

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// No address at all (an empty string, or a terminus without one).
    #[error("the link has no address")]
    Empty,
    /// Longer than [`MAX_ADDRESS_LEN`].
    #[error("the address is {0} bytes long; at most {MAX_ADDRESS_LEN} are accepted")]
    TooLong(usize),
    /// Not an address IoT Hub serves.
    #[error("`{0}` is not an IoT Hub AMQP address")]
    Unknown(String),
    /// A device or module id in the address is not a valid id.
    #[error("`{address}` names an invalid id: {error}")]
    BadId {
        /// The address as received.
        address: String,
        /// What is wrong with the id.
        error: IdentityError,
    },
}

impl Address {
    /// Parses an address in any form the SDKs send (see the module docs).
    ///
    /// ```
    /// use azure_iot_protocol::amqp::Address;
    /// assert_eq!(
    ///     Address::parse("amqps://hub.example:5671/messages/deviceBound"),
    ///     Ok(Address::ServiceDeviceBound)
    /// );
    /// assert_eq!(
    ///     Address::parse("/devices/dev%201/messages/events").unwrap_err().to_string(),
    ///     "`/devices/dev%201/messages/events` names an invalid id: the id contains the character ' '; allowed are A-Z a-z 0-9 and -:.+%_#*?!(),=@;$'"
    /// );
    /// ```
    pub fn parse(address: &str) -> Result<Self, AddressError> {
        if address.is_empty() {
            return Err(AddressError::Empty);
        }
        if address.len() > MAX_ADDRESS_LEN {
            return Err(AddressError::TooLong(address.len()));
        }
        let unknown = || AddressError::Unknown(address.to_owned());
        // `amqps://host[:port]/path` → `/path`; a bare address is its own path.
        let path = match address.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
            None => address,
        };
        if path == "$cbs" || path == "/$cbs" {
            return Ok(Address::Cbs);
        }
        let Some(path) = path.strip_prefix('/') else {
            return Err(unknown());
        };
        let segments: Vec<&str> = path.split('/').collect();
        let is = |segment: &str, word: &str| segment.eq_ignore_ascii_case(word);
        match segments.as_slice() {
            [m, d] if is(m, "messages") && is(d, "devicebound") => {
                return Ok(Address::ServiceDeviceBound);
            }
            [m, s, f] if is(m, "messages") && is(s, "servicebound") && is(f, "feedback") => {
                return Ok(Address::Feedback);
            }
            [m, s, f]
                if is(m, "messages") && is(s, "servicebound") && is(f, "filenotifications") =>
            {
                return Ok(Address::FileNotifications);
            }
            _ => {}
        }
        let (device, module, rest) = match segments.as_slice() {
            [d, device, m, module, rest @ ..] if is(d, "devices") && is(m, "modules") => {
                (*device, Some(*module), rest)
            }
            [d, device, rest @ ..] if is(d, "devices") => (*device, None, rest),
            _ => return Err(unknown()),
        };
        let id = |raw: &str| -> Result<String, AddressError> {
            let id = decode_component(raw).into_owned();
            check_id(&id).map_err(|error| AddressError::BadId {
                address: address.to_owned(),
                error,
            })?;
            Ok(id)
        };
        let kind = match rest {
            [m, e] if is(m, "messages") && is(e, "events") => 0,
            [m, d] if is(m, "messages") && is(d, "devicebound") => 1,
            [t] if is(t, "twin") => 2,
            [m, d] if is(m, "methods") && is(d, "devicebound") => 3,
            _ => return Err(unknown()),
        };
        let device_id = id(device)?;
        let module_id = module.map(id).transpose()?;
        Ok(match kind {
            0 => Address::Events {
                device_id,
                module_id,
            },
            1 => Address::DeviceBound {
                device_id,
                module_id,
            },
            2 => Address::Twin {
                device_id,
                module_id,
            },
            _ => Address::Methods {
                device_id,
                module_id,
            },
        })
    }

    /// The absolute form `amqps://{host}/...` (C, C#, Python); `$cbs` stays `$cbs`.
    ///
    /// ```
    /// use azure_iot_protocol::amqp::Address;
    /// assert_eq!(
    ///     Address::ServiceDeviceBound.absolute("hub.example"),
    ///     "amqps://hub.example/messages/devicebound"
    /// );
    /// ```
    pub fn absolute(&self, host: &str) -> String {
        match self {
            Address::Cbs => self.to_string(),
            _ => format!("amqps://{host}{self}"),
        }
    }

    /// The device and module an address belongs to; `None` for the hub-wide ones.
    pub fn identity(&self) -> Option<(&str, Option<&str>)> {
        match self {
            Address::Events {
                device_id,
                module_id,
            }
            | Address::DeviceBound {
                device_id,
                module_id,
            }
            | Address::Twin {
                device_id,
                module_id,
            }
            | Address::Methods {
                device_id,
                module_id,
            } => Some((device_id, module_id.as_deref())),
            _ => None,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (suffix, device, module) = match self {
            Address::Cbs => return f.write_str("$cbs"),
            Address::ServiceDeviceBound => return f.write_str("/messages/devicebound"),
            Address::Feedback => return f.write_str("/messages/serviceBound/feedback"),
            Address::FileNotifications => {
                return f.write_str("/messages/serviceBound/filenotifications");
            }
            Address::Events {
                device_id,
                module_id,
            } => ("messages/events", device_id, module_id),
            Address::DeviceBound {
                device_id,
                module_id,
            } => ("messages/devicebound", device_id, module_id),
            Address::Twin {
                device_id,
                module_id,
            } => ("twin", device_id, module_id),
            Address::Methods {
                device_id,
                module_id,
            } => ("methods/devicebound", device_id, module_id),
        };
        write!(f, "/devices/{}/", encode_component(device))?;
        if let Some(module) = module {
            write!(f, "modules/{}/", encode_component(module))?;
        }
        f.write_str(suffix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn device(kind: fn(String, Option<String>) -> Address, d: &str, m: Option<&str>) -> Address {
        kind(d.to_owned(), m.map(str::to_owned))
    }

    fn events(d: String, m: Option<String>) -> Address {
        Address::Events {
            device_id: d,
            module_id: m,
        }
    }
    fn bound(d: String, m: Option<String>) -> Address {
        Address::DeviceBound {
            device_id: d,
            module_id: m,
        }
    }
    fn twin(d: String, m: Option<String>) -> Address {
        Address::Twin {
            device_id: d,
            module_id: m,
        }
    }
    fn methods(d: String, m: Option<String>) -> Address {
        Address::Methods {
            device_id: d,
            module_id: m,
        }
    }

    #[test]
    fn every_form_the_sdks_send_parses() {
        let cases = [
            ("$cbs", Address::Cbs),
            ("/$cbs", Address::Cbs),
            ("/messages/devicebound", Address::ServiceDeviceBound),
            (
                "amqps://hub.azure-devices.net/messages/deviceBound",
                Address::ServiceDeviceBound,
            ),
            ("/messages/serviceBound/feedback", Address::Feedback),
            (
                "amqps://h/messages/servicebound/feedback",
                Address::Feedback,
            ),
            (
                "/messages/serviceBound/filenotifications",
                Address::FileNotifications,
            ),
            ("/devices/d1/messages/events", device(events, "d1", None)),
            (
                "amqps://h:5671/devices/d1/modules/m1/messages/events",
                device(events, "d1", Some("m1")),
            ),
            (
                "amqps://h:5671/devices/d1/messages/deviceBound",
                device(bound, "d1", None),
            ),
            (
                "/devices/d1/modules/m1/messages/devicebound",
                device(bound, "d1", Some("m1")),
            ),
            ("/devices/d1/twin", device(twin, "d1", None)),
            (
                "/devices/d1/modules/m1/TWIN",
                device(twin, "d1", Some("m1")),
            ),
            (
                "amqps://h/devices/d1/methods/deviceBound",
                device(methods, "d1", None),
            ),
            (
                "/devices/d1/modules/m1/methods/devicebound",
                device(methods, "d1", Some("m1")),
            ),
            // Node encodes ids; Python does not.
            (
                "/devices/d%2A1/messages/devicebound",
                device(bound, "d*1", None),
            ),
            (
                "/devices/d*1/messages/devicebound",
                device(bound, "d*1", None),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(Address::parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn formatting_is_exact_and_round_trips() {
        let all = [
            Address::Cbs,
            Address::ServiceDeviceBound,
            Address::Feedback,
            Address::FileNotifications,
            device(events, "d1", None),
            device(events, "d1", Some("m1")),
            device(bound, "d*1", None),
            device(bound, "d1", Some("m1")),
            device(twin, "d1", None),
            device(twin, "d1", Some("m1")),
            device(methods, "d1", None),
            device(methods, "d1", Some("m1")),
        ];
        let texts = [
            "$cbs",
            "/messages/devicebound",
            "/messages/serviceBound/feedback",
            "/messages/serviceBound/filenotifications",
            "/devices/d1/messages/events",
            "/devices/d1/modules/m1/messages/events",
            "/devices/d%2A1/messages/devicebound",
            "/devices/d1/modules/m1/messages/devicebound",
            "/devices/d1/twin",
            "/devices/d1/modules/m1/twin",
            "/devices/d1/methods/devicebound",
            "/devices/d1/modules/m1/methods/devicebound",
        ];
        for (address, text) in all.iter().zip(texts) {
            assert_eq!(address.to_string(), text);
            assert_eq!(Address::parse(text).as_ref(), Ok(address));
            assert_eq!(Address::parse(&address.absolute("h")).as_ref(), Ok(address));
        }
    }

    #[test]
    fn unknown_addresses_are_typed_errors() {
        for text in [
            "/messages/events",
            "messages/devicebound",
            "/devices",
            "/devices/d1",
            "/devices/d1/messages",
            "/devices/d1/modules/m1",
            "/devices/d1/messages/events/extra",
            "amqps://host",
            "/$management",
        ] {
            assert_eq!(
                Address::parse(text),
                Err(AddressError::Unknown(text.to_owned())),
                "{text}"
            );
        }
        assert_eq!(Address::parse(""), Err(AddressError::Empty));
        assert!(matches!(
            Address::parse("/devices//messages/events"),
            Err(AddressError::BadId { .. })
        ));
        assert!(matches!(
            Address::parse(&"x".repeat(MAX_ADDRESS_LEN + 1)),
            Err(AddressError::TooLong(_))
        ));
    }

    proptest! {
        #[test]
        fn any_text_parses_or_fails_without_panicking(text in ".{0,80}") {
            let _ = Address::parse(&text);
        }

        #[test]
        fn device_addresses_round_trip(
            d in "[A-Za-z0-9:.+%_#*?!(),=@;$'-]{1,20}",
            m in proptest::option::of("[A-Za-z0-9-]{1,10}"),
        ) {
            for kind in [events, bound, twin, methods] {
                let address = kind(d.clone(), m.clone());
                prop_assert_eq!(Address::parse(&address.to_string()), Ok(address.clone()));
            }
        }

        #[test]
        fn paths_made_of_address_words_never_panic(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("devices"), Just("modules"), Just("messages"), Just("events"),
                    Just("deviceBound"), Just("twin"), Just("methods"), Just(""), Just("%"),
                    Just("serviceBound"), Just("feedback"), Just("d1"), Just("$cbs"),
                ],
                0..8,
            )
        ) {
            let _ = Address::parse(&format!("/{}", parts.join("/")));
        }
    }
}
