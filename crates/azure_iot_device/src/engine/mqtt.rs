//! The MQTT engine: an I/O pump over the sans-IO session
//! ([`azure_iot_protocol::mqtt::client::Client`]).
//!
//! Everything about the protocol (packet ids, the in-flight bound, keep-alive, resend with
//! DUP, resubscription, in-order PUBACKs) is decided by the session; this engine only reads
//! the socket into [`Client::handle_packet`], writes what [`Client::poll_transmit`] gives,
//! sleeps until [`Client::poll_timeout`], and translates the session's events into the
//! neutral [`EngineEvent`]s (a twin answer, matched by request id, completes its operation).
//! The session's clock is tokio's (`Instant::into_std`), so a paused test clock drives it.

use std::collections::{HashMap, VecDeque};

use azure_iot_protocol::mqtt::client::{self, Client, Delivery, Event, LossReason};
use azure_iot_protocol::mqtt::codec::{
    ConnectReturnCode, MAX_PACKET_BYTES, read_packet, write_packet,
};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::{Instant, sleep_until};

use super::{DeliveryTag, EngineEvent, Feature, OpId, Operation, Outcome, Reply};
use crate::client::{DisconnectReason, TwinAnswer};
use crate::error::{Error, ErrorKind, Result};
use crate::transport::{Connection, Dial};

/// How long a clean close may take before the socket is simply dropped.
const CLOSE_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// One open connection.
struct Conn {
    reader: ReadHalf<Connection>,
    writer: WriteHalf<Connection>,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// Bytes were written since the last flush. A TLS stream may keep written bytes in its
    /// own buffer (when the socket would block) until it is flushed: without the flush a
    /// CONNECT or PUBLISH could wait there until the next write, which may never come.
    unflushed: bool,
}

/// The MQTT engine of one device or module client.
pub(crate) struct MqttEngine {
    session: Client,
    dial: Dial,
    conn: Option<Conn>,
    /// Twin request id → the operation its answer completes.
    twin: HashMap<String, OpId>,
    /// Received cloud-to-device messages not settled yet.
    deliveries: HashMap<u64, Delivery>,
    next_tag: u64,
    /// Ids for operations answered without reaching the session (above the session's ids).
    next_local_op: OpId,
    events: VecDeque<EngineEvent>,
    paused: bool,
}

