//! Checks every AMQP frame a client sends before the AMQP library decodes it.
//!
//! fe2o3-amqp 0.18.4's frame decoder panics on a frame whose size field is below the 8-byte
//! header (`advance out of bounds`), and its codec (serde_amqp) decodes AMQP values by
//! recursion with no depth limit, so a frame of nested lists (3 bytes a level) overflows a
//! tokio worker's stack, which aborts the whole process: either was one unauthenticated
//! frame away. The guard follows the byte stream (protocol headers, then frames, then another
//! protocol header after SASL), holds each frame back until the whole of it has arrived, and
//! releases it to the library only once it passes; otherwise it ends the stream with an
//! `InvalidData` error, which the library reports as a failed connection. A frame is refused
//! when:
//!
//! * its size is below 8, or above what the emulator negotiates, [`MAX_FRAME`] (AMQP 1.0
//!   §2.3.1: the size includes the header), or above 512 bytes (AMQP's MIN-MAX-FRAME-SIZE)
//!   before the connection's `open` has passed: the limits fe2o3 itself enforces, here before
//!   the guard buffers a byte of the frame;
//! * its data offset is below 2 (doff counts 4-byte words and the header is 8 bytes) or past
//!   the end of the frame;
//! * its AMQP values nest more than [`MAX_DEPTH`] deep (see [`super::depth`]): the
//!   performative, and the message sections a transfer carries. A message split over several
//!   transfer frames is measured as one stream, per session channel and link handle, until
//!   its last frame (or its link's `detach`, or its session's `end`), so nesting spread thin
//!   over many frames is refused too.
//!
//! A protocol header is the 8 bytes `AMQP` `id` `1` `0` `0`; anything starting with `AMQP`
//! at a frame boundary is one (a frame that large, `0x414d5150` bytes, is refused anyway).
//!
//! Memory: a frame in flight (at most [`MAX_FRAME`]) and, per multi-frame delivery in
//! progress, a scanner of at most [`MAX_DEPTH`] levels; nothing while the connection is idle
//! between frames. Time: each byte is copied once more than before and looked at once by the
//! scanner (data fields are skipped whole), small beside TLS decryption of the same bytes.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::depth::{self, Scanner};

/// The largest frame: what the emulator negotiates, fe2o3's acceptor default (the
/// `ConnectionAcceptor`s in [`super::run`] keep it), which fe2o3's decoder enforces after
/// `open`.
pub(crate) const MAX_FRAME: u32 = fe2o3_amqp::connection::DEFAULT_MAX_FRAME_SIZE;

/// The largest frame before `open` has passed (SASL frames, `open` itself): AMQP's
/// MIN-MAX-FRAME-SIZE, which fe2o3's decoder enforces until then.
const MAX_FRAME_BEFORE_OPEN: u32 = 512;

/// How deeply a frame's AMQP values may nest. The SDKs' frames in `testdata/vectors` nest
/// at most 4 deep (an `attach`: described list, its target a described list, holding a
/// described or listed value); by the spec an IoT Hub exchange reaches about 7 (a source's
/// filter map of described values, a `rejected` outcome whose error carries an info map). 32
/// leaves room for any client's extensions and is far below what overflows a stack:
/// serde_amqp's decoding of one level takes hundreds of bytes of stack in release builds, a
/// few kilobytes in debug builds, and a tokio worker has 2 MiB.
pub(crate) const MAX_DEPTH: usize = 32;

/// Multi-frame deliveries a connection may have in progress at once (one per link at most).
const MAX_PARTIAL_DELIVERIES: usize = 1024;

/// Where the guard is in the byte stream.
#[derive(Debug)]
enum At {
    /// Collecting the 8 bytes of a frame header or protocol header.
    Boundary { header: [u8; 8], have: usize },
    /// Inside a frame: `frame` holds it from its header on, `left` bytes are still to come.
    Body { frame: Vec<u8>, left: u32 },
}

/// `inner`, whose frames are checked before they are read.
#[derive(Debug)]
pub(crate) struct FrameGuard<S> {
    inner: S,
    at: At,
    /// Whether the last protocol header was AMQP's (id 0), not SASL's.
    amqp: bool,
    /// Whether a frame (the `open`) has passed since that header.
    opened: bool,
    /// Checked bytes the reader has not read yet, from `delivered` on.
    ready: Vec<u8>,
    delivered: usize,
    /// The message of each multi-frame delivery in progress, by session channel and link
    /// handle, measured so far.
    partial: HashMap<(u16, u32), Partial>,
}

