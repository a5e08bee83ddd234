//! The SQLite side of a batch. SQLite has one writer, in-process, so the
//! writer owns one connection of its own (rusqlite, on a thread of its own)
//! and runs the whole batch there: no statement crosses a thread, every
//! statement is prepared once and cached, and each row is one execution of a
//! single-row statement (in-process, a row costs no round trip). Going
//! through sqlx instead cost two thread hand-offs per statement and more CPU
//! in value handling than SQLite's own work (docs/PERFORMANCE.md).
//!
//! Rows are written with the same values and conflict rules as the
//! multi-row statements `calltrail reprocess` uses (`store.rs`, `rows.rs`):
//! the values come from the same functions, and are encoded as sqlx encodes
//! them (timestamps as RFC 3339 text with `+00:00`, JSON as text), so the
//! read side cannot tell which path wrote a row.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{Connection, OpenFlags, Row, Transaction, TransactionBehavior, params_from_iter};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, Statement, Value as DbValue};
use serde_json::Value;

use super::store::{
    self, ACTION_COLUMNS, ANALYSIS_COLUMNS, ATTEMPT_COLUMNS, CALL_COLUMNS, EVENT_COLUMNS, Input,
    Phases, Receipt, cost, project, receipts,
};
use super::wal_writes;
use crate::domain::{AttemptState, CallState, CallStatus, Changes, StoredEvent};

/// The batch's calls with their current attempts, one call per execution.
const LOAD_CALL: &str = "SELECT c.id, c.metadata, c.started_at, c.ended_at, c.duration_seconds, \
    c.recording_url, c.detail_url, c.re_attempt_count, c.rescheduled_count, c.final_status, \
    c.lifecycle_ended, c.success, c.credits_used, c.to_number, c.agent_id, c.ended_reason, \
    c.cost_amount, c.cost_per_minute, c.cost_currency, c.created_at, c.updated_at, c.last_event_at, \
    c.attempt_count, a.number, a.status, a.connected, a.started_at, a.ended_at, a.duration_seconds, \
    a.recording_url, a.detail_url, a.credits_used, a.created_at, a.updated_at \
    FROM call c LEFT JOIN attempt a ON a.call_id = c.id AND a.number = c.attempt_count \
    WHERE c.id = ?1";

/// Stored copies of one delivery (dedupe): v1 by its call and key (the key
/// hashes the bytes, which name the call), through `webhook_event_dedupe`;
/// v2 by the platform's event id, through `webhook_event_upstream_id`
/// (partial: hence `IS NOT NULL`).
const LOAD_STORED: &str = "SELECT id, call_id, attempt_number, dedupe_key FROM webhook_event \
    WHERE call_id IS ?1 AND dedupe_key = ?2";
const LOAD_STORED_UPSTREAM: &str = "SELECT id, call_id, attempt_number, dedupe_key FROM webhook_event \
     WHERE upstream_id = ?1 AND upstream_id IS NOT NULL";

/// Reserve positions in commit order (SQLite's one writer commits in this
/// order; the clock keeps `seq` one sequence with PostgreSQL's scheme).
const RESERVE_SEQS: &str = "UPDATE event_clock SET last = last + ?1 WHERE id = 1 RETURNING last";

/// One writer's connection to the database file.
pub(super) struct SqliteStore {
    conn: Connection,
    /// The single-row statements, built once.
    sql: Statements,
    /// The last `seq` this connection committed (0: none yet).
    head: i64,
    /// Calls as this connection last loaded or committed them, so a batch
    /// loads only calls it has not seen: valid while no other connection
    /// has written the database (`PRAGMA data_version` unchanged, read
    /// inside each batch's write transaction), emptied otherwise and when
    /// it holds [`KEPT_CALLS`].
    known: HashMap<String, CallState>,
    data_version: i64,
    /// The last batch failed because it could not begin its write (the
    /// file stayed locked by another connection past the busy timeout, or
    /// could not be read): nothing it carried was at fault.
    down: bool,
}

/// Most calls [`SqliteStore`] keeps between batches (a few MB).
const KEPT_CALLS: usize = 4096;

