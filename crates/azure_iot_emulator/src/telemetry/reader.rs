//! The read path: read-only connections beside the writer, never its queue.
//!
//! A small pool of read-only connections serves reads on tokio's blocking pool. On a file
//! the database is in WAL mode, so readers see the last committed state and neither wait for
//! nor delay the writer. The in-memory log lives in SQLite's `memdb` VFS under a name unique
//! to the process, which other connections of the process can open; there a read may wait
//! out a commit (busy timeout), never the writer's queue.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use azure_iot_core::message::Message;
use bytes::Bytes;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};

use super::properties::{decode_logged_system, decode_properties, timestamp_from_ms};
use super::{EventPosition, PartitionInfo, TelemetryEvent};
use crate::error::EmulatorError;

/// Idle read connections kept for reuse.
const MAX_IDLE: usize = 4;

/// How long a read waits for a lock (only the in-memory log has to).
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Where read connections open the log.
#[derive(Debug, Clone)]
pub(super) enum Source {
    /// `telemetry.db` in the data directory.
    File(PathBuf),
    /// A `memdb` URI (`file:/name?vfs=memdb`).
    Memory(String),
}

/// A pool of read-only connections.
pub(super) struct Readers {
    source: Source,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    /// A pool for `source` (connections are opened on demand).
    pub(super) fn new(source: Source) -> Self {
        Self {
            source,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn connect(&self) -> Result<Connection, rusqlite::Error> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = match &self.source {
            Source::File(path) => Connection::open_with_flags(path, flags)?,
            Source::Memory(uri) => Connection::open_with_flags(uri, flags)?,
        };
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(conn)
    }

    /// Runs `f` on a pooled read connection (blocking: call from the blocking pool).
    pub(super) fn with<R>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, rusqlite::Error>,
    ) -> Result<R, EmulatorError> {
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let result = f(&conn);
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        Ok(result?)
    }
}

const COLUMNS: &str = "seq, partition, partition_seq, offset, enqueued_ms, device_id, module_id,
    auth_method, enqueued_time, system, properties, body";

/// Up to `limit` events after log-wide sequence number `after`, in order, only from
/// `device_id` / `partition` if given.
pub(super) fn read_log(
    conn: &Connection,
    after: u64,
    limit: usize,
    device_id: Option<&str>,
    partition: Option<u32>,
) -> Result<Vec<TelemetryEvent>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM telemetry
         WHERE seq > ?1 AND (?3 IS NULL OR device_id = ?3) AND (?4 IS NULL OR partition = ?4)
         ORDER BY seq LIMIT ?2"
    ))?;
    // SQLite integers are signed: clamp so that "after everything" stays after everything.
    let after = after.min(i64::MAX as u64) as i64;
    let limit = limit.min(i64::MAX as usize) as i64;
    let rows = stmt.query_map(params![after, limit, device_id, partition], event_of)?;
    rows.collect()
}

/// Up to `limit` events of `partition` from `position`, in partition order.
pub(super) fn read_partition(
    conn: &Connection,
    partition: u32,
    position: EventPosition,
    limit: usize,
) -> Result<Vec<TelemetryEvent>, rusqlite::Error> {
    let (condition, value) = match position {
        EventPosition::Earliest => ("partition_seq >= ?2", 0),
        EventPosition::Latest => {
            let last = info(conn, partition)?.last_enqueued_sequence_number;
            ("partition_seq > ?2", last)
        }
        EventPosition::SequenceNumber {
            number,
            inclusive: true,
        } => ("partition_seq >= ?2", number),
        EventPosition::SequenceNumber { number, .. } => ("partition_seq > ?2", number),
        EventPosition::Offset {
            offset,
            inclusive: true,
        } => ("offset >= ?2", offset),
        EventPosition::Offset { offset, .. } => ("offset > ?2", offset),
        EventPosition::EnqueuedAfter(t) => ("enqueued_ms > ?2", super::properties::ms_of(t)),
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM telemetry WHERE partition = ?1 AND {condition}
         ORDER BY partition_seq LIMIT ?3"
    ))?;
    let limit = limit.min(i64::MAX as usize) as i64;
    let rows = stmt.query_map(params![partition, value, limit], event_of)?;
    rows.collect()
}

/// What Event Hubs' `com.microsoft:partition` management request reports.
pub(super) fn info(conn: &Connection, partition: u32) -> Result<PartitionInfo, rusqlite::Error> {
    let last: Option<(i64, i64, i64)> = conn
        .query_row(
            "SELECT next_seq, last_offset, last_enqueued_ms FROM partitions WHERE partition = ?1",
            [partition],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let begin: Option<i64> = conn.query_row(
        "SELECT MIN(partition_seq) FROM telemetry WHERE partition = ?1",
        [partition],
        |r| r.get(0),
    )?;
    let (next_seq, last_offset, last_ms) = last.unwrap_or((0, -1, 0));
    Ok(PartitionInfo {
        partition,
        begin_sequence_number: begin.unwrap_or(next_seq),
        last_enqueued_sequence_number: next_seq - 1,
        last_enqueued_offset: last_offset.to_string(),
        last_enqueued_time: (next_seq > 0).then(|| timestamp_from_ms(last_ms)).flatten(),
        is_empty: begin.is_none(),
    })
}

fn event_of(r: &Row<'_>) -> Result<TelemetryEvent, rusqlite::Error> {
    let seq: i64 = r.get(0)?;
    let partition: u32 = r.get(1)?;
    let partition_seq: i64 = r.get(2)?;
    let offset: i64 = r.get(3)?;
    let device_id: String = r.get(5)?;
    let module_id: Option<String> = r.get(6)?;
    let auth_method: String = r.get(7)?;
    let enqueued_time: String = r.get(8)?;
    let system: String = r.get(9)?;
    let properties: String = r.get(10)?;
    let body: Vec<u8> = r.get(11)?;
    let conversion = |e: String| {
        rusqlite::Error::FromSqlConversionFailure(
            10,
            rusqlite::types::Type::Text,
            Box::new(std::io::Error::other(e)),
        )
    };
    let typed = decode_properties(&properties).map_err(conversion)?;
    let (mut system, source) = decode_logged_system(&system).map_err(conversion)?;
    system.connection_device_id = Some(device_id.clone());
    system.connection_module_id = module_id.clone();
    system.connection_auth_method = Some(auth_method);
    system.enqueued_time = azure_iot_core::datetime::parse_timestamp(&enqueued_time);
    system.sequence_number = Some(seq as u64);
    let mut builder = Message::builder(Bytes::from(body)).system_properties(system);
    for (name, value) in &typed {
        builder = builder.property(name.clone(), super::properties::text_of(value));
    }
    let message = builder.build().map_err(|e| conversion(e.to_string()))?;
    Ok(TelemetryEvent {
        sequence_number: seq as u64,
        device_id,
        module_id,
        enqueued_time,
        message,
        partition,
        partition_sequence_number: partition_seq,
        offset: offset.to_string(),
        properties: typed,
        source,
    })
}
