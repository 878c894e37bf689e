//! The SASL layer of an AMQP connection, run by the emulator itself before the AMQP library
//! takes over.
//!
//! fe2o3's acceptor asks its SASL callback for the outcome synchronously, so it cannot wait
//! for an answer from an actor; DPS logins must be checked by the DPS core before the outcome
//! (a wrong key is a SASL authentication failure, as the contract with the core says). So
//! the exchange is done here, three frames:
//!
//! ```text
//!  client: AMQP 3 1 0 0          emulator: AMQP 3 1 0 0, sasl-mechanisms
//!  client: sasl-init             emulator: (HubSasl decides; a DPS PLAIN login is checked
//!                                           by the DPS core) sasl-outcome
//!  ok → the client sends AMQP 0 1 0 0 and the library accepts the connection without SASL
//! ```
//!
//! The stream is read through the frame guard, which checks every frame before it is
//! decoded; a SASL frame may be at most [`MAX_SASL_FRAME`] bytes. A `sasl-response` outside the
//! TPM exchange is refused with `auth`.

use fe2o3_amqp::frames::sasl::Frame;
use fe2o3_amqp_types::sasl::{SaslCode, SaslOutcome};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{AmqpContext, ConnectionState, HubSasl};
use fe2o3_amqp::acceptor::SaslAcceptor;
use fe2o3_amqp::acceptor::sasl_acceptor::SaslServerFrame;

/// The largest SASL frame read (a SAS token and an identity fit many times over).
const MAX_SASL_FRAME: u32 = 64 * 1024;

/// The SASL protocol header.
const SASL_HEADER: &[u8; 8] = b"AMQP\x03\x01\x00\x00";

/// Runs the SASL exchange on `io` (positioned at the client's SASL protocol header). `Ok`
/// once the outcome `ok` is sent: the client goes on with the plain AMQP header. `Err` with
/// why when the exchange failed or the client was refused (after the outcome is sent).
pub(super) async fn negotiate<S>(
    io: &mut S,
    sasl: &mut HubSasl,
    state: &ConnectionState,
    context: &AmqpContext,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut header = [0u8; 8];
    io.read_exact(&mut header)
        .await
        .map_err(|e| format!("no SASL header: {e}"))?;
    if &header != SASL_HEADER {
        return Err("not an AMQP 1.0 SASL header".into());
    }
    io.write_all(SASL_HEADER).await.map_err(|e| e.to_string())?;
    let mechanisms = Frame::Mechanisms(fe2o3_amqp_types::sasl::SaslMechanisms {
        sasl_server_mechanisms: sasl.mechanisms(),
    });
    write_frame(io, &mechanisms).await?;
    let answer = match read_frame(io).await? {
        // DPS's TPM mechanism takes several challenges (`sasl_tpm`).
        Frame::Init(init) if init.mechanism.as_str() == "TPM" => {
            SaslServerFrame::Outcome(super::sasl_tpm::exchange(io, init, state, context).await?)
        }
        Frame::Init(init) => sasl.on_init(init),
        Frame::Response(response) => sasl.on_response(response),
        _ => SaslServerFrame::Outcome(SaslOutcome {
            code: SaslCode::Sys,
            additional_data: None,
        }),
    };
    let mut outcome = match answer {
        SaslServerFrame::Outcome(outcome) => outcome,
        // No mechanism offered here sends challenges.
        SaslServerFrame::Challenge(_) => SaslOutcome {
            code: SaslCode::Sys,
            additional_data: None,
        },
    };
    let mut refused = None;
    if matches!(outcome.code, SaslCode::Ok)
        && let Err(why) = super::dps::check_plain(state, context).await
    {
        outcome = SaslOutcome {
            code: SaslCode::Auth,
            additional_data: Some(why.clone().into_bytes().into()),
        };
        refused = Some(format!("SASL PLAIN refused for a DPS device: {why}"));
    }
    let ok = matches!(outcome.code, SaslCode::Ok);
    let code = format!("{:?}", outcome.code);
    write_frame(io, &Frame::Outcome(outcome)).await?;
    match (ok, refused) {
        (true, _) => Ok(()),
        (false, Some(why)) => Err(why),
        (false, None) => Err(format!("SASL refused ({code})")),
    }
}

/// Writes one SASL frame.
pub(super) async fn write_frame<S: AsyncWrite + Unpin>(
    io: &mut S,
    frame: &Frame,
) -> Result<(), String> {
    let body = serde_amqp::to_vec(frame).map_err(|e| format!("a SASL frame: {e}"))?;
    let size = u32::try_from(body.len() + 8).map_err(|_| "a SASL frame too large".to_owned())?;
    let mut bytes = Vec::with_capacity(body.len() + 8);
    bytes.extend_from_slice(&size.to_be_bytes());
    // doff 2, type 1 (SASL), channel ignored.
    bytes.extend_from_slice(&[2, 1, 0, 0]);
    bytes.extend_from_slice(&body);
    io.write_all(&bytes).await.map_err(|e| e.to_string())?;
    io.flush().await.map_err(|e| e.to_string())
}

/// Reads one SASL frame (at most [`MAX_SASL_FRAME`] bytes).
pub(super) async fn read_frame<S: AsyncRead + Unpin>(io: &mut S) -> Result<Frame, String> {
    let mut header = [0u8; 8];
    io.read_exact(&mut header)
        .await
        .map_err(|e| format!("no SASL frame: {e}"))?;
    let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if !(8..=MAX_SASL_FRAME).contains(&size) {
        return Err(format!(
            "a SASL frame of {size} bytes (8 to {MAX_SASL_FRAME})"
        ));
    }
    if header[5] != 1 {
        return Err("an AMQP frame where a SASL frame was expected".into());
    }
    let extended = (usize::from(header[4]) * 4).saturating_sub(8);
    let mut body = vec![0u8; size as usize - 8];
    io.read_exact(&mut body)
        .await
        .map_err(|e| format!("a SASL frame cut short: {e}"))?;
    let body = body
        .get(extended..)
        .ok_or_else(|| "a SASL frame whose data offset is past its end".to_owned())?;
    serde_amqp::from_slice(body).map_err(|e| format!("a SASL frame that cannot be read: {e}"))
}
