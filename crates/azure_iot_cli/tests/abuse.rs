//! The standing abuse suite (issue 12): `azure-iot hub start` as a separate process, as a
//! hostile or careless client finds it.
//!
//! * Many idle and slow connections on every listener (TCP without a TLS handshake, TLS and
//!   then silence, headers or a CONNECT dribbled a byte at a time, a body that never comes)
//!   are all closed within their deadlines, while a well-behaved device (MQTT) and service
//!   (HTTPS and AMQP) keep working and the device connects in under a second.
//! * Oversized and malformed input on every protocol (TLS, HTTP, WebSocket, MQTT, AMQP) ends
//!   that connection, the emulator's resident memory stays within its budget, and the next
//!   client is served; unfinished messages held on many connections stay within it too.
//! * Under a descriptor limit (`ulimit -n`), a flood of connection attempts never makes the
//!   emulator run out of descriptors: a flood on one port leaves the others serving, and
//!   every port serves again once the flood's connections reach their deadline.
//! * The data directory is private (0700, files 0600) after all that traffic.
//! * The authorization matrix: every service endpoint refuses a missing, garbage, expired,
//!   foreign-hub, device-scoped or wrong-policy credential with 401; a device cannot use
//!   another device's identity or topics; AMQP refuses policies without ServiceConnect.
//!
//! By default the suite is short (a few hundred connections, deadlines of 2 s) so it runs in
//! CI; `AZURE_IOT_ABUSE_FULL=1` runs the numbers (2,000 idle connections per listener
//! at the default deadlines, 5,000 attempts under `ulimit -n 1024`, 100 WebSockets holding
//! unfinished messages) and prints the figures docs/EMULATOR.md quotes (`--nocapture`).
//!
//! Timing assertions bound a close by its deadline plus [`SLACK`] and check it never comes
//! before the deadline; nothing but the deadline closes these connections, so the bounds
//! hold on a loaded machine. The tests take turns ([`one_at_a_time`]) so that one test's
//! flood does not slow another's well-behaved client.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The suite prints its figures (run with `--nocapture`), from helpers as well as tests.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use azure_iot_core::NoRetry;
use azure_iot_core::connection_string::ServiceConnectionString;
use azure_iot_core::sas::{ResourceUri, SasToken};
use azure_iot_protocol::mqtt::codec::{ConnectReturnCode, Packet, QoS, Subscribe};
use azure_iot_service::{CloudToDeviceMessage, ErrorKind, ServiceClient, ServiceClientOptions};
use azure_iot_test::{
    HubEndpoint, MqttClient, RestClient, device_token, opcode, tls_connect, websocket_frame,
    websocket_frame_header, websocket_upgrade,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;

const HOUR: Duration = Duration::from_secs(3600);

/// How long past its deadline a close may come on a busy machine.
const SLACK: Duration = Duration::from_secs(10);

/// Tolerance for a close that seems to come early. A close is measured against the moment
/// the client started connecting, before the emulator's clock for it can start, so no close
/// that respects its deadline can seem early; this only absorbs timer granularity.
const EARLY: Duration = Duration::from_millis(20);

/// A well-behaved device connects within this while the abuse goes on (the bound).
const CONNECT_BOUND: Duration = Duration::from_secs(1);

/// Connections opened at once while setting up a flood (the rest wait their turn).
const OPENING: usize = 64;

/// The growth of the emulator's resident memory the short suite's floods may cause, over
/// what it used before them (MiB).
const RSS_BUDGET_MIB: u64 = 100;

/// Whether to run the numbers instead of the short suite.
fn full() -> bool {
    std::env::var("AZURE_IOT_ABUSE_FULL").is_ok_and(|v| v == "1")
}

/// The tests take turns: each floods the machine, and the others' timing must not suffer.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A runtime for one test, with this process's descriptor limit raised to its hard limit
/// (the floods hold thousands of sockets on the client side too).
fn runtime() -> tokio::runtime::Runtime {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The emulator as a process
// ---------------------------------------------------------------------------------------------

/// `azure-iot hub start` on free ports, with its data directory (created by the emulator) and
/// its log in a temporary directory.
struct Hub {
    child: Child,
    pid: u32,
    ep: HubEndpoint,
    data: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Hub {
    /// Starts the emulator with `options`, under `ulimit -n nofile` if given (set in a shell
    /// that then execs the emulator: `ulimit -n` sets the soft and the hard limit, so the
    /// emulator cannot raise it).
    async fn start(options: &[String], nofile: Option<u64>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("hub");
        let log = dir.path().join("hub.log");
        let binary = env!("CARGO_BIN_EXE_azure-iot");
        let mut command = match nofile {
            Some(n) => {
                let mut shell = Command::new("sh");
                shell
                    .arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(binary);
                shell
            }
            None => Command::new(binary),
        };
        command
            .args([
                "hub",
                "start",
                "--https-port",
                "0",
                "--mqtt-port",
                "0",
                "--amqp-port",
                "0",
                "--data-dir",
            ])
            .arg(&data)
            .args(options)
            .env("AZURE_IOT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("azure-iot starts");
        let pid = child.id().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(data.join("hub.json"))
                && serde_json::from_str::<Value>(&text).is_ok()
            {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "the emulator exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "hub.json did not appear");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ep = HubEndpoint::from_data_dir(&data);
        Self {
            child,
            pid,
            ep,
            data,
            log,
            _dir: dir,
        }
    }

    fn addr(&self, port: Port) -> SocketAddr {
        port.addr(&self.ep)
    }

    /// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        status
            .lines()
            .find_map(|line| {
                line.strip_prefix(field)?
                    .strip_prefix(':')?
                    .trim()
                    .strip_suffix(" kB")?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{field} in /proc/{}/status", self.pid))
    }

    /// Resident memory now, KiB.
    fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    /// The most resident memory the process has had, KiB.
    fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM")
    }

    /// Descriptors the process has open.
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .unwrap()
            .count()
    }

    /// The process's soft and hard open-file limits, from `/proc/<pid>/limits`.
    fn nofile(&self) -> (String, String) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid)).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        let mut fields = line["Max open files".len()..].split_whitespace();
        (
            fields.next().unwrap().to_owned(),
            fields.next().unwrap().to_owned(),
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (up to `within`) until the emulator holds at most `fds` descriptors; returns how
    /// many it holds then.
    async fn settle_fds(&self, fds: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let now = self.open_fds();
            if now <= fds || Instant::now() > deadline {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asserts the emulator is still running and never panicked, then stops it.
    async fn stop(mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the emulator exited: {}",
            self.log()
        );
        let log = self.log();
        assert!(
            !log.contains("panicked"),
            "the emulator panicked:\n{}",
            log.lines()
                .filter(|l| l.contains("panicked"))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}

impl Drop for Hub {
    /// A failing test shows the end of the emulator's log.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- the emulator's log, last 30 lines ---\n{}",
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
    }
}

/// One of the emulator's listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    Https,
    Mqtt,
    Amqp,
}

impl Port {
    const ALL: [Port; 3] = [Port::Https, Port::Mqtt, Port::Amqp];

    fn addr(self, ep: &HubEndpoint) -> SocketAddr {
        match self {
            Port::Https => ep.https_addr,
            Port::Mqtt => ep.mqtt_addr,
            Port::Amqp => ep.amqp_addr,
        }
    }
}

/// Asserts that `dir` is 0700 and every file in it 0600 (directories in it, the blob store,
/// 0700); returns the names.
fn assert_private(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let private = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&path), private, "{}", path.display());
        files.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    for expected in [
        "hub.json",
        "hub.db",
        "hub.db-wal",
        "telemetry.db",
        "ca-key.pem",
    ] {
        assert!(
            files.iter().any(|f| f == expected),
            "{expected} in {files:?}"
        );
    }
    files.sort();
    files
}

// ---------------------------------------------------------------------------------------------
// The well-behaved device and service
// ---------------------------------------------------------------------------------------------

/// A device `good` and a service that use the hub as intended, one round at a time.
struct WellBehaved {
    ep: HubEndpoint,
    key: String,
    service: ServiceClient,
}

/// What one round took.
#[derive(Debug, Clone, Copy)]
struct Round {
    /// TLS handshake, CONNECT and CONNACK of the device.
    connect: Duration,
    /// The whole round: connect, subscribe, telemetry, twin read, C2D over AMQP.
    total: Duration,
}

fn service_client(ep: &HubEndpoint, connection_string: &str) -> ServiceClient {
    ServiceClient::from_connection_string(
        connection_string,
        ServiceClientOptions::default()
            .trusted_ca_pem(ep.ca_pem.clone())
            .https_port(ep.https_addr.port())
            .amqp_port(ep.amqp_addr.port())
            .request_timeout(Duration::from_secs(10))
            .retry_policy(NoRetry),
    )
    .unwrap()
}

impl WellBehaved {
    async fn register(hub: &Hub) -> Self {
        let key = RestClient::new(&hub.ep, "iothubowner")
            .register_device("good")
            .await;
        Self {
            ep: hub.ep.clone(),
            key,
            service: service_client(&hub.ep, hub.ep.connection_string("service")),
        }
    }

    async fn device(&self) -> (MqttClient, Duration) {
        let token = device_token(&self.ep, "good", None, &self.key, HOUR);
        let started = Instant::now();
        let (device, ack) = MqttClient::connect(&self.ep, "good", &token, true, 60).await;
        let connect = started.elapsed();
        assert_eq!(ack.code, ConnectReturnCode::Success, "the device connects");
        (device, connect)
    }

    /// Connects the device, sends telemetry, reads its twin over HTTPS and sends it a C2D
    /// message over a new AMQP connection, which the device receives.
    async fn round(&self, n: u32) -> Round {
        let started = Instant::now();
        let (mut device, connect) = self.device().await;
        assert!(matches!(
            device
                .subscribe("devices/good/messages/devicebound/#", QoS::AtLeastOnce)
                .await,
            Packet::SubAck(_)
        ));
        device
            .publish(
                "devices/good/messages/events/",
                format!("round {n}"),
                QoS::AtLeastOnce,
            )
            .await;
        // C2D messages queued earlier may come first; they are acknowledged and skipped.
        let body = format!("c2d {n}");
        let mut delivered = false;
        loop {
            match device.recv().await {
                Some(Packet::PubAck(_)) => break,
                Some(Packet::Publish(p)) => {
                    delivered |= p.payload.as_ref() == body.as_bytes();
                    device
                        .send(Packet::PubAck(
                            azure_iot_protocol::mqtt::codec::PubAck::new(p.pkid),
                        ))
                        .await;
                }
                other => panic!("telemetry is acknowledged: {other:?}"),
            }
        }
        assert!(!delivered, "round {n}'s C2D message is sent below");
        let twin = self.service.get_twin("good").await.expect("twin read");
        assert_eq!(twin.device_id, "good");
        let messaging = self.service.messaging().await.expect("AMQP connection");
        messaging
            .send("good", CloudToDeviceMessage::new(body.clone()))
            .await
            .expect("C2D accepted");
        let _ = messaging.close().await;
        loop {
            let message = device.next_publish().await;
            if message.payload.as_ref() == body.as_bytes() {
                break;
            }
        }
        Round {
            connect,
            total: started.elapsed(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Idle and slow connections
// ---------------------------------------------------------------------------------------------

/// What an abusive connection does after it opens.
#[derive(Debug, Clone)]
enum Behaviour {
    /// TCP only: never starts the TLS handshake.
    NoHandshake,
    /// TLS, these bytes at once, then silence.
    Silent(Vec<u8>),
    /// TLS, then these bytes one at a time at an interval.
    Dribble(Vec<u8>),
}

/// One kind of abusive connection and the deadline that must close it.
#[derive(Debug, Clone)]
struct Abuse {
    port: Port,
    what: &'static str,
    behaviour: Behaviour,
    deadline: Duration,
}

/// How an abusive connection went.
#[derive(Debug)]
struct Outcome {
    what: &'static str,
    port: Port,
    deadline: Duration,
    /// The connection could not be opened.
    refused: Option<String>,
    /// When the client started connecting (the emulator's deadlines start later).
    started: Instant,
    /// When the client had the connection open (late when its threads are busy).
    opened: Instant,
    last_byte: Instant,
    /// When the client saw the close (`None`: still open when it gave up).
    closed: Option<Instant>,
}

/// The sizes and deadlines of a run.
struct Scale {
    /// Idle connections per listener (half without a handshake, half silent after it).
    idle: usize,
    /// Slow connections per listener.
    slow: usize,
    /// How often a slow connection sends its next byte.
    every: Duration,
    handshake: Duration,
    connect: Duration,
    http_idle: Duration,
    body: Duration,
    /// Whether the deadlines are the defaults (no options given).
    defaults: bool,
}

impl Scale {
    fn get() -> Self {
        if full() {
            Self {
                idle: 2000,
                slow: 200,
                every: Duration::from_secs(5),
                handshake: Duration::from_secs(10),
                connect: Duration::from_secs(10),
                http_idle: Duration::from_secs(30),
                body: Duration::from_secs(30),
                defaults: true,
            }
        } else {
            Self::short(200, 50)
        }
    }

    fn short(idle: usize, slow: usize) -> Self {
        let two = Duration::from_secs(2);
        Self {
            idle,
            slow,
            every: Duration::from_millis(500),
            handshake: two,
            connect: two,
            http_idle: two,
            body: two,
            defaults: false,
        }
    }

    /// The `hub start` options for these deadlines.
    fn options(&self) -> Vec<String> {
        if self.defaults {
            return Vec::new();
        }
        [
            ("--handshake-timeout", self.handshake),
            ("--connect-timeout", self.connect),
            ("--http-idle-timeout", self.http_idle),
            ("--body-timeout", self.body),
        ]
        .into_iter()
        .flat_map(|(name, value)| [name.to_owned(), value.as_secs().to_string()])
        .collect()
    }

    /// The abusive connections of a run, by listener.
    fn abuses(&self, ep: &HubEndpoint) -> Vec<Abuse> {
        let token = RestClient::new(ep, "iothubowner").token();
        let unfinished_body = format!(
            "PUT /devices/never?api-version=2021-04-12 HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: {token}\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\n\r\n{{\"deviceId\""
        )
        .into_bytes();
        let slowloris =
            b"GET /devices HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                .to_vec();
        // A CONNECT's fixed header and the start of its variable header.
        let slow_connect = b"\x10\x7f\x00\x04MQTT\x04\xc2\x00\x3c\x00\x04slow\x00\x20".to_vec();
        let sasl_header = b"AMQP\x03\x01\x00\x00".to_vec();
        let mut slow_amqp = sasl_header.clone();
        slow_amqp.extend_from_slice(b"\x00\x00\x00\x40\x02\x01\x00\x00\x00\x53\x41\xc0");
        let mut abuses = Vec::new();
        let mut add = |n: usize, port, what, behaviour: Behaviour, deadline| {
            abuses.extend((0..n).map(|_| Abuse {
                port,
                what,
                behaviour: behaviour.clone(),
                deadline,
            }));
        };
        let (half, rest) = (self.idle / 2, self.idle - self.idle / 2);
        let (slow_half, slow_rest) = (self.slow / 2, self.slow - self.slow / 2);
        // The TLS ones first: they take longest to open, and the ones without a handshake
        // open at once just before the well-behaved device connects.
        add(
            rest,
            Port::Https,
            "HTTPS: TLS, then no request",
            Behaviour::Silent(Vec::new()),
            self.http_idle,
        );
        add(
            slow_half,
            Port::Https,
            "HTTPS: headers a byte at a time",
            Behaviour::Dribble(slowloris),
            self.http_idle,
        );
        add(
            slow_rest,
            Port::Https,
            "HTTPS: a body that never arrives",
            Behaviour::Silent(unfinished_body),
            self.body,
        );
        add(
            rest,
            Port::Mqtt,
            "MQTT: TLS, then no CONNECT",
            Behaviour::Silent(Vec::new()),
            self.connect,
        );
        add(
            self.slow,
            Port::Mqtt,
            "MQTT: CONNECT a byte at a time",
            Behaviour::Dribble(slow_connect),
            self.connect,
        );
        add(
            rest,
            Port::Amqp,
            "AMQP: the SASL header, then silence",
            Behaviour::Silent(sasl_header),
            self.connect,
        );
        add(
            self.slow,
            Port::Amqp,
            "AMQP: the SASL exchange a byte at a time",
            Behaviour::Dribble(slow_amqp),
            self.connect,
        );
        for port in Port::ALL {
            add(
                half,
                port,
                match port {
                    Port::Https => "HTTPS: TCP, no TLS handshake",
                    Port::Mqtt => "MQTT: TCP, no TLS handshake",
                    Port::Amqp => "AMQP: TCP, no TLS handshake",
                },
                Behaviour::NoHandshake,
                self.handshake,
            );
        }
        abuses
    }
}

/// Reads until the server closes, sending `dribble` a byte at a time every `every`; returns
/// when the close was seen (`None` if not by `give_up`) and when the last byte went out.
async fn watch<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    dribble: &[u8],
    every: Duration,
    mut last_byte: Instant,
    give_up: Instant,
) -> (Option<Instant>, Instant) {
    let mut buf = [0u8; 2048];
    let mut sent = 0;
    let mut next = Instant::now() + every;
    loop {
        let write_due = sent < dribble.len();
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return (Some(Instant::now()), last_byte),
                Ok(_) => {}
            },
            _ = tokio::time::sleep_until(next.into()), if write_due => {
                if stream.write_all(&dribble[sent..=sent]).await.is_err()
                    || stream.flush().await.is_err()
                {
                    return (Some(Instant::now()), last_byte);
                }
                sent += 1;
                last_byte = Instant::now();
                next += every;
            }
            _ = tokio::time::sleep_until(give_up.into()) => return (None, last_byte),
        }
    }
}

/// Counts of a flood in progress.
#[derive(Default)]
struct Counts {
    /// Connections that tried to open (opened or refused).
    tried: AtomicUsize,
    /// Connections open now.
    held: AtomicUsize,
}

/// Opens one abusive connection (while holding a place in `opening`), counts it while it is
/// open, and watches it until the server closes it.
async fn abuse(
    ep: Arc<HubEndpoint>,
    abuse: Abuse,
    every: Duration,
    opening: Arc<Semaphore>,
    counts: Arc<Counts>,
) -> Outcome {
    let place = opening.acquire_owned().await.unwrap();
    let addr = abuse.port.addr(&ep);
    let mut outcome = Outcome {
        what: abuse.what,
        port: abuse.port,
        deadline: abuse.deadline,
        refused: None,
        started: Instant::now(),
        opened: Instant::now(),
        last_byte: Instant::now(),
        closed: None,
    };
    match abuse.behaviour {
        Behaviour::NoHandshake => match TcpStream::connect(addr).await {
            Ok(mut tcp) => {
                outcome.opened = Instant::now();
                drop(place);
                counts.held.fetch_add(1, Ordering::SeqCst);
                counts.tried.fetch_add(1, Ordering::SeqCst);
                let give_up = outcome.opened + abuse.deadline + SLACK;
                (outcome.closed, outcome.last_byte) =
                    watch(&mut tcp, &[], every, outcome.opened, give_up).await;
                counts.held.fetch_sub(1, Ordering::SeqCst);
            }
            Err(e) => {
                outcome.refused = Some(e.to_string());
                counts.tried.fetch_add(1, Ordering::SeqCst);
            }
        },
        behaviour => {
            let (preamble, dribble) = match &behaviour {
                Behaviour::Silent(bytes) => (bytes.as_slice(), &[][..]),
                Behaviour::Dribble(bytes) => (&[][..], bytes.as_slice()),
                Behaviour::NoHandshake => unreachable!(),
            };
            match tls_connect(&ep, addr).await {
                Ok(mut tls) => {
                    if !preamble.is_empty() {
                        let _ = tls.write_all(preamble).await;
                        let _ = tls.flush().await;
                    }
                    outcome.opened = Instant::now();
                    outcome.last_byte = outcome.opened;
                    drop(place);
                    counts.held.fetch_add(1, Ordering::SeqCst);
                    counts.tried.fetch_add(1, Ordering::SeqCst);
                    let give_up = outcome.opened + abuse.deadline + SLACK;
                    (outcome.closed, outcome.last_byte) =
                        watch(&mut tls, dribble, every, outcome.opened, give_up).await;
                    counts.held.fetch_sub(1, Ordering::SeqCst);
                }
                Err(e) => {
                    outcome.refused = Some(e.to_string());
                    counts.tried.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }
    outcome
}

/// Per kind of connection: how many, how many were refused or never closed, and the longest
/// time from its last byte to its close.
fn summarize(outcomes: &[Outcome]) -> Vec<(&'static str, usize, usize, usize, Duration)> {
    let mut kinds: Vec<&'static str> = outcomes.iter().map(|o| o.what).collect();
    kinds.sort();
    kinds.dedup();
    kinds
        .into_iter()
        .map(|what| {
            let of_kind: Vec<&Outcome> = outcomes.iter().filter(|o| o.what == what).collect();
            let refused = of_kind.iter().filter(|o| o.refused.is_some()).count();
            let open = of_kind
                .iter()
                .filter(|o| o.refused.is_none() && o.closed.is_none())
                .count();
            let longest = of_kind
                .iter()
                .filter_map(|o| Some(o.closed? - o.last_byte))
                .max()
                .unwrap_or_default();
            (what, of_kind.len(), refused, open, longest)
        })
        .collect()
}

#[test]
fn idle_and_slow_connections_on_every_listener_are_closed_while_a_device_and_service_work() {
    let _turn = one_at_a_time();
    runtime().block_on(async {
        let scale = Scale::get();
        let hub = Hub::start(&scale.options(), None).await;
        let good = WellBehaved::register(&hub).await;
        let warm_up = good.round(0).await;
        let rss_before = hub.rss_kib();
        let fds_before = hub.open_fds();

        let ep = Arc::new(hub.ep.clone());
        let opening = Arc::new(Semaphore::new(OPENING));
        let counts = Arc::new(Counts::default());
        let abuses = scale.abuses(&hub.ep);
        let total = abuses.len();
        let started = Instant::now();
        let tasks: Vec<_> = abuses
            .into_iter()
            .map(|a| {
                tokio::spawn(abuse(
                    ep.clone(),
                    a,
                    scale.every,
                    opening.clone(),
                    counts.clone(),
                ))
            })
            .collect();
        while counts.tried.load(Ordering::SeqCst) < total {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let opened_in = started.elapsed();
        let held_at_connect = counts.held.load(Ordering::SeqCst);
        let fds_held = hub.open_fds();
        let during = good.round(1).await;
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        let all_closed_in = started.elapsed();
        let fds_after = hub.settle_fds(fds_before + 8, SLACK).await;
        let after = good.round(2).await;
        let peak = hub.peak_rss_kib();

        println!(
            "abuse: {total} connections ({} idle + {} slow per listener) opened in {opened_in:?}; \
             {held_at_connect} held and the emulator at {fds_held} descriptors when the device \
             connected in {:?} (round {:?}; before the abuse {:?}, after {:?} / {:?}); all closed \
             {all_closed_in:?} after the first opened; descriptors {fds_before} before, \
             {fds_after} after; RSS {} KiB before, peak {} KiB (+{} MiB)",
            scale.idle,
            scale.slow,
            during.connect,
            during.total,
            warm_up.connect,
            after.connect,
            after.total,
            rss_before,
            peak,
            peak.saturating_sub(rss_before) / 1024,
        );
        for (what, count, refused, open, longest) in summarize(&outcomes) {
            println!(
                "  {what}: {count}, refused {refused}, still open {open}, \
                 last byte to close at most {longest:?}"
            );
        }

        for o in &outcomes {
            assert!(
                o.refused.is_none(),
                "{}: refused at open: {:?}",
                o.what,
                o.refused
            );
            let closed = o.closed.unwrap_or_else(|| {
                panic!(
                    "{} ({:?}): still open {:?} after its last byte",
                    o.what,
                    o.port,
                    SLACK + o.deadline
                )
            });
            assert!(
                closed - o.last_byte <= o.deadline + SLACK,
                "{}: closed {:?} after its last byte (deadline {:?})",
                o.what,
                closed - o.last_byte,
                o.deadline
            );
            assert!(
                closed - o.started + EARLY >= o.deadline,
                "{}: closed {:?} after it started connecting, before its deadline {:?}",
                o.what,
                closed - o.started,
                o.deadline
            );
        }
        assert!(
            held_at_connect * 2 >= total,
            "most connections were held when the device connected: {held_at_connect} of {total}"
        );
        assert!(
            during.connect < CONNECT_BOUND,
            "the device connected in {:?} during the abuse",
            during.connect
        );
        assert!(
            fds_after <= fds_before + 8,
            "the emulator closed its side: {fds_after} descriptors, {fds_before} before"
        );
        if !full() {
            assert!(
                peak.saturating_sub(rss_before) < RSS_BUDGET_MIB * 1024,
                "RSS grew from {rss_before} KiB to {peak} KiB"
            );
        }
        let private = assert_private(&hub.data);
        println!("  data directory 0700, files 0600: {private:?}");
        hub.stop().await;
    });
}

// ---------------------------------------------------------------------------------------------
// Malformed and oversized input
// ---------------------------------------------------------------------------------------------

/// How a malformed case reaches the emulator before sending its bytes.
#[derive(Debug, Clone, Copy)]
enum Via {
    /// Plain TCP: the bytes are where the TLS handshake should be.
    Tcp,
    /// After the TLS handshake.
    Tls,
    /// After a WebSocket upgrade on the HTTPS port, with this subprotocol.
    WebSocket(&'static str),
    /// After the device `good` authenticated over MQTT.
    MqttDevice,
}

/// One malformed or oversized input, and the prefix of the answer it must get (if any)
/// before the connection closes.
struct Bad {
    port: Port,
    what: String,
    via: Via,
    bytes: Vec<u8>,
    answer: Option<&'static [u8]>,
}

/// Bytes no protocol expects (a fixed pseudo-random sequence).
fn garbage(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// An MQTT remaining length.
fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return out;
        }
    }
}

/// An MQTT packet: the first byte, the remaining length of `body`, and `body`.
fn mqtt_packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut packet = vec![first];
    packet.extend(varint(body.len()));
    packet.extend_from_slice(body);
    packet
}

/// An MQTT UTF-8 string: its length and its bytes.
fn mqtt_string(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

/// A CONNECT naming `protocol` at `level` (clean session, no credentials).
fn mqtt_connect(protocol: &[u8], level: u8) -> Vec<u8> {
    let mut body = mqtt_string(protocol);
    body.extend_from_slice(&[level, 0x02, 0x00, 0x3c]);
    body.extend(mqtt_string(b"bad"));
    mqtt_packet(0x10, &body)
}

/// A QoS 1 PUBLISH of `payload` to `topic`.
fn mqtt_publish(topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = mqtt_string(topic);
    body.extend_from_slice(&[0x00, 0x01]);
    body.extend_from_slice(payload);
    mqtt_packet(0x32, &body)
}

const SASL_HEADER: &[u8] = b"AMQP\x03\x01\x00\x00";

/// The SASL protocol header followed by `frame`.
fn after_sasl_header(frame: &[u8]) -> Vec<u8> {
    let mut bytes = SASL_HEADER.to_vec();
    bytes.extend_from_slice(frame);
    bytes
}

/// An HTTP request with a valid owner token and `extra` headers and body as given.
fn http_request(ep: &HubEndpoint, head: &str, rest: &[u8]) -> Vec<u8> {
    let token = RestClient::new(ep, "iothubowner").token();
    let mut bytes = format!("{head}\r\nHost: localhost\r\nAuthorization: {token}\r\n").into_bytes();
    bytes.extend_from_slice(rest);
    bytes
}

fn malformed_cases(ep: &HubEndpoint) -> Vec<Bad> {
    let mut cases = Vec::new();
    for port in Port::ALL {
        for (what, bytes) in [
            (
                "plain HTTP instead of TLS",
                b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            ),
            ("64 KiB of garbage instead of TLS", garbage(64 * 1024)),
            ("a TLS record declaring 64 KiB", {
                let mut record = vec![0x16, 0x03, 0x01, 0xff, 0xff];
                record.extend(garbage(1024));
                record
            }),
        ] {
            cases.push(Bad {
                port,
                what: format!("{port:?}: {what}"),
                via: Via::Tcp,
                bytes,
                answer: None,
            });
        }
    }
    let http = |what: &str, bytes: Vec<u8>, answer| Bad {
        port: Port::Https,
        what: format!("HTTPS: {what}"),
        via: Via::Tls,
        bytes,
        answer,
    };
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let mut many_headers = "GET /devices HTTP/1.1\r\nHost: localhost\r\n".to_owned();
    for i in 0..500 {
        many_headers.push_str(&format!("X-H{i}: {i}\r\n"));
    }
    many_headers.push_str("\r\n");
    cases.extend([
        http(
            "a request line of binary garbage",
            b"\x00\x01\x02\x03 /\xff HTTP/1.1\r\n\r\n".to_vec(),
            Some(b"HTTP/1.1 400"),
        ),
        http(
            "1 MiB of headers",
            format!(
                "GET /devices HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
                "a".repeat(1024 * 1024)
            )
            .into_bytes(),
            Some(b"HTTP/1.1 431"),
        ),
        http(
            "500 header lines",
            many_headers.into_bytes(),
            Some(b"HTTP/1.1 431"),
        ),
        http(
            "a body declared as 10 GB, 2 MiB of it sent",
            {
                let mut bytes = http_request(
                    ep,
                    "PUT /devices/big?api-version=2021-04-12 HTTP/1.1",
                    b"Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n",
                );
                bytes.extend(vec![b' '; 2 * 1024 * 1024 + 64 * 1024]);
                bytes
            },
            Some(b"HTTP/1.1 413"),
        ),
        http(
            "a Content-Length of 30 digits",
            http_request(
                ep,
                "PUT /devices/big?api-version=2021-04-12 HTTP/1.1",
                b"Content-Length: 999999999999999999999999999999\r\n\r\n",
            ),
            Some(b"HTTP/1.1 400"),
        ),
        http(
            "a chunked body with a malformed chunk size",
            http_request(
                ep,
                "PUT /devices/chunky?api-version=2021-04-12 HTTP/1.1",
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
                  ZZZZ\r\n{}\r\n",
            ),
            None,
        ),
        http(
            "a 100,000-deep JSON body",
            http_request(
                ep,
                "PUT /devices/deep?api-version=2021-04-12 HTTP/1.1",
                format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{deep}",
                    deep.len()
                )
                .as_bytes(),
            ),
            Some(b"HTTP/1.1 400"),
        ),
        http(
            "the HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            None,
        ),
    ]);
    for subprotocol in ["mqtt", "AMQPWSB10"] {
        let ws = |what: &str, bytes: Vec<u8>| Bad {
            port: Port::Https,
            what: format!("WebSocket {subprotocol}: {what}"),
            via: Via::WebSocket(subprotocol),
            bytes,
            answer: None,
        };
        let mut over = websocket_frame_header(opcode::BINARY, true, 600 * 1024);
        over.extend(vec![0u8; 1024]);
        let mut fragments = Vec::new();
        for i in 0..9 {
            let code = if i == 0 {
                opcode::BINARY
            } else {
                opcode::CONTINUATION
            };
            fragments.extend(websocket_frame(code, false, &vec![0u8; 64 * 1024]));
        }
        cases.extend([
            ws("a frame declaring 600 KiB", over),
            ws("fragments of one message past 512 KiB", fragments),
            ws(
                "a text frame",
                websocket_frame(opcode::TEXT, true, b"hello"),
            ),
            ws(
                "an unmasked frame",
                vec![0x82, 0x05, b'h', b'e', b'l', b'l', b'o'],
            ),
            ws("reserved bits set", vec![0xf2, 0x80, 0, 0, 0, 0]),
        ]);
    }
    cases.push(Bad {
        port: Port::Https,
        what: "WebSocket AMQPWSB10: an AMQP frame whose size is 4".into(),
        via: Via::WebSocket("AMQPWSB10"),
        bytes: websocket_frame(
            opcode::BINARY,
            true,
            &after_sasl_header(&[0, 0, 0, 4, 2, 0, 0, 0]),
        ),
        answer: None,
    });
    cases.push(Bad {
        port: Port::Https,
        what: "WebSocket mqtt: PUBLISH before CONNECT".into(),
        via: Via::WebSocket("mqtt"),
        bytes: websocket_frame(
            opcode::BINARY,
            true,
            &mqtt_publish(b"devices/good/messages/events/", b"x"),
        ),
        answer: None,
    });
    let mqtt = |what: &str, via, bytes: Vec<u8>, answer| Bad {
        port: Port::Mqtt,
        what: format!("MQTT: {what}"),
        via,
        bytes,
        answer,
    };
    let mut huge = vec![0x10];
    huge.extend(varint(200_000_000));
    huge.extend(garbage(4096));
    cases.extend([
        mqtt("a packet declaring 200 MB", Via::Tls, huge, None),
        mqtt(
            "a remaining length of five bytes",
            Via::Tls,
            vec![0x10, 0xff, 0xff, 0xff, 0xff, 0x7f],
            None,
        ),
        mqtt(
            "PUBLISH before CONNECT",
            Via::Tls,
            mqtt_publish(b"devices/good/messages/events/", b"x"),
            None,
        ),
        mqtt(
            "CONNECT with protocol level 9",
            Via::Tls,
            mqtt_connect(b"MQTT", 9),
            Some(&[0x20, 0x02, 0x00, 0x01]),
        ),
        mqtt(
            "CONNECT naming another protocol",
            Via::Tls,
            mqtt_connect(b"XQTT", 4),
            None,
        ),
        mqtt("packet type 0", Via::Tls, vec![0x00, 0x00], None),
        mqtt(
            "PUBLISH with U+0000 in its topic",
            Via::MqttDevice,
            mqtt_publish(b"devices/good/messages/events/\0", b"x"),
            None,
        ),
        mqtt(
            "PUBLISH over 256 KiB",
            Via::MqttDevice,
            mqtt_publish(
                b"devices/good/messages/events/",
                &vec![b'x'; 256 * 1024 + 1],
            ),
            None,
        ),
        mqtt(
            "a second CONNECT",
            Via::MqttDevice,
            mqtt_connect(b"MQTT", 4),
            None,
        ),
    ]);
    let amqp = |what: &str, bytes: Vec<u8>| Bad {
        port: Port::Amqp,
        what: format!("AMQP: {what}"),
        via: Via::Tls,
        bytes,
        answer: None,
    };
    let mut big_frame = after_sasl_header(&[0x01, 0x00, 0x00, 0x00, 2, 0, 0, 0]);
    big_frame.extend(garbage(64 * 1024));
    cases.extend([
        amqp("an unknown protocol id", b"AMQP\x09\x01\x00\x00".to_vec()),
        amqp(
            "HTTP on the AMQP port",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        amqp(
            "a frame whose size is 4",
            after_sasl_header(&[0, 0, 0, 4, 2, 0, 0, 0]),
        ),
        amqp(
            "a frame declaring 4 GiB",
            after_sasl_header(&[0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0]),
        ),
        amqp("a frame declaring 16 MiB", big_frame),
        amqp("a data offset of 0", {
            let mut frame = vec![0, 0, 0, 16, 0, 0, 0, 0];
            frame.extend([0u8; 8]);
            after_sasl_header(&frame)
        }),
        amqp("a SASL frame of garbage", {
            let mut frame = vec![0, 0, 0, 24, 2, 1, 0, 0];
            frame.extend(garbage(16));
            after_sasl_header(&frame)
        }),
        amqp("the AMQP header without SASL, then garbage", {
            let mut bytes = b"AMQP\x00\x01\x00\x00".to_vec();
            bytes.extend(garbage(4096));
            bytes
        }),
    ]);
    cases
}

/// Reads until the server closes (`None` if it does not within `wait`); returns what it sent.
async fn answer_until_closed<S: AsyncRead + Unpin>(
    stream: &mut S,
    wait: Duration,
) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(received),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

/// Sends `bad` and returns what the emulator answered before closing the connection; fails
/// the test if it does not close it.
async fn send_bad(hub: &Hub, good: &WellBehaved, bad: &Bad, wait: Duration) -> Vec<u8> {
    let addr = hub.addr(bad.port);
    let answer = match bad.via {
        Via::Tcp => {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            let _ = tcp.write_all(&bad.bytes).await;
            answer_until_closed(&mut tcp, wait).await
        }
        Via::Tls | Via::WebSocket(_) => {
            let mut tls = tls_connect(&hub.ep, addr).await.unwrap();
            if let Via::WebSocket(subprotocol) = bad.via {
                websocket_upgrade(&mut tls, subprotocol).await.unwrap();
            }
            let _ = tls.write_all(&bad.bytes).await;
            let _ = tls.flush().await;
            answer_until_closed(&mut tls, wait).await
        }
        Via::MqttDevice => {
            let (mut device, _) = good.device().await;
            device.send_raw(&bad.bytes).await;
            let mut answered = Vec::new();
            while let Some(packet) = device.recv().await {
                answered.extend(format!("{packet:?}").into_bytes());
            }
            Some(answered)
        }
    };
    answer.unwrap_or_else(|| panic!("{}: the connection is still open after {wait:?}", bad.what))
}

/// Checks that the listener `port` serves a new client.
async fn served(hub: &Hub, good: &WellBehaved, port: Port) {
    match port {
        Port::Https => {
            let r = RestClient::new(&hub.ep, "iothubowner")
                .get("/devices/good")
                .await;
            assert_eq!(r.status, StatusCode::OK);
        }
        Port::Mqtt => {
            good.device().await;
        }
        Port::Amqp => {
            let messaging = service_client(&hub.ep, hub.ep.connection_string("service"))
                .messaging()
                .await
                .expect("AMQP connection");
            messaging
                .send("sink", CloudToDeviceMessage::new("x"))
                .await
                .expect("C2D accepted");
            let _ = messaging.close().await;
            good.service.purge_c2d_queue("sink").await.unwrap();
        }
    }
}

#[test]
fn malformed_and_oversized_input_is_refused_and_the_next_client_is_served() {
    let _turn = one_at_a_time();
    runtime().block_on(async {
        let scale = Scale::short(0, 0);
        let hub = Hub::start(&scale.options(), None).await;
        let good = WellBehaved::register(&hub).await;
        RestClient::new(&hub.ep, "iothubowner")
            .register_device("sink")
            .await;
        good.round(0).await;
        for port in Port::ALL {
            served(&hub, &good, port).await;
        }
        let rss_before = hub.rss_kib();
        let cases = malformed_cases(&hub.ep);
        let started = Instant::now();
        let mut worst = (0u64, String::new());
        for bad in &cases {
            let answer = send_bad(&hub, &good, bad, scale.http_idle + SLACK).await;
            println!(
                "  {}: closed, answered {:?}",
                bad.what,
                String::from_utf8_lossy(&answer[..answer.len().min(40)])
            );
            if let Some(prefix) = bad.answer {
                assert!(
                    answer.starts_with(prefix),
                    "{}: answered {:?}",
                    bad.what,
                    String::from_utf8_lossy(&answer[..answer.len().min(200)])
                );
            }
            let rss = hub.rss_kib();
            if rss > worst.0 {
                worst = (rss, bad.what.clone());
            }
            assert!(
                rss.saturating_sub(rss_before) < RSS_BUDGET_MIB * 1024,
                "{}: RSS {rss} KiB, {rss_before} KiB before",
                bad.what
            );
            served(&hub, &good, bad.port).await;
        }
        println!(
            "malformed: {} cases in {:?}; RSS {rss_before} KiB before, at most {} KiB (after {})",
            cases.len(),
            started.elapsed(),
            worst.0,
            worst.1
        );
        good.round(1).await;
        assert_private(&hub.data);
        hub.stop().await;
    });
}

// ---------------------------------------------------------------------------------------------
// Unfinished messages held on many connections
// ---------------------------------------------------------------------------------------------

/// A message a client starts and never finishes, as large as the protocol lets it be.
#[derive(Debug, Clone, Copy)]
enum Unfinished {
    /// Fragments of one WebSocket message (under the 512 KiB limit), the last one unfinished.
    WebSocket(&'static str),
    /// A CONNECT of the largest packet size, all but its last byte.
    MqttPacket,
    /// An AMQP frame of the largest size the frame check lets through (4 MiB), all but its
    /// last byte, during SASL (where the emulator refuses frames that large at their header).
    AmqpFrame,
    /// An HTTP body of the largest accepted size (2 MiB), all but its last byte, sent without
    /// credentials.
    HttpBody,
    /// HTTP headers that never end, just under what the server buffers.
    HttpHeaders,
}

impl Unfinished {
    fn port(self) -> Port {
        match self {
            Unfinished::MqttPacket => Port::Mqtt,
            Unfinished::AmqpFrame => Port::Amqp,
            _ => Port::Https,
        }
    }

    fn bytes(self) -> Vec<u8> {
        match self {
            Unfinished::WebSocket(_) => {
                let mut bytes = Vec::new();
                for i in 0..7 {
                    let code = if i == 0 {
                        opcode::BINARY
                    } else {
                        opcode::CONTINUATION
                    };
                    bytes.extend(websocket_frame(code, false, &vec![0u8; 64 * 1024]));
                }
                bytes.extend(websocket_frame_header(
                    opcode::CONTINUATION,
                    false,
                    64 * 1024,
                ));
                bytes.extend(vec![0u8; 60 * 1024]);
                bytes
            }
            Unfinished::MqttPacket => {
                let size = azure_iot_protocol::mqtt::codec::MAX_PACKET_BYTES - 8;
                let mut bytes = vec![0x10];
                bytes.extend(varint(size));
                bytes.extend(mqtt_string(b"MQTT"));
                bytes.extend(vec![0u8; size - 7]);
                bytes
            }
            Unfinished::AmqpFrame => {
                let size: u32 = 4 * 1024 * 1024;
                let mut bytes = SASL_HEADER.to_vec();
                bytes.extend(size.to_be_bytes());
                bytes.extend([2, 1, 0, 0]);
                bytes.extend(vec![0u8; size as usize - 9]);
                bytes
            }
            Unfinished::HttpBody => {
                // No credentials: nothing entitles this client to the hub's memory.
                let size = 2 * 1024 * 1024;
                let mut bytes = format!(
                    "PUT /devices/unfinished?api-version=2021-04-12 HTTP/1.1\r\n\
                     Host: localhost\r\nContent-Type: application/json\r\n\
                     Content-Length: {size}\r\n\r\n"
                )
                .into_bytes();
                bytes.extend(vec![b' '; size - 1]);
                bytes
            }
            Unfinished::HttpHeaders => {
                let mut bytes = b"GET /devices HTTP/1.1\r\nHost: localhost\r\n".to_vec();
                for i in 0..3000 {
                    bytes.extend(format!("X-Long-{i:04}: {}\r\n", "a".repeat(80)).into_bytes());
                }
                bytes
            }
        }
    }
}

/// `connections` clients each send an unfinished message and hold it; returns the growth of
/// the emulator's peak resident memory over what it used before (KiB), after checking that
/// every one of them is closed within the deadline and the next client is served.
async fn hold_unfinished(kind: Unfinished, connections: usize) -> u64 {
    let scale = Scale::short(0, 0);
    let hub = Hub::start(&scale.options(), None).await;
    let good = WellBehaved::register(&hub).await;
    RestClient::new(&hub.ep, "iothubowner")
        .register_device("sink")
        .await;
    served(&hub, &good, kind.port()).await;
    let rss_before = hub.rss_kib();
    let bytes = Arc::new(kind.bytes());
    let sent = Arc::new(AtomicUsize::new(0));
    let opening = Arc::new(Semaphore::new(16));
    let addr = hub.addr(kind.port());
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (ep, bytes, sent, opening) =
                (hub.ep.clone(), bytes.clone(), sent.clone(), opening.clone());
            tokio::spawn(async move {
                let place = opening.acquire_owned().await.unwrap();
                let mut tls = tls_connect(&ep, addr).await.unwrap();
                if let Unfinished::WebSocket(subprotocol) = kind {
                    websocket_upgrade(&mut tls, subprotocol).await.unwrap();
                }
                let opened = Instant::now();
                let wrote = tls.write_all(&bytes).await.is_ok() && tls.flush().await.is_ok();
                drop(place);
                sent.fetch_add(1, Ordering::SeqCst);
                let closed = answer_until_closed(&mut tls, scale.connect + SLACK).await;
                (wrote, opened, closed.map(|_| Instant::now()))
            })
        })
        .collect();
    while sent.load(Ordering::SeqCst) < connections {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sent_in = started.elapsed();
    // The server reads what is in its socket buffers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_held = hub.rss_kib();
    let mut never_closed = 0;
    let mut wrote_all = 0;
    for task in tasks {
        let (wrote, _, closed) = task.await.unwrap();
        wrote_all += usize::from(wrote);
        never_closed += usize::from(closed.is_none());
    }
    // VmHWM is updated lazily; the sample taken while the messages were held counts too.
    let peak = hub.peak_rss_kib().max(rss_held);
    let growth = peak.saturating_sub(rss_before);
    println!(
        "unfinished {kind:?}: {connections} connections of {} KiB each sent in {sent_in:?} \
         ({wrote_all} sent it all); RSS {rss_before} KiB before, {rss_held} KiB while held, \
         peak {peak} KiB: +{} MiB, {} KiB per connection; {} KiB after",
        bytes.len() / 1024,
        growth / 1024,
        growth / connections as u64,
        hub.rss_kib(),
    );
    assert_eq!(never_closed, 0, "every connection is closed");
    served(&hub, &good, kind.port()).await;
    hub.stop().await;
    growth
}

/// The bound: 100 WebSocket connections sending unfinished messages cost the
/// emulator less than 100 MB in total.
#[test]
fn unfinished_websocket_messages_cost_less_than_100_mb_per_100_connections() {
    let _turn = one_at_a_time();
    runtime().block_on(async {
        for subprotocol in ["mqtt", "AMQPWSB10"] {
            let growth = hold_unfinished(Unfinished::WebSocket(subprotocol), 100).await;
            assert!(
                growth * 1024 < 100_000_000,
                "{subprotocol}: +{growth} KiB for 100 connections"
            );
        }
    });
}

/// The same budget for the largest unfinished MQTT packet.
#[test]
fn unfinished_mqtt_packets_stay_within_budget() {
    let _turn = one_at_a_time();
    runtime().block_on(async {
        let growth = hold_unfinished(Unfinished::MqttPacket, 100).await;
        assert!(growth < RSS_BUDGET_MIB * 1024, "+{growth} KiB");
    });
}

/// The same budget for the largest unfinished AMQP frame before authentication.
#[test]
fn unfinished_amqp_frames_stay_within_budget() {
    let _turn = one_at_a_time();
    runtime().block_on(async {
        let growth = hold_unfinished(Unfinished::AmqpFrame, 100).await;
        assert!(growth < RSS_BUDGET_MIB * 1024, "+{growth} KiB");
    });
}

/// The same budget for the largest unfinished HTTP request body, sent without credentials
/// (found by this suite: the body used to be read, up to 2 MiB, before authorization).
#[test]
fn unfinished_http_bodies_stay_within_budget() {
    let _turn = one_at_a_time();
    runtime().block_on(async {
        let growth = hold_unfinished(Unfinished::HttpBody, 100).await;
        assert!(growth < RSS_BUDGET_MIB * 1024, "+{growth} KiB");
    });
}

/// The same budget for HTTP headers that never end.
#[test]
fn unfinished_http_headers_stay_within_budget() {
    let _turn = one_at_a_time();
    runtime().block_on(async {
        let growth = hold_unfinished(Unfinished::HttpHeaders, 100).await;
        assert!(growth < RSS_BUDGET_MIB * 1024, "+{growth} KiB");
    });
}

// ---------------------------------------------------------------------------------------------
// A flood of connection attempts under a descriptor limit
// ---------------------------------------------------------------------------------------------

/// `attempts` TCP connections to `ports` in turn, each held (without a TLS handshake) until
/// the emulator closes it. Returns once every attempt has been made: the tasks still
/// watching the held ones, how long the attempts took, and the most descriptors the emulator
/// had open meanwhile.
async fn flood(
    hub: &Hub,
    ports: &[Port],
    attempts: usize,
    deadline: Duration,
) -> (Vec<tokio::task::JoinHandle<Outcome>>, Duration, usize) {
    let ep = Arc::new(hub.ep.clone());
    let opening = Arc::new(Semaphore::new(256));
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let tasks: Vec<_> = (0..attempts)
        .map(|i| {
            let port = ports[i % ports.len()];
            tokio::spawn(abuse(
                ep.clone(),
                Abuse {
                    port,
                    what: match port {
                        Port::Https => "HTTPS",
                        Port::Mqtt => "MQTT",
                        Port::Amqp => "AMQP",
                    },
                    behaviour: Behaviour::NoHandshake,
                    deadline,
                },
                Duration::from_secs(1),
                opening.clone(),
                counts.clone(),
            ))
        })
        .collect();
    let mut most_fds = 0;
    while counts.tried.load(Ordering::SeqCst) < attempts {
        most_fds = most_fds.max(hub.open_fds());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The emulator accepts what the kernel queued a little later.
    for _ in 0..20 {
        most_fds = most_fds.max(hub.open_fds());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (tasks, started.elapsed(), most_fds)
}

/// How the attempts of a flood ended: closed at once (over the connection limit), held
/// until the deadline, closed in between, refused by the kernel, or never closed.
#[derive(Debug, Default)]
struct FloodResult {
    at_once: usize,
    held: usize,
    /// Closed after half the deadline but before it: attempts whose SYN the kernel dropped
    /// from a full listen queue and retried a second later, then closed at once.
    late: usize,
    refused: usize,
    open: usize,
    longest: Duration,
}

/// The kernel's count of connections dropped because a listen queue was full
/// (`TcpExt: ListenOverflows` in `/proc/net/netstat`, for the whole network namespace).
///
/// Such a connection looks established to the client, but the emulator cannot accept it
/// until the kernel's retransmitted SYN-ACK finds room in the queue (1, 3, 7, 15, 31 s
/// later): until then no deadline of the emulator's can close it.
fn listen_overflows() -> u64 {
    let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap();
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

async fn flood_result(tasks: Vec<tokio::task::JoinHandle<Outcome>>) -> FloodResult {
    let mut result = FloodResult::default();
    for task in tasks {
        let o = task.await.unwrap();
        match (o.refused, o.closed) {
            (Some(_), _) => result.refused += 1,
            (None, None) => result.open += 1,
            (None, Some(closed)) => {
                let lasted = closed - o.started;
                result.longest = result.longest.max(lasted);
                if lasted + EARLY >= o.deadline {
                    result.held += 1;
                } else if lasted < o.deadline / 2 {
                    result.at_once += 1;
                } else {
                    result.late += 1;
                }
            }
        }
    }
    result
}

/// With `ulimit -n 1024` (256 in the short suite) and 5,000 connection attempts (600), the
/// emulator never runs out of descriptors: a flood of one port leaves the others serving,
/// a flood of every port is held to the per-listener limit, and once the held connections
/// reach their deadline every port serves again at once.
#[test]
fn a_connection_flood_under_a_descriptor_limit_leaves_the_emulator_serving() {
    let _turn = one_at_a_time();
    runtime().block_on(async {
        let (nofile, attempts, scale) = if full() {
            (1024u64, 5000usize, Scale::get())
        } else {
            (256, 600, Scale::short(0, 0))
        };
        let hub = Hub::start(&scale.options(), Some(nofile)).await;
        assert_eq!(
            hub.nofile(),
            (nofile.to_string(), nofile.to_string()),
            "the emulator runs under the limit"
        );
        let per_listener = (nofile as usize - 128) / 3;
        let good = WellBehaved::register(&hub).await;
        good.round(0).await;
        let fds_before = hub.open_fds();

        // One port flooded: the others serve throughout.
        let overflows_before = listen_overflows();
        let (tasks, made_in, fds_flooded) =
            flood(&hub, &[Port::Mqtt], attempts, scale.handshake).await;
        let started = Instant::now();
        let twin = good.service.get_twin("good").await;
        let messaging = good.service.messaging().await;
        let others_in = started.elapsed();
        assert!(twin.is_ok(), "HTTPS serves during the MQTT flood: {twin:?}");
        let messaging = messaging.expect("AMQP serves during the MQTT flood");
        messaging
            .send("good", CloudToDeviceMessage::new("during the flood"))
            .await
            .expect("C2D accepted during the MQTT flood");
        let _ = messaging.close().await;
        let one_port = flood_result(tasks).await;
        let one_port_overflows = listen_overflows() - overflows_before;
        let after_one = good.round(1).await;

        // Every port flooded: held to the limit, then serving again.
        let overflows_before = listen_overflows();
        let (tasks, made_all_in, fds_all) =
            flood(&hub, &Port::ALL, attempts, scale.handshake).await;
        let every_port = flood_result(tasks).await;
        let every_port_overflows = listen_overflows() - overflows_before;
        let fds_after = hub.settle_fds(fds_before + 8, SLACK).await;
        let after_all = good.round(2).await;
        let log = hub.log();

        println!(
            "ulimit -n {nofile} ({per_listener} connections per listener): {attempts} attempts \
             on MQTT made in {made_in:?}: {one_port:?}; emulator at most at {fds_flooded} \
             descriptors; HTTPS and AMQP served in {others_in:?} during it; device connected in \
             {:?} after; {attempts} attempts on all ports made in {made_all_in:?}: \
             {every_port:?}; emulator at most at {fds_all} descriptors; device connected in {:?} \
             after (round {:?}); descriptors {fds_before} before, {fds_after} after; listen \
             queue overflows {one_port_overflows} and {every_port_overflows}",
            after_one.connect, after_all.connect, after_all.total,
        );
        for (ports, result, fds, overflows) in [
            (1, &one_port, fds_flooded, one_port_overflows),
            (3, &every_port, fds_all, every_port_overflows),
        ] {
            // Attempts the kernel dropped from a full listen queue never reached the emulator
            // in time; every other one was closed.
            assert!(
                result.open as u64 <= overflows,
                "every attempt that reached the emulator was closed: {result:?}, \
                 {overflows} listen queue overflows"
            );
            // Over the whole flood a few more than the limit may be held, one after another
            // (the emulator accepts queued attempts as slots free); at any time, no more.
            assert!(
                fds <= fds_before + per_listener * ports + 4,
                "the emulator held at most the limit: {fds} descriptors, {fds_before} before"
            );
            assert!(
                result.held >= per_listener * ports / 2,
                "the limit was used: {result:?}"
            );
            assert!(
                result.longest <= scale.handshake + SLACK,
                "the held ones were closed at their deadline: {result:?}"
            );
        }
        assert!(
            fds_all < nofile as usize,
            "the emulator kept descriptors free: {fds_all}"
        );
        assert!(
            !log.contains("Too many open files") && !log.contains("accept failed"),
            "the emulator never ran out of descriptors:\n{}",
            log.lines()
                .filter(|l| l.contains("accept failed"))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(after_one.connect < CONNECT_BOUND && after_all.connect < CONNECT_BOUND);
        hub.stop().await;
    });
}

/// A WebSocket on the HTTPS port is a connection like any other: it counts against the
/// listener's connection limit while it lasts, so WebSockets cannot take the descriptors the
/// other listeners need (found by this suite: an upgraded session used to leave the count).
#[test]
fn websocket_connections_count_against_the_connection_limit() {
    let _turn = one_at_a_time();
    runtime().block_on(async {
        let nofile = 256u64;
        let per_listener = (nofile as usize - 128) / 3;
        let options: Vec<String> = ["--connect-timeout", "10"].map(String::from).to_vec();
        let hub = Hub::start(&options, Some(nofile)).await;
        let mut upgraded = Vec::new();
        let mut refused = 0;
        let mut most_fds = 0;
        for _ in 0..300 {
            most_fds = most_fds.max(hub.open_fds());
            match tls_connect(&hub.ep, hub.ep.https_addr).await {
                Ok(mut tls) => match websocket_upgrade(&mut tls, "mqtt").await {
                    Ok(()) => upgraded.push(tls),
                    Err(_) => refused += 1,
                },
                Err(_) => refused += 1,
            }
        }
        let fds = hub.open_fds();
        let mqtt = tokio::time::timeout(
            Duration::from_secs(5),
            tls_connect(&hub.ep, hub.ep.mqtt_addr),
        )
        .await;
        let mqtt_served = matches!(mqtt, Ok(Ok(_)));
        println!(
            "ulimit -n {nofile} ({per_listener} connections per listener): {} of 300 WebSocket \
             upgrades held, {refused} refused; emulator at {fds} descriptors (at most \
             {most_fds}); a TLS handshake on the MQTT port then: {:?}\n{}",
            upgraded.len(),
            mqtt.as_ref().map(|r| r.as_ref().map(|_| "served")),
            hub.log()
                .lines()
                .filter(|l| l.contains("accept failed") || l.contains("limit reached"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            upgraded.len() <= per_listener,
            "{} WebSockets held on a listener limited to {per_listener} connections",
            upgraded.len()
        );
        assert!(
            !hub.log().contains("accept failed"),
            "the emulator ran out of descriptors ({most_fds} open)"
        );
        assert!(mqtt_served, "the MQTT port serves");
        drop(upgraded);
        hub.stop().await;
    });
}

// ---------------------------------------------------------------------------------------------
// The authorization matrix
// ---------------------------------------------------------------------------------------------

/// The rights an endpoint needs, as the hub's policies grant them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Right {
    RegistryRead,
    RegistryWrite,
    ServiceConnect,
    /// ServiceConnect or RegistryRead (the query endpoint).
    ServiceOrRegistryRead,
}

/// Whether the default policy `policy` grants `right`.
fn grants(policy: &str, right: Right) -> bool {
    let (read, write, service) = match policy {
        "iothubowner" => (true, true, true),
        "service" => (false, false, true),
        "registryRead" => (true, false, false),
        "registryReadWrite" => (true, true, false),
        _ => (false, false, false),
    };
    match right {
        Right::RegistryRead => read,
        Right::RegistryWrite => write,
        Right::ServiceConnect => service,
        Right::ServiceOrRegistryRead => service || read,
    }
}

/// A service token for `policy` (`key` base64) over `audience`, expiring after `ttl` or at
/// `expiry`.
fn policy_token(key: &ServiceConnectionString, audience: &str, ttl: Option<Duration>) -> String {
    let resource = ResourceUri::hub(audience);
    match ttl {
        Some(ttl) => SasToken::generate_with_ttl(&resource, key.key(), Some(key.key_name()), ttl),
        None => SasToken::generate(
            &resource,
            key.key(),
            Some(key.key_name()),
            std::time::UNIX_EPOCH + Duration::from_secs(1_000_000),
        ),
    }
    .secret()
    .to_owned()
}

#[test]
fn the_authorization_matrix_holds() {
    let _turn = one_at_a_time();
    runtime().block_on(async {
        let hub = Hub::start(&Scale::short(0, 0).options(), None).await;
        let ep = &hub.ep;
        let owner = RestClient::new(ep, "iothubowner");
        let key = owner.register_device("good").await;
        let other_key = owner.register_device("other").await;
        owner.put("/devices/good/modules/m", json!({})).await;

        let endpoints: Vec<(Method, &str, Option<Value>, Right)> = vec![
            (Method::GET, "/devices", None, Right::RegistryRead),
            (Method::GET, "/devices/good", None, Right::RegistryRead),
            (
                Method::GET,
                "/devices/good/modules",
                None,
                Right::RegistryRead,
            ),
            (
                Method::GET,
                "/devices/good/modules/m",
                None,
                Right::RegistryRead,
            ),
            (
                Method::GET,
                "/statistics/devices",
                None,
                Right::RegistryRead,
            ),
            (Method::GET, "/certificates", None, Right::RegistryRead),
            (
                Method::PUT,
                "/devices/intruder",
                Some(json!({})),
                Right::RegistryWrite,
            ),
            (Method::DELETE, "/devices/good", None, Right::RegistryWrite),
            (
                Method::PUT,
                "/devices/good/modules/intruder",
                Some(json!({})),
                Right::RegistryWrite,
            ),
            (
                Method::DELETE,
                "/devices/good/modules/m",
                None,
                Right::RegistryWrite,
            ),
            (
                Method::POST,
                "/devices",
                Some(json!([{"id": "intruder", "importMode": "create"}])),
                Right::RegistryWrite,
            ),
            (Method::GET, "/twins/good", None, Right::ServiceConnect),
            (
                Method::PATCH,
                "/twins/good",
                Some(json!({"tags": {"owned": true}})),
                Right::ServiceConnect,
            ),
            (
                Method::GET,
                "/twins/good/modules/m",
                None,
                Right::ServiceConnect,
            ),
            (
                Method::POST,
                "/twins/good/methods",
                Some(
                    json!({"methodName": "reboot", "payload": null, "responseTimeoutInSeconds": 5}),
                ),
                Right::ServiceConnect,
            ),
            (
                Method::DELETE,
                "/devices/good/commands",
                None,
                Right::ServiceConnect,
            ),
            (
                Method::GET,
                "/statistics/service",
                None,
                Right::ServiceConnect,
            ),
            (
                Method::GET,
                "/messages/serviceBound/feedback",
                None,
                Right::ServiceConnect,
            ),
            (
                Method::GET,
                "/$emulator/telemetry",
                None,
                Right::ServiceConnect,
            ),
            (
                Method::POST,
                "/devices/query",
                Some(json!({"query": "SELECT * FROM devices"})),
                Right::ServiceOrRegistryRead,
            ),
        ];
        let owner_cs = ServiceConnectionString::parse(ep.connection_string("iothubowner")).unwrap();
        let mut credentials: Vec<(String, Option<String>)> = vec![
            ("no credential".into(), None),
            ("garbage".into(), Some("hunter2".into())),
            (
                "a forged signature".into(),
                Some(
                    "SharedAccessSignature sr=localhost&sig=AAAA&se=99999999999&skn=iothubowner"
                        .into(),
                ),
            ),
            (
                "an unknown policy".into(),
                Some("SharedAccessSignature sr=localhost&sig=AAAA&se=99999999999&skn=root".into()),
            ),
            (
                "an expired owner token".into(),
                Some(policy_token(&owner_cs, "localhost", None)),
            ),
            (
                "an owner token for another hub".into(),
                Some(policy_token(
                    &owner_cs,
                    "elsewhere.azure-devices.net",
                    Some(HOUR),
                )),
            ),
            (
                "a device-scoped token".into(),
                Some(device_token(ep, "good", None, &key, HOUR)),
            ),
            (
                "a module-scoped token".into(),
                Some(device_token(ep, "good", Some("m"), &key, HOUR)),
            ),
        ];
        for policy in ["service", "device", "registryRead", "registryReadWrite"] {
            let cs = ServiceConnectionString::parse(ep.connection_string(policy)).unwrap();
            credentials.push((
                format!("policy {policy}"),
                Some(policy_token(&cs, "localhost", Some(HOUR))),
            ));
        }
        let http = azure_iot_test::http_client(ep);
        let mut checked = 0;
        for (method, path, body, right) in &endpoints {
            for (credential, token) in &credentials {
                let allowed = credential
                    .strip_prefix("policy ")
                    .is_some_and(|policy| grants(policy, *right));
                if allowed {
                    continue;
                }
                let separator = if path.contains('?') { '&' } else { '?' };
                let mut request = http.request(
                    method.clone(),
                    format!(
                        "https://localhost:{}{path}{separator}api-version=2021-04-12",
                        ep.https_addr.port()
                    ),
                );
                if let Some(token) = token {
                    request = request.header("Authorization", token);
                }
                if let Some(body) = body {
                    request = request
                        .header("Content-Type", "application/json")
                        .body(body.to_string());
                }
                let response = request.send().await.unwrap();
                let status = response.status();
                let text = response.text().await.unwrap();
                assert!(
                    status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN,
                    "{method} {path} with {credential}: {status} {text}"
                );
                if let Some(token) = token {
                    assert!(
                        !text.contains(token.as_str()),
                        "{method} {path}: the answer quotes the credential"
                    );
                }
                checked += 1;
            }
        }
        // Nothing a refused request asked for happened.
        assert_eq!(owner.get("/devices/good").await.status, StatusCode::OK);
        assert_eq!(
            owner.get("/devices/good/modules/m").await.status,
            StatusCode::OK
        );
        assert_eq!(
            owner.get("/devices/intruder").await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            owner.get("/devices/good/modules/intruder").await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(owner.get("/twins/good").await.body["tags"], Value::Null);

        // AMQP: only policies with ServiceConnect may send cloud-to-device messages.
        let mut amqp_checked = 0;
        for policy in ["device", "registryRead", "registryReadWrite"] {
            let client = service_client(ep, ep.connection_string(policy));
            let sent = match client.messaging().await {
                Ok(messaging) => {
                    messaging
                        .send("good", CloudToDeviceMessage::new("not allowed"))
                        .await
                }
                Err(e) => Err(e),
            };
            let error = sent.expect_err(policy);
            assert_eq!(error.kind(), ErrorKind::Unauthorized, "{policy}: {error}");
            amqp_checked += 1;
        }
        let forged = format!(
            "HostName=localhost;SharedAccessKeyName=service;SharedAccessKey={}",
            "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="
        );
        let error = match service_client(ep, &forged).messaging().await {
            Ok(messaging) => {
                messaging
                    .send("good", CloudToDeviceMessage::new("forged"))
                    .await
            }
            Err(e) => Err(e),
        }
        .expect_err("a wrong key");
        assert_eq!(error.kind(), ErrorKind::Unauthorized, "wrong key: {error}");
        amqp_checked += 1;

        // MQTT: device `good` cannot be `other`, nor use `other`'s topics.
        let good_token = device_token(ep, "good", None, &key, HOUR);
        let other_token = device_token(ep, "other", None, &other_key, HOUR);
        let (_, ack) = MqttClient::connect(ep, "other", &good_token, true, 60).await;
        assert_eq!(
            ack.code,
            ConnectReturnCode::NotAuthorized,
            "good's token as other"
        );
        let (_, ack) = MqttClient::connect(ep, "good", &other_token, true, 60).await;
        assert_eq!(
            ack.code,
            ConnectReturnCode::NotAuthorized,
            "other's token as good"
        );
        let (_, ack) = MqttClient::connect_as(
            ep,
            "good",
            "localhost/other/?api-version=2021-04-12",
            &good_token,
            true,
            60,
        )
        .await;
        assert_ne!(
            ack.code,
            ConnectReturnCode::Success,
            "a user name naming other"
        );
        let mut mqtt_checked = 3;
        let publishes = [
            "devices/other/messages/events/",
            "devices/other/modules/m/messages/events/",
            "devices/other/messages/events/%24.to=other",
        ];
        for topic in publishes {
            let (mut device, _) = MqttClient::connect(ep, "good", &good_token, true, 60).await;
            device.publish(topic, "x", QoS::AtLeastOnce).await;
            assert_eq!(device.recv().await, None, "publish to {topic}: closed");
            mqtt_checked += 1;
        }
        let filters = [
            "devices/other/messages/devicebound/#",
            "devices/other/modules/m/inputs/#",
            "devices/+/messages/devicebound/#",
            "#",
        ];
        for filter in filters {
            let (mut device, _) = MqttClient::connect(ep, "good", &good_token, true, 60).await;
            let mut subscribe = Subscribe::new(filter, QoS::AtLeastOnce);
            subscribe.pkid = device.pkid();
            device.send(Packet::Subscribe(subscribe)).await;
            match device.recv().await {
                None => {}
                Some(Packet::SubAck(ack)) => assert!(
                    ack.return_codes.iter().all(|c| matches!(
                        c,
                        azure_iot_protocol::mqtt::codec::SubscribeReasonCode::Failure
                    )),
                    "subscribe to {filter}: {ack:?}"
                ),
                other => panic!("subscribe to {filter}: {other:?}"),
            }
            mqtt_checked += 1;
        }
        // Nothing reached `other`.
        let log = owner.get("/$emulator/telemetry").await;
        assert!(
            !log.body.to_string().contains("\"other\""),
            "no telemetry as other: {}",
            log.body
        );
        println!(
            "authorization: {checked} refused REST requests ({} endpoints x {} credentials, \
             less the allowed ones), {amqp_checked} refused AMQP senders, {mqtt_checked} \
             refused MQTT identities and topics",
            endpoints.len(),
            credentials.len()
        );
        hub.stop().await;
    });
}
