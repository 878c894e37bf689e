//! A device's *unit*: the task that owns one device's AMQP session and links on a shared
//! connection, doing what its engine asks and reporting what arrives.
//!
//! * Telemetry goes on the events sender link (attached at start), each send awaiting its
//!   disposition concurrently (`send_batchable`), so many can be in flight; a batch is one
//!   transfer with message format `0x80013700`.
//! * Links for cloud-to-device messages, the twin and methods are attached when the feature
//!   is first wanted (and again on every new connection for the features wanted before).
//! * Twin requests are correlated with their answers by correlation id; an answer without
//!   one is a desired-properties patch.
//! * Method calls keep their correlation id (a uuid) until answered: the answer carries it
//!   back as it came.
//!
//! The unit ends when its engine drops the command channel or closes it, or when a link
//! fails (the session or the connection ended, the hub detached a link): it reports
//! [`EngineEvent::Lost`] first when it knows why.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;

use azure_iot_core::Message;
use azure_iot_core::method::{MethodRequest, MethodResponse};
use azure_iot_protocol::Identity;
use azure_iot_protocol::amqp::device::{
    self as twin, annotation_number, data_bytes, method_name, method_response, twin_request,
};
use azure_iot_protocol::amqp::{Address, AmqpMessage, BATCH_FORMAT, from_amqp};
use bytes::Bytes;
use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::{Receiver, Sender};
use fe2o3_amqp_types::definitions::{Fields, ReceiverSettleMode, SenderSettleMode};
use fe2o3_amqp_types::messaging::{Body, MessageId, Outcome as AmqpOutcome};
use fe2o3_amqp_types::primitives::{Symbol, Value};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::client::{DisconnectReason, TwinAnswer};
use crate::engine::{DeliveryTag, EngineEvent, Feature, OpId, Outcome, Reply};
use crate::error::{Error, ErrorKind, Result};

/// Events a unit may have waiting for its engine; beyond that it waits (and reads nothing
/// more from the hub: back-pressure while the application's streams are full).
const EVENT_QUEUE: usize = 16;

/// Commands a unit may have waiting; beyond that its engine keeps them (operations stay
/// unhanded, settlements wait in the engine) until the unit makes room.
const COMMAND_QUEUE: usize = 64;

/// Method calls a unit remembers until answered; the oldest is forgotten beyond that (its
/// answer is then refused; the hub has long timed the call out).
const MAX_OPEN_CALLS: usize = 1024;

/// The twin and methods API version the links announce (as the Node SDK does).
const API_VERSION: &str = "2021-04-12";

/// What an engine asks its unit.
pub(crate) enum UnitCommand {
    /// Send telemetry (one message, or a batch in one transfer).
    Send {
        op: OpId,
        message: Box<AmqpMessage>,
        batch: bool,
        deadline: Instant,
    },
    /// A twin request.
    Twin {
        op: OpId,
        request: TwinRequest,
        deadline: Instant,
    },
    /// Answer a method call.
    MethodAnswer {
        op: OpId,
        response: MethodResponse,
        deadline: Instant,
    },
    /// Start receiving a feature.
    Subscribe { op: OpId, feature: Feature },
    /// Settle a cloud-to-device message.
    Settle { tag: DeliveryTag, outcome: Outcome },
    /// End the session and links, then answer.
    Close(oneshot::Sender<()>),
}

/// A twin request's kind.
#[derive(Debug, Clone)]
pub(crate) enum TwinRequest {
    /// Read the twin.
    Get,
    /// Patch reported properties.
    PatchReported(Bytes),
}

/// A unit's handles, for its engine.
pub(crate) struct UnitHandle {
    pub(crate) commands: mpsc::Sender<UnitCommand>,
    pub(crate) events: mpsc::Receiver<EngineEvent>,
}

/// Everything a unit needs to start.
pub(crate) struct UnitConfig {
    /// Who the device is.
    pub(crate) identity: Identity,
    /// The product string every link announces (`com.microsoft:client-version`).
    pub(crate) client_version: String,
    /// Set into the high bits of delivery tags: tags of an earlier connection never match.
    pub(crate) generation: u64,
    /// The features to receive from the start (those wanted before a reconnect).
    pub(crate) features: Vec<Feature>,
    /// Whether to confirm the hub accepts the device before reporting success: needed when
    /// no put-token answer said so (an X.509 device, authenticated by its TLS certificate,
    /// whose links the hub attaches and then detaches if it refuses the certificate).
    pub(crate) confirm: bool,
}

