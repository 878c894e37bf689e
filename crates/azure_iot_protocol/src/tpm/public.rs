//! `TPMT_PUBLIC` and `TPM2B_PUBLIC` for RSA and keyed-hash objects, and object Names.

use std::fmt;

use ring::digest;

use super::TpmError;
use super::marshal::{Reader, Writer};

/// A TPM algorithm identifier (`TPM_ALG_ID`, Part 2 §6.3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AlgId(pub u16);

impl AlgId {
    /// `TPM_ALG_RSA`.
    pub const RSA: AlgId = AlgId(0x0001);
    /// `TPM_ALG_SHA1`.
    pub const SHA1: AlgId = AlgId(0x0004);
    /// `TPM_ALG_HMAC`.
    pub const HMAC: AlgId = AlgId(0x0005);
    /// `TPM_ALG_AES`.
    pub const AES: AlgId = AlgId(0x0006);
    /// `TPM_ALG_KEYEDHASH`.
    pub const KEYEDHASH: AlgId = AlgId(0x0008);
    /// `TPM_ALG_XOR`.
    pub const XOR: AlgId = AlgId(0x000A);
    /// `TPM_ALG_SHA256`.
    pub const SHA256: AlgId = AlgId(0x000B);
    /// `TPM_ALG_SHA384`.
    pub const SHA384: AlgId = AlgId(0x000C);
    /// `TPM_ALG_SHA512`.
    pub const SHA512: AlgId = AlgId(0x000D);
    /// `TPM_ALG_NULL`.
    pub const NULL: AlgId = AlgId(0x0010);
    /// `TPM_ALG_RSASSA`.
    pub const RSASSA: AlgId = AlgId(0x0014);
    /// `TPM_ALG_RSAES`.
    pub const RSAES: AlgId = AlgId(0x0015);
    /// `TPM_ALG_RSAPSS`.
    pub const RSAPSS: AlgId = AlgId(0x0016);
    /// `TPM_ALG_OAEP`.
    pub const OAEP: AlgId = AlgId(0x0017);
    /// `TPM_ALG_ECC`.
    pub const ECC: AlgId = AlgId(0x0023);
    /// `TPM_ALG_SYMCIPHER`.
    pub const SYMCIPHER: AlgId = AlgId(0x0025);
    /// `TPM_ALG_CFB`.
    pub const CFB: AlgId = AlgId(0x0043);

    /// The digest size of a hash algorithm, `None` for anything else.
    pub fn digest_len(self) -> Option<usize> {
        self.ring_digest().map(|alg| alg.output_len())
    }

    /// ring's implementation of this hash algorithm.
    fn ring_digest(self) -> Option<&'static digest::Algorithm> {
        match self {
            AlgId::SHA1 => Some(&digest::SHA1_FOR_LEGACY_USE_ONLY),
            AlgId::SHA256 => Some(&digest::SHA256),
            AlgId::SHA384 => Some(&digest::SHA384),
            AlgId::SHA512 => Some(&digest::SHA512),
            _ => None,
        }
    }

    /// The digest of `data` with this hash algorithm, `None` if it is not a hash algorithm.
    pub fn hash(self, data: &[u8]) -> Option<Vec<u8>> {
        self.ring_digest()
            .map(|alg| digest::digest(alg, data).as_ref().to_vec())
    }

    fn label(self) -> Option<&'static str> {
        Some(match self {
            AlgId::RSA => "RSA",
            AlgId::SHA1 => "SHA1",
            AlgId::HMAC => "HMAC",
            AlgId::AES => "AES",
            AlgId::KEYEDHASH => "KEYEDHASH",
            AlgId::XOR => "XOR",
            AlgId::SHA256 => "SHA256",
            AlgId::SHA384 => "SHA384",
            AlgId::SHA512 => "SHA512",
            AlgId::NULL => "NULL",
            AlgId::RSASSA => "RSASSA",
            AlgId::RSAES => "RSAES",
            AlgId::RSAPSS => "RSAPSS",
            AlgId::OAEP => "OAEP",
            AlgId::ECC => "ECC",
            AlgId::SYMCIPHER => "SYMCIPHER",
            AlgId::CFB => "CFB",
            _ => return None,
        })
    }
}

