//! The telemetry log (version 2; ADR 8): every device-to-cloud message the hub accepted,
//! durable, partitioned, bounded.
//!
//! ```text
//!  front-ends ──append_with / append_event──▶ queue ─▶ writer thread ─▶ telemetry.db (WAL)
//!   (PUBACK waits for the commit reply)       (group commit, partitions,    ▲
//!                                              retention)                   │ read-only
//!  monitor endpoint, EmulatorHandle, (later) Event Hubs endpoint ─▶ reader pool ┘
//! ```
//!
//! * **Durable before acknowledged.** A device's PUBACK is sent only after its message is
//!   committed, so an acknowledged message survives `kill -9`. One writer thread owns the
//!   read-write connection (`telemetry.db`, separate from the registry so that ingest never
//!   waits behind registry work) and commits in groups: it takes every append that is waiting,
//!   writes them in one transaction, then answers them all ([`writer`]).
//! * **Partitions.** A device's messages go to one partition, chosen by a stable hash of its id
//!   ([`partition`]); each message gets a log-wide sequence number (what the monitor endpoint
//!   pages by) and, within its partition, a sequence number from 0, an offset (byte position,
//!   a decimal string as Event Hubs uses) and an enqueued time that never goes backwards: what
//!   the Event Hubs-compatible endpoint serves as `x-opt-sequence-number`, `x-opt-offset` and
//!   `x-opt-enqueued-time`. Default 4 partitions; fixed when the log is created.
//! * **Typed properties.** Application properties are stored with their types
//!   ([`PropertyValue`], [`properties`]), so an AMQP `int` is read back as an `int`; MQTT gives
//!   strings. [`TelemetryEvent::message`] carries them as text for string-only consumers.
//! * **Reads off the writer.** Reads use separate read-only connections on the blocking pool
//!   ([`reader`]), never the writer's queue, so reading never delays ingest.
//! * **Retention.** The writer deletes the oldest messages beyond a maximum age (default 24 h)
//!   or a maximum stored size (default 256 MiB), so the log stops growing.
//! * **Versions.** A version 1 log (property-bag text, no partitions) is migrated on open; a
//!   newer one is refused ([`schema`]).

mod partition;
pub(crate) mod properties;
mod reader;
mod schema;
mod source;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use azure_iot_core::message::{Message, SystemProperties};
use bytes::Bytes;
use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::error::EmulatorError;

pub(crate) use partition::MAX_PARTITIONS;
pub use properties::PropertyValue;
pub use source::MessageSource;

/// The log's database file in the data directory.
pub(crate) const TELEMETRY_DB_FILE: &str = "telemetry.db";

/// Default maximum age of a logged message: IoT Hub's default retention, one day.
pub(crate) const DEFAULT_RETENTION_AGE: Duration = Duration::from_secs(24 * 3600);

/// Default maximum bytes of stored messages.
pub(crate) const DEFAULT_RETENTION_BYTES: u64 = 256 * 1024 * 1024;

/// A message as the hub recorded it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TelemetryEvent {
    /// Position in the whole log, from 1.
    pub sequence_number: u64,
    /// The sending device.
    pub device_id: String,
    /// The sending module, if a module sent it.
    pub module_id: Option<String>,
    /// When the hub accepted it (ISO 8601, UTC).
    pub enqueued_time: String,
    /// The message, with the system properties the hub stamps (connection device and module id,
    /// authentication method, enqueued time, sequence number); application properties as text.
    pub message: Message,
    /// The partition (0-based) the device's messages go to.
    pub partition: u32,
    /// Position within the partition, from 0 (Event Hubs' `x-opt-sequence-number`).
    pub partition_sequence_number: i64,
    /// Byte position within the partition, as a decimal string (Event Hubs' `x-opt-offset`).
    pub offset: String,
    /// The application properties with their types, in the order they were sent.
    pub properties: Vec<(String, PropertyValue)>,
    /// Device telemetry, or the hub notification this event is.
    pub source: MessageSource,
}

/// Where to start reading a partition (Event Hubs' event positions).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum EventPosition {
    /// The oldest retained event.
    Earliest,
    /// After the newest event: only events enqueued from now on.
    Latest,
    /// By partition sequence number.
    SequenceNumber {
        /// The sequence number.
        number: i64,
        /// Include the event with that number.
        inclusive: bool,
    },
    /// By offset.
    Offset {
        /// The offset.
        offset: i64,
        /// Include the event at that offset.
        inclusive: bool,
    },
    /// Events enqueued strictly after this time.
    EnqueuedAfter(time::OffsetDateTime),
}

