//! TPM responses as a TPM (or something pretending to be one) sends them: every command's
//! response parser gets the fuzz input as its answer and must return a value or a typed
//! error, never panic or allocate past the response's size.
#![no_main]

use azure_iot_tpm::transport::Transport;
use azure_iot_tpm::{Activation, Tpm};
use libfuzzer_sys::fuzz_target;

/// Answers every command with the same bytes.
struct Canned(Vec<u8>);

impl Transport for Canned {
    fn transact(&mut self, _command: &[u8]) -> azure_iot_tpm::Result<Vec<u8>> {
        Ok(self.0.clone())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut tpm = Tpm::new(Canned(data.to_vec()));
    let _ = tpm.startup();
    let _ = tpm.create_primary(azure_iot_tpm::RH_OWNER, &azure_iot_tpm::srk_template());
    let _ = tpm.read_public(0x8100_0001);
    let _ = tpm.evict_control(0x8000_0000, 0x8100_0001);
    let _ = tpm.start_policy_session();
    let _ = tpm.policy_secret_endorsement(0x0300_0000);
    let _ = tpm.activate_credential(0x8100_0001, 0x8101_0001, 0x0300_0000, b"blob", b"secret");
    let _ = tpm.import(0x8100_0001, b"", b"public", b"dup", b"seed", None);
    let _ = tpm.load(0x8100_0001, b"private", b"public");
    let _ = tpm.hmac(0x8100_0100, b"short");
    let _ = tpm.hmac(0x8100_0100, &[0u8; 1500]);
    let _ = tpm.flush_context(0x8000_0000);
    let _ = tpm.endorsement_key();
    let _ = tpm.install_identity_key(&Activation {
        credential_blob: b"c",
        secret: b"s",
        duplicate: b"d",
        encrypted_seed: b"e",
        public: b"p",
    });
});