struct Statements {
    event: String,
    /// A new call (an upsert, as `reprocess` writes calls).
    call: String,
    /// A stored call, by which of (status, duration) changed: see [`call_update`].
    call_updates: [String; 4],
    attempt: String,
    analysis: String,
    action: String,
}

impl SqliteStore {
    /// Open the file `db` is connected to, with the settings of `db`'s own
    /// connections (journal mode is the file's; `synchronous`, the busy
    /// timeout and foreign keys are read back from a pooled connection).
    pub(super) async fn open_like(db: &DatabaseConnection) -> Result<Self, DbErr> {
        let pool = db.get_sqlite_connection_pool();
        let path: PathBuf = pool.connect_options().get_filename().to_path_buf();
        if path.as_os_str() == ":memory:" {
            return Err(DbErr::Custom(
                "an in-memory SQLite database cannot be shared with the ingest writer; use a file"
                    .into(),
            ));
        }
        let pragma = |name: &'static str| {
            let sql = format!("PRAGMA {name}");
            async move {
                db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
                    .await?
                    .ok_or_else(|| DbErr::Custom(format!("PRAGMA {name} answered nothing")))?
                    .try_get_by_index::<i64>(0)
            }
        };
        let synchronous = pragma("synchronous").await?;
        let busy_ms = pragma("busy_timeout").await?;
        let foreign_keys = pragma("foreign_keys").await?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        // With FULL (2) or EXTRA (3) each commit syncs the WAL before it is
        // published, so its frames may be written in one go (`wal_writes.rs`).
        let gathering = if synchronous >= 2 {
            wal_writes::register().map_err(DbErr::Custom)?;
            Some(
                Connection::open_with_flags_and_vfs(&path, flags, wal_writes::NAME)
                    .map_err(sql_err)?,
            )
            .filter(wal_writes::powersafe_overwrite)
        } else {
            None
        };
        let conn = match gathering {
            Some(conn) => conn,
            None => Connection::open_with_flags(&path, flags).map_err(sql_err)?,
        };
        conn.busy_timeout(Duration::from_millis(busy_ms.max(0) as u64))
            .map_err(sql_err)?;
        // A 32 MiB page cache (SQLite's default is 2 MiB): the indexes the
        // writer updates stay in memory as the tables grow (-10 % writer time
        // per delivery at 14,000 deliveries already). A checkpoint every
        // 10,000 WAL pages (40 MiB) instead of 1,000: the pages every batch
        // touches (the tail of the raw log, its indexes, the clock) are
        // copied into the database once per checkpoint, so fewer
        // checkpoints copy fewer pages (-7 % writer time per delivery).
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = {foreign_keys}; \
             PRAGMA cache_size = -32768; PRAGMA wal_autocheckpoint = 10000;"
        ))
        .map_err(sql_err)?;
        conn.set_prepared_statement_cache_capacity(16);
        Ok(Self {
            conn,
            sql: Statements {
                event: single_row("webhook_event", EVENT_COLUMNS, ""),
                call: single_row("call", CALL_COLUMNS, &store::CALL_UPSERT),
                call_updates: [0, 1, 2, 3].map(call_update),
                attempt: single_row("attempt", ATTEMPT_COLUMNS, &store::ATTEMPT_UPSERT),
                analysis: single_row("analysis", ANALYSIS_COLUMNS, &store::ANALYSIS_UPSERT),
                action: single_row("action", ACTION_COLUMNS, ""),
            },
            head: 0,
            known: HashMap::new(),
            data_version: 0,
            down: false,
        })
    }

    /// The last position (`seq`) this connection committed (0: none yet).
    pub(super) fn head(&self) -> i64 {
        self.head
    }

    /// Commit a batch in one `BEGIN IMMEDIATE` transaction; one receipt per
    /// delivery, in order. On error nothing of the batch is written.
    /// Whether the last failed batch failed because the database was
    /// unavailable (see `down`).
    pub(super) fn down(&self) -> bool {
        self.down
    }

    pub(super) fn commit(&mut self, batch: &[Input<'_>]) -> Result<Vec<Receipt>, DbErr> {
        self.down = false;
        let committed = self.try_commit(batch);
        if committed.is_err() {
            // The transaction rolled back: WAL frames it spilled must not
            // reach the file now that another connection may write there.
            wal_writes::discard_pending(&self.conn);
            // And should a failed COMMIT have reached the file after all,
            // the calls kept from before it would be stale.
            self.known.clear();
        }
        committed
    }

    fn try_commit(&mut self, batch: &[Input<'_>]) -> Result<Vec<Receipt>, DbErr> {
        let txn = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|err| {
                self.down = true;
                sql_err(err)
            })?;
        let call_ids: BTreeSet<&str> = batch
            .iter()
            .filter_map(|(d, ..)| d.call_id.as_deref())
            .collect();
        // Where the writer's time goes, per batch (RUST_LOG=calltrail::ingest=debug).
        let mut clock = Phases::start();
        let data_version: i64 = txn
            .query_row("PRAGMA data_version", [], |row| row.get(0))
            .map_err(sql_err)?;
        if data_version != self.data_version || self.known.len() > KEPT_CALLS {
            // Another connection wrote: what this one knows may be stale.
            self.known.clear();
            self.data_version = data_version;
        }
        let unknown: BTreeSet<&str> = call_ids
            .iter()
            .copied()
            .filter(|id| !self.known.contains_key(*id))
            .collect();
        for call in load_calls(&txn, &unknown)? {
            self.known.insert(call.id.clone(), call);
        }
        let calls: Vec<CallState> = call_ids
            .iter()
            .filter_map(|id| self.known.get(*id).cloned())
            .collect();
        let load_us = clock.lap();
        let stored = load_stored(&txn, batch).map_err(sql_err)?;
        let dedupe_us = clock.lap();
        let before: HashMap<String, Indexed> = calls
            .iter()
            .map(|c| (c.id.clone(), Indexed::of(c)))
            .collect();
        let (decisions, changes) = project(calls, stored, batch);
        let apply_us = clock.lap();
        let written = changes.calls.clone();
        let (ids, head) = write(&txn, &self.sql, changes, &before).map_err(sql_err)?;
        let write_us = clock.lap();
        txn.commit().map_err(sql_err)?;
        self.head = self.head.max(head);
        self.known
            .extend(written.into_iter().map(|call| (call.id.clone(), call)));
        tracing::debug!(
            size = batch.len(),
            load_us,
            dedupe_us,
            apply_us,
            write_us,
            commit_us = clock.lap(),
            "sqlite batch phases"
        );
        Ok(receipts(decisions, &ids))
    }
}

