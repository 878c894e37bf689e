//! The SASL `TPM` mechanism DPS uses for TPM attestation over AMQP (`dps.md` §7.5,
//! `next-transports.md` §3.6), run on the raw stream before the AMQP library opens the
//! connection (as the emulator runs its own SASL layer): after an `ok` outcome the library
//! sends the plain AMQP header and opens without SASL.
//!
//! ```text
//!  client                                   DPS
//!  AMQP 3 1 0 0                    →        ← AMQP 3 1 0 0, sasl-mechanisms [.. TPM ..]
//!  sasl-init TPM, hostname {scope}/registrations/{id},
//!    0x00 scope 0x00 id 0x00 EK    →        ← sasl-challenge (one byte)
//!  sasl-response 0x00 SRK          →        ← sasl-challenge 0x80|seq + blob chunk
//!  sasl-response 0x00              →        ← … ← sasl-challenge 0xC0|seq + last chunk
//!  (activate the blob in the TPM)
//!  sasl-response 0x00 SAS token    →        ← sasl-outcome
//! ```
//!
//! Segments must come in order (the 2-bit sequence starts at 0), the blob is bounded by
//! [`MAX_BLOB`], every frame by [`MAX_SASL_FRAME`]. The segments may carry the blob's bytes or
//! its base64 text; both are accepted.

use std::time::Duration;

use azure_iot_core::sas::ResourceUri;
use azure_iot_protocol::dps::{DEVICE_KEY_NAME, registration_path};
use fe2o3_amqp::frames::sasl::Frame;
use fe2o3_amqp_types::primitives::{Binary, Symbol};
use fe2o3_amqp_types::sasl::{SaslCode, SaslInit, SaslResponse};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::tpm::TpmAttestation;

/// The SASL protocol header.
const SASL_HEADER: &[u8; 8] = b"AMQP\x03\x01\x00\x00";
/// The mechanism's name.
const MECHANISM: &str = "TPM";
/// The largest SASL frame read.
const MAX_SASL_FRAME: u32 = 16 * 1024;
/// The largest activation blob accepted across all segments.
const MAX_BLOB: usize = 16 * 1024;
/// Control byte: a blob segment.
const SEGMENT: u8 = 0x80;
/// Control byte: the last segment.
const FINAL: u8 = 0x40;

/// Runs the exchange on `io` for `{id_scope}/registrations/{registration_id}`. `Ok` when DPS
/// sent outcome `ok`; a refusal is [`Error::Unauthorized`].
pub(crate) async fn negotiate<S>(
    io: &mut S,
    id_scope: &str,
    registration_id: &str,
    tpm: &TpmAttestation,
    token_ttl: Duration,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    io.write_all(SASL_HEADER).await.map_err(io_error)?;
    let mut header = [0u8; 8];
    io.read_exact(&mut header).await.map_err(io_error)?;
    if &header != SASL_HEADER {
        return Err(Error::Protocol(
            "DPS did not answer with the AMQP SASL header".to_owned(),
        ));
    }
    match read_frame(io).await? {
        Frame::Mechanisms(m) if m.sasl_server_mechanisms.0.iter().any(|s| s.0 == MECHANISM) => {}
        Frame::Mechanisms(_) => {
            return Err(Error::Unauthorized {
                error_code: None,
                message: "DPS does not offer the SASL TPM mechanism".to_owned(),
            });
        }
        _ => return Err(unexpected("sasl-mechanisms")),
    }
    let mut initial = vec![0u8];
    initial.extend_from_slice(id_scope.as_bytes());
    initial.push(0);
    initial.extend_from_slice(registration_id.as_bytes());
    initial.push(0);
    initial.extend_from_slice(tpm.endorsement_key());
    write_frame(
        io,
        &Frame::Init(SaslInit {
            mechanism: Symbol::from(MECHANISM),
            initial_response: Some(Binary::from(initial)),
            hostname: Some(registration_path(id_scope, registration_id)),
        }),
    )
    .await?;
    challenge(io).await?;
    let mut srk = vec![0u8];
    srk.extend_from_slice(tpm.storage_root_key());
    respond(io, srk).await?;

    let mut blob = Vec::new();
    let mut expected_seq = 0u8;
    loop {
        let segment = challenge(io).await?;
        let (&control, chunk) = segment
            .split_first()
            .ok_or_else(|| Error::Protocol("an empty SASL TPM challenge".to_owned()))?;
        if control & SEGMENT == 0 || control & 0x03 != expected_seq {
            return Err(Error::Protocol(format!(
                "SASL TPM segment with control byte 0x{control:02X} where sequence {expected_seq} was expected"
            )));
        }
        if blob.len() + chunk.len() > MAX_BLOB {
            return Err(Error::Protocol(format!(
                "the SASL TPM activation blob is larger than {MAX_BLOB} bytes"
            )));
        }
        blob.extend_from_slice(chunk);
        expected_seq = (expected_seq + 1) & 0x03;
        if control & FINAL != 0 {
            break;
        }
        respond(io, vec![0]).await?;
    }
    tpm.activate_bytes(&blob_bytes(blob)).await?;
    let token = tpm
        .token(
            ResourceUri::dps_registration(id_scope, registration_id),
            Some(DEVICE_KEY_NAME),
            token_ttl,
        )
        .await?;
    let mut last = vec![0u8];
    last.extend_from_slice(token.as_bytes());
    respond(io, last).await?;
    match read_frame(io).await? {
        Frame::Outcome(outcome) if matches!(outcome.code, SaslCode::Ok) => Ok(()),
        Frame::Outcome(outcome) => Err(Error::Unauthorized {
            error_code: None,
            message: format!("DPS refused the SASL TPM login ({:?})", outcome.code),
        }),
        _ => Err(unexpected("sasl-outcome")),
    }
}

