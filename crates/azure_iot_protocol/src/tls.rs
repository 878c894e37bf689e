//! The client side of TLS to the hub: which roots to trust and the one crypto provider.
//!
//! Every client in the workspace (device, service, provisioning) trusts either the CA the
//! caller gives (the emulator's `ca.pem`, a private gateway's CA) or the operating system's
//! roots, which is what trusts the real Azure IoT Hub. The configuration always uses rustls's
//! ring provider (DESIGN.md: one provider in the tree) with its safe protocol versions.
//!
//! This module builds configurations only; it opens no socket.

use std::fmt;
use std::sync::Arc;

use rustls::client::WantsClientCert;
use rustls::{ClientConfig, ConfigBuilder, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Why the trusted roots could not be assembled.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RootsError {
    /// The trusted CA text is not valid PEM.
    InvalidPem,
    /// A certificate in the PEM cannot serve as a trust anchor.
    UnusableCertificate,
    /// The PEM holds no certificate.
    NoCertificate,
    /// No CA was given and the operating system's store has no usable root.
    NoNativeRoots,
}

impl RootsError {
    /// Whether the caller's argument is at fault (as opposed to the machine's set-up).
    pub fn is_invalid_argument(&self) -> bool {
        !matches!(self, RootsError::NoNativeRoots)
    }
}

impl fmt::Display for RootsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RootsError::InvalidPem => "the trusted CA is not valid PEM",
            RootsError::UnusableCertificate => {
                "the trusted CA certificate is not usable as a trust anchor"
            }
            RootsError::NoCertificate => "the trusted CA PEM holds no certificate",
            RootsError::NoNativeRoots => {
                "no trusted root certificates found in the operating system's store; \
                 install ca-certificates or give the client a trusted CA"
            }
        })
    }
}

impl std::error::Error for RootsError {}

/// The roots to trust: the certificates in `trusted_ca_pem`, or the operating system's.
pub fn root_store(trusted_ca_pem: Option<&str>) -> Result<RootCertStore, RootsError> {
    let mut roots = RootCertStore::empty();
    match trusted_ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|_| RootsError::InvalidPem)?;
                roots
                    .add(cert)
                    .map_err(|_| RootsError::UnusableCertificate)?;
            }
            if roots.is_empty() {
                return Err(RootsError::NoCertificate);
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err(RootsError::NoNativeRoots);
            }
        }
    }
    Ok(roots)
}

/// A client configuration builder on the ring provider that trusts `roots`; the caller adds
/// a client certificate or none.
pub fn client_config_builder(
    roots: RootCertStore,
) -> Result<ConfigBuilder<ClientConfig, WantsClientCert>, rustls::Error> {
    Ok(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pem_is_an_invalid_argument() {
        assert_eq!(
            root_store(Some("not a certificate")).unwrap_err(),
            RootsError::NoCertificate
        );
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let err = root_store(Some(broken)).unwrap_err();
        assert!(err.is_invalid_argument(), "{err:?}");
        assert!(!RootsError::NoNativeRoots.is_invalid_argument());
    }
}