/// A delivery as every link of a unit receives it.
type Delivery = fe2o3_amqp::link::delivery::Delivery<Body<Value>>;

type Settling = Pin<Box<dyn Future<Output = (OpId, Result<Reply>)> + Send>>;

/// The twin link pair and its open requests.
struct TwinLinks {
    requests: Sender,
    answers: Receiver,
    /// Correlation id → the request's operation (`None`: the unit's own subscription).
    open: HashMap<String, Option<OpId>>,
}

/// The methods link pair.
struct MethodLinks {
    calls: Receiver,
    answers: Sender,
    /// Request id → the call's correlation id, for the calls not answered yet.
    open: HashMap<String, MessageId>,
    order: VecDeque<String>,
}

struct Unit {
    identity: Identity,
    client_version: String,
    session: SessionHandle<()>,
    telemetry: Sender,
    // The links a device attaches on first use are boxed: inline they made every unit (and
    // a pool holds thousands) about 3 KiB larger, for links most devices never attach.
    c2d: Option<Box<Receiver>>,
    twin: Option<Box<TwinLinks>>,
    desired: bool,
    methods: Option<Box<MethodLinks>>,
    deliveries: HashMap<DeliveryTag, DeliveryInfo>,
    next_tag: u64,
    next_correlation: u64,
    in_flight: FuturesUnordered<Settling>,
    events: mpsc::Sender<EngineEvent>,
}

/// Why a link operation failed, as the client's error: the hub's refusal of the device's
/// authorization is `Unauthorized`, anything else a lost connection.
fn link_error(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    let detail = format!("{e:?}").to_ascii_lowercase();
    if detail.contains("unauthorized") {
        Error::with_source(
            ErrorKind::Unauthorized,
            format!("{what}: the hub refused"),
            e,
        )
    } else if detail.contains("not-found") || detail.contains("notfound") {
        Error::with_source(
            ErrorKind::Refused,
            format!("{what}: the hub does not know it"),
            e,
        )
    } else {
        Error::with_source(ErrorKind::Disconnected, what.to_owned(), e)
    }
}

/// Link properties: the client version, and for the twin and methods the API version and
/// a channel correlation id (`twin:…` / `methods:…`, the same on both links of a pair).
fn link_properties(client_version: &str, channel: Option<&str>) -> Fields {
    let mut fields = Fields::default();
    fields.insert(
        Symbol::from("com.microsoft:client-version"),
        Value::String(client_version.to_owned()),
    );
    if let Some(channel) = channel {
        fields.insert(
            Symbol::from("com.microsoft:api-version"),
            Value::String(API_VERSION.to_owned()),
        );
        fields.insert(
            Symbol::from("com.microsoft:channel-correlation-id"),
            Value::String(channel.to_owned()),
        );
    }
    fields
}

/// Starts a unit on `session`: attaches the telemetry link and the links of
/// `config.features`, then serves until the engine or the links go.
pub(crate) async fn start(session: SessionHandle<()>, config: UnitConfig) -> Result<UnitHandle> {
    let mut session = session;
    let address = Address::Events {
        device_id: config.identity.device_id().to_owned(),
        module_id: config.identity.module_id().map(str::to_owned),
    }
    .to_string();
    let telemetry = Sender::builder()
        .name(format!("events-{}", config.identity.client_id()))
        .target(address.as_str())
        .properties(link_properties(&config.client_version, None))
        .attach(&mut session)
        .await
        .map_err(|e| link_error("attaching the telemetry link", e))?;
    let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
    let mut unit = Unit {
        identity: config.identity,
        client_version: config.client_version,
        session,
        telemetry,
        c2d: None,
        twin: None,
        desired: false,
        methods: None,
        deliveries: HashMap::new(),
        next_tag: config.generation << 40,
        next_correlation: 0,
        in_flight: FuturesUnordered::new(),
        events,
    };
    if config.confirm {
        unit.confirm().await?;
    }
    for feature in config.features {
        unit.attach(feature).await?;
    }
    let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    tokio::spawn(unit.run(commands_rx));
    Ok(UnitHandle {
        commands,
        events: events_rx,
    })
}

