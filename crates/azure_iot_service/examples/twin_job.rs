//! Schedules a twin-update job over the devices a query condition selects, waits for it to
//! finish and prints each device's outcome (`SELECT * FROM devices.jobs`).
//!
//! Arguments: `[query-condition] [desired-json]`. Defaults: `IS_DEFINED(deviceId)` (every
//! device) and `{"interval": 30}`. The condition is the part after `WHERE`, e.g.
//! `"tags.floor = 3"` or `"deviceId IN ['a', 'b']"`.
//!
//! Against the local emulator:
//!
//! ```sh
//! azure-iot hub start --data-dir /tmp/hub --https-port 8443 --mqtt-port 8883 --amqp-port 5671 &
//! export IOTHUB_CONNECTION_STRING="$(jq -r .connection_strings.iothubowner /tmp/hub/hub.json)"
//! export IOTHUB_CA_PEM=/tmp/hub/ca.pem IOTHUB_HTTPS_PORT=8443
//! cargo run -p azure_iot_service --example twin_job -- "tags.floor = 3" '{"interval": 10}'
//! ```
//!
//! Against a real hub (standard tier), set only `IOTHUB_CONNECTION_STRING`.

// An example reports progress on standard output.
#![allow(clippy::print_stdout)]

mod common;

use std::time::Duration;

use azure_iot_service::{JobSchedule, TwinPatch};
use futures_util::TryStreamExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let condition = args
        .next()
        .unwrap_or_else(|| "IS_DEFINED(deviceId)".to_owned());
    let desired: serde_json::Value = serde_json::from_str(
        &args
            .next()
            .unwrap_or_else(|| r#"{"interval": 30}"#.to_owned()),
    )?;

    let hub = common::service_client()?;
    let job_id = format!("example-{}", uuid_like());
    let patch = TwinPatch::new().desired(desired)?;
    let job = hub
        .schedule_twin_update(
            &job_id,
            &condition,
            &patch,
            JobSchedule::now().max_execution_time(Duration::from_secs(600)),
        )
        .await?;
    println!("scheduled {} ({})", job.job_id, job.status);
    let job = loop {
        let job = hub.get_job(&job_id).await?;
        if job.status.is_finished() {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!(
        "{} {}: {:?}",
        job.job_id, job.status, job.device_job_statistics
    );
    let sql = format!("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '{job_id}'");
    let mut rows = hub.query_device_jobs(sql).into_stream();
    while let Some(row) = rows.try_next().await? {
        println!("{} {}", row.device_id, row.status);
    }
    Ok(())
}

/// A job id suffix from the clock (job ids allow letters, digits and '-').
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}")
}
