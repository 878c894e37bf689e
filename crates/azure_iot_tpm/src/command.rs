//! One TPM 2.0 command on the wire (TPM 2.0 Library Part 1, "Command/Response Structure"):
//! the header (`tag`, `commandSize`, `commandCode`), the handle area, the authorisation area
//! when a handle needs one, the parameters; and the response's header, handles and
//! parameters, every length checked.

use crate::error::{Error, ResponseCode, Result};
use crate::marshal::{Reader, Writer};

/// `TPM_ST_NO_SESSIONS`.
const ST_NO_SESSIONS: u16 = 0x8001;
/// `TPM_ST_SESSIONS`.
const ST_SESSIONS: u16 = 0x8002;
/// `TPM_RS_PW`: the password pseudo-session.
const RS_PW: u32 = 0x4000_0009;
/// Session attribute `continueSession`.
const CONTINUE_SESSION: u8 = 0x01;
/// A response header's size: tag, size, response code.
const HEADER: usize = 10;

/// How a handle in the handle area is authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    /// The password session with the empty password (every object here has an empty
    /// authValue).
    EmptyPassword,
    /// A policy session whose policy is already satisfied; it ends with the command.
    Policy(u32),
}

/// A command being built.
#[derive(Debug)]
pub(crate) struct Command {
    name: &'static str,
    code: u32,
    handles: Vec<u32>,
    auths: Vec<Auth>,
    /// How many handles the response carries.
    response_handles: usize,
    pub(crate) params: Writer,
}

impl Command {
    /// A command `name` with code `code` and no handles yet.
    pub(crate) fn new(name: &'static str, code: u32) -> Self {
        Self {
            name,
            code,
            handles: Vec::new(),
            auths: Vec::new(),
            response_handles: 0,
            params: Writer::new(),
        }
    }

    /// A handle that needs no authorisation.
    pub(crate) fn handle(mut self, handle: u32) -> Self {
        self.handles.push(handle);
        self
    }

    /// A handle authorised by `auth` (sessions follow the handles' order).
    pub(crate) fn authorised(mut self, handle: u32, auth: Auth) -> Self {
        self.handles.push(handle);
        self.auths.push(auth);
        self
    }

    /// The response carries `n` handles before its parameters.
    pub(crate) fn response_handles(mut self, n: usize) -> Self {
        self.response_handles = n;
        self
    }

    /// The command's name, for errors.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// How many handles the response carries.
    pub(crate) fn expected_response_handles(&self) -> usize {
        self.response_handles
    }

    /// Whether the command has an authorisation area (so the response has a parameter size).
    pub(crate) fn has_sessions(&self) -> bool {
        !self.auths.is_empty()
    }

    /// The command's bytes.
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let mut body = Writer::new();
        for handle in &self.handles {
            body.u32(*handle);
        }
        if !self.auths.is_empty() {
            let mut area = Writer::new();
            for auth in &self.auths {
                match auth {
                    Auth::EmptyPassword => {
                        area.u32(RS_PW).u16(0).u8(CONTINUE_SESSION).u16(0);
                    }
                    Auth::Policy(session) => {
                        // No nonce, session not continued, no HMAC: the policy needs neither
                        // PolicyAuthValue nor PolicyPassword.
                        area.u32(*session).u16(0).u8(0).u16(0);
                    }
                }
            }
            body.u32(len32(area.len())?);
            body.bytes(area.as_bytes());
        }
        body.bytes(self.params.as_bytes());
        let tag = if self.auths.is_empty() {
            ST_NO_SESSIONS
        } else {
            ST_SESSIONS
        };
        let mut out = Writer::new();
        out.u16(tag)
            .u32(len32(HEADER + body.len())?)
            .u32(self.code)
            .bytes(body.as_bytes());
        Ok(out.into_bytes())
    }
}

fn len32(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::InvalidArgument("the command is over 4 GiB".to_owned()))
}

/// A successful response's handles and parameters.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Response<'a> {
    /// The response handles (as many as the command announces).
    pub(crate) handles: Vec<u32>,
    /// The parameter area (without the authorisation area that may follow).
    pub(crate) params: &'a [u8],
}

