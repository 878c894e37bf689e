//! DPS's SASL `TPM` mechanism (shared/protocol/dps.md §7.5; the C SDK's `prov_sasl_tpm.c` is
//! the client that runs it over AMQP): the device's EK and SRK come in, the activation blob of
//! a TPM challenge goes out in segments, and the device's SAS token, signed inside its TPM,
//! comes back and becomes the connection's DPS login.
//!
//! ```text
//!  client sasl-init   0x00 [scope 0x00 registration 0x00] EK   (C: scope and id only in hostname)
//!  server challenge   0x00
//!  client response    0x00 SRK
//!  server challenge   0x80|seq  base64(blob) segment …  0xC0|seq last segment
//!  client response    0x00 after each segment; after the last: 0x00 SAS-token
//! ```
//!
//! Payloads with a control byte with bit `0x80` set are chunks (`0x40` marks the last); the
//! C client sends them for keys over 470 bytes. The blob travels as base64 text, which the C
//! client decodes once it has the last segment. Every input is bounded: keys by
//! [`MAX_KEY`], the exchange by the number of segments.

use azure_iot_protocol::dps::registration::TpmRegistration;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fe2o3_amqp::frames::sasl::Frame;
use fe2o3_amqp_types::sasl::{SaslChallenge, SaslCode, SaslInit, SaslOutcome};
use tokio::io::{AsyncRead, AsyncWrite};

use super::sasl::{read_frame, write_frame};
use super::{AmqpContext, ConnectionState};

/// The largest EK or SRK accepted (an RSA 4096 `TPM2B_PUBLIC` is about 550 bytes).
const MAX_KEY: usize = 4096;
/// Base64 characters of the blob per challenge (the C client takes at most 4 segments).
const SEGMENT: usize = 400;
/// Control bit: a chunk.
const CHUNK: u8 = 0x80;
/// Control bit: the last chunk.
const LAST: u8 = 0x40;

/// What a TPM `sasl-init` names.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct TpmInit {
    /// The id scope.
    pub(super) scope: String,
    /// The registration id.
    pub(super) registration_id: String,
    /// The EK bytes (`TPM2B_PUBLIC`).
    pub(super) endorsement_key: Vec<u8>,
}

/// Reads a TPM `sasl-init`: scope and registration id from the initial response (Node, C#)
/// or else from the hostname `{scope}/registrations/{id}` (C).
pub(super) fn parse_init(response: &[u8], hostname: Option<&str>) -> Result<TpmInit, String> {
    let (control, rest) = response.split_first().ok_or("an empty TPM sasl-init")?;
    if control & CHUNK != 0 {
        return Err("a chunked TPM sasl-init is not supported (keys over 470 bytes)".into());
    }
    let looks_like_tpm2b =
        rest.len() >= 2 && usize::from(u16::from_be_bytes([rest[0], rest[1]])) == rest.len() - 2;
    let (scope, registration_id, ek) = if looks_like_tpm2b {
        let host = hostname.ok_or("a TPM sasl-init without scope, registration or hostname")?;
        let (scope, id) = host
            .split_once("/registrations/")
            .ok_or("the TPM sasl-init hostname is not {scope}/registrations/{id}")?;
        (scope.to_owned(), id.to_owned(), rest)
    } else {
        let mut parts = rest.splitn(3, |b| *b == 0);
        let (Some(scope), Some(id), Some(ek)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("the TPM sasl-init is not scope, registration id and EK".into());
        };
        let text = |b: &[u8]| {
            String::from_utf8(b.to_vec()).map_err(|_| "a TPM sasl-init name is not UTF-8")
        };
        (text(scope)?, text(id)?, ek)
    };
    if ek.is_empty() || ek.len() > MAX_KEY {
        return Err(format!("a TPM endorsement key of {} bytes", ek.len()));
    }
    Ok(TpmInit {
        scope,
        registration_id,
        endorsement_key: ek.to_vec(),
    })
}

/// The challenges carrying `blob_base64`: control byte, then up to [`SEGMENT`] characters.
pub(super) fn segments(blob_base64: &str) -> Vec<Vec<u8>> {
    let chunks: Vec<&[u8]> = blob_base64.as_bytes().chunks(SEGMENT).collect();
    let count = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut control = CHUNK | (i as u8 & 0x03);
            if i + 1 == count {
                control |= LAST;
            }
            let mut segment = Vec::with_capacity(chunk.len() + 1);
            segment.push(control);
            segment.extend_from_slice(chunk);
            segment
        })
        .collect()
}

