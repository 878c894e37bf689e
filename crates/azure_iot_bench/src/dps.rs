//! `iot-bench dps` and `iot-bench count-devices`: device provisioning end to end with this
//! project's client (`azure_iot_provisioning_device`), and the check that the hub holds the
//! identities DPS created (bench/dps.sh).
//!
//! `dps` registers `count` members of one symmetric-key enrollment group (registration ids
//! `{prefix}-0` …, each with the key derived from the group key), `inflight` at a time: as
//! many workers, each taking the next index as soon as its previous registration is assigned
//! (a sliding window, as the Python peer `bench/peers/py_dps.py` does). A registration is one
//! `ProvisioningDeviceClient::register` call — connect, register, poll until `assigned`
//! (DPS creates the hub identity before it answers the register), disconnect — timed from the
//! call to its result.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use azure_iot_provisioning_device::{Attestation, ProvisioningDeviceClient, Transport};
use azure_iot_test::{HubEndpoint, RestClient};
use reqwest::Method;
use serde_json::json;

/// The transports `iot-bench dps` can register over.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum DpsTransport {
    /// MQTT over TLS (the hub's MQTT port).
    Mqtt,
    /// DPS's HTTPS device API (the hub's HTTPS port).
    Https,
}

/// What `iot-bench dps` does.
pub(crate) struct DpsPlan<'a> {
    /// The emulator's data directory (hub.json with the DPS id scope, ca.pem).
    pub(crate) hub_dir: &'a Path,
    /// The enrollment group's primary key (base64).
    pub(crate) group_key: String,
    /// Registrations in all.
    pub(crate) count: usize,
    /// Registrations in flight at once.
    pub(crate) inflight: usize,
    /// Registration ids are `{prefix}-{index}`.
    pub(crate) prefix: &'a str,
    /// The transport.
    pub(crate) transport: DpsTransport,
}

/// Runs the registrations and prints `RESULT {json}`: registrations per second (assigned ones
/// over the wall time of the whole run), p50/p99/max latency of one registration, failures.
pub(crate) async fn register_group(plan: DpsPlan<'_>) {
    let hub = HubEndpoint::from_data_dir(plan.hub_dir);
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plan.hub_dir.join("hub.json")).unwrap())
            .unwrap();
    let id_scope = doc["dps"]["id_scope"].as_str().unwrap().to_owned();
    let (transport, port) = match plan.transport {
        DpsTransport::Mqtt => (Transport::Mqtt, hub.mqtt_addr.port()),
        DpsTransport::Https => (Transport::Https, hub.https_addr.port()),
    };
    let builder = ProvisioningDeviceClient::builder(
        id_scope,
        Attestation::group_key(&plan.group_key).unwrap(),
    )
    .global_endpoint(hub.hostname.clone())
    .port(port)
    .trusted_ca_pem(hub.ca_pem.clone())
    .transport(transport);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..plan.inflight.clamp(1, plan.count.max(1)) {
        let (builder, next) = (builder.clone(), next.clone());
        let (prefix, count, hostname) = (plan.prefix.to_owned(), plan.count, hub.hostname.clone());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    break;
                }
                let id = format!("{prefix}-{index}");
                let client = builder.clone().registration_id(id.clone()).build().unwrap();
                let t0 = Instant::now();
                match client.register().await {
                    Ok(result) if result.device_id() == id && result.assigned_hub() == hostname => {
                        latencies.push(t0.elapsed());
                    }
                    Ok(result) => failures.push(format!(
                        "{id}: assigned to {} as {}",
                        result.assigned_hub(),
                        result.device_id()
                    )),
                    Err(e) => failures.push(format!("{id}: {e}")),
                }
            }
            (latencies, failures)
        });
    }
    let mut latencies = Vec::with_capacity(plan.count);
    let mut failures = Vec::new();
    while let Some(done) = workers.join_next().await {
        let (l, f) = done.unwrap();
        latencies.extend(l);
        failures.extend(f);
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    if let Some(first) = failures.first() {
        eprintln!(
            "{} registrations failed; the first: {first}",
            failures.len()
        );
    }
    println!(
        "RESULT {}",
        json!({"bench": "dps", "client": "azure_iot_provisioning_device", "transport": format!("{:?}", plan.transport).to_lowercase(),
               "count": plan.count, "inflight": plan.inflight, "assigned": latencies.len(), "failed": failures.len(),
               "seconds": seconds, "per_s": latencies.len() as f64 / seconds,
               "p50_ms": percentile_ms(&latencies, 0.50), "p99_ms": percentile_ms(&latencies, 0.99),
               "max_ms": percentile_ms(&latencies, 1.0)})
    );
}

/// The latency at quantile `q` (0–1) of sorted `latencies`, in milliseconds (0 when empty).
pub(crate) fn percentile_ms(latencies: &[Duration], q: f64) -> f64 {
    let Some(last) = latencies.len().checked_sub(1) else {
        return 0.0;
    };
    latencies[((latencies.len() as f64 * q) as usize).min(last)].as_secs_f64() * 1000.0
}

/// How many hub identities with SAS authentication have a device id starting with `prefix`
/// (one query through the service REST API).
pub(crate) async fn count_devices(hub_dir: &Path, prefix: &str) -> u64 {
    let hub = HubEndpoint::from_data_dir(hub_dir);
    let api = RestClient::new(&hub, "iothubowner");
    let query = format!(
        "SELECT COUNT() AS n FROM devices WHERE STARTSWITH(deviceId, '{prefix}') AND authenticationType = 'sas'"
    );
    let reply = api
        .request(
            Method::POST,
            "/devices/query",
            Some(json!({ "query": query })),
            &[],
        )
        .await;
    assert!(reply.status.is_success(), "query failed: {:?}", reply.body);
    reply.body[0]["n"].as_u64().unwrap()
}

#[cfg(test)]
mod tests {
    use super::percentile_ms;
    use std::time::Duration;

    #[test]
    fn percentiles_pick_the_sample_at_the_quantile() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&sorted, 0.50), 51.0);
        assert_eq!(percentile_ms(&sorted, 0.99), 100.0);
        assert_eq!(percentile_ms(&sorted, 1.0), 100.0);
        assert_eq!(percentile_ms(&sorted[..1], 0.99), 1.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }
}
