//! CA certificates registered with the hub, and X.509 device authentication.
//!
//! * Self-signed ("thumbprint") identities: the certificate presented in the TLS handshake must
//!   have a registered SHA-1 or SHA-256 thumbprint.
//! * CA-signed identities: the presented chain must lead to a CA registered with the hub
//!   (`PUT /certificates/{name}`, or `azure-iot hub ca add`) and the leaf's subject common name
//!   must be the device id (for a module too). The real hub also asks for proof of possession
//!   before a CA counts; the emulator treats a registered CA as verified.
//!
//! In both cases the TLS layer has already checked that the client holds the certificate's
//! private key (it signed the handshake).
//!
//! Refusals are neutral (`Refusal::not_authorized` with a reason for the log); each device
//! front-end maps them to its own wire form (CONNACK 5 on MQTT). The reason names what did not
//! match (thumbprint, chain, common name) but never the certificate's contents beyond that.
//! CA registrations are write-through like everything else: the `certificates` row is
//! committed before the in-memory map changes.

use std::collections::BTreeMap;

use rustls_pki_types::{CertificateDer, UnixTime};
use serde_json::{Value, json};

use super::HubState;
use super::devices::Grant;
use super::error::{ErrorCode, HubError};
use super::identity::{AuthType, Credentials};
use super::state::now;
use crate::device::Refusal;
use crate::store::Change;
use azure_iot_protocol::Identity;

/// A registered CA.
#[derive(Debug, Clone)]
pub(crate) struct CaCertificate {
    /// The certificate, used as a trust anchor for `certificateAuthority` devices.
    pub(crate) der: CertificateDer<'static>,
    /// The same certificate as PEM, as stored and as returned in `properties.certificate`.
    pub(crate) pem: String,
    /// Registration time (the `created` and `updated` properties).
    pub(crate) created: String,
}

impl CaCertificate {
    /// A CA to register now under `name`: the name must use only `A-Z a-z 0-9 - _ .` (safe in
    /// a URL path) and `certificate` must parse ([`parse_certificate`]); otherwise 400. Shared
    /// by the hub's and DPS's CA registries.
    pub(crate) fn new(name: &str, certificate: &str) -> Result<Self, HubError> {
        if name.is_empty()
            || name.len() > 128
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(HubError::invalid(
                "a certificate name uses 1 to 128 of A-Z a-z 0-9 - _ .",
            ));
        }
        let der = parse_certificate(certificate)?;
        let pem = crate::tls::pem_encode(&der);
        Ok(Self {
            der,
            pem,
            created: now(),
        })
    }
}

/// Parses a certificate given as PEM, as base64 DER (the two forms the hub's certificate API
/// and `az iot hub certificate create` send) or as base64 of the PEM text (what the Node DPS
/// samples put in enrollment groups). Anything that is not a parseable X.509 certificate is
/// 400, so a registered CA is always usable as a trust anchor later.
pub(crate) fn parse_certificate(text: &str) -> Result<CertificateDer<'static>, HubError> {
    use base64::Engine as _;
    use rustls_pki_types::pem::PemObject;
    let pem = |text: &[u8]| {
        CertificateDer::from_pem_slice(text)
            .map_err(|e| HubError::invalid(format!("the certificate PEM is invalid: {e}")))
    };
    let text = text.trim();
    let der = if text.starts_with("-----BEGIN") {
        pem(text.as_bytes())?
    } else {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| HubError::invalid("the certificate is neither PEM nor base64"))?;
        if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            pem(&bytes)?
        } else {
            CertificateDer::from(bytes)
        }
    };
    x509_parser::parse_x509_certificate(&der)
        .map_err(|e| HubError::invalid(format!("the certificate is not valid X.509: {e}")))?;
    Ok(der)
}

