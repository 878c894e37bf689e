//! Deeply nested AMQP values from an unauthenticated client must not crash the emulator.
//!
//! fe2o3-amqp decodes AMQP `Value`s (performative `properties` maps, the `$cbs` message body)
//! recursively with no depth limit, so a few kilobytes of nested lists overflow a tokio
//! worker's stack — and a stack overflow aborts the whole process, it is not a panic a task
//! can contain. Each scenario therefore runs in a child process (this test binary run again
//! with [`CHILD`] set and a filter naming the `#[ignore]`d scenario), and the parent asserts
//! the child exited normally and its scenario passed.
//!
//! The scenarios speak raw AMQP frames over TLS (no SASL, authentication by CBS as the Node
//! SDKs do): a `begin` whose `properties` nest 28,000 lists deep, right after `open`; a
//! `$cbs` put-token whose `amqp-value` body nests as deep in one transfer frame; and the same
//! body split over 2,000 transfer frames of 20 levels each (no single frame nests deeply, the
//! message does). After each, the emulator must have closed that connection and still serve
//! a well-behaved client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use azure_iot_test::{HubEndpoint, emulator};
use fe2o3_amqp::Connection;
use fe2o3_amqp::sasl_profile::SaslProfile;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Set in the child process's environment: the scenarios run only there.
const CHILD: &str = "AZURE_IOT_AMQP_NESTING_CHILD";

/// Nesting depth of the attacks: far past any stack, and still inside one 256 KiB frame
/// (9 bytes a level as `list32`).
const DEEP: usize = 28_000;

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn tls(hub: &HubEndpoint) -> Tls {
    let tcp = tokio::net::TcpStream::connect(hub.amqp_addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(hub.tls_config()))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap()
}

/// `depth` lists nested in each other (`list32`, one element each), the innermost empty.
fn nested_lists(depth: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(depth * 9 + 1);
    for k in (1..=depth).rev() {
        // The size counts the count field and the k-1 levels inside.
        let size = u32::try_from(4 + 9 * (k - 1) + 1).unwrap();
        out.push(0xd0);
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&1u32.to_be_bytes());
    }
    out.push(0x45);
    out
}

/// A `list32` of `fields` (each an encoded value).
fn list(fields: &[&[u8]]) -> Vec<u8> {
    let body: Vec<u8> = fields.concat();
    let mut out = vec![0xd0];
    out.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
    out.extend_from_slice(&u32::try_from(fields.len()).unwrap().to_be_bytes());
    out.extend(body);
    out
}

/// The performative with descriptor `code` and `fields`.
fn performative(code: u8, fields: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![0x00, 0x53, code];
    out.extend(list(fields));
    out
}

fn str8(s: &str) -> Vec<u8> {
    let mut out = vec![0xa1, u8::try_from(s.len()).unwrap()];
    out.extend_from_slice(s.as_bytes());
    out
}

/// An AMQP frame (type 0) on channel 0.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(body.len() + 8)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(&[2, 0, 0, 0]);
    out.extend_from_slice(body);
    out
}

const HEADER: &[u8] = b"AMQP\x00\x01\x00\x00";

fn open() -> Vec<u8> {
    frame(&performative(0x10, &[&str8("nesting")]))
}

fn begin(properties: &[u8]) -> Vec<u8> {
    let window = [0x70, 0, 0, 0x10, 0];
    frame(&performative(
        0x11,
        &[
            &[0x40],
            &[0x43],
            &window,
            &window,
            &[0x40],
            &[0x40],
            &[0x40],
            properties,
        ],
    ))
}

/// The client's sender link to `$cbs`, handle 0.
fn attach_cbs_sender() -> Vec<u8> {
    let source = [0x00, 0x53, 0x28, 0x45];
    let mut target = vec![0x00, 0x53, 0x29];
    target.extend(list(&[&str8("$cbs")]));
    frame(&performative(
        0x12,
        &[
            &str8("cbs-sender"),
            &[0x43], // handle 0
            &[0x42], // role: sender
            &[0x40], // snd-settle-mode
            &[0x40], // rcv-settle-mode
            &source, // source
            &target, // target
            &[0x40], // unsettled
            &[0x42], // incomplete-unsettled
            &[0x43], // initial-delivery-count
        ],
    ))
}

/// A transfer on handle 0 carrying `payload`; the first of a delivery has its id and tag.
fn transfer(first: bool, more: bool, payload: &[u8]) -> Vec<u8> {
    let more = [if more { 0x41 } else { 0x42 }];
    let mut body = if first {
        performative(
            0x14,
            &[&[0x43], &[0x43], &[0xa0, 1, 7], &[0x43], &[0x41], &more],
        )
    } else {
        performative(0x14, &[&[0x43], &[0x40], &[0x40], &[0x40], &[0x40], &more])
    };
    body.extend_from_slice(payload);
    frame(&body)
}

