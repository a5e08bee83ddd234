//! The PostgreSQL side of a batch: every statement but the first has fixed
//! text (rows travel as arrays through `unnest`), so each is prepared once
//! per connection, and a batch costs four round trips whatever its size:
//! begin and lock, load (calls and stored copies), write, commit. Each
//! writer holds its connection from batch to batch ([`Writer`]).

use std::time::Instant;

use chrono::{DateTime, Utc};
use sea_orm::DbErr;
use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::{
    self, AssertSqlSafe, Connection, PgConnection, PgPool, Postgres, Row, Transaction,
};
use serde_json::Value;

use super::store::{self, Input, Receipt};
use crate::domain::{AttemptState, CallState, CallStatus, Changes, StoredEvent};

/// An ingest writer's connection, held from batch to batch (borrowing one
/// from the pool for each batch cost ~130 µs of a ~2 ms batch). Pinged
/// before a batch when it has been idle, like the pool's connections
/// (`db.rs`); closed when a batch fails, whatever failed: a statement the
/// database refused can leave the session inside an aborted transaction
/// that sqlx does not know to roll back (the lock statement sent with
/// `BEGIN`, when it is cancelled or times out), so the next batch starts
/// on a fresh connection.
pub(super) struct Writer {
    pool: PgPool,
    held: Option<(PoolConnection<Postgres>, Instant)>,
}

impl Writer {
    pub(super) fn new(pool: PgPool) -> Self {
        Self { pool, held: None }
    }

    pub(super) async fn commit(&mut self, batch: &[Input<'_>]) -> Result<Vec<Receipt>, DbErr> {
        let mut conn = match self.held.take() {
            Some((mut conn, used)) if used.elapsed() > crate::db::PING_AFTER_IDLE => {
                match conn.ping().await {
                    Ok(()) => conn,
                    Err(_) => {
                        conn.close_on_drop();
                        drop(conn);
                        self.pool.acquire().await.map_err(db_err)?
                    }
                }
            }
            Some((conn, _)) => conn,
            None => self.pool.acquire().await.map_err(db_err)?,
        };
        let result = store::commit_postgres(&mut conn, batch).await;
        match &result {
            Ok(_) => self.held = Some((conn, Instant::now())),
            Err(_) => conn.close_on_drop(),
        }
        result.map_err(db_err)
    }
}

pub(super) fn db_err(err: sqlx::Error) -> DbErr {
    DbErr::Custom(err.to_string())
}

/// Begin, and serialize each of these calls across replicas for this
/// transaction: advisory locks on the ids' [`lock_keys`], taken in
/// ascending order so two batches cannot deadlock. One round trip: `BEGIN`
/// and the lock go as one simple query, the keys written into it as integer
/// literals (the lock must be a statement before the loads: in READ
/// COMMITTED a statement reads with the snapshot it started with, so a load
/// in the statement that waited for the lock would not see what the holder
/// committed).
pub(super) async fn begin<'c>(
    conn: &'c mut PgConnection,
    call_ids: &[String],
) -> Result<Transaction<'c, Postgres>, sqlx::Error> {
    if call_ids.is_empty() {
        return conn.begin().await;
    }
    let keys: Vec<String> = lock_keys(call_ids).iter().map(i64::to_string).collect();
    conn.begin_with(AssertSqlSafe(format!(
        "BEGIN; SELECT pg_advisory_xact_lock(k) FROM unnest(ARRAY[{}]::int8[]) AS t(k)",
        keys.join(",")
    )))
    .await
}