/// Reads the response to `command`: checks the header, turns a non-zero response code into
/// [`Error::Tpm`], and splits handles from parameters.
pub(crate) fn parse_response<'a>(
    command: &'static str,
    response_handles: usize,
    sessions: bool,
    bytes: &'a [u8],
) -> Result<Response<'a>> {
    let mut r = Reader::new(bytes, "response header");
    let tag = r.u16()?;
    let size = r.u32()?;
    let code = r.u32()?;
    if usize::try_from(size).ok() != Some(bytes.len()) {
        return Err(Error::malformed(
            "response header",
            format!(
                "announces {size} bytes, {} arrived for TPM2_{command}",
                bytes.len()
            ),
        ));
    }
    if code != 0 {
        return Err(Error::Tpm {
            command,
            code: ResponseCode(code),
        });
    }
    let expected_tag = if sessions {
        ST_SESSIONS
    } else {
        ST_NO_SESSIONS
    };
    if tag != expected_tag {
        return Err(Error::malformed(
            "response header",
            format!("tag 0x{tag:04X} where 0x{expected_tag:04X} was expected"),
        ));
    }
    let mut r = Reader::new(r.rest(), "response handle area");
    let handles = (0..response_handles)
        .map(|_| r.u32())
        .collect::<Result<Vec<_>>>()?;
    let params = if sessions {
        let len = r.u32()?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let mut r = Reader::new(r.rest(), "response parameter area");
        r.take(len)?
    } else {
        r.rest()
    };
    Ok(Response { handles, params })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commands_carry_header_handles_and_auth_area() {
        let mut cmd = Command::new("EvictControl", 0x120)
            .authorised(0x4000_0001, Auth::EmptyPassword)
            .handle(0x8000_0000);
        cmd.params.u32(0x8100_0001);
        let bytes = cmd.encode().unwrap();
        let expected: Vec<u8> = [
            &[0x80, 0x02][..],
            &35u32.to_be_bytes(),
            &0x120u32.to_be_bytes(),
            &0x4000_0001u32.to_be_bytes(),
            &0x8000_0000u32.to_be_bytes(),
            &9u32.to_be_bytes(),
            &[0x40, 0, 0, 0x09, 0, 0, 0x01, 0, 0],
            &0x8100_0001u32.to_be_bytes(),
        ]
        .concat();
        assert_eq!(bytes, expected);
        assert!(cmd.has_sessions());
    }

    #[test]
    fn responses_split_handles_params_and_decode_errors() {
        // Load-like response: one handle, parameter size 3, params, then an auth area.
        let mut ok = vec![0x80, 0x02, 0, 0, 0, 0, 0, 0, 0, 0];
        ok.extend_from_slice(&0x8000_0001u32.to_be_bytes());
        ok.extend_from_slice(&3u32.to_be_bytes());
        ok.extend_from_slice(&[1, 2, 3, 0, 0, 1, 0, 0]);
        let size = ok.len() as u32;
        ok[2..6].copy_from_slice(&size.to_be_bytes());
        let response = parse_response("Load", 1, true, &ok).unwrap();
        assert_eq!(response.handles, vec![0x8000_0001]);
        assert_eq!(response.params, &[1, 2, 3]);

        let refused = [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x8B];
        let err = parse_response("ReadPublic", 0, false, &refused).unwrap_err();
        assert_eq!(err.response_code(), Some(ResponseCode(0x18B)));
        assert!(
            err.to_string()
                .contains("TPM2_ReadPublic failed: TPM_RC_HANDLE")
        );

        let wrong_size = [0x80, 0x01, 0, 0, 0, 11, 0, 0, 0, 0];
        assert!(matches!(
            parse_response("X", 0, false, &wrong_size),
            Err(Error::Malformed { .. })
        ));
        let short_params = [0x80, 0x02, 0, 0, 0, 14, 0, 0, 0, 0, 0, 0, 0, 9];
        assert!(parse_response("X", 0, true, &short_params).is_err());
    }

    proptest! {
        #[test]
        fn any_response_bytes_parse_or_fail_cleanly(
            bytes in proptest::collection::vec(any::<u8>(), 0..128),
            handles in 0usize..3,
            sessions in any::<bool>(),
        ) {
            if let Ok(response) = parse_response("Fuzz", handles, sessions, &bytes) {
                prop_assert_eq!(response.handles.len(), handles);
                prop_assert!(response.params.len() <= bytes.len());
            }
        }

        #[test]
        fn a_well_formed_response_keeps_its_parameters(
            params in proptest::collection::vec(any::<u8>(), 0..64),
            handle in any::<u32>(),
        ) {
            let mut bytes = vec![0x80, 0x02, 0, 0, 0, 0, 0, 0, 0, 0];
            bytes.extend_from_slice(&handle.to_be_bytes());
            bytes.extend_from_slice(&(params.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&params);
            bytes.extend_from_slice(&[0, 0, 1, 0, 0]);
            let size = bytes.len() as u32;
            bytes[2..6].copy_from_slice(&size.to_be_bytes());
            let response = parse_response("Load", 1, true, &bytes).unwrap();
            prop_assert_eq!(response.handles, vec![handle]);
            prop_assert_eq!(response.params, &params[..]);
        }
    }
}
