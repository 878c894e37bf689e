//! Topics, subscription filters, property bags and CONNECT usernames: everything the emulator
//! parses out of an MQTT packet. Parsing must never panic, and anything that parses must
//! format back to text that parses to the same value.
#![no_main]

use azure_iot_protocol::mqtt::{
    DownstreamTopic, DpsUsername, HubUsername, PropertyBag, TopicFilter, UpstreamTopic,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // MQTT topic names and usernames are UTF-8 strings; the codec rejects anything else.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(topic) = UpstreamTopic::parse(text) {
        assert_eq!(UpstreamTopic::parse(&topic.to_string()).as_ref(), Ok(&topic));
    }
    if let Ok(topic) = DownstreamTopic::parse(text) {
        assert_eq!(DownstreamTopic::parse(&topic.to_string()).as_ref(), Ok(&topic));
    }
    if let Ok(filter) = TopicFilter::parse(text) {
        assert_eq!(TopicFilter::parse(&filter.to_string()).as_ref(), Ok(&filter));
    }
    let bag = PropertyBag::parse(text);
    assert_eq!(PropertyBag::parse(&bag.format()), bag);
    if let Ok(message) = bag.to_message(data.to_vec()) {
        let again = PropertyBag::from_message(&message).to_message(data.to_vec());
        assert_eq!(again.as_ref(), Ok(&message));
    }
    if let Ok(username) = HubUsername::parse(text) {
        assert_eq!(HubUsername::parse(&username.to_string()).as_ref(), Ok(&username));
    }
    if let Ok(username) = DpsUsername::parse(text) {
        assert_eq!(DpsUsername::parse(&username.to_string()).as_ref(), Ok(&username));
    }
});
