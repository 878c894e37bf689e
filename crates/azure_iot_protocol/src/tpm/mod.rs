//! TPM 2.0 structures that DPS's TPM attestation puts on the wire, marshalled and unmarshalled
//! by both sides: the device (which hands them to its TPM) and the emulator (which builds them).
//!
//! # Design
//!
//! Pure data in TPM 2.0's big-endian marshalling (TPM 2.0 Library, Part 2): no TPM commands and
//! no cryptography except the digest an object [`Name`](Public::name) and the
//! [default registration id](default_registration_id) are defined by (ring's SHA family). Every
//! parser is total — any input gives a value or a [`TpmError`] naming the structure and what is
//! wrong — and exact: a parsed value marshals back to the bytes it came from, and trailing bytes
//! are an error. Sizes are the TPM's `UINT16` sizes, so no buffer grows past 64 KiB.
//!
//! * [`Public`]: `TPMT_PUBLIC` / `TPM2B_PUBLIC` for RSA keys (the endorsement and storage root
//!   keys a device sends) and keyed-hash objects (the HMAC identity key DPS duplicates to it).
//! * [`Sensitive`]: `TPMT_SENSITIVE` of a keyed-hash object, the plaintext of a duplication blob.
//!   Its key and seed never show in `Debug`.
//! * [`Wrapped`]: the contents of a `TPM2B_ID_OBJECT` or `TPM2B_PRIVATE` (an integrity HMAC
//!   followed by encrypted bytes).
//! * [`ActivationBlob`]: the six structures of DPS's `authenticationKey`, in the order the Node
//!   and C clients read them.
//! * [`default_registration_id`]: the registration id a device without one derives from its EK.

mod activation;
mod marshal;
mod public;
mod sensitive;
#[cfg(test)]
mod tests;

pub use activation::{ActivationBlob, Wrapped, default_registration_id, marshal_tpm2b};
pub use public::{
    AlgId, KeyedHashPublic, KeyedHashScheme, ObjectAttributes, Public, PublicKind, RsaPublic,
    RsaScheme, SymDefObject,
};
pub use sensitive::Sensitive;

/// What is wrong with a TPM structure being parsed or marshalled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TpmError {
    /// The input ends inside a structure.
    #[error("{what}: needs {needed} more bytes, {available} left")]
    Truncated {
        /// The structure or field being read.
        what: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// Bytes follow the structure (or a sized structure's contents end before its size).
    #[error("{what}: {count} unexpected bytes after the structure")]
    TrailingBytes {
        /// The structure being read.
        what: &'static str,
        /// How many bytes were left over.
        count: usize,
    },
    /// A field is longer than a TPM `UINT16` size can say.
    #[error("{what}: {len} bytes do not fit a 16-bit size")]
    TooLong {
        /// The field being marshalled.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// An object type other than RSA and keyed-hash (for example an ECC endorsement key).
    #[error("unsupported TPM object type {0} (only RSA and keyed-hash objects are supported)")]
    UnsupportedType(AlgId),
    /// A scheme or algorithm this field cannot hold.
    #[error("{what}: unsupported algorithm {alg}")]
    UnsupportedAlgorithm {
        /// The field being read.
        what: &'static str,
        /// The algorithm found.
        alg: AlgId,
    },
}
