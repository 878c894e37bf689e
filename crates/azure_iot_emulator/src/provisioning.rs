//! What the Device Provisioning Service's MQTT and AMQP device front-ends share: turning what
//! a connection presents into a [`DeviceLogin`], decoding register bodies, and encoding answers
//! and refusals as the JSON bodies every DPS binding sends.
//!
//! No DPS rule lives here (no key check, no enrollment lookup): those are the core's
//! (`crate::dps`), so MQTT, AMQP and HTTPS cannot disagree. What is here is only the shape
//! of the wire: which credential a connection carries, and that a body that is not JSON is a
//! 400 with DPS's error body.

use azure_iot_protocol::dps::registration::RegistrationRequest;
use rustls_pki_types::CertificateDer;

use crate::dps::{Answer, DeviceCredential, DeviceLogin, DpsError};

/// A DPS in memory beside `hub`, for the front-ends' contexts in unit tests and fuzz targets
/// (its state thread ends when its last handle is dropped).
pub(crate) fn in_memory_dps(
    hub: &crate::hub::Hub,
) -> Result<crate::dps::Dps, crate::EmulatorError> {
    let options = crate::dps::DpsOptions {
        hostname: "localhost".into(),
        hub_hostname: "localhost".into(),
        retry_after: 1,
        webhook_timeout: std::time::Duration::from_secs(5),
        // No webhook is trusted: these contexts have no CA.
        ca_pem: String::new(),
    };
    crate::dps::Dps::start(
        None,
        crate::config::Durability::default(),
        options,
        hub.clone(),
    )
    .map(|(dps, _thread)| dps)
}

/// DPS's code for a request whose body cannot be read (400004, "argument invalid").
const INVALID_BODY: i64 = 400_004;
/// DPS's code for a device that presents no credential at all (401002, unauthorized).
const NO_CREDENTIAL: i64 = 401_002;

/// The login of a device that named `id_scope` and `registration_id` and presented
/// `password` (a SAS token, over MQTT CONNECT or SASL PLAIN) or, without one, the TLS client
/// certificate chain `certificates` (X.509). A device with neither is refused with 401.
pub(crate) fn login(
    id_scope: &str,
    registration_id: &str,
    password: Option<&str>,
    certificates: &[CertificateDer<'static>],
) -> Result<DeviceLogin, DpsError> {
    let credential = match password.filter(|p| !p.is_empty()) {
        Some(token) => DeviceCredential::SasToken(token.to_owned()),
        None if !certificates.is_empty() => DeviceCredential::X509(certificates.to_vec()),
        None => {
            return Err(DpsError::new(
                NO_CREDENTIAL,
                "the device presented neither a SAS token nor a TLS client certificate",
            ));
        }
    };
    Ok(DeviceLogin {
        id_scope: id_scope.to_owned(),
        registration_id: registration_id.to_owned(),
        credential,
    })
}

/// A register request's body: JSON `DeviceRegistration`, or empty (C# sends nothing unless it
/// has a custom payload; the registration id then comes from the connection). Anything else
/// is a 400 with DPS's error body.
pub(crate) fn register_request(body: &[u8]) -> Result<RegistrationRequest, DpsError> {
    RegistrationRequest::from_body(body).map_err(|e| {
        DpsError::new(
            INVALID_BODY,
            format!("the register request body is not a DeviceRegistration JSON object: {e}"),
        )
    })
}

/// The JSON body of a successful answer (the operation status).
pub(crate) fn answer_body(answer: &Answer) -> Vec<u8> {
    serde_json::to_vec(&answer.body).unwrap_or_else(|_| b"{}".to_vec())
}

/// The JSON body of a refusal (DPS's error details). Clients parse every body as JSON (Node's
/// MQTT transport does, whatever the status), so there is always one.
pub(crate) fn error_body(error: &DpsError) -> Vec<u8> {
    serde_json::to_vec(&error.details).unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_wins_over_a_certificate_and_neither_is_refused() {
        let cert = CertificateDer::from(vec![1, 2, 3]);
        let with_token = login(
            "s",
            "r",
            Some("SharedAccessSignature x"),
            std::slice::from_ref(&cert),
        )
        .unwrap();
        assert!(matches!(
            with_token.credential,
            DeviceCredential::SasToken(_)
        ));
        let x509 = login("s", "r", Some(""), std::slice::from_ref(&cert)).unwrap();
        assert!(matches!(x509.credential, DeviceCredential::X509(ref c) if c.len() == 1));
        let refused = login("s", "r", None, &[]).unwrap_err();
        assert_eq!(refused.status, 401);
    }

    #[test]
    fn bodies_empty_json_and_garbage() {
        assert_eq!(
            register_request(b"").unwrap(),
            RegistrationRequest::default()
        );
        assert_eq!(
            register_request(b" ").unwrap(),
            RegistrationRequest::default()
        );
        let named = register_request(br#"{"registrationId":"r1","payload":null}"#).unwrap();
        assert_eq!(named.registration_id.as_deref(), Some("r1"));
        let bad = register_request(b"{not json").unwrap_err();
        assert_eq!(bad.status, 400);
        let body: serde_json::Value = serde_json::from_slice(&error_body(&bad)).unwrap();
        assert_eq!(body["errorCode"], 400_004);
    }
}
