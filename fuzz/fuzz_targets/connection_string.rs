//! Connection strings: parsing never panics; whatever parses formats back to a string that
//! parses to the same value; the redacted forms never show the key.
#![no_main]

use azure_iot_core::connection_string::{ConnectionString, DeviceCredential};
use libfuzzer_sys::fuzz_target;

/// The key must not be shown. It can only be checked when its text occurs once in the full
/// string: otherwise it also occurs, legitimately, in an id or a host name. (`Debug` is the
/// `Display` text in quotes, escaped, so checking `Display` covers it.)
fn assert_redacted(secret: &str, display: &str, debug: &str, key: &str) {
    if secret.matches(key).count() == 1 {
        assert!(!display.contains(key), "key shown in {display:?}");
    }
    assert!(display.contains("SharedAccessKey=<redacted>"));
    assert!(debug.contains("SharedAccessKey=<redacted>"));
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = ConnectionString::parse(text) else {
        return;
    };
    match parsed {
        ConnectionString::Device(cs) => {
            let formatted = cs.to_secret_string();
            let again = ConnectionString::parse(&formatted).expect("formatted string parses");
            let ConnectionString::Device(again) = again else {
                panic!("device string came back as a service string");
            };
            assert_eq!(again.to_secret_string(), formatted);
            if let DeviceCredential::SharedAccessKey(key) = cs.credential() {
                assert_redacted(&formatted, &cs.to_string(), &format!("{cs:?}"), &key.to_base64());
            }
        }
        ConnectionString::Service(cs) => {
            let formatted = cs.to_secret_string();
            let again = ConnectionString::parse(&formatted).expect("formatted string parses");
            let ConnectionString::Service(again) = again else {
                panic!("service string came back as a device string");
            };
            assert_eq!(again.to_secret_string(), formatted);
            assert_redacted(&formatted, &cs.to_string(), &format!("{cs:?}"), &cs.key().to_base64());
        }
    }
});
