//! [`Tpm`]: the TPM 2.0 commands the attestation flow needs (TPM 2.0 Library Part 3), each
//! marshalled by hand and its response parsed with every length checked.

use std::fmt;

use crate::command::{Auth, Command, parse_response};
use crate::error::{Error, Result};
use crate::marshal::Reader;
use crate::templates::{ALG_AES, ALG_CFB, ALG_NULL, ALG_SHA256};
use crate::transport::{DeviceTransport, SimulatorTransport, Transport};

/// `TPM_RH_OWNER`: the storage hierarchy.
pub const RH_OWNER: u32 = 0x4000_0001;
/// `TPM_RH_NULL`.
pub const RH_NULL: u32 = 0x4000_0007;
/// `TPM_RH_ENDORSEMENT`: the endorsement hierarchy.
pub const RH_ENDORSEMENT: u32 = 0x4000_000B;

/// The most data `TPM2_HMAC` takes in one call (`TPM2B_MAX_BUFFER`, 1024 bytes on PC-client
/// TPMs); longer data goes through an HMAC sequence.
pub const MAX_BUFFER: usize = 1024;

mod cc {
    pub(super) const EVICT_CONTROL: u32 = 0x120;
    pub(super) const CREATE_PRIMARY: u32 = 0x131;
    pub(super) const SEQUENCE_COMPLETE: u32 = 0x13E;
    pub(super) const STARTUP: u32 = 0x144;
    pub(super) const ACTIVATE_CREDENTIAL: u32 = 0x147;
    pub(super) const POLICY_SECRET: u32 = 0x151;
    pub(super) const HMAC: u32 = 0x155;
    pub(super) const IMPORT: u32 = 0x156;
    pub(super) const LOAD: u32 = 0x157;
    pub(super) const HMAC_START: u32 = 0x15B;
    pub(super) const SEQUENCE_UPDATE: u32 = 0x15C;
    pub(super) const FLUSH_CONTEXT: u32 = 0x165;
    pub(super) const READ_PUBLIC: u32 = 0x173;
    pub(super) const START_AUTH_SESSION: u32 = 0x176;
}

/// `TPM_RC_INITIALIZE`: Startup was already done.
const RC_INITIALIZE: u32 = 0x100;
/// `TPM_RC_RETRY`, `TPM_RC_YIELDED`, `TPM_RC_TESTING`: the TPM asks for the command again.
const RETRYABLE: [u32; 3] = [0x922, 0x908, 0x90A];
/// How many times one command is sent when the TPM keeps asking for a retry.
const MAX_ATTEMPTS: u32 = 5;
/// `TPM_SE_POLICY`.
const SE_POLICY: u8 = 0x01;

/// Where the TPM is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `/dev/tpmrm0`, else `/dev/tpm0`.
    DefaultDevice,
    /// A TPM character device at this path.
    Device(std::path::PathBuf),
    /// A TCG simulator's command port (`swtpm socket --tpm2 --server type=tcp,port=…`).
    Simulator {
        /// Its host name or address.
        host: String,
        /// Its command port (the platform port is the next one).
        port: u16,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DefaultDevice => f.write_str("/dev/tpmrm0 (or /dev/tpm0)"),
            Self::Device(path) => write!(f, "{}", path.display()),
            Self::Simulator { host, port } => write!(f, "simulator at {host}:{port}"),
        }
    }
}

/// Bytes that are secret (a credential the TPM released); zeroed on drop, hidden from
/// `Debug`.
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// The bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

/// A key's public area as the TPM reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The whole `TPM2B_PUBLIC` (size prefix included): what DPS takes as `endorsementKey` /
    /// `storageRootKey`.
    pub public: Vec<u8>,
    /// The object's Name (`nameAlg` then the digest of the public area).
    pub name: Vec<u8>,
}

/// A symmetric algorithm for `TPM2_Import`'s inner wrapper: AES in CFB mode with this many
/// key bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AesCfb {
    /// 128, 192 or 256.
    pub key_bits: u16,
}

/// A connection to one TPM.
pub struct Tpm {
    transport: Box<dyn Transport>,
}

impl fmt::Debug for Tpm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tpm")
    }
}

