//! Serving the router over TLS: HTTP/1.1 with upgrades (for the WebSocket endpoints) on each
//! connection the shared accept loop hands over.
//!
//! HTTP/1.1 only (ALPN `http/1.1`): the service SDKs and the WebSocket device transports all
//! speak it, and an upgrade needs it. The peer address and the TLS client certificate are
//! attached to every request as a [`Peer`] extension, because an upgraded MQTT-over-WebSocket
//! session authenticates X.509 devices with the certificate of the TLS connection it arrived
//! on.
//!
//! Time bounds: hyper's header-read timeout, started when the connection opens and again
//! after each response, is [`Limits::http_idle_timeout`]; it closes connections that never
//! send a request, idle keep-alives and slow headers alike. Request bodies are bounded by the
//! [`super::Body`] extractor ([`Limits::body_timeout`]), writes by the accept loop's
//! `WriteDeadline`.

use std::sync::Arc;

use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Peer;
use crate::config::Limits;
use crate::net::serve_tls;

/// Serves `app` on `listener` until `shutdown` turns true. A connection that fails mid-request
/// (client reset, malformed HTTP) is logged at debug level and affects no other.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) {
    serve_tls(
        listener,
        tls,
        limits,
        shutdown,
        move |stream, peer, slot| {
            let certificate = crate::mqtt::client_certificate(&stream);
            let service = TowerToHyperService::new(app.clone().layer(Extension(Peer(
                peer,
                certificate,
                slot,
            ))));
            async move {
                let result = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.http_idle_timeout)
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
            }
        },
    )
    .await;
}