impl fmt::Display for AlgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.label() {
            Some(label) => write!(f, "{label} (0x{:04x})", self.0),
            None => write!(f, "0x{:04x}", self.0),
        }
    }
}

impl fmt::Debug for AlgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `TPMA_OBJECT`: an object's attribute bits (Part 2 §8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ObjectAttributes(pub u32);

impl ObjectAttributes {
    /// `fixedTPM`.
    pub const FIXED_TPM: u32 = 1 << 1;
    /// `stClear`.
    pub const ST_CLEAR: u32 = 1 << 2;
    /// `fixedParent`.
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// `sensitiveDataOrigin`.
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// `userWithAuth`.
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    /// `adminWithPolicy`.
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    /// `noDA`.
    pub const NO_DA: u32 = 1 << 10;
    /// `encryptedDuplication`.
    pub const ENCRYPTED_DUPLICATION: u32 = 1 << 11;
    /// `restricted`.
    pub const RESTRICTED: u32 = 1 << 16;
    /// `decrypt`.
    pub const DECRYPT: u32 = 1 << 17;
    /// `sign` / `encrypt`.
    pub const SIGN_ENCRYPT: u32 = 1 << 18;

    /// Whether every bit of `bits` is set.
    pub fn contains(self, bits: u32) -> bool {
        self.0 & bits == bits
    }
}

/// `TPMT_SYM_DEF_OBJECT` when its algorithm is not `TPM_ALG_NULL` (a `NULL` one is `None`
/// where it is used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymDefObject {
    /// The block cipher, for example [`AlgId::AES`]; never [`AlgId::NULL`].
    pub algorithm: AlgId,
    /// Its key size in bits.
    pub key_bits: u16,
    /// Its mode, for example [`AlgId::CFB`].
    pub mode: AlgId,
}

/// `TPMT_RSA_SCHEME` (Part 2 §11.2.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaScheme {
    /// `TPM_ALG_NULL`: the key's use decides at each command (EKs and SRKs).
    Null,
    /// `TPM_ALG_RSAES` (PKCS#1 v1.5 encryption, no parameters).
    Rsaes,
    /// `TPM_ALG_RSASSA` with its hash.
    Rsassa(AlgId),
    /// `TPM_ALG_RSAPSS` with its hash.
    Rsapss(AlgId),
    /// `TPM_ALG_OAEP` with its hash.
    Oaep(AlgId),
}

/// `TPMT_KEYEDHASH_SCHEME` (Part 2 §11.1.23).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyedHashScheme {
    /// `TPM_ALG_NULL`.
    Null,
    /// `TPM_ALG_HMAC` with its hash: a key that computes HMACs (DPS's identity keys).
    Hmac(AlgId),
    /// `TPM_ALG_XOR` obfuscation with its hash and KDF.
    Xor {
        /// The hash.
        hash: AlgId,
        /// The key derivation function.
        kdf: AlgId,
    },
}

/// The RSA part of a public area: `TPMS_RSA_PARMS` and `unique.rsa`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaPublic {
    /// The symmetric algorithm of a storage key (`None` for a signing key).
    pub symmetric: Option<SymDefObject>,
    /// The key's scheme.
    pub scheme: RsaScheme,
    /// The modulus size in bits.
    pub key_bits: u16,
    /// The public exponent as marshalled; 0 means the default 65537.
    pub exponent: u32,
    /// The modulus, big-endian.
    pub modulus: Vec<u8>,
}

impl RsaPublic {
    /// The public exponent, with 0 read as 65537.
    pub fn effective_exponent(&self) -> u32 {
        if self.exponent == 0 {
            65537
        } else {
            self.exponent
        }
    }
}

/// The keyed-hash part of a public area: `TPMS_KEYEDHASH_PARMS` and `unique.keyedHash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedHashPublic {
    /// The object's scheme.
    pub scheme: KeyedHashScheme,
    /// `unique`: `H_nameAlg(seedValue || key)`.
    pub unique: Vec<u8>,
}

/// The type-specific part of a public area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKind {
    /// `TPM_ALG_RSA`.
    Rsa(RsaPublic),
    /// `TPM_ALG_KEYEDHASH`.
    KeyedHash(KeyedHashPublic),
}

