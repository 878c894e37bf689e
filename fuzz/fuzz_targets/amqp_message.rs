//! AMQP messages from the network (decoded by fe2o3's codec): the CBS put-token and answer
//! readers and the IoT Hub message mapping never panic, whatever the sections hold.
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
