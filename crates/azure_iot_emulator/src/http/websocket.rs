//! `GET /$iothub/websocket`: MQTT and AMQP over WebSockets on the HTTPS port, for the hub and
//! DPS alike (the tunnelled protocol's first bytes tell them apart, as on the TLS ports).
//! C#'s provisioning clients upgrade at `/` instead, so an upgrade at `/` is served the same
//! way; a plain request for `/` is still an unknown path. The Event Hubs SDKs upgrade at
//! `/$servicebus/websocket` (AMQP, for the Event Hubs-compatible endpoint).
//!
//! The client's subprotocol picks the protocol, echoed back exactly as the client wrote it:
//! `mqtt` in any case (the C SDK sends `MQTT`) for devices over MQTT, `AMQPWSB10` for AMQP (the
//! service endpoint of port 5671). Query strings are ignored (the Java SDK appends
//! `?iothub-no-client-cert=true`).
//!
//! WebSocket frames carry an arbitrary slicing of the byte stream, so the connection is
//! bridged to a byte pipe and served by the very same code as the TLS ports.
//!
//! The upgrade itself carries no credentials: authentication happens inside the tunnelled
//! protocol (MQTT CONNECT password or the TLS client certificate, AMQP CBS), exactly as on
//! the plain ports, so no SAS check is made here. The handshake is answered by hand (accept
//! key, echoed subprotocol) rather than through a WebSocket framework's extractor, so that a
//! bad upgrade still gets an IoT Hub error body.

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::{ApiError, AppState};
use crate::mqtt::run_session;

/// The peer address of the connection a request arrived on, the client certificate it
/// presented in the TLS handshake (if any), and its place under the listener's connection
/// limit (which an upgraded session takes along).
#[derive(Debug, Clone)]
pub(crate) struct Peer(
    pub(crate) SocketAddr,
    pub(crate) Vec<rustls_pki_types::CertificateDer<'static>>,
    pub(crate) crate::net::Slot,
);

/// Bytes buffered between the WebSocket and the protocol session in each direction. When it
/// is full the bridge stops reading frames, so a slow session pushes back on the client
/// through TCP instead of buffering without bound.
const PIPE_BYTES: usize = 64 * 1024;

/// Answers the upgrade with 101 and spawns the bridge once hyper hands over the connection.
///
/// Refused with 400 (and the connection kept as plain HTTP): a request without
/// `Upgrade: websocket` and `Connection: upgrade`, without `Sec-WebSocket-Key`, or offering
/// neither `mqtt` nor `AMQPWSB10`. The chosen subprotocol is echoed byte for byte, since
/// clients compare it with what they sent.
pub(crate) async fn upgrade(
    State(app): State<AppState>,
    Extension(Peer(peer, certificate, slot)): Extension<Peer>,
    mut request: Request,
) -> Response {
    let headers = request.headers();
    let wants_upgrade = header_has(headers, header::UPGRADE, "websocket")
        && header_has(headers, header::CONNECTION, "upgrade");
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return ApiError::invalid(
            "this endpoint only serves WebSocket upgrades (Sec-WebSocket-Key is missing)",
        )
        .into_response();
    };
    if !wants_upgrade {
        return ApiError::invalid("this endpoint only serves WebSocket upgrades").into_response();
    }
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    let chosen = offered
        .iter()
        .find(|p| p.eq_ignore_ascii_case("mqtt") || p.eq_ignore_ascii_case("AMQPWSB10"))
        .cloned();
    let Some(protocol) = chosen else {
        return ApiError::invalid(format!(
            "WebSocket subprotocol must be `mqtt` or `AMQPWSB10`; offered: {offered:?}"
        ))
        .into_response();
    };
    let Ok(protocol_header) = HeaderValue::from_str(&protocol) else {
        return ApiError::invalid("invalid subprotocol").into_response();
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let mqtt = app.mqtt.clone();
    let amqp = app.amqp.clone();
    let is_mqtt = protocol.eq_ignore_ascii_case("mqtt");
    let write_timeout = app.amqp.limits.write_timeout;
    // The upgraded session counts under the HTTPS listener's limit for as long as it lives.
    let permit = slot.take();
    tokio::spawn(async move {
        let _permit = permit;
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(limits()),
                )
                .await;
                if is_mqtt {
                    bridge(ws, peer, write_timeout, move |io| {
                        run_session(io, peer, mqtt, certificate)
                    })
                    .await;
                } else {
                    bridge(ws, peer, write_timeout, move |io| {
                        crate::amqp::run(io, peer, amqp, certificate)
                    })
                    .await;
                }
            }
            Err(e) => tracing::debug!(%peer, error = %e, "WebSocket upgrade failed"),
        }
    });
    let accept = derive_accept_key(key.as_bytes());
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let out = response.headers_mut();
    out.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    out.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        out.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    out.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol_header);
    response
}