/// A delivery split over transfer frames, in progress.
#[derive(Debug)]
struct Partial {
    /// Its delivery tag, as its first frame gave it.
    tag: Option<Vec<u8>>,
    /// Its message, measured so far.
    scanner: Scanner,
}

impl<S> FrameGuard<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            at: At::Boundary {
                header: [0; 8],
                have: 0,
            },
            amqp: false,
            opened: false,
            ready: Vec::new(),
            delivered: 0,
            partial: HashMap::new(),
        }
    }

    /// Follows `bytes` through the stream, moving each protocol header and frame into `ready`
    /// once it is whole and checked; `Err` names the first one refused.
    fn follow(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        while !bytes.is_empty() {
            match &mut self.at {
                At::Body { frame, left } => {
                    let n = (*left as usize).min(bytes.len());
                    frame.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    *left -= n as u32;
                    if *left == 0 {
                        let frame = std::mem::take(frame);
                        self.at = At::Boundary {
                            header: [0; 8],
                            have: 0,
                        };
                        self.check(&frame)?;
                        self.release(frame);
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
                        self.amqp = header[4] == 0;
                        self.opened = false;
                        self.ready.extend_from_slice(&header);
                        continue;
                    }
                    let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
                    let doff = u32::from(header[4]);
                    let max = if self.opened {
                        MAX_FRAME
                    } else {
                        MAX_FRAME_BEFORE_OPEN
                    };
                    if !(8..=max).contains(&size) {
                        return Err(format!("an AMQP frame of {size} bytes (8 to {max})"));
                    }
                    if doff < 2 || doff * 4 > size {
                        return Err(format!(
                            "an AMQP frame with data offset {doff} and size {size}"
                        ));
                    }
                    if size == 8 {
                        // An empty frame (a heartbeat): nothing to measure.
                        self.ready.extend_from_slice(&header);
                        continue;
                    }
                    if self.amqp {
                        self.opened = true;
                    }
                    let mut frame = Vec::with_capacity(size as usize);
                    frame.extend_from_slice(&header);
                    self.at = At::Body {
                        frame,
                        left: size - 8,
                    };
                }
            }
        }
        Ok(())
    }

    /// Hands a checked frame to the reader.
    fn release(&mut self, frame: Vec<u8>) {
        if self.ready.is_empty() {
            self.ready = frame;
        } else {
            self.ready.extend_from_slice(&frame);
        }
    }

    /// Measures the nesting of a whole frame (header checked): `Err` says why it is refused.
    fn check(&mut self, frame: &[u8]) -> Result<(), String> {
        let refused = |e: depth::DepthError| format!("an AMQP frame whose {e}");
        let [_, _, _, _, doff, kind, c0, c1, ..] = *frame else {
            return Ok(());
        };
        let body = frame.get(usize::from(doff) * 4..).unwrap_or_default();
        if kind != 0 {
            // SASL (or a type fe2o3 refuses): values only.
            return depth::nesting_depth(body, MAX_DEPTH).map_err(refused);
        }
        let Some(len) = depth::value_len(body, MAX_DEPTH) else {
            // Not one whole performative that nests at most MAX_DEPTH: measure what is there,
            // and leave the rest to the decoder.
            return depth::nesting_depth(body, MAX_DEPTH).map_err(refused);
        };
        let (performative, payload) = body.split_at(len);
        let channel = u16::from_be_bytes([c0, c1]);
        match Performative::of(performative) {
            Performative::Transfer {
                handle,
                tag,
                more,
                aborted,
                resume,
            } => {
                if resume {
                    // fe2o3 ignores a resumed transfer it cannot place, or starts a delivery
                    // with it: the guard could not tell which stream its payload joins.
                    return Err("a resumed AMQP transfer: link recovery is not offered".to_owned());
                }
                let key = (channel, handle);
                let Some(partial) = self.partial.remove(&key) else {
                    if aborted {
                        // Its payload is ignored.
                        return Ok(());
                    }
                    let mut scanner = Scanner::new(MAX_DEPTH);
                    scanner.feed(payload).map_err(refused)?;
                    if more {
                        if self.partial.len() >= MAX_PARTIAL_DELIVERIES {
                            return Err(format!(
                                "an AMQP transfer: {MAX_PARTIAL_DELIVERIES} deliveries split \
                                 over frames in progress at once"
                            ));
                        }
                        self.partial.insert(key, Partial { tag, scanner });
                    }
                    return Ok(());
                };
                // As fe2o3 does: a frame without a tag or with the delivery's continues it;
                // an aborted one ends it (its payload ignored); one with another tag makes
                // fe2o3 detach the link, which decodes nothing more.
                let continues = tag.is_none() || tag == partial.tag;
                if aborted || !continues {
                    return depth::nesting_depth(payload, MAX_DEPTH).map_err(refused);
                }
                let Partial { tag, mut scanner } = partial;
                scanner
                    .feed(payload)
                    .map_err(|e| format!("an AMQP transfer whose message has {e}"))?;
                if more {
                    self.partial.insert(key, Partial { tag, scanner });
                }
            }
            Performative::Link { handle } => {
                // A link attached or detached on the handle: no delivery in progress on it.
                self.partial.remove(&(channel, handle));
            }
            Performative::End => self.partial.retain(|(c, _), _| *c != channel),
            Performative::Other => {
                depth::nesting_depth(payload, MAX_DEPTH).map_err(refused)?;
            }
        }
        if self.partial.is_empty() {
            // Free what finished deliveries left behind.
            self.partial = HashMap::new();
        }
        Ok(())
    }
}

