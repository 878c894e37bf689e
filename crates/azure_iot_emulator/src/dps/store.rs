//! The DPS database (`dps.db` in the data directory, or in memory): the DPS actor's durable
//! copy, written before memory on every change (ADR 4 inside the actor, ADR 9).
//!
//! Tables: `meta` (id scope, policy keys, schema version) and one table of JSON rows per kind
//! of record (`enrollments`, `enrollment_groups`, `registrations`, `ca_certificates`,
//! `tpm_sessions`), keyed by
//! the lower-cased id (DPS ids are case-insensitive; a CA row's id is its name). Every change of one request lands in one transaction.

use std::path::Path;

use azure_iot_protocol::dps::enrollment::{EnrollmentGroup, IndividualEnrollment};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::certificates::StoredCa;
use super::records::RegistrationRecord;
use super::tpm::session::TpmSession;
use crate::config::Durability;
use crate::error::EmulatorError;

/// The database file in the data directory.
pub(crate) const DB_FILE: &str = "dps.db";

/// The layout version in `meta.schema_version`; another value is refused at open.
const SCHEMA_VERSION: &str = "1";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS enrollments (
    id     TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS enrollment_groups (
    id     TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS registrations (
    id     TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ca_certificates (
    id     TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tpm_sessions (
    id     TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
";

/// A kind of record, and its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    /// Individual enrollments.
    Enrollments,
    /// Enrollment groups.
    Groups,
    /// Registration records (state and last operation).
    Registrations,
    /// CA certificates registered with the DPS (`dps::certificates`).
    Certificates,
    /// TPM registrations' last challenge keys (`dps::tpm::session`).
    TpmSessions,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Self::Enrollments => "enrollments",
            Self::Groups => "enrollment_groups",
            Self::Registrations => "registrations",
            Self::Certificates => "ca_certificates",
            Self::TpmSessions => "tpm_sessions",
        }
    }
}

/// One change to the database.
pub(crate) enum Change<'a> {
    /// Insert or replace an individual enrollment.
    PutEnrollment(&'a IndividualEnrollment),
    /// Insert or replace an enrollment group.
    PutGroup(&'a EnrollmentGroup),
    /// Insert or replace a registration record.
    PutRegistration(&'a RegistrationRecord),
    /// Insert or replace a registered CA certificate.
    PutCertificate(&'a StoredCa),
    /// Insert or replace a TPM registration's challenge keys.
    PutTpmSession(&'a TpmSession),
    /// Delete a row by its (any-case) id.
    Delete(Table, &'a str),
}

/// The DPS database: one connection, owned by the DPS state thread.
pub(crate) struct DpsStore {
    conn: Connection,
}

impl DpsStore {
    /// Opens (creating if needed) `dps.db` in `dir`, or an in-memory database.
    pub(crate) fn open(dir: Option<&Path>, durability: Durability) -> Result<Self, EmulatorError> {
        let conn = crate::store::open_connection(
            dir.map(|d| d.join(DB_FILE)).as_deref(),
            durability,
            SCHEMA,
        )?;
        let store = Self { conn };
        match store.meta("schema_version")? {
            None => store.set_meta("schema_version", SCHEMA_VERSION)?,
            Some(v) if v == SCHEMA_VERSION => {}
            Some(v) => {
                return Err(EmulatorError::Storage(format!(
                    "dps.db has schema version {v}; this emulator understands {SCHEMA_VERSION}"
                )));
            }
        }
        Ok(store)
    }

    /// A value from `meta`.
    pub(crate) fn meta(&self, key: &str) -> Result<Option<String>, EmulatorError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Sets a value in `meta`.
    pub(crate) fn set_meta(&self, key: &str, value: &str) -> Result<(), EmulatorError> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Every row of `table`, decoded. A row that no longer decodes stops the start with an
    /// error naming it.
    pub(crate) fn rows<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<T>, EmulatorError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT id, record FROM {} ORDER BY id",
            table.name()
        ))?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, text) = row?;
            out.push(serde_json::from_str(&text).map_err(|e| {
                EmulatorError::Storage(format!("{} row `{id}` is unreadable: {e}", table.name()))
            })?);
        }
        Ok(out)
    }

    /// Applies `changes` in one transaction: all of them or none.
    pub(crate) fn apply(&mut self, changes: &[Change<'_>]) -> Result<(), EmulatorError> {
        let tx = self.conn.transaction()?;
        for change in changes {
            match change {
                Change::PutEnrollment(e) => put(&tx, Table::Enrollments, &e.registration_id, e)?,
                Change::PutGroup(g) => put(&tx, Table::Groups, &g.enrollment_group_id, g)?,
                Change::PutRegistration(r) => {
                    put(&tx, Table::Registrations, &r.state.registration_id, r)?
                }
                Change::PutCertificate(c) => put(&tx, Table::Certificates, &c.name, c)?,
                Change::PutTpmSession(t) => put(&tx, Table::TpmSessions, &t.registration_id, t)?,
                Change::Delete(table, id) => {
                    tx.execute(
                        &format!("DELETE FROM {} WHERE id = ?1", table.name()),
                        [id.to_ascii_lowercase()],
                    )?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

fn put<T: Serialize>(
    tx: &rusqlite::Transaction<'_>,
    table: Table,
    id: &str,
    record: &T,
) -> Result<(), EmulatorError> {
    let text = serde_json::to_string(record).map_err(|e| {
        EmulatorError::Storage(format!("a {} row cannot be encoded: {e}", table.name()))
    })?;
    tx.execute(
        &format!(
            "INSERT INTO {} (id, record) VALUES (?1, ?2)
             ON CONFLICT(id) DO UPDATE SET record = excluded.record",
            table.name()
        ),
        params![id.to_ascii_lowercase(), text],
    )?;
    Ok(())
}
