//! [`EventHubConsumer`]: opens connections to the endpoint, answers property requests, and
//! starts [`EventStream`]s whose driver task reads partitions and reconnects.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use azure_iot_core::retry::{Classify, RetryAttempt, RetryPolicy, SharedRetryPolicy};
use azure_iot_core::{EventHubConnectionString, ExponentialBackoff, ServiceConnectionString};
use fe2o3_amqp::Receiver;
use fe2o3_amqp_types::messaging::Body;
use fe2o3_amqp_types::primitives::Value;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::event::ReceivedEvent;
use super::link::{EventHubConnection, ReceiverSpec, Target, recv_error};
use super::management::{EventHubProperties, PartitionProperties};
use super::position::EventPosition;
use super::redirect;
use crate::credential::SharedAccessPolicy;
use crate::error::{Error, ErrorKind, Result};

/// The consumer group every event hub has.
pub const DEFAULT_CONSUMER_GROUP: &str = "$Default";

/// Options of an [`EventHubConsumer`]: trust, ports, consumer group, flow control, timeouts
/// and the reconnect policy.
///
/// ```
/// use std::time::Duration;
/// use azure_iot_service::EventHubConsumerOptions;
///
/// let options = EventHubConsumerOptions::default()
///     .consumer_group("dashboard")
///     .prefetch(100)
///     .timeout(Duration::from_secs(30));
/// ```
#[derive(Debug, Clone)]
pub struct EventHubConsumerOptions {
    trusted_ca_pem: Option<String>,
    hub_amqp_port: u16,
    event_hubs_port: Option<u16>,
    consumer_group: String,
    prefetch: u32,
    buffer: usize,
    owner_level: Option<i64>,
    timeout: Duration,
    token_ttl: Duration,
    retry_policy: SharedRetryPolicy,
}

impl Default for EventHubConsumerOptions {
    fn default() -> Self {
        Self {
            trusted_ca_pem: None,
            hub_amqp_port: 5671,
            event_hubs_port: None,
            consumer_group: DEFAULT_CONSUMER_GROUP.to_owned(),
            prefetch: 300,
            buffer: 300,
            owner_level: None,
            timeout: Duration::from_secs(60),
            token_ttl: azure_iot_core::sas::DEFAULT_TOKEN_TTL,
            retry_policy: SharedRetryPolicy::new(ExponentialBackoff {
                max_retries: Some(8),
                max_elapsed: Some(Duration::from_secs(300)),
                ..ExponentialBackoff::default()
            }),
        }
    }
}

impl EventHubConsumerOptions {
    /// Trust this CA (PEM) instead of the operating system's roots: the emulator's `ca.pem`.
    pub fn trusted_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.trusted_ca_pem = Some(pem.into());
        self
    }

    /// The hub's AMQP port, for the redirect lookup of an IoT hub connection string (5671).
    pub fn hub_amqp_port(mut self, port: u16) -> Self {
        self.hub_amqp_port = port;
        self
    }

    /// The Event Hubs endpoint's port when neither the connection string nor the redirect
    /// names one (5671 otherwise).
    pub fn event_hubs_port(mut self, port: u16) -> Self {
        self.event_hubs_port = Some(port);
        self
    }

    /// The consumer group to read in (`$Default`).
    pub fn consumer_group(mut self, group: impl Into<String>) -> Self {
        self.consumer_group = group.into();
        self
    }

    /// The credit each partition receiver grants: how many events the endpoint may send
    /// ahead of the reader (300, at least 1).
    pub fn prefetch(mut self, events: u32) -> Self {
        self.prefetch = events.max(1);
        self
    }

    /// How many received events an [`EventStream`] holds for its reader before the
    /// partition receivers wait (300, at least 1).
    pub fn buffer(mut self, events: usize) -> Self {
        self.buffer = events.max(1);
        self
    }

    /// Read as an exclusive (epoch) receiver with this owner level: a receiver with a higher
    /// level takes the partition over, and this one ends with [`ErrorKind::Closed`].
    pub fn owner_level(mut self, level: i64) -> Self {
        self.owner_level = Some(level);
        self
    }

    /// The limit for opening a connection, attaching and each `$management` request (60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The lifetime of the SAS tokens put on the connection (renewed at 85 %).
    pub fn token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = ttl;
        self
    }

    /// How an [`EventStream`] reconnects after the connection breaks (up to 8 tries within
    /// 5 minutes, exponential backoff): the core crate's policy, as everywhere in the SDK.
    pub fn retry_policy(mut self, policy: impl RetryPolicy + 'static) -> Self {
        self.retry_policy = SharedRetryPolicy::new(policy);
        self
    }
}

