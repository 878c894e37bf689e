//! Who a registering device is: its credential checked against the enrollments (symmetric key
//! individual or group-derived, X.509 individual or group).
//!
//! * SAS: `skn` must be `registration` or absent; the decoded `sr` must name this scope and the
//!   registration; the signature is checked over `sr` exactly as sent, in constant time, with
//!   the individual enrollment's keys if one exists (an individual enrollment wins, and there
//!   is no fallback to groups), else with each symmetric-key group's keys derived for the
//!   registration id.
//! * X.509: the leaf's subject CN must be the registration id; an individual enrollment matches
//!   by the exact certificate (DER); a group matches when the presented chain verifies, now and
//!   for client authentication, up to one of its signing certificates or one of the CAs
//!   registered with the DPS that its `caReferences` name (`certificates`).
//!
//! * TPM (individual enrollments only): the SAS token must be signed with the identity key
//!   that the registration's last TPM challenge gave the device's TPM (`tpm::session`), and
//!   that challenge must have been for the enrollment's endorsement key.
//!
//! Every refusal is 401 with [`code::UNAUTHORIZED`]; the reason names what did not match,
//! never a key or a token.

use std::time::SystemTime;

use azure_iot_core::sas::{SasToken, SharedAccessKey};
use azure_iot_protocol::dps::DEVICE_KEY_NAME;
use azure_iot_protocol::dps::enrollment::{
    AttestationType, EnrollmentGroup, IndividualEnrollment, X509Certificates,
};
use azure_iot_protocol::dps::registration::X509RegistrationResult;
use rustls_pki_types::CertificateDer;

use super::records::code;
use super::state::{DpsState, certificate_info};
use super::tpm::session::TpmSession;
use super::{DeviceCredential, DeviceLogin, DpsError};
use crate::hub::provision::ProvisionedCredential;

/// The enrollment a device matched.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// An individual enrollment.
    Individual(Box<IndividualEnrollment>),
    /// An enrollment group.
    Group(Box<EnrollmentGroup>),
}

/// A device whose credential checked out.
#[derive(Debug, Clone)]
pub(crate) struct Attested {
    /// What it matched.
    pub(crate) source: Source,
    /// What the hub identity gets.
    pub(crate) credential: ProvisionedCredential,
    /// For X.509: the certificate facts of the registration result.
    pub(crate) x509: Option<X509RegistrationResult>,
    /// For TPM: the keys of the challenge the device answered (the hub key is made for them).
    pub(crate) tpm: Option<TpmSession>,
}

impl Attested {
    /// The group id, if a group matched.
    pub(crate) fn group_id(&self) -> Option<&str> {
        match &self.source {
            Source::Group(g) => Some(&g.enrollment_group_id),
            Source::Individual(_) => None,
        }
    }
}

impl DpsState {
    /// Checks `login`'s credential (its id scope was checked by the caller).
    pub(crate) fn attest(&self, login: &DeviceLogin) -> Result<Attested, DpsError> {
        super::state::validate_id("registration", &login.registration_id)?;
        match &login.credential {
            DeviceCredential::SasToken(token) => self.attest_sas(login, token),
            DeviceCredential::X509(chain) => self.attest_x509(login, chain),
        }
    }

