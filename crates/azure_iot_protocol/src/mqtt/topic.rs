//! The IoT Hub and DPS MQTT topic grammar, both directions.
//!
//! | type | who publishes | topics |
//! |---|---|---|
//! | [`UpstreamTopic`] | device / module | telemetry, twin GET, reported PATCH, method response, DPS register and poll |
//! | [`DownstreamTopic`] | hub / DPS | C2D, module input, twin response, desired patch, method request, DPS response |
//! | [`TopicFilter`] | device / module (SUBSCRIBE) | the six filters IoT Hub and DPS allow |
//!
//! Every type formats with `Display` (what our clients and the emulator send) and parses with
//! `parse` (what they receive). Parsing is total: any string gives a topic or a
//! [`TopicError`] saying what is wrong.
//!
//! Formatting is exact: ids are percent-encoded (as the Python SDK does), `$rid` is always the
//! first query parameter (the Python, C and Java parsers depend on it), and property bags
//! follow [`property_bag`]. Parsing is liberal: ids are decoded, `/?` and
//! `?` both start a query, a trailing `/` after a bag is ignored, parameters come in any order,
//! and both module-input subscription forms (`.../inputs/#` and `.../#`) are recognised.
//!
//! Request ids and operation ids are opaque: they are parsed and written back exactly as
//! received, so a response always echoes what the requester sent.

use std::fmt;

use azure_iot_core::encoding::{decode_component, encode_component};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use azure_iot_core::message::Message;

use super::property_bag::{self, PropertyBag};
use crate::identity::Identity;

/// Why a topic or filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The topic is not one IoT Hub or DPS defines (for this direction).
    #[error("`{0}` is not an IoT Hub or DPS topic")]
    Unknown(String),
    /// A required query parameter is missing.
    #[error("topic has no `{0}` parameter")]
    MissingParameter(&'static str),
    /// A parameter that must be a number is not.
    #[error("topic parameter `{0}` is not a valid number")]
    InvalidNumber(&'static str),
    /// A device, module, input or method name segment is empty.
    #[error("topic has an empty {0}")]
    EmptySegment(&'static str),
}

type Result<T> = std::result::Result<T, TopicError>;

/// The longest topic MQTT can carry (a two-byte length prefix); long property bags hit it.
pub const MAX_TOPIC_BYTES: usize = 65_535;

/// Characters escaped in method and input names: only those that would break a topic parser.
/// Names stay readable for SDKs that take them raw (Node, C, C#) and decode correctly for the
/// Python SDK, which unquotes them.
const NAME_SEGMENT: &AsciiSet = &CONTROLS
    .add(b'/')
    .add(b'?')
    .add(b'%')
    .add(b'#')
    .add(b'+')
    .add(b'&')
    .add(b'=');

fn encode_name(name: &str) -> impl fmt::Display + '_ {
    utf8_percent_encode(name, NAME_SEGMENT)
}

/// A topic a device or module publishes to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamTopic {
    /// `devices/{d}/messages/events/{bag}` or `devices/{d}/modules/{m}/messages/events/{bag}`.
    Telemetry {
        /// The sending identity as named in the topic.
        identity: Identity,
        /// The message's properties.
        properties: PropertyBag,
    },
    /// `$iothub/twin/GET/?$rid={rid}`.
    TwinGet {
        /// Request id.
        request_id: String,
    },
    /// `$iothub/twin/PATCH/properties/reported/?$rid={rid}[&$version={v}]`.
    TwinPatchReported {
        /// Request id.
        request_id: String,
        /// The version the patch is based on (Java SDK only).
        version: Option<i64>,
    },
    /// `$iothub/methods/res/{status}/?$rid={rid}`.
    MethodResponse {
        /// The status the device chose.
        status: i32,
        /// The request id of the method call.
        request_id: String,
    },
    /// `$dps/registrations/PUT/iotdps-register/?$rid={rid}`.
    DpsRegister {
        /// Request id.
        request_id: String,
    },
    /// `$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={op}`.
    DpsOperationStatus {
        /// Request id.
        request_id: String,
        /// The operation id DPS returned.
        operation_id: String,
    },
}

