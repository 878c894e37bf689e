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
//!   of the frame;
//! * a body whose performative (the one described value it starts with) is not a well-formed
//!   AMQP encoding ([`check_value`]): every size within the bytes that contain it, every list
//!   or map no longer than its size allows, maps of key-value pairs, at most [`MAX_DEPTH`]
//!   levels deep;
//! * a message (the payloads of a delivery's transfers, put together as the library does
//!   before decoding it) that is not a sequence of such values; the deliveries in progress
//!   hold at most [`MAX_PENDING`] bytes.
//!
//! The guard also follows what the emulator writes: once it has sent `close`, reading ends
//! (end of stream) instead of waiting for the client's `close`. fe2o3 0.18.4's connection
//! engine, after sending `close`, spins on its closed session-frame channel until the client
//! answers, so a client that opened one session too many before its token (or let the
//! connect deadline pass) and then stayed silent held a core; found by the fuzz target.
//!
//! serde_amqp 0.18 adds 1 to a list's 32-bit count and takes 2 from a map's count per entry
//! (overflow panics on a count of `u32::MAX` or an odd one wherever overflow is checked: debug
//! builds and tests), and allocates a declared size before reading it; both found by the
//! `amqp_frames` fuzz target. A frame's body is buffered until it is complete, as the library
//! does anyway.
//!
//! A protocol header is the 8 bytes `AMQP` `id` `1` `0` `0`; anything starting with `AMQP`
//! at a frame boundary is one (a frame that large, `0x414d5150` bytes, is refused anyway).

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest frame accepted before the library's own negotiated limit applies.
pub(crate) const MAX_FRAME: u32 = 4 * 1024 * 1024;

/// How deeply a performative's values may nest (performatives nest four or five levels:
/// attach, source, filter map, described filter, value).
pub(crate) const MAX_DEPTH: usize = 32;

/// The most bytes of unfinished deliveries (transfers with `more` set) a connection may have
/// sent: what the guard, and the library, hold until each delivery's last transfer.
pub(crate) const MAX_PENDING: usize = 16 * 1024 * 1024;

/// Where the guard is in the byte stream.
#[derive(Debug, Clone, Copy)]
enum At {
    /// Collecting the 8 bytes of a frame header or protocol header.
    Boundary { header: [u8; 8], have: usize },
    /// Inside a frame body, this many bytes left; the extended header is this long; the
    /// frame's type (0 AMQP, 1 SASL) and channel.
    Body {
        left: u32,
        extended: usize,
        kind: u8,
        channel: u16,
    },
}

/// `inner`, whose frame headers are checked as they are read.
#[derive(Debug)]
pub(crate) struct FrameGuard<S> {
    inner: S,
    at: At,
    /// The body of the frame being read so far (extended header included).
    body: Vec<u8>,
    /// The payloads so far of unfinished deliveries, by channel and link handle.
    deliveries: HashMap<(u16, u32), Vec<u8>>,
    /// What the emulator writes, followed to see its `close`.
    written: Written,
    /// The reader waiting for bytes, woken when the emulator has sent `close`.
    reader: Option<std::task::Waker>,
}

/// Where the emulator's own output is: frame boundaries, and whether it has sent `close`.
#[derive(Debug, Default)]
struct Written {
    /// The header being collected (protocol or frame) and how much of it there is.
    header: [u8; 8],
    have: usize,
    /// The start of the current frame's body (extended header and descriptor) so far.
    start: Vec<u8>,
    /// How much of the body start to collect, and how many body bytes are left.
    want: usize,
    left: usize,
    /// The frame is an AMQP (not SASL) frame.
    amqp: bool,
    /// A `close` performative has been written.
    closed: bool,
}

