//! Telemetry throughput of one client, with the same contract as the official-SDK drivers
//! in `bench/device.sh`: 100-byte QoS 1 messages with two custom properties.
//!
//! ```sh
//! CS='HostName=…;DeviceId=…;SharedAccessKey=…' CA_FILE=ca.pem \
//!   cargo run --release -p azure_iot_device --example bench_telemetry -- conc 20000 100
//! ```
//!
//! Modes: `seq N` awaits each acknowledgement; `conc N BATCH` keeps BATCH sends in flight.
//! `TRANSPORT=amqp` sends over AMQP (port `AMQP_PORT`, default 5671), `TRANSPORT=https` over
//! the device REST API (port `HTTPS_PORT`, default 443), instead of MQTT (port `MQTT_PORT`,
//! default 8883).
//! Prints one line: `RESULT {json}` with msgs/s, CPU seconds and peak resident memory.

// A benchmark reports on standard output.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use azure_iot_device::{ClientOptions, DeviceClient, Message};
use futures_util::{StreamExt, TryStreamExt};

fn message(i: usize) -> Result<Message, azure_iot_device::Error> {
    Message::builder(format!("{i:08}{}", "x".repeat(92)))
        .property("prop1", "value1")
        .property("prop2", "value2")
        .build()
        .map_err(azure_iot_device::Error::from)
}

/// A `kB` field of `/proc/self/status`.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User + system CPU seconds of this process, and peak RSS in KiB (Linux `/proc`).
fn usage() -> (f64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    (ticks / 100.0, status_kib("VmHWM:"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("seq");
    let n: usize = args.get(1).map(|v| v.parse()).transpose()?.unwrap_or(1000);
    let batch: usize = args.get(2).map(|v| v.parse()).transpose()?.unwrap_or(100);
    let cs = std::env::var("CS").map_err(|_| "set CS to a device connection string")?;
    let transport = std::env::var("TRANSPORT").unwrap_or_default();
    let mut options = ClientOptions::default();
    let port_variable = match transport.as_str() {
        "amqp" => {
            options = options.transport(azure_iot_device::Transport::Amqp);
            "AMQP_PORT"
        }
        "https" => {
            options = options.transport(azure_iot_device::Transport::Https);
            "HTTPS_PORT"
        }
        _ => "MQTT_PORT",
    };
    if let Ok(ca) = std::env::var("CA_FILE") {
        options = options.trusted_ca_pem(std::fs::read_to_string(ca)?);
    }
    if let Ok(port) = std::env::var(port_variable) {
        options = options.port(port.parse()?);
    }
    let started = Instant::now();
    let client = DeviceClient::from_connection_string(&cs, options).await?;
    let connect_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (cpu0, _) = usage();
    let t0 = Instant::now();
    match mode {
        "seq" => {
            for i in 0..n {
                client.send_event(message(i)?).await?;
            }
        }
        "conc" => {
            // Results are checked as they come, not collected: a Vec of 30,000 results
            // would be the benchmark's memory, not the client's.
            futures_util::stream::iter(0..n)
                .map(|i| {
                    let client = client.clone();
                    async move { client.send_event(message(i)?).await }
                })
                .buffer_unordered(batch)
                .try_for_each(|()| async { Ok(()) })
                .await?;
        }
        other => return Err(format!("unknown mode {other}: seq or conc").into()),
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let (cpu1, rss_kib) = usage();
    // What the resident memory is: heap and stacks, or mapped code and libraries.
    let (anon_kib, file_kib) = (status_kib("RssAnon:"), status_kib("RssFile:"));
    client.close().await;
    println!(
        "RESULT {{\"client\":\"azure_iot_device {} ({})\",\"mode\":\"{mode}\",\"n\":{n},\"batch\":{},\"connect_ms\":{connect_ms:.1},\"send_s\":{elapsed:.4},\"msgs_per_s\":{:.1},\"send_cpu_s\":{:.3},\"peak_rss_kib\":{rss_kib},\"rss_anon_kib\":{anon_kib},\"rss_file_kib\":{file_kib}}}",
        env!("CARGO_PKG_VERSION"),
        if transport.is_empty() {
            "mqtt"
        } else {
            transport.as_str()
        },
        if mode == "seq" { 1 } else { batch },
        n as f64 / elapsed,
        cpu1 - cpu0,
    );
    Ok(())
}
