//! The HTTPS engine: IoT Hub's device REST API, which has no connection.
//!
//! `connect` records the token and checks nothing (the first request does: a wrong key fails
//! that request with [`ErrorKind::Unauthorized`]). Each submitted event or batch becomes one
//! `POST /devices/{id}/messages/events` whose answer is the operation's outcome (requests in
//! flight at once are bounded by the supervisor's `max_pending_operations`). Once the
//! application asks for cloud-to-device messages, `next` polls
//! `GET /devices/{id}/messages/deviceBound` every [`poll interval`](crate::ClientOptions::https_poll_interval)
//! (at once again after a message, until the queue is empty); a received message is locked
//! by the hub under its ETag, which settles it: complete (`DELETE`), reject (`DELETE
//! ?reject`) or abandon (`POST …/abandon`). Twins and direct methods do not exist on the
//! hub's HTTPS API: those operations fail with [`ErrorKind::Unsupported`].
//!
//! All progress lives in the engine (its request futures, the poll timer), so `next` is
//! cancel-safe. With `reading: false` no poll starts (the application's stream is full).

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::time::Duration;

use azure_iot_protocol::Identity;
use azure_iot_protocol::http::{message_from_headers, message_headers};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::{AbortHandle, abortable};
use futures_util::stream::FuturesUnordered;
use tokio::time::{Instant, sleep_until};

use super::{DeliveryTag, EngineEvent, Feature, OpId, Operation, Outcome, Reply};
use crate::Message;
use crate::client::DisconnectReason;
use crate::error::{Error, ErrorKind, Result};
use crate::transport::Dial;

/// The api-version of the device REST calls.
const API_VERSION: &str = "2021-04-12";
/// The content type of a batch of events.
const BATCH: &str = "application/vnd.microsoft.iothub.json";
/// Settlement requests in flight at once, at most; more wait in order.
const MAX_SETTLING: usize = 64;

type Request<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a poll found.
enum Polled {
    /// A message and its lock token.
    Message(Box<Message>, String),
    /// The queue is empty.
    Empty,
}

/// The HTTPS engine of one device or module client.
pub(crate) struct HttpsEngine {
    http: reqwest::Client,
    /// `https://{host}[:{port}]/devices/{id}[/modules/{id}]`.
    base: String,
    token: Option<String>,
    timeout: Duration,
    poll_interval: Duration,
    /// Events and batches on their way, by operation (`None`: withdrawn by its caller).
    sending: FuturesUnordered<Request<(OpId, Option<Result<Reply>>)>>,
    /// How to stop each request on its way: a withdrawn operation's request is dropped at
    /// once, so what is in flight stays within the callers' permits.
    aborts: HashMap<OpId, AbortHandle>,
    /// Answers ready to hand out.
    events: VecDeque<EngineEvent>,
    next_op: OpId,
    /// Whether the application receives cloud-to-device messages.
    receiving: bool,
    /// The poll in flight.
    poll: Option<Request<Result<Polled>>>,
    next_poll: Instant,
    /// Lock tokens of received, unsettled messages.
    locks: HashMap<DeliveryTag, String>,
    next_tag: u64,
    /// Settlements on their way, and those waiting for room.
    settling: FuturesUnordered<Request<()>>,
    settle_queue: VecDeque<(String, Outcome)>,
}

impl HttpsEngine {
    pub(crate) fn new(
        dial: &Dial,
        identity: &Identity,
        timeout: Duration,
        poll_interval: Duration,
        shared: Option<reqwest::Client>,
    ) -> Result<Self> {
        let http = match shared {
            Some(client) => client,
            None => crate::transport::http_client(dial, timeout)?,
        };
        let host = if dial.port == 443 {
            dial.host.clone()
        } else {
            format!("{}:{}", dial.host, dial.port)
        };
        let encode = |id: &str| {
            percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
        };
        let mut base = format!("https://{host}/devices/{}", encode(identity.device_id()));
        if let Some(module) = identity.module_id() {
            base.push_str(&format!("/modules/{}", encode(module)));
        }
        Ok(Self {
            http,
            base,
            token: None,
            timeout,
            poll_interval,
            sending: FuturesUnordered::new(),
            aborts: HashMap::new(),
            events: VecDeque::new(),
            next_op: 0,
            receiving: false,
            poll: None,
            next_poll: Instant::now(),
            locks: HashMap::new(),
            next_tag: 0,
            settling: FuturesUnordered::new(),
            settle_queue: VecDeque::new(),
        })
    }

    fn op(&mut self) -> OpId {
        self.next_op += 1;
        self.next_op
    }