/// A receiver's next delivery, or never when there is no receiver. The receive future is
/// boxed: inline, it would make every unit (thousands on a pool) several KiB larger for links
/// most devices never attach.
async fn next_on(
    receiver: Option<&mut Receiver>,
) -> std::result::Result<Delivery, fe2o3_amqp::link::RecvError> {
    match receiver {
        Some(receiver) => Box::pin(receiver.recv::<Body<Value>>()).await,
        None => std::future::pending().await,
    }
}

impl Unit {
    async fn run(mut self, mut commands: mpsc::Receiver<UnitCommand>) {
        let lost = loop {
            let settling = !self.in_flight.is_empty();
            tokio::select! {
                command = commands.recv() => match command {
                    None => break None,
                    Some(UnitCommand::Close(done)) => {
                        Box::pin(self.close()).await;
                        let _ = done.send(());
                        return;
                    }
                    Some(command) => {
                        if let Err(e) = Box::pin(self.handle(command)).await {
                            break Some(e);
                        }
                    }
                },
                Some((op, result)) = self.in_flight.next(), if settling => {
                    if self.report(EngineEvent::Done(op, result)).await.is_err() {
                        break None;
                    }
                }
                delivery = next_on(self.c2d.as_deref_mut()) => match delivery {
                    Ok(delivery) => {
                        if let Err(e) = Box::pin(self.cloud_to_device(delivery)).await {
                            break Some(e);
                        }
                    }
                    Err(e) => break Some(link_error("the cloud-to-device link ended", e)),
                },
                answer = next_on(self.twin.as_mut().map(|t| &mut t.answers)) => match answer {
                    Ok(answer) => {
                        if let Err(e) = Box::pin(self.twin_answer(answer)).await {
                            break Some(e);
                        }
                    }
                    Err(e) => break Some(link_error("the twin link ended", e)),
                },
                call = next_on(self.methods.as_mut().map(|m| &mut m.calls)) => match call {
                    Ok(call) => {
                        if let Err(e) = Box::pin(self.method_call(call)).await {
                            break Some(e);
                        }
                    }
                    Err(e) => break Some(link_error("the methods link ended", e)),
                },
                detached = self.telemetry.on_detach() => {
                    break Some(link_error("the telemetry link ended", detached));
                }
            }
        };
        if let Some(error) = lost {
            tracing::debug!(client_id = %self.identity.client_id(), error = %error, "AMQP unit ended");
            let reason = match error.kind() {
                ErrorKind::Unauthorized => DisconnectReason::Unauthorized,
                _ => DisconnectReason::Network,
            };
            let _ = self.events.send(EngineEvent::Lost(reason)).await;
        }
    }