impl Tpm {
    /// A TPM behind `transport`.
    pub fn new(transport: impl Transport + 'static) -> Self {
        Self {
            transport: Box::new(transport),
        }
    }

    /// Opens the TPM at `location` and makes sure it is started (`TPM2_Startup(CLEAR)`,
    /// accepted when already done).
    pub fn open(location: &Location) -> Result<Self> {
        let mut tpm = match location {
            Location::DefaultDevice => Self::new(DeviceTransport::open_default()?),
            Location::Device(path) => Self::new(DeviceTransport::open(path)?),
            Location::Simulator { host, port } => {
                Self::new(SimulatorTransport::connect(host, *port)?)
            }
        };
        tpm.startup()?;
        Ok(tpm)
    }

    /// Runs `command` and returns its response. A TPM that answers `TPM_RC_RETRY`,
    /// `TPM_RC_YIELDED` or `TPM_RC_TESTING` gets the same command again, at most
    /// [`MAX_ATTEMPTS`] times.
    fn run(&mut self, command: &Command) -> Result<(Vec<u32>, Vec<u8>)> {
        let bytes = command.encode()?;
        let mut attempt = 1;
        loop {
            let response = self.transport.transact(&bytes)?;
            match parse_response(
                command.name(),
                command.expected_response_handles(),
                command.has_sessions(),
                &response,
            ) {
                Ok(parsed) => return Ok((parsed.handles, parsed.params.to_vec())),
                Err(e)
                    if attempt < MAX_ATTEMPTS
                        && e.response_code().is_some_and(|c| RETRYABLE.contains(&c.0)) =>
                {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `TPM2_Startup(TPM_SU_CLEAR)`; a TPM already started (`TPM_RC_INITIALIZE`) is fine.
    pub fn startup(&mut self) -> Result<()> {
        let mut cmd = Command::new("Startup", cc::STARTUP);
        cmd.params.u16(0x0000);
        match self.run(&cmd) {
            Ok(_) => Ok(()),
            Err(e) if e.response_code().map(|c| c.0) == Some(RC_INITIALIZE) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `TPM2_CreatePrimary` in `hierarchy` from `template` (a `TPMT_PUBLIC`), empty
    /// authValue: the transient handle and the key's public area.
    pub fn create_primary(&mut self, hierarchy: u32, template: &[u8]) -> Result<(u32, PublicKey)> {
        let mut cmd = Command::new("CreatePrimary", cc::CREATE_PRIMARY)
            .authorised(hierarchy, Auth::EmptyPassword)
            .response_handles(1);
        // inSensitive: size 4, empty userAuth, empty data.
        cmd.params.u16(4).u16(0).u16(0);
        cmd.params.tpm2b("the template", template)?;
        cmd.params.u16(0); // outsideInfo
        cmd.params.u32(0); // creationPCR: no selection
        let (handles, params) = self.run(&cmd)?;
        let mut r = Reader::new(&params, "CreatePrimary response");
        let public = r.tpm2b_whole()?.to_vec();
        r.tpm2b()?; // creationData
        r.tpm2b()?; // creationHash
        read_ticket(&mut r)?; // creationTicket
        let name = r.tpm2b()?.to_vec();
        r.finish()?;
        Ok((first(&handles)?, PublicKey { public, name }))
    }

    /// `TPM2_ReadPublic`: the public area and Name of a loaded or persistent object.
    pub fn read_public(&mut self, handle: u32) -> Result<PublicKey> {
        let cmd = Command::new("ReadPublic", cc::READ_PUBLIC).handle(handle);
        let (_, params) = self.run(&cmd)?;
        let mut r = Reader::new(&params, "ReadPublic response");
        let public = r.tpm2b_whole()?.to_vec();
        let name = r.tpm2b()?.to_vec();
        r.tpm2b()?; // qualifiedName
        r.finish()?;
        Ok(PublicKey { public, name })
    }

    /// `TPM2_EvictControl` by the owner: persists the transient `object` at `persistent`, or,
    /// when `object` is that persistent handle, removes it.
    pub fn evict_control(&mut self, object: u32, persistent: u32) -> Result<()> {
        let mut cmd = Command::new("EvictControl", cc::EVICT_CONTROL)
            .authorised(RH_OWNER, Auth::EmptyPassword)
            .handle(object);
        cmd.params.u32(persistent);
        self.run(&cmd)?;
        Ok(())
    }

    /// `TPM2_StartAuthSession`: an unbound, unsalted SHA-256 policy session.
    pub fn start_policy_session(&mut self) -> Result<u32> {
        let mut nonce = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| Error::InvalidArgument("no system randomness for a nonce".to_owned()))?;
        let mut cmd = Command::new("StartAuthSession", cc::START_AUTH_SESSION)
            .handle(RH_NULL) // tpmKey: unsalted
            .handle(RH_NULL) // bind: unbound
            .response_handles(1);
        cmd.params.tpm2b("the nonce", &nonce)?;
        cmd.params.u16(0); // encryptedSalt
        cmd.params.u8(SE_POLICY);
        cmd.params.u16(ALG_NULL); // no parameter encryption
        cmd.params.u16(ALG_SHA256);
        let (handles, params) = self.run(&cmd)?;
        let mut r = Reader::new(&params, "StartAuthSession response");
        r.tpm2b()?; // nonceTPM
        r.finish()?;
        first(&handles)
    }

    /// `TPM2_PolicySecret(TPM_RH_ENDORSEMENT)` on `session`: what the EK's policy asks for.
    pub fn policy_secret_endorsement(&mut self, session: u32) -> Result<()> {
        let mut cmd = Command::new("PolicySecret", cc::POLICY_SECRET)
            .authorised(RH_ENDORSEMENT, Auth::EmptyPassword)
            .handle(session);
        cmd.params.u16(0).u16(0).u16(0).u32(0); // nonceTPM, cpHashA, policyRef, expiration
        let (_, params) = self.run(&cmd)?;
        let mut r = Reader::new(&params, "PolicySecret response");
        r.tpm2b()?; // timeout
        read_ticket(&mut r)?; // policyTicket
        r.finish()
    }

    /// `TPM2_ActivateCredential`: `activate` is the object the credential names (the SRK,
    /// password), `key` the decryption key (the EK), authorised by the policy `session`;
    /// `credential_blob` and `secret` are the contents of the `TPM2B_ID_OBJECT` and
    /// `TPM2B_ENCRYPTED_SECRET`. Returns the credential.
    pub fn activate_credential(
        &mut self,
        activate: u32,
        key: u32,
        session: u32,
        credential_blob: &[u8],
        secret: &[u8],
    ) -> Result<SecretBytes> {
        let mut cmd = Command::new("ActivateCredential", cc::ACTIVATE_CREDENTIAL)
            .authorised(activate, Auth::EmptyPassword)
            .authorised(key, Auth::Policy(session));
        cmd.params.tpm2b("the credential blob", credential_blob)?;
        cmd.params.tpm2b("the encrypted secret", secret)?;
        let (_, params) = self.run(&cmd)?;
        let mut r = Reader::new(&params, "ActivateCredential response");
        let cert_info = SecretBytes(r.tpm2b()?.to_vec());
        r.finish()?;
        Ok(cert_info)
    }

    /// `TPM2_Import` under `parent` (password): `encryption_key` is the inner wrapper's key,
    /// `public` the contents of the `TPM2B_PUBLIC`, `duplicate` of the `TPM2B_PRIVATE`,
    /// `seed` of the `TPM2B_ENCRYPTED_SECRET`. Returns the `TPM2B_PRIVATE` contents to
    /// [`load`](Self::load).
    pub fn import(
        &mut self,
        parent: u32,
        encryption_key: &[u8],
        public: &[u8],
        duplicate: &[u8],
        seed: &[u8],
        inner: Option<AesCfb>,
    ) -> Result<Vec<u8>> {
        let mut cmd = Command::new("Import", cc::IMPORT).authorised(parent, Auth::EmptyPassword);
        cmd.params.tpm2b("the inner wrap key", encryption_key)?;
        cmd.params.tpm2b("the public area", public)?;
        cmd.params.tpm2b("the duplicate", duplicate)?;
        cmd.params.tpm2b("the seed", seed)?;
        match inner {
            Some(aes) => cmd.params.u16(ALG_AES).u16(aes.key_bits).u16(ALG_CFB),
            None => cmd.params.u16(ALG_NULL),
        };
        let (_, params) = self.run(&cmd)?;
        let mut r = Reader::new(&params, "Import response");
        let private = r.tpm2b()?.to_vec();
        r.finish()?;
        Ok(private)
    }

    /// `TPM2_Load` under `parent` (password): the transient handle of the object whose
    /// `TPM2B_PRIVATE` and `TPM2B_PUBLIC` contents are given.
    pub fn load(&mut self, parent: u32, private: &[u8], public: &[u8]) -> Result<u32> {
        let mut cmd = Command::new("Load", cc::LOAD)
            .authorised(parent, Auth::EmptyPassword)
            .response_handles(1);
        cmd.params.tpm2b("the private area", private)?;
        cmd.params.tpm2b("the public area", public)?;
        let (handles, params) = self.run(&cmd)?;
        let mut r = Reader::new(&params, "Load response");
        r.tpm2b()?; // name
        r.finish()?;
        first(&handles)
    }

    /// HMAC-SHA256 of `data` with the keyed-hash key `key` (empty authValue), computed inside
    /// the TPM: one `TPM2_HMAC` up to [`MAX_BUFFER`] bytes, an HMAC sequence beyond.
    pub fn hmac(&mut self, key: u32, data: &[u8]) -> Result<Vec<u8>> {
        if data.len() <= MAX_BUFFER {
            let mut cmd = Command::new("HMAC", cc::HMAC).authorised(key, Auth::EmptyPassword);
            cmd.params.tpm2b("the data", data)?;
            cmd.params.u16(ALG_SHA256);
            let (_, params) = self.run(&cmd)?;
            let mut r = Reader::new(&params, "HMAC response");
            let digest = r.tpm2b()?.to_vec();
            r.finish()?;
            return Ok(digest);
        }
        let mut start = Command::new("HMAC_Start", cc::HMAC_START)
            .authorised(key, Auth::EmptyPassword)
            .response_handles(1);
        start.params.u16(0).u16(ALG_SHA256); // auth, hashAlg
        let (handles, _) = self.run(&start)?;
        let sequence = first(&handles)?;
        let result = self.finish_sequence(sequence, data);
        if result.is_err() {
            // The sequence object would otherwise hold a slot until the TPM restarts.
            let _ = self.flush_context(sequence);
        }
        result
    }

    /// Feeds `data` to `sequence` in [`MAX_BUFFER`] chunks and completes it.
    fn finish_sequence(&mut self, sequence: u32, data: &[u8]) -> Result<Vec<u8>> {
        let mut chunks = data.chunks(MAX_BUFFER).peekable();
        let mut last: &[u8] = &[];
        while let Some(chunk) = chunks.next() {
            if chunks.peek().is_none() {
                last = chunk;
                break;
            }
            let mut update = Command::new("SequenceUpdate", cc::SEQUENCE_UPDATE)
                .authorised(sequence, Auth::EmptyPassword);
            update.params.tpm2b("a data chunk", chunk)?;
            self.run(&update)?;
        }
        let mut complete = Command::new("SequenceComplete", cc::SEQUENCE_COMPLETE)
            .authorised(sequence, Auth::EmptyPassword);
        complete.params.tpm2b("the last data chunk", last)?;
        complete.params.u32(RH_NULL);
        let (_, params) = self.run(&complete)?;
        let mut r = Reader::new(&params, "SequenceComplete response");
        let digest = r.tpm2b()?.to_vec();
        read_ticket(&mut r)?; // validation
        r.finish()?;
        Ok(digest)
    }

    /// `TPM2_FlushContext`: frees a transient object or a session.
    pub fn flush_context(&mut self, handle: u32) -> Result<()> {
        let mut cmd = Command::new("FlushContext", cc::FLUSH_CONTEXT);
        cmd.params.u32(handle);
        self.run(&cmd)?;
        Ok(())
    }
}

/// Skips a ticket (`TPMT_TK_*`: tag, hierarchy, digest).
fn read_ticket(r: &mut Reader<'_>) -> Result<()> {
    r.u16()?;
    r.u32()?;
    r.tpm2b()?;
    Ok(())
}

/// The one response handle.
fn first(handles: &[u32]) -> Result<u32> {
    handles
        .first()
        .copied()
        .ok_or_else(|| Error::malformed("response handle area", "no handle"))
}
