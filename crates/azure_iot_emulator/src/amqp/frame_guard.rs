//! Checks every AMQP frame header a client sends before the AMQP library decodes it.
//!
//! fe2o3-amqp 0.18.4's frame decoder panics on a frame whose size field is below the 8-byte
//! header (`advance out of bounds`): one unauthenticated frame after the protocol header was
//! enough to panic a server task, and under a `panic = "abort"` build the whole emulator. The
//! guard follows the byte stream as it passes (protocol headers, then frames, then another
//! protocol header after SASL) and ends the stream with an `InvalidData` error, which the
//! library reports as a failed connection, on a header that is not well formed:
//!
//! * size below 8, or above [`MAX_FRAME`] (AMQP 1.0 §2.3.1: the size includes the header);
//! * data offset below 2 (doff counts 4-byte words and the header is 8 bytes) or past the end
//!   of the frame.
//!
//! A protocol header is the 8 bytes `AMQP` `id` `1` `0` `0`; anything starting with `AMQP`
//! at a frame boundary is one (a frame that large, `0x414d5150` bytes, is refused anyway).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest frame accepted before the library's own negotiated limit applies.
pub(crate) const MAX_FRAME: u32 = 4 * 1024 * 1024;

/// Where the guard is in the byte stream.
#[derive(Debug, Clone, Copy)]
enum At {
    /// Collecting the 8 bytes of a frame header or protocol header.
    Boundary { header: [u8; 8], have: usize },
    /// Inside a frame body, this many bytes left.
    Body(u32),
}

/// `inner`, whose frame headers are checked as they are read.
#[derive(Debug)]
pub(crate) struct FrameGuard<S> {
    inner: S,
    at: At,
}

impl<S> FrameGuard<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            at: At::Boundary {
                header: [0; 8],
                have: 0,
            },
        }
    }

    /// Follows `bytes` through the stream; `Err` names the first malformed header.
    fn follow(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        while !bytes.is_empty() {
            match &mut self.at {
                At::Body(left) => {
                    let n = (*left as usize).min(bytes.len());
                    bytes = &bytes[n..];
                    *left -= n as u32;
                    if *left == 0 {
                        self.at = At::Boundary {
                            header: [0; 8],
                            have: 0,
                        };
                    }
                }
                At::Boundary { header, have } => {
                    let n = (8 - *have).min(bytes.len());
                    header[*have..*have + n].copy_from_slice(&bytes[..n]);
                    *have += n;
                    bytes = &bytes[n..];
                    if *have < 8 {
                        continue;
                    }
                    let header = *header;
                    self.at = At::Boundary {
                        header: [0; 8],
                        have: 0,
                    };
                    if &header[..4] == b"AMQP" {
                        continue;
                    }
                    let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
                    let doff = u32::from(header[4]);
                    if !(8..=MAX_FRAME).contains(&size) {
                        return Err(format!("an AMQP frame of {size} bytes (8 to {MAX_FRAME})"));
                    }
                    if doff < 2 || doff * 4 > size {
                        return Err(format!(
                            "an AMQP frame with data offset {doff} and size {size}"
                        ));
                    }
                    if size > 8 {
                        self.at = At::Body(size - 8);
                    }
                }
            }
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let fresh = buf.filled()[before..].to_vec();
            if let Err(what) = self.follow(&fresh) {
                buf.set_filled(before);
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("refused {what}"),
                )));
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SASL_HEADER: &[u8] = b"AMQP\x03\x01\x00\x00";
    const AMQP_HEADER: &[u8] = b"AMQP\x00\x01\x00\x00";

    fn frame(size: u32, doff: u8) -> Vec<u8> {
        let mut f = size.to_be_bytes().to_vec();
        f.extend_from_slice(&[doff, 0, 0, 0]);
        f.resize(size.max(8) as usize, 0xab);
        f
    }

    fn follow_in_pieces(bytes: &[u8], piece: usize) -> Result<(), String> {
        let mut guard = FrameGuard::new(());
        bytes.chunks(piece).try_for_each(|c| guard.follow(c))
    }

    #[test]
    fn well_formed_streams_pass_in_any_pieces() {
        let mut stream = SASL_HEADER.to_vec();
        stream.extend(frame(40, 2));
        stream.extend(frame(8, 2)); // an empty frame (heartbeat)
        stream.extend_from_slice(AMQP_HEADER);
        stream.extend(frame(300, 2));
        stream.extend(frame(64, 4));
        for piece in [1, 3, 7, 8, 64, stream.len()] {
            assert_eq!(
                follow_in_pieces(&stream, piece),
                Ok(()),
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn malformed_headers_are_refused() {
        for (size, doff) in [
            (4, 2),
            (0, 2),
            (7, 2),
            (40, 1),
            (40, 0),
            (16, 5),
            (MAX_FRAME + 1, 2),
        ] {
            let mut stream = AMQP_HEADER.to_vec();
            stream.extend_from_slice(&size.to_be_bytes());
            stream.extend_from_slice(&[doff, 0, 0, 0]);
            assert!(
                follow_in_pieces(&stream, 1).is_err(),
                "size {size} doff {doff}"
            );
        }
    }

    #[tokio::test]
    async fn a_read_of_a_bad_frame_is_an_invalid_data_error() {
        use tokio::io::AsyncReadExt;
        let mut stream = AMQP_HEADER.to_vec();
        stream.extend_from_slice(&[0, 0, 0, 4, 2, 0, 0, 0]);
        let mut guard = FrameGuard::new(stream.as_slice());
        let mut out = Vec::new();
        let err = guard.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }
}
