//! `iot-bench`: load generators for the emulator's benchmarks (see BENCHMARKS.md and
//! `bench/run.sh`). Each command prints one `RESULT {json}` line.
//!
//! * `ingest`: C TLS connections each publish M 100-byte QoS 1 messages (two custom
//!   properties), W in flight per connection; msgs/s from the first publish to the last PUBACK.
//!   Against the emulator (devices registered first, SAS auth) or any MQTT broker (Mosquitto).
//! * `connections`: opens N idle device connections; connects/s and, given the server's pid,
//!   its resident memory per connection.
//! * `methods`: D connected devices answer direct methods; N invocations through the REST API,
//!   one at a time; p50/p99 round-trip latency.
//! * `gen-cert`: a CA and server certificate for `localhost` (PEM files), for the broker that
//!   the emulator is compared with.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_iot_core::{ResourceUri, SasToken, SharedAccessKey};
use azure_iot_protocol::mqtt::codec::{
    Connect, MAX_PACKET_BYTES, Packet, PubAck, Publish, QoS, Subscribe, read_packet, write_packet,
};
use azure_iot_test::{HubEndpoint, RestClient};
use bytes::BytesMut;
use clap::{Parser, Subcommand};
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

#[derive(Parser)]
#[command(
    name = "iot-bench",
    about = "Benchmark load generators for the IoT Hub emulator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Telemetry ingest throughput.
    Ingest {
        /// Emulator data directory (hub.json, ca.pem). Without it, `--broker` is used.
        #[arg(long)]
        hub_dir: Option<PathBuf>,
        /// A plain MQTT broker over TLS: host:port (no IoT Hub authentication).
        #[arg(long)]
        broker: Option<String>,
        /// CA PEM for `--broker`.
        #[arg(long)]
        ca: Option<PathBuf>,
        #[arg(long, default_value_t = 100)]
        connections: usize,
        #[arg(long, default_value_t = 2000)]
        messages: usize,
        #[arg(long, default_value_t = 100)]
        inflight: usize,
    },
    /// Idle connections held.
    Connections {
        #[arg(long)]
        hub_dir: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// The emulator's process id, to read its memory.
        #[arg(long)]
        pid: Option<u32>,
        /// Connections opened at once.
        #[arg(long, default_value_t = 64)]
        parallel: usize,
    },
    /// Direct-method round trips.
    Methods {
        #[arg(long)]
        hub_dir: PathBuf,
        #[arg(long, default_value_t = 1000)]
        devices: usize,
        #[arg(long, default_value_t = 2000)]
        calls: usize,
    },
    /// Writes ca.pem, server.pem, server-key.pem for localhost into a directory.
    GenCert { dir: PathBuf },
}

#[tokio::main]
async fn main() {
    match Cli::parse().command {
        Command::Ingest {
            hub_dir,
            broker,
            ca,
            connections,
            messages,
            inflight,
        } => ingest(hub_dir, broker, ca, connections, messages, inflight).await,
        Command::Connections {
            hub_dir,
            count,
            pid,
            parallel,
        } => hold_connections(&hub_dir, count, pid, parallel).await,
        Command::Methods {
            hub_dir,
            devices,
            calls,
        } => methods(&hub_dir, devices, calls).await,
        Command::GenCert { dir } => gen_cert(&dir),
    }
}

/// Where to connect and how to log in, per connection index.
struct Target {
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    /// (client id, user name, password) per connection.
    logins: Vec<(String, String, String)>,
    topics: Vec<String>,
}

fn tls_from_pem(pem: &[u8]) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// Registers `count` devices (bulk, 100 per call) and returns their SAS logins.
async fn register_devices(
    hub: &HubEndpoint,
    prefix: &str,
    count: usize,
) -> Vec<(String, String, String)> {
    let api = RestClient::new(hub, "iothubowner");
    let key = SharedAccessKey::from_bytes(vec![7u8; 32]).unwrap();
    let ids: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    for chunk in ids.chunks(100) {
        let entries: Vec<_> = chunk
            .iter()
            .map(|id| json!({"id": id, "importMode": "update", "authentication": {"type": "sas", "symmetricKey": {"primaryKey": key.to_base64(), "secondaryKey": key.to_base64()}}}))
            .collect();
        let r = api
            .request(
                Method::POST,
                "/devices",
                Some(serde_json::Value::Array(entries)),
                &[],
            )
            .await;
        assert!(
            r.status.is_success(),
            "bulk registration failed: {:?}",
            r.body
        );
    }
    ids.into_iter()
        .map(|id| {
            let token = SasToken::generate_with_ttl(
                &ResourceUri::device(&hub.hostname, &id),
                &key,
                None,
                Duration::from_secs(7200),
            );
            let username = format!(
                "{}/{id}/?api-version=2021-04-12&DeviceClientType=iot-bench",
                hub.hostname
            );
            (id, username, token.secret().to_owned())
        })
        .collect()
}

