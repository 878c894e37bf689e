//! Big-endian reading and writing of TPM 2.0 fields.

use super::TpmError;

/// Reads TPM fields from a byte slice, front to back.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(crate) fn take(&mut self, what: &'static str, n: usize) -> Result<&'a [u8], TpmError> {
        if self.rest.len() < n {
            return Err(TpmError::Truncated {
                what,
                needed: n,
                available: self.rest.len(),
            });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, TpmError> {
        let b = self.take(what, 2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, TpmError> {
        let b = self.take(what, 4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A `TPM2B`: a `UINT16` size and that many bytes.
    pub(crate) fn sized(&mut self, what: &'static str) -> Result<&'a [u8], TpmError> {
        let n = self.u16(what)?;
        self.take(what, usize::from(n))
    }

    /// Everything not read yet.
    pub(crate) fn rest(self) -> &'a [u8] {
        self.rest
    }

    /// Fails unless everything was read.
    pub(crate) fn finish(self, what: &'static str) -> Result<(), TpmError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(TpmError::TrailingBytes {
                what,
                count: self.rest.len(),
            })
        }
    }
}

/// Appends TPM fields to a buffer.
#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// A `TPM2B`: a `UINT16` size and the bytes.
    pub(crate) fn sized(&mut self, what: &'static str, bytes: &[u8]) -> Result<(), TpmError> {
        self.u16(size16(what, bytes.len())?);
        self.raw(bytes);
        Ok(())
    }
}

/// `len` as a TPM `UINT16` size.
pub(crate) fn size16(what: &'static str, len: usize) -> Result<u16, TpmError> {
    u16::try_from(len).map_err(|_| TpmError::TooLong { what, len })
}