fn sql_err(err: rusqlite::Error) -> DbErr {
    DbErr::Custom(err.to_string())
}

/// What of a stored call decides which of its indexes an update rewrites
/// (besides `updated_at` and `last_event_at`, which change with every
/// delivery): its status (`call_status`) and duration (`call_duration`).
#[derive(Clone, Copy, PartialEq)]
struct Indexed {
    status: CallStatus,
    duration: Option<f64>,
}

impl Indexed {
    fn of(c: &CallState) -> Self {
        Self {
            status: c.status(),
            duration: c.duration_seconds,
        }
    }
}

/// `UPDATE call SET … WHERE id = ?1`, parameters numbered as
/// [`CALL_COLUMNS`], and the row's `version` bumped (PostgreSQL's writers
/// rely on it; SQLite keeps it true too). SQLite rewrites an index on every update whose SET
/// names one of its columns, changed or not; so status (bit 0) and duration
/// (bit 1) are set only when they changed, which spares most deliveries two
/// index entries (a page each, written to the WAL at commit).
fn call_update(variant: usize) -> String {
    let set: Vec<String> = CALL_COLUMNS
        .iter()
        .enumerate()
        .filter(|(_, c)| match **c {
            "id" | "created_at" => false,
            "status" => variant & 1 != 0,
            "duration_seconds" => variant & 2 != 0,
            _ => true,
        })
        .map(|(i, c)| format!("\"{c}\" = ?{}", i + 1))
        .chain(["\"version\" = \"version\" + 1".to_owned()])
        .collect();
    format!("UPDATE \"call\" SET {} WHERE \"id\" = ?1", set.join(", "))
}