/// A topic the hub or DPS publishes to a device or module.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownstreamTopic {
    /// `devices/{d}/messages/devicebound/{bag}`. Build it with
    /// [`DownstreamTopic::cloud_to_device`], which adds the `$.to` every client parser needs.
    CloudToDevice {
        /// The receiving device.
        device_id: String,
        /// The message's properties.
        properties: PropertyBag,
    },
    /// `devices/{d}/modules/{m}/inputs/{input}/{bag}`.
    ModuleInput {
        /// The receiving module.
        identity: Identity,
        /// The input name.
        input_name: String,
        /// The message's properties.
        properties: PropertyBag,
    },
    /// `$iothub/twin/res/{status}/?$rid={rid}[&$version={v}]`.
    TwinResponse {
        /// HTTP-style status: 200 for GET, 204 for PATCH, 4xx/5xx for errors.
        status: u16,
        /// The request id being answered.
        request_id: String,
        /// The new reported version, on a successful PATCH.
        version: Option<i64>,
    },
    /// `$iothub/twin/PATCH/properties/desired/?$version={v}`.
    DesiredPatch {
        /// The desired-properties version this patch produced.
        version: i64,
    },
    /// `$iothub/methods/POST/{name}/?$rid={rid}`.
    MethodRequest {
        /// The method name.
        method_name: String,
        /// The request id the response must echo.
        request_id: String,
    },
    /// `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]`.
    DpsResponse {
        /// HTTP-style status: 200 done, 202 assigning, 4xx/5xx errors.
        status: u16,
        /// The request id being answered.
        request_id: String,
        /// Seconds to wait before polling.
        retry_after: Option<u32>,
    },
}

/// The module-input subscription forms: the Python and Node SDKs subscribe to
/// `.../inputs/#`, the C and C# SDKs (and the docs) to `.../#`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputsFilterForm {
    /// `devices/{d}/modules/{m}/inputs/#`.
    Inputs,
    /// `devices/{d}/modules/{m}/#`.
    ModuleWildcard,
}

/// A SUBSCRIBE filter IoT Hub or DPS accepts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TopicFilter {
    /// `devices/{d}/messages/devicebound/#`.
    CloudToDevice {
        /// The device.
        device_id: String,
    },
    /// `devices/{d}/modules/{m}/inputs/#` or `devices/{d}/modules/{m}/#`.
    ModuleInputs {
        /// The module.
        identity: Identity,
        /// Which of the two forms.
        form: InputsFilterForm,
    },
    /// `$iothub/twin/res/#`.
    TwinResponses,
    /// `$iothub/twin/PATCH/properties/desired/#`.
    DesiredPatches,
    /// `$iothub/methods/POST/#`.
    MethodRequests,
    /// `$dps/registrations/res/#`.
    DpsResponses,
}

const TWIN_GET: &str = "$iothub/twin/GET";
const TWIN_PATCH_REPORTED: &str = "$iothub/twin/PATCH/properties/reported";
const TWIN_PATCH_DESIRED: &str = "$iothub/twin/PATCH/properties/desired";
const TWIN_RES: &str = "$iothub/twin/res/";
const METHODS_POST: &str = "$iothub/methods/POST/";
const METHODS_RES: &str = "$iothub/methods/res/";
const DPS_REGISTER: &str = "$dps/registrations/PUT/iotdps-register";
const DPS_STATUS: &str = "$dps/registrations/GET/iotdps-get-operationstatus";
const DPS_RES: &str = "$dps/registrations/res/";

impl UpstreamTopic {
    /// Parses a topic a device or module published to.
    pub fn parse(topic: &str) -> Result<Self> {
        if let Some(query) = fixed_path(topic, TWIN_GET) {
            let q = Query::parse(query);
            return Ok(Self::TwinGet {
                request_id: q.required("$rid")?,
            });
        }
        if let Some(query) = fixed_path(topic, TWIN_PATCH_REPORTED) {
            let q = Query::parse(query);
            return Ok(Self::TwinPatchReported {
                request_id: q.required("$rid")?,
                version: q.number("$version")?,
            });
        }
        if let Some(rest) = topic.strip_prefix(METHODS_RES) {
            let (status, query) = segment_then_query(rest).ok_or_else(|| unknown(topic))?;
            let q = Query::parse(query);
            return Ok(Self::MethodResponse {
                status: status
                    .parse()
                    .map_err(|_| TopicError::InvalidNumber("status"))?,
                request_id: q.required("$rid")?,
            });
        }
        if let Some(query) = fixed_path(topic, DPS_REGISTER) {
            let q = Query::parse(query);
            return Ok(Self::DpsRegister {
                request_id: q.required("$rid")?,
            });
        }
        if let Some(query) = fixed_path(topic, DPS_STATUS) {
            let q = Query::parse(query);
            return Ok(Self::DpsOperationStatus {
                request_id: q.required("$rid")?,
                operation_id: q.required("operationId")?,
            });
        }
        let (identity, rest) = identity_prefix(topic).ok_or_else(|| unknown(topic))?;
        let bag = rest
            .strip_prefix("messages/events")
            .filter(|bag| bag.is_empty() || bag.starts_with('/'))
            .ok_or_else(|| unknown(topic))?;
        Ok(Self::Telemetry {
            identity,
            properties: PropertyBag::parse(bag_text(bag)),
        })
    }
}