/// The activation blob the segments carry: the emulator (and the C client's reading of DPS)
/// sends its base64 text, the Node client takes raw bytes; base64 text is decoded, anything
/// else used as is (a binary blob is never all base64 characters: its sizes start with 0x00).
fn blob_bytes(blob: Vec<u8>) -> Vec<u8> {
    let is_text = !blob.is_empty()
        && blob
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if is_text {
        use base64::Engine as _;
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&blob) {
            return bytes;
        }
    }
    blob
}

/// Reads a challenge; an outcome instead is DPS refusing.
async fn challenge<S: AsyncRead + Unpin>(io: &mut S) -> Result<Vec<u8>> {
    match read_frame(io).await? {
        Frame::Challenge(c) => Ok(c.challenge.into_vec()),
        Frame::Outcome(outcome) => Err(Error::Unauthorized {
            error_code: None,
            message: format!(
                "DPS refused the SASL TPM login before the challenge ({:?})",
                outcome.code
            ),
        }),
        _ => Err(unexpected("sasl-challenge")),
    }
}

async fn respond<S: AsyncWrite + Unpin>(io: &mut S, response: Vec<u8>) -> Result<()> {
    write_frame(
        io,
        &Frame::Response(SaslResponse {
            response: Binary::from(response),
        }),
    )
    .await
}

fn unexpected(wanted: &str) -> Error {
    Error::Protocol(format!(
        "DPS sent another SASL frame where {wanted} was expected"
    ))
}

fn io_error(e: std::io::Error) -> Error {
    Error::transport("the SASL TPM exchange with DPS failed", e)
}

/// Writes one SASL frame.
async fn write_frame<S: AsyncWrite + Unpin>(io: &mut S, frame: &Frame) -> Result<()> {
    let body = serde_amqp::to_vec(frame)
        .map_err(|e| Error::Protocol(format!("a SASL frame cannot be encoded: {e}")))?;
    let size = u32::try_from(body.len() + 8)
        .map_err(|_| Error::InvalidArgument("a SASL frame is too large".to_owned()))?;
    let mut bytes = Vec::with_capacity(body.len() + 8);
    bytes.extend_from_slice(&size.to_be_bytes());
    bytes.extend_from_slice(&[2, 1, 0, 0]); // doff 2, type 1 (SASL), channel 0
    bytes.extend_from_slice(&body);
    io.write_all(&bytes).await.map_err(io_error)?;
    io.flush().await.map_err(io_error)
}

/// Reads one SASL frame of at most [`MAX_SASL_FRAME`] bytes.
async fn read_frame<S: AsyncRead + Unpin>(io: &mut S) -> Result<Frame> {
    let mut header = [0u8; 8];
    io.read_exact(&mut header).await.map_err(io_error)?;
    let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if !(8..=MAX_SASL_FRAME).contains(&size) {
        return Err(Error::Protocol(format!(
            "a SASL frame of {size} bytes (8 to {MAX_SASL_FRAME})"
        )));
    }
    if header[5] != 1 {
        return Err(Error::Protocol(
            "an AMQP frame where a SASL frame was expected".to_owned(),
        ));
    }
    let mut body = vec![0u8; size as usize - 8];
    io.read_exact(&mut body).await.map_err(io_error)?;
    let extended = (usize::from(header[4]) * 4).saturating_sub(8);
    let body = body.get(extended..).ok_or_else(|| {
        Error::Protocol("a SASL frame whose data offset is past its end".to_owned())
    })?;
    serde_amqp::from_slice(body)
        .map_err(|e| Error::Protocol(format!("a SASL frame that cannot be read: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blob_may_come_as_bytes_or_base64_text() {
        let raw = vec![0u8, 3, 1, 2, 3];
        assert_eq!(blob_bytes(raw.clone()), raw);
        assert_eq!(blob_bytes(b"AAMBAgM=".to_vec()), raw);
        assert_eq!(blob_bytes(Vec::new()), Vec::<u8>::new());
    }
}
