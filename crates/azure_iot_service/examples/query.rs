//! Runs an IoT Hub query and prints each item as one line of JSON, reading the answer page
//! by page (the hub's continuation tokens are followed for you).
//!
//! Arguments: `[query] [page-size]`. Defaults: `SELECT * FROM devices`, 100 items a page
//! (the hub allows up to 1,000). Other queries to try:
//! `"SELECT * FROM devices WHERE tags.floor = 3"`, `"SELECT COUNT() AS n FROM devices"`,
//! `"SELECT deviceId, properties.reported FROM devices WHERE connectionState = 'Connected'"`.
//!
//! Against the local emulator (`hub.json` in the data directory has the connection strings
//! and, under `ports`, the ports it listens on; `ca.pem` is its CA):
//!
//! ```sh
//! azure-iot hub start --data-dir /tmp/hub --https-port 8443 --mqtt-port 8883 --amqp-port 5671 &
//! export IOTHUB_CONNECTION_STRING="$(jq -r .connection_strings.iothubowner /tmp/hub/hub.json)"
//! export IOTHUB_CA_PEM=/tmp/hub/ca.pem IOTHUB_HTTPS_PORT=8443
//! cargo run -p azure_iot_service --example query -- "SELECT * FROM devices" 2
//! ```
//!
//! Against a real hub, set only `IOTHUB_CONNECTION_STRING` (a policy with registry read
//! rights) and run the same command.

// An example reports progress on standard output.
#![allow(clippy::print_stdout)]

mod common;

use futures_util::TryStreamExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let sql = args
        .next()
        .unwrap_or_else(|| "SELECT * FROM devices".to_owned());
    let page_size: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(100);

    let hub = common::service_client()?;
    // The stream asks for the next page only when the current one has been read.
    let mut items = hub.query(sql).page_size(page_size).into_stream();
    let mut count = 0;
    while let Some(item) = items.try_next().await? {
        println!("{item}");
        count += 1;
    }
    // The count goes to standard error so standard output stays one JSON value a line.
    eprintln!("{count} item(s)");
    Ok(())
}