    /// Hands an event to the engine; `Err` when the engine is gone. (The future does not
    /// borrow the unit, which is not `Sync`.)
    fn report(
        &self,
        event: EngineEvent,
    ) -> impl Future<Output = std::result::Result<(), ()>> + Send + 'static {
        let events = self.events.clone();
        async move { events.send(event).await.map_err(|_| ()) }
    }

    /// Does what the engine asks; `Err` when the connection failed doing it.
    async fn handle(&mut self, command: UnitCommand) -> Result<()> {
        match command {
            UnitCommand::Send {
                op,
                message,
                batch,
                deadline,
            } => {
                if deadline <= Instant::now() {
                    return self.expired(op).await;
                }
                let mut sendable =
                    fe2o3_amqp::link::delivery::Sendable::builder().message(*message);
                if batch {
                    sendable = sendable.message_format(BATCH_FORMAT);
                }
                let settlement = self
                    .telemetry
                    .send_batchable(sendable.build())
                    .await
                    .map_err(|e| link_error("sending telemetry", e))?;
                self.in_flight.push(Box::pin(async move {
                    let result = match settlement.await {
                        Ok(AmqpOutcome::Accepted(_)) => Ok(Reply::Done),
                        Ok(other) => Err(refused_outcome("the event", &other)),
                        Err(e) => Err(link_error("sending telemetry", e)),
                    };
                    (op, result)
                }));
            }
            UnitCommand::Twin {
                op,
                request,
                deadline,
            } => {
                if deadline <= Instant::now() {
                    return self.expired(op).await;
                }
                Box::pin(self.attach_twin()).await?;
                let (operation, resource, body) = match &request {
                    TwinRequest::Get => ("GET", None, Bytes::new()),
                    TwinRequest::PatchReported(body) => {
                        ("PATCH", Some(twin::REPORTED), body.clone())
                    }
                };
                Box::pin(self.twin_send(Some(op), operation, resource, &body)).await?;
            }
            UnitCommand::MethodAnswer {
                op,
                response,
                deadline,
            } => {
                if deadline <= Instant::now() {
                    return self.expired(op).await;
                }
                let result = Box::pin(self.answer_method(response)).await?;
                if self.report(EngineEvent::Done(op, result)).await.is_err() {
                    return Ok(());
                }
            }
            UnitCommand::Subscribe { op, feature } => {
                Box::pin(self.attach(feature)).await?;
                let _ = self.report(EngineEvent::Done(op, Ok(Reply::Done))).await;
            }
            UnitCommand::Settle { tag, outcome } => Box::pin(self.settle(tag, outcome)).await?,
            UnitCommand::Close(_) => {}
        }
        Ok(())
    }

    async fn expired(&mut self, op: OpId) -> Result<()> {
        let _ = self
            .report(EngineEvent::Done(
                op,
                Err(Error::new(
                    ErrorKind::Timeout,
                    "the operation timed out before it could be sent",
                )),
            ))
            .await;
        Ok(())
    }

    /// Attaches what `feature` needs (nothing if it is attached already).
    async fn attach(&mut self, feature: Feature) -> Result<()> {
        match feature {
            Feature::CloudToDevice if self.c2d.is_none() => {
                let address = Address::DeviceBound {
                    device_id: self.identity.device_id().to_owned(),
                    module_id: self.identity.module_id().map(str::to_owned),
                }
                .to_string();
                let receiver = Receiver::builder()
                    .name(format!("c2d-{}", self.identity.client_id()))
                    .source(address.as_str())
                    .receiver_settle_mode(ReceiverSettleMode::First)
                    .auto_accept(false)
                    .properties(link_properties(&self.client_version, None))
                    .attach(&mut self.session)
                    .await
                    .map_err(|e| link_error("attaching the cloud-to-device link", e))?;
                self.c2d = Some(Box::new(receiver));
            }
            Feature::DesiredPatches if !self.desired => {
                self.attach_twin().await?;
                self.twin_send(None, "PUT", Some(twin::DESIRED_NOTIFICATIONS), b"")
                    .await?;
                self.desired = true;
            }
            Feature::Methods if self.methods.is_none() => {
                let address = Address::Methods {
                    device_id: self.identity.device_id().to_owned(),
                    module_id: self.identity.module_id().map(str::to_owned),
                };
                let (calls, answers) = self.attach_pair(&address, "methods").await?;
                self.methods = Some(Box::new(MethodLinks {
                    calls,
                    answers,
                    open: HashMap::new(),
                    order: VecDeque::new(),
                }));
            }
            _ => {}
        }
        Ok(())
    }

    /// Reads the twin once and waits for the answer: a hub that refuses the device detaches
    /// the links instead (`Unauthorized`).
    async fn confirm(&mut self) -> Result<()> {
        self.attach_twin().await?;
        self.twin_send(None, "GET", None, b"").await?;
        let Some(links) = self.twin.as_mut() else {
            return Err(Error::new(ErrorKind::Disconnected, "the twin link is gone"));
        };
        let answer = links
            .answers
            .recv::<Body<Value>>()
            .await
            .map_err(|e| link_error("the hub's answer to the device", e))?;
        let _ = links.answers.accept(&answer).await;
        links.open.clear();
        match annotation_number(answer.message(), twin::STATUS) {
            Some(401 | 403) => Err(Error::new(
                ErrorKind::Unauthorized,
                "the hub refused the device's certificate",
            )),
            _ => Ok(()),
        }
    }

    /// Attaches a request/response link pair on `address` (the twin's, the methods'): the
    /// receiver first (what the hub sends only goes out once it has somewhere to go), then
    /// the sender (pre-settled: the answer on the other link is what counts), both with the
    /// channel correlation id `{kind}:{uuid}` the SDKs give the pair.
    async fn attach_pair(&mut self, address: &Address, kind: &str) -> Result<(Receiver, Sender)> {
        let address = address.to_string();
        let channel = format!("{kind}:{}", uuid::Uuid::new_v4());
        let properties = link_properties(&self.client_version, Some(&channel));
        let what = format!("attaching the {kind} links");
        let client_id = self.identity.client_id();
        let receiver = Receiver::builder()
            .name(format!("{kind}-receiver-{client_id}"))
            .source(address.as_str())
            .target(address.as_str())
            .receiver_settle_mode(ReceiverSettleMode::First)
            .properties(properties.clone())
            .attach(&mut self.session)
            .await
            .map_err(|e| link_error(&what, e))?;
        let sender = Sender::builder()
            .name(format!("{kind}-sender-{client_id}"))
            .source(address.as_str())
            .target(address.as_str())
            .sender_settle_mode(SenderSettleMode::Settled)
            .properties(properties)
            .attach(&mut self.session)
            .await
            .map_err(|e| link_error(&what, e))?;
        Ok((receiver, sender))
    }

    /// Attaches the twin link pair if it is not attached.
    async fn attach_twin(&mut self) -> Result<()> {
        if self.twin.is_some() {
            return Ok(());
        }
        let address = Address::Twin {
            device_id: self.identity.device_id().to_owned(),
            module_id: self.identity.module_id().map(str::to_owned),
        };
        let (answers, requests) = self.attach_pair(&address, "twin").await?;
        self.twin = Some(Box::new(TwinLinks {
            requests,
            answers,
            open: HashMap::new(),
        }));
        Ok(())
    }

    /// Sends a twin request; its answer completes `op` (or, for `None`, confirms the
    /// desired-patch subscription).
    async fn twin_send(
        &mut self,
        op: Option<OpId>,
        operation: &str,
        resource: Option<&str>,
        body: &[u8],
    ) -> Result<()> {
        self.next_correlation += 1;
        let correlation = format!("twin-{}", self.next_correlation);
        let Some(links) = self.twin.as_mut() else {
            return Err(Error::new(ErrorKind::Disconnected, "the twin link is gone"));
        };
        let request = twin_request(
            MessageId::String(correlation.clone()),
            operation,
            resource,
            body,
        );
        links.open.insert(correlation, op);
        links
            .requests
            .send(request)
            .await
            .map_err(|e| link_error("sending a twin request", e))?;
        Ok(())
    }

    /// A message on the twin receiver link: an answer, or a desired patch.
    async fn twin_answer(&mut self, delivery: Delivery) -> Result<()> {
        let Some(links) = self.twin.as_mut() else {
            return Ok(());
        };
        let _ = links.answers.accept(&delivery).await;
        let message = delivery.into_message();
        let correlation = message
            .properties
            .as_ref()
            .and_then(|p| p.correlation_id.as_ref())
            .map(azure_iot_protocol::amqp::message_id_text);
        let body = Bytes::from(data_bytes(&message));
        let event = match correlation {
            Some(id) => match links.open.remove(&id) {
                Some(Some(op)) => {
                    let status = annotation_number(&message, twin::STATUS).unwrap_or(200);
                    EngineEvent::Done(
                        op,
                        Ok(Reply::Twin(TwinAnswer {
                            status: u16::try_from(status).unwrap_or(500),
                            version: annotation_number(&message, twin::VERSION),
                            body,
                        })),
                    )
                }
                // The subscription's own answer, or an answer nobody waits for.
                _ => return Ok(()),
            },
            None => {
                let version = annotation_number(&message, twin::VERSION).or_else(|| {
                    serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()?
                        .get("$version")?
                        .as_i64()
                });
                let Some(version) = version else {
                    tracing::debug!("a desired patch without a version; ignored");
                    return Ok(());
                };
                EngineEvent::DesiredPatch { version, body }
            }
        };
        let _ = self.report(event).await;
        Ok(())
    }

    /// A method call: remembered until answered, then handed to the engine.
    async fn method_call(&mut self, delivery: Delivery) -> Result<()> {
        let Some(links) = self.methods.as_mut() else {
            return Ok(());
        };
        let _ = links.calls.accept(&delivery).await;
        let message = delivery.into_message();
        let correlation = message
            .properties
            .as_ref()
            .and_then(|p| p.correlation_id.clone());
        let (Some(correlation), Some(name)) = (correlation, method_name(&message)) else {
            tracing::debug!("a method call without a correlation id or name; ignored");
            return Ok(());
        };
        let request_id = azure_iot_protocol::amqp::message_id_text(&correlation);
        let request =
            match MethodRequest::from_wire(name, request_id.clone(), &data_bytes(&message)) {
                Ok(request) => request,
                Err(e) => {
                    tracing::debug!(error = %e, "an unreadable method call; ignored");
                    return Ok(());
                }
            };
        if links.open.insert(request_id.clone(), correlation).is_none() {
            links.order.push_back(request_id);
        }
        while links.order.len() > MAX_OPEN_CALLS {
            if let Some(oldest) = links.order.pop_front() {
                links.open.remove(&oldest);
            }
        }
        let _ = self.report(EngineEvent::Method(request)).await;
        Ok(())
    }

    /// Sends a method answer; the operation's result (a call this connection does not know
    /// is refused without sending anything). `Err` when the link failed.
    async fn answer_method(&mut self, response: MethodResponse) -> Result<Result<Reply>> {
        let Some(links) = self.methods.as_mut() else {
            return Ok(Err(unknown_call(&response)));
        };
        let Some(correlation) = links.open.remove(&response.request_id) else {
            return Ok(Err(unknown_call(&response)));
        };
        links.order.retain(|id| *id != response.request_id);
        let payload = serde_json::to_vec(&response.payload).unwrap_or_else(|_| b"null".to_vec());
        let answer = method_response(correlation, response.status, payload);
        links
            .answers
            .send(answer)
            .await
            .map_err(|e| link_error("sending a method answer", e))?;
        Ok(Ok(Reply::Done))
    }

    /// A cloud-to-device message: mapped, remembered by tag, handed to the engine.
    async fn cloud_to_device(&mut self, delivery: Delivery) -> Result<()> {
        let Some(receiver) = self.c2d.as_mut() else {
            return Ok(());
        };
        let (info, message) = delivery.into_parts();
        let message: Message = match from_amqp(&message) {
            Ok(message) => message,
            Err(e) => {
                // Not a message this client can represent: the hub dead-letters it.
                tracing::warn!(error = %e, "rejecting a cloud-to-device message that cannot be read");
                let _ = receiver.reject(info, None).await;
                return Ok(());
            }
        };
        self.next_tag += 1;
        let tag = DeliveryTag(self.next_tag);
        self.deliveries.insert(tag, info);
        let _ = self
            .report(EngineEvent::CloudToDevice(Box::new(message), tag))
            .await;
        Ok(())
    }

    /// Settles a cloud-to-device message (nothing if its tag is unknown: settled already).
    async fn settle(&mut self, tag: DeliveryTag, outcome: Outcome) -> Result<()> {
        let (Some(receiver), Some(info)) = (self.c2d.as_mut(), self.deliveries.remove(&tag)) else {
            return Ok(());
        };
        let settled = match outcome {
            Outcome::Complete => receiver.accept(info).await,
            Outcome::Abandon => receiver.release(info).await,
            Outcome::Reject => receiver.reject(info, None).await,
        };
        settled.map_err(|e| link_error("settling a cloud-to-device message", e))
    }

    /// Detaches every link and ends the session.
    async fn close(mut self) {
        if let Some(links) = self.twin.take() {
            let _ = links.requests.close().await;
            let _ = links.answers.close().await;
        }
        if let Some(links) = self.methods.take() {
            let _ = links.calls.close().await;
            let _ = links.answers.close().await;
        }
        if let Some(receiver) = self.c2d.take() {
            let _ = receiver.close().await;
        }
        let _ = self.telemetry.close().await;
        let _ = self.session.end().await;
    }
}

/// The error for a send whose outcome was not `accepted`.
fn refused_outcome(what: &str, outcome: &AmqpOutcome) -> Error {
    let detail = match outcome {
        AmqpOutcome::Rejected(rejected) => rejected
            .error
            .as_ref()
            .map(|e| {
                format!(
                    "{:?}: {}",
                    e.condition,
                    e.description.as_deref().unwrap_or("")
                )
            })
            .unwrap_or_else(|| "rejected".to_owned()),
        AmqpOutcome::Released(_) => "released".to_owned(),
        AmqpOutcome::Modified(_) => "modified".to_owned(),
        AmqpOutcome::Accepted(_) => "accepted".to_owned(),
        #[allow(unreachable_patterns)]
        _ => "an unexpected outcome".to_owned(),
    };
    let kind = if detail.to_ascii_lowercase().contains("unauthorized") {
        ErrorKind::Unauthorized
    } else {
        ErrorKind::Refused
    };
    Error::new(kind, format!("the hub did not accept {what}: {detail}"))
}

fn unknown_call(response: &MethodResponse) -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        format!(
            "no method call {:?} is waiting for an answer on this connection",
            response.request_id
        ),
    )
}