/// A call's advisory lock key: FNV-1a (64 bits) of its id, the same in
/// every replica (since 2026-11-27; before, PostgreSQL's
/// `hashtextextended(id, 0)`: replicas must all run a version on the same
/// side of that change); sorted, without repeats.
fn lock_keys(call_ids: &[String]) -> Vec<i64> {
    let mut keys: Vec<i64> = call_ids
        .iter()
        .map(|id| {
            let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
            hash as i64
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The batch's calls with their current attempts (rows with `e_id` NULL),
/// and the stored copies of its deliveries (dedupe; rows with `e_id` set,
/// the call columns NULL), in one round trip. Stored copies are looked up:
/// v1 by call and key (`webhook_event_dedupe`), v1 without a call by key
/// (`webhook_event_callless`), v2 by the platform's event id
/// (`webhook_event_upstream_id`, partial: hence `IS NOT NULL`).
const LOAD: &str = "WITH c AS (SELECT c.id, c.metadata::text AS metadata, c.started_at, c.ended_at, c.duration_seconds, \
    c.recording_url, c.detail_url, c.re_attempt_count, c.rescheduled_count, c.final_status, c.lifecycle_ended, \
    c.success, c.credits_used, c.created_at, c.updated_at, c.last_event_at, \
    c.to_number, c.agent_id, c.ended_reason, c.cost_amount, c.cost_per_minute, c.cost_currency, \
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
    UNION ALL SELECT c.*, s.id, s.call_id, s.attempt_number, s.dedupe_key FROM s LEFT JOIN c ON false";

/// A batch's writes in one statement. The raw events first, numbered in
/// commit order: the `event_clock` row lock taken here is held until
/// COMMIT, so batches get their `seq` block in the order they become
/// visible (docs/ARCHITECTURE.md, "Commit order"); analyses and actions
/// find their event's id by its position in the block (`event_n`, 1-based).
/// Then calls, attempts, analyses and actions: foreign keys are checked at
/// the end of the statement, when the calls and events are there. NOTIFY is
/// transactional: replicas hear of the batch when it commits. Returns the
/// new events' ids, in order, with the numbers of analyses and actions
/// written (checked: a row whose event was not found would vanish).
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
        cost_currency)
    SELECT id, status, metadata::jsonb, started_at, ended_at, duration_seconds, recording_url, detail_url,
        attempt_count, re_attempt_count, rescheduled_count, final_status, lifecycle_ended, success, credits_used,
        created_at, updated_at, last_event_at, to_number, agent_id, ended_reason, cost_amount, cost_per_minute,
        cost_currency
    FROM unnest($12::text[], $13::text[], $14::text[], $15::timestamptz[], $16::timestamptz[], $17::float8[], $18::text[],
        $19::text[], $20::int[], $21::int[], $22::int[], $23::text[], $24::bool[], $25::bool[], $26::float8[],
        $27::timestamptz[], $28::timestamptz[], $29::timestamptz[], $61::text[], $62::text[], $63::text[],
        $64::float8[], $65::float8[], $66::text[])
        AS t(id, status, metadata, started_at, ended_at, duration_seconds, recording_url, detail_url, attempt_count,
        re_attempt_count, rescheduled_count, final_status, lifecycle_ended, success, credits_used, created_at,
        updated_at, last_event_at, to_number, agent_id, ended_reason, cost_amount, cost_per_minute, cost_currency)
    ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, metadata = EXCLUDED.metadata,
        started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at, duration_seconds = EXCLUDED.duration_seconds,
        recording_url = EXCLUDED.recording_url, detail_url = EXCLUDED.detail_url,
        attempt_count = EXCLUDED.attempt_count, re_attempt_count = EXCLUDED.re_attempt_count,
        rescheduled_count = EXCLUDED.rescheduled_count, final_status = EXCLUDED.final_status,
        lifecycle_ended = EXCLUDED.lifecycle_ended, success = EXCLUDED.success, credits_used = EXCLUDED.credits_used,
        updated_at = EXCLUDED.updated_at, last_event_at = EXCLUDED.last_event_at,
        to_number = EXCLUDED.to_number, agent_id = EXCLUDED.agent_id, ended_reason = EXCLUDED.ended_reason,
        cost_amount = EXCLUDED.cost_amount, cost_per_minute = EXCLUDED.cost_per_minute,
        cost_currency = EXCLUDED.cost_currency
), attempts AS (
    INSERT INTO attempt (call_id, number, status, connected, started_at, ended_at, duration_seconds, recording_url,
        detail_url, credits_used, created_at, updated_at)
    SELECT * FROM unnest($30::text[], $31::int[], $32::text[], $33::bool[], $34::timestamptz[], $35::timestamptz[],
        $36::float8[], $37::text[], $38::text[], $39::float8[], $40::timestamptz[], $41::timestamptz[])
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
SELECT ins.id, ins.dedupe_key, (SELECT count(*) FROM analyses) AS analyses,
    (SELECT count(*) FROM actions) AS actions FROM ins,
    (SELECT pg_notify('calltrail_events', (SELECT max(seq) FROM ins)::text)) AS notified
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
    pub(super) fn of(batch: &[super::store::Input<'_>]) -> Self {
        let mut this = Self::default();
        for (d, ..) in batch {
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
}

/// The batch's calls (with their current attempts) and the stored copies
/// of its deliveries.
pub(super) async fn load(
    txn: &mut Transaction<'_, Postgres>,
    call_ids: &[String],
    lookups: &Lookups,
) -> Result<(Vec<CallState>, Vec<StoredEvent>), sqlx::Error> {
    let rows = sqlx::query(LOAD)
        .bind(call_ids)
        .bind(&lookups.calls)
        .bind(&lookups.keys)
        .bind(&lookups.callless)
        .bind(&lookups.upstream)
        .fetch_all(&mut **txn)
        .await?;
    let (mut calls, mut stored) = (Vec::new(), Vec::new());
    for r in &rows {
        match r.try_get::<Option<i64>, _>("e_id")? {
            Some(id) => stored.push(StoredEvent {
                id,
                call_id: r.try_get("e_call_id")?,
                attempt_number: r.try_get("e_attempt_number")?,
                dedupe_key: r.try_get("e_dedupe_key")?,
            }),
            None => calls.push(call_state(r)?),
        }
    }
    Ok((calls, stored))
}

/// Write a batch's changes; returns the ids of its new raw-log rows, in order.
pub(super) async fn write(
    txn: &mut Transaction<'_, Postgres>,
    changes: Changes,
) -> Result<Vec<i64>, sqlx::Error> {
    let Changes {
        events,
        calls,
        attempts,
        analyses,
        actions,
    } = changes;
    if events.is_empty() && calls.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<&str> = events.iter().map(|e| e.dedupe_key.as_str()).collect();
    let json = |v: &Option<Value>| v.as_ref().map(Value::to_string);
    // 1-based positions of events in the batch's block of `seq`s.
    let event_n = |i: &usize| *i as i64 + 1;
    let c = &calls;
    let a = &attempts;
    let (analyses_len, actions_len) = (analyses.len(), actions.len());
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
        .fetch_all(&mut **txn)
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
    let written = |column: &str| -> Result<usize, sqlx::Error> {
        match rows.first() {
            Some(row) => Ok(row.try_get::<i64, _>(column)? as usize),
            None => Ok(0),
        }
    };
    if written("analyses")? != analyses_len || written("actions")? != actions_len {
        return Err(sqlx::Error::Protocol(
            "analyses or actions written do not match the batch's".into(),
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

#[cfg(test)]
mod tests {
    use super::lock_keys;

    #[test]
    fn lock_keys_are_fnv_1a_of_the_ids_sorted_without_repeats() {
        // Replicas of every version must lock a call under the same key:
        // FNV-1a 64's published values for "" and "a".
        let keys = lock_keys(&["a".into(), String::new(), "a".into()]);
        assert_eq!(
            keys,
            vec![
                0xaf63_dc4c_8601_ec8c_u64 as i64,
                0xcbf2_9ce4_8422_2325_u64 as i64
            ]
        );
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }
}
