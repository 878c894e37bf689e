//! Connection limits and deadlines over real TLS sockets (issue 12, defect 1): connections
//! that say nothing, dribble, never send their body, never authenticate or pile up sessions
//! and CBS answers are closed within their deadline; a listener at its connection limit
//! closes new connections at once and serves again when one ends.
//!
//! The deadlines are set to a second or two so the tests are quick; each test checks the
//! close comes after the deadline (never before) and well within a bound, which holds on a
//! loaded machine because nothing else closes these connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_iot_core::{ResourceUri, SasToken, ServiceConnectionString};
use azure_iot_emulator::{Emulator, EmulatorHandle, Limits};
use azure_iot_test::HubEndpoint;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::{Connection, Sender, Session};
use fe2o3_amqp_types::messaging::{AmqpValue, ApplicationProperties, Message, Properties};
use fe2o3_amqp_types::primitives::{SimpleValue, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The short deadline every test configures.
const DEADLINE: Duration = Duration::from_secs(1);
/// How long past its deadline a close may come on a busy machine.
const SLACK: Duration = Duration::from_secs(10);

async fn emulator_with(limits: Limits) -> EmulatorHandle {
    Emulator::builder()
        .https_port(0)
        .mqtt_port(0)
        .amqp_port(0)
        .limits(limits)
        .start()
        .await
        .expect("emulator starts")
}

fn short() -> Limits {
    Limits {
        connect_timeout: DEADLINE,
        http_idle_timeout: DEADLINE,
        body_timeout: DEADLINE,
        ..Limits::default()
    }
}

async fn tls(ep: &HubEndpoint, addr: std::net::SocketAddr) -> TlsStream<TcpStream> {
    azure_iot_test::tls_connect(ep, addr).await.unwrap()
}

/// Reads until the server closes; returns what it sent and how long the close took. Fails
/// the test if the connection is still open after `DEADLINE + SLACK`.
async fn until_closed(stream: &mut TlsStream<TcpStream>) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(DEADLINE + SLACK, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (received, started.elapsed()),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the connection is still open {:?} later", started.elapsed()),
        }
    }
}

fn assert_closed_at_deadline(elapsed: Duration) {
    assert!(
        elapsed >= DEADLINE - Duration::from_millis(50),
        "closed after {elapsed:?}, before its deadline"
    );
}

