//! The PostgreSQL side of a batch: two statements with fixed text (rows
//! travel as arrays through `unnest`), each prepared once per connection,
//! so a batch costs at most two round trips whatever its size: load (calls,
//! with their versions, and stored copies; skipped for calls the writer
//! knows, `known.rs`), then write, one statement that commits on its own.
//! The write replaces a call only if its `version` (and `created_at`) is
//! still the one loaded or known; otherwise the statement fails whole (SQLSTATE
//! 40001, raised by `calltrail_call_changed`) and [`Writer`] runs the
//! batch again from its load, serialized this time ([`SERIALIZE`]); so
//! does a batch no call version guards ([`unguarded`]). Each writer holds
//! its connection from batch to batch.

use std::collections::HashMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use metrics::Counter;
use sea_orm::DbErr;
use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::{self, Connection, PgConnection, PgPool, Postgres, Row};
use serde_json::Value;

use super::known::Known;
use super::store::{self, Input, Receipt};
use crate::domain::{AttemptState, CallState, CallStatus, Changes, EventKind, StoredEvent};

/// Times a batch is run again from its load when the database says it lost
/// a race (a call changed after the load, a deadlock, a delivery stored by
/// another replica in between) before it counts as failed. It runs again
/// serialized ([`SERIALIZE`]), so it does not lose again to writers (nor
/// to `calltrail reprocess`, which takes the clock too): only to sessions
/// that change calls without it, such as manual SQL.
const RACE_RETRIES: usize = 8;

/// A batch run again after losing a race holds the `event_clock` row from
/// before its load to its commit (`BEGIN`, this, load, write, `COMMIT`):
/// every write takes that row before any other lock, so no other writer or
/// replica can change a call between this batch's load and its write.
pub(super) const SERIALIZE: &str = "SELECT 1 FROM event_clock WHERE id = 1 FOR UPDATE";

/// An ingest writer's connection, held from batch to batch (borrowing one
/// from the pool for each batch cost ~130 µs of a ~2 ms batch). Pinged
/// before a batch when it has been idle, like the pool's connections
/// (`db.rs`); closed when a batch fails, whatever failed, so the next
/// batch starts on a fresh connection.
pub(super) struct Writer {
    pool: PgPool,
    held: Option<(PoolConnection<Postgres>, Session, Instant)>,
    conflicts: Counter,
    /// The calls routed to this writer, as its commits left them.
    known: Known,
    /// The last batch failed without the database saying why (the
    /// connection broke, or its answer did not check out): it may have
    /// committed, or may yet commit, in this session ([`Writer::settle`]).
    doubt: Option<Session>,
    /// The last batch failed because the database could not be reached
    /// or refused connections ([`unavailable`]), not for what it carried.
    down: bool,
    /// `lock_timeout` and `idle_in_transaction_session_timeout` ([`SESSION`]).
    lock_wait: String,
}

impl Writer {
    /// One of `writers` writers on `pool`, waiting at most `lock_wait`
    /// for a lock ([`SESSION`]).
    pub(super) fn new(
        pool: PgPool,
        conflicts: Counter,
        writers: usize,
        lock_wait: std::time::Duration,
    ) -> Self {
        Self {
            // 0: no limit.
            lock_wait: format!("{}ms", lock_wait.as_millis()),
            pool,
            held: None,
            conflicts,
            known: Known::new(writers),
            doubt: None,
            down: false,
        }
    }

    /// After a failed batch: whether it committed after all, and then what
    /// each delivery of it stored (None: a duplicate, which stored
    /// nothing). A batch fails after its commit when the connection breaks
    /// between the commit and its answer; running it again would apply its
    /// deliveries a second time (a `call.initiate` meeting the outcome
    /// stored with it opens another attempt), so the writer answers from
    /// the rows the batch wrote, each found by its call, key and arrival
    /// time, which are its own.
    ///
    /// A broken connection does not stop its statement: PostgreSQL notices
    /// only when it answers, so the batch may still be waiting (for a lock,
    /// a flush) and commit after a look finds nothing. The look therefore
    /// comes after that session has ended: ended by this writer if need be.
    pub(super) async fn settle(&mut self, batch: &[Input<'_>]) -> store::Settled {
        let Some(session) = self.doubt.take() else {
            return store::Settled::NotCommitted;
        };
        let settled = async {
            let mut conn = self.pool.acquire().await?;
            if !end_session(&mut conn, session).await? {
                return Ok(store::Settled::Unknown(DbErr::Custom(format!(
                    "the session of a batch whose connection broke (pid {}) did not end within {} s",
                    session.pid,
                    SESSION_END_WAIT.as_secs()
                ))));
            }
            Ok(match stored_by(&mut conn, batch).await? {
                Some(receipts) => store::Settled::Committed(receipts),
                None => store::Settled::NotCommitted,
            })
        };
        match settled.await {
            Ok(settled) => {
                // Only the writer's own connection broke: the database
                // answers (its deliveries are retried, not refused as
                // unavailable).
                self.down = false;
                settled
            }
            Err(err) => store::Settled::Unknown(db_err(err)),
        }
    }

    /// Whether the last failed batch failed because the database was
    /// unavailable: the writer's other deliveries would only wait as long
    /// again for the same answer.
    pub(super) fn down(&self) -> bool {
        self.down
    }

    /// The held connection (pinged when it was idle), or a new one.
    async fn connection(&mut self) -> Result<(PoolConnection<Postgres>, Session), sqlx::Error> {
        match self.held.take() {
            Some((mut conn, session, used)) if used.elapsed() > crate::db::PING_AFTER_IDLE => {
                match conn.ping().await {
                    Ok(()) => Ok((conn, session)),
                    Err(_) => {
                        conn.close_on_drop();
                        drop(conn);
                        self.fresh().await
                    }
                }
            }
            Some((conn, session, _)) => Ok((conn, session)),
            None => self.fresh().await,
        }
    }

    /// A connection from the pool, set up for writing ([`SESSION`]).
    async fn fresh(&self) -> Result<(PoolConnection<Postgres>, Session), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let row = sqlx::query(SESSION)
            .bind(&self.lock_wait)
            .fetch_one(&mut *conn)
            .await?;
        let session = Session {
            pid: row.try_get("pid")?,
            started: row.try_get("backend_start")?,
        };
        Ok((conn, session))
    }

