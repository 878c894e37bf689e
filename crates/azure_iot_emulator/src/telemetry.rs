//! The telemetry log: every device-to-cloud message the hub accepted, durable and in order.
//!
//! A device's PUBACK is sent only after its message is committed here, so an acknowledged
//! message survives `kill -9` of the emulator. One writer thread owns the log's SQLite
//! database (`telemetry.db`, separate from the registry so that ingest never waits behind
//! registry work) and commits in groups: it takes every append that is waiting, writes them in
//! one transaction, then answers them all. Under load many messages share one commit; alone, a
//! message waits for nothing but its own.
//!
//! Messages are stored as body plus property-bag text (the MQTT wire encoding of all their
//! properties, [`PropertyBag`]), with the hub-stamped fields in columns.

use std::path::Path;
use std::sync::mpsc;

use azure_iot_core::message::Message;
use azure_iot_protocol::mqtt::PropertyBag;
use bytes::Bytes;
use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use crate::error::EmulatorError;

/// The log's database file in the data directory.
pub(crate) const TELEMETRY_DB_FILE: &str = "telemetry.db";

/// Most appends committed in one transaction.
const MAX_GROUP: usize = 1024;

/// A message as the hub recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryEvent {
    /// Position in the log, from 1.
    pub sequence_number: u64,
    /// The sending device.
    pub device_id: String,
    /// The sending module, if a module sent it.
    pub module_id: Option<String>,
    /// When the hub accepted it (ISO 8601, UTC).
    pub enqueued_time: String,
    /// The message, with the system properties the hub stamps (connection device and module id,
    /// authentication method, enqueued time, sequence number).
    pub message: Message,
}

struct Append {
    device_id: String,
    module_id: Option<String>,
    auth_method: String,
    enqueued_time: String,
    message: Message,
    reply: oneshot::Sender<Result<u64, String>>,
}

enum Command {
    Append(Box<Append>),
    Read {
        after: u64,
        limit: usize,
        device_id: Option<String>,
        reply: oneshot::Sender<Result<Vec<TelemetryEvent>, String>>,
    },
}

/// Handle to the log's writer thread. Cheap to clone.
#[derive(Clone)]
pub(crate) struct TelemetryLog {
    commands: mpsc::Sender<Command>,
    /// The sequence number of the newest committed message (0: none yet).
    latest: tokio::sync::watch::Receiver<u64>,
}

impl TelemetryLog {
    /// Opens the log in `dir` (or in memory) and starts its writer thread.
    pub(crate) fn open(dir: Option<&Path>) -> Result<Self, EmulatorError> {
        let conn = match dir {
            Some(dir) => {
                let conn = Connection::open(dir.join(TELEMETRY_DB_FILE))?;
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                conn
            }
            None => Connection::open_in_memory()?,
        };
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS telemetry (
                seq           INTEGER PRIMARY KEY AUTOINCREMENT,
                device_id     TEXT NOT NULL,
                module_id     TEXT,
                auth_method   TEXT NOT NULL,
                enqueued_time TEXT NOT NULL,
                properties    TEXT NOT NULL,
                body          BLOB NOT NULL
            );",
        )?;
        let newest: i64 =
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM telemetry", [], |r| {
                r.get(0)
            })?;
        let (notify, latest) = tokio::sync::watch::channel(newest as u64);
        let (commands, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("telemetry-log".into())
            .spawn(move || writer(conn, queue, notify))?;
        Ok(Self { commands, latest })
    }

    /// Appends a message and returns its sequence number once it is committed.
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
        );
        answer
            .await
            .map_err(|_| EmulatorError::ShuttingDown)?
            .map_err(EmulatorError::Storage)
    }

    /// Queues a message for the log; `reply` gets its sequence number once it is committed (or
    /// the error that kept it from being stored). If the log has stopped, `reply` is dropped.
    pub(crate) fn append_with(
        &self,
        device_id: String,
        module_id: Option<String>,
        auth_method: &str,
        enqueued_time: String,
        message: Message,
        reply: oneshot::Sender<Result<u64, String>>,
    ) {
        let _ = self.commands.send(Command::Append(Box::new(Append {
            device_id,
            module_id,
            auth_method: auth_method.to_owned(),
            enqueued_time,
            message,
            reply,
        })));
    }

    /// Up to `limit` events with a sequence number greater than `after`, in order, only from
    /// `device_id` if given.
    pub(crate) async fn read(
        &self,
        after: u64,
        limit: usize,
        device_id: Option<String>,
    ) -> Result<Vec<TelemetryEvent>, EmulatorError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Read {
                after,
                limit,
                device_id,
                reply,
            })
            .map_err(|_| EmulatorError::ShuttingDown)?;
        answer
            .await
            .map_err(|_| EmulatorError::ShuttingDown)?
            .map_err(EmulatorError::Storage)
    }

    /// A receiver that changes whenever messages are committed; it holds the newest sequence
    /// number.
    pub(crate) fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.latest.clone()
    }
}

