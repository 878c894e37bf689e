//! The packet side of an authenticated MQTT connection, shared by hub sessions
//! ([`super::session`]) and DPS connections ([`super::dps`]): buffered reads and writes, the
//! keep-alive deadline, and the wait for the next packet.
//!
//! A connection's loop asks [`Wire::next`] for the next thing to do: a packet already
//! buffered comes first (so a burst is handled before anything else), then what was written
//! is flushed, then the wait races the socket against the keep-alive deadline, the
//! emulator's shutdown and the connection's own work (`other`: the hub's acknowledgements
//! and events; nothing for DPS).

use std::future::Future;
use std::time::Duration;

use azure_iot_protocol::mqtt::codec::{MAX_PACKET_BYTES, Packet, read_packet, write_packet};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::session::{MAX_KEEP_ALIVE, read_some, release_if_empty, sleep_until};

/// Why a connection ended (for the log).
pub(super) type Closed = String;

/// The write buffer's capacity kept between flushes (a batch of acknowledgements fits); a
/// buffer that grew past it for a large message is let go after its flush.
const WRITE_BUFFER_KEPT: usize = 1024;

/// What [`Wire::next`] brings.
pub(super) enum Next<T> {
    /// A packet from the client.
    Packet(Packet),
    /// The connection's own work finished first.
    Other(T),
}

/// An authenticated connection's socket and buffers.
pub(super) struct Wire<S> {
    /// The socket (TLS, or a WebSocket adapter).
    pub(super) io: S,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// The keep-alive interval the client asked for (capped), `None` for 0.
    keep_alive: Option<Duration>,
    /// When the connection closes unless a packet arrives.
    keep_alive_deadline: Option<Instant>,
}

impl<S> Wire<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// The connection after its CONNECT with keep-alive `keep_alive_secs` (0: none), `read_buf`
    /// holding whatever followed the CONNECT.
    pub(super) fn new(io: S, read_buf: BytesMut, keep_alive_secs: u16) -> Self {
        let keep_alive = (keep_alive_secs > 0)
            .then(|| Duration::from_secs(u64::from(keep_alive_secs)).min(MAX_KEEP_ALIVE));
        let mut wire = Self {
            io,
            read_buf,
            write_buf: BytesMut::new(),
            keep_alive,
            keep_alive_deadline: None,
        };
        wire.keep_alive_deadline = wire.deadline();
        wire
    }

    /// 1.5 times the keep-alive interval from now, as IoT Hub allows.
    fn deadline(&self) -> Option<Instant> {
        self.keep_alive.map(|k| Instant::now() + k.mul_f32(1.5))
    }

    /// Queues `packet` for the next flush.
    pub(super) fn write(&mut self, packet: &Packet) -> Result<(), Closed> {
        write_packet(packet, &mut self.write_buf).map_err(|e| e.to_string())
    }

    /// Writes what is queued.
    pub(super) async fn flush(&mut self) -> std::io::Result<()> {
        if !self.write_buf.is_empty() {
            self.io.write_all(&self.write_buf).await?;
            if self.write_buf.capacity() > WRITE_BUFFER_KEPT {
                // A large downstream message: not kept for an idle connection.
                self.write_buf = BytesMut::new();
            } else {
                self.write_buf.clear();
            }
            self.io.flush().await?;
        }
        Ok(())
    }

    /// The next packet, or `other`'s output if it finishes first; `Err` when the connection
    /// is over (closed, unreadable, silent past its keep-alive, or the emulator shutting
    /// down). With `reading` false the socket is not read (back-pressure) but buffered
    /// packets still come.
    pub(super) async fn next<T>(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        reading: bool,
        other: impl Future<Output = T>,
    ) -> Result<Next<T>, Closed> {
        tokio::pin!(other);
        loop {
            match read_packet(&mut self.read_buf, MAX_PACKET_BYTES) {
                Err(e) => return Err(e.to_string()),
                Ok(Some(packet)) => {
                    self.keep_alive_deadline = self.deadline();
                    return Ok(Next::Packet(packet));
                }
                Ok(None) => {}
            }
            release_if_empty(&mut self.read_buf);
            self.flush()
                .await
                .map_err(|e| format!("write failed: {e}"))?;
            tokio::select! {
                read = read_some(&mut self.io, &mut self.read_buf), if reading => match read {
                    Ok(0) => return Err("the device closed the connection".into()),
                    Ok(_) => {}
                    Err(e) => return Err(format!("read failed: {e}")),
                },
                value = &mut other => return Ok(Next::Other(value)),
                _ = sleep_until(self.keep_alive_deadline) => {
                    return Err("no packet within 1.5 × the keep-alive interval".into());
                }
                _ = shutdown.changed() => return Err("the emulator is shutting down".into()),
            }
        }
    }

    /// Flushes what is queued and closes the socket.
    pub(super) async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }
}