    fn attest_sas(&self, login: &DeviceLogin, text: &str) -> Result<Attested, DpsError> {
        let token = SasToken::parse(text.trim())
            .map_err(|e| DpsError::unauthorized(format!("the SAS token is invalid: {e}")))?;
        if token
            .key_name()
            .is_some_and(|name| !name.is_empty() && name != DEVICE_KEY_NAME)
        {
            return Err(DpsError::unauthorized(
                "a device's DPS token must name the key `registration` (skn) or none",
            ));
        }
        let expected =
            azure_iot_protocol::dps::registration_path(&login.id_scope, &login.registration_id);
        if !token.resource().eq_ignore_ascii_case(&expected) {
            return Err(DpsError::unauthorized(
                "the SAS token's resource (sr) does not name this id scope and registration",
            ));
        }
        let now = SystemTime::now();
        // The key that verifies, if any (each check is constant-time).
        let verifying = |keys: [&str; 2]| -> Result<Option<String>, DpsError> {
            for key in keys {
                let Ok(key) = SharedAccessKey::from_base64(key) else {
                    continue;
                };
                match token.verify([&key], now) {
                    Ok(()) => return Ok(Some(key.to_base64())),
                    Err(azure_iot_core::sas::SasError::Expired { .. }) => {
                        return Err(DpsError::unauthorized("the SAS token has expired"));
                    }
                    Err(_) => {}
                }
            }
            Ok(None)
        };
        if let Some(enrollment) = self
            .enrollments
            .get(&login.registration_id.to_ascii_lowercase())
        {
            if enrollment.attestation.kind == AttestationType::Tpm {
                return self.attest_tpm(login, enrollment, &token, now);
            }
            let keys = enrollment
                .attestation
                .symmetric_key
                .as_ref()
                .filter(|_| enrollment.attestation.kind == AttestationType::SymmetricKey)
                .ok_or_else(|| {
                    DpsError::unauthorized(
                        "the registration's enrollment does not use symmetric keys",
                    )
                })?;
            return match verifying([&keys.primary_key, &keys.secondary_key])? {
                Some(key) => Ok(Attested {
                    source: Source::Individual(Box::new(enrollment.clone())),
                    credential: ProvisionedCredential::SymmetricKey(key),
                    x509: None,
                    tpm: None,
                }),
                None => Err(DpsError::unauthorized(
                    "the SAS token is not signed with the enrollment's key",
                )),
            };
        }
        for group in self.groups.values() {
            let Some(keys) = group
                .attestation
                .symmetric_key
                .as_ref()
                .filter(|_| group.attestation.kind == AttestationType::SymmetricKey)
            else {
                continue;
            };
            let derived = [&keys.primary_key, &keys.secondary_key].map(|k| {
                SharedAccessKey::from_base64(k)
                    .map(|k| {
                        k.derive_for_registration(&login.registration_id)
                            .to_base64()
                    })
                    .unwrap_or_default()
            });
            if let Some(key) = verifying([&derived[0], &derived[1]])? {
                return Ok(Attested {
                    source: Source::Group(Box::new(group.clone())),
                    credential: ProvisionedCredential::SymmetricKey(key),
                    x509: None,
                    tpm: None,
                });
            }
        }
        Err(DpsError::unauthorized(
            "no enrollment or enrollment group accepts this registration and key",
        ))
    }

    /// A TPM enrollment: the token must be signed with the identity key of the registration's
    /// last challenge, which must have been for the enrollment's current EK.
    fn attest_tpm(
        &self,
        login: &DeviceLogin,
        enrollment: &IndividualEnrollment,
        token: &SasToken,
        now: SystemTime,
    ) -> Result<Attested, DpsError> {
        let session = self
            .tpm_sessions
            .get(&login.registration_id.to_ascii_lowercase())
            .ok_or_else(|| {
                DpsError::unauthorized(
                    "no TPM challenge was issued to this registration: register without a \
                     token first (HTTPS) or use SASL TPM (AMQP)",
                )
            })?;
        let ek = session.keys().map(|(ek, _)| ek).unwrap_or_default();
        self.check_tpm_enrollment(&enrollment.registration_id, &ek)?;
        let key = SharedAccessKey::from_base64(session.identity_key_base64())
            .map_err(|_| DpsError::internal("a stored TPM identity key is unreadable"))?;
        match token.verify([&key], now) {
            Ok(()) => Ok(Attested {
                source: Source::Individual(Box::new(enrollment.clone())),
                // Replaced by a new hub key in `register`.
                credential: ProvisionedCredential::SymmetricKey(String::new()),
                x509: None,
                tpm: Some(session.clone()),
            }),
            Err(azure_iot_core::sas::SasError::Expired { .. }) => {
                Err(DpsError::unauthorized("the SAS token has expired"))
            }
            Err(_) => Err(DpsError::unauthorized(
                "the SAS token is not signed with the identity key of the TPM challenge",
            )),
        }
    }