async fn open(target: &Target, index: usize, keep_alive: u16) -> (TlsStream<TcpStream>, BytesMut) {
    let tcp = TcpStream::connect(target.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut stream = TlsConnector::from(target.tls.clone())
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (client_id, username, password) = &target.logins[index];
    let mut connect = Connect::new(client_id.clone());
    connect.keep_alive = keep_alive;
    connect.clean_session = true;
    connect.set_login(username.clone(), password.clone());
    let mut out = BytesMut::new();
    write_packet(&Packet::Connect(connect), &mut out).unwrap();
    stream.write_all(&out).await.unwrap();
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if let Some(packet) = read_packet(&mut buf, MAX_PACKET_BYTES).unwrap() {
            match packet {
                Packet::ConnAck(ack)
                    if ack.code == azure_iot_protocol::mqtt::codec::ConnectReturnCode::Success =>
                {
                    break;
                }
                other => panic!("connection {index} refused: {other:?}"),
            }
        }
        assert!(
            stream.read_buf(&mut buf).await.unwrap() > 0,
            "closed before CONNACK"
        );
    }
    (stream, buf)
}

async fn ingest(
    hub_dir: Option<PathBuf>,
    broker: Option<String>,
    ca: Option<PathBuf>,
    connections: usize,
    messages: usize,
    inflight: usize,
) {
    let target = match (&hub_dir, &broker) {
        (Some(dir), _) => {
            let hub = HubEndpoint::from_data_dir(dir);
            let logins = register_devices(&hub, "ingest", connections).await;
            let topics = logins
                .iter()
                .map(|(id, _, _)| format!("devices/{id}/messages/events/prop1=value1&prop2=value2"))
                .collect();
            Target {
                addr: hub.mqtt_addr,
                tls: Arc::new(hub.tls_config()),
                logins,
                topics,
            }
        }
        (None, Some(addr)) => {
            let pem = std::fs::read(ca.expect("--ca with --broker")).unwrap();
            let logins: Vec<_> = (0..connections)
                .map(|i| (format!("ingest-{i}"), format!("ingest-{i}"), String::new()))
                .collect();
            let topics = logins
                .iter()
                .map(|(id, _, _)| format!("devices/{id}/messages/events/prop1=value1&prop2=value2"))
                .collect();
            let addr = tokio::net::lookup_host(addr).await.unwrap().next().unwrap();
            Target {
                addr,
                tls: tls_from_pem(&pem),
                logins,
                topics,
            }
        }
        _ => panic!("give --hub-dir or --broker"),
    };
    let target = Arc::new(target);
    let mut streams = Vec::new();
    for i in 0..connections {
        streams.push(open(&target, i, 300).await);
    }
    let payload = vec![b'x'; 100];
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, (mut stream, mut buf)) in streams.into_iter().enumerate() {
        let topic = target.topics[i].clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0usize;
            let mut acked = 0usize;
            let mut next_id: u16 = 0;
            let mut out = BytesMut::with_capacity(64 * 1024);
            while acked < messages {
                while sent < messages && sent - acked < inflight {
                    next_id = next_id.checked_add(1).unwrap_or(1);
                    let mut publish =
                        Publish::new(topic.clone(), QoS::AtLeastOnce, payload.clone());
                    publish.pkid = next_id;
                    write_packet(&Packet::Publish(publish), &mut out).unwrap();
                    sent += 1;
                }
                if !out.is_empty() {
                    stream.write_all(&out).await.unwrap();
                    out.clear();
                }
                loop {
                    match read_packet(&mut buf, MAX_PACKET_BYTES).unwrap() {
                        Some(Packet::PubAck(PubAck { .. })) => acked += 1,
                        Some(_) => {}
                        None => break,
                    }
                }
                if acked < messages && (sent == messages || sent - acked >= inflight) {
                    assert!(
                        stream.read_buf(&mut buf).await.unwrap() > 0,
                        "connection closed"
                    );
                }
            }
            acked
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "RESULT {}",
        json!({"bench": "ingest", "target": if hub_dir.is_some() { "emulator" } else { "broker" }, "connections": connections,
               "messages": total, "inflight": inflight, "seconds": secs, "msgs_per_s": total as f64 / secs})
    );
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn hold_connections(hub_dir: &Path, count: usize, pid: Option<u32>, parallel: usize) {
    let hub = HubEndpoint::from_data_dir(hub_dir);
    let logins = register_devices(&hub, "idle", count).await;
    let target = Arc::new(Target {
        addr: hub.mqtt_addr,
        tls: Arc::new(hub.tls_config()),
        topics: Vec::new(),
        logins,
    });
    let before = pid.and_then(rss_kib);
    let started = Instant::now();
    let mut held = Vec::with_capacity(count);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let target = target.clone();
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let conn = open(&target, i, 1000).await;
            drop(permit);
            conn
        }));
    }
    for t in tasks {
        held.push(t.await.unwrap());
    }
    let connect_secs = started.elapsed().as_secs_f64();
    // Let the server settle, then read its memory with every connection open and idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = pid.and_then(rss_kib);
    let per_connection = match (before, after) {
        (Some(b), Some(a)) => Some((a.saturating_sub(b)) as f64 * 1024.0 / count as f64),
        _ => None,
    };
    println!(
        "RESULT {}",
        json!({"bench": "connections", "count": held.len(), "connect_seconds": connect_secs,
               "connects_per_s": count as f64 / connect_secs, "server_rss_before_kib": before,
               "server_rss_after_kib": after, "bytes_per_connection": per_connection})
    );
}