/// What the guard needs to know of a performative.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Performative {
    /// `transfer` on link `handle` of delivery `tag` (if given); `more` frames of its delivery
    /// follow unless `aborted`; `resume`d for link recovery.
    Transfer {
        handle: u32,
        tag: Option<Vec<u8>>,
        more: bool,
        aborted: bool,
        resume: bool,
    },
    /// `attach` or `detach` of link `handle`.
    Link { handle: u32 },
    /// `end` of the session.
    End,
    /// Any other, or one the guard cannot read (then the decoder refuses it).
    Other,
}

impl Performative {
    /// Reads the described list `bytes` (one whole value, nesting checked).
    fn of(bytes: &[u8]) -> Self {
        Self::read(bytes).unwrap_or(Self::Other)
    }

    fn read(bytes: &[u8]) -> Option<Self> {
        // The descriptor: every encoding serde_amqp accepts for one.
        let (code, list) = match bytes {
            [0x00, 0x53, code, rest @ ..] => (u64::from(*code), rest),
            [0x00, 0x80, rest @ ..] => {
                let (code, rest) = rest.split_first_chunk::<8>()?;
                (u64::from_be_bytes(*code), rest)
            }
            [0x00, 0xa3, n, rest @ ..] => symbolic(rest, usize::from(*n))?,
            [0x00, 0xb3, rest @ ..] => {
                let (n, rest) = rest.split_first_chunk::<4>()?;
                symbolic(rest, usize::try_from(u32::from_be_bytes(*n)).ok()?)?
            }
            _ => return None,
        };
        Some(match code {
            0x14 => {
                let fields = Fields::of(list)?;
                Self::Transfer {
                    handle: uint(fields.get(0)?)?,
                    tag: match fields.get(2) {
                        None => None,
                        Some(tag) => Some(binary(tag)?.to_vec()),
                    },
                    more: fields.get(5).map_or(Some(false), boolean)?,
                    aborted: fields.get(8).map_or(Some(false), boolean)?,
                    resume: fields.get(9).map_or(Some(false), boolean)?,
                }
            }
            0x12 => Self::Link {
                handle: uint(Fields::of(list)?.get(1)?)?,
            },
            0x16 => Self::Link {
                handle: uint(Fields::of(list)?.get(0)?)?,
            },
            0x17 => Self::End,
            _ => Self::Other,
        })
    }
}

/// The code of a performative's symbolic descriptor (`n` bytes at the start of `bytes`) and
/// what follows it.
fn symbolic(bytes: &[u8], n: usize) -> Option<(u64, &[u8])> {
    let name = bytes.get(..n)?;
    let code = match name {
        b"amqp:attach:list" => 0x12,
        b"amqp:transfer:list" => 0x14,
        b"amqp:detach:list" => 0x16,
        b"amqp:end:list" => 0x17,
        _ => 0,
    };
    Some((code, bytes.get(n..)?))
}

/// The fields of an encoded list.
struct Fields<'a> {
    fields: Vec<&'a [u8]>,
}