/// Runs the exchange after a TPM `sasl-init` and returns the outcome to send: `ok` once the
/// device's token is the connection's (unchecked) DPS login, `auth` with DPS's reason when
/// the challenge is refused. `Err` when the connection broke or the client left the protocol.
pub(super) async fn exchange<S>(
    io: &mut S,
    init: SaslInit,
    state: &ConnectionState,
    context: &AmqpContext,
) -> Result<SaslOutcome, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let response = init
        .initial_response
        .map(|b| b.into_vec())
        .unwrap_or_default();
    let init = match parse_init(&response, init.hostname.as_deref()) {
        Ok(init) => init,
        Err(why) => return Ok(refuse(why)),
    };
    // The EK is checked before anything else is asked for.
    if let Err(e) = context
        .dps
        .check_tpm_enrolled(&init.scope, &init.registration_id, &init.endorsement_key)
        .await
    {
        return Ok(refuse(e.to_string()));
    }
    challenge(io, vec![0]).await?;
    let srk = read_key(io).await?;
    let tpm = TpmRegistration {
        endorsement_key: STANDARD.encode(&init.endorsement_key),
        storage_root_key: Some(STANDARD.encode(&srk)),
    };
    let blob = match context
        .dps
        .tpm_challenge(&init.scope, &init.registration_id, &tpm)
        .await
    {
        Ok(blob) => blob,
        Err(e) => return Ok(refuse(e.to_string())),
    };
    let segments = segments(&blob);
    let count = segments.len();
    let mut token = None;
    for (i, segment) in segments.into_iter().enumerate() {
        challenge(io, segment).await?;
        let answer = read_response(io).await?;
        match answer.split_first() {
            Some((0, rest)) if i + 1 == count => {
                token = Some(
                    String::from_utf8(rest.to_vec())
                        .map_err(|_| "the TPM SAS token is not UTF-8".to_owned())?,
                );
            }
            Some((0, [])) => {}
            _ => return Err("an unexpected TPM sasl-response to a blob segment".into()),
        }
    }
    let token = token.ok_or("no SAS token after the TPM challenge")?;
    let user = azure_iot_protocol::dps::registration_path(&init.scope, &init.registration_id);
    if super::dps::plain(state, &user, token) {
        Ok(SaslOutcome {
            code: SaslCode::Ok,
            additional_data: None,
        })
    } else {
        Ok(refuse("the TPM SAS token is not a DPS login".into()))
    }
}

/// The SRK of the response to the first challenge, whole or in chunks.
async fn read_key<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) -> Result<Vec<u8>, String> {
    let mut key = Vec::new();
    loop {
        let response = read_response(io).await?;
        let (control, rest) = response.split_first().ok_or("an empty TPM sasl-response")?;
        if key.len() + rest.len() > MAX_KEY {
            return Err(format!("a TPM storage root key over {MAX_KEY} bytes"));
        }
        key.extend_from_slice(rest);
        if control & CHUNK == 0 || control & LAST != 0 {
            return Ok(key);
        }
        // An interim chunk: ask for the next one.
        challenge(io, vec![0]).await?;
    }
}

async fn challenge<S: AsyncWrite + Unpin>(io: &mut S, bytes: Vec<u8>) -> Result<(), String> {
    write_frame(
        io,
        &Frame::Challenge(SaslChallenge {
            challenge: bytes.into(),
        }),
    )
    .await
}

async fn read_response<S: AsyncRead + Unpin>(io: &mut S) -> Result<Vec<u8>, String> {
    match read_frame(io).await? {
        Frame::Response(r) => Ok(r.response.into_vec()),
        _ => Err("a SASL frame other than sasl-response during the TPM exchange".into()),
    }
}

fn refuse(why: String) -> SaslOutcome {
    tracing::info!(reason = %why, "SASL TPM refused");
    SaslOutcome {
        code: SaslCode::Auth,
        additional_data: Some(why.into_bytes().into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EK: [u8; 6] = [0x00, 0x04, 0x00, 0x01, 0x00, 0x0b];

    #[test]
    fn init_with_names_in_the_response() {
        let mut response = b"\x000ne00000001\x00dev-1\x00".to_vec();
        response.extend_from_slice(&EK);
        assert_eq!(
            parse_init(&response, Some("ignored/registrations/other")),
            Ok(TpmInit {
                scope: "0ne00000001".into(),
                registration_id: "dev-1".into(),
                endorsement_key: EK.to_vec(),
            })
        );
    }

    #[test]
    fn init_with_names_in_the_hostname() {
        let mut response = vec![0];
        response.extend_from_slice(&EK);
        let init = parse_init(&response, Some("0ne00000001/registrations/dev-2"));
        assert_eq!(
            init,
            Ok(TpmInit {
                scope: "0ne00000001".into(),
                registration_id: "dev-2".into(),
                endorsement_key: EK.to_vec(),
            })
        );
        assert!(parse_init(&response, None).is_err());
    }

    #[test]
    fn bad_inits_are_refused() {
        assert!(parse_init(&[], None).is_err());
        assert!(parse_init(&[0x80, 1, 2], None).is_err());
        assert!(parse_init(b"\x00scope-only", None).is_err());
        assert!(parse_init(b"\x00scope\x00id\x00", None).is_err());
    }

    #[test]
    fn segments_carry_the_base64_text_with_sequence_and_last_flag() {
        let text = "A".repeat(SEGMENT * 2 + 10);
        let segments = segments(&text);
        assert_eq!(segments.len(), 3);
        assert_eq!(segments[0][0], 0x80);
        assert_eq!(segments[1][0], 0x81);
        assert_eq!(segments[2][0], 0xC2);
        let joined: Vec<u8> = segments.iter().flat_map(|s| s[1..].to_vec()).collect();
        assert_eq!(joined, text.as_bytes());
        assert_eq!(segments_of_one(), vec![0xC0, b'x']);
    }

    fn segments_of_one() -> Vec<u8> {
        segments("x").concat()
    }
}
