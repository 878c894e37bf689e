//! How a device proves who it is to DPS, and the credential it then uses at the hub.
//!
//! * A symmetric key (individual enrollment) or a key derived from an enrollment group's key
//!   (`HMAC-SHA256(group key, registration id)`, `dps.md` §7.3): DPS gets a SAS token for
//!   `{idScope}/registrations/{registrationId}` (`skn=registration`), signed over the encoded
//!   resource as C# and Python do; the hub later gets a token from the same key.
//! * A ready-made SAS token: sent as is; it cannot be used at the hub (no key).
//! * An X.509 certificate chain: presented in the TLS handshake, no token; the registration id
//!   defaults to the leaf certificate's subject common name.
//! * A TPM (feature `tpm`, the `tpm` module): the EK and SRK go in the register request, the
//!   token is signed inside the TPM after DPS's challenge; the registration id defaults to
//!   the one derived from the EK.
//!
//! `Debug` never shows a key, a token or certificate bytes.

use std::fmt;
use std::time::Duration;

use azure_iot_core::sas::{ResourceUri, SasToken, SharedAccessKey};
use azure_iot_device::X509Certificate;
use azure_iot_protocol::dps::DEVICE_KEY_NAME;

use crate::error::{Error, Result};

/// What the device attests with.
#[derive(Clone)]
pub enum Attestation {
    /// The device's own symmetric key (an individual enrollment).
    SymmetricKey(SharedAccessKey),
    /// An enrollment group's key: the device's key is derived from it and the registration id.
    GroupKey(SharedAccessKey),
    /// A SAS token made elsewhere for `{idScope}/registrations/{registrationId}`.
    SasToken(SasToken),
    /// An X.509 certificate chain (device certificate first) and its private key.
    X509(X509Certificate),
    /// A TPM 2.0: DPS checks the endorsement key and gives the TPM an identity key that signs
    /// the tokens (HTTPS and AMQP only).
    #[cfg(feature = "tpm")]
    Tpm(crate::tpm::TpmAttestation),
}

impl fmt::Debug for Attestation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SymmetricKey(_) => f.write_str("SymmetricKey(<redacted>)"),
            Self::GroupKey(_) => f.write_str("GroupKey(<redacted>)"),
            Self::SasToken(token) => f.debug_tuple("SasToken").field(token).finish(),
            Self::X509(cert) => f.debug_tuple("X509").field(cert).finish(),
            #[cfg(feature = "tpm")]
            Self::Tpm(tpm) => f.debug_tuple("Tpm").field(tpm).finish(),
        }
    }
}

impl Attestation {
    /// An individual enrollment's key, base64 as the portal shows it.
    pub fn symmetric_key(key_base64: &str) -> Result<Self> {
        Ok(Self::SymmetricKey(key_from_base64(key_base64)?))
    }

    /// An enrollment group's key, base64; the device key is derived per registration id.
    pub fn group_key(key_base64: &str) -> Result<Self> {
        Ok(Self::GroupKey(key_from_base64(key_base64)?))
    }

    /// A ready-made SAS token (`SharedAccessSignature sr=…&sig=…&se=…[&skn=registration]`).
    pub fn sas_token(token: &str) -> Result<Self> {
        SasToken::parse(token.trim())
            .map(Self::SasToken)
            .map_err(|_| {
                Error::InvalidArgument(
                    "the SAS token is not `SharedAccessSignature sr=…&sig=…&se=…`".to_owned(),
                )
            })
    }

    /// A PEM certificate chain (device certificate first) and PEM private key.
    pub fn x509_pem(certificate_pem: &str, key_pem: &str) -> Result<Self> {
        Ok(Self::X509(X509Certificate::from_pem(
            certificate_pem,
            key_pem,
        )?))
    }

    /// The registration id a certificate names (its subject common name), or a TPM's
    /// (derived from its EK). `None` for the other attestations, or a certificate without one.
    pub(crate) fn default_registration_id(&self) -> Option<String> {
        #[cfg(feature = "tpm")]
        if let Self::Tpm(tpm) = self {
            return Some(tpm.registration_id());
        }
        let Self::X509(cert) = self else { return None };
        let leaf = cert.chain().first()?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        let cn = parsed.subject().iter_common_name().next()?.as_str().ok()?;
        Some(cn.to_owned())
    }

    /// The certificate to present in TLS, if any.
    pub(crate) fn certificate(&self) -> Option<&X509Certificate> {
        match self {
            Self::X509(cert) => Some(cert),
            _ => None,
        }
    }

    /// The device key the hub will know, if this attestation has one (the individual key, or
    /// the group key derived for `registration_id`).
    pub(crate) fn device_key(&self, registration_id: &str) -> Option<SharedAccessKey> {
        match self {
            Self::SymmetricKey(key) => Some(key.clone()),
            Self::GroupKey(group) => Some(group.derive_for_registration(registration_id)),
            _ => None,
        }
    }

    /// The DPS token for `{id_scope}/registrations/{registration_id}` living `ttl`, or `None`
    /// for X.509 (authenticated by TLS).
    pub(crate) fn token(
        &self,
        id_scope: &str,
        registration_id: &str,
        ttl: Duration,
    ) -> Option<String> {
        if let Self::SasToken(token) = self {
            return Some(token.secret().to_owned());
        }
        let key = self.device_key(registration_id)?;
        let resource = ResourceUri::dps_registration(id_scope, registration_id);
        let token = SasToken::generate_with_ttl(&resource, &key, Some(DEVICE_KEY_NAME), ttl);
        Some(token.secret().to_owned())
    }
}

/// A base64 key, or an error that does not echo it.
fn key_from_base64(text: &str) -> Result<SharedAccessKey> {
    SharedAccessKey::from_base64(text.trim())
        .map_err(|_| Error::InvalidArgument("the symmetric key is not valid base64".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    #[test]
    fn group_key_derives_the_device_key() {
        let group = Attestation::group_key(KEY).unwrap();
        let derived = group.device_key("dev-1").unwrap();
        let expected = SharedAccessKey::from_base64(KEY)
            .unwrap()
            .derive_for_registration("dev-1");
        assert_eq!(derived.to_base64(), expected.to_base64());
        assert_ne!(derived.to_base64(), KEY);
        let individual = Attestation::symmetric_key(KEY).unwrap();
        assert_eq!(individual.device_key("dev-1").unwrap().to_base64(), KEY);
    }

    #[test]
    fn tokens_are_for_the_registration_and_signed_by_the_device_key() {
        let group = Attestation::group_key(KEY).unwrap();
        let text = group
            .token("0ne0001", "dev-1", Duration::from_secs(60))
            .unwrap();
        let token = SasToken::parse(&text).unwrap();
        assert_eq!(token.resource(), "0ne0001/registrations/dev-1");
        assert_eq!(token.key_name(), Some("registration"));
        assert!(token.signature_matches(&group.device_key("dev-1").unwrap()));
        assert!(!token.signature_matches(&SharedAccessKey::from_base64(KEY).unwrap()));
    }

    #[test]
    fn debug_and_errors_hide_secrets() {
        let key = Attestation::symmetric_key(KEY).unwrap();
        assert!(!format!("{key:?}").contains(KEY));
        let err = Attestation::symmetric_key("not base64!!").unwrap_err();
        assert!(!err.to_string().contains("not base64!!"));
        let token = key.token("s", "r", Duration::from_secs(60)).unwrap();
        let given = Attestation::sas_token(&token).unwrap();
        let sig = token
            .split("sig=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        assert!(!format!("{given:?}").contains(sig));
    }
}