impl fmt::Display for UpstreamTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Telemetry {
                identity,
                properties,
            } => write!(
                f,
                "{}/messages/events/{}",
                IdentityPath(identity),
                properties.format()
            ),
            Self::TwinGet { request_id } => write!(f, "{TWIN_GET}/?$rid={request_id}"),
            Self::TwinPatchReported {
                request_id,
                version,
            } => {
                write!(f, "{TWIN_PATCH_REPORTED}/?$rid={request_id}")?;
                match version {
                    Some(v) => write!(f, "&$version={v}"),
                    None => Ok(()),
                }
            }
            Self::MethodResponse { status, request_id } => {
                write!(f, "{METHODS_RES}{status}/?$rid={request_id}")
            }
            Self::DpsRegister { request_id } => write!(f, "{DPS_REGISTER}/?$rid={request_id}"),
            Self::DpsOperationStatus {
                request_id,
                operation_id,
            } => write!(
                f,
                "{DPS_STATUS}/?$rid={request_id}&operationId={operation_id}"
            ),
        }
    }
}

impl DownstreamTopic {
    /// Parses a topic the hub or DPS published.
    pub fn parse(topic: &str) -> Result<Self> {
        if let Some(rest) = topic.strip_prefix(TWIN_RES) {
            let (status, query) = segment_then_query(rest).ok_or_else(|| unknown(topic))?;
            let q = Query::parse(query);
            return Ok(Self::TwinResponse {
                status: parse_status(status)?,
                request_id: q.required("$rid")?,
                version: q.number("$version")?,
            });
        }
        if let Some(query) = fixed_path(topic, TWIN_PATCH_DESIRED) {
            let q = Query::parse(query);
            return Ok(Self::DesiredPatch {
                version: q
                    .number("$version")?
                    .ok_or(TopicError::MissingParameter("$version"))?,
            });
        }
        if let Some(rest) = topic.strip_prefix(METHODS_POST) {
            let (name, query) = segment_then_query(rest).ok_or_else(|| unknown(topic))?;
            if name.is_empty() {
                return Err(TopicError::EmptySegment("method name"));
            }
            let q = Query::parse(query);
            return Ok(Self::MethodRequest {
                method_name: decode_component(name).into_owned(),
                request_id: q.required("$rid")?,
            });
        }
        if let Some(rest) = topic.strip_prefix(DPS_RES) {
            let (status, query) = segment_then_query(rest).ok_or_else(|| unknown(topic))?;
            let q = Query::parse(query);
            return Ok(Self::DpsResponse {
                status: parse_status(status)?,
                request_id: q.required("$rid")?,
                // The C# SDK's tests spell it `Retry-After`; both are read.
                retry_after: match q.number("retry-after")? {
                    Some(seconds) => Some(seconds),
                    None => q.number("Retry-After")?,
                },
            });
        }
        let (identity, rest) = identity_prefix(topic).ok_or_else(|| unknown(topic))?;
        if identity.module_id().is_none() {
            let bag = rest
                .strip_prefix("messages/devicebound")
                .filter(|bag| bag.is_empty() || bag.starts_with('/'))
                .ok_or_else(|| unknown(topic))?;
            return Ok(Self::CloudToDevice {
                device_id: identity.device_id().to_owned(),
                properties: PropertyBag::parse(bag_text(bag)),
            });
        }
        let rest = rest.strip_prefix("inputs/").ok_or_else(|| unknown(topic))?;
        let (input, bag) = rest.split_once('/').unwrap_or((rest, ""));
        if input.is_empty() {
            return Err(TopicError::EmptySegment("input name"));
        }
        Ok(Self::ModuleInput {
            identity,
            input_name: decode_component(input).into_owned(),
            properties: PropertyBag::parse(bag.strip_suffix('/').unwrap_or(bag)),
        })
    }
}

