//! Durable storage: one SQLite database (`hub.db` in the data directory, or in memory).
//!
//! Only the hub's state owner touches it, from its own thread, so there is one connection and
//! no locking beyond SQLite's own. The database runs in WAL mode with `synchronous=NORMAL` by
//! default: a committed write survives a crash or `kill -9` of the emulator (it is in the WAL
//! before the commit returns); only an operating-system crash or power loss can lose the last
//! transactions, a trade the emulator, a test tool, is happy to make for speed.
//! [`Durability::Full`] (`--durability full`) makes it `synchronous=FULL` for users who need
//! acknowledged writes to survive those too.
//!
//! Identities are rows of JSON ([`IdentityRecord`]), keyed by device id and module id (`""` for
//! the device itself): the schema stays small and the record shape can grow without
//! migrations. Every change of one API call is written in one transaction, so a crash never
//! leaves half of a bulk operation behind.
//!
//! The store is deliberately dumb: it validates nothing and knows no IoT Hub rule. The state
//! owner decides what a request changes, expresses it as a list of [`Change`]s, and calls
//! [`Store::apply`] *before* touching memory (ADR 4); the store's only promise is that the list
//! lands entirely or not at all. Reads happen once, at start-up, to rebuild the in-memory model;
//! after that the database is write-only until the next start.
//!
//! Tables: `meta` (schema version), `policies` (shared access policies with their keys),
//! `identities` (device and module records with their twins), `c2d` (queued cloud-to-device
//! messages with delivery counts), `feedback` and `file_notifications` (the service-bound
//! inboxes' undelivered records), `jobs` and `device_jobs` (jobs v2 and their per-device
//! rows, as JSON), `configurations` (automatic device management configurations, one JSON
//! document per id) and
//! `certificates` (registered CAs). Telemetry has its own database and writer (`telemetry`),
//! so a burst of device messages never queues behind registry writes. A database written by
//! an emulator with another schema version is refused at open, not guessed at.

use std::path::Path;

use azure_iot_core::sas::SharedAccessKey;
use rusqlite::{Connection, OptionalExtension, params};

use crate::config::Durability;
use crate::error::EmulatorError;
use crate::hub::identity::IdentityRecord;
use crate::hub::inbox::InboxKind;
use crate::hub::policy::{Policy, Rights};

/// The database file in the data directory.
pub(crate) const DB_FILE: &str = "hub.db";

/// The layout version written to `meta.schema_version`; a database with another value is
/// refused at open instead of being misread.
const SCHEMA_VERSION: i64 = 1;