impl Written {
    /// Follows `bytes` of the emulator's output.
    fn follow(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.closed {
            if self.left > 0 {
                let n = self.left.min(bytes.len());
                let take = (self.want - self.start.len()).min(n);
                self.start.extend_from_slice(&bytes[..take]);
                bytes = &bytes[n..];
                self.left -= n;
                if self.amqp && self.start.len() == self.want && self.want >= 3 {
                    // The performative's descriptor: smallulong 0x18, close.
                    self.closed = self.start[self.want - 3..] == [0x00, 0x53, 0x18];
                    self.want = 0;
                }
                continue;
            }
            let n = (8 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < 8 {
                continue;
            }
            self.have = 0;
            if &self.header[..4] == b"AMQP" {
                continue;
            }
            let size = u32::from_be_bytes([
                self.header[0],
                self.header[1],
                self.header[2],
                self.header[3],
            ]) as usize;
            let extended = (usize::from(self.header[4]) * 4).saturating_sub(8);
            self.left = size.saturating_sub(8);
            self.want = (extended + 3).min(self.left);
            self.amqp = self.header[5] == 0;
            self.start.clear();
        }
    }
}

impl<S> FrameGuard<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            at: At::Boundary {
                header: [0; 8],
                have: 0,
            },
            body: Vec::new(),
            deliveries: HashMap::new(),
            written: Written::default(),
            reader: None,
        }
    }

    /// Follows `bytes` through the stream; `Err` names the first malformed header.
    fn follow(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        while !bytes.is_empty() {
            match &mut self.at {
                At::Body {
                    left,
                    extended,
                    kind,
                    channel,
                } => {
                    let (extended, kind, channel) = (*extended, *kind, *channel);
                    let n = (*left as usize).min(bytes.len());
                    self.body.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    *left -= n as u32;
                    if *left == 0 {
                        self.at = At::Boundary {
                            header: [0; 8],
                            have: 0,
                        };
                        let body = std::mem::take(&mut self.body);
                        self.check_body(&body[extended..], kind, channel)?;
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
                        self.at = At::Body {
                            left: size - 8,
                            extended: doff as usize * 4 - 8,
                            kind: header[5],
                            channel: u16::from_be_bytes([header[6], header[7]]),
                        };
                    }
                }
            }
        }
        Ok(())
    }
}

impl<S> FrameGuard<S> {
    /// A frame body after its extended header: empty (a heartbeat), or one well-formed value
    /// first (the performative); after a transfer's, a piece of its delivery's message,
    /// checked once the delivery's last transfer is in.
    fn check_body(&mut self, body: &[u8], kind: u8, channel: u16) -> Result<(), String> {
        if body.is_empty() {
            return Ok(());
        }
        let performative = check_value(body, 0)
            .map_err(|why| format!("an AMQP frame whose performative is malformed: {why}"))?;
        if kind != 0 {
            return Ok(());
        }
        let Some(transfer) = Transfer::read(&body[..performative]) else {
            return Ok(());
        };
        let payload = &body[performative..];
        let key = (channel, transfer.handle);
        if transfer.aborted {
            self.deliveries.remove(&key);
            return Ok(());
        }
        if transfer.more {
            let pending: usize = self.deliveries.values().map(Vec::len).sum();
            if pending + payload.len() > MAX_PENDING {
                return Err(format!(
                    "unfinished AMQP deliveries of more than {MAX_PENDING} bytes"
                ));
            }
            self.deliveries
                .entry(key)
                .or_default()
                .extend_from_slice(payload);
            return Ok(());
        }
        let message = match self.deliveries.remove(&key) {
            Some(mut earlier) => {
                earlier.extend_from_slice(payload);
                earlier
            }
            None => payload.to_vec(),
        };
        let mut rest = message.as_slice();
        while !rest.is_empty() {
            let n = check_value(rest, 0)
                .map_err(|why| format!("an AMQP message that is malformed: {why}"))?;
            rest = &rest[n..];
        }
        Ok(())
    }
}

/// What the guard needs of a transfer performative.
struct Transfer {
    /// The link handle (`u32::MAX` when it is not a uint: the library refuses the transfer).
    handle: u32,
    /// More transfers of this delivery follow.
    more: bool,
    /// The delivery is abandoned.
    aborted: bool,
}

