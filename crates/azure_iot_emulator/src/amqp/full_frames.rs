//! Writes every performative the emulator sends with all of its fields.
//!
//! fe2o3 (through serde_amqp) leaves out a performative's trailing null fields, as AMQP 1.0
//! allows. pyamqp — the transport of the Event Hubs Python SDK — reads performatives by
//! position (`frame[9]` of an `open`, `frame[7]` of a `begin`, `frame[13]` of an `attach`, the
//! payload of a `transfer` at `frame[11]`) and fails on a shorter list, since Azure's services
//! always send every field. This writer follows the bytes fe2o3 writes and pads each
//! performative's list with nulls up to the performative's arity; everything else (protocol
//! headers, SASL frames, empty frames, payloads) passes unchanged.
//!
//! It holds at most what one write of fe2o3's brings plus one unfinished frame: it accepts new
//! bytes only once the padded ones before them are written.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The number of fields of the performative with descriptor `code` (AMQP 1.0 §2.7).
fn arity(code: u64) -> Option<u32> {
    Some(match code {
        0x10 => 10,       // open
        0x11 => 8,        // begin
        0x12 => 14,       // attach
        0x13 => 11,       // flow
        0x14 => 11,       // transfer
        0x15 => 6,        // disposition
        0x16 => 3,        // detach
        0x17 | 0x18 => 1, // end, close
        _ => return None,
    })
}

/// `frame` (one whole frame) with its performative padded to full arity; `None` to send it
/// as it is.
pub(crate) fn pad(frame: &[u8]) -> Option<Vec<u8>> {
    let doff = usize::from(*frame.get(4)?) * 4;
    if *frame.get(5)? != 0 || doff < 8 {
        return None;
    }
    let body = frame.get(doff..)?;
    let (code, descriptor_len) = match body {
        [0x00, 0x53, code, ..] => (u64::from(*code), 3),
        [0x00, 0x80, rest @ ..] => (u64::from_be_bytes(rest.get(..8)?.try_into().ok()?), 10),
        _ => return None,
    };
    let arity = arity(code)?;
    let list = body.get(descriptor_len..)?;
    let (count, elements, list_len) = match list {
        [0x45, ..] => (0u32, &list[1..1], 1),
        [0xc0, size, count, ..] => {
            let end = 2 + usize::from(*size);
            (u32::from(*count), list.get(3..end)?, end)
        }
        [0xd0, ..] => {
            let size = u32::from_be_bytes(list.get(1..5)?.try_into().ok()?) as usize;
            let count = u32::from_be_bytes(list.get(5..9)?.try_into().ok()?);
            let end = 5usize.checked_add(size)?;
            (count, list.get(9..end)?, end)
        }
        _ => return None,
    };
    if count >= arity {
        return None;
    }
    let missing = (arity - count) as usize;
    let content = elements.len() + missing;
    let mut out = Vec::with_capacity(frame.len() + missing + 9);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(frame.get(4..doff)?);
    out.extend_from_slice(body.get(..descriptor_len)?);
    if content < 255 {
        out.push(0xc0);
        out.push(u8::try_from(content + 1).ok()?);
        out.push(u8::try_from(arity).ok()?);
    } else {
        out.push(0xd0);
        out.extend_from_slice(&u32::try_from(content + 4).ok()?.to_be_bytes());
        out.extend_from_slice(&arity.to_be_bytes());
    }
    out.extend_from_slice(elements);
    out.extend(std::iter::repeat_n(0x40, missing));
    out.extend_from_slice(list.get(list_len..)?);
    let size = u32::try_from(out.len()).ok()?;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Some(out)
}

/// A stream whose writes have their performatives padded (see the module docs); reads pass
/// through.
#[derive(Debug)]
pub(crate) struct FullFrames<S> {
    inner: S,
    /// Bytes written to us that do not make a whole frame yet.
    input: Vec<u8>,
    /// Padded bytes not yet written to `inner`, from `sent` on.
    output: Vec<u8>,
    sent: usize,
}

impl<S> FullFrames<S> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
        }
    }

    /// Moves every whole frame (or protocol header) of `input` to `output`, padded.
    fn process(&mut self) {
        let mut at = 0;
        loop {
            let rest = &self.input[at..];
            if rest.len() < 8 {
                break;
            }
            if rest.starts_with(b"AMQP") {
                self.output.extend_from_slice(&rest[..8]);
                at += 8;
                continue;
            }
            let size = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if size < 8 {
                // Not a frame the library would write: passed on as it is, unchanged.
                self.output.extend_from_slice(rest);
                at = self.input.len();
                break;
            }
            let Some(frame) = rest.get(..size) else { break };
            match pad(frame) {
                Some(padded) => self.output.extend_from_slice(&padded),
                None => self.output.extend_from_slice(frame),
            }
            at += size;
        }
        self.input.drain(..at);
    }
}