fn writer(
    mut conn: Connection,
    queue: mpsc::Receiver<Command>,
    notify: tokio::sync::watch::Sender<u64>,
) {
    while let Ok(first) = queue.recv() {
        let mut appends = Vec::new();
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Read {
                    after,
                    limit,
                    device_id,
                    reply,
                } => {
                    let result = read(&conn, after, limit, device_id.as_deref());
                    let _ = reply.send(result.map_err(|e| e.to_string()));
                }
                Command::Append(append) => appends.push(*append),
            }
            if appends.len() < MAX_GROUP {
                next = queue.try_recv().ok();
            }
        }
        if !appends.is_empty()
            && let Some(newest) = commit_group(&mut conn, appends)
        {
            notify.send_replace(newest);
        }
    }
}

/// Writes a group in one transaction and answers each append with its sequence number (or,
/// if the commit failed, with the error: nothing in the group was acknowledged).
/// Returns the newest sequence number written, if the commit succeeded.
fn commit_group(conn: &mut Connection, appends: Vec<Append>) -> Option<u64> {
    let result = (|| -> Result<Vec<u64>, rusqlite::Error> {
        let tx = conn.transaction()?;
        let mut seqs = Vec::with_capacity(appends.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO telemetry (device_id, module_id, auth_method, enqueued_time, properties, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for a in &appends {
                let bag = PropertyBag::from_message(&a.message).format();
                insert.execute(params![
                    a.device_id,
                    a.module_id,
                    a.auth_method,
                    a.enqueued_time,
                    bag,
                    a.message.body().as_ref()
                ])?;
                seqs.push(tx.last_insert_rowid() as u64);
            }
        }
        tx.commit()?;
        Ok(seqs)
    })();
    match result {
        Ok(seqs) => {
            let newest = seqs.last().copied();
            for (append, seq) in appends.into_iter().zip(seqs) {
                let _ = append.reply.send(Ok(seq));
            }
            newest
        }
        Err(e) => {
            tracing::error!(error = %e, "telemetry commit failed; the messages are not acknowledged");
            for append in appends {
                let _ = append.reply.send(Err(e.to_string()));
            }
            None
        }
    }
}

fn read(
    conn: &Connection,
    after: u64,
    limit: usize,
    device_id: Option<&str>,
) -> Result<Vec<TelemetryEvent>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, device_id, module_id, auth_method, enqueued_time, properties, body
         FROM telemetry WHERE seq > ?1 AND (?3 IS NULL OR device_id = ?3) ORDER BY seq LIMIT ?2",
    )?;
    // SQLite integers are signed: clamp so that "after everything" stays after everything.
    let after = after.min(i64::MAX as u64) as i64;
    let limit = limit.min(i64::MAX as usize) as i64;
    let rows = stmt.query_map(params![after, limit, device_id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, Vec<u8>>(6)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, device_id, module_id, auth_method, enqueued_time, bag, body) = row?;
        let stored = PropertyBag::parse(&bag)
            .to_message(Bytes::from(body))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let mut system = stored.system_properties().clone();
        system.connection_device_id = Some(device_id.clone());
        system.connection_module_id = module_id.clone();
        system.connection_auth_method = Some(auth_method);
        system.enqueued_time = azure_iot_core::datetime::parse_timestamp(&enqueued_time);
        system.sequence_number = Some(seq as u64);
        let (body, properties, _) = stored.into_parts();
        let mut builder = Message::builder(body).system_properties(system);
        for (k, v) in properties {
            builder = builder.property(k, v);
        }
        let message = builder
            .build()
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        out.push(TelemetryEvent {
            sequence_number: seq as u64,
            device_id,
            module_id,
            enqueued_time,
            message,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_are_ordered_durable_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let log = TelemetryLog::open(Some(dir.path())).unwrap();
        let message = Message::builder("hello")
            .message_id("m1")
            .property("k", "v")
            .build()
            .unwrap();
        let mut pending = Vec::new();
        for i in 0..50 {
            let log = log.clone();
            let message = message.clone();
            pending.push(tokio::spawn(async move {
                log.append(
                    format!("d{i}"),
                    None,
                    "sas",
                    "2026-01-01T00:00:00.0000000Z".into(),
                    message,
                )
                .await
                .unwrap()
            }));
        }
        let mut seqs = Vec::new();
        for p in pending {
            seqs.push(p.await.unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=50).collect::<Vec<u64>>());
        drop(log);
        // A new writer over the same file sees everything.
        let log = TelemetryLog::open(Some(dir.path())).unwrap();
        assert_eq!(*log.watch().borrow(), 50);
        let events = log.read(48, 10, None).await.unwrap();
        assert_eq!(log.read(0, 100, Some("d7".into())).await.unwrap().len(), 1);
        assert_eq!(events.len(), 2);
        let e = &events[0];
        assert_eq!(e.sequence_number, 49);
        assert_eq!(e.message.body().as_ref(), b"hello");
        assert_eq!(e.message.property("k"), Some("v"));
        let s = e.message.system_properties();
        assert_eq!(s.message_id.as_deref(), Some("m1"));
        assert_eq!(s.connection_auth_method.as_deref(), Some("sas"));
        assert_eq!(s.sequence_number, Some(49));
        assert!(s.connection_device_id.is_some());
    }
}
