//! TCP + TLS to the hub (ring provider, TLS 1.2 and 1.3 as the hub offers), optionally
//! through an HTTP proxy and inside a WebSocket: a byte stream for the MQTT and AMQP engines.

use std::sync::Arc;

use azure_iot_protocol::tls::{client_config_builder, root_store};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::auth::X509Certificate;
use crate::error::{Error, ErrorKind, Result};
use crate::options::{Proxy, Transport};

/// The client's TLS configuration: `trusted_ca_pem` if given, else the operating system's
/// roots (which is what trusts the real Azure IoT Hub); presenting `certificate` if given.
pub fn tls_config(
    trusted_ca_pem: Option<&str>,
    certificate: Option<&X509Certificate>,
) -> Result<Arc<rustls::ClientConfig>> {
    let roots = root_store(trusted_ca_pem).map_err(|e| {
        let kind = if e.is_invalid_argument() {
            ErrorKind::InvalidArgument
        } else {
            ErrorKind::Connect
        };
        Error::with_source(kind, e.to_string(), e)
    })?;
    let builder = client_config_builder(roots)
        .map_err(|e| Error::with_source(ErrorKind::Connect, "TLS configuration", e))?;
    let config = match certificate {
        Some(cert) => builder
            .with_client_auth_cert(cert.chain.clone(), cert.key.clone_key())
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::InvalidArgument,
                    "the device certificate and private key cannot be used together",
                    e,
                )
            })?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A byte stream to the hub, whichever transport carries it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection to the hub as an engine sees it: protocol bytes in both directions.
pub type Connection = Box<dyn Io>;

/// Where and how to dial the hub.
#[derive(Clone)]
pub struct Dial {
    /// TLS settings (trusted roots, client certificate).
    pub(crate) tls: Arc<rustls::ClientConfig>,
    /// The host to dial (a gateway's, if the connection string names one).
    pub(crate) host: String,
    /// The port.
    pub(crate) port: u16,
    /// The protocol, and whether it runs in a WebSocket.
    pub(crate) transport: Transport,
    /// An HTTP proxy to tunnel through.
    pub(crate) proxy: Option<Proxy>,
}

impl Dial {
    /// Dial `host:port` with `tls` (from [`tls_config`]) over `transport`, through `proxy`
    /// if given.
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        host: impl Into<String>,
        port: u16,
        transport: Transport,
        proxy: Option<Proxy>,
    ) -> Self {
        Self {
            tls,
            host: host.into(),
            port,
            transport,
            proxy,
        }
    }

    /// The host dialled.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Opens a byte stream as this says.
    pub async fn connect(&self) -> Result<Connection> {
        connect(
            self.tls.clone(),
            &self.host,
            self.port,
            self.transport,
            self.proxy.as_ref(),
        )
        .await
    }
}

/// An HTTPS client on `dial`'s TLS settings (its trusted roots, its X.509 certificate) and
/// through its proxy, if any (never one from the environment, like the other transports);
/// each request bounded by `timeout`.
#[cfg(feature = "https")]
pub fn http_client(dial: &Dial, timeout: std::time::Duration) -> Result<reqwest::Client> {
    let setup =
        |e: reqwest::Error| Error::with_source(ErrorKind::Connect, "HTTPS client set-up", e);
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls((*dial.tls).clone())
        .user_agent(crate::client::CLIENT_TYPE)
        .timeout(timeout);
    builder = match &dial.proxy {
        Some(proxy) => {
            let mut tunnel = reqwest::Proxy::all(format!("http://{}:{}", proxy.host, proxy.port))
                .map_err(setup)?;
            if let Some((user, password)) = &proxy.credentials {
                tunnel = tunnel.basic_auth(user, password);
            }
            builder.proxy(tunnel)
        }
        None => builder.no_proxy(),
    };
    builder.build().map_err(setup)
}

/// A [`Connection`] that is `Debug`, as the AMQP library wants its stream.
pub struct Stream(pub Connection);

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stream")
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