    /// A request to `path` (under the device's base) with the token.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let separator = if path.contains('?') { '&' } else { '?' };
        let url = format!("{}{path}{separator}api-version={API_VERSION}", self.base);
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.header("Authorization", token.as_str()),
            None => request,
        }
    }

    /// `POST …/messages/events`: one event, its properties in headers.
    fn send_event(&self, message: &Message) -> Result<reqwest::RequestBuilder> {
        let mut request = self
            .request(reqwest::Method::POST, "/messages/events")
            .header("Content-Type", "application/octet-stream");
        for (name, value) in message_headers(message) {
            request = request.header(checked_header(&name)?, checked_value(&name, &value)?);
        }
        Ok(request.body(message.body().clone()))
    }

    /// `POST …/messages/events` with a JSON array: each body base64, each property under its
    /// header name.
    fn send_batch(&self, messages: &[Message]) -> Result<reqwest::RequestBuilder> {
        let items: Vec<serde_json::Value> = messages
            .iter()
            .map(|message| {
                let properties: serde_json::Map<String, serde_json::Value> =
                    message_headers(message)
                        .into_iter()
                        .map(|(k, v)| (k, serde_json::Value::String(v)))
                        .collect();
                serde_json::json!({
                    "body": base64::engine::general_purpose::STANDARD.encode(message.body()),
                    "properties": properties,
                })
            })
            .collect();
        let body = serde_json::to_vec(&items)
            .map_err(|e| Error::with_source(ErrorKind::InvalidArgument, "the batch", e))?;
        Ok(self
            .request(reqwest::Method::POST, "/messages/events")
            .header("Content-Type", BATCH)
            .body(body))
    }

    /// Answers `op` at once.
    fn answer(&mut self, op: OpId, result: Result<Reply>) -> OpId {
        self.events.push_back(EngineEvent::Done(op, result));
        op
    }

    /// Starts the request for `op`, answered when the hub answers.
    fn start(&mut self, op: OpId, request: Result<reqwest::RequestBuilder>, what: &'static str) {
        let request = match request {
            Ok(request) => request,
            Err(e) => {
                self.answer(op, Err(e));
                return;
            }
        };
        let (sent, abort) = abortable(async move {
            match request.send().await {
                Ok(response) => judge(response, what).await.map(|_| Reply::Done),
                Err(e) => Err(transport_error(what, e)),
            }
        });
        self.aborts.insert(op, abort);
        self.sending
            .push(Box::pin(async move { (op, sent.await.ok()) }));
    }

    /// The poll request.
    fn start_poll(&mut self) {
        let request = self.request(reqwest::Method::GET, "/messages/deviceBound");
        self.poll = Some(Box::pin(async move {
            let what = "receiving cloud-to-device messages";
            let response = request.send().await.map_err(|e| transport_error(what, e))?;
            if response.status() == reqwest::StatusCode::NO_CONTENT {
                return Ok(Polled::Empty);
            }
            let headers: Vec<(String, String)> = response
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect();
            let body = judge(response, what).await?;
            let message =
                message_from_headers(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())), body)
                    .map_err(|e| Error::with_source(ErrorKind::Protocol, what, e))?;
            let lock = message
                .system_properties()
                .lock_token
                .clone()
                .ok_or_else(|| Error::new(ErrorKind::Protocol, format!("{what}: no ETag")))?;
            Ok(Polled::Message(Box::new(message), lock))
        }));
    }

    /// Starts waiting settlements while there is room.
    fn start_settlements(&mut self) {
        while self.settling.len() < MAX_SETTLING {
            let Some((lock, outcome)) = self.settle_queue.pop_front() else {
                return;
            };
            let encoded =
                percent_encoding::utf8_percent_encode(&lock, percent_encoding::NON_ALPHANUMERIC)
                    .to_string();
            let path = format!("/messages/deviceBound/{encoded}");
            let request = match outcome {
                Outcome::Complete => self.request(reqwest::Method::DELETE, &path),
                Outcome::Reject => self.request(reqwest::Method::DELETE, &format!("{path}?reject")),
                Outcome::Abandon => self.request(reqwest::Method::POST, &format!("{path}/abandon")),
            }
            .header("If-Match", format!("\"{lock}\""));
            self.settling.push(Box::pin(async move {
                // A settlement the hub refuses (the lock expired) leaves the message to the
                // hub, which delivers it again: nothing for the application to do.
                match request.send().await {
                    Ok(response) if response.status().is_success() => {}
                    Ok(response) => {
                        tracing::debug!(status = %response.status(), "a cloud-to-device settlement was refused");
                    }
                    Err(e) => tracing::debug!(error = %e.without_url(), "a cloud-to-device settlement failed"),
                }
            }));
        }
    }
}