/// A partition's state, as Event Hubs' `com.microsoft:partition` management request reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionInfo {
    /// The partition.
    pub partition: u32,
    /// Sequence number of the oldest retained event (the next one's when none is retained).
    pub begin_sequence_number: i64,
    /// Sequence number of the newest event ever enqueued; -1 if none.
    pub last_enqueued_sequence_number: i64,
    /// Offset of the newest event ever enqueued; `-1` if none.
    pub last_enqueued_offset: String,
    /// When the newest event was enqueued, if any was.
    pub last_enqueued_time: Option<time::OffsetDateTime>,
    /// No event is retained.
    pub is_empty: bool,
}

/// The retention limits the writer enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retention {
    /// Messages older than this go.
    pub(crate) max_age: Duration,
    /// The oldest messages go while the stored messages exceed this many bytes.
    pub(crate) max_bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age: DEFAULT_RETENTION_AGE,
            max_bytes: DEFAULT_RETENTION_BYTES,
        }
    }
}

/// How to open the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TelemetryOptions {
    /// The partition count: that of a new log; must match an existing one's. `None`: the
    /// existing log's, or 4 for a new one.
    pub(crate) partitions: Option<u32>,
    /// Retention limits.
    pub(crate) retention: Retention,
    /// When appends are flushed to the disk.
    pub(crate) durability: crate::config::Durability,
}

/// A message to append with typed properties (what a front-end hands the log).
#[derive(Debug, Clone)]
pub(crate) struct NewEvent {
    /// The sending device.
    pub(crate) device_id: String,
    /// The sending module, if any.
    pub(crate) module_id: Option<String>,
    /// How the sender authenticated (`sas`, `x509Certificate` ...).
    pub(crate) auth_method: String,
    /// When the hub accepted it (ISO 8601).
    pub(crate) enqueued_time: String,
    /// The sender's system properties (hub-stamped ones are ignored).
    pub(crate) system: SystemProperties,
    /// Application properties with their types.
    pub(crate) properties: Vec<(String, PropertyValue)>,
    /// The payload.
    pub(crate) body: Bytes,
    /// Telemetry, or the hub notification this is.
    pub(crate) source: MessageSource,
}

/// Who sent a message and when the hub accepted it: what the hub stamps on it.
pub(crate) struct Stamp<'a> {
    /// The sending device.
    pub(crate) device_id: String,
    /// The sending module, if any.
    pub(crate) module_id: Option<String>,
    /// How the sender authenticated.
    pub(crate) auth_method: &'a str,
    /// When the hub accepted it (ISO 8601).
    pub(crate) enqueued_time: String,
}

/// Most message bytes (body and properties) waiting for the writer thread.
pub(crate) const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
/// The unit the queue's room is counted in.
const QUEUE_UNIT: usize = 1024;

/// Handle to the log: appends go to its writer thread, reads to its reader pool. Cheap to clone.
#[derive(Clone)]
pub(crate) struct TelemetryLog {
    commands: mpsc::Sender<writer::Queued>,
    /// Bytes of messages queued for the writer, in [`QUEUE_UNIT`]s: an append waits for room
    /// (back-pressure to the connection that sends), so the queue never holds more than
    /// [`MAX_QUEUED_BYTES`].
    queued: Arc<tokio::sync::Semaphore>,
    /// The sequence number of the newest committed message (0: none yet).
    latest: tokio::sync::watch::Receiver<u64>,
    readers: Arc<reader::Readers>,
    partition_count: u32,
}

impl TelemetryLog {
    /// Opens the log in `dir` (or in memory) with the default options and starts its writer.
    #[cfg(test)]
    pub(crate) fn open(dir: Option<&Path>) -> Result<Self, EmulatorError> {
        Self::open_with(dir, TelemetryOptions::default())
    }