/// `INSERT INTO table (columns) VALUES (?1, …) tail`.
fn single_row(table: &str, columns: &[&str], tail: &str) -> String {
    let placeholders: Vec<String> = (1..=columns.len()).map(|n| format!("?{n}")).collect();
    format!(
        "INSERT INTO \"{table}\" (\"{}\") VALUES ({}) {tail}",
        columns.join("\", \""),
        placeholders.join(", ")
    )
}

fn load_calls(txn: &Transaction<'_>, ids: &BTreeSet<&str>) -> Result<Vec<CallState>, DbErr> {
    let mut statement = txn.prepare_cached(LOAD_CALL).map_err(sql_err)?;
    let mut calls = Vec::with_capacity(ids.len());
    for id in ids {
        let mut rows = statement.query([id]).map_err(sql_err)?;
        if let Some(row) = rows.next().map_err(sql_err)? {
            calls.push(loaded_call(row)?);
        }
    }
    Ok(calls)
}

/// One row of [`LOAD_CALL`]; a call without its current attempt is an error.
fn loaded_call(row: &Row<'_>) -> Result<CallState, DbErr> {
    let id: String = row.get(0).map_err(sql_err)?;
    let attempt_count: i32 = row.get(22).map_err(sql_err)?;
    let Some(number) = row.get::<_, Option<i32>>(23).map_err(sql_err)? else {
        return Err(DbErr::RecordNotFound(format!(
            "attempt {attempt_count} of call {id}"
        )));
    };
    let status_word: String = row.get(24).map_err(sql_err)?;
    let metadata = match row.get_ref(1).map_err(sql_err)? {
        ValueRef::Text(text) => match serde_json::from_slice(text) {
            Ok(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        },
        _ => serde_json::Map::new(),
    };
    let time = |i: usize| -> Result<Option<DateTime<Utc>>, DbErr> {
        match row.get_ref(i).map_err(sql_err)? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(text) => std::str::from_utf8(text)
                .ok()
                .and_then(parse_time)
                .map(Some)
                .ok_or_else(|| DbErr::Type(format!("column {i} is not a timestamp"))),
            _ => Err(DbErr::Type(format!("column {i} is not a timestamp"))),
        }
    };
    let required = |i: usize| {
        time(i)?.ok_or_else(|| DbErr::Type(format!("column {i} is NULL, not a timestamp")))
    };
    Ok(CallState {
        metadata,
        started_at: time(2)?,
        ended_at: time(3)?,
        duration_seconds: row.get(4).map_err(sql_err)?,
        recording_url: row.get(5).map_err(sql_err)?,
        detail_url: row.get(6).map_err(sql_err)?,
        re_attempt_count: row.get(7).map_err(sql_err)?,
        rescheduled_count: row.get(8).map_err(sql_err)?,
        final_status: row.get(9).map_err(sql_err)?,
        lifecycle_ended: row.get(10).map_err(sql_err)?,
        success: row.get(11).map_err(sql_err)?,
        credits_used: row.get(12).map_err(sql_err)?,
        to: row.get(13).map_err(sql_err)?,
        agent_id: row.get(14).map_err(sql_err)?,
        ended_reason: row.get(15).map_err(sql_err)?,
        cost: cost(
            row.get(16).map_err(sql_err)?,
            row.get(17).map_err(sql_err)?,
            row.get(18).map_err(sql_err)?,
        ),
        created_at: required(19)?,
        updated_at: required(20)?,
        last_event_at: required(21)?,
        current: AttemptState {
            number,
            status: CallStatus::from_db(&status_word).ok_or_else(|| {
                DbErr::Type(format!(
                    "unknown call status {status_word:?} in the database"
                ))
            })?,
            connected: row.get(25).map_err(sql_err)?,
            started_at: time(26)?,
            ended_at: time(27)?,
            duration_seconds: row.get(28).map_err(sql_err)?,
            recording_url: row.get(29).map_err(sql_err)?,
            detail_url: row.get(30).map_err(sql_err)?,
            credits_used: row.get(31).map_err(sql_err)?,
            created_at: required(32)?,
            updated_at: required(33)?,
        },
        id,
    })
}

