//! `iot-bench`: load generators for the emulator's benchmarks (see BENCHMARKS.md and
//! `bench/run.sh`). Each command prints one `RESULT {json}` line.
//!
//! * `ingest`: C TLS connections each publish M 100-byte QoS 1 messages (two custom
//!   properties), W in flight per connection; msgs/s from the first publish to the last PUBACK.
//!   Against the emulator (devices registered first, SAS auth) or any MQTT broker (Mosquitto).
//! * `connections`: opens N idle device connections and holds them; connects/s, given the
//!   server's pid its resident memory per connection, and how long one more device takes to
//!   connect (TCP + TLS + CONNECT/CONNACK) while all are held. Past one loopback address's
//!   ephemeral ports, the sockets are bound to source addresses 127.0.0.1, 127.0.0.2, …
//!   (`--per-source` each); the process raises its open-file limit to the hard limit.
//! * `methods`: D connected devices answer direct methods; N invocations through the REST API,
//!   one at a time; p50/p99 round-trip latency.
//! * `dps`: N members of one symmetric-key enrollment group register with DPS through this
//!   project's provisioning client, W in flight; registrations/s and p50/p99 latency of one
//!   registration (register + poll + hub identity). `count-devices` checks the identities the
//!   hub holds afterwards (module `dps`; bench/dps.sh runs both beside the official Python
//!   client).
//! * `eventhubs`: reads every event the emulator's log holds, from the start of every
//!   partition of its Event Hubs-compatible endpoint, with this project's `EventHubConsumer`;
//!   events/s and time to the first event (module `eventhubs`; bench/eventhubs.sh runs it
//!   beside the official Python and Node consumers, after filling the log with `ingest`).
//! * `gen-cert`: a CA and server certificate for `localhost` (PEM files), for the broker that
//!   the emulator is compared with.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

mod dps;
mod eventhubs;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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
use tokio::net::{TcpSocket, TcpStream};
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
        /// Connections per loopback source address (127.0.0.1, then .2, …); one address has
        /// about 28,000 ephemeral ports (net.ipv4.ip_local_port_range).
        #[arg(long, default_value_t = 25_000)]
        per_source: usize,
        /// Connects of one more device, timed while all are held (median reported).
        #[arg(long, default_value_t = 9)]
        probes: usize,
        /// Seconds to keep the connections after measuring (to inspect the server).
        #[arg(long, default_value_t = 0)]
        hold_seconds: u64,
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
    /// DPS registrations of one symmetric-key enrollment group's members.
    Dps {
        #[arg(long)]
        hub_dir: PathBuf,
        /// The enrollment group's primary key (base64).
        #[arg(long, env = "DPS_GROUP_KEY", hide_env_values = true)]
        group_key: String,
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Registrations in flight at once.
        #[arg(long, default_value_t = 32)]
        inflight: usize,
        /// Registration ids are `{prefix}-{index}`.
        #[arg(long)]
        prefix: String,
        #[arg(long, value_enum, default_value = "mqtt")]
        transport: dps::DpsTransport,
    },
    /// Counts the hub's SAS identities whose device id starts with a prefix; prints the number
    /// and fails unless it is `--expect`.
    CountDevices {
        #[arg(long)]
        hub_dir: PathBuf,
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        expect: Option<u64>,
    },
    /// Reads all events of the Event Hubs-compatible endpoint from the start of every partition.
    Eventhubs {
        #[arg(long)]
        hub_dir: PathBuf,
        /// Each partition receiver's credit (and the stream's buffer).
        #[arg(long, default_value_t = 300)]
        prefetch: u32,
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
            per_source,
            probes,
            hold_seconds,
        } => {
            let plan = HoldPlan {
                count,
                pid,
                parallel,
                per_source,
                probes,
                hold: Duration::from_secs(hold_seconds),
            };
            hold_connections(&hub_dir, plan).await
        }
        Command::Methods {
            hub_dir,
            devices,
            calls,
        } => methods(&hub_dir, devices, calls).await,
        Command::Dps {
            hub_dir,
            group_key,
            count,
            inflight,
            prefix,
            transport,
        } => {
            let plan = dps::DpsPlan {
                hub_dir: &hub_dir,
                group_key,
                count,
                inflight,
                prefix: &prefix,
                transport,
            };
            dps::register_group(plan).await
        }
        Command::CountDevices {
            hub_dir,
            prefix,
            expect,
        } => {
            let n = dps::count_devices(&hub_dir, &prefix).await;
            println!("{n}");
            if let Some(expected) = expect {
                assert_eq!(n, expected, "hub identities starting with `{prefix}`");
            }
        }
        Command::Eventhubs { hub_dir, prefetch } => eventhubs::read_all(&hub_dir, prefetch).await,
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

