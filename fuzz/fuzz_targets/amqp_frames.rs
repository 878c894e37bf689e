//! The emulator's AMQP endpoint fed whatever a client could send: its own connection handler
//! (protocol header, frame guard, SASL or plain handshake, fe2o3's frame decoding, sessions,
//! links, CBS, C2D and feedback) reading arbitrary bytes from an in-memory duplex stream. No
//! task may panic (libfuzzer-sys aborts on a panic in any thread or task), and the connection
//! must end once the client has sent everything and closed its side.
//!
//! The first input byte chooses what comes first: 0 the SASL header `AMQP 3 1 0 0`, 1 the plain
//! header `AMQP 0 1 0 0`, anything else nothing (the rest is the whole stream, header
//! included). The client sends the stream frame by frame ([`pieces`]), each once the server
//! has gone idle, then closes its side after 1 s (of paused time). The hub is built once per process ([`AmqpServer`]: host `localhost`, policy
//! keys 32 zero bytes, as in the golden vectors the seeds come from); each input gets a fresh
//! current-thread runtime with a paused clock, so the server's timers fire without real
//! waiting.
//!
//! A hang is a failure, bounded two ways: the handler and every task it spawned must end
//! within [`VIRTUAL_BOUND`] of paused time from the connection's start, unless less than
//! [`WALL_BOUND`] of real time has passed (the paused clock jumps ahead whenever the runtime
//! is idle, including while it waits for the hub's state thread, so paused time alone could
//! report a slow hub call as a hang).
//!
//! Run it with `-malloc_limit_mb=4500 -rss_limit_mb=4500`, like `amqp_message`: serde_amqp
//! allocates a declared length before reading it.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use azure_iot_emulator::fuzzing::AmqpServer;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SASL_HEADER: &[u8] = b"AMQP\x03\x01\x00\x00";
const AMQP_HEADER: &[u8] = b"AMQP\x00\x01\x00\x00";
/// Paused time a connection and its tasks get to end, from its start.
const VIRTUAL_BOUND: Duration = Duration::from_secs(600);
/// Real time that must also have passed before a connection still running is a hang.
const WALL_BOUND: Duration = Duration::from_secs(5);

static SERVER: OnceLock<AmqpServer> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let server = SERVER.get_or_init(|| AmqpServer::start().expect("the in-memory hub starts"));
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut input = match mode {
        0 => SASL_HEADER.to_vec(),
        1 => AMQP_HEADER.to_vec(),
        _ => Vec::new(),
    };
    input.extend_from_slice(rest);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    let started = Instant::now();
    runtime.block_on(async move {
        let (client, server_side) = tokio::io::duplex(64 * 1024);
        let (mut from_server, mut to_server) = tokio::io::split(client);
        // What the server answers is read and dropped, so it never blocks on a full pipe.
        tokio::spawn(async move {
            let mut sink = [0u8; 4096];
            while let Ok(n) = from_server.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        });
        let client = async move {
            // Frame by frame, each once the server is idle (the paused clock moves only
            // then), as a client waiting for answers would: sent at once, a whole exchange
            // would reach fe2o3's connection engine, close included, before the emulator's
            // tasks had accepted a session.
            for piece in pieces(&input) {
                if to_server.write_all(piece).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = to_server.shutdown().await;
        };
        let serve = server.serve(server_side);
        let began = tokio::time::Instant::now();
        let until_ended = async {
            tokio::join!(serve, client);
            // Then every task the handler spawned (sessions, links, fe2o3's engines) ends too.
            while tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
                > 0
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::pin!(until_ended);
        loop {
            if tokio::time::timeout(Duration::from_secs(10), &mut until_ended)
                .await
                .is_ok()
            {
                break;
            }
            let alive = tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks();
            assert!(
                began.elapsed() < VIRTUAL_BOUND || started.elapsed() < WALL_BOUND,
                "the AMQP connection (or {alive} of its tasks) still runs {:?} of paused time \
                 and {:?} of real time after the client connected",
                began.elapsed(),
                started.elapsed(),
            );
        }
    });
});

/// `stream` cut where a client would pause: after each protocol header (8 bytes starting
/// `AMQP`) and each frame its size field delimits; from a size below 8 or past the end, the
/// rest in one piece.
fn pieces(mut stream: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !stream.is_empty() {
        let size = match stream {
            [b'A', b'M', b'Q', b'P', ..] => 8,
            [a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]) as usize,
            _ => stream.len(),
        };
        let n = if (8..=stream.len()).contains(&size) {
            size
        } else {
            stream.len()
        };
        let (piece, rest) = stream.split_at(n);
        out.push(piece);
        stream = rest;
    }
    out
}