    pub(super) async fn commit(&mut self, batch: &[Input<'_>]) -> Result<Vec<Receipt>, DbErr> {
        let (mut conn, session) = match self.connection().await {
            Ok(conn) => conn,
            Err(err) => {
                // Nothing was sent: not in doubt, and the database is unreachable.
                (self.doubt, self.down) = (None, true);
                return Err(db_err(err));
            }
        };
        let mut races = 0;
        let result = loop {
            let serialized = races > 0 || unguarded(batch);
            let result =
                store::commit_postgres(&mut conn, batch, serialized, Some(&mut self.known)).await;
            match result {
                // What is known of the batch's calls stays: the run again
                // loads them, and forgets those that changed.
                Err(err) if lost_race(&err, races, serialized) => {
                    races += 1;
                    self.conflicts.increment(1);
                    tracing::debug!(error = %err, races, "batch lost a race; running it again from its load");
                }
                result => {
                    if result.is_err() {
                        // Whatever else failed, maybe after the commit:
                        // the batch's calls are loaded again.
                        for (d, ..) in batch {
                            if let Some(id) = &d.call_id {
                                self.known.forget(id);
                            }
                        }
                    }
                    break result;
                }
            }
        };
        match &result {
            Ok(_) => {
                self.held = Some((conn, session, Instant::now()));
                self.down = false;
            }
            Err(err) => {
                self.doubt = in_doubt(err).then_some(session);
                self.down = unavailable(err);
                conn.close_on_drop();
            }
        }
        result.map_err(db_err)
    }
}

/// A writer's session on the server: its process id and start, which
/// together name it (a pid alone may be reused).
#[derive(Clone, Copy, Debug)]
pub(super) struct Session {
    pid: i32,
    started: DateTime<Utc>,
}

/// Run once per new writer connection: its session ([`Session`]) and its
/// limits, both the writer's lock wait (`Config::write_lock_timeout`, 10
/// s): how long a write waits for a lock (`lock_timeout`), and how long its
/// transaction may sit idle (`idle_in_transaction_session_timeout`).
/// Every write takes the `event_clock` row first: a transaction holding it
/// for long (`calltrail reprocess`, a replica whose host died between two
/// statements of a serialized run) would otherwise stall every writer of
/// every replica, with no answer to the senders. Past it the batch fails as
/// unavailable (`55P03`): 503, and the sender resends. SQLite's writer waits
/// as long (its busy timeout).
const SESSION: &str = "SELECT pid, backend_start, \
     set_config('lock_timeout', $1, false), \
     set_config('idle_in_transaction_session_timeout', $1, false) \
     FROM pg_stat_activity WHERE pid = pg_backend_pid()";

/// How long [`end_session`] waits for a session to end.
const SESSION_END_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// End `session` (if it is still there) and wait until it has ended:
/// whatever it was running then has committed or rolled back for good.
/// False if it has not ended within [`SESSION_END_WAIT`].
async fn end_session(conn: &mut PgConnection, session: Session) -> Result<bool, sqlx::Error> {
    const END: &str = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                       WHERE pid = $1 AND backend_start = $2";
    const GONE: &str = "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity \
                        WHERE pid = $1 AND backend_start = $2) AS gone";
    sqlx::query(END)
        .bind(session.pid)
        .bind(session.started)
        .execute(&mut *conn)
        .await?;
    let deadline = Instant::now() + SESSION_END_WAIT;
    loop {
        let gone: bool = sqlx::query(GONE)
            .bind(session.pid)
            .bind(session.started)
            .fetch_one(&mut *conn)
            .await?
            .try_get("gone")?;
        if gone {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Whether a failed batch may have committed: the database refused nothing
/// (an error of its own means the statement, or the transaction's
/// `COMMIT`, did not commit), and the connection was there to send it on.
/// A server shutting down or a broken connection (SQLSTATE classes 57 and
/// 08) may say so after the commit, though: those stay in doubt.
fn in_doubt(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(e) => e
            .code()
            .is_some_and(|code| code.starts_with("57") || code.starts_with("08")),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => false,
        _ => true,
    }
}

/// Whether a batch failed because the database could not be reached, not
/// for what it carried: no connection (the pool's wait timed out, the
/// socket failed), the connection broke (SQLSTATE class 08), the server is
/// shutting down or starting (57P01–57P03), it is out of resources
/// (class 53: too many connections, disk full), or a lock was held past
/// the writer's lock wait (55P03, [`SESSION`]).
fn unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            code.starts_with("08")
                || code.starts_with("53")
                // A lock held past the lock wait: every batch would wait as long.
                || matches!(&*code, "57P01" | "57P02" | "57P03" | "55P03")
        }),
        _ => false,
    }
}

