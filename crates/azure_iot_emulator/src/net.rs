//! The TLS accept loop every endpoint shares, and the bounds it puts on every connection.
//!
//! Each accepted socket gets `TCP_NODELAY` (a client that waits for each acknowledgement
//! would otherwise stall ~40 ms per round on Nagle's algorithm), a TLS handshake bounded by
//! [`Limits::handshake_timeout`] (so a client that connects and says nothing cannot pin a
//! task), a [`WriteDeadline`] (so a client that stops reading cannot pin one either), and its
//! own task running the endpoint's connection handler. On shutdown the loop stops accepting
//! and aborts every connection task.
//!
//! Each listener holds at most [`Limits::effective_max_connections`] connections: a
//! connection over the limit is accepted and closed at once (the client sees the close at
//! once instead of waiting in the kernel's backlog), so a flood on one port cannot take the
//! descriptors the other ports and the hub's own files need. When `accept` itself fails (out
//! of descriptors), the loop backs off, 10 ms doubling to 1 s, instead of spinning; both
//! conditions are logged at most once per [`LOG_EVERY`], with a count.
//!
//! The loop only deals in bytes and TLS. Which protocol runs on a connection is the caller's
//! choice of `handle` (one loop per port); telling hub from DPS traffic on a shared port
//! happens later, once the first protocol bytes are known. Connection tasks live in a
//! `JoinSet`, reaped on every turn, so memory stays proportional to live connections.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::Limits;

/// The listen backlog: connections the kernel completes and queues for `accept`. tokio's
/// default (1,024) overflows under a burst of a few thousand connects, and a connect dropped
/// from a full queue waits for the client's SYN retry (a second or more) before the emulator
/// even sees it. The kernel caps it at `net.core.somaxconn` (4,096 on current Linux).
const BACKLOG: u32 = 4096;

/// Binds a listener on `addr` with [`BACKLOG`] (and `SO_REUSEADDR` on Unix, so a restarted
/// emulator can bind a port whose old connections are still in `TIME_WAIT`).
pub(crate) fn listen(addr: SocketAddr) -> Result<TcpListener, crate::error::EmulatorError> {
    let bind = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)
    };
    bind().map_err(|source| crate::error::EmulatorError::Bind { addr, source })
}

/// What a connection handler gets: the TLS stream over the socket, writes bounded in time.
pub(crate) type Stream = TlsStream<WriteDeadline<TcpStream>>;

/// A connection's place under its listener's limit. The accept loop's task holds it until the
/// connection's handler returns; a handler that hands the connection on to a task of its own
/// (a WebSocket upgrade) takes the permit along with [`Slot::take`].
#[derive(Clone)]
pub(crate) struct Slot(Arc<std::sync::Mutex<Option<OwnedSemaphorePermit>>>);

impl Slot {
    /// The permit, for a task that outlives the handler; `None` if already taken.
    pub(crate) fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.0.lock().ok().and_then(|mut permit| permit.take())
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

/// The most a repeated condition (refused connections, failing accepts) is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The first and the longest pause after a failed `accept`.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Accepts TLS connections on `listener` and runs `handle` for each until `shutdown` turns
/// true, within `limits` (connection count, handshake and write deadlines).
///
/// A failed or timed-out handshake is logged at debug level and costs nothing else: a port
/// scanner or a client that does not trust the CA must not disturb other connections. When
/// `shutdown` fires, in-flight connection tasks are aborted and awaited before returning.
pub(crate) async fn serve_tls<H, F>(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
    handle: H,
) where
    H: Fn(Stream, SocketAddr, Slot) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let acceptor = TlsAcceptor::from(tls);
    let max_connections = limits.effective_max_connections();
    let slots = Arc::new(Semaphore::new(max_connections));
    let local = listener.local_addr().ok();
    let mut connections = JoinSet::new();
    let mut refused = Throttled::new();
    let mut failed = Throttled::new();
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        // Reap finished connection tasks so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        tokio::select! {
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        if let Some(count) = failed.tick() {
                            tracing::warn!(listener = ?local, error = %e, count, "accept failed; backing off");
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.changed() => break,
                        }
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                        continue;
                    }
                };
                backoff = ACCEPT_BACKOFF.0;
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    if let Some(count) = refused.tick() {
                        tracing::warn!(listener = ?local, max_connections, count, "connection limit reached; closing new connections");
                    }
                    drop(socket);
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let socket = WriteDeadline::new(socket, limits.write_timeout);
                let acceptor = acceptor.clone();
                let handle = handle.clone();
                let handshake_timeout = limits.handshake_timeout;
                let slot = Slot(Arc::new(std::sync::Mutex::new(Some(slot))));
                connections.spawn(async move {
                    // Held until the handler returns, unless it took the permit along.
                    let held = slot.clone();
                    // The stream is bound before the handler runs, so the task does not keep
                    // room for the handshake's result beside the handler's state.
                    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(socket)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    };
                    handle(tls, peer, slot).await;
                    drop(held);
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// Counts occurrences of a condition and says when to log it: the first time, then at most
/// once per [`LOG_EVERY`], with how many happened since the last line.
struct Throttled {
    last: Option<Instant>,
    count: u64,
}

impl Throttled {
    fn new() -> Self {
        Self {
            last: None,
            count: 0,
        }
    }

    /// Records one occurrence; `Some(count since the last log line)` when one is due.
    fn tick(&mut self) -> Option<u64> {
        self.count += 1;
        let now = Instant::now();
        if self.last.is_some_and(|last| now < last + LOG_EVERY) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

/// A byte stream whose writes fail with `TimedOut` once they have been blocked (the peer's
/// receive window full: it does not read) for longer than a deadline.
///
/// Reads are not bounded here: how long a peer may stay silent is each protocol's rule
/// (keep-alive, idle-time-out, header timeouts). The timer exists only while a write is
/// blocked, so an idle connection costs no timer.
pub(crate) struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    blocked: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    /// Bounds `inner`'s writes by `timeout`.
    pub(crate) fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            blocked: None,
        }
    }

    /// Called with the inner write's result: clears the deadline on progress, starts it on
    /// the first `Pending`, and turns a passed deadline into `TimedOut`.
    fn check<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.blocked = None;
            return poll;
        }
        let timeout = self.timeout;
        let deadline = self
            .blocked
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(deadline.as_mut().poll(cx));
        self.blocked = None;
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the peer has not read for {timeout:?}"),
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, poll)
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for WriteDeadline<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteDeadline")
            .field("inner", &self.inner)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A byte stream whose reads fail with `ConnectionAborted` once its [`Stop`] is dropped.