impl<'a> Fields<'a> {
    /// The first ten fields (all the guard reads) of the list at the start of `bytes`.
    fn of(bytes: &'a [u8]) -> Option<Self> {
        let (count, mut rest) = match bytes {
            [0x45, ..] => (0, &[][..]),
            [0xc0, _size, count, rest @ ..] => (usize::from(*count), rest),
            [0xd0, rest @ ..] => {
                let (_size, rest) = rest.split_first_chunk::<4>()?;
                let (count, rest) = rest.split_first_chunk::<4>()?;
                (usize::try_from(u32::from_be_bytes(*count)).ok()?, rest)
            }
            _ => return None,
        };
        let mut fields = Vec::new();
        for _ in 0..count.min(10) {
            let len = depth::value_len(rest, MAX_DEPTH)?;
            let (field, after) = rest.split_at(len);
            fields.push(field);
            rest = after;
        }
        Some(Self { fields })
    }

    /// Field `i`, `None` if the list is shorter or the field is null.
    fn get(&self, i: usize) -> Option<&'a [u8]> {
        self.fields.get(i).copied().filter(|f| *f != [0x40])
    }
}

/// A `uint` field.
fn uint(field: &[u8]) -> Option<u32> {
    match field {
        [0x43] => Some(0),
        [0x52, b] => Some(u32::from(*b)),
        [0x70, a, b, c, d] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// The bytes of a `binary` field.
fn binary(field: &[u8]) -> Option<&[u8]> {
    match field {
        [0xa0, _, data @ ..] => Some(data),
        [0xb0, _, _, _, _, data @ ..] => Some(data),
        _ => None,
    }
}

/// A `boolean` field.
fn boolean(field: &[u8]) -> Option<bool> {
    match field {
        [0x41] | [0x56, 1] => Some(true),
        [0x42] | [0x56, 0] => Some(false),
        _ => None,
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.delivered < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.delivered);
                buf.put_slice(&this.ready[this.delivered..this.delivered + n]);
                this.delivered += n;
                if this.delivered == this.ready.len() {
                    // Nothing kept between frames.
                    this.ready = Vec::new();
                    this.delivered = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // Read into the caller's buffer, then take the bytes back: they are handed over
            // (from `ready`) once their frame is whole and checked.
            let before = buf.filled().len();
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            if buf.filled().len() == before {
                // The end of the stream (mid-frame or not: the library sees it end).
                return Poll::Ready(Ok(()));
            }
            let followed = this.follow(&buf.filled()[before..]);
            buf.set_filled(before);
            if let Err(what) = followed {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("refused {what}"),
                )));
            }
        }
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
    /// An AMQP frame of type `kind` on `channel` with `body`.
    fn typed_frame(kind: u8, channel: u16, body: &[u8]) -> Vec<u8> {
        let mut f = u32::try_from(body.len() + 8)
            .unwrap()
            .to_be_bytes()
            .to_vec();
        f.extend_from_slice(&[2, kind]);
        f.extend_from_slice(&channel.to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    /// `depth` nested `list8`s, one element each, the innermost empty.
    fn nested(depth: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..depth {
            out.extend_from_slice(&[0xc0, 0xff, 1]);
        }
        out.push(0x45);
        out
    }

    fn open() -> Vec<u8> {
        typed_frame(0, 0, &[0x00, 0x53, 0x10, 0xc0, 3, 1, 0xa1, 1, b'x'])
    }

    /// A `begin` whose `properties` map holds `value` under the key `k`.
    fn begin(value: &[u8]) -> Vec<u8> {
        let mut map = vec![0xd1];
        map.extend_from_slice(&u32::try_from(value.len() + 7).unwrap().to_be_bytes());
        map.extend_from_slice(&2u32.to_be_bytes());
        map.extend_from_slice(&[0xa3, 1, b'k']);
        map.extend_from_slice(value);
        let mut fields = vec![0x40, 0x43, 0x43, 0x43, 0x40, 0x40, 0x40];
        fields.extend(map);
        let mut body = vec![0x00, 0x53, 0x11, 0xd0];
        body.extend_from_slice(&u32::try_from(fields.len() + 4).unwrap().to_be_bytes());
        body.extend_from_slice(&8u32.to_be_bytes());
        body.extend(fields);
        typed_frame(0, 0, &body)
    }

    /// A transfer on `channel`, link `handle`, carrying `payload`.
    fn transfer(channel: u16, handle: u8, more: bool, payload: &[u8]) -> Vec<u8> {
        let more = if more { 0x41 } else { 0x42 };
        let mut body = vec![
            0x00, 0x53, 0x14, 0xc0, 8, 6, 0x52, handle, 0x43, 0x40, 0x43, 0x42, more,
        ];
        body.extend_from_slice(payload);
        typed_frame(0, channel, &body)
    }

    fn after_open(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut stream = AMQP_HEADER.to_vec();
        stream.extend(open());
        frames.iter().for_each(|f| stream.extend_from_slice(f));
        stream
    }

    #[test]
    fn a_deeply_nested_performative_is_refused() {
        let shallow = after_open(&[begin(&nested(MAX_DEPTH - 3))]);
        for piece in [1, 5, shallow.len()] {
            let mut guard = FrameGuard::new(());
            shallow.chunks(piece).for_each(|c| guard.follow(c).unwrap());
            assert_eq!(guard.ready, shallow, "pieces of {piece}");
        }
        let deep = after_open(&[begin(&nested(MAX_DEPTH - 2))]);
        let err = follow_in_pieces(&deep, 7).unwrap_err();
        assert!(err.contains("nested more than 32"), "{err}");
        let deeper = after_open(&[begin(&nested(50_000))]);
        assert!(follow_in_pieces(&deeper, 4096).is_err());
    }

    #[test]
    fn a_deeply_nested_sasl_frame_is_refused() {
        let mut body = vec![0x00, 0x53, 0x41, 0xc0, 0xff, 3, 0xa3, 1, b'x'];
        body.extend(nested(40));
        let mut stream = SASL_HEADER.to_vec();
        stream.extend(typed_frame(1, 0, &body));
        assert!(follow_in_pieces(&stream, 3).is_err());
    }

    #[test]
    fn frames_before_open_are_at_most_512_bytes() {
        let big = typed_frame(0, 0, &[0x40; 600]);
        let mut stream = AMQP_HEADER.to_vec();
        stream.extend_from_slice(&big);
        assert!(follow_in_pieces(&stream, 64).is_err());
        let mut stream = SASL_HEADER.to_vec();
        stream.extend_from_slice(&big);
        assert!(follow_in_pieces(&stream, 64).is_err());
        assert_eq!(follow_in_pieces(&after_open(&[big]), 64), Ok(()));
    }

    #[test]
    fn a_message_is_measured_across_its_transfer_frames() {
        let mut message = vec![0x00, 0x53, 0x77];
        message.extend(nested(60));
        // 20 levels a frame: no frame nests deeply, the message does.
        let frames: Vec<Vec<u8>> = message
            .chunks(60)
            .enumerate()
            .map(|(i, piece)| transfer(0, 1, (i + 1) * 60 < message.len(), piece))
            .collect();
        let err = follow_in_pieces(&after_open(&frames), 100).unwrap_err();
        assert!(err.contains("transfer"), "{err}");

        // Two links' deliveries interleaved, each shallow: both pass, and nothing is kept.
        let mut shallow = vec![0x00, 0x53, 0x77];
        shallow.extend(nested(20));
        let pieces: Vec<&[u8]> = shallow.chunks(30).collect();
        let mut frames = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let more = i + 1 < pieces.len();
            frames.push(transfer(0, 1, more, piece));
            frames.push(transfer(0, 2, more, piece));
            frames.push(transfer(3, 1, more, piece));
        }
        let stream = after_open(&frames);
        let mut guard = FrameGuard::new(());
        guard.follow(&stream).unwrap();
        assert!(guard.partial.is_empty());
        assert_eq!(guard.partial.capacity(), 0);

        // A link detached mid-delivery: its next delivery starts afresh.
        let detach = typed_frame(0, 0, &[0x00, 0x53, 0x16, 0xc0, 4, 2, 0x52, 1, 0x41]);
        let stream = after_open(&[
            transfer(0, 1, true, &[0x00, 0x53, 0x77, 0xd0, 0, 0, 0, 9]),
            detach,
            transfer(0, 1, false, &shallow),
        ]);
        assert_eq!(follow_in_pieces(&stream, 9), Ok(()));
    }

    /// A transfer on channel 0, link 1: delivery `tag` (none if 0), `more`, then the
    /// optional fields from `rcv-settle-mode` on, then `payload`.
    fn tagged_transfer(tag: u8, more: bool, tail: &[u8], payload: &[u8]) -> Vec<u8> {
        let more = if more { 0x41 } else { 0x42 };
        let tag: &[u8] = if tag == 0 { &[0x40] } else { &[0xa0, 1, tag] };
        let fields = [&[0x52, 1, 0x40][..], tag, &[0x40, 0x40, more], tail].concat();
        let count = 6 + tail.len() as u8;
        let mut body = vec![0x00, 0x53, 0x14, 0xc0, fields.len() as u8 + 1, count];
        body.extend(fields);
        body.extend_from_slice(payload);
        typed_frame(0, 0, &body)
    }

    #[test]
    fn a_delivery_is_followed_as_fe2o3_follows_it() {
        // A data section whose binary claims 4 GiB: the rest of the delivery is its content.
        let blinding = [0x00, 0x53, 0x75, 0xb0, 0xff, 0xff, 0xff, 0xff];
        let mut deep = vec![0x00, 0x53, 0x77];
        deep.extend(nested(40));
        // A frame with another tag: fe2o3 detaches the link; the guard measures it afresh.
        let stream = after_open(&[
            tagged_transfer(1, true, &[], &blinding),
            tagged_transfer(2, true, &[], &deep),
        ]);
        assert!(follow_in_pieces(&stream, 64).is_err());
        // An aborted delivery is dropped: the next one on the link is measured afresh.
        let stream = after_open(&[
            tagged_transfer(1, true, &[], &blinding),
            tagged_transfer(0, false, &[0x40, 0x40, 0x41], &[]),
            tagged_transfer(2, false, &[], &deep),
        ]);
        assert!(follow_in_pieces(&stream, 64).is_err());
        // So is one whose link is attached again.
        let attach = typed_frame(
            0,
            0,
            &[0x00, 0x53, 0x12, 0xc0, 7, 3, 0xa1, 1, b'l', 0x52, 1, 0x41],
        );
        let stream = after_open(&[
            tagged_transfer(1, true, &[], &blinding),
            attach,
            tagged_transfer(2, false, &[], &deep),
        ]);
        assert!(follow_in_pieces(&stream, 64).is_err());
        // A continuation frame without a tag continues the delivery.
        let stream = after_open(&[
            tagged_transfer(1, true, &[], &blinding),
            tagged_transfer(0, false, &[], &deep),
        ]);
        assert_eq!(follow_in_pieces(&stream, 64), Ok(()));
        // A resumed transfer is refused: link recovery is not offered.
        let stream = after_open(&[tagged_transfer(
            1,
            false,
            &[0x40, 0x40, 0x42, 0x41],
            &[0x40],
        )]);
        let err = follow_in_pieces(&stream, 64).unwrap_err();
        assert!(err.contains("resumed"), "{err}");
    }

    #[tokio::test]
    async fn the_reader_gets_no_byte_of_a_refused_frame() {
        use tokio::io::AsyncReadExt;
        let good = after_open(&[begin(&[0x40])]);
        let mut stream = good.clone();
        stream.extend(begin(&nested(100)));
        let mut guard = FrameGuard::new(stream.as_slice());
        let mut got = Vec::new();
        let err = loop {
            let mut chunk = [0u8; 16];
            match guard.read(&mut chunk).await {
                Ok(0) => panic!("the stream ended without an error"),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(got, good);
        assert!(guard.ready.is_empty() && guard.ready.capacity() == 0);
    }

    /// Every frame the official SDKs sent and the capture's server answered
    /// (`testdata/vectors/amqp-*.jsonl`), each connection's direction as one stream, passes
    /// the guard unchanged, and every frame body the depth scan.
    #[test]
    fn every_golden_frame_passes() {
        let mut streams: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
        let mut frames = 0;
        for file in [
            "amqp-node-device.jsonl",
            "amqp-node-service.jsonl",
            "amqp-python-service.jsonl",
        ] {
            let path = format!(
                "{}/../../testdata/vectors/{file}",
                env!("CARGO_MANIFEST_DIR")
            );
            for line in std::fs::read_to_string(path).unwrap().lines() {
                let record: serde_json::Value = serde_json::from_str(line).unwrap();
                let Some(hex) = record["raw_hex"].as_str() else {
                    continue;
                };
                let bytes: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect();
                if &bytes[..4] != b"AMQP" {
                    frames += 1;
                    let doff = usize::from(bytes[4]) * 4;
                    assert_eq!(
                        depth::nesting_depth(&bytes[doff..], MAX_DEPTH),
                        Ok(()),
                        "{line}"
                    );
                }
                let key = format!(
                    "{file} {} {} {}",
                    record["flow"], record["conn"], record["direction"]
                );
                streams.entry(key).or_default().extend(bytes);
            }
        }
        assert!(frames > 200, "{frames} frames");
        for (key, stream) in &streams {
            for piece in [1, 13, stream.len()] {
                let mut guard = FrameGuard::new(());
                for chunk in stream.chunks(piece) {
                    guard.follow(chunk).unwrap_or_else(|e| panic!("{key}: {e}"));
                }
                assert_eq!(&guard.ready, stream, "{key}");
            }
        }
    }
}