/// What each delivery of `batch` stored, if the batch committed (None if
/// none of it is stored): a raw event of its call and key that arrived when
/// it did, or for a duplicate in it the copy it duplicates.
async fn stored_by(
    conn: &mut PgConnection,
    batch: &[Input<'_>],
) -> Result<Option<Vec<Option<Receipt>>>, sqlx::Error> {
    let (mut calls, mut keys, mut callless) = (Vec::new(), Vec::new(), Vec::new());
    // Each (call, key) once: the join returns a stored row once per pair.
    let mut pairs = std::collections::HashSet::new();
    for (d, ..) in batch {
        match &d.call_id {
            Some(id) if pairs.insert((id.as_str(), d.dedupe_key.as_str())) => {
                calls.push(id.as_str());
                keys.push(d.dedupe_key.as_str());
            }
            Some(_) => {}
            None => callless.push(d.dedupe_key.as_str()),
        }
    }
    let rows = sqlx::query(STORED_BY)
        .bind(&calls)
        .bind(&keys)
        .bind(&callless)
        .fetch_all(&mut *conn)
        .await?;
    let found = rows
        .iter()
        .map(|r| {
            Ok((
                r.try_get::<i64, _>("id")?,
                r.try_get::<Option<String>, _>("call_id")?,
                r.try_get::<String, _>("dedupe_key")?,
                r.try_get::<DateTime<Utc>, _>("received_at")?,
            ))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let mut taken = vec![false; found.len()];
    let mut receipts: Vec<Option<Receipt>> = batch
        .iter()
        .map(|(d, received_at, _)| {
            let i = (0..found.len()).find(|&i| {
                let (_, call, key, at) = &found[i];
                !taken[i] && *call == d.call_id && *key == d.dedupe_key && at == received_at
            })?;
            taken[i] = true;
            Some(Receipt {
                event_id: found[i].0,
                duplicate: false,
            })
        })
        .collect();
    if receipts.iter().all(Option::is_none) {
        // Nothing of it is stored: it did not commit.
        return Ok(None);
    }
    // In a batch that committed, a delivery that stored nothing was a
    // duplicate (of a copy in the batch, or stored before): answered as one,
    // with the latest copy of its call and key that arrived before it (a
    // later one in the batch opened another attempt). Sent again instead,
    // it could arrive after what followed it and count again.
    for ((d, received_at, _), receipt) in batch.iter().zip(&mut receipts) {
        if receipt.is_none() {
            *receipt = found
                .iter()
                .filter(|(_, call, key, at)| {
                    *call == d.call_id && *key == d.dedupe_key && at <= received_at
                })
                .map(|(id, ..)| *id)
                .max()
                .map(|event_id| Receipt {
                    event_id,
                    duplicate: true,
                });
        }
    }
    Ok(Some(receipts))
}

/// Stored copies of a batch's deliveries, by call and key (and without a
/// call, by key), for [`stored_by`].
const STORED_BY: &str = "SELECT e.id, e.call_id, e.dedupe_key, e.received_at FROM webhook_event e \
    JOIN unnest($1::text[], $2::text[]) AS t(call_id, key) ON e.call_id = t.call_id AND e.dedupe_key = t.key \
    UNION ALL SELECT e.id, e.call_id, e.dedupe_key, e.received_at FROM webhook_event e \
    WHERE e.call_id IS NULL AND e.dedupe_key = ANY($3)";

/// Whether the batch failed because something else wrote first, worth
/// running again from its load (up to [`RACE_RETRIES`] times): a call's
/// version moved (`serialization_failure`, from `calltrail_call_changed`);
/// a deadlock (not between writers, which all take the `event_clock` row
/// first, but with a session that locks calls without it, such as manual
/// SQL); or, on an optimistic run, a delivery or call another replica
/// stored after the load (`unique_violation`). A serialized run holds the
/// clock from before its load, so a unique violation there is no race and
/// is not run again.
fn lost_race(err: &sqlx::Error, races: usize, serialized: bool) -> bool {
    races < RACE_RETRIES
        && err
            .as_database_error()
            .and_then(|e| e.code())
            .is_some_and(|code| match &*code {
                "40001" | "40P01" => true,
                "23505" => !serialized,
                _ => false,
            })
}

/// Whether a batch runs serialized from the start: it holds a delivery
/// that may store a raw event without writing a call (one without a call,
/// or of a kind calltrail does not know, whose call may not exist), so no
/// call version guards it, nor do the unique indexes when its call or
/// attempt is null (NULLs are distinct). A v2 delivery is guarded by its
/// event id's unique index whatever its kind. Rare: none in `simulate`'s
/// lifecycles.
pub(super) fn unguarded(batch: &[Input<'_>]) -> bool {
    batch.iter().any(|(d, ..)| {
        d.upstream_id.is_none() && (d.call_id.is_none() || d.kind == EventKind::Unknown)
    })
}

pub(super) fn db_err(err: sqlx::Error) -> DbErr {
    DbErr::Custom(err.to_string())
}

/// The calls `$1` with their current attempts (rows with `e_id` NULL), and
/// the stored copies of the batch's deliveries (rows with `e_id` set, the
/// call columns NULL, oldest first: a duplicate repeats the first copy),
/// in one round trip. Stored copies are looked up: v1 by call and key
/// (`webhook_event_dedupe`), v1 without a call by key
/// (`webhook_event_callless`), v2 by the platform's event id
/// (`webhook_event_upstream_id`, partial: hence `IS NOT NULL`).
const LOAD: &str = "WITH c AS (SELECT c.id, c.metadata::text AS metadata, c.started_at, c.ended_at, c.duration_seconds, \
    c.recording_url, c.detail_url, c.re_attempt_count, c.rescheduled_count, c.final_status, c.lifecycle_ended, \
    c.success, c.credits_used, c.created_at, c.updated_at, c.last_event_at, \
    c.to_number, c.agent_id, c.ended_reason, c.cost_amount, c.cost_per_minute, c.cost_currency, c.version, \
    a.number, a.status, a.connected, a.started_at AS a_started_at, a.ended_at AS a_ended_at, \
    a.duration_seconds AS a_duration_seconds, a.recording_url AS a_recording_url, a.detail_url AS a_detail_url, \
    a.credits_used AS a_credits_used, a.created_at AS a_created_at, a.updated_at AS a_updated_at \
    FROM call c JOIN attempt a ON a.call_id = c.id AND a.number = c.attempt_count WHERE c.id = ANY($1)), \
    s AS (SELECT e.id, e.call_id, e.attempt_number, e.dedupe_key FROM webhook_event e \
    JOIN unnest($2::text[], $3::text[]) AS t(call_id, key) ON e.call_id = t.call_id AND e.dedupe_key = t.key \
    UNION SELECT e.id, e.call_id, e.attempt_number, e.dedupe_key FROM webhook_event e \
    JOIN unnest($4::text[]) AS k(key) ON e.call_id IS NULL AND e.dedupe_key = k.key \
    UNION SELECT id, call_id, attempt_number, dedupe_key FROM webhook_event \
    WHERE upstream_id = ANY($5) AND upstream_id IS NOT NULL) \
    SELECT c.*, NULL::int8 AS e_id, NULL::text AS e_call_id, NULL::int4 AS e_attempt_number, \
    NULL::text AS e_dedupe_key FROM c \
    UNION ALL SELECT c.*, s.id, s.call_id, s.attempt_number, s.dedupe_key FROM s LEFT JOIN c ON false \
    ORDER BY e_id NULLS FIRST";

/// A batch's writes in one statement, sent outside any transaction block:
/// it commits on its own (PostgreSQL answers only after the commit, so a
/// delivery is answered after it is durable). The raw events first,
/// numbered in commit order: the `event_clock` row lock taken here is held
/// until the commit, so batches get their `seq` block in the order they
/// become visible (docs/ARCHITECTURE.md, "Commit order"); analyses and
/// actions find their event's id by its position in the block (`event_n`,
/// 1-based). Then calls, attempts, analyses and actions: foreign keys are
/// checked at the end of the statement, when the calls and events are
/// there. Every row lock the statement takes comes after the `event_clock`
/// row's (calls and attempts read `clock` too), and calls are locked in id
/// order, so two writes never deadlock. A call is replaced only if its
/// `version` is still the one loaded or known (`$67` is that plus one; a
/// call not there when loaded, or new: 1) and its `created_at` too (a call
/// deleted and started again restarts its versions), and `calltrail_call_changed` fails the statement
/// unless every call was written as loaded: updated from its version, or
/// inserted when it was not there (`xmax = 0`: a row this statement
/// inserted, as PostgreSQL's heap storage marks it, not a documented
/// guarantee, checked by a test; a call loaded but deleted since must not
/// come back from what was loaded). NOTIFY is transactional: replicas hear
/// of the batch when it commits. Returns the new events' ids, in order;
/// before it commits, `calltrail_batch_written` fails the statement unless it wrote every raw
/// event, analysis and action of the batch (a row whose event was not
/// found, or that a trigger skipped, would otherwise vanish from a batch
/// answered as stored).
const WRITE: &str = "WITH clock AS (
    UPDATE event_clock SET last = last + cardinality($6::text[]) WHERE id = 1
    RETURNING last - cardinality($6::text[]) AS base
), ins AS (
    INSERT INTO webhook_event (received_at, format, event_type, call_id, attempt_number, dedupe_key,
        signature_verified, recognized, outcome, body, upstream_id, seq)
    SELECT t.received_at, t.format, t.event_type, t.call_id, t.attempt_number, t.dedupe_key,
        t.signature_verified, t.recognized, t.outcome, t.body, t.upstream_id, clock.base + t.n
    FROM clock, unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::bool[],
        $8::bool[], $9::text[], $10::text[], $11::text[]) WITH ORDINALITY AS t(received_at, format, event_type,
        call_id, attempt_number, dedupe_key, signature_verified, recognized, outcome, body, upstream_id, n)
    RETURNING id, dedupe_key, seq
), calls AS (
    INSERT INTO call (id, status, metadata, started_at, ended_at, duration_seconds, recording_url, detail_url,
        attempt_count, re_attempt_count, rescheduled_count, final_status, lifecycle_ended, success, credits_used,
        created_at, updated_at, last_event_at, to_number, agent_id, ended_reason, cost_amount, cost_per_minute,
        cost_currency, version)
    SELECT id, status, metadata::jsonb, started_at, ended_at, duration_seconds, recording_url, detail_url,
        attempt_count, re_attempt_count, rescheduled_count, final_status, lifecycle_ended, success, credits_used,
        created_at, updated_at, last_event_at, to_number, agent_id, ended_reason, cost_amount, cost_per_minute,
        cost_currency, version
    FROM clock, unnest($12::text[], $13::text[], $14::text[], $15::timestamptz[], $16::timestamptz[], $17::float8[], $18::text[],
        $19::text[], $20::int[], $21::int[], $22::int[], $23::text[], $24::bool[], $25::bool[], $26::float8[],
        $27::timestamptz[], $28::timestamptz[], $29::timestamptz[], $61::text[], $62::text[], $63::text[],
        $64::float8[], $65::float8[], $66::text[], $67::int8[])
        AS t(id, status, metadata, started_at, ended_at, duration_seconds, recording_url, detail_url, attempt_count,
        re_attempt_count, rescheduled_count, final_status, lifecycle_ended, success, credits_used, created_at,
        updated_at, last_event_at, to_number, agent_id, ended_reason, cost_amount, cost_per_minute, cost_currency,
        version)
    ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, metadata = EXCLUDED.metadata,
        started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at, duration_seconds = EXCLUDED.duration_seconds,
        recording_url = EXCLUDED.recording_url, detail_url = EXCLUDED.detail_url,
        attempt_count = EXCLUDED.attempt_count, re_attempt_count = EXCLUDED.re_attempt_count,
        rescheduled_count = EXCLUDED.rescheduled_count, final_status = EXCLUDED.final_status,
        lifecycle_ended = EXCLUDED.lifecycle_ended, success = EXCLUDED.success, credits_used = EXCLUDED.credits_used,
        updated_at = EXCLUDED.updated_at, last_event_at = EXCLUDED.last_event_at,
        to_number = EXCLUDED.to_number, agent_id = EXCLUDED.agent_id, ended_reason = EXCLUDED.ended_reason,
        cost_amount = EXCLUDED.cost_amount, cost_per_minute = EXCLUDED.cost_per_minute,
        cost_currency = EXCLUDED.cost_currency, version = EXCLUDED.version
        WHERE call.version = EXCLUDED.version - 1 AND call.created_at = EXCLUDED.created_at
    RETURNING xmax = 0 AS inserted, version
), attempts AS (
    INSERT INTO attempt (call_id, number, status, connected, started_at, ended_at, duration_seconds, recording_url,
        detail_url, credits_used, created_at, updated_at)
    SELECT t.* FROM clock, unnest($30::text[], $31::int[], $32::text[], $33::bool[], $34::timestamptz[], $35::timestamptz[],
        $36::float8[], $37::text[], $38::text[], $39::float8[], $40::timestamptz[], $41::timestamptz[]) AS t
    ON CONFLICT (call_id, number) DO UPDATE SET status = EXCLUDED.status, connected = EXCLUDED.connected,
        started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at, duration_seconds = EXCLUDED.duration_seconds,
        recording_url = EXCLUDED.recording_url, detail_url = EXCLUDED.detail_url,
        credits_used = EXCLUDED.credits_used, updated_at = EXCLUDED.updated_at
), analyses AS (
    INSERT INTO analysis (call_id, attempt_number, event_id, success, summary, required_actions, insights, outcome,
        credits_used, credits_available, created_at)
    SELECT t.call_id, t.attempt_number, ins.id, t.success, t.summary, t.required_actions::jsonb,
        t.insights::jsonb, t.outcome::jsonb, t.credits_used, t.credits_available, t.created_at
    FROM unnest($42::text[], $43::int[], $44::int8[], $45::bool[], $46::text[], $47::text[], $48::text[],
        $49::text[], $50::float8[], $51::float8[], $52::timestamptz[])
        AS t(call_id, attempt_number, event_n, success, summary, required_actions, insights, outcome, credits_used,
        credits_available, created_at)
        JOIN ins ON ins.seq = (SELECT base FROM clock) + t.event_n
    ON CONFLICT (call_id, attempt_number) DO UPDATE SET event_id = EXCLUDED.event_id, success = EXCLUDED.success,
        summary = EXCLUDED.summary, required_actions = EXCLUDED.required_actions, insights = EXCLUDED.insights,
        outcome = EXCLUDED.outcome, credits_used = EXCLUDED.credits_used,
        credits_available = EXCLUDED.credits_available, created_at = EXCLUDED.created_at
    RETURNING 1
), actions AS (
    INSERT INTO action (event_id, call_id, attempt_number, kind, reason, payload, status, created_at)
    SELECT ins.id, t.call_id, t.attempt_number, t.kind, t.reason, t.payload::jsonb, t.status, t.created_at
    FROM unnest($53::int8[], $54::text[], $55::int[], $56::text[], $57::text[], $58::text[], $59::text[],
        $60::timestamptz[]) AS t(event_n, call_id, attempt_number, kind, reason, payload, status, created_at)
        JOIN ins ON ins.seq = (SELECT base FROM clock) + t.event_n
    RETURNING 1
)
SELECT ins.id, ins.dedupe_key FROM
    (SELECT calltrail_call_changed((SELECT count(*) FILTER (WHERE NOT inserted OR version = 1) FROM calls)
        = cardinality($12::text[])) AS guarded,
    calltrail_batch_written((SELECT count(*) FROM ins) = cardinality($6::text[])
        AND (SELECT count(*) FROM analyses) = cardinality($42::text[])
        AND (SELECT count(*) FROM actions) = cardinality($53::int8[])) AS written,
    pg_notify('calltrail_events', (SELECT max(seq) FROM ins)::text) AS notified) AS checks
    LEFT JOIN ins ON true
ORDER BY ins.seq";

/// What [`LOAD`] looks up for a batch: (calls, keys) of v1 deliveries
/// with a call, keys of v1 deliveries without one, v2 event ids.
#[derive(Default)]
pub(super) struct Lookups {
    calls: Vec<String>,
    keys: Vec<String>,
    callless: Vec<String>,
    upstream: Vec<String>,
}

impl Lookups {
    /// For the batch's deliveries without a call, and those whose call
    /// `loads` (the others' calls are known, with their deliveries, or
    /// start with this batch).
    pub(super) fn of(batch: &[super::store::Input<'_>], loads: impl Fn(&str) -> bool) -> Self {
        let mut this = Self::default();
        for (d, ..) in batch {
            if d.call_id.as_deref().is_some_and(|id| !loads(id)) {
                continue;
            }
            match (&d.upstream_id, &d.call_id) {
                (Some(id), _) => this.upstream.push(id.clone()),
                (None, Some(call)) => {
                    this.calls.push(call.clone());
                    this.keys.push(d.dedupe_key.clone());
                }
                (None, None) => this.callless.push(d.dedupe_key.clone()),
            }
        }
        this
    }

    pub(super) fn is_empty(&self) -> bool {
        self.calls.is_empty() && self.callless.is_empty() && self.upstream.is_empty()
    }
}

/// The calls `call_ids` (with their current attempts), their versions,
/// and the stored copies `lookups` finds.
pub(super) async fn load(
    conn: &mut PgConnection,
    call_ids: &[String],
    lookups: &Lookups,
) -> Result<Loaded, sqlx::Error> {
    let rows = sqlx::query(LOAD)
        .bind(call_ids)
        .bind(&lookups.calls)
        .bind(&lookups.keys)
        .bind(&lookups.callless)
        .bind(&lookups.upstream)
        .fetch_all(&mut *conn)
        .await?;
    let mut loaded = Loaded::default();
    for r in &rows {
        match r.try_get::<Option<i64>, _>("e_id")? {
            Some(id) => loaded.stored.push(StoredEvent {
                id,
                call_id: r.try_get("e_call_id")?,
                attempt_number: r.try_get("e_attempt_number")?,
                dedupe_key: r.try_get("e_dedupe_key")?,
            }),
            None => {
                let call = call_state(r)?;
                loaded
                    .versions
                    .insert(call.id.clone(), r.try_get("version")?);
                loaded.calls.push(call);
            }
        }
    }
    Ok(loaded)
}

/// What [`load`] found.
#[derive(Default)]
pub(super) struct Loaded {
    pub(super) calls: Vec<CallState>,
    pub(super) stored: Vec<StoredEvent>,
    /// Each loaded call's `version` (a call not there has none: 0).
    pub(super) versions: HashMap<String, i64>,
}

/// Write a batch's changes in one statement, which commits them; returns
/// the ids of its new raw-log rows, in order. Fails with SQLSTATE 40001,
/// writing nothing, if a call's version is no longer the one in
/// `versions` (or a call not there when loaded is there now).
pub(super) async fn write(
    conn: &mut PgConnection,
    changes: &Changes,
    versions: &HashMap<String, i64>,
) -> Result<Vec<i64>, sqlx::Error> {
    let Changes {
        events,
        calls,
        attempts,
        analyses,
        actions,
    } = changes;
    if events.is_empty() {
        // Only a stored delivery changes a call.
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        return Err(sqlx::Error::Protocol(
            "calls changed by a batch that stores no delivery".into(),
        ));
    }
    let keys: Vec<&str> = events.iter().map(|e| e.dedupe_key.as_str()).collect();
    let json = |v: &Option<Value>| v.as_ref().map(Value::to_string);
    // 1-based positions of events in the batch's block of `seq`s.
    let event_n = |i: &usize| *i as i64 + 1;
    // Calls in id order: replicas writing the same calls lock their rows in
    // the same order.
    let mut c: Vec<&CallState> = calls.iter().collect();
    c.sort_unstable_by(|x, y| x.id.cmp(&y.id));
    let a = attempts;
    let rows = sqlx::query(WRITE)
        .bind(events.iter().map(|e| e.received_at).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.format.as_str()).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.event_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.call_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.attempt_number).collect::<Vec<_>>())
        .bind(&keys)
        .bind(
            events
                .iter()
                .map(|e| e.signature_verified)
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.recognized).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.outcome).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.body.as_str()).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.upstream_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(c.iter().map(|c| c.id.as_str()).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.status().as_str()).collect::<Vec<_>>())
        .bind(
            c.iter()
                .map(|c| {
                    (!c.metadata.is_empty()).then(|| Value::Object(c.metadata.clone()).to_string())
                })
                .collect::<Vec<_>>(),
        )
        .bind(c.iter().map(|c| c.started_at).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.ended_at).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.duration_seconds).collect::<Vec<_>>())
        .bind(
            c.iter()
                .map(|c| c.recording_url.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            c.iter()
                .map(|c| c.detail_url.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(c.iter().map(|c| c.current.number).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.re_attempt_count).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.rescheduled_count).collect::<Vec<_>>())
        .bind(
            c.iter()
                .map(|c| c.final_status.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(c.iter().map(|c| c.lifecycle_ended).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.success).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.credits_used).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.created_at).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.updated_at).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.last_event_at).collect::<Vec<_>>())
        .bind(a.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>())
        .bind(a.iter().map(|(_, a)| a.number).collect::<Vec<_>>())
        .bind(a.iter().map(|(_, a)| a.status.as_str()).collect::<Vec<_>>())
        .bind(a.iter().map(|(_, a)| a.connected).collect::<Vec<_>>())
        .bind(a.iter().map(|(_, a)| a.started_at).collect::<Vec<_>>())
        .bind(a.iter().map(|(_, a)| a.ended_at).collect::<Vec<_>>())
        .bind(
            a.iter()
                .map(|(_, a)| a.duration_seconds)
                .collect::<Vec<_>>(),
        )
        .bind(
            a.iter()
                .map(|(_, a)| a.recording_url.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            a.iter()
                .map(|(_, a)| a.detail_url.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(a.iter().map(|(_, a)| a.credits_used).collect::<Vec<_>>())
        .bind(a.iter().map(|(_, a)| a.created_at).collect::<Vec<_>>())
        .bind(a.iter().map(|(_, a)| a.updated_at).collect::<Vec<_>>())
        .bind(
            analyses
                .iter()
                .map(|(_, n)| n.call_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            analyses
                .iter()
                .map(|(_, n)| n.attempt_number)
                .collect::<Vec<_>>(),
        )
        .bind(analyses.iter().map(|(i, _)| event_n(i)).collect::<Vec<_>>())
        .bind(analyses.iter().map(|(_, n)| n.success).collect::<Vec<_>>())
        .bind(
            analyses
                .iter()
                .map(|(_, n)| n.summary.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            analyses
                .iter()
                .map(|(_, n)| Value::from(n.required_actions.clone()).to_string())
                .collect::<Vec<_>>(),
        )
        .bind(
            analyses
                .iter()
                .map(|(_, n)| json(&n.insights))
                .collect::<Vec<_>>(),
        )
        .bind(
            analyses
                .iter()
                .map(|(_, n)| json(&n.outcome))
                .collect::<Vec<_>>(),
        )
        .bind(
            analyses
                .iter()
                .map(|(_, n)| n.credits_used)
                .collect::<Vec<_>>(),
        )
        .bind(
            analyses
                .iter()
                .map(|(_, n)| n.credits_available)
                .collect::<Vec<_>>(),
        )
        .bind(
            analyses
                .iter()
                .map(|(_, n)| n.created_at)
                .collect::<Vec<_>>(),
        )
        .bind(actions.iter().map(|(i, _)| event_n(i)).collect::<Vec<_>>())
        .bind(
            actions
                .iter()
                .map(|(_, x)| x.call_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            actions
                .iter()
                .map(|(_, x)| x.attempt_number)
                .collect::<Vec<_>>(),
        )
        .bind(
            actions
                .iter()
                .map(|(_, x)| x.kind.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            actions
                .iter()
                .map(|(_, x)| x.reason.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            actions
                .iter()
                .map(|(_, x)| json(&x.payload))
                .collect::<Vec<_>>(),
        )
        .bind(actions.iter().map(|(_, x)| x.status).collect::<Vec<_>>())
        .bind(
            actions
                .iter()
                .map(|(_, x)| x.created_at)
                .collect::<Vec<_>>(),
        )
        .bind(c.iter().map(|c| c.to.as_deref()).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.agent_id.as_deref()).collect::<Vec<_>>())
        .bind(
            c.iter()
                .map(|c| c.ended_reason.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            c.iter()
                .map(|c| c.cost.as_ref().and_then(|x| x.amount))
                .collect::<Vec<_>>(),
        )
        .bind(
            c.iter()
                .map(|c| c.cost.as_ref().and_then(|x| x.per_minute))
                .collect::<Vec<_>>(),
        )
        .bind(
            c.iter()
                .map(|c| c.cost.as_ref().map(|x| x.currency.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(
            c.iter()
                .map(|c| versions.get(&c.id).copied().unwrap_or(0) + 1)
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut *conn)
        .await?;
    let mut ids = Vec::with_capacity(events.len());
    for (row, key) in rows.iter().zip(&keys) {
        // Rows come back in `seq` order; check they are the batch's, in order.
        if row.try_get::<&str, _>("dedupe_key")? != *key {
            return Err(sqlx::Error::Protocol(
                "RETURNING rows out of insertion order".into(),
            ));
        }
        ids.push(row.try_get("id")?);
    }
    if ids.len() != events.len() {
        return Err(sqlx::Error::Protocol(
            "fewer raw events written than the batch holds".into(),
        ));
    }
    Ok(ids)
}

fn call_state(r: &sqlx::postgres::PgRow) -> Result<CallState, sqlx::Error> {
    let status: String = r.try_get("status")?;
    let metadata: Option<String> = r.try_get("metadata")?;
    let get = |name: &str| r.try_get::<Option<DateTime<Utc>>, _>(name);
    Ok(CallState {
        id: r.try_get("id")?,
        metadata: match metadata.as_deref().map(serde_json::from_str) {
            Some(Ok(Value::Object(m))) => m,
            _ => serde_json::Map::new(),
        },
        started_at: get("started_at")?,
        ended_at: get("ended_at")?,
        duration_seconds: r.try_get("duration_seconds")?,
        recording_url: r.try_get("recording_url")?,
        detail_url: r.try_get("detail_url")?,
        re_attempt_count: r.try_get("re_attempt_count")?,
        rescheduled_count: r.try_get("rescheduled_count")?,
        final_status: r.try_get("final_status")?,
        lifecycle_ended: r.try_get("lifecycle_ended")?,
        success: r.try_get("success")?,
        credits_used: r.try_get("credits_used")?,
        to: r.try_get("to_number")?,
        agent_id: r.try_get("agent_id")?,
        ended_reason: r.try_get("ended_reason")?,
        cost: super::store::cost(
            r.try_get("cost_amount")?,
            r.try_get("cost_per_minute")?,
            r.try_get("cost_currency")?,
        ),
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        last_event_at: r.try_get("last_event_at")?,
        current: AttemptState {
            number: r.try_get("number")?,
            status: CallStatus::from_db(&status)
                .ok_or_else(|| sqlx::Error::Decode(format!("unknown status {status:?}").into()))?,
            connected: r.try_get("connected")?,
            started_at: get("a_started_at")?,
            ended_at: get("a_ended_at")?,
            duration_seconds: r.try_get("a_duration_seconds")?,
            recording_url: r.try_get("a_recording_url")?,
            detail_url: r.try_get("a_detail_url")?,
            credits_used: r.try_get("a_credits_used")?,
            created_at: r.try_get("a_created_at")?,
            updated_at: r.try_get("a_updated_at")?,
        },
    })
}
