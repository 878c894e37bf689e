//! SAS tokens as the emulator receives them in MQTT passwords, HTTP headers and CBS bodies:
//! parsing, verification and scope checks never panic, and a parsed token's text parses to
//! the same token.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use azure_iot_core::sas::{SasToken, SharedAccessKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Also try the text behind the prefix, so the fuzzer need not discover it.
    for candidate in [text.to_owned(), format!("SharedAccessSignature {text}")] {
        let Ok(token) = SasToken::parse(&candidate) else {
            continue;
        };
        assert_eq!(SasToken::parse(token.secret()).as_ref(), Ok(&token));
        let key = SharedAccessKey::from_bytes(vec![0; 32]).expect("non-empty key");
        let _ = token.verify([&key], UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let _ = token.covers("localhost/devices/dev1");
        let _ = token.check_covers_identity("localhost", "dev1", Some("m"));
        let _ = token.resource();
        assert!(!format!("{token:?}").contains(token.secret()));
    }
});