/// tokio's clock (paused in tests) as the session's `std` instant.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl MqttEngine {
    /// An engine for `session`, dialling as `dial` says.
    pub(crate) fn new(session: Client, dial: Dial) -> Self {
        Self {
            session,
            dial,
            conn: None,
            twin: HashMap::new(),
            deliveries: HashMap::new(),
            next_tag: 0,
            next_local_op: 1 << 62,
            events: VecDeque::new(),
            paused: false,
        }
    }

    /// Answers an operation at once with `error`, without it reaching the session.
    fn refuse(&mut self, error: Error) -> OpId {
        self.next_local_op += 1;
        let op = self.next_local_op;
        self.events.push_back(EngineEvent::Done(op, Err(error)));
        op
    }

    /// The connection is gone: tell the session, forget the socket.
    fn lose(&mut self) {
        self.conn = None;
        self.deliveries.clear();
        self.session.connection_lost(now());
    }

    /// Moves the session's events into `events`, translated.
    fn drain_session(&mut self) {
        while let Some(event) = self.session.poll_event() {
            if let Some(event) = self.translate(event) {
                self.events.push_back(event);
            }
        }
    }

    fn translate(&mut self, event: Event) -> Option<EngineEvent> {
        Some(match event {
            Event::Connected | Event::Refused(_) => return None,
            // A twin request is answered by its response, not its PUBACK.
            Event::Acked(op) if self.twin.values().any(|o| *o == op.0) => return None,
            Event::Acked(op) => EngineEvent::Done(op.0, Ok(Reply::Done)),
            Event::Subscribed {
                op,
                feature,
                granted,
            } => EngineEvent::Done(
                op.0,
                if granted {
                    Ok(Reply::Done)
                } else {
                    Err(Error::new(
                        ErrorKind::Refused,
                        format!("the hub refused the {feature:?} subscription"),
                    ))
                },
            ),
            Event::Expired(op) => {
                self.twin.retain(|_, o| *o != op.0);
                EngineEvent::Done(
                    op.0,
                    Err(Error::new(
                        ErrorKind::Timeout,
                        "the operation timed out before it could be sent",
                    )),
                )
            }
            Event::CloudToDevice { message, delivery } => {
                self.next_tag += 1;
                self.deliveries.insert(self.next_tag, delivery);
                EngineEvent::CloudToDevice(message, DeliveryTag(self.next_tag))
            }
            Event::TwinResponse {
                request_id,
                status,
                version,
                body,
            } => {
                let op = self.twin.remove(&request_id)?;
                EngineEvent::Done(
                    op,
                    Ok(Reply::Twin(TwinAnswer {
                        status,
                        version,
                        body,
                    })),
                )
            }
            Event::DesiredPatch { version, body } => EngineEvent::DesiredPatch { version, body },
            Event::MethodRequest(request) => EngineEvent::Method(request),
            Event::ConnectionLost(reason) => {
                self.conn = None;
                self.deliveries.clear();
                EngineEvent::Lost(match reason {
                    LossReason::KeepAliveTimeout => DisconnectReason::KeepAliveTimeout,
                    LossReason::Protocol(detail) => {
                        tracing::warn!(violation = %detail, "closing the connection");
                        DisconnectReason::ProtocolError
                    }
                })
            }
        })
    }

    /// Encodes everything the session wants sent into the connection's write buffer.
    fn encode(&mut self, now: std::time::Instant) {
        while let Some(packet) = self.session.poll_transmit(now) {
            let Some(conn) = &mut self.conn else {
                continue; // not connected: nothing can be sent (the session keeps its state)
            };
            // Every packet the session builds is within the codec's limits (messages are
            // checked against 256 KiB before they reach it), so encoding cannot fail.
            if let Err(e) = write_packet(&packet, &mut conn.write_buf) {
                tracing::error!(error = %e, "could not encode a packet");
            }
        }
    }

    /// Opens the MQTT session on `stream` (CONNECT, CONNACK) and keeps the stream.
    async fn connect_on(&mut self, mut stream: Connection, password: Option<&str>) -> Result<()> {
        self.session.connect(now(), password);
        let attempt = self.handshake(&mut stream).await;
        let read_buf = match attempt {
            Ok(buf) => buf,
            Err(e) => {
                self.session.connection_lost(now());
                return Err(e);
            }
        };
        let (reader, writer) = tokio::io::split(stream);
        self.paused = false;
        self.conn = Some(Conn {
            reader,
            writer,
            read_buf,
            write_buf: BytesMut::with_capacity(4096),
            unflushed: false,
        });
        tracing::debug!(client_id = %self.session.identity().client_id(), "connected");
        Ok(())
    }

    /// Reads up to CONNACK on a new stream; returns the bytes that followed it.
    async fn handshake(&mut self, stream: &mut Connection) -> Result<BytesMut> {
        let mut buf = BytesMut::new();
        while let Some(packet) = self.session.poll_transmit(now()) {
            write_packet(&packet, &mut buf)
                .map_err(|e| Error::with_source(ErrorKind::InvalidArgument, "CONNECT", e))?;
        }
        let sent = async {
            stream.write_all(&buf).await?;
            stream.flush().await
        };
        sent.await
            .map_err(|e| Error::with_source(ErrorKind::Connect, "sending CONNECT", e))?;
        buf.clear();
        loop {
            match read_packet(&mut buf, MAX_PACKET_BYTES) {
                Ok(Some(packet)) => {
                    let outcome = self.session.handle_packet(now(), packet);
                    let mut answer = None;
                    while let Some(event) = self.session.poll_event() {
                        match event {
                            Event::Connected => answer = Some(Ok(())),
                            Event::Refused(code) => answer = Some(Err(refusal(code))),
                            Event::ConnectionLost(_) => {}
                            other => {
                                if let Some(event) = self.translate(other) {
                                    self.events.push_back(event);
                                }
                            }
                        }
                    }
                    if let Err(LossReason::Protocol(detail)) = outcome {
                        return Err(Error::new(
                            ErrorKind::Protocol,
                            format!("expected CONNACK: {detail}"),
                        ));
                    }
                    if let Some(answer) = answer {
                        // Whatever followed the CONNACK is the pump's to read.
                        return answer.map(|()| buf);
                    }
                }
                Ok(None) => {}
                Err(e) => return Err(Error::with_source(ErrorKind::Protocol, "CONNACK", e)),
            }
            let n = stream
                .read_buf(&mut buf)
                .await
                .map_err(|e| Error::with_source(ErrorKind::Connect, "reading CONNACK", e))?;
            if n == 0 {
                return Err(Error::new(
                    ErrorKind::Connect,
                    "the hub closed the connection before answering CONNECT",
                ));
            }
        }
    }
}

/// The error for a refused CONNECT.
fn refusal(code: ConnectReturnCode) -> Error {
    match code {
        code if client::is_unauthorized(code) => Error::new(
            ErrorKind::Unauthorized,
            format!("the hub refused the credentials ({code:?})"),
        ),
        ConnectReturnCode::ServiceUnavailable => Error::new(
            ErrorKind::Connect,
            "the hub is unavailable (CONNACK 3); try again later",
        ),
        code => Error::new(
            ErrorKind::Refused,
            format!("the hub refused the connection ({code:?})"),
        ),
    }
}

