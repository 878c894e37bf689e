//! Durable storage: one SQLite database (`hub.db` in the data directory, or in memory).
//!
//! Only the hub's state owner touches it, from its own thread, so there is one connection and
//! no locking beyond SQLite's own. The database runs in WAL mode with `synchronous=NORMAL`:
//! a committed write survives a crash or `kill -9` of the emulator (it is in the WAL before the
//! commit returns); only a power loss can lose the last transactions, a trade the emulator, a
//! test tool, is happy to make for speed.
//!
//! Identities are rows of JSON ([`IdentityRecord`]), keyed by device id and module id (`""` for
//! the device itself): the schema stays small and the record shape can grow without
//! migrations. Every change of one API call is written in one transaction, so a crash never
//! leaves half of a bulk operation behind.

use std::path::Path;

use azure_iot_core::sas::SharedAccessKey;
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::EmulatorError;
use crate::hub::identity::IdentityRecord;
use crate::hub::policy::{Policy, Rights};

/// The database file in the data directory.
pub(crate) const DB_FILE: &str = "hub.db";

const SCHEMA_VERSION: i64 = 1;

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
}

/// The hub's database.
pub(crate) struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the database in `dir`, or an in-memory one.
    pub(crate) fn open(dir: Option<&Path>) -> Result<Self, EmulatorError> {
        let conn = match dir {
            Some(dir) => {
                let conn = Connection::open(dir.join(DB_FILE))?;
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                conn
            }
            None => Connection::open_in_memory()?,
        };
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
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

    /// Every stored identity, devices before their modules.
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
                }
                Change::DeleteModule(device, module) => {
                    tx.execute(
                        "DELETE FROM identities WHERE device_id = ?1 AND module_id = ?2",
                        [device, module],
                    )?;
                }
            }
        }
        tx.commit()
    }
}