/// A stored timestamp: RFC 3339 (what every writer stores), or SQLite's
/// own `YYYY-MM-DD HH:MM:SS` in UTC.
fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(text, "%F %T%.f")
                .ok()
                .map(|t| t.and_utc())
        })
}

fn load_stored(txn: &Transaction<'_>, batch: &[Input<'_>]) -> rusqlite::Result<Vec<StoredEvent>> {
    let lookups: BTreeSet<(Option<&str>, &str, Option<&str>)> = batch
        .iter()
        .map(|(d, ..)| {
            let upstream = d.upstream_id.as_deref();
            (d.call_id.as_deref(), d.dedupe_key.as_str(), upstream)
        })
        .collect();
    let mut by_key = txn.prepare_cached(LOAD_STORED)?;
    let mut by_upstream = txn.prepare_cached(LOAD_STORED_UPSTREAM)?;
    let mut stored = Vec::new();
    for (call_id, key, upstream) in lookups {
        let row = |row: &Row<'_>| {
            Ok(StoredEvent {
                id: row.get(0)?,
                call_id: row.get(1)?,
                attempt_number: row.get(2)?,
                dedupe_key: row.get(3)?,
            })
        };
        let rows = match upstream {
            Some(id) => by_upstream.query_map([id], row)?,
            None => by_key.query_map(rusqlite::params![call_id, key], row)?,
        };
        for row in rows {
            stored.push(row?);
        }
    }
    Ok(stored)
}

/// Write a batch's changes; returns the ids of its new raw-log rows, in
/// order, and the last `seq` they took (0 if none).
fn write(
    txn: &Transaction<'_>,
    sql: &Statements,
    changes: Changes,
    before: &HashMap<String, Indexed>,
) -> rusqlite::Result<(Vec<i64>, i64)> {
    let Changes {
        events,
        calls,
        attempts,
        analyses,
        actions,
    } = changes;
    let mut ids = Vec::with_capacity(events.len());
    let mut head = 0;
    if !events.is_empty() {
        let last: i64 = txn
            .prepare_cached(RESERVE_SEQS)?
            .query_row([events.len() as i64], |row| row.get(0))?;
        let first_seq = last - events.len() as i64 + 1;
        head = last;
        let mut insert = txn.prepare_cached(&sql.event)?;
        for (e, seq) in events.into_iter().zip(first_seq..) {
            one(insert.execute(params(store::event_values(e, seq)))?)?;
            ids.push(txn.last_insert_rowid());
        }
    }
    for c in &calls {
        let text = match before.get(&c.id) {
            Some(old) => {
                let now = Indexed::of(c);
                let status = usize::from(now.status != old.status);
                let duration = usize::from(now.duration != old.duration);
                &sql.call_updates[status | duration << 1]
            }
            None => &sql.call,
        };
        txn.prepare_cached(text)?
            .execute(params(store::call_values(c)))?;
    }
    let mut upsert = txn.prepare_cached(&sql.attempt)?;
    for (call_id, a) in &attempts {
        upsert.execute(params(store::attempt_values(call_id, a)))?;
    }
    let mut upsert = txn.prepare_cached(&sql.analysis)?;
    for (i, a) in analyses {
        one(upsert.execute(params(store::analysis_values(ids[i], a)))?)?;
    }
    let mut insert = txn.prepare_cached(&sql.action)?;
    for (i, a) in actions {
        one(insert.execute(params(store::action_values(ids[i], a)))?)?;
    }
    Ok((ids, head))
}