///
/// For protocol libraries that own their stream in a task of their own (fe2o3-amqp's
/// connection engine): dropping the [`Stop`] ends that task at its next read, even when the
/// peer keeps the connection busy and never answers a close, so the socket is released.
pub(crate) struct Stoppable<S> {
    inner: S,
    stop: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// Ends a [`Stoppable`] stream's reads when dropped.
pub(crate) struct Stop {
    _armed: tokio::sync::oneshot::Sender<()>,
}

impl<S> Stoppable<S> {
    /// Wraps `inner`; its reads fail once the returned [`Stop`] is dropped.
    pub(crate) fn new(inner: S) -> (Self, Stop) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let stream = Self {
            inner,
            stop: Some(rx),
        };
        (stream, Stop { _armed: tx })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Stoppable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stopped = match self.stop.as_mut() {
            Some(stop) => Pin::new(stop).poll(cx).is_ready(),
            None => true,
        };
        if stopped {
            self.stop = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the connection was closed by the emulator",
            )));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stoppable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Stoppable<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stopped = self.stop.is_none();
        f.debug_struct("Stoppable")
            .field("inner", &self.inner)
            .field("stopped", &stopped)
            .finish()
    }
}

/// An HTTPS client for the emulator's own calls out (DPS webhooks, a storage account):
/// trusts the certificates in `ca_pem` (the emulator's CA) and, with `native_roots`, the
/// operating system's roots too; no redirects; `timeout` per request.
pub(crate) fn https_client(
    ca_pem: &str,
    native_roots: bool,
    timeout: std::time::Duration,
) -> Result<reqwest::Client, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = if native_roots {
        // No native roots is not an error here: the emulator's CA may be all that is needed.
        azure_iot_protocol::tls::root_store(None).unwrap_or_else(|_| rustls::RootCertStore::empty())
    } else {
        rustls::RootCertStore::empty()
    };
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("the CA certificate does not parse: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("the CA certificate is not a usable root: {e}"))?;
    }
    let tls = azure_iot_protocol::tls::client_config_builder(roots)
        .map_err(|e| e.to_string())?
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A peer that never reads: the writer fills the pipe, then fails with `TimedOut` once
    /// the deadline passes, not before.
    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_reads_times_out() {
        let (near, _far) = tokio::io::duplex(64);
        let mut stream = WriteDeadline::new(near, Duration::from_secs(30));
        stream.write_all(&[0; 64]).await.expect("fits the pipe");
        let started = Instant::now();
        let error = stream.write_all(&[0; 1]).await.expect_err("must time out");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    /// A peer that reads, however slowly, keeps the connection: each bit of progress restarts
    /// the deadline.
    #[tokio::test(start_paused = true)]
    async fn progress_restarts_the_deadline() {
        let (near, mut far) = tokio::io::duplex(16);
        let mut stream = WriteDeadline::new(near, Duration::from_secs(30));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let mut total = 0;
            while total < 160 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                total += tokio::io::AsyncReadExt::read(&mut far, &mut buf)
                    .await
                    .expect("read");
            }
        });
        stream
            .write_all(&[0; 160])
            .await
            .expect("slow progress is progress");
        reader.await.expect("reader");
    }

    /// A reader parked on a silent peer wakes with an error as soon as its `Stop` is dropped.
    #[tokio::test]
    async fn dropping_stop_ends_a_parked_read() {
        let (near, _far) = tokio::io::duplex(64);
        let (mut stream, stop) = Stoppable::new(near);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await
        });
        tokio::task::yield_now().await;
        drop(stop);
        let read = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("woken")
            .expect("task");
        let error = read.expect_err("aborted");
        assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
    }

    #[test]
    fn throttled_logs_first_then_once_per_period_with_the_count() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let mut log = Throttled::new();
            assert_eq!(log.tick(), Some(1));
            assert_eq!(log.tick(), None);
            assert_eq!(log.tick(), None);
            tokio::time::advance(LOG_EVERY).await;
            assert_eq!(log.tick(), Some(3));
        });
    }
}