/// `TPMT_PUBLIC` for RSA and keyed-hash objects (Part 2 §12.2.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    /// The hash algorithm of the object's Name.
    pub name_alg: AlgId,
    /// The object's attributes.
    pub object_attributes: ObjectAttributes,
    /// The policy digest that authorizes its use (empty if none).
    pub auth_policy: Vec<u8>,
    /// Parameters and unique field by type.
    pub kind: PublicKind,
}

impl Public {
    /// Parses a whole `TPMT_PUBLIC`.
    pub fn parse(bytes: &[u8]) -> Result<Self, TpmError> {
        let mut r = Reader::new(bytes);
        let public = Self::read(&mut r)?;
        r.finish("TPMT_PUBLIC")?;
        Ok(public)
    }

    /// Parses a whole `TPM2B_PUBLIC` (the form DPS clients send their EK and SRK in).
    pub fn from_tpm2b(bytes: &[u8]) -> Result<Self, TpmError> {
        let mut r = Reader::new(bytes);
        let inner = r.sized("TPM2B_PUBLIC")?;
        r.finish("TPM2B_PUBLIC")?;
        Self::parse(inner)
    }

    /// Marshals as `TPMT_PUBLIC`.
    pub fn to_bytes(&self) -> Result<Vec<u8>, TpmError> {
        let mut w = Writer::default();
        self.write(&mut w)?;
        Ok(w.buf)
    }

    /// Marshals as `TPM2B_PUBLIC`.
    pub fn to_tpm2b(&self) -> Result<Vec<u8>, TpmError> {
        let mut w = Writer::default();
        w.sized("TPM2B_PUBLIC", &self.to_bytes()?)?;
        Ok(w.buf)
    }

    /// The object's Name: `nameAlg || H_nameAlg(TPMT_PUBLIC)` (Part 1 §16).
    pub fn name(&self) -> Result<Vec<u8>, TpmError> {
        let digest =
            self.name_alg
                .hash(&self.to_bytes()?)
                .ok_or(TpmError::UnsupportedAlgorithm {
                    what: "TPMT_PUBLIC nameAlg",
                    alg: self.name_alg,
                })?;
        let mut name = self.name_alg.0.to_be_bytes().to_vec();
        name.extend_from_slice(&digest);
        Ok(name)
    }