impl Transfer {
    /// The transfer `performative` (already checked well formed) describes, if it is one.
    fn read(performative: &[u8]) -> Option<Self> {
        // 0x00, then the descriptor: smallulong, ulong or symbol.
        let rest = &performative[1..];
        let descriptor = check_value(rest, 1).ok()?;
        let is_transfer = match &rest[..descriptor] {
            [0x53, 0x14] => true,
            [0x80, code @ ..] => code == [0, 0, 0, 0, 0, 0, 0, 0x14],
            [0xa3, _, name @ ..] | [0xb3, _, _, _, _, name @ ..] => name == b"amqp:transfer:list",
            _ => false,
        };
        if !is_transfer {
            return None;
        }
        let list = &rest[descriptor..];
        let (width, count) = match list.first()? {
            0xc0 => (1, usize::from(*list.get(2)?)),
            0xd0 => (
                4,
                u32::from_be_bytes(list.get(5..9)?.try_into().ok()?) as usize,
            ),
            _ => (0, 0),
        };
        let mut fields = Vec::new();
        let mut elements = list.get(1 + 2 * width..)?;
        for _ in 0..count.min(10) {
            let n = check_value(elements, 1).ok()?;
            fields.push(&elements[..n]);
            elements = &elements[n..];
        }
        let uint = |field: Option<&&[u8]>| match field.copied() {
            Some([0x43]) => Some(0),
            Some([0x52, n]) => Some(u32::from(*n)),
            Some([0x70, a, b, c, d]) => Some(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => None,
        };
        let flag = |field: Option<&&[u8]>| match field.copied() {
            Some([0x41]) => true,
            Some([0x56, b]) => *b != 0,
            _ => false,
        };
        Some(Self {
            handle: uint(fields.first()).unwrap_or(u32::MAX),
            more: flag(fields.get(5)),
            aborted: flag(fields.get(9)),
        })
    }
}

/// Walks the one AMQP-encoded value at the start of `bytes` (AMQP 1.0 §1.6) and returns its
/// length; `Err` if it is not well formed: an unknown constructor, a size past the end of the
/// bytes that contain it, a list or map whose count its size cannot hold, elements that do not
/// fill their compound exactly, or more than [`MAX_DEPTH`] levels of nesting.
pub(crate) fn check_value(bytes: &[u8], depth: usize) -> Result<usize, String> {
    if depth > MAX_DEPTH {
        return Err(format!("values nested more than {MAX_DEPTH} deep"));
    }
    let Some((&code, _)) = bytes.split_first() else {
        return Err("a value cut short".to_owned());
    };
    if code == 0x00 {
        // Described: the descriptor, then the value it describes.
        let descriptor = check_value(&bytes[1..], depth + 1)?;
        let value = check_value(&bytes[1 + descriptor..], depth + 1)?;
        return Ok(1 + descriptor + value);
    }
    Ok(1 + check_encoding(code, &bytes[1..], depth)?)
}

/// The length of the bytes after constructor `code` at the start of `bytes`.
fn check_encoding(code: u8, bytes: &[u8], depth: usize) -> Result<usize, String> {
    let fixed = |n: usize| {
        if bytes.len() < n {
            Err(format!("a value of constructor {code:#04x} cut short"))
        } else {
            Ok(n)
        }
    };
    match code >> 4 {
        0x4 => Ok(0),
        0x5 => fixed(1),
        0x6 => fixed(2),
        0x7 => fixed(4),
        0x8 => fixed(8),
        0x9 => fixed(16),
        0xa | 0xb => {
            let width = if code >> 4 == 0xa { 1 } else { 4 };
            let size = read_size(code, bytes, width)?;
            fixed(width + size)
        }
        0xc | 0xd => {
            let width = if code >> 4 == 0xc { 1 } else { 4 };
            let (size, count) = compound_header(code, bytes, width)?;
            if code & 0x0f == 1 && count % 2 != 0 {
                return Err(format!(
                    "a map of {count} elements (keys and values pair up)"
                ));
            }
            let mut inner = &bytes[2 * width..width + size];
            for _ in 0..count {
                let n = check_value(inner, depth + 1)?;
                inner = &inner[n..];
            }
            if !inner.is_empty() {
                return Err(format!("a compound of {count} elements and {size} bytes"));
            }
            Ok(width + size)
        }
        0xe | 0xf => {
            let width = if code >> 4 == 0xe { 1 } else { 4 };
            let (size, count) = compound_header(code, bytes, width)?;
            let inner = &bytes[2 * width..width + size];
            check_array(inner, count, depth)?;
            Ok(width + size)
        }
        _ => Err(format!("no AMQP constructor {code:#04x}")),
    }
}

/// A size field of `width` bytes after constructor `code`: within the bytes that follow it.
fn read_size(code: u8, bytes: &[u8], width: usize) -> Result<usize, String> {
    let Some(field) = bytes.get(..width) else {
        return Err(format!("a value of constructor {code:#04x} cut short"));
    };
    let size = field.iter().fold(0usize, |n, b| n << 8 | usize::from(*b));
    if size > bytes.len() - width {
        return Err(format!(
            "a value of constructor {code:#04x} declaring {size} bytes of {} left",
            bytes.len() - width
        ));
    }
    Ok(size)
}

/// A compound's or array's size and count: the size within the bytes, and the count no more
/// than the bytes after it (every element takes at least one; an array of empty values such
/// as nulls longer than its bytes is refused too: no performative carries one, and the
/// decoder would make every element).
fn compound_header(code: u8, bytes: &[u8], width: usize) -> Result<(usize, usize), String> {
    let size = read_size(code, bytes, width)?;
    if size < width {
        return Err(format!(
            "a compound of {size} bytes, too short for its count"
        ));
    }
    let count = bytes[width..2 * width]
        .iter()
        .fold(0usize, |n, b| n << 8 | usize::from(*b));
    let room = size - width;
    if count > room {
        return Err(format!("{count} elements in {room} bytes"));
    }
    Ok((size, count))
}

/// An array's body: the element constructor (described or not), then `count` elements.
fn check_array(bytes: &[u8], count: usize, depth: usize) -> Result<(), String> {
    if depth + 1 > MAX_DEPTH {
        return Err(format!("values nested more than {MAX_DEPTH} deep"));
    }
    let mut rest = bytes;
    // The element constructor: a described one carries its descriptor once.
    let Some((&first, after)) = rest.split_first() else {
        return if count == 0 {
            Ok(())
        } else {
            Err("an array without its element constructor".to_owned())
        };
    };
    rest = after;
    let mut code = first;
    if first == 0x00 {
        let descriptor = check_value(rest, depth + 1)?;
        rest = &rest[descriptor..];
        let Some((&inner, after)) = rest.split_first() else {
            return Err("an array without its element constructor".to_owned());
        };
        code = inner;
        rest = after;
    }
    if code == 0x00 {
        return Err("an array of described constructors".to_owned());
    }
    let fixed = match code >> 4 {
        0x4 => Some(0),
        0x5 => Some(1),
        0x6 => Some(2),
        0x7 => Some(4),
        0x8 => Some(8),
        0x9 => Some(16),
        0xa..=0xf => None,
        _ => return Err(format!("no AMQP constructor {code:#04x}")),
    };
    match fixed {
        // Fixed-width elements: no loop over the count.
        Some(width) => {
            if count.checked_mul(width) != Some(rest.len()) {
                return Err(format!(
                    "an array of {count} elements of {width} bytes in {} bytes",
                    rest.len()
                ));
            }
        }
        None => {
            for _ in 0..count {
                let n = check_encoding(code, rest, depth + 1)?;
                rest = &rest[n..];
            }
            if !rest.is_empty() {
                return Err(format!("an array of {count} elements with bytes left over"));
            }
        }
    }
    Ok(())
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.written.closed {
            // The emulator has closed the connection: the end of the stream.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if polled.is_pending() {
            self.reader = Some(cx.waker().clone());
        }
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
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.written.follow(&buf[..n]);
            if self.written.closed
                && let Some(reader) = self.reader.take()
            {
                reader.wake();
            }
        }
        polled
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