/// A header name the HTTP stack accepts.
fn checked_header(name: &str) -> Result<reqwest::header::HeaderName> {
    reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        Error::new(
            ErrorKind::InvalidArgument,
            format!("the property name {name:?} cannot travel in an HTTP header"),
        )
    })
}

/// A header value the HTTP stack accepts (visible ASCII).
fn checked_value(name: &str, value: &str) -> Result<reqwest::header::HeaderValue> {
    reqwest::header::HeaderValue::from_str(value).map_err(|_| {
        Error::new(
            ErrorKind::InvalidArgument,
            format!("the value of {name} cannot travel in an HTTP header (visible ASCII only)"),
        )
    })
}

/// The body of a successful answer, or the error its status says.
async fn judge(response: reqwest::Response, what: &str) -> Result<Bytes> {
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .map_err(|e| transport_error(what, e))?;
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let message = v["Message"].as_str()?;
            Some(
                message
                    .strip_prefix("ErrorCode:")?
                    .split(';')
                    .next()?
                    .to_owned(),
            )
        });
    let kind = match status {
        401 => ErrorKind::Unauthorized,
        400 | 413 => ErrorKind::InvalidArgument,
        403 | 404 | 412 => ErrorKind::Refused,
        _ => ErrorKind::Status(status),
    };
    let detail = code.map(|c| format!(" ({c})")).unwrap_or_default();
    Err(Error::new(kind, format!("{what}: status {status}{detail}")))
}

/// A request that got no answer (the URL, which names the device, is left out).
fn transport_error(what: &str, e: reqwest::Error) -> Error {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_connect() {
        ErrorKind::Connect
    } else {
        ErrorKind::Disconnected
    };
    Error::with_source(kind, what.to_owned(), e.without_url())
}

impl super::Engine for HttpsEngine {
    async fn connect(&mut self, password: Option<&str>) -> Result<()> {
        self.token = password.filter(|p| !p.is_empty()).map(str::to_owned);
        Ok(())
    }

    fn submit(&mut self, operation: Operation, deadline: Instant) -> OpId {
        let op = self.op();
        if deadline <= Instant::now() {
            return self.answer(
                op,
                Err(Error::new(
                    ErrorKind::Timeout,
                    "the operation's deadline passed",
                )),
            );
        }
        match operation {
            Operation::SendEvent(message) => {
                let request = self.send_event(&message);
                self.start(op, request, "sending the event");
            }
            Operation::SendEventBatch(messages) => {
                let request = self.send_batch(&messages);
                self.start(op, request, "sending the batch");
            }
            Operation::Subscribe(Feature::CloudToDevice) => {
                self.receiving = true;
                self.next_poll = Instant::now();
                self.answer(op, Ok(Reply::Done));
            }
            Operation::TwinGet | Operation::PatchReported(_) => {
                self.answer(op, Err(unsupported("device twins")));
            }
            Operation::Subscribe(Feature::DesiredPatches) => {
                self.answer(op, Err(unsupported("desired-property patches")));
            }
            Operation::Subscribe(Feature::Methods) | Operation::RespondToMethod(_) => {
                self.answer(op, Err(unsupported("direct methods")));
            }
        }
        op
    }

    fn cancel(&mut self, op: OpId) {
        if let Some(abort) = self.aborts.remove(&op) {
            abort.abort();
        }
        self.events
            .retain(|e| !matches!(e, EngineEvent::Done(done, _) if *done == op));
    }