    /// Opens (creating or migrating) the log in `dir`, or a new one in memory, and starts its
    /// writer thread.
    pub(crate) fn open_with(
        dir: Option<&Path>,
        options: TelemetryOptions,
    ) -> Result<Self, EmulatorError> {
        if let Some(n) = options.partitions
            && !(1..=MAX_PARTITIONS).contains(&n)
        {
            return Err(EmulatorError::Config(format!(
                "the partition count must be 1 to {MAX_PARTITIONS}, not {n}"
            )));
        }
        let (mut conn, source) = match dir {
            Some(dir) => {
                let path = dir.join(TELEMETRY_DB_FILE);
                let conn = Connection::open(&path)?;
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(None, "synchronous", options.durability.synchronous())?;
                (conn, reader::Source::File(path))
            }
            None => {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let uri = format!(
                    "file:/azure-iot-telemetry-{}-{}?vfs=memdb",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                );
                (Connection::open(&uri)?, reader::Source::Memory(uri))
            }
        };
        conn.busy_timeout(reader::BUSY_TIMEOUT)?;
        let partition_count = schema::prepare(&mut conn, options.partitions)?;
        let newest: i64 =
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM telemetry", [], |r| {
                r.get(0)
            })?;
        let (notify, latest) = tokio::sync::watch::channel(newest.max(0) as u64);
        let writer = writer::Writer::new(conn, partition_count, options.retention, notify)?;
        let (commands, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("telemetry-log".into())
            .spawn(move || writer.run(queue))?;
        Ok(Self {
            commands,
            queued: Arc::new(tokio::sync::Semaphore::new(MAX_QUEUED_BYTES / QUEUE_UNIT)),
            latest,
            readers: Arc::new(reader::Readers::new(source)),
            partition_count,
        })
    }

    /// The log's partition count.
    pub(crate) fn partition_count(&self) -> u32 {
        self.partition_count
    }

    /// Appends a message and returns its log-wide sequence number once it is committed.
    #[cfg(test)]
    pub(crate) async fn append(
        &self,
        device_id: String,
        module_id: Option<String>,
        auth_method: &str,
        enqueued_time: String,
        message: Message,
    ) -> Result<u64, EmulatorError> {
        let (reply, answer) = oneshot::channel();
        self.append_with(
            device_id,
            module_id,
            auth_method,
            enqueued_time,
            message,
            reply,
        )
        .await;
        answer
            .await
            .map_err(|_| EmulatorError::ShuttingDown)?
            .map_err(EmulatorError::Storage)
    }

    /// Queues a message for the log, waiting for room while the writer is [`MAX_QUEUED_BYTES`]
    /// behind; `reply` gets its sequence number once it is committed (or the error that kept it
    /// from being stored). If the log has stopped, `reply` is dropped. The message's
    /// application properties are strings (as MQTT carries them).
    pub(crate) fn append_with(
        &self,
        device_id: String,
        module_id: Option<String>,
        auth_method: &str,
        enqueued_time: String,
        message: Message,
        reply: oneshot::Sender<Result<u64, String>>,
    ) -> impl Future<Output = ()> + '_ {
        let stamp = Stamp {
            device_id,
            module_id,
            auth_method,
            enqueued_time,
        };
        self.append_typed(stamp, message, None, reply)
    }

    /// Queues a message whose application properties `typed` gives with their types (an AMQP
    /// sender's), in place of the message's text ones; like [`append_with`](Self::append_with)
    /// otherwise, and exactly it when `typed` is `None`.
    ///
    /// Not an `async fn`: the event is made here and moves straight into the queueing future,
    /// which every device connection's serve loop holds room for.
    pub(crate) fn append_typed(
        &self,
        stamp: Stamp<'_>,
        message: Message,
        typed: Option<Vec<(String, PropertyValue)>>,
        reply: oneshot::Sender<Result<u64, String>>,
    ) -> impl Future<Output = ()> + '_ {
        let mut event = event_from_message(
            stamp.device_id,
            stamp.module_id,
            stamp.auth_method,
            stamp.enqueued_time,
            message,
        );
        if let Some(typed) = typed {
            event.properties = typed;
        }
        self.append_event(event, reply)
    }

    /// Queues a message with typed application properties; like
    /// [`append_with`](Self::append_with) otherwise.
    pub(crate) async fn append_event(
        &self,
        event: NewEvent,
        reply: oneshot::Sender<Result<u64, String>>,
    ) {
        let row = row_from_event(event);
        let bytes = row.body.len() + row.properties.len() + row.system.len();
        let units = bytes
            .div_ceil(QUEUE_UNIT)
            .clamp(1, MAX_QUEUED_BYTES / QUEUE_UNIT) as u32;
        // The semaphore is never closed; without a permit the append still goes ahead.
        let room = self.queued.clone().acquire_many_owned(units).await.ok();
        let _ = self.commands.send(writer::Queued {
            append: writer::Append { row, reply },
            room,
        });
    }

    /// Queues an event from a thread outside the async runtime (the hub's state thread, which
    /// emits the hub's own notifications): waits there while the writer is
    /// [`MAX_QUEUED_BYTES`] behind, as a device connection would, and does not wait for the
    /// commit. The writer never waits for the hub, so the wait always ends.
    pub(crate) fn append_from_thread(&self, event: NewEvent) {
        let (reply, _ignored) = oneshot::channel();
        park_until_done(self.append_event(event, reply));
    }

    /// Up to `limit` events with a log-wide sequence number greater than `after`, in order,
    /// only from `device_id` and `partition` if given.
    pub(crate) async fn read(
        &self,
        after: u64,
        limit: usize,
        device_id: Option<String>,
        partition: Option<u32>,
    ) -> Result<Vec<TelemetryEvent>, EmulatorError> {
        self.blocking(move |c| reader::read_log(c, after, limit, device_id.as_deref(), partition))
            .await
    }

    /// Up to `limit` events of `partition` from `position`, in partition order.
    pub(crate) async fn read_partition(
        &self,
        partition: u32,
        position: EventPosition,
        limit: usize,
    ) -> Result<Vec<TelemetryEvent>, EmulatorError> {
        self.check_partition(partition)?;
        self.blocking(move |c| reader::read_partition(c, partition, position, limit))
            .await
    }

    /// The state of `partition`.
    pub(crate) async fn partition_info(
        &self,
        partition: u32,
    ) -> Result<PartitionInfo, EmulatorError> {
        self.check_partition(partition)?;
        self.blocking(move |c| reader::info(c, partition)).await
    }

    /// A receiver that changes whenever messages are committed; it holds the newest log-wide
    /// sequence number.
    pub(crate) fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.latest.clone()
    }

    fn check_partition(&self, partition: u32) -> Result<(), EmulatorError> {
        if partition < self.partition_count {
            Ok(())
        } else {
            Err(EmulatorError::Refused(format!(
                "partition {partition} does not exist (the log has {})",
                self.partition_count
            )))
        }
    }

    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    ) -> Result<R, EmulatorError> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.with(f))
            .await
            .map_err(|_| EmulatorError::ShuttingDown)?
    }
}