async fn methods(hub_dir: &Path, devices: usize, calls: usize) {
    let hub = HubEndpoint::from_data_dir(hub_dir);
    let logins = register_devices(&hub, "method", devices).await;
    let ids: Vec<String> = logins.iter().map(|(id, _, _)| id.clone()).collect();
    let target = Arc::new(Target {
        addr: hub.mqtt_addr,
        tls: Arc::new(hub.tls_config()),
        topics: Vec::new(),
        logins,
    });
    for i in 0..devices {
        let (mut stream, mut buf) = open(&target, i, 1000).await;
        let mut out = BytesMut::new();
        let mut subscribe = Subscribe::new("$iothub/methods/POST/#", QoS::AtMostOnce);
        subscribe.pkid = 1;
        write_packet(&Packet::Subscribe(subscribe), &mut out).unwrap();
        stream.write_all(&out).await.unwrap();
        // Each device answers every call with 200 and echoes nothing.
        tokio::spawn(async move {
            let mut out = BytesMut::new();
            loop {
                while let Some(packet) = read_packet(&mut buf, MAX_PACKET_BYTES).unwrap() {
                    if let Packet::Publish(p) = packet
                        && let Some(rid) = p.topic.rsplit("$rid=").next()
                    {
                        let response = Publish::new(
                            format!("$iothub/methods/res/200/?$rid={rid}"),
                            QoS::AtMostOnce,
                            b"{}".to_vec(),
                        );
                        write_packet(&Packet::Publish(response), &mut out).unwrap();
                    }
                }
                if !out.is_empty() {
                    if stream.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
                match stream.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
    }
    let api = RestClient::new(&hub, "service");
    let mut latencies = Vec::with_capacity(calls);
    // Warm-up: the first call of each connection pays for HTTP connection setup.
    for id in ids.iter().take(10) {
        api.request(Method::POST, &format!("/twins/{id}/methods"), Some(json!({"methodName": "warm", "responseTimeoutInSeconds": 10, "connectTimeoutInSeconds": 10})), &[]).await;
    }
    for i in 0..calls {
        let id = &ids[i % ids.len()];
        let started = Instant::now();
        let r = api
            .request(Method::POST, &format!("/twins/{id}/methods"), Some(json!({"methodName": "ping", "payload": {"n": i}, "responseTimeoutInSeconds": 10})), &[])
            .await;
        latencies.push(started.elapsed());
        assert_eq!(r.body["status"], 200, "{:?}", r.body);
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1000.0
    };
    println!(
        "RESULT {}",
        json!({"bench": "methods", "devices": devices, "calls": calls, "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0)})
    );
}

fn gen_cert(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    std::fs::create_dir_all(dir).unwrap();
    // A subject and key usages on both: OpenSSL 3 with Python's strict verification refuses a
    // CA without them ("unknown ca").
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "iot-bench test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server-key.pem"), key.serialize_pem()).unwrap();
}
