//! A small TPM 2.0 command layer in pure Rust, for DPS TPM attestation.
//!
//! ```no_run
//! # fn run() -> azure_iot_tpm::Result<()> {
//! use azure_iot_tpm::{Location, Tpm};
//! let mut tpm = Tpm::open(&Location::Simulator { host: "127.0.0.1".into(), port: 2321 })?;
//! let ek = tpm.endorsement_key()?; // created and persisted at 0x81010001 if absent
//! let srk = tpm.storage_root_key()?; // 0x81000001
//! # drop((ek, srk)); Ok(()) }
//! ```
//!
//! # Design
//!
//! Why not the TCG software stack: the Python wheels built on these crates must need no
//! system library at run time, and `tss-esapi` links libtss2 and its crypto backend
//! (`docs/adr/0022-tpm-command-layer.md`). The attestation flow needs a dozen commands, all
//! with password or one policy session and no parameter encryption, so they are marshalled
//! here by hand.
//!
//! ```text
//!  keys      EK / SRK at 0x81010001 / 0x81000001 (create + persist, or reuse),
//!            activation → identity key at 0x81000100, HMAC with it
//!  tpm       one method per command: Startup, CreatePrimary, ReadPublic, EvictControl,
//!            StartAuthSession, PolicySecret, ActivateCredential, Import, Load, HMAC
//!            (+ HMAC_Start / SequenceUpdate / SequenceComplete), FlushContext
//!  command   header · handle area · authorisation area (empty password, or a policy
//!            session) · parameters; response header/handles/parameters split and checked
//!  marshal   big-endian Writer; Reader whose every read checks the remaining length
//!  transport /dev/tpmrm0 (fallback /dev/tpm0) · TCG simulator socket ("mssim", swtpm)
//! ```
//!
//! * Parsing is bounded: responses are at most [`transport::MAX_RESPONSE`] bytes, every
//!   size field is checked against what remains, trailing bytes are an error. A malformed
//!   response is [`Error::Malformed`]; a refused command is [`Error::Tpm`] with the
//!   command's name and the decoded [`ResponseCode`] (`TPM_RC_HANDLE (handle 1)`).
//!   Property tests cover the parsers; `fuzz/fuzz_targets/tpm_response.rs` feeds every
//!   command arbitrary responses through a [`transport::Transport`] of its own.
//! * Secrets stay in the TPM: the identity key is imported and used by handle; the one
//!   secret the TPM hands out (the activated credential, the inner wrap key) is a
//!   [`SecretBytes`], zeroed on drop and redacted in `Debug`.
//! * Every object here has an empty authValue (as the Azure SDKs create them); the EK is
//!   used through `PolicySecret(TPM_RH_ENDORSEMENT)` in a fresh policy session.
//! * Blocking I/O: a TPM answers one command at a time, so callers in async code run
//!   these calls on a blocking thread.

mod command;
mod error;
mod keys;
mod marshal;
mod templates;
mod tpm;
pub mod transport;

pub use error::{Error, ResponseCode, Result, Subject};
pub use keys::{Activation, EK_HANDLE, IDENTITY_KEY_HANDLE, SRK_HANDLE};
pub use templates::{ALG_SHA256, EK_POLICY, ek_template, srk_template};
pub use tpm::{
    AesCfb, Location, MAX_BUFFER, PublicKey, RH_ENDORSEMENT, RH_NULL, RH_OWNER, SecretBytes, Tpm,
};
