//! One batch, one transaction: (lock and) load the batch's calls and the
//! stored copies of its bytes, run the pure [`Projection`], write its changes
//! with multi-row statements, commit. PostgreSQL's statements are in
//! `postgres.rs`; SQLite's are built here with SeaORM.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use entity::call;
use sea_orm::Value as DbValue;
use sea_orm::sqlx::PgPool;
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction,
    DbErr, QueryResult, SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};
use serde_json::Value;

use super::postgres;
use super::rows::{self, Rows};
use crate::domain::{
    ActionRow, AnalysisRow, AttemptState, CallState, CallStatus, Changes, Cost, Decision, Delivery,
    EventRef, Projection, StoredEvent,
};

/// What the webhook answers for one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// `WebhookEvent.id` of the stored delivery (for a duplicate: of the copy stored first).
    pub event_id: i64,
    pub duplicate: bool,
}

/// A delivery to commit: what it says, when it arrived, whether its signature was checked.
pub type Input<'a> = (&'a Delivery, DateTime<Utc>, bool);

/// Commit a batch of deliveries in one transaction and return one receipt
/// per delivery, in order.
pub async fn commit_batch(
    db: &DatabaseConnection,
    batch: &[Input<'_>],
) -> Result<Vec<Receipt>, DbErr> {
    match db.get_database_backend() {
        DatabaseBackend::Postgres => commit_postgres(db.get_postgres_connection_pool(), batch)
            .await
            .map_err(|e| DbErr::Custom(e.to_string())),
        _ => commit_sqlite(db, batch).await,
    }
}

/// SQLite: one writer, in-process, so statements cost no round trips; SeaORM builds them.
async fn commit_sqlite(
    db: &DatabaseConnection,
    batch: &[Input<'_>],
) -> Result<Vec<Receipt>, DbErr> {
    let options = TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    };
    let txn = db.begin_with_options(options).await?;
    let call_ids: BTreeSet<&str> = batch
        .iter()
        .filter_map(|(d, ..)| d.call_id.as_deref())
        .collect();
    let calls = load_calls(&txn, &call_ids).await?;
    let keys: BTreeSet<&str> = batch.iter().map(|(d, ..)| d.dedupe_key.as_str()).collect();
    let stored = load_stored(&txn, &keys).await?;
    let (decisions, changes) = project(calls, stored, batch);
    let ids = write(&txn, changes).await?;
    txn.commit().await?;
    Ok(receipts(decisions, &ids))
}

async fn commit_postgres(
    pool: &PgPool,
    batch: &[Input<'_>],
) -> Result<Vec<Receipt>, sea_orm::sqlx::Error> {
    let call_ids: Vec<String> = batch
        .iter()
        .filter_map(|(d, ..)| d.call_id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let keys: Vec<String> = batch
        .iter()
        .map(|(d, ..)| d.dedupe_key.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut txn = postgres::begin(pool, &call_ids).await?;
    let calls = postgres::load_calls(&mut txn, &call_ids).await?;
    let stored = postgres::load_stored(&mut txn, &keys).await?;
    let (decisions, changes) = project(calls, stored, batch);
    let ids = postgres::write(&mut txn, changes).await?;
    txn.commit().await?;
    Ok(receipts(decisions, &ids))
}

/// The pure part: dedupe and apply the whole batch in memory.
fn project(
    calls: Vec<CallState>,
    stored: Vec<StoredEvent>,
    batch: &[Input<'_>],
) -> (Vec<Decision>, Changes) {
    let mut projection = Projection::new(calls, stored);
    let decisions = batch
        .iter()
        .map(|(d, at, verified)| projection.accept((*d).clone(), *at, *verified))
        .collect();
    (decisions, projection.into_changes())
}

fn receipts(decisions: Vec<Decision>, ids: &[i64]) -> Vec<Receipt> {
    decisions
        .into_iter()
        .map(|decision| match decision {
            Decision::Stored(i) => Receipt {
                event_id: ids[i],
                duplicate: false,
            },
            Decision::Duplicate(EventRef::New(i)) => Receipt {
                event_id: ids[i],
                duplicate: true,
            },
            Decision::Duplicate(EventRef::Stored(id)) => Receipt {
                event_id: id,
                duplicate: true,
            },
        })
        .collect()
}

/// The batch's calls with their current attempts, one row each. The ids
/// travel as one JSON array, so the text is the same whatever the batch and
/// SQLite prepares it once per connection; columns are read by position
/// (by name, SeaORM formats every column's name again for every row).
const LOAD_CALLS: &str = "SELECT c.id, c.metadata, c.started_at, c.ended_at, c.duration_seconds, \
    c.recording_url, c.detail_url, c.re_attempt_count, c.rescheduled_count, c.final_status, \
    c.lifecycle_ended, c.success, c.credits_used, c.to_number, c.agent_id, c.ended_reason, \
    c.cost_amount, c.cost_per_minute, c.cost_currency, c.created_at, c.updated_at, c.last_event_at, \
    c.attempt_count, a.number, a.status, a.connected, a.started_at, a.ended_at, a.duration_seconds, \
    a.recording_url, a.detail_url, a.credits_used, a.created_at, a.updated_at \
    FROM call c LEFT JOIN attempt a ON a.call_id = c.id AND a.number = c.attempt_count \
    WHERE c.id IN (SELECT value FROM json_each(?))";

/// Stored copies of the batch's bytes (dedupe), keys as one JSON array.
const LOAD_STORED: &str = "SELECT id, call_id, attempt_number, dedupe_key FROM webhook_event \
    WHERE dedupe_key IN (SELECT value FROM json_each(?))";

/// `sql` with `keys` as its one argument: a JSON array of strings.
fn with_keys(sql: &str, keys: &BTreeSet<&str>) -> Statement {
    let keys: Vec<&str> = keys.iter().copied().collect();
    let json = serde_json::to_string(&keys).expect("strings serialize");
    Statement::from_sql_and_values(DatabaseBackend::Sqlite, sql, [json.into()])
}

async fn load_calls(
    txn: &DatabaseTransaction,
    ids: &BTreeSet<&str>,
) -> Result<Vec<CallState>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    txn.query_all_raw(with_keys(LOAD_CALLS, ids))
        .await?
        .iter()
        .map(loaded_call)
        .collect()
}

/// One row of [`LOAD_CALLS`]; a call without its current attempt is an error.
fn loaded_call(row: &QueryResult) -> Result<CallState, DbErr> {
    let id: String = row.try_get_by_index(0)?;
    let attempt_count: i32 = row.try_get_by_index(22)?;
    let Some(number) = row.try_get_by_index::<Option<i32>>(23)? else {
        return Err(DbErr::RecordNotFound(format!(
            "attempt {attempt_count} of call {id}"
        )));
    };
    let status_word: String = row.try_get_by_index(24)?;
    Ok(CallState {
        metadata: match row.try_get_by_index(1)? {
            Some(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        },
        started_at: row.try_get_by_index(2)?,
        ended_at: row.try_get_by_index(3)?,
        duration_seconds: row.try_get_by_index(4)?,
        recording_url: row.try_get_by_index(5)?,
        detail_url: row.try_get_by_index(6)?,
        re_attempt_count: row.try_get_by_index(7)?,
        rescheduled_count: row.try_get_by_index(8)?,
        final_status: row.try_get_by_index(9)?,
        lifecycle_ended: row.try_get_by_index(10)?,
        success: row.try_get_by_index(11)?,
        credits_used: row.try_get_by_index(12)?,
        to: row.try_get_by_index(13)?,
        agent_id: row.try_get_by_index(14)?,
        ended_reason: row.try_get_by_index(15)?,
        cost: cost(
            row.try_get_by_index(16)?,
            row.try_get_by_index(17)?,
            row.try_get_by_index(18)?,
        ),
        created_at: row.try_get_by_index(19)?,
        updated_at: row.try_get_by_index(20)?,
        last_event_at: row.try_get_by_index(21)?,
        current: AttemptState {
            number,
            status: status(&status_word)?,
            connected: row.try_get_by_index(25)?,
            started_at: row.try_get_by_index(26)?,
            ended_at: row.try_get_by_index(27)?,
            duration_seconds: row.try_get_by_index(28)?,
            recording_url: row.try_get_by_index(29)?,
            detail_url: row.try_get_by_index(30)?,
            credits_used: row.try_get_by_index(31)?,
            created_at: row.try_get_by_index(32)?,
            updated_at: row.try_get_by_index(33)?,
        },
        id,
    })
}

async fn load_stored(
    txn: &DatabaseTransaction,
    keys: &BTreeSet<&str>,
) -> Result<Vec<StoredEvent>, DbErr> {
    txn.query_all_raw(with_keys(LOAD_STORED, keys))
        .await?
        .iter()
        .map(|row| {
            Ok(StoredEvent {
                id: row.try_get_by_index(0)?,
                call_id: row.try_get_by_index(1)?,
                attempt_number: row.try_get_by_index(2)?,
                dedupe_key: row.try_get_by_index(3)?,
            })
        })
        .collect()
}

/// Write a batch's changes; returns the ids of its new raw-log rows, in order.
async fn write(txn: &DatabaseTransaction, changes: Changes) -> Result<Vec<i64>, DbErr> {
    let Changes {
        events,
        calls,
        attempts,
        analyses,
        actions,
    } = changes;
    let first_seq = reserve_seqs(txn, events.len()).await?;
    let mut rows = Rows::new("webhook_event", EVENT_COLUMNS, events.len());
    for (e, seq) in events.into_iter().zip(first_seq..) {
        rows.push([
            seq.into(),
            e.received_at.into(),
            e.format.as_str().into(),
            e.event_type.into(),
            e.call_id.into(),
            e.attempt_number.into(),
            e.dedupe_key.into(),
            e.upstream_id.into(),
            e.signature_verified.into(),
            e.recognized.into(),
            e.outcome.into(),
            e.body.into(),
        ]);
    }
    let mut ids = vec![0; rows.len()];
    if !rows.is_empty() {
        // Matched by `seq`: the order of RETURNING rows is not promised.
        for statement in rows.statements(txn.get_database_backend(), "RETURNING id, seq") {
            for row in txn.query_all_raw(statement).await? {
                let (id, seq): (i64, i64) = (row.try_get_by_index(0)?, row.try_get_by_index(1)?);
                ids[(seq - first_seq) as usize] = id;
            }
        }
    }
    write_projection(txn, calls, attempts, analyses, actions, &ids).await?;
    Ok(ids)
}

const EVENT_COLUMNS: &[&str] = &[
    "seq",
    "received_at",
    "format",
    "event_type",
    "call_id",
    "attempt_number",
    "dedupe_key",
    "upstream_id",
    "signature_verified",
    "recognized",
    "outcome",
    "body",
];

/// Reserve `n` positions in commit order; returns the first. SQLite has one
/// writer, so commit order is already this transaction's; the clock keeps
/// `seq` one sequence shared with PostgreSQL's scheme.
async fn reserve_seqs(txn: &DatabaseTransaction, n: usize) -> Result<i64, DbErr> {
    if n == 0 {
        return Ok(0);
    }
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "UPDATE event_clock SET last = last + ? WHERE id = 1 RETURNING last",
            [(n as i64).into()],
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("the event_clock row".into()))?;
    let last: i64 = row.try_get("", "last")?;
    Ok(last - n as i64 + 1)
}

const CALL_COLUMNS: &[&str] = &[
    "id",
    "status",
    "metadata",
    "started_at",
    "ended_at",
    "duration_seconds",
    "recording_url",
    "detail_url",
    "attempt_count",
    "re_attempt_count",
    "rescheduled_count",
    "final_status",
    "lifecycle_ended",
    "success",
    "credits_used",
    "to_number",
    "agent_id",
    "ended_reason",
    "cost_amount",
    "cost_per_minute",
    "cost_currency",
    "created_at",
    "updated_at",
    "last_event_at",
];

const ATTEMPT_COLUMNS: &[&str] = &[
    "call_id",
    "number",
    "status",
    "connected",
    "started_at",
    "ended_at",
    "duration_seconds",
    "recording_url",
    "detail_url",
    "credits_used",
    "created_at",
    "updated_at",
];

const ANALYSIS_COLUMNS: &[&str] = &[
    "call_id",
    "attempt_number",
    "event_id",
    "success",
    "summary",
    "required_actions",
    "insights",
    "outcome",
    "credits_used",
    "credits_available",
    "created_at",
];

const ACTION_COLUMNS: &[&str] = &[
    "event_id",
    "call_id",
    "attempt_number",
    "kind",
    "reason",
    "payload",
    "status",
    "note",
    "created_at",
    "handled_at",
];

/// A call's row is rewritten whole on conflict, except its id and `created_at`.
static CALL_UPSERT: LazyLock<String> = LazyLock::new(|| {
    let update: Vec<&str> = CALL_COLUMNS
        .iter()
        .copied()
        .filter(|c| !matches!(*c, "id" | "created_at"))
        .collect();
    rows::upsert(&["id"], &update)
});

/// So is an attempt's, except its key and `created_at`.
static ATTEMPT_UPSERT: LazyLock<String> = LazyLock::new(|| {
    let update: Vec<&str> = ATTEMPT_COLUMNS
        .iter()
        .copied()
        .filter(|c| !matches!(*c, "call_id" | "number" | "created_at"))
        .collect();
    rows::upsert(&["call_id", "number"], &update)
});

/// One analysis per attempt: a later one replaces it whole.
static ANALYSIS_UPSERT: LazyLock<String> =
    LazyLock::new(|| rows::upsert(&["call_id", "attempt_number"], &ANALYSIS_COLUMNS[2..]));

/// Write calls, attempts, analyses and actions; `ids` maps the event
/// indexes of analyses and actions to raw-log ids. Shared by SQLite ingestion
/// and `calltrail reprocess`.
pub(super) async fn write_projection(
    txn: &DatabaseTransaction,
    calls: Vec<CallState>,
    attempts: Vec<(String, AttemptState)>,
    analyses: Vec<(usize, AnalysisRow)>,
    actions: Vec<(usize, ActionRow)>,
    ids: &[i64],
) -> Result<(), DbErr> {
    let mut rows = Rows::new("call", CALL_COLUMNS, calls.len());
    for c in &calls {
        rows.push(call_values(c));
    }
    insert(txn, rows, &CALL_UPSERT).await?;
    let mut rows = Rows::new("attempt", ATTEMPT_COLUMNS, attempts.len());
    for (call_id, a) in &attempts {
        rows.push(attempt_values(call_id, a));
    }
    insert(txn, rows, &ATTEMPT_UPSERT).await?;
    let mut rows = Rows::new("analysis", ANALYSIS_COLUMNS, analyses.len());
    for (i, a) in analyses {
        rows.push([
            a.call_id.into(),
            a.attempt_number.into(),
            ids[i].into(),
            a.success.into(),
            a.summary.into(),
            Value::from(a.required_actions).into(),
            a.insights.into(),
            a.outcome.into(),
            a.credits_used.into(),
            a.credits_available.into(),
            a.created_at.into(),
        ]);
    }
    insert(txn, rows, &ANALYSIS_UPSERT).await?;
    let mut rows = Rows::new("action", ACTION_COLUMNS, actions.len());
    for (i, a) in actions {
        rows.push([
            ids[i].into(),
            a.call_id.into(),
            a.attempt_number.into(),
            a.kind.into(),
            a.reason.into(),
            a.payload.into(),
            a.status.into(),
            None::<String>.into(),
            a.created_at.into(),
            None::<DateTime<Utc>>.into(),
        ]);
    }
    insert(txn, rows, "").await
}

/// Insert `rows` (none: nothing to run), `tail` saying what a conflict does.
async fn insert(txn: &DatabaseTransaction, rows: Rows, tail: &str) -> Result<(), DbErr> {
    for statement in rows.statements(txn.get_database_backend(), tail) {
        txn.execute_raw(statement).await?;
    }
    Ok(())
}

/// A call's state as its row (what subscriptions show as "the call after this delivery").
pub fn call_row(c: &CallState) -> call::Model {
    use sea_orm::TryIntoModel;
    call_model(c)
        .try_into_model()
        .expect("every column of a call row is set")
}

fn call_model(c: &CallState) -> call::ActiveModel {
    call::ActiveModel {
        id: Set(c.id.clone()),
        status: Set(c.status().as_str().to_owned()),
        metadata: Set((!c.metadata.is_empty()).then(|| Value::Object(c.metadata.clone()))),
        started_at: Set(c.started_at),
        ended_at: Set(c.ended_at),
        duration_seconds: Set(c.duration_seconds),
        recording_url: Set(c.recording_url.clone()),
        detail_url: Set(c.detail_url.clone()),
        attempt_count: Set(c.current.number),
        re_attempt_count: Set(c.re_attempt_count),
        rescheduled_count: Set(c.rescheduled_count),
        final_status: Set(c.final_status.clone()),
        lifecycle_ended: Set(c.lifecycle_ended),
        success: Set(c.success),
        credits_used: Set(c.credits_used),
        to_number: Set(c.to.clone()),
        agent_id: Set(c.agent_id.clone()),
        ended_reason: Set(c.ended_reason.clone()),
        cost_amount: Set(c.cost.as_ref().and_then(|x| x.amount)),
        cost_per_minute: Set(c.cost.as_ref().and_then(|x| x.per_minute)),
        cost_currency: Set(c.cost.as_ref().map(|x| x.currency.clone())),
        created_at: Set(c.created_at),
        updated_at: Set(c.updated_at),
        last_event_at: Set(c.last_event_at),
    }
}

/// A cost as stored: known when its currency is.
pub(super) fn cost(
    amount: Option<f64>,
    per_minute: Option<f64>,
    currency: Option<String>,
) -> Option<Cost> {
    currency.map(|currency| Cost {
        amount,
        per_minute,
        currency,
    })
}

/// A call's row, in [`CALL_COLUMNS`] order.
fn call_values(c: &CallState) -> [DbValue; 24] {
    let cost = c.cost.as_ref();
    [
        c.id.as_str().into(),
        c.status().as_str().into(),
        (!c.metadata.is_empty())
            .then(|| Value::Object(c.metadata.clone()))
            .into(),
        c.started_at.into(),
        c.ended_at.into(),
        c.duration_seconds.into(),
        c.recording_url.clone().into(),
        c.detail_url.clone().into(),
        c.current.number.into(),
        c.re_attempt_count.into(),
        c.rescheduled_count.into(),
        c.final_status.clone().into(),
        c.lifecycle_ended.into(),
        c.success.into(),
        c.credits_used.into(),
        c.to.clone().into(),
        c.agent_id.clone().into(),
        c.ended_reason.clone().into(),
        cost.and_then(|x| x.amount).into(),
        cost.and_then(|x| x.per_minute).into(),
        cost.map(|x| x.currency.clone()).into(),
        c.created_at.into(),
        c.updated_at.into(),
        c.last_event_at.into(),
    ]
}

/// An attempt's row, in [`ATTEMPT_COLUMNS`] order.
fn attempt_values(call_id: &str, a: &AttemptState) -> [DbValue; 12] {
    [
        call_id.into(),
        a.number.into(),
        a.status.as_str().into(),
        a.connected.into(),
        a.started_at.into(),
        a.ended_at.into(),
        a.duration_seconds.into(),
        a.recording_url.clone().into(),
        a.detail_url.clone().into(),
        a.credits_used.into(),
        a.created_at.into(),
        a.updated_at.into(),
    ]
}

fn status(s: &str) -> Result<CallStatus, DbErr> {
    CallStatus::from_db(s)
        .ok_or_else(|| DbErr::Type(format!("unknown call status {s:?} in the database")))
}