#[tokio::test]
async fn an_https_connection_that_never_sends_a_request_is_closed() {
    let hub = emulator_with(short()).await;
    let ep = HubEndpoint::of(&hub);
    let mut stream = tls(&ep, ep.https_addr).await;
    let (_, elapsed) = until_closed(&mut stream).await;
    assert_closed_at_deadline(elapsed);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_response() {
    let hub = emulator_with(short()).await;
    let ep = HubEndpoint::of(&hub);
    let mut stream = tls(&ep, ep.https_addr).await;
    stream
        .write_all(b"GET /nothing-here HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (received, elapsed) = until_closed(&mut stream).await;
    assert!(
        received.starts_with(b"HTTP/1.1 404"),
        "the request was answered first: {}",
        String::from_utf8_lossy(&received)
    );
    assert_closed_at_deadline(elapsed);
}

/// Slowloris: a header line dribbled a byte at a time never completes within the deadline.
#[tokio::test]
async fn headers_dribbled_a_byte_at_a_time_are_cut_off() {
    let hub = emulator_with(short()).await;
    let ep = HubEndpoint::of(&hub);
    let mut stream = tls(&ep, ep.https_addr).await;
    let started = Instant::now();
    let request =
        b"GET /devices HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut_off = None;
    for byte in request {
        if stream.write_all(&[*byte]).await.is_err() || stream.flush().await.is_err() {
            cut_off = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = match cut_off {
        Some(elapsed) => elapsed,
        None => {
            let (received, _) = until_closed(&mut stream).await;
            assert!(
                received.is_empty() || received.starts_with(b"HTTP/1.1 408"),
                "no request was served: {}",
                String::from_utf8_lossy(&received)
            );
            started.elapsed()
        }
    };
    assert!(elapsed < DEADLINE + SLACK, "cut off after {elapsed:?}");
    assert_closed_at_deadline(elapsed);
}

#[tokio::test]
async fn a_body_that_never_arrives_is_408_and_the_connection_closes() {
    let hub = emulator_with(short()).await;
    let ep = HubEndpoint::of(&hub);
    let cs = ServiceConnectionString::parse(ep.connection_string("iothubowner")).unwrap();
    let token = SasToken::generate_with_ttl(
        &ResourceUri::hub(&ep.hostname),
        cs.key(),
        Some("iothubowner"),
        Duration::from_secs(600),
    );
    let mut stream = tls(&ep, ep.https_addr).await;
    let request = format!(
        "PUT /devices/d1?api-version=2021-04-12 HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"deviceId\"",
        token.secret()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let (received, elapsed) = until_closed(&mut stream).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 408"), "answered 408: {text}");
    assert!(text.contains("RequestTimeout"), "with the reason: {text}");
    assert_closed_at_deadline(elapsed);
}

#[tokio::test]
async fn an_amqp_connection_silent_after_its_header_is_closed() {
    let hub = emulator_with(short()).await;
    let ep = HubEndpoint::of(&hub);
    for header in [b"AMQP\x00\x01\x00\x00", b"AMQP\x03\x01\x00\x00"] {
        let mut stream = tls(&ep, ep.amqp_addr).await;
        stream.write_all(header).await.unwrap();
        let (_, elapsed) = until_closed(&mut stream).await;
        assert_closed_at_deadline(elapsed);
    }
}

#[tokio::test]
async fn an_mqtt_connection_that_never_sends_connect_is_closed() {
    let hub = emulator_with(short()).await;
    let ep = HubEndpoint::of(&hub);
    let mut stream = tls(&ep, ep.mqtt_addr).await;
    let (_, elapsed) = until_closed(&mut stream).await;
    assert_closed_at_deadline(elapsed);
}

async fn anonymous_amqp(ep: &HubEndpoint) -> fe2o3_amqp::connection::ConnectionHandle<()> {
    Connection::builder()
        .container_id("limits-test")
        .hostname("localhost")
        .sasl_profile(SaslProfile::Anonymous)
        .open_with_stream(tls(ep, ep.amqp_addr).await)
        .await
        .unwrap()
}

/// Waits for the connection's end and returns the error condition the emulator closed it
/// with, if any.
async fn close_reason(connection: &mut fe2o3_amqp::connection::ConnectionHandle<()>) -> String {
    let ended = tokio::time::timeout(DEADLINE + SLACK, connection.on_close())
        .await
        .expect("the emulator closed the connection");
    format!("{ended:?}")
}

#[tokio::test]
async fn an_amqp_connection_that_puts_no_token_is_closed() {
    let hub = emulator_with(short()).await;
    let ep = HubEndpoint::of(&hub);
    let started = Instant::now();
    let mut connection = anonymous_amqp(&ep).await;
    let reason = close_reason(&mut connection).await;
    assert!(
        reason.contains("UnauthorizedAccess"),
        "closed as unauthorized: {reason}"
    );
    assert_closed_at_deadline(started.elapsed());
}

#[tokio::test]
async fn sessions_opened_before_any_token_are_bounded() {
    let hub = emulator_with(Limits {
        connect_timeout: Duration::from_secs(60),
        ..Limits::default()
    })
    .await;
    let ep = HubEndpoint::of(&hub);
    let mut connection = anonymous_amqp(&ep).await;
    let mut sessions = Vec::new();
    for _ in 0..100 {
        match tokio::time::timeout(DEADLINE + SLACK, Session::begin(&mut connection)).await {
            Ok(Ok(session)) => sessions.push(session),
            _ => break,
        }
    }
    assert!(
        sessions.len() <= 4,
        "{} sessions were opened",
        sessions.len()
    );
    let reason = close_reason(&mut connection).await;
    assert!(
        reason.contains("ResourceLimitExceeded"),
        "closed for the limit: {reason}"
    );
}

fn service_token(ep: &HubEndpoint, ttl: Duration) -> String {
    let cs = ServiceConnectionString::parse(ep.connection_string("service")).unwrap();
    SasToken::generate_with_ttl(
        &ResourceUri::hub(&ep.hostname),
        cs.key(),
        Some("service"),
        ttl,
    )
    .secret()
    .to_owned()
}

fn put_token(ep: &HubEndpoint, id: u64) -> Message<AmqpValue<Value>> {
    put_token_with(ep, id, Duration::from_secs(600))
}

fn put_token_with(ep: &HubEndpoint, id: u64, ttl: Duration) -> Message<AmqpValue<Value>> {
    Message::builder()
        .properties(
            Properties::builder()
                .message_id(format!("put-{id}"))
                .reply_to("cbs")
                .build(),
        )
        .application_properties(
            ApplicationProperties::builder()
                .insert("operation", SimpleValue::from("put-token"))
                .insert("type", SimpleValue::from("servicebus.windows.net:sastoken"))
                .insert("name", SimpleValue::from(ep.hostname.as_str()))
                .build(),
        )
        .value(Value::String(service_token(ep, ttl)))
        .build()
}

/// A client that sends put-tokens and never attaches the `$cbs` receiver gets its request
/// link detached once the answers waiting for it reach the bound, instead of growing them.
#[tokio::test]
async fn put_token_answers_nobody_reads_are_bounded() {
    let hub = emulator_with(Limits::default()).await;
    let ep = HubEndpoint::of(&hub);
    let mut connection = anonymous_amqp(&ep).await;
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut requests = Sender::attach(&mut session, "cbs-sender", "$cbs")
        .await
        .unwrap();
    let mut refused = None;
    for id in 0..200 {
        match tokio::time::timeout(DEADLINE + SLACK, requests.send(put_token(&ep, id))).await {
            Ok(Ok(_)) => {}
            other => {
                refused = Some((id, format!("{other:?}")));
                break;
            }
        }
    }
    let (id, reason) = refused.expect("the request link was detached");
    assert!((32..=40).contains(&id), "detached after {id} put-tokens");
    assert!(
        reason.contains("ResourceLimitExceeded") || reason.contains("Detached"),
        "{reason}"
    );
}

/// An authenticated AMQP connection lives as long as its tokens: once the only one expires
/// (not renewed), the connection is closed as unauthorized.
#[tokio::test]
async fn an_amqp_connection_is_closed_when_its_tokens_expire() {
    let hub = emulator_with(Limits::default()).await;
    let ep = HubEndpoint::of(&hub);
    let mut connection = anonymous_amqp(&ep).await;
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut requests = Sender::attach(&mut session, "cbs-sender", "$cbs")
        .await
        .unwrap();
    let started = Instant::now();
    requests
        .send(put_token_with(&ep, 1, Duration::from_secs(2)))
        .await
        .unwrap();
    let reason = close_reason(&mut connection).await;
    assert!(
        reason.contains("UnauthorizedAccess"),
        "closed as unauthorized: {reason}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "not before the token expired ({:?})",
        started.elapsed()
    );
}

/// At its connection limit a listener closes new connections at once; when one of its
/// connections ends, it serves again.
#[tokio::test]
async fn a_listener_at_its_connection_limit_closes_new_connections_and_recovers() {
    let hub = emulator_with(Limits {
        max_connections: Some(2),
        ..Limits::default()
    })
    .await;
    let ep = HubEndpoint::of(&hub);
    let first = tls(&ep, ep.mqtt_addr).await;
    let second = tls(&ep, ep.mqtt_addr).await;
    // The third is accepted by the kernel, then closed without a handshake.
    let tcp = TcpStream::connect(ep.mqtt_addr).await.unwrap();
    let third = tokio::time::timeout(
        SLACK,
        tokio_rustls::TlsConnector::from(Arc::new(ep.tls_config())).connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        ),
    )
    .await
    .expect("refused at once, not left waiting");
    assert!(third.is_err(), "the third connection is refused");
    drop(first);
    drop(second);
    // Once the server has seen them go, a client completes its handshake again.
    let started = Instant::now();
    loop {
        let tcp = TcpStream::connect(ep.mqtt_addr).await.unwrap();
        let attempt = tokio_rustls::TlsConnector::from(Arc::new(ep.tls_config()))
            .connect(
                rustls_pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await;
        if attempt.is_ok() {
            break;
        }
        assert!(started.elapsed() < SLACK, "the listener never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A WebSocket session counts under the HTTPS listener's limit for as long as it lives, not
/// only until its upgrade: with a limit of 1, a second HTTPS connection is refused while the
/// first carries an MQTT-over-WebSocket session.
#[tokio::test]
async fn a_websocket_session_holds_its_place_under_the_limit() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let hub = emulator_with(Limits {
        max_connections: Some(1),
        connect_timeout: Duration::from_secs(60),
        ..Limits::default()
    })
    .await;
    let ep = HubEndpoint::of(&hub);
    let mut request = "wss://localhost/$iothub/websocket"
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let (ws, _) = tokio_tungstenite::client_async(request, tls(&ep, ep.https_addr).await)
        .await
        .unwrap();
    // Give the accept loop time to see the HTTP connection hand over to the session.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tcp = TcpStream::connect(ep.https_addr).await.unwrap();
    let second = tokio::time::timeout(
        SLACK,
        tokio_rustls::TlsConnector::from(Arc::new(ep.tls_config())).connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        ),
    )
    .await
    .expect("refused at once, not left waiting");
    assert!(second.is_err(), "the second connection is refused");
    drop(ws);
}

/// A request without credentials is refused before its body is read: a client cannot make
/// the emulator wait for or buffer a body it has no right to send.
#[tokio::test]
async fn an_unauthorized_request_is_refused_before_its_body_is_read() {
    let hub = emulator_with(Limits {
        body_timeout: Duration::from_secs(120),
        ..Limits::default()
    })
    .await;
    let ep = HubEndpoint::of(&hub);
    let mut stream = tls(&ep, ep.https_addr).await;
    stream
        .write_all(
            b"PUT /devices/d1?api-version=2021-04-12 HTTP/1.1\r\nHost: localhost\r\n\
              Content-Type: application/json\r\nContent-Length: 2000000\r\n\r\n{\"deviceId\"",
        )
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let started = Instant::now();
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(SLACK, stream.read(&mut buf))
            .await
            .expect("answered without waiting for the body")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        received.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(started.elapsed() < SLACK);
}

/// A body too large is 413; a body whose framing is malformed (a chunk size that is not hex)
/// is 400, not 413.
#[tokio::test]
async fn a_malformed_body_is_400_and_a_large_one_413() {
    let hub = emulator_with(Limits::default()).await;
    let ep = HubEndpoint::of(&hub);
    let cs = ServiceConnectionString::parse(ep.connection_string("iothubowner")).unwrap();
    let token = SasToken::generate_with_ttl(
        &ResourceUri::hub(&ep.hostname),
        cs.key(),
        Some("iothubowner"),
        Duration::from_secs(600),
    );
    let head = |framing: &str| {
        format!(
            "PUT /devices/d1?api-version=2021-04-12 HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: {}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n",
            token.secret()
        )
    };
    let answer = async |request: Vec<u8>| {
        let mut stream = tls(&ep, ep.https_addr).await;
        stream.write_all(&request).await.unwrap();
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        while !received.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(SLACK, stream.read(&mut buf))
                .await
                .expect("answered")
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&received).into_owned()
    };
    let mut chunked = head("Transfer-Encoding: chunked").into_bytes();
    chunked.extend_from_slice(b"ZZZZ\r\n{}\r\n");
    let text = answer(chunked).await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    let mut large = head("Content-Length: 3000000").into_bytes();
    large.extend(std::iter::repeat_n(b' ', 2_200_000));
    let text = answer(large).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
}

/// The links one session may have attached are bounded: past 64, an attach is refused with
/// `amqp:resource-limit-exceeded` instead of starting one more task.
#[tokio::test]
async fn links_per_session_are_bounded() {
    let hub = emulator_with(Limits::default()).await;
    let ep = HubEndpoint::of(&hub);
    let mut connection = anonymous_amqp(&ep).await;
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut requests = Sender::attach(&mut session, "cbs-sender", "$cbs")
        .await
        .unwrap();
    requests.send(put_token(&ep, 1)).await.unwrap();
    let mut links = Vec::new();
    for n in 0..63 {
        links.push(
            Sender::attach(&mut session, format!("c2d-{n}"), "/messages/devicebound")
                .await
                .unwrap(),
        );
    }
    let mut extra = Sender::attach(&mut session, "one-too-many", "/messages/devicebound")
        .await
        .unwrap();
    let refused = tokio::time::timeout(SLACK, extra.on_detach())
        .await
        .expect("the 65th link is detached");
    assert!(
        format!("{refused:?}").contains("ResourceLimitExceeded"),
        "{refused:?}"
    );
}