    fn attest_x509(
        &self,
        login: &DeviceLogin,
        chain: &[CertificateDer<'static>],
    ) -> Result<Attested, DpsError> {
        let leaf = chain
            .first()
            .ok_or_else(|| DpsError::unauthorized("no client certificate was presented"))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|_| DpsError::unauthorized("the client certificate is not valid X.509"))?;
        if !parsed.validity().is_valid() {
            return Err(DpsError::unauthorized(
                "the client certificate is expired or not valid yet",
            ));
        }
        match crate::hub::certificates::subject_common_name(leaf) {
            Some(cn) if cn.eq_ignore_ascii_case(&login.registration_id) => {}
            _ => {
                return Err(DpsError::unauthorized(
                    "the client certificate's common name is not the registration id",
                ));
            }
        }
        let (sha1, _) = crate::tls::thumbprints(leaf);
        let info = certificate_info(leaf);
        if let Some(enrollment) = self
            .enrollments
            .get(&login.registration_id.to_ascii_lowercase())
        {
            let matches = enrollment
                .attestation
                .x509
                .as_ref()
                .and_then(|x| x.client_certificates.as_ref())
                .is_some_and(|set| certificates(set).iter().any(|c| c == leaf));
            return if matches {
                Ok(Attested {
                    source: Source::Individual(Box::new(enrollment.clone())),
                    credential: ProvisionedCredential::Thumbprint(sha1),
                    x509: Some(X509RegistrationResult {
                        certificate_info: Some(info),
                        enrollment_group_id: None,
                        signing_certificate_info: None,
                    }),
                    tpm: None,
                })
            } else {
                Err(DpsError::unauthorized(
                    "the client certificate is not the enrollment's certificate",
                ))
            };
        }
        for group in self.groups.values() {
            for anchor in self.group_anchors(group) {
                if crate::hub::certificates::verify_client_chain(
                    chain,
                    std::slice::from_ref(&anchor),
                )
                .is_ok()
                {
                    return Ok(Attested {
                        source: Source::Group(Box::new(group.clone())),
                        credential: ProvisionedCredential::Thumbprint(sha1),
                        x509: Some(X509RegistrationResult {
                            certificate_info: Some(info),
                            enrollment_group_id: Some(group.enrollment_group_id.clone()),
                            signing_certificate_info: Some(certificate_info(&anchor)),
                        }),
                        tpm: None,
                    });
                }
            }
        }
        Err(DpsError::new(
            code::UNAUTHORIZED,
            "the client certificate matches no enrollment and chains to no group's signing certificate or referenced CA",
        ))
    }
}

impl DpsState {
    /// The trust anchors of an X.509 group: its signing certificates, then the registered CAs
    /// its `caReferences` name (a name no CA has any more contributes nothing).
    fn group_anchors(&self, group: &EnrollmentGroup) -> Vec<CertificateDer<'static>> {
        let Some(x509) = group
            .attestation
            .x509
            .as_ref()
            .filter(|_| group.attestation.kind == AttestationType::X509)
        else {
            return Vec::new();
        };
        let mut anchors = x509
            .signing_certificates
            .as_ref()
            .map(certificates)
            .unwrap_or_default();
        if let Some(references) = &x509.ca_references {
            anchors.extend(
                self.referenced_cas(references)
                    .into_iter()
                    .map(|ca| ca.der.clone()),
            );
        }
        anchors
    }
}

/// The parseable certificates of a primary/secondary pair.
fn certificates(set: &X509Certificates) -> Vec<CertificateDer<'static>> {
    [&set.primary, &set.secondary]
        .into_iter()
        .flatten()
        .filter_map(|slot| slot.certificate.as_deref())
        .filter_map(|text| crate::hub::certificates::parse_certificate(text).ok())
        .collect()
}
