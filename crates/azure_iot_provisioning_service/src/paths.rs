//! The service API's paths, built from ids that are checked first: a bad id fails before
//! anything is sent, and whatever passes is percent-encoded into one path segment.

use azure_iot_core::encoding::encode_component;
use azure_iot_service::Error;

/// The longest registration or enrollment group id DPS accepts.
pub const MAX_ID_LEN: usize = 128;

/// Checks a registration id or enrollment group id: 1 to 128 ASCII letters, digits and
/// `- . _ :`, not starting or ending with one of those four (DPS's rule; it compares ids
/// case-insensitively, lower case is recommended).
pub fn check_id(what: &str, id: &str) -> Result<(), Error> {
    let special = |c: char| matches!(c, '-' | '.' | '_' | ':');
    if id.is_empty() {
        return Err(invalid(format!("the {what} is empty")));
    }
    if id.len() > MAX_ID_LEN {
        return Err(invalid(format!(
            "the {what} has {} characters; at most {MAX_ID_LEN} are allowed",
            id.len()
        )));
    }
    if let Some(bad) = id
        .chars()
        .find(|&c| !c.is_ascii_alphanumeric() && !special(c))
    {
        return Err(invalid(format!(
            "the {what} {id:?} contains {bad:?}; only letters, digits and - . _ : are allowed"
        )));
    }
    if id.starts_with(special) || id.ends_with(special) {
        return Err(invalid(format!(
            "the {what} {id:?} starts or ends with - . _ or :"
        )));
    }
    Ok(())
}

fn invalid(message: String) -> Error {
    // `Error`'s constructors are the service crate's; an invalid id is its InvalidArgument.
    Error::invalid_argument(message)
}

/// `/enrollments/{registrationId}`.
pub(crate) fn enrollment(registration_id: &str) -> Result<String, Error> {
    check_id("registration id", registration_id)?;
    Ok(format!(
        "/enrollments/{}",
        encode_component(registration_id)
    ))
}

/// `/enrollmentGroups/{groupId}`.
pub(crate) fn group(group_id: &str) -> Result<String, Error> {
    check_id("enrollment group id", group_id)?;
    Ok(format!("/enrollmentGroups/{}", encode_component(group_id)))
}

/// `/registrations/{registrationId}`, the registration state of one device (or, followed by
/// `/query`, the registration states of a group: the same segment holds a group id then).
pub(crate) fn registration(id: &str, what: &str) -> Result<String, Error> {
    check_id(what, id)?;
    Ok(format!("/registrations/{}", encode_component(id)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_follow_the_dps_rules() {
        for good in ["dev-01", "a", "Sensor.1_b:2", &"x".repeat(128)] {
            check_id("registration id", good).unwrap();
        }
        for bad in [
            "",
            "-lead",
            "trail.",
            "has space",
            "slash/",
            "ümlaut",
            &"x".repeat(129),
        ] {
            let e = check_id("registration id", bad).unwrap_err();
            assert_eq!(
                e.kind(),
                azure_iot_service::ErrorKind::InvalidArgument,
                "{bad}"
            );
            assert!(e.to_string().contains("registration id"), "{e}");
        }
    }

    #[test]
    fn paths_name_the_entity() {
        assert_eq!(enrollment("dev-1").unwrap(), "/enrollments/dev-1");
        assert_eq!(group("g:1").unwrap(), "/enrollmentGroups/g%3A1");
        assert_eq!(
            registration("dev-1", "registration id").unwrap(),
            "/registrations/dev-1"
        );
        assert!(group("a/b").is_err());
    }
}
