//! Reconnect soak: the emulator drops the client's connection again and again; after each
//! drop the client must come back and send. Live tokio tasks, open file descriptors (sockets;
//! in this process both the client's and the in-process emulator's) and resident memory must
//! stay flat.
//!
//! CI runs 200 cycles; `SOAK_RECONNECTS=1000 cargo test -p azure_iot_device --test soak
//! --release -- --nocapture` runs the full 1,000.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Duration;

use azure_iot_device::{ClientOptions, ConnectionState, DeviceClient, Message};
use azure_iot_emulator::Fault;
use azure_iot_test::{HubEndpoint, RestClient, emulator};

const WAIT: Duration = Duration::from_secs(10);

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_forced_reconnects_leak_nothing() {
    let cycles: usize = std::env::var("SOAK_RECONNECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let hub = emulator().await;
    let service = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");
    let key = service.register_device("soak").await;
    let cs = format!(
        "HostName={};DeviceId=soak;SharedAccessKey={key}",
        hub.hostname()
    );
    let options = ClientOptions::default()
        .trusted_ca_pem(hub.ca_pem())
        .port(hub.mqtt_addr().port())
        .operation_timeout(WAIT);
    let client = DeviceClient::from_connection_string(&cs, options)
        .await
        .unwrap();
    let mut messages = client.cloud_to_device_messages().await.unwrap();
    let mut state = client.watch_connection_state();

    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let mut baseline = (0, 0, 0);
    for cycle in 0..cycles {
        if cycle == 20 {
            // After warm-up: allocator pools, TLS session caches and the like are in place.
            baseline = (open_fds(), rss_kib(), tasks());
        }
        state.mark_unchanged();
        hub.inject(Fault::DropConnection {
            device_id: "soak".into(),
            module_id: None,
        })
        .await
        .unwrap();
        tokio::time::timeout(WAIT, state.changed())
            .await
            .expect("the drop is noticed")
            .unwrap();
        tokio::time::timeout(WAIT, state.wait_for(|s| *s == ConnectionState::Connected))
            .await
            .expect("the client reconnects")
            .unwrap();
        client
            .send_event(Message::new(format!("{cycle}")).unwrap())
            .await
            .unwrap();
    }
    // The subscriptions survived every reconnect.
    hub.send_cloud_to_device("soak", Message::new("still here").unwrap())
        .await
        .unwrap();
    let m = tokio::time::timeout(WAIT, messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.body().as_ref(), b"still here");
    assert_eq!(hub.telemetry(0, 100_000).await.unwrap().len(), cycles);

    let (fds, rss, live) = (open_fds(), rss_kib(), tasks());
    println!(
        "{cycles} reconnects: live tasks {} -> {live}, open fds {} -> {fds}, RSS {} -> {rss} KiB",
        baseline.2, baseline.0, baseline.1
    );
    assert!(
        live <= baseline.2 + 2,
        "live tasks grew from {} to {live} over {cycles} reconnects",
        baseline.2
    );
    assert!(
        fds <= baseline.0 + 4,
        "file descriptors grew from {} to {fds} over {cycles} reconnects",
        baseline.0
    );
    // Generous: allocator noise, the emulator's telemetry log, its per-connection records.
    assert!(
        rss <= baseline.1 + 16 * 1024,
        "resident memory grew from {} to {rss} KiB over {cycles} reconnects",
        baseline.1
    );
    client.close().await;
}