/// Whether `request` asks for a WebSocket upgrade at one of the paths that serve them
/// (`/$iothub/websocket`, `/`, and the Event Hubs SDKs' `/$servicebus/websocket`).
pub(crate) fn is_upgrade(request: &Request) -> bool {
    matches!(
        request.uri().path().trim_end_matches('/'),
        "/$iothub/websocket" | "" | "/$servicebus/websocket"
    ) && header_has(request.headers(), header::UPGRADE, "websocket")
}

/// `GET /`: a WebSocket upgrade (C#'s DPS clients), else the unknown path it always was.
pub(crate) async fn upgrade_at_root(
    state: State<AppState>,
    peer: Extension<Peer>,
    request: Request,
) -> Response {
    if is_upgrade(&request) {
        upgrade(state, peer, request).await
    } else {
        super::unsupported(request).await.into_response()
    }
}

/// Whether a comma-separated header (`Connection: keep-alive, Upgrade`) lists `token`,
/// compared case-insensitively as HTTP requires.
fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(token))
}

/// The largest WebSocket message (and frame) a client may send: room for the largest MQTT
/// packet IoT Hub takes (256 KiB of message plus topic and header) or AMQP frame the emulator
/// negotiates (256 KiB), with some to spare for a client that puts a few in one message. The
/// library's defaults (16 MiB frames, 64 MiB messages) let a client that never authenticates
/// make the hub buffer 64 MiB per connection.
pub(crate) const MAX_WEBSOCKET_MESSAGE: usize = 512 * 1024;

fn limits() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_WEBSOCKET_MESSAGE))
        .max_frame_size(Some(MAX_WEBSOCKET_MESSAGE))
}

/// Pumps bytes between the WebSocket and the protocol `serve` runs on a byte pipe, until
/// either side ends.
///
/// Binary frames become pipe bytes whatever their boundaries; pipe bytes go out as binary
/// frames of up to 16 KiB. A text frame ends the connection (no IoT Hub protocol uses them).
/// When either side ends, the pipe is dropped so the session sees end-of-stream, a close frame
/// is sent, and the session task is awaited so nothing outlives the connection.
///
/// A write into the pipe that stays blocked for `write_timeout` ends the connection: the
/// session is itself blocked writing answers the client does not read (the bridge cannot
/// read them while it writes), and no socket deadline sees an in-memory pipe.
async fn bridge<S, F, Fut>(
    ws: WebSocketStream<S>,
    peer: SocketAddr,
    write_timeout: std::time::Duration,
    serve: F,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(tokio::io::DuplexStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (session_end, mut pipe) = tokio::io::duplex(PIPE_BYTES);
    let session = tokio::spawn(serve(session_end));
    let (mut sink, mut frames) = ws.split();
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            frame = frames.next() => match frame {
                Some(Ok(Message::Binary(bytes))) => {
                    match tokio::time::timeout(write_timeout, pipe.write_all(&bytes)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break,
                        Err(_) => {
                            tracing::info!(%peer, "the WebSocket client does not read its answers; closing");
                            break;
                        }
                    }
                }
                // Pings are answered by the WebSocket layer; text frames are not MQTT.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    tracing::info!(%peer, "text frame on a binary-protocol WebSocket; closing");
                    break;
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            },
            read = pipe.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::Binary(Bytes::copy_from_slice(&buffer[..n]))).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
    drop(pipe);
    let _ = sink.close().await;
    let _ = session.await;
}
