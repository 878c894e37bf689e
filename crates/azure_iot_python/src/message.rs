//! Messages between Python and Rust: the Python `Message` travels as its body, its custom
//! properties and its system properties by the Python SDK's attribute names; received
//! messages come back as a dict by the same names, which `azure_iot_rs.Message` is built from.

use azure_iot_core::Message;
use azure_iot_core::datetime::{format_timestamp, parse_timestamp};
use azure_iot_core::message::AckMode;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

/// Builds the Rust message from what `azure_iot_rs.Message` holds. `system` names
/// attributes of the Python SDK's `Message` (`message_id`, `expiry_time_utc` as ISO 8601…);
/// an unknown name or a bad value is a `ValueError` naming it.
pub(crate) fn to_rust(
    data: &[u8],
    custom_properties: Vec<(String, String)>,
    system: Vec<(String, String)>,
) -> PyResult<Message> {
    let mut builder = Message::builder(data.to_vec());
    for (name, value) in custom_properties {
        builder = builder.property(name, value);
    }
    for (name, value) in system {
        builder = match name.as_str() {
            "message_id" => builder.message_id(value),
            "correlation_id" => builder.correlation_id(value),
            "user_id" => builder.user_id(value),
            "content_type" => builder.content_type(value),
            "content_encoding" => builder.content_encoding(value),
            "output_name" => builder.output_name(value),
            "input_name" => builder.input_name(value),
            "iothub_interface_id" => builder.interface_id(value),
            "expiry_time_utc" => {
                let at = parse_timestamp(&value).ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "expiry_time_utc: {value:?} is not an ISO 8601 time with a UTC offset"
                    ))
                })?;
                builder.expiry_time_utc(at)
            }
            "ack" => {
                let mode = AckMode::parse(&value).ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "ack: {value:?} is not one of none, positive, negative, full"
                    ))
                })?;
                builder.ack(mode)
            }
            other => {
                return Err(PyValueError::new_err(format!(
                    "{other} is not a message property"
                )));
            }
        };
    }
    builder
        .build()
        .map_err(|e| PyValueError::new_err(format!("message: {e}")))
}

/// A received message as a dict of the Python SDK's `Message` attributes.
pub(crate) fn to_python<'py>(py: Python<'py>, message: &Message) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("data", PyBytes::new(py, message.body()))?;
    let custom = PyDict::new(py);
    for (name, value) in message.properties() {
        custom.set_item(name, value)?;
    }
    dict.set_item("custom_properties", custom)?;
    let system = message.system_properties();
    let strings = [
        ("message_id", &system.message_id),
        ("correlation_id", &system.correlation_id),
        ("user_id", &system.user_id),
        ("content_type", &system.content_type),
        ("content_encoding", &system.content_encoding),
        ("output_name", &system.output_name),
        ("input_name", &system.input_name),
        ("iothub_interface_id", &system.interface_id),
    ];
    for (name, value) in strings {
        dict.set_item(name, value.as_deref())?;
    }
    dict.set_item(
        "expiry_time_utc",
        system.expiry_time_utc.map(format_timestamp),
    )?;
    dict.set_item("ack", system.ack.map(AckMode::as_str))?;
    Ok(dict)
}
