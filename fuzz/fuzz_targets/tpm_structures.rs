//! TPM structures as DPS's TPM attestation carries them (EKs and SRKs from devices, activation
//! blobs from DPS): parsing never panics, and whatever parses marshals back to the same bytes.
#![no_main]

use azure_iot_protocol::tpm::{
    ActivationBlob, Public, Sensitive, Wrapped, default_registration_id,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(public) = Public::parse(data) {
        assert_eq!(public.to_bytes().as_deref(), Ok(data));
        let _ = public.name();
    }
    if let Ok(public) = Public::from_tpm2b(data) {
        assert_eq!(public.to_tpm2b().as_deref(), Ok(data));
    }
    if let Ok(blob) = ActivationBlob::parse(data) {
        assert_eq!(blob.to_bytes().as_deref(), Ok(data));
        if let Ok(wrapped) = Wrapped::parse(&blob.credential_blob) {
            assert_eq!(wrapped.to_bytes(), Ok(blob.credential_blob.clone()));
        }
        let _ = Public::parse(&blob.identity_public);
    }
    if let Ok(sensitive) = Sensitive::parse(data) {
        assert_eq!(sensitive.to_bytes().as_deref(), Ok(data));
    }
    let _ = default_registration_id(data);
});