fn feature(feature: Feature) -> client::Feature {
    match feature {
        Feature::CloudToDevice => client::Feature::CloudToDevice,
        Feature::DesiredPatches => client::Feature::DesiredPatches,
        Feature::Methods => client::Feature::Methods,
    }
}

impl super::Engine for MqttEngine {
    async fn connect(&mut self, password: Option<&str>) -> Result<()> {
        if self.conn.is_some() {
            self.lose();
        }
        let stream = self.dial.connect().await?;
        self.connect_on(stream, password).await
    }

    fn submit(&mut self, operation: Operation, deadline: Instant) -> OpId {
        let now_ = now();
        let deadline = deadline.into_std();
        match operation {
            Operation::SendEvent(message) => {
                self.session.send_telemetry(now_, &message, deadline).0
            }
            Operation::SendEventBatch(messages) => self.refuse(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "IoT Hub takes batches over AMQP and HTTPS, not MQTT: send the {} \
                     messages one by one, or choose Transport::Amqp",
                    messages.len()
                ),
            )),
            Operation::RespondToMethod(response) => {
                self.session.method_response(now_, &response, deadline).0
            }
            Operation::TwinGet => {
                let (op, request_id) = self.session.twin_get(now_, deadline);
                self.twin.insert(request_id, op.0);
                op.0
            }
            Operation::PatchReported(body) => {
                let (op, request_id) = self.session.patch_reported(now_, body, deadline);
                self.twin.insert(request_id, op.0);
                op.0
            }
            Operation::Subscribe(wanted) => match self.session.subscribe(now_, feature(wanted)) {
                Some(op) => op.0,
                None => self.refuse(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("this identity cannot receive {wanted:?}"),
                )),
            },
        }
    }

    fn cancel(&mut self, op: OpId) {
        self.session.cancel(client::OpId(op));
        self.twin.retain(|_, o| *o != op);
    }

    fn settle(&mut self, tag: DeliveryTag, outcome: Outcome) -> Result<()> {
        match outcome {
            Outcome::Complete => {
                // A message of an earlier connection is delivered again by the hub; one
                // completed already needs nothing more.
                if let Some(delivery) = self.deliveries.remove(&tag.0) {
                    self.session.complete(now(), delivery);
                }
                Ok(())
            }
            Outcome::Abandon | Outcome::Reject => Err(Error::new(
                ErrorKind::Unsupported,
                "MQTT cannot abandon/reject; IoT Hub allows only completion there",
            )),
        }
    }

    async fn next(&mut self, reading: bool) -> EngineEvent {
        loop {
            if let Some(event) = self.events.pop_front() {
                return event;
            }
            let now_ = now();
            if reading == self.paused {
                self.paused = !reading;
                if reading {
                    self.session.resume_reading(now_);
                } else {
                    self.session.pause_reading(now_);
                }
            }
            if self.session.poll_timeout().is_some_and(|at| at <= now_) {
                self.session.handle_timeout(now_);
                self.drain_session();
            }
            // One buffered packet at a time, so that the caller can stop reading between
            // any two of them.
            if reading && let Some(conn) = &mut self.conn {
                match read_packet(&mut conn.read_buf, MAX_PACKET_BYTES) {
                    Ok(Some(packet)) => {
                        let _ = self.session.handle_packet(now_, packet);
                        self.drain_session();
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "the hub sent a malformed packet");
                        self.lose();
                        return EngineEvent::Lost(DisconnectReason::ProtocolError);
                    }
                }
            }
            self.encode(now_);
            self.drain_session();
            if !self.events.is_empty() {
                continue;
            }
            let wake = self.session.poll_timeout().map(Instant::from_std);
            let sleep = async move {
                match wake {
                    Some(at) => sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let Some(Conn {
                reader,
                writer,
                read_buf,
                write_buf,
                unflushed,
            }) = &mut self.conn
            else {
                sleep.await;
                continue;
            };
            let writing = !write_buf.is_empty();
            let flushing = !writing && *unflushed;
            // Writes what is encoded (`Some(bytes written)`), then flushes (`None`).
            let output = async {
                if writing {
                    writer.write(write_buf).await.map(Some)
                } else {
                    writer.flush().await.map(|()| None)
                }
            };
            tokio::select! {
                output = output, if writing || flushing => match output {
                    Ok(Some(0)) | Err(_) => {
                        self.lose();
                        return EngineEvent::Lost(DisconnectReason::Network);
                    }
                    Ok(Some(n)) => {
                        write_buf.advance(n);
                        *unflushed = true;
                    }
                    Ok(None) => *unflushed = false,
                },
                read = reader.read_buf(read_buf), if reading => match read {
                    Ok(0) | Err(_) => {
                        self.lose();
                        return EngineEvent::Lost(DisconnectReason::Network);
                    }
                    Ok(_) => {}
                },
                () = sleep => {}
            }
        }
    }

    async fn close(&mut self) {
        self.session.disconnect(now());
        self.encode(now());
        if let Some(mut conn) = self.conn.take() {
            // A hub that stops reading must not hold the close: DISCONNECT is a courtesy.
            let goodbye = async {
                conn.writer.write_all(&conn.write_buf).await?;
                conn.writer.flush().await?;
                conn.writer.shutdown().await
            };
            let _ = tokio::time::timeout(CLOSE_LIMIT, goodbye).await;
        }
        self.deliveries.clear();
        self.session.connection_lost(now());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use azure_iot_protocol::Identity;
    use azure_iot_protocol::mqtt::codec::{ConnAck, Packet};
    use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

    use super::*;
    use crate::Message;
    use crate::engine::Engine as _;

    /// A stream that, like a TLS stream whose socket would block, keeps what is written
    /// until it is flushed.
    struct HoldsUntilFlushed {
        inner: DuplexStream,
        held: Vec<u8>,
    }

    impl AsyncRead for HoldsUntilFlushed {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for HoldsUntilFlushed {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.held.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            while !self.held.is_empty() {
                let this = &mut *self;
                match Pin::new(&mut this.inner).poll_write(cx, &this.held) {
                    Poll::Ready(Ok(n)) => {
                        this.held.drain(..n);
                    }
                    other => return other.map(|r| r.map(drop)),
                }
            }
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    fn engine() -> MqttEngine {
        let session = Client::new(client::Config {
            identity: Identity::device("dev"),
            host: "hub.example".into(),
            model_id: None,
            client_type: "test".into(),
            keep_alive: Duration::from_secs(60),
            max_in_flight: 8,
        });
        let tls = azure_iot_protocol::tls::client_config_builder(rustls::RootCertStore::empty())
            .unwrap()
            .with_no_client_auth();
        let dial = Dial {
            tls: Arc::new(tls),
            host: "hub.example".into(),
            port: 8883,
            transport: crate::Transport::Mqtt,
            proxy: None,
        };
        MqttEngine::new(session, dial)
    }

    /// The next packet the hub side reads.
    async fn packet(hub: &mut DuplexStream, buf: &mut BytesMut) -> Packet {
        loop {
            if let Some(packet) = read_packet(buf, MAX_PACKET_BYTES).unwrap() {
                return packet;
            }
            assert!(hub.read_buf(buf).await.unwrap() > 0, "the client closed");
        }
    }

    /// A stream that holds written bytes until flushed (as TLS does when the socket would
    /// block) still carries CONNECT and every PUBLISH: the engine flushes. Without the flush,
    /// 4 of 1,000 devices connecting at once timed out waiting for CONNACK.
    #[tokio::test(start_paused = true)]
    async fn what_the_engine_writes_is_flushed() {
        let (client_end, mut hub) = tokio::io::duplex(64 * 1024);
        let stream: Connection = Box::new(HoldsUntilFlushed {
            inner: client_end,
            held: Vec::new(),
        });
        let mut engine = engine();
        let hub_side = async {
            let mut buf = BytesMut::new();
            let connect = tokio::time::timeout(Duration::from_secs(30), packet(&mut hub, &mut buf))
                .await
                .expect("CONNECT never left the client");
            assert!(matches!(connect, Packet::Connect(..)), "{connect:?}");
            let mut out = BytesMut::new();
            write_packet(
                &Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)),
                &mut out,
            )
            .unwrap();
            hub.write_all(&out).await.unwrap();
            (hub, buf)
        };
        let (connected, (mut hub, mut buf)) =
            tokio::join!(engine.connect_on(stream, Some("token")), hub_side);
        connected.unwrap();

        let deadline = Instant::now() + Duration::from_secs(60);
        engine.submit(
            Operation::SendEvent(Box::new(Message::new("hello").unwrap())),
            deadline,
        );
        let pump = async {
            loop {
                let _ = engine.next(true).await;
            }
        };
        let publish = tokio::time::timeout(Duration::from_secs(30), packet(&mut hub, &mut buf));
        tokio::select! {
            () = pump => unreachable!(),
            publish = publish => {
                let publish = publish.expect("the PUBLISH never left the client");
                assert!(matches!(publish, Packet::Publish(..)), "{publish:?}");
            }
        }
    }
}
