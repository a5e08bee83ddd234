//! The PostgreSQL side of a batch: every statement has fixed text (rows
//! travel as arrays through `unnest`), so each is prepared once per
//! connection, and a batch costs seven round trips whatever its size: begin,
//! lock, load calls, load stored copies, insert events, write the rest, commit.

use chrono::{DateTime, Utc};
use sea_orm::sqlx::{self, PgPool, Postgres, Row, Transaction};
use serde_json::Value;

use crate::domain::{AttemptState, CallState, CallStatus, Changes, StoredEvent};

/// Serialize each call across replicas for this transaction (advisory locks
/// taken in hash order, so two batches cannot deadlock).
const LOCK: &str = "SELECT pg_advisory_xact_lock(h) FROM \
    (SELECT DISTINCT hashtextextended(id, 0) AS h FROM unnest($1::text[]) AS t(id) ORDER BY 1) AS locks";

const LOAD_CALLS: &str = "SELECT c.id, c.metadata::text AS metadata, c.started_at, c.ended_at, c.duration_seconds, \
    c.recording_url, c.detail_url, c.re_attempt_count, c.rescheduled_count, c.final_status, c.lifecycle_ended, \
    c.success, c.credits_used, c.created_at, c.updated_at, c.last_event_at, \
    c.to_number, c.agent_id, c.ended_reason, c.cost_amount, c.cost_per_minute, c.cost_currency, \
    a.number, a.status, a.connected, a.started_at AS a_started_at, a.ended_at AS a_ended_at, \
    a.duration_seconds AS a_duration_seconds, a.recording_url AS a_recording_url, a.detail_url AS a_detail_url, \
    a.credits_used AS a_credits_used, a.created_at AS a_created_at, a.updated_at AS a_updated_at \
    FROM call c JOIN attempt a ON a.call_id = c.id AND a.number = c.attempt_count WHERE c.id = ANY($1)";

/// Stored copies of the batch's deliveries (dedupe): v1 by call and key
/// (`webhook_event_dedupe`), v1 without a call by key
/// (`webhook_event_callless`), v2 by the platform's event id
/// (`webhook_event_upstream_id`, partial: hence `IS NOT NULL`).
const LOAD_STORED: &str = "SELECT e.id, e.call_id, e.attempt_number, e.dedupe_key FROM webhook_event e \
    JOIN unnest($1::text[], $2::text[]) AS t(call_id, key) ON e.call_id = t.call_id AND e.dedupe_key = t.key \
    UNION SELECT e.id, e.call_id, e.attempt_number, e.dedupe_key FROM webhook_event e \
    JOIN unnest($3::text[]) AS k(key) ON e.call_id IS NULL AND e.dedupe_key = k.key \
    UNION SELECT id, call_id, attempt_number, dedupe_key FROM webhook_event \
    WHERE upstream_id = ANY($4) AND upstream_id IS NOT NULL";

/// Insert the batch's events numbered in commit order: the `event_clock` row
/// lock taken here is held until COMMIT, so batches get their `seq` block in
/// the order they become visible (docs/ARCHITECTURE.md, "Commit order").
/// NOTIFY is transactional: replicas hear of the batch when it commits.
const INSERT_EVENTS: &str = "WITH clock AS ( \
    UPDATE event_clock SET last = last + cardinality($6::text[]) WHERE id = 1 RETURNING last \
), ins AS ( \
    INSERT INTO webhook_event (received_at, format, event_type, call_id, attempt_number, dedupe_key, \
        signature_verified, recognized, outcome, body, upstream_id, seq) \
    SELECT t.received_at, t.format, t.event_type, t.call_id, t.attempt_number, t.dedupe_key, \
        t.signature_verified, t.recognized, t.outcome, t.body, t.upstream_id, \
        clock.last - cardinality($6::text[]) + t.n \
    FROM clock, unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::bool[], \
        $8::bool[], $9::text[], $10::text[], $11::text[]) WITH ORDINALITY AS t(received_at, format, event_type, \
        call_id, attempt_number, dedupe_key, signature_verified, recognized, outcome, body, upstream_id, n) \
    RETURNING id, dedupe_key, seq \
) SELECT ins.id, ins.dedupe_key FROM ins, \
    (SELECT pg_notify('calltrail_events', (SELECT max(seq) FROM ins)::text)) AS notified \
    ORDER BY ins.seq";

