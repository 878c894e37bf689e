//! Big-endian TPM marshalling: a [`Writer`] for commands and a bounds-checked [`Reader`] for
//! responses. Every read checks the remaining length first; a short or oversized field is a
//! typed [`Error::Malformed`] naming the structure, never a panic.

use crate::error::{Error, Result};

/// Builds a byte string field by field.
#[derive(Debug, Default, Clone)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Raw bytes, no size prefix.
    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// A `TPM2B_*`: a 16-bit size, then the bytes. `what` names the field in the error when
    /// the bytes do not fit.
    pub(crate) fn tpm2b(&mut self, what: &str, v: &[u8]) -> Result<&mut Self> {
        let len = u16::try_from(v.len()).map_err(|_| {
            Error::InvalidArgument(format!("{what} is {} bytes, over 65535", v.len()))
        })?;
        self.u16(len);
        self.bytes(v);
        Ok(self)
    }

    /// The bytes written.
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// The bytes written.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// The bytes written so far.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// Reads a byte string field by field, checking every length.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, which holds a `what` (named in errors).
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    /// How many bytes are left.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::malformed(
                self.what,
                format!(
                    "needs {n} more bytes at offset {}, has {}",
                    self.pos,
                    self.remaining()
                ),
            ));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A `TPM2B_*`'s contents (the size read and checked).
    pub(crate) fn tpm2b(&mut self) -> Result<&'a [u8]> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A `TPM2B_*` whole, size prefix included.
    pub(crate) fn tpm2b_whole(&mut self) -> Result<&'a [u8]> {
        let start = self.pos;
        self.tpm2b()?;
        Ok(&self.buf[start..self.pos])
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    /// Fails unless every byte was read.
    pub(crate) fn finish(&self) -> Result<()> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(Error::malformed(
                self.what,
                format!("{} unexpected trailing bytes", self.remaining()),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_short_reads() {
        let mut w = Writer::new();
        w.u8(1).u16(0x0203).u32(0x0405_0607);
        w.tpm2b("x", b"abc").unwrap();
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes, "test");
        assert_eq!(r.take(1).unwrap(), &[1]);
        assert_eq!(r.u16().unwrap(), 0x0203);
        assert_eq!(r.u32().unwrap(), 0x0405_0607);
        assert_eq!(r.tpm2b().unwrap(), b"abc");
        r.finish().unwrap();
        assert!(matches!(
            r.u16(),
            Err(Error::Malformed { what: "test", .. })
        ));
        let mut short = Reader::new(&[0, 5, 1, 2], "short");
        assert!(short.tpm2b().is_err());
        assert!(Writer::new().tpm2b("big", &vec![0; 70_000]).is_err());
    }

    proptest! {
        #[test]
        fn reads_never_panic_and_stay_in_bounds(bytes in proptest::collection::vec(any::<u8>(), 0..64), n in 0usize..80) {
            let mut r = Reader::new(&bytes, "fuzz");
            let _ = r.take(n);
            let _ = r.tpm2b();
            let _ = r.tpm2b_whole();
            let _ = r.u32();
            prop_assert!(r.remaining() <= bytes.len());
        }
    }
}
