//! The crate's error type and the decoding of TPM response codes (TPM 2.0 Library Part 2,
//! "TPM_RC"): a code is shown as its name, and for format-one codes the handle, session or
//! parameter it is about.

use std::fmt;

/// What went wrong talking to the TPM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TPM could not be reached or the connection broke (opening the device, the
    /// simulator socket, reading or writing).
    #[error("TPM transport ({what}): {source}")]
    Io {
        /// Which step failed (open `/dev/tpmrm0`, connect to the simulator, read, …).
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The simulator's control protocol answered with a non-zero status.
    #[error("the TPM simulator refused `{what}` (status {status})")]
    Simulator {
        /// The simulator request.
        what: &'static str,
        /// The status it answered.
        status: u32,
    },
    /// The TPM refused a command.
    #[error("TPM2_{command} failed: {code}")]
    Tpm {
        /// The command's name (`CreatePrimary`, `ActivateCredential`, …).
        command: &'static str,
        /// The TPM's response code.
        code: ResponseCode,
    },
    /// A response (or an input structure) is not what TPM 2.0 marshals.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// Which structure.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// An argument cannot be sent (too large for its size field, an unsupported size).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// A transport failure during `what`.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    /// A malformed structure.
    pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Malformed {
            what,
            detail: detail.into(),
        }
    }

    /// The TPM's response code, when the TPM refused a command.
    pub fn response_code(&self) -> Option<ResponseCode> {
        match self {
            Self::Tpm { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A TPM 2.0 response code (`TPM_RC`), decoded for display.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResponseCode(pub u32);

/// Bit 7: a format-one code (error number, plus the handle/session/parameter it is about).
const RC_FMT1: u32 = 0x080;
/// Bit 8: a TPM 2.0 format-zero code (otherwise a TPM 1.2 code).
const RC_VER1: u32 = 0x100;
/// Bit 10: a vendor-defined code.
const RC_VENDOR: u32 = 0x400;
/// Bit 11 of a format-zero code: a warning.
const RC_WARN: u32 = 0x800;
/// Bit 6 of a format-one code: the number is a parameter's.
const RC_P: u32 = 0x040;

/// What a format-one code is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// The n-th handle of the command (1-based).
    Handle(u8),
    /// The n-th authorisation session (1-based).
    Session(u8),
    /// The n-th parameter (1-based).
    Parameter(u8),
    /// None named.
    None,
}

impl ResponseCode {
    /// The error itself, without the handle/session/parameter number: `0x080 | error` for a
    /// format-one code, `0x100 | error` or `0x900 | error` for format zero.
    pub fn base(self) -> u32 {
        let rc = self.0;
        if rc & RC_FMT1 != 0 {
            RC_FMT1 | (rc & 0x3F)
        } else if rc & RC_VER1 != 0 && rc & RC_VENDOR == 0 {
            (rc & (RC_VER1 | RC_WARN)) | (rc & 0x7F)
        } else {
            rc
        }
    }

    /// What a format-one code is about.
    pub fn subject(self) -> Subject {
        let rc = self.0;
        if rc & RC_FMT1 == 0 {
            return Subject::None;
        }
        let number = ((rc >> 8) & 0xF) as u8;
        if rc & RC_P != 0 {
            Subject::Parameter(number)
        } else if number == 0 {
            Subject::None
        } else if number & 0x8 != 0 {
            Subject::Session(number & 0x7)
        } else {
            Subject::Handle(number)
        }
    }

    /// Whether this is a warning the caller may retry after (`TPM_RC_RETRY`, `YIELDED`,
    /// `TESTING`, memory and context warnings).
    pub fn is_warning(self) -> bool {
        self.0 & RC_FMT1 == 0 && self.0 & RC_VER1 != 0 && self.0 & RC_WARN != 0
    }

    /// The name the specification gives the error (`TPM_RC_HANDLE`, …), if known.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.base() {
            0x000 => "TPM_RC_SUCCESS",
            0x081 => "TPM_RC_ASYMMETRIC",
            0x082 => "TPM_RC_ATTRIBUTES",
            0x083 => "TPM_RC_HASH",
            0x084 => "TPM_RC_VALUE",
            0x085 => "TPM_RC_HIERARCHY",
            0x087 => "TPM_RC_KEY_SIZE",
            0x088 => "TPM_RC_MGF",
            0x089 => "TPM_RC_MODE",
            0x08A => "TPM_RC_TYPE",
            0x08B => "TPM_RC_HANDLE",
            0x08C => "TPM_RC_KDF",
            0x08D => "TPM_RC_RANGE",
            0x08E => "TPM_RC_AUTH_FAIL",
            0x08F => "TPM_RC_NONCE",
            0x090 => "TPM_RC_PP",
            0x092 => "TPM_RC_SCHEME",
            0x095 => "TPM_RC_SIZE",
            0x096 => "TPM_RC_SYMMETRIC",
            0x097 => "TPM_RC_TAG",
            0x098 => "TPM_RC_SELECTOR",
            0x09A => "TPM_RC_INSUFFICIENT",
            0x09B => "TPM_RC_SIGNATURE",
            0x09C => "TPM_RC_KEY",
            0x09D => "TPM_RC_POLICY_FAIL",
            0x09F => "TPM_RC_INTEGRITY",
            0x0A0 => "TPM_RC_TICKET",
            0x0A1 => "TPM_RC_RESERVED_BITS",
            0x0A2 => "TPM_RC_BAD_AUTH",
            0x0A3 => "TPM_RC_EXPIRED",
            0x0A4 => "TPM_RC_POLICY_CC",
            0x0A5 => "TPM_RC_BINDING",
            0x0A6 => "TPM_RC_CURVE",
            0x0A7 => "TPM_RC_ECC_POINT",
            0x100 => "TPM_RC_INITIALIZE",
            0x101 => "TPM_RC_FAILURE",
            0x103 => "TPM_RC_SEQUENCE",
            0x10B => "TPM_RC_PRIVATE",
            0x119 => "TPM_RC_HMAC",
            0x120 => "TPM_RC_DISABLED",
            0x121 => "TPM_RC_EXCLUSIVE",
            0x124 => "TPM_RC_AUTH_TYPE",
            0x125 => "TPM_RC_AUTH_MISSING",
            0x126 => "TPM_RC_POLICY",
            0x127 => "TPM_RC_PCR",
            0x128 => "TPM_RC_PCR_CHANGED",
            0x12D => "TPM_RC_UPGRADE",
            0x12E => "TPM_RC_TOO_MANY_CONTEXTS",
            0x12F => "TPM_RC_AUTH_UNAVAILABLE",
            0x130 => "TPM_RC_REBOOT",
            0x131 => "TPM_RC_UNBALANCED",
            0x142 => "TPM_RC_COMMAND_SIZE",
            0x143 => "TPM_RC_COMMAND_CODE",
            0x144 => "TPM_RC_AUTHSIZE",
            0x145 => "TPM_RC_AUTH_CONTEXT",
            0x146 => "TPM_RC_NV_RANGE",
            0x147 => "TPM_RC_NV_SIZE",
            0x148 => "TPM_RC_NV_LOCKED",
            0x149 => "TPM_RC_NV_AUTHORIZATION",
            0x14A => "TPM_RC_NV_UNINITIALIZED",
            0x14B => "TPM_RC_NV_SPACE",
            0x14C => "TPM_RC_NV_DEFINED",
            0x150 => "TPM_RC_BAD_CONTEXT",
            0x151 => "TPM_RC_CPHASH",
            0x152 => "TPM_RC_PARENT",
            0x153 => "TPM_RC_NEEDS_TEST",
            0x154 => "TPM_RC_NO_RESULT",
            0x155 => "TPM_RC_SENSITIVE",
            0x901 => "TPM_RC_CONTEXT_GAP",
            0x902 => "TPM_RC_OBJECT_MEMORY",
            0x903 => "TPM_RC_SESSION_MEMORY",
            0x904 => "TPM_RC_MEMORY",
            0x905 => "TPM_RC_SESSION_HANDLES",
            0x906 => "TPM_RC_OBJECT_HANDLES",
            0x907 => "TPM_RC_LOCALITY",
            0x908 => "TPM_RC_YIELDED",
            0x909 => "TPM_RC_CANCELED",
            0x90A => "TPM_RC_TESTING",
            0x920 => "TPM_RC_NV_RATE",
            0x921 => "TPM_RC_LOCKOUT",
            0x922 => "TPM_RC_RETRY",
            0x923 => "TPM_RC_NV_UNAVAILABLE",
            _ => return None,
        })
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}")?,
            None if self.0 & RC_VER1 == 0 && self.0 & RC_FMT1 == 0 => {
                write!(f, "TPM 1.2 or vendor code")?
            }
            None => write!(f, "unknown code")?,
        }
        match self.subject() {
            Subject::Handle(n) => write!(f, " (handle {n})")?,
            Subject::Session(n) => write!(f, " (session {n})")?,
            Subject::Parameter(n) => write!(f, " (parameter {n})")?,
            Subject::None => {}
        }
        write!(f, " [0x{:03X}]", self.0)
    }
}