/// Bulk registration requests in flight at once.
const REGISTER_PARALLEL: usize = 8;

/// Registers `count` devices (bulk, 100 per call, [`REGISTER_PARALLEL`] calls at once) and
/// returns their SAS logins.
async fn register_devices(
    hub: &HubEndpoint,
    prefix: &str,
    count: usize,
) -> Vec<(String, String, String)> {
    let api = RestClient::new(hub, "iothubowner");
    let key = SharedAccessKey::from_bytes(vec![7u8; 32]).unwrap();
    let ids: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    let mut pending = tokio::task::JoinSet::new();
    for chunk in ids.chunks(100) {
        if pending.len() >= REGISTER_PARALLEL {
            pending.join_next().await.unwrap().unwrap();
        }
        let entries: Vec<_> = chunk
            .iter()
            .map(|id| json!({"id": id, "importMode": "update", "authentication": {"type": "sas", "symmetricKey": {"primaryKey": key.to_base64(), "secondaryKey": key.to_base64()}}}))
            .collect();
        let api = api.clone();
        pending.spawn(async move {
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
        });
    }
    while let Some(done) = pending.join_next().await {
        done.unwrap();
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
    try_open(target, index, keep_alive, None)
        .await
        .unwrap_or_else(|e| panic!("connection {index}: {e}"))
}

/// TCP (from `source` if given), TLS, CONNECT, CONNACK; an error says which step failed.
async fn try_open(
    target: &Target,
    index: usize,
    keep_alive: u16,
    source: Option<IpAddr>,
) -> Result<(TlsStream<TcpStream>, BytesMut), String> {
    let tcp = match source {
        None => TcpStream::connect(target.addr).await,
        Some(ip) => {
            let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| format!("bind {ip}: {e}"))?;
            socket.connect(target.addr).await
        }
    }
    .map_err(|e| format!("TCP connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    let mut stream = TlsConnector::from(target.tls.clone())
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let (client_id, username, password) = &target.logins[index];
    let mut connect = Connect::new(client_id.clone());
    connect.keep_alive = keep_alive;
    connect.clean_session = true;
    connect.set_login(username.clone(), password.clone());
    let mut out = BytesMut::new();
    write_packet(&Packet::Connect(connect), &mut out).unwrap();
    stream
        .write_all(&out)
        .await
        .map_err(|e| format!("CONNECT: {e}"))?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if let Some(packet) = read_packet(&mut buf, MAX_PACKET_BYTES).map_err(|e| e.to_string())? {
            match packet {
                Packet::ConnAck(ack)
                    if ack.code == azure_iot_protocol::mqtt::codec::ConnectReturnCode::Success =>
                {
                    break;
                }
                other => return Err(format!("refused: {other:?}")),
            }
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) => return Err("closed before CONNACK".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("reading CONNACK: {e}")),
        }
    }
    Ok((stream, buf))
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

/// What `connections` does.
struct HoldPlan {
    count: usize,
    pid: Option<u32>,
    parallel: usize,
    per_source: usize,
    probes: usize,
    hold: Duration,
}

/// Raises this process's open-file limit to its hard limit; returns the new soft limit.
fn raise_file_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            eprintln!("could not raise the open-file limit: {e}");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// The soft open-file limit of process `pid`, from /proc.
fn file_limit_of(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Source address `n` (0-based) of the loopback range: 127.0.0.1, 127.0.0.2, …
fn loopback_source(n: usize) -> IpAddr {
    let n = u32::try_from(n + 1).unwrap();
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + n))
}

