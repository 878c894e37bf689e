//! TLS for every endpoint: the emulator's own CA and server certificate, or the user's.
//!
//! On first start the emulator makes a CA (ECDSA P-256, ten years) and keeps it in the data
//! directory as `ca.pem` + `ca-key.pem`; later starts reuse it, so clients configured to trust
//! `ca.pem` keep working. The server certificate is signed by that CA afresh on every start for
//! the configured hostname, `localhost`, `127.0.0.1` and `::1`: the official SDKs verify the
//! host name they dialled, and a fresh leaf always matches the current `--hostname`.
//!
//! Without a data directory (in-memory runs, tests) the CA lives only in memory. A user's own
//! certificate and key (PEM) replace all of this.
//!
//! TLS 1.2 stays enabled because the Python SDK pins it. One crypto provider, ring, as in the
//! whole workspace.
//!
//! No endpoint is plaintext, as on the hub (no 1883, 5672 or 80). Every listener *requests* a
//! client certificate without requiring one, because SAS clients send none; whether a
//! presented certificate belongs to the identity is decided by the hub after the handshake
//! (thumbprint or CA chain plus common name), not by the TLS layer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

use crate::error::EmulatorError;

/// The CA file other tools trust: point `server_verification_cert` (Python), `ca` (Node),
/// `TrustedCerts` (C) or the OS store at it.
pub const CA_FILE: &str = "ca.pem";
/// The CA's private key, written readable by the owner only.
const CA_KEY_FILE: &str = "ca-key.pem";

/// Where the server certificate comes from.
#[derive(Debug, Clone, Default)]
pub enum TlsSource {
    /// The emulator's own CA (kept in the data directory when there is one).
    #[default]
    Generated,
    /// The user's certificate chain and private key (PEM files). `ca` is the file written as
    /// `ca.pem` for clients to trust; without it the chain's last certificate is used.
    Files {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// Private key of the leaf.
        key: PathBuf,
        /// The CA clients should trust.
        ca: Option<PathBuf>,
    },
}

/// The server's certificate chain and key, and the CA clients trust.
pub(crate) struct TlsMaterial {
    /// PEM of the CA clients should trust (also written to `ca.pem` and shown by the CLI).
    pub(crate) ca_pem: String,
    /// Server chain, leaf first; the generated one also sends the CA so clients that trust
    /// only the CA file can build the path.
    chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    key: PrivateKeyDer<'static>,
}

impl TlsMaterial {
    /// Loads or makes the material for `hostname`. Runs on a blocking thread at start-up
    /// (key generation and file I/O), never on an async worker.
    pub(crate) fn load(
        source: &TlsSource,
        data_dir: Option<&Path>,
        hostname: &str,
        extra_names: &[&str],
    ) -> Result<Self, EmulatorError> {
        match source {
            TlsSource::Generated => Self::generated(data_dir, hostname, extra_names),
            TlsSource::Files { cert, key, ca } => Self::from_files(cert, key, ca.as_deref()),
        }
    }

    /// A fresh leaf (ECDSA P-256, one year, server-auth only) signed by the kept or new CA,
    /// with the hostname, `localhost`, `extra_names` (the DPS host name) and both loopback
    /// addresses as subject alternative
    /// names, so `127.0.0.1` works as well as a real-looking hub host mapped in `/etc/hosts`.
    fn generated(
        data_dir: Option<&Path>,
        hostname: &str,
        extra_names: &[&str],
    ) -> Result<Self, EmulatorError> {
        let (ca_pem, ca_key) = match data_dir {
            Some(dir) => load_or_create_ca(dir)?,
            None => new_ca()?,
        };
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(cert_error)?;
        let mut names = vec![hostname.to_owned()];
        for name in std::iter::once("localhost").chain(extra_names.iter().copied()) {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                names.push(name.to_owned());
            }
        }
        let mut params = CertificateParams::new(names).map_err(cert_error)?;
        for ip in [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ] {
            params.subject_alt_names.push(SanType::IpAddress(ip));
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, hostname);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(365);
        let key = KeyPair::generate().map_err(cert_error)?;
        let cert = params.signed_by(&key, &issuer).map_err(cert_error)?;
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| EmulatorError::Tls(format!("reading the CA certificate: {e}")))?;
        Ok(Self {
            chain: vec![cert.der().clone(), ca_der],
            key: PrivateKeyDer::try_from(key.serialize_der())
                .map_err(|e| EmulatorError::Tls(e.to_owned()))?,
            ca_pem,
        })
    }

    /// The user's PEM chain and key. The chain's own validity and names are not checked here:
    /// a mismatch shows up as the client's own TLS error, which names the cause better. An
    /// empty chain or an unreadable file is an error naming the file.
    fn from_files(cert: &Path, key: &Path, ca: Option<&Path>) -> Result<Self, EmulatorError> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| EmulatorError::Tls(format!("reading {}: {e}", cert.display())))?;
        if chain.is_empty() {
            return Err(EmulatorError::Tls(format!(
                "{} holds no certificate",
                cert.display()
            )));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| EmulatorError::Tls(format!("reading {}: {e}", key.display())))?;
        let ca_pem = match ca {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| EmulatorError::Tls(format!("reading {}: {e}", path.display())))?,
            None => pem_encode(chain.last().map(|c| c.as_ref()).unwrap_or_default()),
        };
        Ok(Self { ca_pem, chain, key })
    }

    /// A rustls server configuration with ALPN `http/1.1` for the HTTPS endpoint (which also
    /// carries MQTT over WebSockets, so it asks for a client certificate too).
    pub(crate) fn https_config(&self) -> Result<Arc<ServerConfig>, EmulatorError> {
        let mut config = self.base_config()?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A rustls server configuration for the MQTT and AMQP endpoints.
    pub(crate) fn plain_config(&self) -> Result<Arc<ServerConfig>, EmulatorError> {
        Ok(Arc::new(self.base_config()?))
    }

    /// Every endpoint asks for a client certificate and does not require one: SAS clients
    /// send none, X.509 clients prove they hold their certificate's key in the handshake, and
    /// the hub decides afterwards whether that certificate belongs to the identity (its
    /// thumbprint), as IoT Hub does.
    fn base_config(&self) -> Result<ServerConfig, EmulatorError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| EmulatorError::Tls(e.to_string()))?
            .with_client_cert_verifier(Arc::new(AnyClientCertificate { provider }))
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| EmulatorError::Tls(format!("server certificate: {e}")))
    }
}