impl<S: AsyncWrite + Unpin> FullFrames<S> {
    /// Writes `output` to `inner` until it is all written or `inner` is not ready.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.sent < self.output.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.output[self.sent..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.output.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FullFrames<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FullFrames<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        // New bytes only once the earlier ones are out: what is held stays bounded.
        match this.drain(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map(|r| r.map(|()| 0)),
        }
        this.input.extend_from_slice(buf);
        this.process();
        // Start writing; what does not go now goes at the next write or flush.
        if let Poll::Ready(Err(e)) = this.drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match this.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match this.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A frame of `body` on channel 0.
    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&[2, 0, 0, 0]);
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn a_short_performative_is_padded_to_its_arity() {
        // close with no fields (list0) → one null field.
        assert_eq!(
            pad(&frame(&[0x00, 0x53, 0x18, 0x45])),
            Some(frame(&[0x00, 0x53, 0x18, 0xc0, 0x02, 0x01, 0x40]))
        );
        // begin with 4 fields (remote-channel null, 3 uints) → 8.
        let begin = [0x00, 0x53, 0x11, 0xc0, 0x05, 0x04, 0x40, 0x43, 0x43, 0x43];
        let padded = pad(&frame(&begin)).unwrap();
        assert_eq!(
            &padded[8..],
            &[
                0x00, 0x53, 0x11, 0xc0, 0x09, 0x08, 0x40, 0x43, 0x43, 0x43, 0x40, 0x40, 0x40, 0x40
            ]
        );
        // A transfer keeps its payload after the padded list.
        let transfer = [0x00, 0x53, 0x14, 0xc0, 0x02, 0x01, 0x43, 0xaa, 0xbb];
        let padded = pad(&frame(&transfer)).unwrap();
        assert_eq!(padded.len(), frame(&transfer).len() + 10);
        assert_eq!(&padded[padded.len() - 2..], &[0xaa, 0xbb]);
        assert_eq!(padded[13], 11, "count");
        // list32 stays list32-sized when it must.
        let big: Vec<u8> = [0x00, 0x53, 0x12, 0xd0]
            .into_iter()
            .chain(262u32.to_be_bytes())
            .chain(2u32.to_be_bytes())
            .chain([0xa1, 0xff])
            .chain([0x61; 255])
            .chain([0x43])
            .collect();
        let f = frame(&big);
        let padded = pad(&f).unwrap();
        assert_eq!(padded.len(), f.len() + 12);
        assert_eq!(padded[11], 0xd0);
    }

    #[test]
    fn other_frames_pass_unchanged() {
        // Full already, SASL, empty, unknown descriptor.
        let close = [0x00, 0x53, 0x18, 0xc0, 0x02, 0x01, 0x40];
        assert_eq!(pad(&frame(&close)), None);
        let mut sasl = frame(&[0x00, 0x53, 0x44, 0x45]);
        sasl[5] = 1;
        assert_eq!(pad(&sasl), None);
        assert_eq!(pad(&frame(&[])), None);
        assert_eq!(pad(&frame(&[0x00, 0x53, 0x70, 0x45])), None);
        assert_eq!(pad(&[0, 0, 0, 9, 2, 0, 0, 0, 0x00]), None);
    }

    #[tokio::test]
    async fn frames_split_across_writes_come_out_whole_and_padded() {
        let (client, server) = tokio::io::duplex(1024);
        let mut writer = FullFrames::new(server);
        let close = frame(&[0x00, 0x53, 0x18, 0x45]);
        let mut stream = b"AMQP\x00\x01\x00\x00".to_vec();
        stream.extend_from_slice(&close);
        stream.extend_from_slice(&close);
        for chunk in stream.chunks(3) {
            writer.write_all(chunk).await.unwrap();
        }
        writer.shutdown().await.unwrap();
        let mut got = Vec::new();
        let mut client = client;
        client.read_to_end(&mut got).await.unwrap();
        let padded = frame(&[0x00, 0x53, 0x18, 0xc0, 0x02, 0x01, 0x40]);
        let mut want = b"AMQP\x00\x01\x00\x00".to_vec();
        want.extend_from_slice(&padded);
        want.extend_from_slice(&padded);
        assert_eq!(got, want);
    }

    proptest::proptest! {
        #[test]
        fn any_frame_pads_or_passes_without_panicking(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = pad(&frame(&body));
        }
    }
}