/// A reader of the Event Hubs-compatible endpoint (an IoT hub's built-in one, or any event
/// hub): properties, and streams of events from one partition or all of them.
///
/// ```no_run
/// # async fn run() -> Result<(), azure_iot_service::Error> {
/// use azure_iot_service::{EventHubConsumer, EventHubConsumerOptions, EventPosition};
///
/// let consumer = EventHubConsumer::from_connection_string(
///     "HostName=myhub.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=...",
///     EventHubConsumerOptions::default(),
/// )
/// .await?;
/// let mut events = consumer.receive_all(EventPosition::Latest).await?;
/// while let Some(event) = events.next_event().await {
///     let event = event?;
///     println!("{:?}: {}", event.device_id(), event.body_text());
/// }
/// # Ok(()) }
/// ```
pub struct EventHubConsumer {
    target: Arc<Target>,
    options: EventHubConsumerOptions,
}

impl std::fmt::Debug for EventHubConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHubConsumer")
            .field("host", &self.target.host)
            .field("port", &self.target.port)
            .field("event_hub", &self.target.entity)
            .field("consumer_group", &self.options.consumer_group)
            .finish_non_exhaustive()
    }
}

impl EventHubConsumer {
    /// A consumer from either connection string: an Event Hubs one (`Endpoint=sb://…`,
    /// used as it is) or an IoT hub policy one (`HostName=…`, resolved to the hub's built-in
    /// endpoint through the redirect IoT Hub answers with).
    pub async fn from_connection_string(
        connection_string: &str,
        options: EventHubConsumerOptions,
    ) -> Result<Self> {
        if connection_string
            .split(';')
            .any(|segment| segment.trim_start().starts_with("Endpoint="))
        {
            Self::from_event_hub(
                &EventHubConnectionString::parse(connection_string)?,
                options,
            )
        } else {
            Self::from_iot_hub(&ServiceConnectionString::parse(connection_string)?, options).await
        }
    }

    /// A consumer of the event hub `connection_string` names.
    pub fn from_event_hub(
        connection_string: &EventHubConnectionString,
        options: EventHubConsumerOptions,
    ) -> Result<Self> {
        let tls = Arc::new(crate::http::tls_config(options.trusted_ca_pem.as_deref())?);
        Self::with_tls(connection_string, options, tls)
    }

    /// A consumer of the built-in endpoint of the hub `connection_string` names: connects to
    /// the hub's AMQP port once to be redirected (see the module docs), then reads there with
    /// the same policy.
    pub async fn from_iot_hub(
        connection_string: &ServiceConnectionString,
        options: EventHubConsumerOptions,
    ) -> Result<Self> {
        let tls = Arc::new(crate::http::tls_config(options.trusted_ca_pem.as_deref())?);
        let resolved = crate::messaging::within(
            options.timeout,
            "asking the hub for its Event Hubs-compatible endpoint",
            redirect::resolve(connection_string, options.hub_amqp_port, &tls),
        )
        .await?;
        Self::with_tls(&resolved, options, tls)
    }

