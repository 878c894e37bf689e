//! Raw MQTT QoS1 publisher (rumqttc) used as the "physical limit" anchor for the SDK baselines.
//! Adapted from ../shared/bench-peers/rustraw for an IoT Hub (the emulator): the client id,
//! user name and SAS token come from the environment, and peak RSS is reported.
//! usage: rustraw <plain|tls> <seq|pipe> <N> [inflight]
//! env: T0_NS (epoch ns when the harness spawned us), CA_FILE (PEM for tls), TOPIC (optional),
//!      HOST (localhost), PORT (8883 for tls), CLIENT_ID, USERNAME, PASSWORD (a SAS token)
//! Prints one line: RESULT {json}
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

fn cpu_s() -> f64 {
    // utime + stime of this process from /proc/self/stat (clock ticks, assumed 100 Hz)
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: f64 = f[11].parse().unwrap();
    let st: f64 = f[12].parse().unwrap();
    (ut + st) / 100.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let transport = args.get(1).map(String::as_str).unwrap_or("plain").to_string();
    let mode = args.get(2).map(String::as_str).unwrap_or("pipe").to_string();
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let inflight: u16 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(100);
    let t0: u128 = std::env::var("T0_NS").ok().and_then(|s| s.parse().ok()).unwrap_or_else(now_ns);
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
    let client_id = env("CLIENT_ID", "dev1");
    let topic = std::env::var("TOPIC")
        .unwrap_or_else(|_| format!("devices/{client_id}/messages/events/prop1=value1&prop2=value2"));
    let host = env("HOST", "localhost");
    let port: u16 = env("PORT", if transport == "tls" { "8883" } else { "1883" }).parse().unwrap();
    let mut opts = MqttOptions::new(client_id.clone(), host.clone(), port);
    opts.set_keep_alive(Duration::from_secs(60));
    opts.set_clean_session(true);
    opts.set_inflight(inflight);
    opts.set_request_channel_capacity(1000);
    opts.set_credentials(
        env("USERNAME", &format!("{host}/{client_id}/?api-version=2021-04-12")),
        env("PASSWORD", "unused"),
    );
    if transport == "tls" {
        let ca = std::fs::read(std::env::var("CA_FILE").expect("CA_FILE")).unwrap();
        opts.set_transport(Transport::Tls(TlsConfiguration::Simple { ca, alpn: None, client_auth: None }));
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    // CLIENT_NODELAY=1 sets TCP_NODELAY on the client socket (rumqttc default: off)
    let nodelay = std::env::var("CLIENT_NODELAY").map(|v| v == "1").unwrap_or(false);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(nodelay);
    eventloop.set_network_options(net);

    // connect
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => break,
            Ok(_) => {}
            Err(e) => panic!("connect error: {e:?}"),
        }
    }
    let connect_ms = (now_ns() - t0) as f64 / 1e6;

    let payload_base = "x".repeat(92);
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<()>();
    let cpu0 = cpu_s();
    let start = Instant::now();
    let pub_client = client.clone();
    let seq = mode == "seq";
    let topic2 = topic.clone();
    let publisher = tokio::spawn(async move {
        for i in 0..n {
            let payload = format!("{:08}{}", i, payload_base); // 100 bytes
            pub_client.publish(topic2.as_str(), QoS::AtLeastOnce, false, payload).await.unwrap();
            if seq {
                ack_rx.recv().await.unwrap();
            }
        }
    });
    let mut acked = 0usize;
    while acked < n {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                acked += 1;
                if seq {
                    let _ = ack_tx.send(());
                }
            }
            Ok(_) => {}
            Err(e) => panic!("eventloop error: {e:?}"),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_s() - cpu0;
    publisher.await.unwrap();
    client.disconnect().await.ok();
    // let the DISCONNECT go out
    let _ = tokio::time::timeout(Duration::from_millis(200), async { loop { if eventloop.poll().await.is_err() { break; } } }).await;
    println!(
        "RESULT {{\"client\":\"rumqttc\",\"transport\":\"{transport}\",\"mode\":\"{mode}\",\"n\":{n},\"inflight\":{inflight},\"client_nodelay\":{nodelay},\"connect_ms\":{connect_ms:.1},\"send_s\":{elapsed:.4},\"msgs_per_s\":{:.1},\"send_cpu_s\":{cpu:.3},\"peak_rss_kib\":{}}}",
        n as f64 / elapsed,
        peak_rss_kib()
    );
}

/// Peak resident set size in KiB (VmHWM in /proc/self/status).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