/// Calls, attempts, analyses and actions in one statement. Foreign keys are
/// checked at the end of the statement, when the calls are there. The call
/// columns v2 added are the last parameters ($50–$55), so the numbers of
/// the others stayed put.
const WRITE_REST: &str = "WITH calls AS (
    INSERT INTO call (id, status, metadata, started_at, ended_at, duration_seconds, recording_url, detail_url,
        attempt_count, re_attempt_count, rescheduled_count, final_status, lifecycle_ended, success, credits_used,
        created_at, updated_at, last_event_at, to_number, agent_id, ended_reason, cost_amount, cost_per_minute,
        cost_currency)
    SELECT id, status, metadata::jsonb, started_at, ended_at, duration_seconds, recording_url, detail_url,
        attempt_count, re_attempt_count, rescheduled_count, final_status, lifecycle_ended, success, credits_used,
        created_at, updated_at, last_event_at, to_number, agent_id, ended_reason, cost_amount, cost_per_minute,
        cost_currency
    FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::float8[], $7::text[],
        $8::text[], $9::int[], $10::int[], $11::int[], $12::text[], $13::bool[], $14::bool[], $15::float8[],
        $16::timestamptz[], $17::timestamptz[], $18::timestamptz[], $50::text[], $51::text[], $52::text[],
        $53::float8[], $54::float8[], $55::text[])
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
    SELECT * FROM unnest($19::text[], $20::int[], $21::text[], $22::bool[], $23::timestamptz[], $24::timestamptz[],
        $25::float8[], $26::text[], $27::text[], $28::float8[], $29::timestamptz[], $30::timestamptz[])
    ON CONFLICT (call_id, number) DO UPDATE SET status = EXCLUDED.status, connected = EXCLUDED.connected,
        started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at, duration_seconds = EXCLUDED.duration_seconds,
        recording_url = EXCLUDED.recording_url, detail_url = EXCLUDED.detail_url,
        credits_used = EXCLUDED.credits_used, updated_at = EXCLUDED.updated_at
), analyses AS (
    INSERT INTO analysis (call_id, attempt_number, event_id, success, summary, required_actions, insights, outcome,
        credits_used, credits_available, created_at)
    SELECT call_id, attempt_number, event_id, success, summary, required_actions::jsonb, insights::jsonb,
        outcome::jsonb, credits_used, credits_available, created_at
    FROM unnest($31::text[], $32::int[], $33::int8[], $34::bool[], $35::text[], $36::text[], $37::text[],
        $38::text[], $39::float8[], $40::float8[], $41::timestamptz[])
        AS t(call_id, attempt_number, event_id, success, summary, required_actions, insights, outcome, credits_used,
        credits_available, created_at)
    ON CONFLICT (call_id, attempt_number) DO UPDATE SET event_id = EXCLUDED.event_id, success = EXCLUDED.success,
        summary = EXCLUDED.summary, required_actions = EXCLUDED.required_actions, insights = EXCLUDED.insights,
        outcome = EXCLUDED.outcome, credits_used = EXCLUDED.credits_used,
        credits_available = EXCLUDED.credits_available, created_at = EXCLUDED.created_at
)
INSERT INTO action (event_id, call_id, attempt_number, kind, reason, payload, status, created_at)
SELECT event_id, call_id, attempt_number, kind, reason, payload::jsonb, status, created_at
FROM unnest($42::int8[], $43::text[], $44::int[], $45::text[], $46::text[], $47::text[], $48::text[],
    $49::timestamptz[]) AS t(event_id, call_id, attempt_number, kind, reason, payload, status, created_at)";

pub(super) async fn begin(
    pool: &PgPool,
    call_ids: &[String],
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut txn = pool.begin().await?;
    if !call_ids.is_empty() {
        sqlx::query(LOCK).bind(call_ids).execute(&mut *txn).await?;
    }
    Ok(txn)
}

pub(super) async fn load_calls(
    txn: &mut Transaction<'_, Postgres>,
    ids: &[String],
) -> Result<Vec<CallState>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(LOAD_CALLS)
        .bind(ids)
        .fetch_all(&mut **txn)
        .await?;
    rows.iter().map(call_state).collect()
}

/// What [`LOAD_STORED`] looks up for a batch: (calls, keys) of v1 deliveries
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

pub(super) async fn load_stored(
    txn: &mut Transaction<'_, Postgres>,
    lookups: &Lookups,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows = sqlx::query(LOAD_STORED)
        .bind(&lookups.calls)
        .bind(&lookups.keys)
        .bind(&lookups.callless)
        .bind(&lookups.upstream)
        .fetch_all(&mut **txn)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(StoredEvent {
                id: r.try_get("id")?,
                call_id: r.try_get("call_id")?,
                attempt_number: r.try_get("attempt_number")?,
                dedupe_key: r.try_get("dedupe_key")?,
            })
        })
        .collect()
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
    let mut ids = Vec::with_capacity(events.len());
    if !events.is_empty() {
        let keys: Vec<&str> = events.iter().map(|e| e.dedupe_key.as_str()).collect();
        let rows = sqlx::query(INSERT_EVENTS)
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
            .fetch_all(&mut **txn)
            .await?;
        for (row, key) in rows.iter().zip(&keys) {
            // Rows come back in insertion order; check rather than trust it.
            if row.try_get::<&str, _>("dedupe_key")? != *key {
                return Err(sqlx::Error::Protocol(
                    "RETURNING rows out of insertion order".into(),
                ));
            }
            ids.push(row.try_get("id")?);
        }
    }
    let json = |v: &Option<Value>| v.as_ref().map(Value::to_string);
    let c = &calls;
    let a = &attempts;
    sqlx::query(WRITE_REST)
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
        .bind(analyses.iter().map(|(i, _)| ids[*i]).collect::<Vec<_>>())
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
        .bind(actions.iter().map(|(i, _)| ids[*i]).collect::<Vec<_>>())
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
        .execute(&mut **txn)
        .await?;
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