    fn with_tls(
        cs: &EventHubConnectionString,
        options: EventHubConsumerOptions,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Self> {
        check_group(&options.consumer_group)?;
        let policy = SharedAccessPolicy::new(cs.key_name(), &cs.key().to_base64())?;
        let port = cs.port().or(options.event_hubs_port).unwrap_or(5671);
        let target = Target::new(
            cs.host(),
            port,
            cs.entity_path(),
            policy,
            tls,
            options.token_ttl,
            options.timeout,
        );
        Ok(Self {
            target: Arc::new(target),
            options,
        })
    }

    /// The Event Hubs host this consumer reads from.
    pub fn host(&self) -> &str {
        &self.target.host
    }

    /// The Event Hubs port.
    pub fn port(&self) -> u16 {
        self.target.port
    }

    /// The event hub's name (an IoT hub's built-in endpoint: usually the hub's name).
    pub fn event_hub_name(&self) -> &str {
        &self.target.entity
    }

    /// The consumer group it reads in.
    pub fn consumer_group(&self) -> &str {
        &self.options.consumer_group
    }

    /// The event hub's name, creation time and partition ids (`$management`).
    pub async fn get_event_hub_properties(&self) -> Result<EventHubProperties> {
        let mut connection = self.target.open().await?;
        let properties = connection.event_hub_properties(&self.target).await;
        connection.close().await;
        properties
    }

    /// One partition's sequence numbers, last offset and time (`$management`); an unknown
    /// partition is [`ErrorKind::NotFound`].
    pub async fn get_partition_properties(
        &self,
        partition_id: &str,
    ) -> Result<PartitionProperties> {
        let mut connection = self.target.open().await?;
        let properties = connection
            .partition_properties(&self.target, partition_id)
            .await;
        connection.close().await;
        properties
    }

    /// Reads one partition from `start`. The connection is opened and the link attached
    /// before this returns, so an unreachable endpoint or a refused key fails here. Event
    /// Hubs (and the emulator) refuse an unknown partition or consumer group, or a position
    /// past the end, by detaching the link right after attaching it: that error
    /// ([`ErrorKind::NotFound`], [`ErrorKind::BadRequest`]) is the stream's only item.
    pub async fn receive_partition(
        &self,
        partition_id: &str,
        start: EventPosition,
    ) -> Result<EventStream> {
        self.receive(Some(vec![partition_id.to_owned()]), start)
            .await
    }

    /// Reads every partition (ids from `$management`) from `start` (errors as
    /// [`receive_partition`](Self::receive_partition)).
    pub async fn receive_all(&self, start: EventPosition) -> Result<EventStream> {
        self.receive(None, start).await
    }

    async fn receive(
        &self,
        partitions: Option<Vec<String>>,
        start: EventPosition,
    ) -> Result<EventStream> {
        let mut connection = self.target.open().await?;
        let partitions = match partitions {
            Some(p) => p,
            None => {
                connection
                    .event_hub_properties(&self.target)
                    .await?
                    .partition_ids
            }
        };
        let positions: HashMap<String, EventPosition> = partitions
            .iter()
            .map(|p| (p.clone(), start.clone()))
            .collect();
        let driver = Driver {
            target: self.target.clone(),
            group: self.options.consumer_group.clone(),
            prefetch: self.options.prefetch,
            owner_level: self.options.owner_level,
            retry: self.options.retry_policy.clone(),
            positions: Arc::new(std::sync::Mutex::new(positions)),
            partitions,
        };
        let receivers = match driver.attach_all(&mut connection).await {
            Ok(receivers) => receivers,
            Err(e) => {
                connection.close().await;
                return Err(e);
            }
        };
        let (tx, rx) = mpsc::channel(self.options.buffer.max(1));
        let task = tokio::spawn(driver.run(connection, receivers, tx));
        Ok(EventStream { rx, task })
    }
}

/// Consumer-group names the endpoint can address (no `/`, not empty, at most 50 characters).
fn check_group(group: &str) -> Result<()> {
    if group.is_empty() || group.len() > 50 || group.contains(['/', '?', '#', '\\']) {
        return Err(Error::invalid(format!(
            "consumer group {group:?} is not a valid name (1 to 50 characters, no / ? # \\)"
        )));
    }
    Ok(())
}

/// Events read from one or more partitions, as they arrive (partitions interleaved, each in
/// order). Read with [`next_event`](Self::next_event) or as a `Stream`.
///
/// A driver task owns the connection: it refills each receiver's credit as events are
/// taken, holds at most the options' `buffer` events for the reader (the receivers wait
/// while it is full), and after a broken connection reconnects under the retry policy and
/// resumes every partition after the last event it handed over. An error that retrying
/// does not fix (or retries running out) is the stream's last item. Dropping the stream
/// stops the task and closes the connection.
pub struct EventStream {
    rx: mpsc::Receiver<Result<ReceivedEvent>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl EventStream {
    /// The next event; `None` once the stream ended (after its last error).
    pub async fn next_event(&mut self) -> Option<Result<ReceivedEvent>> {
        self.rx.recv().await
    }

    /// Stops reading and closes the connection.
    pub fn close(self) {
        self.task.abort();
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl futures_util::Stream for EventStream {
    type Item = Result<ReceivedEvent>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Where each partition resumes: its start, then after the last event handed over.
type Positions = Arc<std::sync::Mutex<HashMap<String, EventPosition>>>;

/// The task behind an [`EventStream`].
struct Driver {
    target: Arc<Target>,
    group: String,
    prefetch: u32,
    owner_level: Option<i64>,
    retry: SharedRetryPolicy,
    partitions: Vec<String>,
    positions: Positions,
}

impl Driver {
    fn position(&self, partition: &str) -> EventPosition {
        self.positions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(partition)
            .cloned()
            .unwrap_or(EventPosition::Earliest)
    }

    async fn attach_all(
        &self,
        connection: &mut EventHubConnection,
    ) -> Result<Vec<(String, Receiver)>> {
        let mut receivers = Vec::with_capacity(self.partitions.len());
        for partition in &self.partitions {
            let position = self.position(partition);
            let receiver = connection
                .attach(
                    &self.target,
                    ReceiverSpec {
                        group: &self.group,
                        partition,
                        position: &position,
                        prefetch: self.prefetch,
                        owner_level: self.owner_level,
                    },
                )
                .await?;
            receivers.push((partition.clone(), receiver));
        }
        Ok(receivers)
    }

    async fn reconnect(&self) -> Result<(EventHubConnection, Vec<(String, Receiver)>)> {
        let mut connection = self.target.open().await?;
        match self.attach_all(&mut connection).await {
            Ok(receivers) => Ok((connection, receivers)),
            Err(e) => {
                connection.close().await;
                Err(e)
            }
        }
    }

    async fn run(
        self,
        mut connection: EventHubConnection,
        mut receivers: Vec<(String, Receiver)>,
        tx: mpsc::Sender<Result<ReceivedEvent>>,
    ) {
        loop {
            let failure = self.pump(receivers, &tx).await;
            connection.close().await;
            let Some(mut error) = failure else {
                return; // the reader is gone
            };
            let started = tokio::time::Instant::now();
            let mut attempt = 0u32;
            loop {
                let class = error.error_class();
                let delay = if class.is_retryable() {
                    self.retry
                        .next_delay(&RetryAttempt::new(attempt, class, started.elapsed()))
                } else {
                    None
                };
                let Some(delay) = delay else {
                    let _ = tx.send(Err(error)).await;
                    return;
                };
                tracing::debug!(error = %error, attempt, ?delay, "Event Hubs receiver reconnecting");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = tx.closed() => return,
                }
                match self.reconnect().await {
                    Ok((c, r)) => {
                        connection = c;
                        receivers = r;
                        break;
                    }
                    Err(e) => {
                        error = e;
                        attempt += 1;
                    }
                }
            }
        }
    }

    /// Reads every receiver until one fails (its error) or the reader goes (`None`).
    async fn pump(
        &self,
        receivers: Vec<(String, Receiver)>,
        tx: &mpsc::Sender<Result<ReceivedEvent>>,
    ) -> Option<Error> {
        let mut tasks = JoinSet::new();
        for (partition, receiver) in receivers {
            tasks.spawn(read_partition(
                partition,
                receiver,
                tx.clone(),
                self.positions.clone(),
                self.target.entity.clone(),
            ));
        }
        // The first task to end decides: a failure reconnects, the reader's departure stops.
        tokio::select! {
            () = tx.closed() => None,
            done = tasks.join_next() => match done {
                None | Some(Ok(Ok(()))) => None,
                Some(Ok(Err(e))) => Some(e),
                Some(Err(e)) => Some(Error::new(
                    ErrorKind::Closed,
                    format!("a partition reader stopped: {e}"),
                )),
            },
        }
    }
}

/// Hands over one partition's events; `Ok` when the reader is gone.
async fn read_partition(
    partition: String,
    mut receiver: Receiver,
    tx: mpsc::Sender<Result<ReceivedEvent>>,
    positions: Positions,
    entity: String,
) -> Result<()> {
    let what = format!("reading partition {partition} of {entity}");
    loop {
        let delivery = receiver
            .recv::<Body<Value>>()
            .await
            .map_err(|e| recv_error(&what, e))?;
        // Settled on send as asked; accepts one that was not (a no-op otherwise).
        let _ = receiver.accept(&delivery).await;
        let event = ReceivedEvent::from_amqp(&partition, delivery.message())?;
        let sequence_number = event.sequence_number;
        if tx.send(Ok(event)).await.is_err() {
            return Ok(());
        }
        positions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                partition.clone(),
                EventPosition::after_sequence_number(sequence_number),
            );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_group_names_are_checked() {
        assert!(check_group("$Default").is_ok());
        assert!(check_group("dash-board_1.x").is_ok());
        for bad in ["", "a/b", &"x".repeat(51)] {
            assert_eq!(
                check_group(bad).unwrap_err().kind(),
                ErrorKind::InvalidArgument
            );
        }
    }

    #[test]
    fn an_event_hubs_string_is_used_as_it_is() {
        let consumer = EventHubConsumer::from_event_hub(
            &EventHubConnectionString::parse(
                "Endpoint=sb://localhost:5673/;SharedAccessKeyName=service;SharedAccessKey=c2VjcmV0;EntityPath=hub",
            )
            .unwrap(),
            EventHubConsumerOptions::default().consumer_group("cg"),
        )
        .unwrap();
        assert_eq!(
            (consumer.host(), consumer.port(), consumer.event_hub_name()),
            ("localhost", 5673, "hub")
        );
        assert_eq!(
            consumer.target.partition_address("cg", "2"),
            "amqps://localhost/hub/ConsumerGroups/cg/Partitions/2"
        );
        assert!(!format!("{consumer:?}").contains("c2VjcmV0"));
    }
}
