//! The Event Hubs-compatible endpoint's parsers of what a client sends in an ATTACH (the
//! consumer's source address and its selector-filter expression) never panic; and the
//! padding of the performatives the emulator writes never panics, makes a frame whose size
//! field is its length, and leaves nothing to pad in what it padded.
#![no_main]

use azure_iot_emulator::fuzzing::{eventhubs_link, pad_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = eventhubs_link(text);
    }
    // As a frame: size field, doff 2, type 0, channel 0, then the fuzzed body.
    let mut frame = ((data.len() + 8) as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&[2, 0, 0, 0]);
    frame.extend_from_slice(data);
    if let Some(padded) = pad_frame(&frame) {
        let size = u32::from_be_bytes([padded[0], padded[1], padded[2], padded[3]]) as usize;
        assert_eq!(size, padded.len());
        assert!(padded.len() > frame.len());
        assert!(pad_frame(&padded).is_none(), "a padded frame is full");
    }
});
