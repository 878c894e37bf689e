//! Who is on the other end: a device, or a module of a device.

use std::fmt;

/// A device or module identity, as MQTT client ids, SAS resources and topics name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    device_id: String,
    module_id: Option<String>,
}

/// Why a client id or identity was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The device id is empty.
    #[error("the device id is empty")]
    EmptyDeviceId,
    /// The module id is empty (`device/`).
    #[error("the module id is empty")]
    EmptyModuleId,
    /// The client id has more than one `/`.
    #[error("an MQTT client id is `deviceId` or `deviceId/moduleId`, not more segments")]
    TooManySegments,
    /// The id is empty or longer than [`MAX_ID_LEN`] characters.
    #[error("an id must be 1 to 128 characters long")]
    IdLength,
    /// The id has a character IoT Hub does not allow.
    #[error("the id contains the character {0:?}; allowed are A-Z a-z 0-9 and -:.+%_#*?!(),=@;$'")]
    IdCharacter(char),
}

/// The longest device or module id IoT Hub accepts.
pub const MAX_ID_LEN: usize = 128;

/// Checks a device or module id against IoT Hub's rules:
/// `^[A-Za-z0-9\-:.+%_#*?!(),=@;$']{1,128}$`.
///
/// ```
/// use azure_iot_protocol::identity::{check_id, IdentityError};
/// assert!(check_id("sensor-01").is_ok());
/// assert_eq!(check_id("a/b"), Err(IdentityError::IdCharacter('/')));
/// ```
pub fn check_id(id: &str) -> Result<(), IdentityError> {
    const EXTRA: &str = "-:.+%_#*?!(),=@;$'";
    if id.is_empty() || id.chars().count() > MAX_ID_LEN {
        return Err(IdentityError::IdLength);
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || EXTRA.contains(*c)))
    {
        Some(bad) => Err(IdentityError::IdCharacter(bad)),
        None => Ok(()),
    }
}

impl Identity {
    /// A device.
    pub fn device(device_id: impl Into<String>) -> Self {
        Self {
            device_id: device_id.into(),
            module_id: None,
        }
    }

    /// A module of a device.
    pub fn module(device_id: impl Into<String>, module_id: impl Into<String>) -> Self {
        Self {
            device_id: device_id.into(),
            module_id: Some(module_id.into()),
        }
    }

    /// The device id.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The module id, for a module.
    pub fn module_id(&self) -> Option<&str> {
        self.module_id.as_deref()
    }

    /// Whether this is a module identity.
    pub fn is_module(&self) -> bool {
        self.module_id.is_some()
    }

    /// The MQTT client id: `{deviceId}` or `{deviceId}/{moduleId}`.
    pub fn client_id(&self) -> String {
        self.to_string()
    }

    /// Parses an MQTT client id.
    pub fn parse_client_id(client_id: &str) -> Result<Self, IdentityError> {
        let mut parts = client_id.split('/');
        let device = parts.next().unwrap_or_default();
        let module = parts.next();
        if parts.next().is_some() {
            return Err(IdentityError::TooManySegments);
        }
        if device.is_empty() {
            return Err(IdentityError::EmptyDeviceId);
        }
        match module {
            None => Ok(Self::device(device)),
            Some("") => Err(IdentityError::EmptyModuleId),
            Some(module) => Ok(Self::module(device, module)),
        }
    }
}

/// `{deviceId}` or `{deviceId}/{moduleId}`.
impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.module_id {
            Some(module) => write!(f, "{}/{}", self.device_id, module),
            None => f.write_str(&self.device_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids() {
        assert_eq!(Identity::parse_client_id("d"), Ok(Identity::device("d")));
        assert_eq!(
            Identity::parse_client_id("d/m"),
            Ok(Identity::module("d", "m"))
        );
        assert_eq!(Identity::module("d", "m").client_id(), "d/m");
        assert_eq!(
            Identity::parse_client_id(""),
            Err(IdentityError::EmptyDeviceId)
        );
        assert_eq!(
            Identity::parse_client_id("/m"),
            Err(IdentityError::EmptyDeviceId)
        );
        assert_eq!(
            Identity::parse_client_id("d/"),
            Err(IdentityError::EmptyModuleId)
        );
        assert_eq!(
            Identity::parse_client_id("a/b/c"),
            Err(IdentityError::TooManySegments)
        );
    }
}