    fn settle(&mut self, tag: DeliveryTag, outcome: Outcome) -> Result<()> {
        let lock = self.locks.remove(&tag).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArgument,
                "this cloud-to-device message was settled already",
            )
        })?;
        self.settle_queue.push_back((lock, outcome));
        self.start_settlements();
        Ok(())
    }

    async fn next(&mut self, reading: bool) -> EngineEvent {
        loop {
            if let Some(event) = self.events.pop_front() {
                return event;
            }
            // No poll while settlements wait for room: each poll can add one.
            let polling =
                self.receiving && reading && self.poll.is_none() && self.settle_queue.is_empty();
            if polling && Instant::now() >= self.next_poll {
                self.start_poll();
                continue;
            }
            let next_poll = self.next_poll;
            tokio::select! {
                Some((op, result)) = self.sending.next(), if !self.sending.is_empty() => {
                    self.aborts.remove(&op);
                    if let Some(result) = result {
                        self.events.push_back(EngineEvent::Done(op, result));
                    }
                }
                Some(()) = self.settling.next(), if !self.settling.is_empty() => {
                    self.start_settlements();
                }
                polled = async {
                    match self.poll.as_mut() {
                        Some(poll) => poll.await,
                        None => std::future::pending().await,
                    }
                }, if self.poll.is_some() => {
                    self.poll = None;
                    match polled {
                        Ok(Polled::Message(message, lock)) => {
                            self.next_tag += 1;
                            let tag = DeliveryTag(self.next_tag);
                            self.locks.insert(tag, lock);
                            // More may be waiting: poll again at once.
                            self.next_poll = Instant::now();
                            self.events.push_back(EngineEvent::CloudToDevice(message, tag));
                        }
                        Ok(Polled::Empty) => self.next_poll = Instant::now() + self.poll_interval,
                        Err(e) => {
                            tracing::debug!(error = %e, "polling for cloud-to-device messages failed");
                            self.next_poll = Instant::now() + self.poll_interval;
                            // The hub refuses this device (its token expired or was revoked,
                            // the device was disabled or deleted): say so, as a lost
                            // connection would, so that the application's connection state
                            // shows it; the supervisor "reconnects" with a fresh token.
                            let reason = match e.kind() {
                                ErrorKind::Unauthorized => Some(DisconnectReason::Unauthorized),
                                ErrorKind::Refused => Some(DisconnectReason::Refused),
                                _ => None,
                            };
                            if let Some(reason) = reason {
                                self.events.push_back(EngineEvent::Lost(reason));
                            }
                        }
                    }
                }
                () = sleep_until(next_poll), if polling => {}
                () = std::future::pending::<()>(),
                    if self.sending.is_empty() && self.settling.is_empty() && self.poll.is_none() && !polling => {}
            }
        }
    }

    async fn close(&mut self) {
        // Nothing is open. Settlements the application made still reach the hub (otherwise it
        // would deliver those messages again), all within one operation timeout.
        let limit = self.timeout;
        let drain = async {
            loop {
                self.start_settlements();
                if self.settling.next().await.is_none() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(limit, drain).await;
        self.settle_queue.clear();
        self.settling = FuturesUnordered::new();
        self.poll = None;
        self.receiving = false;
    }

    async fn renew(&mut self, password: Option<&str>) -> Result<bool> {
        // Nothing to reconnect: the next request carries the new token, and the locks of
        // received messages hold.
        self.connect(password).await.map(|()| true)
    }
}

fn unsupported(what: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!("IoT Hub has no {what} over HTTPS; use MQTT or AMQP"),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use super::*;
    use crate::engine::Engine as _;

    /// An engine pointed at a server that accepts connections and never answers.
    async fn engine_on_a_silent_server() -> (HttpsEngine, tokio::net::TcpListener) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tls = azure_iot_protocol::tls::client_config_builder(rustls::RootCertStore::empty())
            .unwrap()
            .with_no_client_auth();
        let dial = Dial {
            tls: Arc::new(tls),
            host: "127.0.0.1".into(),
            port,
            transport: crate::Transport::Https,
            proxy: None,
        };
        let engine = HttpsEngine::new(
            &dial,
            &Identity::device("dev"),
            Duration::from_secs(60),
            Duration::from_secs(10),
            None,
        )
        .unwrap();
        (engine, listener)
    }

    fn event(text: &str) -> Operation {
        Operation::SendEvent(Box::new(Message::new(text.to_owned()).unwrap()))
    }

    /// A withdrawn operation's request is dropped at once: what stays in flight is what
    /// callers still wait for (the supervisor's permits bound those), and its answer never
    /// comes.
    #[tokio::test]
    async fn a_withdrawn_request_leaves_at_once() {
        let (mut engine, _server) = engine_on_a_silent_server().await;
        engine
            .connect(Some("SharedAccessSignature sr=x&sig=y&se=1"))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let ops: Vec<OpId> = (0..50)
            .map(|i| engine.submit(event(&format!("m{i}")), deadline))
            .collect();
        for op in &ops[1..] {
            engine.cancel(*op);
        }
        assert_eq!(engine.aborts.len(), 1);
        // Let the engine see the aborted requests end; the silent server answers nothing.
        let _ = tokio::time::timeout(Duration::from_millis(200), engine.next(true)).await;
        assert_eq!(
            engine.sending.len(),
            1,
            "only the request still wanted is in flight"
        );
        assert!(
            engine.events.is_empty(),
            "no answer for a withdrawn operation"
        );
    }

    /// Over HTTPS there are no twins or methods: those operations end at once, Unsupported.
    #[tokio::test]
    async fn twins_and_methods_are_unsupported_at_once() {
        let (mut engine, _server) = engine_on_a_silent_server().await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let op = engine.submit(Operation::TwinGet, deadline);
        match engine.next(true).await {
            EngineEvent::Done(done, Err(e)) => {
                assert_eq!(done, op);
                assert_eq!(e.kind(), ErrorKind::Unsupported);
            }
            other => panic!("expected Unsupported, got {other:?}"),
        }
        assert!(engine.sending.is_empty());
    }
}