/// Opens `transport` to `host:port`, through `proxy` if one is given: TLS, then for
/// WebSockets the upgrade.
pub(crate) async fn connect(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    port: u16,
    transport: Transport,
    proxy: Option<&Proxy>,
) -> Result<Connection> {
    let tcp = match proxy {
        Some(proxy) => proxy::tunnel(proxy, host, port).await?,
        None => TcpStream::connect((host, port)).await.map_err(|e| {
            Error::with_source(ErrorKind::Connect, format!("cannot reach {host}:{port}"), e)
        })?,
    };
    let tls = connect_tls(config, host, port, tcp).await?;
    match transport.websocket_subprotocol() {
        #[cfg(any(feature = "mqtt_ws", feature = "amqp_ws"))]
        Some(subprotocol) => websocket::connect(tls, host, subprotocol).await,
        _ => Ok(Box::new(tls)),
    }
}

/// Completes the TLS handshake with `host` on `tcp`, verifying `host`.
async fn connect_tls(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    port: u16,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>> {
    let server_name = ServerName::try_from(host.to_owned()).map_err(|e| {
        Error::with_source(
            ErrorKind::InvalidArgument,
            format!("`{host}` is not a valid host name"),
            e,
        )
    })?;
    // Telemetry is many small packets, each awaited: Nagle would add latency to every one.
    tcp.set_nodelay(true)
        .map_err(|e| Error::with_source(ErrorKind::Connect, "TCP_NODELAY", e))?;
    TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|e| {
            Error::with_source(
                ErrorKind::Connect,
                format!("TLS handshake with {host}:{port} failed"),
                e,
            )
        })
}

#[cfg(any(feature = "mqtt_ws", feature = "amqp_ws"))]
mod websocket {
    //! MQTT and AMQP over WebSockets. Frames carry an arbitrary slicing of the protocol's
    //! byte stream, so the socket is bridged to an in-memory byte pipe by a task, and the
    //! engine reads and writes the pipe exactly as it would a TLS stream.

    use bytes::Bytes;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::net::TcpStream;
    use tokio_rustls::client::TlsStream;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;

    use super::Connection;
    use crate::error::{Error, ErrorKind, Result};

    /// Bytes buffered in the pipe in each direction.
    const PIPE_BYTES: usize = 64 * 1024;

    /// The WebSocket upgrade (asking for `subprotocol`) on an open TLS stream, then the
    /// bridge.
    pub(super) async fn connect(
        tls: TlsStream<TcpStream>,
        host: &str,
        subprotocol: &'static str,
    ) -> Result<Connection> {
        let url = format!("wss://{host}/$iothub/websocket");
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| Error::with_source(ErrorKind::InvalidArgument, format!("`{url}`"), e))?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(subprotocol),
        );
        let (ws, _response) = tokio_tungstenite::client_async(request, tls)
            .await
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::Connect,
                    format!("the WebSocket upgrade at {url} failed"),
                    e,
                )
            })?;
        let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
        tokio::spawn(bridge(ws, theirs));
        Ok(Box::new(ours))
    }

    /// Pumps bytes between the pipe and the WebSocket until either side ends; dropping the
    /// pipe then shows the engine an end of stream, as a closed socket would.
    async fn bridge(ws: WebSocketStream<TlsStream<TcpStream>>, mut pipe: DuplexStream) {
        let (mut sink, mut frames) = ws.split();
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            tokio::select! {
                frame = frames.next() => match frame {
                    Some(Ok(Message::Binary(bytes))) => {
                        if pipe.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                    // Pings are answered by the WebSocket layer.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Text(_) | Message::Close(_)) | Err(_)) | None => break,
                },
                read = pipe.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let frame = Message::Binary(Bytes::copy_from_slice(&buffer[..n]));
                        if sink.send(frame).await.is_err() {
                            break;
                        }
                    }
                },
            }
        }
        drop(pipe);
        let _ = sink.close().await;
    }
}

mod proxy {
    //! HTTP `CONNECT` tunnels (RFC 9110 §9.3.6): ask the proxy for a byte stream to the hub,
    //! then run TLS inside it as if it were the TCP connection.

    use base64::Engine as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use crate::error::{Error, ErrorKind, Result};
    use crate::options::Proxy;

    /// The most a proxy's answer to `CONNECT` may hold before the blank line.
    const MAX_ANSWER: usize = 8 * 1024;