/// Verifies that the presented `chain` (leaf first) is valid for client authentication now,
/// through its intermediates, to one of `anchors`. The error says why, without certificate
/// contents.
pub(crate) fn verify_client_chain(
    chain: &[CertificateDer<'static>],
    anchors: &[CertificateDer<'static>],
) -> Result<(), String> {
    let leaf = chain.first().ok_or("no client certificate")?;
    let anchors: Vec<_> = anchors
        .iter()
        .filter_map(|ca| webpki::anchor_from_trusted_cert(ca).ok())
        .collect();
    let end_entity = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| format!("the client certificate is unusable: {e}"))?;
    let algorithms = rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all;
    end_entity
        .verify_for_usage(
            algorithms,
            &anchors,
            chain.get(1..).unwrap_or_default(),
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The first common name in the certificate's subject, if it has one.
pub(crate) fn subject_common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}

/// The REST shape of a registered CA (`CertificateDescription`): `name`, `etag` and
/// `properties` with subject, expiry, SHA-256 thumbprint, `isVerified` (always true here: no
/// proof of possession is asked) and the PEM. The ETag derives from the thumbprint, so it
/// changes exactly when the certificate does. DPS's CA registry answers the same shape.
pub(crate) fn describe(name: &str, ca: &CaCertificate) -> Value {
    let (_, sha256) = crate::tls::thumbprints(&ca.der);
    let (subject, expiry) = x509_parser::parse_x509_certificate(&ca.der)
        .map(|(_, c)| (c.subject().to_string(), c.validity().not_after.to_string()))
        .unwrap_or_default();
    json!({
        "name": name,
        "etag": sha256.get(..16).unwrap_or_default(),
        "properties": {
            "subject": subject,
            "expiry": expiry,
            "thumbprint": sha256,
            "isVerified": true,
            "created": ca.created,
            "updated": ca.created,
            "certificate": ca.pem,
        }
    })
}

impl HubState {
    /// `PUT /certificates/{name}`: registers (or replaces) a CA.
    ///
    /// Names are limited to `A-Z a-z 0-9 - _ .` ([`CaCertificate::new`]). A replacement takes effect for the next device connection; connections already
    /// authenticated with the old CA stay up.
    pub(crate) fn put_ca(&mut self, name: &str, certificate: &str) -> Result<Value, HubError> {
        let ca = CaCertificate::new(name, certificate)?;
        self.store
            .apply(&[Change::PutCertificate(name, &ca.pem, &ca.created)])?;
        let json = describe(name, &ca);
        self.certificates.insert(name.to_owned(), ca);
        Ok(json)
    }

    /// `GET /certificates/{name}`; 404 when there is no CA of that name.
    pub(crate) fn get_ca(&self, name: &str) -> Result<Value, HubError> {
        self.certificates
            .get(name)
            .map(|ca| describe(name, ca))
            .ok_or_else(|| {
                HubError::new(
                    ErrorCode::EndpointNotFound,
                    format!("no certificate named {name}"),
                )
            })
    }

    /// `GET /certificates`: `{"value": [...]}` in name order, the hub's list shape.
    pub(crate) fn list_cas(&self) -> Value {
        json!({"value": self.certificates.iter().map(|(n, ca)| describe(n, ca)).collect::<Vec<_>>()})
    }

    /// `DELETE /certificates/{name}`; 404 when there is none. Devices that chained to it
    /// are refused from their next connection on.
    pub(crate) fn delete_ca(&mut self, name: &str) -> Result<(), HubError> {
        if !self.certificates.contains_key(name) {
            return Err(HubError::new(
                ErrorCode::EndpointNotFound,
                format!("no certificate named {name}"),
            ));
        }
        self.store.apply(&[Change::DeleteCertificate(name)])?;
        self.certificates.remove(name);
        Ok(())
    }

    /// X.509 authentication of `identity` with the presented chain (leaf first).
    ///
    /// `selfSigned`: the leaf's SHA-1 or SHA-256 thumbprint must equal a registered one.
    /// `certificateAuthority`: the leaf must verify for client authentication, at the current
    /// time, through the presented intermediates to any registered CA, and its subject CN must
    /// be the device id (also for a module, whose certificate names its device). Any other
    /// authentication type is refused: a SAS identity cannot switch to certificates. The grant
    /// has no expiry (a certificate session is not cut at a token's `se`).
    pub(super) fn authenticate_certificate(
        &self,
        identity: &Identity,
        credentials: &Credentials,
        chain: &[CertificateDer<'static>],
    ) -> Result<Grant, Refusal> {
        let leaf = chain
            .first()
            .ok_or_else(|| Refusal::not_authorized("no client certificate"))?;
        let grant = Grant {
            expires_at: None,
            auth_method: "x509",
        };
        match credentials.auth_type {
            AuthType::SelfSigned => {
                let (sha1, sha256) = crate::tls::thumbprints(leaf);
                let registered = [
                    &credentials.primary_thumbprint,
                    &credentials.secondary_thumbprint,
                ];
                if registered
                    .into_iter()
                    .flatten()
                    .any(|t| *t == sha1 || *t == sha256)
                {
                    Ok(grant)
                } else {
                    Err(Refusal::not_authorized(format!(
                        "the client certificate's thumbprint is not registered for {identity}"
                    )))
                }
            }
            AuthType::CertificateAuthority => {
                let anchors: Vec<_> = self
                    .certificates
                    .values()
                    .map(|ca| ca.der.clone())
                    .collect();
                verify_client_chain(chain, &anchors).map_err(|e| {
                    Refusal::not_authorized(format!(
                        "the client certificate does not chain to a CA registered with the hub: {e}"
                    ))
                })?;
                match subject_common_name(leaf) {
                    Some(cn) if cn == identity.device_id() => Ok(grant),
                    other => Err(Refusal::not_authorized(format!(
                        "the certificate's common name {other:?} is not the device id {}",
                        identity.device_id()
                    ))),
                }
            }
            other => Err(Refusal::not_authorized(format!(
                "{identity} authenticates with {}, not an X.509 certificate",
                other.as_str()
            ))),
        }
    }
}

/// The hub's registered CAs, by name.
pub(crate) type Certificates = BTreeMap<String, CaCertificate>;

/// Loads the registered CAs. A stored PEM that no longer parses stops the start with an error
/// naming the CA, rather than silently dropping a trust anchor devices rely on.
pub(crate) fn load(
    store: &crate::store::Store,
) -> Result<Certificates, crate::error::EmulatorError> {
    let mut out = Certificates::new();
    for (name, pem, created) in store.certificates()? {
        let der = parse_certificate(&pem).map_err(|e| {
            crate::error::EmulatorError::Storage(format!("CA {name}: {}", e.message))
        })?;
        out.insert(name, CaCertificate { der, pem, created });
    }
    Ok(out)
}