/// Reads frames until one whose performative has descriptor `code`; `None` if the stream
/// ends first (or does not answer within 10 s).
async fn read_until(stream: &mut (impl AsyncRead + Unpin), code: u8) -> Option<()> {
    let reading = async {
        loop {
            let mut head = [0u8; 8];
            stream.read_exact(&mut head).await.ok()?;
            if &head[..4] == b"AMQP" {
                continue;
            }
            let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let mut body = vec![0u8; size.saturating_sub(8)];
            stream.read_exact(&mut body).await.ok()?;
            let at = usize::from(head[4]) * 4 - 8;
            if body.get(at..at + 3) == Some(&[0x00, 0x53, code][..]) {
                return Some(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .ok()
        .flatten()
}

/// Waits for the emulator to close the connection (it must, within 10 s).
async fn closed(mut stream: Tls) {
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => sink.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection was closed");
}

/// A well-behaved service client still connects.
async fn still_serves(ep: &HubEndpoint) {
    let mut connection = Connection::builder()
        .container_id("after-nesting")
        .hostname("localhost")
        .sasl_profile(SaslProfile::Anonymous)
        .open_with_stream(tls(ep).await)
        .await
        .unwrap();
    connection.close().await.unwrap();
}

/// A stream after `open` and a `begin` that opens session 0 with the `$cbs` sender attached
/// and credit granted.
async fn cbs_link(ep: &HubEndpoint) -> Tls {
    let mut stream = tls(ep).await;
    stream.write_all(HEADER).await.unwrap();
    stream.write_all(&open()).await.unwrap();
    stream.write_all(&begin(&[0x40])).await.unwrap();
    stream.write_all(&attach_cbs_sender()).await.unwrap();
    stream.flush().await.unwrap();
    read_until(&mut stream, 0x13)
        .await
        .expect("the emulator grants credit on $cbs");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in a child process by each_nesting_attack_leaves_the_emulator_running"]
async fn nesting_in_begin_properties() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let mut properties = vec![0xd1];
    let key = [0xa3, 1, b'k'];
    let value = nested_lists(DEEP);
    properties.extend_from_slice(
        &u32::try_from(4 + key.len() + value.len())
            .unwrap()
            .to_be_bytes(),
    );
    properties.extend_from_slice(&2u32.to_be_bytes());
    properties.extend_from_slice(&key);
    properties.extend(value);
    let mut stream = tls(&ep).await;
    stream.write_all(HEADER).await.unwrap();
    stream.write_all(&open()).await.unwrap();
    stream.write_all(&begin(&properties)).await.unwrap();
    stream.flush().await.unwrap();
    closed(stream).await;
    still_serves(&ep).await;
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in a child process by each_nesting_attack_leaves_the_emulator_running"]
async fn nesting_in_one_cbs_transfer() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let mut stream = cbs_link(&ep).await;
    let mut payload = vec![0x00, 0x53, 0x77];
    payload.extend(nested_lists(DEEP));
    stream
        .write_all(&transfer(true, false, &payload))
        .await
        .unwrap();
    stream.flush().await.unwrap();
    closed(stream).await;
    still_serves(&ep).await;
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in a child process by each_nesting_attack_leaves_the_emulator_running"]
async fn nesting_split_over_cbs_transfer_frames() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let mut stream = cbs_link(&ep).await;
    let mut payload = vec![0x00, 0x53, 0x77];
    payload.extend(nested_lists(DEEP));
    // 20 levels (180 bytes) a frame after the section's own 3 bytes.
    let pieces: Vec<&[u8]> = payload.chunks(183).collect();
    let mut bytes = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        bytes.extend(transfer(i == 0, i + 1 < pieces.len(), piece));
    }
    // The emulator may close the connection before the last frame is written.
    let _ = stream.write_all(&bytes).await;
    let _ = stream.flush().await;
    closed(stream).await;
    still_serves(&ep).await;
    hub.shutdown().await;
}

/// Runs the scenario `name` in a child process; asserts it exited normally, having passed.
fn run_child(name: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    #[cfg(unix)]
    let signal = std::os::unix::process::ExitStatusExt::signal(&out.status);
    #[cfg(not(unix))]
    let signal: Option<i32> = None;
    let tail = |s: &str| {
        s.chars()
            .rev()
            .take(2000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<String>()
    };
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name}: the emulator process ended with {:?} (signal {signal:?})\nstdout: {}\nstderr: {}",
        out.status,
        tail(&stdout),
        tail(&stderr),
    );
}

/// Each attack in its own process: a stack overflow there ends only the child.
#[test]
fn each_nesting_attack_leaves_the_emulator_running() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    for name in [
        "nesting_in_begin_properties",
        "nesting_in_one_cbs_transfer",
        "nesting_split_over_cbs_transfer_frames",
    ] {
        run_child(name);
    }
}