/// Runs `work` to completion on the current (non-runtime) thread, parking it while `work`
/// waits. Only for futures that need no runtime (the queue's semaphore).
fn park_until_done<F: Future>(work: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = std::task::Context::from_waker(&waker);
    let mut work = std::pin::pin!(work);
    loop {
        if let std::task::Poll::Ready(out) = work.as_mut().poll(&mut context) {
            return out;
        }
        std::thread::park();
    }
}

/// The append of an MQTT-shaped message (string properties).
fn event_from_message(
    device_id: String,
    module_id: Option<String>,
    auth_method: &str,
    enqueued_time: String,
    message: Message,
) -> NewEvent {
    let (body, properties, system) = message.into_parts();
    let properties: Vec<(String, PropertyValue)> = properties
        .into_iter()
        .map(|(k, v)| (k, PropertyValue::String(v)))
        .collect();
    NewEvent {
        device_id,
        module_id,
        auth_method: auth_method.to_owned(),
        enqueued_time,
        system,
        properties,
        body,
        source: MessageSource::Telemetry,
    }
}

fn row_from_event(event: NewEvent) -> writer::Row {
    let enqueued_ms = azure_iot_core::datetime::parse_timestamp(&event.enqueued_time)
        .map(properties::ms_of)
        .unwrap_or_else(writer::now_ms);
    writer::Row {
        device_id: event.device_id,
        module_id: event.module_id,
        auth_method: event.auth_method,
        enqueued_time: event.enqueued_time,
        enqueued_ms,
        system: properties::encode_logged_system(&event.system, event.source),
        properties: properties::encode_properties(&event.properties),
        body: event.body,
    }
}

#[cfg(test)]
mod tests;