    /// A frame of `size` bytes: its extended header, then (if there is room) a `close`
    /// performative and filler bytes standing for a message.
    fn frame(size: u32, doff: u8) -> Vec<u8> {
        let mut f = size.to_be_bytes().to_vec();
        f.extend_from_slice(&[doff, 0, 0, 0]);
        f.resize(usize::from(doff) * 4, 0);
        if size as usize >= f.len() + 4 {
            f.extend_from_slice(&[0x00, 0x53, 0x18, 0x45]);
        }
        f.resize(size.max(8) as usize, 0xab);
        f
    }

    /// A frame holding `body` after a plain header.
    fn frame_of(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32 + 8).to_be_bytes().to_vec();
        f.extend_from_slice(&[2, 0, 0, 0]);
        f.extend_from_slice(body);
        f
    }

    fn from_hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
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

    #[test]
    fn every_captured_frame_passes() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/vectors");
        let mut frames = 0;
        for file in [
            "amqp-node-device",
            "amqp-node-service",
            "amqp-python-service",
        ] {
            let text = std::fs::read_to_string(format!("{dir}/{file}.jsonl")).unwrap();
            for line in text.lines() {
                let record: serde_json::Value = serde_json::from_str(line).unwrap();
                let Some(hex) = record["raw_hex"].as_str() else {
                    continue;
                };
                let bytes = from_hex(hex);
                // Both directions: the SDKs' frames and the test server's.
                let mut stream = AMQP_HEADER.to_vec();
                stream.extend_from_slice(&bytes);
                assert_eq!(
                    follow_in_pieces(&stream, 7),
                    Ok(()),
                    "{file} {} {}",
                    record["flow"],
                    record["seq"]
                );
                frames += 1;
            }
        }
        assert!(frames > 200, "{frames} frames");
    }

    #[test]
    fn a_list_counting_more_than_its_bytes_is_refused() {
        // What the fuzz target found: an attach whose list32 counts u32::MAX fields in 65535
        // bytes (serde_amqp adds 1 to the count: an overflow panic in debug builds).
        let mut attach = from_hex("005312d00000ffffffffffff");
        attach.resize(8 + 4 + 0xffff, 0x40);
        let mut stream = AMQP_HEADER.to_vec();
        stream.extend(frame_of(&attach));
        let refused = follow_in_pieces(&stream, 64).unwrap_err();
        assert!(refused.contains("elements in"), "{refused}");
        // The same list counting what it holds passes.
        let mut attach = from_hex("005312d00000000800000004");
        attach.extend_from_slice(&[0x40; 4]);
        let mut stream = AMQP_HEADER.to_vec();
        stream.extend(frame_of(&attach));
        assert_eq!(follow_in_pieces(&stream, 3), Ok(()));
    }

    #[test]
    fn malformed_performatives_are_refused() {
        for (body, why) in [
            // A string declaring more bytes than the frame has.
            ("005310c00501a1ff6869", "declaring"),
            // A map of an odd count.
            ("005310c00601c103014040", "pair up"),
            // Elements that do not fill their list.
            ("005310c0050140404040", "compound"),
            // A list whose size runs past the frame.
            ("005310c0ff01", "declaring"),
            // An array of a billion nulls in no bytes.
            ("005310c00b01f0000000054000000040", "elements in"),
            // Not a constructor.
            ("005310c002011f", "no AMQP constructor"),
            // A cut-off descriptor.
            ("0080000000", "cut short"),
        ] {
            let mut stream = AMQP_HEADER.to_vec();
            stream.extend(frame_of(&from_hex(body)));
            let refused = follow_in_pieces(&stream, 5).unwrap_err();
            assert!(refused.contains(why), "{body}: {refused}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let nested = |depth: usize| {
            // `depth` lists inside one another, innermost empty: c0 size 01 ... 45.
            let mut value = vec![0x45];
            for _ in 0..depth {
                let mut outer = vec![0xc0, value.len() as u8 + 1, 0x01];
                outer.extend(value);
                value = outer;
            }
            let mut body = vec![0x00, 0x53, 0x10];
            body.extend(value);
            let mut stream = AMQP_HEADER.to_vec();
            stream.extend(frame_of(&body));
            follow_in_pieces(&stream, 11)
        };
        assert_eq!(nested(MAX_DEPTH - 2), Ok(()));
        assert!(nested(MAX_DEPTH + 1).unwrap_err().contains("nested"));
        assert!(nested(80).unwrap_err().contains("nested"));
    }

    /// A transfer on handle 0 (`more` as given) carrying `payload`.
    fn transfer(more: bool, payload: &str) -> Vec<u8> {
        let more = if more { "41" } else { "42" };
        frame_of(&from_hex(&format!(
            "005314c009064343a001004342{more}{payload}"
        )))
    }

    #[test]
    fn messages_are_checked_once_their_delivery_is_whole() {
        // application-properties {"a": "b"}, then a data section "xy".
        let message = "005374c10702a10161a10162005375a0027879";
        let odd_map = "005374c10401a10161";
        let check = |transfers: &[(bool, &str)]| {
            let mut stream = AMQP_HEADER.to_vec();
            for (more, payload) in transfers {
                stream.extend(transfer(*more, payload));
            }
            follow_in_pieces(&stream, 13)
        };
        assert_eq!(check(&[(false, message)]), Ok(()));
        // Cut in the middle of a value, over three transfers.
        let (a, rest) = message.split_at(12);
        let (b, c) = rest.split_at(14);
        assert_eq!(check(&[(true, a), (true, b), (false, c)]), Ok(()));
        // A map of an odd count (serde_amqp takes 2 from its count per entry: an overflow).
        let refused = check(&[(false, odd_map)]).unwrap_err();
        assert!(
            refused.contains("message") && refused.contains("pair up"),
            "{refused}"
        );
        let (a, b) = odd_map.split_at(10);
        assert!(check(&[(true, a), (false, b)]).is_err());
        // A message cut short.
        assert!(check(&[(false, &message[..20])]).is_err());
    }

    #[test]
    fn unfinished_deliveries_are_bounded() {
        let piece = "40".repeat(1024 * 1024);
        let mut stream = AMQP_HEADER.to_vec();
        for _ in 0..MAX_PENDING / (1024 * 1024) {
            stream.extend(transfer(true, &piece));
        }
        assert_eq!(follow_in_pieces(&stream, 65536), Ok(()));
        stream.extend(transfer(true, "40"));
        assert!(
            follow_in_pieces(&stream, 65536)
                .unwrap_err()
                .contains("unfinished")
        );
    }
}