/// A row the batch holds was written: one skipped (by a trigger's
/// `RAISE(IGNORE)`, say) fails the batch before its commit instead of
/// vanishing from a batch answered as stored.
fn one(changed: usize) -> rusqlite::Result<()> {
    match changed {
        1 => Ok(()),
        n => Err(rusqlite::Error::StatementChangedRows(n)),
    }
}

/// One row's values as SQLite parameters.
fn params<const N: usize>(row: [DbValue; N]) -> impl rusqlite::Params {
    params_from_iter(row.into_iter().map(Param))
}

/// A value encoded as sqlx encodes it for SQLite.
struct Param(DbValue);

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let value = match &self.0 {
            DbValue::Bool(v) => v.map(|b| SqlValue::Integer(b.into())),
            DbValue::Int(v) => v.map(|i| SqlValue::Integer(i.into())),
            DbValue::BigInt(v) => v.map(SqlValue::Integer),
            DbValue::Double(v) => v.map(SqlValue::Real),
            DbValue::String(Some(s)) => {
                return Ok(ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())));
            }
            DbValue::String(None) => None,
            DbValue::Json(v) => v.as_ref().map(|j| SqlValue::Text(j.to_string())),
            DbValue::ChronoDateTimeUtc(v) => {
                v.map(|t| SqlValue::Text(t.to_rfc3339_opts(SecondsFormat::AutoSi, false)))
            }
            other => {
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    format!("no SQLite encoding for {other:?}").into(),
                ));
            }
        };
        Ok(ToSqlOutput::Owned(value.unwrap_or(SqlValue::Null)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::parse;
    use crate::test_db::scratch_database;

    /// The read side decodes rows with sqlx and pages by comparing stored
    /// text, so this writer must store exactly what sqlx would: the same
    /// timestamp text (`+00:00`, not `Z`), booleans as integers, JSON as text.
    #[tokio::test]
    async fn rows_are_stored_as_sqlx_stores_them() {
        let (db, path) = scratch_database("sqlite-writer").await;
        let body = br#"{"metadata":{"campaign":"spring"},"event":{"type":"call.completed","data":{"call":{"id":"c_fmt"},"credits":{"used":1.5}}}}"#;
        let delivery = parse(body).unwrap();
        let at = DateTime::parse_from_rfc3339("2026-11-27T10:00:00.123456Z")
            .unwrap()
            .to_utc();
        let mut store = SqliteStore::open_like(&db).await.unwrap();
        let receipts = store.commit(&[(&delivery, at, true)]).unwrap();
        assert_eq!(receipts.len(), 1);
        assert!(!receipts[0].duplicate);

        let text = |sql: &str, values: Vec<DbValue>| {
            let db = &db;
            let statement = Statement::from_sql_and_values(db.get_database_backend(), sql, values);
            async move {
                db.query_one_raw(statement)
                    .await
                    .unwrap()
                    .unwrap()
                    .try_get_by_index::<String>(0)
                    .unwrap()
            }
        };
        // What sqlx itself stores for the same values, through the same kind of column.
        let sqlx_time = text("SELECT CAST(? AS TEXT)", vec![at.into()]).await;
        assert_eq!(sqlx_time, "2026-11-27T10:00:00.123456+00:00");
        let stored = text(
            "SELECT created_at || '|' || typeof(lifecycle_ended) || '|' || metadata FROM call WHERE id = 'c_fmt'",
            vec![],
        )
        .await;
        assert_eq!(
            stored,
            format!("{sqlx_time}|integer|{{\"campaign\":\"spring\"}}")
        );
        let received = text(
            "SELECT received_at || '|' || typeof(signature_verified) FROM webhook_event",
            vec![],
        )
        .await;
        assert_eq!(received, format!("{sqlx_time}|integer"));

        // The same bytes again are a duplicate of the stored copy.
        let again = store.commit(&[(&delivery, at, true)]).unwrap();
        assert_eq!(again[0].event_id, receipts[0].event_id);
        assert!(again[0].duplicate);
        drop(store);
        db.close().await.unwrap();
        let _ = std::fs::remove_file(&path);
    }

    /// The calls the writer keeps between batches are what it would load:
    /// after every fixture lifecycle (v1 and v2, retries, reschedules, edge
    /// cases), in batches of three, each kept call equals the call loaded
    /// back from the database.
    #[tokio::test]
    async fn calls_kept_between_batches_equal_the_stored_calls() {
        let (db, path) = scratch_database("kept-calls").await;
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let mut bodies = Vec::new();
        for dir in ["v1", "v2", "edge"] {
            let mut files: Vec<_> = std::fs::read_dir(fixtures.join(dir))
                .unwrap()
                .map(|f| f.unwrap().path())
                .collect();
            files.sort();
            for file in files {
                let text = std::fs::read_to_string(&file).unwrap();
                if file.extension().is_some_and(|e| e == "jsonl") {
                    bodies.extend(
                        text.lines()
                            .filter(|l| !l.trim().is_empty())
                            .map(str::to_owned),
                    );
                } else {
                    bodies.push(text);
                }
            }
        }
        let deliveries: Vec<_> = bodies
            .iter()
            .map(|b| parse(b.as_bytes()).unwrap())
            .collect();
        assert!(deliveries.len() > 30, "the fixtures are there");
        let mut store = SqliteStore::open_like(&db).await.unwrap();
        let at = DateTime::parse_from_rfc3339("2026-11-27T10:00:00.123456Z")
            .unwrap()
            .to_utc();
        for batch in deliveries.chunks(3) {
            let inputs: Vec<_> = batch.iter().map(|d| (d, at, true)).collect();
            store.commit(&inputs).unwrap();
        }
        let kept = store.known.clone();
        assert!(kept.len() >= 5, "calls were kept: {}", kept.len());
        let ids: BTreeSet<&str> = kept.keys().map(String::as_str).collect();
        let txn = store.conn.transaction().unwrap();
        let stored = load_calls(&txn, &ids).unwrap();
        assert_eq!(stored.len(), kept.len());
        for call in stored {
            assert_eq!(kept[&call.id], call, "call {}", call.id);
        }
        drop(txn);
        drop(store);
        db.close().await.unwrap();
        let _ = std::fs::remove_file(&path);
    }

    /// The writer's connection gathers WAL writes (`wal_writes.rs`): what it
    /// commits is what another connection reads, byte for byte, through
    /// commits larger than its buffer and many checkpoints and WAL restarts.
    #[tokio::test]
    async fn commits_gathered_by_the_wal_writes_vfs_read_back_whole_elsewhere() {
        let (db, path) = scratch_database("wal-writes").await;
        // As the server opens it (db.rs): WAL, synchronous FULL.
        db.execute_unprepared("PRAGMA journal_mode = WAL")
            .await
            .unwrap();
        let mut store = SqliteStore::open_like(&db).await.unwrap();
        // A checkpoint (and so a WAL restart) every few commits.
        store
            .conn
            .execute_batch("PRAGMA wal_autocheckpoint = 64")
            .unwrap();
        let at = Utc::now();
        let mut bytes = 0;
        let mut commit = |store: &mut SqliteStore, round: usize, n: usize, size: usize| {
            let bodies: Vec<String> = (0..n)
                .map(|i| {
                    let pad = char::from(b'a' + (i % 26) as u8).to_string().repeat(size + i);
                    format!(
                        r#"{{"pad":"{pad}","event":{{"type":"call.completed","data":{{"call":{{"id":"c_{round}_{i}"}}}}}}}}"#
                    )
                })
                .collect();
            bytes += bodies.iter().map(String::len).sum::<usize>();
            let deliveries: Vec<_> = bodies
                .iter()
                .map(|b| parse(b.as_bytes()).unwrap())
                .collect();
            let batch: Vec<Input<'_>> = deliveries.iter().map(|d| (d, at, false)).collect();
            let receipts = store.commit(&batch).unwrap();
            assert!(receipts.iter().all(|r| !r.duplicate));
        };
        // 40 deliveries of ~30 KB: commits of ~1.2 MB, over the buffer.
        for round in 0..12 {
            commit(&mut store, round, 40, 30_000);
        }
        // Then small commits with no checkpoint after them: only the
        // commit's own sync writes their frames out.
        store
            .conn
            .execute_batch("PRAGMA wal_autocheckpoint = 0")
            .unwrap();
        for round in 12..15 {
            commit(&mut store, round, 5, 200);
        }
        // Read through the pool (sqlx's connections, the platform's own VFS).
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT COUNT(*), SUM(LENGTH(body)), COUNT(DISTINCT call_id) FROM webhook_event",
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.try_get_by_index::<i64>(0).unwrap(), 495);
        assert_eq!(row.try_get_by_index::<i64>(1).unwrap(), bytes as i64);
        assert_eq!(row.try_get_by_index::<i64>(2).unwrap(), 495);
        let check = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "PRAGMA integrity_check",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index::<String>(0)
            .unwrap();
        assert_eq!(check, "ok");
        drop(store);
        db.close().await.unwrap();
        let _ = std::fs::remove_file(&path);
    }

    /// A batch that fails after spilling WAL frames (its cache far too
    /// small) leaves none of them behind: another connection commits next,
    /// at the same place in the WAL, then the writer again, and every row
    /// of both reads back whole.
    #[tokio::test]
    async fn a_failed_batch_leaves_no_gathered_frames_behind() {
        let (db, path) = scratch_database("wal-rollback").await;
        db.execute_unprepared("PRAGMA journal_mode = WAL")
            .await
            .unwrap();
        db.execute_unprepared(
            "CREATE TRIGGER poison BEFORE INSERT ON webhook_event WHEN NEW.call_id = 'c_poison' \
             BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
        )
        .await
        .unwrap();
        let mut store = SqliteStore::open_like(&db).await.unwrap();
        store.conn.execute_batch("PRAGMA cache_size = 10").unwrap();
        let at = Utc::now();
        let body = |id: &str, size: usize| {
            format!(
                r#"{{"pad":"{}","event":{{"type":"call.completed","data":{{"call":{{"id":"{id}"}}}}}}}}"#,
                "p".repeat(size)
            )
        };
        // 30 deliveries of 30 KB, the last one refused by the database.
        let mut bodies: Vec<String> = (0..29)
            .map(|i| body(&format!("c_big_{i}"), 30_000))
            .collect();
        bodies.push(body("c_poison", 10));
        let deliveries: Vec<_> = bodies
            .iter()
            .map(|b| parse(b.as_bytes()).unwrap())
            .collect();
        let batch: Vec<Input<'_>> = deliveries.iter().map(|d| (d, at, false)).collect();
        assert!(store.commit(&batch).is_err());

        // Another connection writes where the failed batch's frames went.
        db.execute_unprepared(
            "CREATE TABLE scratch (x TEXT); \
             INSERT INTO scratch SELECT printf('%.50000c', 'x') FROM (SELECT 1 UNION SELECT 2 UNION SELECT 3)",
        )
        .await
        .unwrap();
        // The writer again.
        let small = parse(body("c_after", 100).as_bytes()).unwrap();
        store.commit(&[(&small, at, false)]).unwrap();

        let one = |sql: &'static str| {
            let db = &db;
            async move {
                db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
                    .await
                    .unwrap()
                    .unwrap()
            }
        };
        let check = one("PRAGMA integrity_check").await;
        assert_eq!(check.try_get_by_index::<String>(0).unwrap(), "ok");
        let scratch = one("SELECT COUNT(*), SUM(LENGTH(x)) FROM scratch").await;
        assert_eq!(scratch.try_get_by_index::<i64>(0).unwrap(), 3);
        assert_eq!(scratch.try_get_by_index::<i64>(1).unwrap(), 150_000);
        let events = one("SELECT COUNT(*), MIN(call_id) FROM webhook_event").await;
        assert_eq!(events.try_get_by_index::<i64>(0).unwrap(), 1);
        assert_eq!(events.try_get_by_index::<String>(1).unwrap(), "c_after");
        drop(store);
        db.close().await.unwrap();
        let _ = std::fs::remove_file(&path);
    }
}