impl fmt::Debug for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResponseCode({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_decode_to_names_and_subjects() {
        // A missing persistent handle, as ReadPublic reports it.
        let rc = ResponseCode(0x18B);
        assert_eq!(rc.base(), 0x08B);
        assert_eq!(rc.subject(), Subject::Handle(1));
        assert_eq!(rc.to_string(), "TPM_RC_HANDLE (handle 1) [0x18B]");
        // A bad authorisation in session 1.
        let rc = ResponseCode(0x98E);
        assert_eq!(rc.name(), Some("TPM_RC_AUTH_FAIL"));
        assert_eq!(rc.subject(), Subject::Session(1));
        // A bad parameter 2.
        let rc = ResponseCode(0x2C4);
        assert_eq!(rc.name(), Some("TPM_RC_VALUE"));
        assert_eq!(rc.subject(), Subject::Parameter(2));
        // Format zero.
        assert_eq!(ResponseCode(0x100).name(), Some("TPM_RC_INITIALIZE"));
        assert_eq!(ResponseCode(0x922).name(), Some("TPM_RC_RETRY"));
        assert!(ResponseCode(0x922).is_warning());
        assert!(!ResponseCode(0x100).is_warning());
        assert!(ResponseCode(0x1234_0000).to_string().contains("0x12340000"));
    }
}