impl DownstreamTopic {
    /// The topic that delivers `message` to `device_id`, with the properties IoT Hub writes.
    ///
    /// `$.to` is always present (`/devices/{id}/messages/deviceBound` unless the message sets
    /// it): the C# SDK fails on a topic that ends at `devicebound/` and the Node SDK's regex
    /// needs something after it.
    pub fn cloud_to_device(device_id: &str, message: &Message) -> Self {
        let mut properties = PropertyBag::from_message(message);
        if properties.get(property_bag::TO).is_none() {
            properties.insert(
                0,
                property_bag::TO,
                Some(format!("/devices/{device_id}/messages/deviceBound")),
            );
        }
        Self::CloudToDevice {
            device_id: device_id.to_owned(),
            properties,
        }
    }

    /// The topic that delivers `message` to input `input_name` of a module.
    pub fn module_input(identity: Identity, input_name: &str, message: &Message) -> Self {
        Self::ModuleInput {
            identity,
            input_name: input_name.to_owned(),
            properties: PropertyBag::from_message(message),
        }
    }
}

impl fmt::Display for DownstreamTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CloudToDevice {
                device_id,
                properties,
            } => write!(
                f,
                "devices/{}/messages/devicebound/{}",
                encode_component(device_id),
                properties.format()
            ),
            Self::ModuleInput {
                identity,
                input_name,
                properties,
            } => write!(
                f,
                "{}/inputs/{}/{}",
                IdentityPath(identity),
                encode_name(input_name),
                properties.format()
            ),
            Self::TwinResponse {
                status,
                request_id,
                version,
            } => {
                write!(f, "{TWIN_RES}{status}/?$rid={request_id}")?;
                match version {
                    Some(v) => write!(f, "&$version={v}"),
                    None => Ok(()),
                }
            }
            Self::DesiredPatch { version } => {
                write!(f, "{TWIN_PATCH_DESIRED}/?$version={version}")
            }
            Self::MethodRequest {
                method_name,
                request_id,
            } => write!(
                f,
                "{METHODS_POST}{}/?$rid={request_id}",
                encode_name(method_name)
            ),
            Self::DpsResponse {
                status,
                request_id,
                retry_after,
            } => {
                write!(f, "{DPS_RES}{status}/?$rid={request_id}")?;
                match retry_after {
                    Some(s) => write!(f, "&retry-after={s}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl TopicFilter {
    /// Parses a SUBSCRIBE filter.
    pub fn parse(filter: &str) -> Result<Self> {
        match filter {
            "$iothub/twin/res/#" => return Ok(Self::TwinResponses),
            "$iothub/twin/PATCH/properties/desired/#" => return Ok(Self::DesiredPatches),
            "$iothub/methods/POST/#" => return Ok(Self::MethodRequests),
            "$dps/registrations/res/#" => return Ok(Self::DpsResponses),
            _ => {}
        }
        let (identity, rest) = identity_prefix(filter).ok_or_else(|| unknown(filter))?;
        // In a filter, `+` and `#` are wildcards; IoT Hub allows none in the identity part.
        let id_part = &filter[..filter.len() - rest.len()];
        if id_part.contains(['+', '#']) {
            return Err(unknown(filter));
        }
        match (identity.module_id(), rest) {
            (None, "messages/devicebound/#") => Ok(Self::CloudToDevice {
                device_id: identity.device_id().to_owned(),
            }),
            (Some(_), "inputs/#") => Ok(Self::ModuleInputs {
                identity,
                form: InputsFilterForm::Inputs,
            }),
            (Some(_), "#") => Ok(Self::ModuleInputs {
                identity,
                form: InputsFilterForm::ModuleWildcard,
            }),
            _ => Err(unknown(filter)),
        }
    }

    /// Whether `topic` (as this crate formats it) is delivered on this filter.
    pub fn matches(&self, topic: &DownstreamTopic) -> bool {
        match (self, topic) {
            (
                Self::CloudToDevice { device_id },
                DownstreamTopic::CloudToDevice { device_id: d, .. },
            ) => device_id == d,
            (
                Self::ModuleInputs { identity, .. },
                DownstreamTopic::ModuleInput { identity: i, .. },
            ) => identity == i,
            (Self::TwinResponses, DownstreamTopic::TwinResponse { .. })
            | (Self::DesiredPatches, DownstreamTopic::DesiredPatch { .. })
            | (Self::MethodRequests, DownstreamTopic::MethodRequest { .. })
            | (Self::DpsResponses, DownstreamTopic::DpsResponse { .. }) => true,
            _ => false,
        }
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CloudToDevice { device_id } => write!(
                f,
                "devices/{}/messages/devicebound/#",
                encode_component(device_id)
            ),
            Self::ModuleInputs { identity, form } => match form {
                InputsFilterForm::Inputs => write!(f, "{}/inputs/#", IdentityPath(identity)),
                InputsFilterForm::ModuleWildcard => write!(f, "{}/#", IdentityPath(identity)),
            },
            Self::TwinResponses => f.write_str("$iothub/twin/res/#"),
            Self::DesiredPatches => f.write_str("$iothub/twin/PATCH/properties/desired/#"),
            Self::MethodRequests => f.write_str("$iothub/methods/POST/#"),
            Self::DpsResponses => f.write_str("$dps/registrations/res/#"),
        }
    }
}

/// `devices/{d}` or `devices/{d}/modules/{m}`, ids percent-encoded.
struct IdentityPath<'a>(&'a Identity);

