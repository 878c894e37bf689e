//! The writer thread: group commit, per-partition positions, retention.
//!
//! The thread owns the only read-write connection. It takes every append that is waiting (up
//! to [`MAX_GROUP`]), places each in its partition (next sequence number, offset, enqueued
//! time), writes them and the partitions' new positions in one transaction, then answers them
//! all and publishes the newest log-wide sequence number. After a commit, and at least every
//! [`IDLE_CHECK`] while idle, it enforces retention: the oldest rows go while they are older
//! than the maximum age or the log holds more than the maximum bytes (trimmed to 90 % of it, so
//! a full log is not trimmed on every commit), at most a few thousand rows per pass so that a
//! large trim is spread over the following commits instead of stalling one.

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{Connection, Transaction, params};
use tokio::sync::oneshot;

use super::Retention;
use super::partition::partition_of;

/// Most appends committed in one transaction.
const MAX_GROUP: usize = 1024;

/// How often an idle writer checks the age limit.
const IDLE_CHECK: Duration = Duration::from_secs(60);

/// Rows looked at per retention step.
const TRIM_BATCH: usize = 512;

/// Most retention steps per pass: a pass deletes at most `TRIM_BATCH * MAX_TRIM_STEPS` rows,
/// so trimming never stalls ingest for long; the next commit (or idle check) goes on.
const MAX_TRIM_STEPS: usize = 8;

/// Bytes a row costs beyond its text and body (its integer columns and index entries).
const ROW_OVERHEAD: u64 = 64;

/// An append as the writer receives it: already encoded for storage.
/// An append as queued: the room it holds in the queue is given back once it is committed.
pub(super) struct Queued {
    pub(super) append: Append,
    pub(super) room: Option<tokio::sync::OwnedSemaphorePermit>,
}

pub(super) struct Append {
    /// The row to write.
    pub(super) row: Row,
    /// Answered with the log-wide sequence number once committed, or the error.
    pub(super) reply: oneshot::Sender<Result<u64, String>>,
}

/// The stored form of one message, before it is placed in a partition.
pub(super) struct Row {
    pub(super) device_id: String,
    pub(super) module_id: Option<String>,
    pub(super) auth_method: String,
    /// ISO 8601, as the front-end stamped it.
    pub(super) enqueued_time: String,
    /// The same instant in ms since the epoch.
    pub(super) enqueued_ms: i64,
    /// JSON object of the sender's system properties.
    pub(super) system: String,
    /// JSON array of typed application properties.
    pub(super) properties: String,
    pub(super) body: Bytes,
}

impl Row {
    /// The bytes this row counts for: its offset increment and its share of the size limit.
    pub(super) fn size(&self) -> u64 {
        let text = self.device_id.len()
            + self.module_id.as_deref().map_or(0, str::len)
            + self.auth_method.len()
            + self.enqueued_time.len()
            + self.system.len()
            + self.properties.len()
            + self.body.len();
        text as u64 + ROW_OVERHEAD
    }
}

/// One partition's next position.
#[derive(Debug, Clone, Copy, Default)]
struct PartitionState {
    next_seq: i64,
    next_offset: i64,
    last_offset: i64,
    last_enqueued_ms: i64,
}

/// Where a row was placed.
struct Placement {
    partition: u32,
    seq: i64,
    offset: i64,
    enqueued_ms: i64,
}

/// Every partition's next position, as stored in the `partitions` table.
#[derive(Clone)]
pub(super) struct Partitions {
    count: u32,
    states: Vec<PartitionState>,
}

