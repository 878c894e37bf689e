//! AMQP messages from the network (decoded by fe2o3's codec): the CBS put-token and answer
//! readers and the IoT Hub message mapping never panic, whatever the sections hold.
//!
//! Run it with `-malloc_limit_mb=4500 -rss_limit_mb=4500`: serde_amqp 0.18's reader allocates
//! a binary's or string's declared 32-bit length before reading it (`Read::read_bytes`), so an
//! input declaring 4 GiB makes the decoder (not the code under test) ask for 4 GiB of zeroed,
//! untouched memory, which libFuzzer's default 2 GiB malloc limit reports as out-of-memory.
#![no_main]

use azure_iot_protocol::amqp::{AmqpMessage, PutToken, PutTokenAnswer, from_amqp, to_amqp};
use fe2o3_amqp_types::messaging::Body;
use fe2o3_amqp_types::messaging::message::DecodeIntoMessage;
use fe2o3_amqp_types::primitives::Value;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(message): Result<AmqpMessage, _> =
        Body::<Value>::decode_message_from_reader(serde_amqp::read::SliceReader::new(data))
    else {
        return;
    };
    let _ = PutToken::parse(&message);
    let _ = PutTokenAnswer::parse(&message);
    if let Ok(mapped) = from_amqp(&message) {
        // What maps in maps back out without panicking.
        let _ = to_amqp(&mapped);
    }
});