async fn hold_connections(hub_dir: &Path, plan: HoldPlan) {
    let HoldPlan {
        count,
        pid,
        parallel,
        per_source,
        probes,
        hold,
    } = plan;
    // Every connection is a descriptor here and one in the server; a few dozen more for
    // the runtime, the REST client and the probes.
    let own_limit = raise_file_limit();
    let needed = count as u64 + 64;
    assert!(
        own_limit >= needed,
        "{count} connections need about {needed} open files; this process may have {own_limit} \
         (raise the hard limit: ulimit -Hn)"
    );
    let server_limit = pid.and_then(file_limit_of);
    if let Some(limit) = server_limit
        && limit < needed
    {
        eprintln!(
            "warning: the server may open {limit} files; {count} connections need about {needed}"
        );
    }
    let sources = count.div_ceil(per_source.max(1)).max(1);
    let hub = HubEndpoint::from_data_dir(hub_dir);
    let registering = Instant::now();
    let mut logins = register_devices(&hub, "idle", count).await;
    logins.extend(register_devices(&hub, "probe", probes).await);
    let register_secs = registering.elapsed().as_secs_f64();
    let target = Arc::new(Target {
        addr: hub.mqtt_addr,
        tls: Arc::new(hub.tls_config()),
        topics: Vec::new(),
        logins,
    });
    let before = pid.and_then(rss_kib);
    let started = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let target = target.clone();
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        let source = (sources > 1).then(|| loopback_source(i % sources));
        tasks.push(tokio::spawn(async move {
            let conn = try_open(&target, i, 1000, source).await;
            drop(permit);
            conn
        }));
    }
    let mut held = Vec::with_capacity(count);
    let mut failures = 0usize;
    let mut first_failure = None;
    for t in tasks {
        match t.await.unwrap() {
            Ok(conn) => held.push(conn),
            Err(e) => {
                failures += 1;
                first_failure.get_or_insert(e);
            }
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    if let Some(e) = &first_failure {
        eprintln!("{failures} of {count} connections failed; the first: {e}");
    }
    // Let the server settle, then read its memory with every connection open and idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = pid.and_then(rss_kib);
    let per_connection = match (before, after) {
        (Some(b), Some(a)) if !held.is_empty() => {
            Some((a.saturating_sub(b)) as f64 * 1024.0 / held.len() as f64)
        }
        _ => None,
    };
    // One more device, while all are held: TCP + TLS + CONNECT + CONNACK, then it leaves.
    let mut probe_ms = Vec::with_capacity(probes);
    for p in 0..probes {
        let started = Instant::now();
        match try_open(&target, count + p, 1000, Some(loopback_source(p % sources))).await {
            Ok((mut stream, _)) => {
                probe_ms.push(started.elapsed().as_secs_f64() * 1000.0);
                let _ = stream.shutdown().await;
            }
            Err(e) => eprintln!("probe {p} failed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    probe_ms.sort_by(f64::total_cmp);
    let median = probe_ms.get(probe_ms.len() / 2).copied();
    println!(
        "RESULT {}",
        json!({"bench": "connections", "count": count, "held": held.len(), "failed": failures,
               "source_addresses": sources, "register_seconds": register_secs,
               "connect_seconds": connect_secs, "connects_per_s": held.len() as f64 / connect_secs,
               "server_rss_before_kib": before, "server_rss_after_kib": after,
               "bytes_per_connection": per_connection,
               "probe_connect_ms_median": median, "probe_connect_ms_max": probe_ms.last(),
               "probe_connect_ms": probe_ms, "file_limit": own_limit,
               "server_file_limit": server_limit})
    );
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    drop(held);
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
    let pct = |q: f64| dps::percentile_ms(&latencies, q);
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