impl Partitions {
    /// Loads the positions of a log of `count` partitions (new partitions start at 0).
    pub(super) fn load(conn: &Connection, count: u32) -> Result<Self, rusqlite::Error> {
        let mut states = vec![
            PartitionState {
                last_offset: -1,
                ..Default::default()
            };
            count as usize
        ];
        let mut stmt = conn.prepare(
            "SELECT partition, next_seq, next_offset, last_offset, last_enqueued_ms FROM partitions",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                PartitionState {
                    next_seq: r.get(1)?,
                    next_offset: r.get(2)?,
                    last_offset: r.get(3)?,
                    last_enqueued_ms: r.get(4)?,
                },
            ))
        })?;
        for row in rows {
            let (p, state) = row?;
            if let Some(slot) = usize::try_from(p).ok().and_then(|p| states.get_mut(p)) {
                *slot = state;
            }
        }
        Ok(Self { count, states })
    }

    fn place(&mut self, row: &Row) -> Placement {
        let partition = partition_of(&row.device_id, self.count);
        let mut fallback = PartitionState::default();
        let state = self
            .states
            .get_mut(partition as usize)
            .unwrap_or(&mut fallback);
        // Enqueued times never go backwards within a partition (Event Hubs readers position by
        // time), even when two front-ends' clocks were read in the other order.
        let enqueued_ms = row.enqueued_ms.max(state.last_enqueued_ms);
        let placement = Placement {
            partition,
            seq: state.next_seq,
            offset: state.next_offset,
            enqueued_ms,
        };
        state.next_seq += 1;
        state.last_offset = state.next_offset;
        state.next_offset += row.size() as i64;
        state.last_enqueued_ms = enqueued_ms;
        placement
    }

    /// Stores every used partition's position in `tx`.
    pub(super) fn save(&self, tx: &Transaction<'_>) -> Result<(), rusqlite::Error> {
        let mut upsert = tx.prepare_cached(
            "INSERT OR REPLACE INTO partitions
                 (partition, next_seq, next_offset, last_offset, last_enqueued_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (p, s) in self.states.iter().enumerate() {
            if s.next_seq > 0 {
                upsert.execute(params![
                    p as i64,
                    s.next_seq,
                    s.next_offset,
                    s.last_offset,
                    s.last_enqueued_ms
                ])?;
            }
        }
        Ok(())
    }
}

/// Places `row` and inserts it, with log-wide sequence number `seq` if given (migration keeps
/// v1's numbers), else the next one. Returns the log-wide sequence number.
pub(super) fn insert(
    tx: &Transaction<'_>,
    partitions: &mut Partitions,
    row: &Row,
    seq: Option<i64>,
) -> Result<u64, rusqlite::Error> {
    let placed = partitions.place(row);
    let enqueued_time = if placed.enqueued_ms == row.enqueued_ms {
        row.enqueued_time.clone()
    } else {
        super::properties::timestamp_from_ms(placed.enqueued_ms)
            .map(azure_iot_core::datetime::format_timestamp)
            .unwrap_or_else(|| row.enqueued_time.clone())
    };
    let mut stmt = tx.prepare_cached(
        "INSERT INTO telemetry (seq, partition, partition_seq, offset, enqueued_ms, device_id,
             module_id, auth_method, enqueued_time, system, properties, body, size)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    stmt.execute(params![
        seq,
        placed.partition,
        placed.seq,
        placed.offset,
        placed.enqueued_ms,
        row.device_id,
        row.module_id,
        row.auth_method,
        enqueued_time,
        row.system,
        row.properties,
        row.body.as_ref(),
        row.size() as i64,
    ])?;
    Ok(tx.last_insert_rowid() as u64)
}

/// The writer's state.
pub(super) struct Writer {
    conn: Connection,
    partitions: Partitions,
    retention: Retention,
    /// Sum of the stored rows' sizes.
    stored_bytes: u64,
    /// Enqueued time of the oldest row, if any.
    oldest_ms: Option<i64>,
    notify: tokio::sync::watch::Sender<u64>,
}

impl Writer {
    /// A writer over a prepared (schema v2) connection.
    pub(super) fn new(
        conn: Connection,
        partition_count: u32,
        retention: Retention,
        notify: tokio::sync::watch::Sender<u64>,
    ) -> Result<Self, rusqlite::Error> {
        let partitions = Partitions::load(&conn, partition_count)?;
        let stored_bytes: i64 =
            conn.query_row("SELECT COALESCE(SUM(size), 0) FROM telemetry", [], |r| {
                r.get(0)
            })?;
        let mut writer = Self {
            conn,
            partitions,
            retention,
            stored_bytes: stored_bytes.max(0) as u64,
            oldest_ms: None,
            notify,
        };
        writer.oldest_ms = writer.load_oldest()?;
        Ok(writer)
    }

    /// Serves appends until every sender is gone.
    pub(super) fn run(mut self, queue: mpsc::Receiver<Queued>) {
        loop {
            let first = match queue.recv_timeout(IDLE_CHECK) {
                Ok(first) => first,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.retain(now_ms());
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut group = vec![first.append];
            let mut room = vec![first.room];
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(next) => {
                        group.push(next.append);
                        room.push(next.room);
                    }
                    Err(_) => break,
                }
            }
            let committed = self.commit_group(group);
            drop(room);
            if let Some(newest) = committed {
                self.notify.send_replace(newest);
                self.retain(now_ms());
            }
        }
    }

    /// Writes a group in one transaction and answers each append with its sequence number (or,
    /// if the commit failed, with the error: nothing in the group was acknowledged).
    /// Returns the newest sequence number written, if the commit succeeded.
    pub(super) fn commit_group(&mut self, group: Vec<Append>) -> Option<u64> {
        let before = self.partitions.clone();
        let partitions = &mut self.partitions;
        let result = (|| -> Result<Vec<u64>, rusqlite::Error> {
            let tx = self.conn.transaction()?;
            let mut seqs = Vec::with_capacity(group.len());
            for append in &group {
                seqs.push(insert(&tx, partitions, &append.row, None)?);
            }
            partitions.save(&tx)?;
            tx.commit()?;
            Ok(seqs)
        })();
        match result {
            Ok(seqs) => {
                for append in &group {
                    self.stored_bytes += append.row.size();
                }
                if self.oldest_ms.is_none() {
                    self.oldest_ms = group.first().map(|a| a.row.enqueued_ms);
                }
                let newest = seqs.last().copied();
                for (append, seq) in group.into_iter().zip(seqs) {
                    let _ = append.reply.send(Ok(seq));
                }
                newest
            }
            Err(e) => {
                self.partitions = before;
                tracing::error!(error = %e, "telemetry commit failed; the messages are not acknowledged");
                for append in group {
                    let _ = append.reply.send(Err(e.to_string()));
                }
                None
            }
        }
    }

    /// Enforces retention at `now_ms`, logging (not failing on) a storage error.
    pub(super) fn retain(&mut self, now_ms: i64) {
        match self.enforce_retention(now_ms) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "telemetry retention"),
            Err(e) => tracing::warn!(error = %e, "telemetry retention failed; will retry"),
        }
    }

    /// Deletes the oldest rows while they are older than the age limit at `now_ms` or the log
    /// is over its size limit. Returns how many rows went.
    pub(super) fn enforce_retention(&mut self, now_ms: i64) -> Result<u64, rusqlite::Error> {
        let max_age_ms = i64::try_from(self.retention.max_age.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms.saturating_sub(max_age_ms);
        let max_bytes = self.retention.max_bytes;
        let too_old = self.oldest_ms.is_some_and(|o| o < cutoff);
        if !too_old && self.stored_bytes <= max_bytes {
            return Ok(0);
        }
        // Over the size limit: trim to 90 %, so the next commits do not trim again at once.
        let size_target = if self.stored_bytes > max_bytes {
            max_bytes - max_bytes / 10
        } else {
            max_bytes
        };
        let mut deleted = 0u64;
        let tx = self.conn.transaction()?;
        let mut remaining = self.stored_bytes;
        for _ in 0..MAX_TRIM_STEPS {
            let rows: Vec<(i64, i64, i64)> = tx
                .prepare_cached(
                    "SELECT seq, enqueued_ms, size FROM telemetry ORDER BY seq LIMIT ?1",
                )?
                .query_map([TRIM_BATCH as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<Result<_, _>>()?;
            let mut last = None;
            let mut count = 0u64;
            let mut stopped = rows.len() < TRIM_BATCH;
            for (seq, enqueued_ms, size) in &rows {
                if *enqueued_ms < cutoff || remaining > size_target {
                    last = Some(*seq);
                    remaining = remaining.saturating_sub((*size).max(0) as u64);
                    count += 1;
                } else {
                    stopped = true;
                    break;
                }
            }
            if let Some(last) = last {
                tx.execute("DELETE FROM telemetry WHERE seq <= ?1", [last])?;
                deleted += count;
            }
            if stopped || last.is_none() {
                break;
            }
        }
        tx.commit()?;
        self.stored_bytes = remaining;
        self.oldest_ms = self.load_oldest()?;
        Ok(deleted)
    }

    fn load_oldest(&self) -> Result<Option<i64>, rusqlite::Error> {
        self.conn.query_row(
            "SELECT MIN(enqueued_ms) FROM (SELECT enqueued_ms FROM telemetry ORDER BY seq LIMIT 1)",
            [],
            |r| r.get(0),
        )
    }

    /// The bytes the log holds, as retention counts them.
    #[cfg(test)]
    pub(super) fn stored_bytes(&self) -> u64 {
        self.stored_bytes
    }
}

/// Now, in ms since the Unix epoch.
pub(super) fn now_ms() -> i64 {
    super::properties::ms_of(time::OffsetDateTime::now_utc())
}
