//! Raw connections for abuse tests: TLS to any of the hub's ports without speaking its
//! protocol, a WebSocket upgrade by hand, and hand-made WebSocket frames, so that a test can
//! send what no well-behaved client would (fragments never finished, frames over the limit,
//! text frames) and watch how the connection ends.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::HubEndpoint;

/// A client TLS connection to one of the hub's ports.
pub type TlsClientStream = tokio_rustls::client::TlsStream<TcpStream>;

/// The largest HTTP response head [`websocket_upgrade`] reads.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Opens TCP to `addr` and completes a TLS handshake trusting the hub's CA (as `localhost`).
/// Errors are returned, not panics: an abuse test counts refusals.
pub async fn tls_connect(hub: &HubEndpoint, addr: SocketAddr) -> io::Result<TlsClientStream> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
    TlsConnector::from(Arc::new(hub.tls_config()))
        .connect(name, tcp)
        .await
}

/// Sends a WebSocket upgrade for `/$iothub/websocket` offering `subprotocol` and reads the
/// response head; `Ok` only for `101 Switching Protocols` (the error carries the head).
pub async fn websocket_upgrade(stream: &mut TlsClientStream, subprotocol: &str) -> io::Result<()> {
    let request = format!(
        "GET /$iothub/websocket HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {subprotocol}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > MAX_RESPONSE_HEAD || stream.read(&mut byte).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("no upgrade: {}", String::from_utf8_lossy(&head)),
            ));
        }
        head.push(byte[0]);
    }
    if head.starts_with(b"HTTP/1.1 101") {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "no upgrade: {}",
            String::from_utf8_lossy(&head)
        )))
    }
}

/// The WebSocket opcodes a test sends.
pub mod opcode {
    /// A continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// A text frame (no IoT Hub protocol uses them).
    pub const TEXT: u8 = 0x1;
    /// A binary frame.
    pub const BINARY: u8 = 0x2;
}

/// The header of a client (masked) WebSocket frame that declares `length` payload bytes,
/// with the all-zero masking key, so the payload bytes that follow go on the wire as they
/// are: a test can declare more than it sends.
pub fn websocket_frame_header(opcode: u8, fin: bool, length: u64) -> Vec<u8> {
    let mut header = vec![if fin { 0x80 } else { 0 } | (opcode & 0x0f)];
    match length {
        0..=125 => header.push(0x80 | length as u8),
        126..=0xffff => {
            header.push(0x80 | 126);
            header.extend_from_slice(&(length as u16).to_be_bytes());
        }
        _ => {
            header.push(0x80 | 127);
            header.extend_from_slice(&length.to_be_bytes());
        }
    }
    header.extend_from_slice(&[0, 0, 0, 0]);
    header
}

/// A whole client WebSocket frame (zero masking key) carrying `payload`.
pub fn websocket_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut frame = websocket_frame_header(opcode, fin, payload.len() as u64);
    frame.extend_from_slice(payload);
    frame
}

/// A byte stream carried in binary frames over a WebSocket to the hub's HTTPS port at `path`
/// with `subprotocol` (`mqtt`, `AMQPWSB10`), as the SDKs' WebSocket transports open it, with
/// `tls` (for a client certificate). A task pumps frames and bytes until either side ends.
pub async fn websocket_stream(
    hub: &HubEndpoint,
    path: &str,
    subprotocol: &str,
    tls: rustls::ClientConfig,
) -> tokio::io::DuplexStream {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Frame;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let tcp = TcpStream::connect(hub.https_addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let stream = TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    let mut request = format!("wss://localhost{path}")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", subprotocol.parse().unwrap());
    let (ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], subprotocol);
    let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let (mut sink, mut frames) = ws.split();
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            tokio::select! {
                frame = frames.next() => match frame {
                    Some(Ok(Frame::Binary(bytes))) => if theirs.write_all(&bytes).await.is_err() { break },
                    Some(Ok(_)) => {}
                    _ => break,
                },
                read = theirs.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => if sink.send(Frame::Binary(buffer[..n].to_vec().into())).await.is_err() { break },
                },
            }
        }
        let _ = sink.close().await;
    });
    ours
}