    /// A TCP connection to `proxy` that now carries bytes to and from `host:port`.
    pub(super) async fn tunnel(proxy: &Proxy, host: &str, port: u16) -> Result<TcpStream> {
        let (proxy_host, proxy_port) = proxy.address();
        // The host goes into the request line: only host-name and address characters, so a
        // crafted host name cannot add lines to the request.
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "`{}` is not a host name a proxy can be asked for",
                    host.escape_debug()
                ),
            ));
        }
        // An IPv6 literal is bracketed in an authority.
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut tcp = TcpStream::connect((proxy_host, proxy_port))
            .await
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::Connect,
                    format!("cannot reach the proxy {proxy_host}:{proxy_port}"),
                    e,
                )
            })?;
        let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some((user, password)) = &proxy.credentials {
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request.push_str(&format!("Proxy-Authorization: Basic {basic}\r\n"));
        }
        request.push_str("\r\n");
        let broken = |e: std::io::Error| {
            Error::with_source(
                ErrorKind::Connect,
                format!("the proxy {proxy_host}:{proxy_port} closed the tunnel request"),
                e,
            )
        };
        tcp.write_all(request.as_bytes()).await.map_err(broken)?;
        // Read the answer byte by byte up to its blank line, so that nothing the hub sends
        // after it is consumed here.
        let mut answer = Vec::with_capacity(256);
        // The blank line ends the head; some proxies end lines with a bare LF.
        while !(answer.ends_with(b"\r\n\r\n") || answer.ends_with(b"\n\n")) {
            if answer.len() >= MAX_ANSWER {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!(
                        "the proxy {proxy_host}:{proxy_port} sent an oversized answer to CONNECT"
                    ),
                ));
            }
            let byte = tcp.read_u8().await.map_err(broken)?;
            answer.push(byte);
        }
        let (status, status_line) = answer_status(&answer);
        match status {
            Some(200..=299) => Ok(tcp),
            Some(407) => Err(Error::new(
                ErrorKind::Unauthorized,
                format!(
                    "the proxy {proxy_host}:{proxy_port} wants credentials or refused them ({status_line})"
                ),
            )),
            _ => Err(Error::new(
                ErrorKind::Connect,
                format!(
                    "the proxy {proxy_host}:{proxy_port} refused a tunnel to {host}:{port} ({status_line})"
                ),
            )),
        }
    }

    /// The status code of a proxy's answer head and its status line (printable), or `None`
    /// when the head does not start with `HTTP/x.y NNN`.
    pub(super) fn answer_status(head: &[u8]) -> (Option<u16>, String) {
        let text = String::from_utf8_lossy(head);
        let line: String = text
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        let mut words = line.split_whitespace();
        let status = match (words.next(), words.next()) {
            (Some(version), Some(code)) if version.starts_with("HTTP/") && code.len() == 3 => {
                code.parse::<u16>().ok().filter(|c| (100..=599).contains(c))
            }
            _ => None,
        };
        (status, line)
    }

    #[cfg(test)]
    mod tests {
        use super::answer_status;
        use proptest::prelude::*;

        #[test]
        fn status_lines() {
            assert_eq!(
                answer_status(b"HTTP/1.1 200 Connection established\r\n\r\n").0,
                Some(200)
            );
            assert_eq!(answer_status(b"HTTP/1.0 407 Proxy Auth\n\n").0, Some(407));
            assert_eq!(answer_status(b"SSH-2.0-OpenSSH\r\n\r\n").0, None);
            assert_eq!(answer_status(b"HTTP/1.1 2000 x\r\n\r\n").0, None);
            let (_, line) = answer_status(b"HTTP/1.1 502 Bad\x1b[31m Gateway\r\n\r\n");
            assert!(
                !line.contains('\x1b'),
                "control characters are not echoed: {line:?}"
            );
        }

        proptest! {
            #[test]
            fn any_answer_head_is_read_without_panicking(head in proptest::collection::vec(any::<u8>(), 0..300)) {
                let (status, line) = answer_status(&head);
                prop_assert!(line.chars().count() <= 200);
                if let Some(code) = status {
                    prop_assert!((100..=599).contains(&code));
                }
            }
        }
    }
}