/// Every table, created if missing (so opening an existing database is idempotent).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS policies (
    name          TEXT PRIMARY KEY,
    primary_key   TEXT NOT NULL,
    secondary_key TEXT NOT NULL,
    rights        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS c2d (
    id             INTEGER PRIMARY KEY,
    device_id      TEXT NOT NULL,
    enqueued_time  TEXT NOT NULL,
    expiry         TEXT NOT NULL,
    delivery_count INTEGER NOT NULL,
    properties     TEXT NOT NULL,
    body           BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS certificates (
    name    TEXT PRIMARY KEY,
    pem     TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    id     INTEGER PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS file_notifications (
    id     INTEGER PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS device_jobs (
    job_id    TEXT NOT NULL,
    device_id TEXT NOT NULL,
    record    TEXT NOT NULL,
    PRIMARY KEY (job_id, device_id)
);
CREATE TABLE IF NOT EXISTS configurations (
    id     TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS identities (
    device_id TEXT NOT NULL,
    module_id TEXT NOT NULL,
    record    TEXT NOT NULL,
    PRIMARY KEY (device_id, module_id)
);
";

/// One change to the identity table.
pub(crate) enum Change<'a> {
    /// Insert or replace an identity (device or module).
    Put(&'a IdentityRecord),
    /// Delete a device and all its modules.
    DeleteDevice(&'a str),
    /// Delete one module.
    DeleteModule(&'a str, &'a str),
    /// Insert or replace a queued cloud-to-device message.
    PutC2d(&'a C2dRow),
    /// Remove a cloud-to-device message (completed, expired, dead-lettered, purged).
    DeleteC2d(u64),
    /// Add a record (JSON) to a service-bound inbox.
    PutInbox(InboxKind, u64, &'a str),
    /// Remove a delivered (or dead-lettered) inbox record.
    DeleteInbox(InboxKind, u64),
    /// Register (or replace) a CA certificate: name, PEM, creation time.
    PutCertificate(&'a str, &'a str, &'a str),
    /// Remove a CA certificate.
    DeleteCertificate(&'a str),
    /// Insert or replace a job (jobs v2): id, record JSON.
    PutJob(&'a str, &'a str),
    /// Insert or replace one device's row of a job: job id, device id, row JSON.
    PutDeviceJob(&'a str, &'a str, &'a str),
    /// Remove a job and its device rows (retention).
    DeleteJob(&'a str),
    /// Insert or replace a configuration: id, the configuration as JSON.
    PutConfiguration(&'a str, &'a str),
    /// Remove a configuration.
    DeleteConfiguration(&'a str),
}

/// A stored cloud-to-device message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct C2dRow {
    /// Hub-wide message number: orders the queue and becomes the message's sequence number.
    pub(crate) id: u64,
    /// The target device (C2D queues are per device; modules have none).
    pub(crate) device_id: String,
    /// When the hub accepted the message (`iothub-enqueuedtime`).
    pub(crate) enqueued_time: String,
    /// Absolute expiry; a message still queued then ends with feedback `Expired`.
    pub(crate) expiry: String,
    /// Deliveries so far; after the hub's maximum the message is dead-lettered with
    /// `DeliveryCountExceeded`. Stored so that redelivery counts survive a restart.
    pub(crate) delivery_count: u32,
    /// Every property, as MQTT property-bag text.
    pub(crate) properties: String,
    /// The payload, opaque bytes.
    pub(crate) body: Vec<u8>,
}

/// Opens (creating if needed) the database `file`, or an in-memory one, as every state owner's
/// database is opened: WAL with `synchronous` as `durability` says for a file, a 5 s busy
/// timeout (another process, say a CLI reading the file, briefly holding a lock), and
/// `schema` (idempotent `CREATE TABLE IF NOT EXISTS`) applied.
pub(crate) fn open_connection(
    file: Option<&Path>,
    durability: Durability,
    schema: &str,
) -> Result<Connection, EmulatorError> {
    let conn = match file {
        Some(file) => {
            let conn = Connection::open(file)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", durability.synchronous())?;
            conn
        }
        None => Connection::open_in_memory()?,
    };
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(schema)?;
    Ok(conn)
}

/// The hub's database: one connection, owned by the state thread.
pub(crate) struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the database in `dir`, or an in-memory one, with the
    /// default durability.
    #[cfg(test)]
    pub(crate) fn open(dir: Option<&Path>) -> Result<Self, EmulatorError> {
        Self::open_with(dir, Durability::default())
    }

    /// Opens (creating if needed) the database in `dir`, or an in-memory one.
    ///
    /// The file database is switched to WAL with `synchronous` as `durability` says (see the
    /// module header); the in-memory one (`--in-memory`, tests) runs the same code without
    /// durability. A 5 s busy timeout covers another process (say a CLI reading the file)
    /// briefly holding a lock.
    pub(crate) fn open_with(
        dir: Option<&Path>,
        durability: Durability,
    ) -> Result<Self, EmulatorError> {
        let conn = open_connection(dir.map(|d| d.join(DB_FILE)).as_deref(), durability, SCHEMA)?;
        let store = Self { conn };
        match store.meta("schema_version")? {
            None => store.set_meta("schema_version", &SCHEMA_VERSION.to_string())?,
            Some(v) if v == SCHEMA_VERSION.to_string() => {}
            Some(v) => {
                return Err(EmulatorError::Storage(format!(
                    "the database has schema version {v}; this emulator understands {SCHEMA_VERSION}"
                )));
            }
        }
        Ok(store)
    }

    /// A value from the `meta` table.
    pub(crate) fn meta(&self, key: &str) -> Result<Option<String>, rusqlite::Error> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    }

    /// Sets a value in the `meta` table.
    pub(crate) fn set_meta(&self, key: &str, value: &str) -> Result<(), rusqlite::Error> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Every stored policy. A row whose key no longer decodes is an error, not skipped.
    pub(crate) fn policies(&self) -> Result<Vec<Policy>, EmulatorError> {
        let mut stmt = self.conn.prepare(
            "SELECT name, primary_key, secondary_key, rights FROM policies ORDER BY rowid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, u8>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, primary, secondary, rights) = row?;
            let key = |text: &str| {
                SharedAccessKey::from_base64(text).map_err(|_| {
                    EmulatorError::Storage(format!("policy `{name}` has a corrupt key"))
                })
            };
            out.push(Policy {
                primary: key(&primary)?,
                secondary: key(&secondary)?,
                rights: Rights::from_bits(rights),
                name,
            });
        }
        Ok(out)
    }

    /// Adds a policy.
    pub(crate) fn insert_policy(&self, policy: &Policy) -> Result<(), rusqlite::Error> {
        self.conn.execute(
            "INSERT INTO policies (name, primary_key, secondary_key, rights) VALUES (?1, ?2, ?3, ?4)",
            params![
                policy.name,
                policy.primary.to_base64(),
                policy.secondary.to_base64(),
                policy.rights.bits()
            ],
        )?;
        Ok(())
    }

    /// Every stored identity, devices before their modules (the module key of a device is
    /// `""`, which sorts first). A row that no longer deserialises stops the start with the
    /// identity named: serving a registry with a silently missing device would be worse.
    pub(crate) fn identities(&self) -> Result<Vec<IdentityRecord>, EmulatorError> {
        let mut stmt = self.conn.prepare(
            "SELECT device_id, module_id, record FROM identities ORDER BY device_id, module_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (device, module, json) = row?;
            let record = serde_json::from_str(&json).map_err(|e| {
                EmulatorError::Storage(format!("identity `{device}/{module}` is corrupt: {e}"))
            })?;
            out.push(record);
        }
        Ok(out)
    }

    /// Applies `changes` in one transaction: all or nothing.
    ///
    /// This is the write-through step of ADR 4: the state owner calls it with the complete
    /// effect of one operation and changes memory only after it returns `Ok`. `DeleteDevice`
    /// also removes the device's modules and queued C2D messages, mirroring the hub. Re-putting
    /// a C2D row updates only its delivery count; re-putting a certificate only its PEM
    /// (its creation time is kept).
    pub(crate) fn apply(&mut self, changes: &[Change<'_>]) -> Result<(), rusqlite::Error> {
        let tx = self.conn.transaction()?;
        for change in changes {
            match change {
                Change::Put(record) => {
                    let json = serde_json::to_string(record)
                        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                    tx.execute(
                        "INSERT INTO identities (device_id, module_id, record) VALUES (?1, ?2, ?3)
                         ON CONFLICT(device_id, module_id) DO UPDATE SET record = excluded.record",
                        params![
                            record.device_id,
                            record.module_id.as_deref().unwrap_or(""),
                            json
                        ],
                    )?;
                }
                Change::DeleteDevice(device) => {
                    tx.execute("DELETE FROM identities WHERE device_id = ?1", [device])?;
                    tx.execute("DELETE FROM c2d WHERE device_id = ?1", [device])?;
                }
                Change::DeleteModule(device, module) => {
                    tx.execute(
                        "DELETE FROM identities WHERE device_id = ?1 AND module_id = ?2",
                        [device, module],
                    )?;
                }
                Change::PutC2d(row) => {
                    tx.execute(
                        "INSERT INTO c2d (id, device_id, enqueued_time, expiry, delivery_count, properties, body)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                         ON CONFLICT(id) DO UPDATE SET delivery_count = excluded.delivery_count",
                        params![
                            row.id as i64,
                            row.device_id,
                            row.enqueued_time,
                            row.expiry,
                            row.delivery_count,
                            row.properties,
                            row.body
                        ],
                    )?;
                }
                Change::DeleteC2d(id) => {
                    tx.execute("DELETE FROM c2d WHERE id = ?1", [*id as i64])?;
                }
                Change::PutInbox(kind, id, record) => {
                    tx.execute(
                        &format!("INSERT INTO {} (id, record) VALUES (?1, ?2)", kind.table()),
                        params![*id as i64, record],
                    )?;
                }
                Change::DeleteInbox(kind, id) => {
                    tx.execute(
                        &format!("DELETE FROM {} WHERE id = ?1", kind.table()),
                        [*id as i64],
                    )?;
                }
                Change::PutCertificate(name, pem, created) => {
                    tx.execute(
                        "INSERT INTO certificates (name, pem, created) VALUES (?1, ?2, ?3)
                         ON CONFLICT(name) DO UPDATE SET pem = excluded.pem",
                        params![name, pem, created],
                    )?;
                }
                Change::DeleteCertificate(name) => {
                    tx.execute("DELETE FROM certificates WHERE name = ?1", [name])?;
                }
                Change::PutJob(id, record) => {
                    tx.execute(
                        "INSERT INTO jobs (job_id, record) VALUES (?1, ?2)
                         ON CONFLICT(job_id) DO UPDATE SET record = excluded.record",
                        params![id, record],
                    )?;
                }
                Change::PutDeviceJob(job, device, record) => {
                    tx.execute(
                        "INSERT INTO device_jobs (job_id, device_id, record) VALUES (?1, ?2, ?3)
                         ON CONFLICT(job_id, device_id) DO UPDATE SET record = excluded.record",
                        params![job, device, record],
                    )?;
                }
                Change::DeleteJob(id) => {
                    tx.execute("DELETE FROM device_jobs WHERE job_id = ?1", [id])?;
                    tx.execute("DELETE FROM jobs WHERE job_id = ?1", [id])?;
                }
                Change::PutConfiguration(id, record) => {
                    tx.execute(
                        "INSERT INTO configurations (id, record) VALUES (?1, ?2)
                         ON CONFLICT(id) DO UPDATE SET record = excluded.record",
                        params![id, record],
                    )?;
                }
                Change::DeleteConfiguration(id) => {
                    tx.execute("DELETE FROM configurations WHERE id = ?1", [id])?;
                }
            }
        }
        tx.commit()
    }

    /// Every queued cloud-to-device message, oldest first.
    pub(crate) fn c2d_rows(&self) -> Result<Vec<C2dRow>, EmulatorError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, device_id, enqueued_time, expiry, delivery_count, properties, body FROM c2d ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(C2dRow {
                id: r.get::<_, i64>(0)? as u64,
                device_id: r.get(1)?,
                enqueued_time: r.get(2)?,
                expiry: r.get(3)?,
                delivery_count: r.get(4)?,
                properties: r.get(5)?,
                body: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every registered CA certificate: name, PEM, creation time.
    pub(crate) fn certificates(&self) -> Result<Vec<(String, String, String)>, EmulatorError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, pem, created FROM certificates ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every stored configuration as `(id, JSON)`, in id order.
    pub(crate) fn configurations(&self) -> Result<Vec<(String, String)>, EmulatorError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, record FROM configurations ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every stored job (jobs v2) as `(job id, record JSON)`.
    pub(crate) fn job_rows(&self) -> Result<Vec<(String, String)>, EmulatorError> {
        let mut stmt = self
            .conn
            .prepare("SELECT job_id, record FROM jobs ORDER BY job_id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every stored device job row as `(job id, device id, row JSON)`.
    pub(crate) fn device_job_rows(&self) -> Result<Vec<(String, String, String)>, EmulatorError> {
        let mut stmt = self.conn.prepare(
            "SELECT job_id, device_id, record FROM device_jobs ORDER BY job_id, device_id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every record waiting in a service-bound inbox, oldest first.
    pub(crate) fn inbox_rows(&self, kind: InboxKind) -> Result<Vec<(u64, String)>, EmulatorError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT id, record FROM {} ORDER BY id",
            kind.table()
        ))?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
