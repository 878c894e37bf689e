//! Calls a direct method on a device and prints the device's status and payload, or a clear
//! line when the device is not online or does not answer in time.
//!
//! Arguments: `<device-id> <method> [payload-json] [response-timeout-s] [connect-timeout-s]`.
//! Defaults: payload `null`, 30 s for the answer, 0 s for connecting (an offline device fails
//! at once; with a connect timeout the hub waits that long for the device to come online).
//!
//! Against the local emulator (`hub.json` in the data directory has the connection strings
//! and, under `ports`, the ports it listens on; `ca.pem` is its CA):
//!
//! ```sh
//! azure-iot hub start --data-dir /tmp/hub --https-port 8443 --mqtt-port 8883 --amqp-port 5671 &
//! export IOTHUB_CONNECTION_STRING="$(jq -r .connection_strings.iothubowner /tmp/hub/hub.json)"
//! export IOTHUB_CA_PEM=/tmp/hub/ca.pem IOTHUB_HTTPS_PORT=8443
//! # a device that answers `echo` (see azure_iot_device's direct_method example):
//! IOTHUB_DEVICE_CONNECTION_STRING='HostName=localhost;DeviceId=sensor-1;SharedAccessKey=…' \
//!     cargo run -p azure_iot_device --example direct_method &
//! cargo run -p azure_iot_service --example invoke_method -- sensor-1 echo '{"hello":1}' 10
//! ```
//!
//! Against a real hub, set only `IOTHUB_CONNECTION_STRING` (a policy with service connect
//! rights, such as `iothubowner` or `service`) and run the same command.

// An example reports progress on standard output.
#![allow(clippy::print_stdout)]

mod common;

use azure_iot_service::{DirectMethodRequest, ErrorKind};
use serde_json::Value;

const USAGE: &str = "usage: invoke_method <device-id> <method> [payload-json] [response-timeout-s] [connect-timeout-s]";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let device_id = args.next().ok_or(USAGE)?;
    let method = args.next().ok_or(USAGE)?;
    let payload: Value = match args.next() {
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| format!("the payload must be JSON ({e}): {text}"))?,
        None => Value::Null,
    };
    let response_timeout: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(30);
    let connect_timeout: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(0);

    let hub = common::service_client()?;
    let request = DirectMethodRequest::new(method.as_str(), payload)
        .with_response_timeout(response_timeout)
        .with_connect_timeout(connect_timeout);
    match hub.invoke_device_method(&device_id, &request).await {
        Ok(answer) => {
            println!("{method} on {device_id} -> status {}", answer.status);
            println!("payload: {}", answer.payload);
        }
        Err(e) if e.kind() == ErrorKind::DeviceNotOnline => {
            println!(
                "device {device_id} is not online: it was not connected (and listening for \
                 methods) within the connect timeout of {connect_timeout} s"
            );
        }
        Err(e) if e.kind() == ErrorKind::Timeout => {
            println!(
                "device {device_id} did not answer {method} within {response_timeout} s; \
                 it may still have run the method"
            );
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