    /// The RSA part, if this is an RSA key.
    pub fn rsa(&self) -> Option<&RsaPublic> {
        match &self.kind {
            PublicKind::Rsa(rsa) => Some(rsa),
            PublicKind::KeyedHash(_) => None,
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, TpmError> {
        let kind_alg = AlgId(r.u16("TPMT_PUBLIC type")?);
        let name_alg = AlgId(r.u16("TPMT_PUBLIC nameAlg")?);
        let object_attributes = ObjectAttributes(r.u32("TPMT_PUBLIC objectAttributes")?);
        let auth_policy = r.sized("TPMT_PUBLIC authPolicy")?.to_vec();
        let kind = match kind_alg {
            AlgId::RSA => PublicKind::Rsa(read_rsa(r)?),
            AlgId::KEYEDHASH => PublicKind::KeyedHash(read_keyed_hash(r)?),
            other => return Err(TpmError::UnsupportedType(other)),
        };
        Ok(Self {
            name_alg,
            object_attributes,
            auth_policy,
            kind,
        })
    }

    fn write(&self, w: &mut Writer) -> Result<(), TpmError> {
        let kind_alg = match self.kind {
            PublicKind::Rsa(_) => AlgId::RSA,
            PublicKind::KeyedHash(_) => AlgId::KEYEDHASH,
        };
        w.u16(kind_alg.0);
        w.u16(self.name_alg.0);
        w.u32(self.object_attributes.0);
        w.sized("TPMT_PUBLIC authPolicy", &self.auth_policy)?;
        match &self.kind {
            PublicKind::Rsa(rsa) => write_rsa(w, rsa),
            PublicKind::KeyedHash(kh) => write_keyed_hash(w, kh),
        }
    }
}

fn read_rsa(r: &mut Reader<'_>) -> Result<RsaPublic, TpmError> {
    let algorithm = AlgId(r.u16("TPMS_RSA_PARMS symmetric")?);
    let symmetric = if algorithm == AlgId::NULL {
        None
    } else {
        Some(SymDefObject {
            algorithm,
            key_bits: r.u16("TPMS_RSA_PARMS symmetric keyBits")?,
            mode: AlgId(r.u16("TPMS_RSA_PARMS symmetric mode")?),
        })
    };
    let scheme = match AlgId(r.u16("TPMS_RSA_PARMS scheme")?) {
        AlgId::NULL => RsaScheme::Null,
        AlgId::RSAES => RsaScheme::Rsaes,
        AlgId::RSASSA => RsaScheme::Rsassa(AlgId(r.u16("TPMT_RSA_SCHEME hashAlg")?)),
        AlgId::RSAPSS => RsaScheme::Rsapss(AlgId(r.u16("TPMT_RSA_SCHEME hashAlg")?)),
        AlgId::OAEP => RsaScheme::Oaep(AlgId(r.u16("TPMT_RSA_SCHEME hashAlg")?)),
        alg => {
            return Err(TpmError::UnsupportedAlgorithm {
                what: "TPMS_RSA_PARMS scheme",
                alg,
            });
        }
    };
    let key_bits = r.u16("TPMS_RSA_PARMS keyBits")?;
    let exponent = r.u32("TPMS_RSA_PARMS exponent")?;
    let modulus = r.sized("TPM2B_PUBLIC_KEY_RSA")?.to_vec();
    Ok(RsaPublic {
        symmetric,
        scheme,
        key_bits,
        exponent,
        modulus,
    })
}

fn write_rsa(w: &mut Writer, rsa: &RsaPublic) -> Result<(), TpmError> {
    match rsa.symmetric {
        None => w.u16(AlgId::NULL.0),
        Some(sym) if sym.algorithm == AlgId::NULL => {
            return Err(TpmError::UnsupportedAlgorithm {
                what: "TPMS_RSA_PARMS symmetric (None stands for NULL)",
                alg: sym.algorithm,
            });
        }
        Some(sym) => {
            w.u16(sym.algorithm.0);
            w.u16(sym.key_bits);
            w.u16(sym.mode.0);
        }
    }
    match rsa.scheme {
        RsaScheme::Null => w.u16(AlgId::NULL.0),
        RsaScheme::Rsaes => w.u16(AlgId::RSAES.0),
        RsaScheme::Rsassa(hash) => {
            w.u16(AlgId::RSASSA.0);
            w.u16(hash.0);
        }
        RsaScheme::Rsapss(hash) => {
            w.u16(AlgId::RSAPSS.0);
            w.u16(hash.0);
        }
        RsaScheme::Oaep(hash) => {
            w.u16(AlgId::OAEP.0);
            w.u16(hash.0);
        }
    }
    w.u16(rsa.key_bits);
    w.u32(rsa.exponent);
    w.sized("TPM2B_PUBLIC_KEY_RSA", &rsa.modulus)
}

fn read_keyed_hash(r: &mut Reader<'_>) -> Result<KeyedHashPublic, TpmError> {
    let scheme = match AlgId(r.u16("TPMT_KEYEDHASH_SCHEME scheme")?) {
        AlgId::NULL => KeyedHashScheme::Null,
        AlgId::HMAC => KeyedHashScheme::Hmac(AlgId(r.u16("TPMS_SCHEME_HMAC hashAlg")?)),
        AlgId::XOR => KeyedHashScheme::Xor {
            hash: AlgId(r.u16("TPMS_SCHEME_XOR hashAlg")?),
            kdf: AlgId(r.u16("TPMS_SCHEME_XOR kdf")?),
        },
        alg => {
            return Err(TpmError::UnsupportedAlgorithm {
                what: "TPMT_KEYEDHASH_SCHEME scheme",
                alg,
            });
        }
    };
    let unique = r.sized("TPMT_PUBLIC unique keyedHash")?.to_vec();
    Ok(KeyedHashPublic { scheme, unique })
}

fn write_keyed_hash(w: &mut Writer, kh: &KeyedHashPublic) -> Result<(), TpmError> {
    match kh.scheme {
        KeyedHashScheme::Null => w.u16(AlgId::NULL.0),
        KeyedHashScheme::Hmac(hash) => {
            w.u16(AlgId::HMAC.0);
            w.u16(hash.0);
        }
        KeyedHashScheme::Xor { hash, kdf } => {
            w.u16(AlgId::XOR.0);
            w.u16(hash.0);
            w.u16(kdf.0);
        }
    }
    w.sized("TPMT_PUBLIC unique keyedHash", &kh.unique)
}