impl fmt::Display for IdentityPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "devices/{}", encode_component(self.0.device_id()))?;
        if let Some(module) = self.0.module_id() {
            write!(f, "/modules/{}", encode_component(module))?;
        }
        Ok(())
    }
}

/// Splits `devices/{d}/modules/{m}/rest` or `devices/{d}/rest`, decoding the ids.
fn identity_prefix(topic: &str) -> Option<(Identity, &str)> {
    let rest = topic.strip_prefix("devices/")?;
    let (device, rest) = rest.split_once('/')?;
    if device.is_empty() {
        return None;
    }
    let device = decode_component(device).into_owned();
    if let Some(after) = rest.strip_prefix("modules/") {
        let (module, rest) = after.split_once('/')?;
        if module.is_empty() {
            return None;
        }
        return Some((Identity::module(device, decode_component(module)), rest));
    }
    Some((Identity::device(device), rest))
}

/// The bag text after `/events` or `/devicebound`: without the leading `/` and one trailing
/// `/`.
fn bag_text(after_path: &str) -> &str {
    let bag = after_path.strip_prefix('/').unwrap_or(after_path);
    bag.strip_suffix('/').unwrap_or(bag)
}

/// If `topic` is `path`, `path/`, `path?query` or `path/?query`, returns the query.
fn fixed_path<'t>(topic: &'t str, path: &str) -> Option<&'t str> {
    let rest = topic.strip_prefix(path)?;
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Some("");
    }
    rest.strip_prefix('?')
}

/// `segment/?query` or `segment?query` → (segment, query).
fn segment_then_query(rest: &str) -> Option<(&str, &str)> {
    let (segment, query) = match rest.split_once('/') {
        Some((segment, tail)) => (segment, tail.strip_prefix('?').unwrap_or(tail)),
        None => rest.split_once('?').unwrap_or((rest, "")),
    };
    if segment.contains('?') {
        return None;
    }
    Some((segment, query))
}

fn parse_status(text: &str) -> Result<u16> {
    text.parse()
        .map_err(|_| TopicError::InvalidNumber("status"))
}

fn unknown(topic: &str) -> TopicError {
    TopicError::Unknown(topic.chars().take(200).collect())
}

/// `k=v&k=v` with raw (undecoded) values: request and operation ids are echoed verbatim.
struct Query<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Query<'a> {
    fn parse(text: &'a str) -> Self {
        Self(
            text.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| p.split_once('=').unwrap_or((p, "")))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn required(&self, key: &'static str) -> Result<String> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .ok_or(TopicError::MissingParameter(key))
    }

    fn number<N: std::str::FromStr>(&self, key: &'static str) -> Result<Option<N>> {
        self.get(key)
            .map(|v| v.parse().map_err(|_| TopicError::InvalidNumber(key)))
            .transpose()
    }
}

#[cfg(test)]
mod tests;
