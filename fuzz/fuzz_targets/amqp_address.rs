//! IoT Hub AMQP link addresses (from a peer's ATTACH): parsing never panics, and what parses
//! formats to an address that parses to the same value.
#![no_main]

use azure_iot_protocol::amqp::Address;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(address) = Address::parse(text) else {
        return;
    };
    let again = Address::parse(&address.to_string()).expect("a formatted address parses");
    assert_eq!(again, address);
    let _ = Address::parse(&address.absolute("hub.example"));
});
