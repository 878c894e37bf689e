//! The log's tables, its schema version, and the migration from version 1.
//!
//! Version 2 (`PRAGMA user_version = 2`):
//!
//! ```text
//! telemetry  (seq PK AUTOINCREMENT — log-wide sequence number, never reused
//!             partition, partition_seq, offset, enqueued_ms — the partition position
//!             device_id, module_id, auth_method, enqueued_time — hub-stamped
//!             system (JSON object), properties (typed JSON array), body BLOB,
//!             size — the bytes retention counts)
//!            UNIQUE INDEX (partition, partition_seq, offset, enqueued_ms)
//! partitions (partition PK, next_seq, next_offset, last_offset, last_enqueued_ms)
//! log_meta   (key PK, value) — `partition_count`
//! ```
//!
//! Version 1 (no `user_version`, one `telemetry` table with MQTT property-bag text) is
//! migrated on open in one transaction: log-wide sequence numbers are kept, property bags
//! become typed string properties, partitions and offsets are assigned in sequence order.
//! A newer version is refused.

use azure_iot_protocol::mqtt::PropertyBag;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};

use super::partition::DEFAULT_PARTITIONS;
use super::writer::{Partitions, Row, insert};
use super::{TELEMETRY_DB_FILE, event_from_message, row_from_event};
use crate::error::EmulatorError;

/// The schema version this code writes.
pub(crate) const SCHEMA_VERSION: i64 = 2;

const CREATE_V2: &str = "
CREATE TABLE telemetry (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    partition     INTEGER NOT NULL,
    partition_seq INTEGER NOT NULL,
    offset        INTEGER NOT NULL,
    enqueued_ms   INTEGER NOT NULL,
    device_id     TEXT NOT NULL,
    module_id     TEXT,
    auth_method   TEXT NOT NULL,
    enqueued_time TEXT NOT NULL,
    system        TEXT NOT NULL,
    properties    TEXT NOT NULL,
    body          BLOB NOT NULL,
    size          INTEGER NOT NULL
);
CREATE UNIQUE INDEX telemetry_by_partition ON telemetry (partition, partition_seq);
CREATE TABLE partitions (
    partition        INTEGER PRIMARY KEY,
    next_seq         INTEGER NOT NULL,
    next_offset      INTEGER NOT NULL,
    last_offset      INTEGER NOT NULL,
    last_enqueued_ms INTEGER NOT NULL
);
CREATE TABLE log_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// Brings the log in `conn` to version 2 (creating or migrating it) and returns its partition
/// count. `wanted` is the configured count: the default for a new log, and checked against
/// an existing one (a log's partition count is fixed, as a hub's is).
pub(crate) fn prepare(conn: &mut Connection, wanted: Option<u32>) -> Result<u32, EmulatorError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(EmulatorError::Storage(format!(
            "{TELEMETRY_DB_FILE} has schema version {version}, newer than this emulator \
             understands ({SCHEMA_VERSION}); use a newer azure-iot or another data directory"
        )));
    }
    if version == SCHEMA_VERSION {
        let stored: Option<String> = conn
            .query_row(
                "SELECT value FROM log_meta WHERE key = 'partition_count'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let stored: u32 = stored
            .and_then(|s| s.parse().ok())
            .filter(|&n| n >= 1)
            .ok_or_else(|| {
                EmulatorError::Storage(format!(
                    "{TELEMETRY_DB_FILE} has no valid partition count; it is damaged"
                ))
            })?;
        if let Some(n) = wanted.filter(|&n| n != stored) {
            return Err(EmulatorError::Config(format!(
                "the telemetry log ({TELEMETRY_DB_FILE}) has {stored} partitions and a log's \
                 partition count is fixed when it is created: start with --partitions {stored}, \
                 or delete {TELEMETRY_DB_FILE} to start a new log with {n}"
            )));
        }
        return Ok(stored);
    }
    let count = wanted.unwrap_or(DEFAULT_PARTITIONS);
    let v1: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'telemetry')",
        [],
        |r| r.get(0),
    )?;
    let tx = conn.transaction()?;
    if v1 {
        tx.execute_batch("ALTER TABLE telemetry RENAME TO telemetry_v1;")?;
    }
    tx.execute_batch(CREATE_V2)?;
    tx.execute(
        "INSERT INTO log_meta (key, value) VALUES ('partition_count', ?1)",
        params![count.to_string()],
    )?;
    if v1 {
        let migrated = migrate_v1(&tx, count)?;
        tracing::info!(
            messages = migrated,
            partitions = count,
            "migrated the telemetry log from version 1"
        );
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(count)
}

/// Copies every v1 row into the v2 table (keeping its sequence number), then drops v1.
fn migrate_v1(tx: &rusqlite::Transaction<'_>, count: u32) -> Result<u64, EmulatorError> {
    let mut partitions = Partitions::load(tx, count)?;
    let mut migrated = 0u64;
    {
        let mut select = tx.prepare(
            "SELECT seq, device_id, module_id, auth_method, enqueued_time, properties, body
             FROM telemetry_v1 ORDER BY seq",
        )?;
        let mut rows = select.query([])?;
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let device_id: String = r.get(1)?;
            let module_id: Option<String> = r.get(2)?;
            let auth_method: String = r.get(3)?;
            let enqueued_time: String = r.get(4)?;
            let bag: String = r.get(5)?;
            let body: Vec<u8> = r.get(6)?;
            let message = PropertyBag::parse(&bag)
                .to_message(Bytes::from(body))
                .map_err(|e| {
                    EmulatorError::Storage(format!(
                        "{TELEMETRY_DB_FILE}: version 1 message {seq} cannot be migrated ({e}); \
                         move the file away to start a new log"
                    ))
                })?;
            let row: Row = row_from_event(event_from_message(
                device_id,
                module_id,
                &auth_method,
                enqueued_time,
                message,
            ));
            insert(tx, &mut partitions, &row, Some(seq))?;
            migrated += 1;
        }
    }
    partitions.save(tx)?;
    tx.execute_batch("DROP TABLE telemetry_v1;")?;
    Ok(migrated)
}
