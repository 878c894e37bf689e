//! The TLS accept loop every endpoint shares.
//!
//! Each accepted socket gets `TCP_NODELAY` (a client that waits for each acknowledgement
//! would otherwise stall ~40 ms per round on Nagle's algorithm), a TLS handshake bounded by a
//! timeout (so a client that connects and says nothing cannot pin a task), and its own task
//! running the endpoint's connection handler. On shutdown the loop stops accepting and aborts
//! every connection task.
//!
//! The loop only deals in bytes and TLS. Which protocol runs on a connection is the caller's
//! choice of `handle` (one loop per port); telling hub from DPS traffic on a shared port
//! happens later, once the first protocol bytes are known. Connection tasks live in a
//! `JoinSet`, reaped on every turn, so memory stays proportional to live connections.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to finish the TLS handshake. Generous for a real client on a
/// slow link, short enough that half-open sockets do not pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TLS connections on `listener` and runs `handle` for each until `shutdown` turns true.
///
/// A failed or timed-out handshake is logged at debug level and costs nothing else: a port
/// scanner or a client that does not trust the CA must not disturb other connections. When
/// `shutdown` fires, in-flight connection tasks are aborted and awaited before returning.
pub(crate) async fn serve_tls<H, F>(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
    handle: H,
) where
    H: Fn(TlsStream<TcpStream>, SocketAddr) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let acceptor = TlsAcceptor::from(tls);
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connection tasks so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        tokio::select! {
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = socket.set_nodelay(true);
                let acceptor = acceptor.clone();
                let handle = handle.clone();
                connections.spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                        Ok(Ok(tls)) => handle(tls, peer).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}