/// Accepts any client certificate whose key signed the handshake; identity checks come later.
///
/// Chain validation is skipped on purpose: a self-signed device certificate has no chain,
/// and for CA-signed ones the trust anchors are the hub's registered CAs, which can change at
/// run time and are consulted per identity. The handshake signature is still verified, so a
/// client cannot present a certificate whose key it does not hold.
#[derive(Debug)]
struct AnyClientCertificate {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::server::danger::ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Upper-case hex SHA-1 and SHA-256 thumbprints of a certificate (DER), as IoT Hub stores them.
/// Both are computed because an identity may register either length.
pub(crate) fn thumbprints(der: &[u8]) -> (String, String) {
    let hex = |d: ring::digest::Digest| {
        d.as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<String>()
    };
    (
        hex(ring::digest::digest(
            &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            der,
        )),
        hex(ring::digest::digest(&ring::digest::SHA256, der)),
    )
}

/// A new self-signed CA (ECDSA P-256, ten years, back-dated a day against clock skew) whose
/// subject says it is for local testing only.
fn new_ca() -> Result<(String, KeyPair), EmulatorError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Azure IoT Hub emulator CA");
    dn.push(
        DnType::OrganizationName,
        "azure-iot emulator (local testing only)",
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(3650);
    let key = KeyPair::generate().map_err(cert_error)?;
    let cert = params.self_signed(&key).map_err(cert_error)?;
    Ok((cert.pem(), key))
}

/// The CA from the data directory, or a new one written there (key first, owner-only) when
/// either file is missing. Keeping it is what lets clients trust `ca.pem` once.
fn load_or_create_ca(dir: &Path) -> Result<(String, KeyPair), EmulatorError> {
    let cert_path = dir.join(CA_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    if cert_path.exists() && key_path.exists() {
        let ca_pem = std::fs::read_to_string(&cert_path)?;
        let key_pem = std::fs::read_to_string(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(cert_error)?;
        return Ok((ca_pem, key));
    }
    let (ca_pem, key) = new_ca()?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    write_private(&cert_path, ca_pem.as_bytes())?;
    Ok((ca_pem, key))
}

/// Writes a file readable by its owner only (where the platform has permissions).
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// PEM text of a DER certificate.
pub(crate) fn pem_encode(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// A certificate-generation failure as a start-up error.
fn cert_error(e: rcgen::Error) -> EmulatorError {
    EmulatorError::Tls(format!("certificate generation: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first =
            TlsMaterial::load(&TlsSource::Generated, Some(dir.path()), "myhub", &[]).unwrap();
        let second =
            TlsMaterial::load(&TlsSource::Generated, Some(dir.path()), "other", &[]).unwrap();
        assert_eq!(first.ca_pem, second.ca_pem);
        assert!(first.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(first.chain.len(), 2);
        first.https_config().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "CA key must not be readable by others");
        }
    }

    #[test]
    fn user_files_are_used_and_bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let material = TlsMaterial::load(&TlsSource::Generated, None, "h", &[]).unwrap();
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        let chain_pem: String = material.chain.iter().map(|c| pem_encode(c)).collect();
        std::fs::write(&cert_path, chain_pem).unwrap();
        std::fs::write(&key_path, "not a key").unwrap();
        let source = TlsSource::Files {
            cert: cert_path.clone(),
            key: key_path.clone(),
            ca: None,
        };
        let err = TlsMaterial::load(&source, None, "h", &[]).err().unwrap();
        assert!(err.to_string().contains("key.pem"), "{err}");
        let missing = TlsSource::Files {
            cert: dir.path().join("nope.pem"),
            key: key_path,
            ca: None,
        };
        assert!(TlsMaterial::load(&missing, None, "h", &[]).is_err());
    }
}
