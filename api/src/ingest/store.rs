//! One batch, one transaction: load the batch's calls and the
//! stored copies of its deliveries, run the pure [`Projection`], write its
//! changes, commit. PostgreSQL's statements are in `postgres.rs` (rows as
//! arrays through `unnest`), SQLite's in `sqlite.rs` (one cached single-row
//! statement per row); the rows' values, and the multi-row writes
//! `calltrail reprocess` uses, are here.

use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use entity::call;
use sea_orm::Value as DbValue;
use sea_orm::sqlx::PgConnection;
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction,
    DbErr,
};
use serde_json::Value;

use super::known::{Known, Learned, Prior};
use super::postgres;
use super::rows::{self, Rows};
use super::sqlite::SqliteStore;
use crate::domain::{
    ActionRow, AnalysisRow, AttemptState, CallState, Changes, Cost, Decision, Delivery, EventKind,
    EventRef, NewEvent, Projection, StoredEvent,
};

/// What the webhook answers for one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// `WebhookEvent.id` of the stored delivery (for a duplicate: of the copy stored first).
    pub event_id: i64,
    pub duplicate: bool,
}

/// Whether a batch that failed had committed after all ([`postgres::Writer::settle`]).
pub(super) enum Settled {
    /// Nothing of it is stored: its deliveries can be committed again.
    NotCommitted,
    /// It committed: what each delivery stored, or the copy it duplicates
    /// (None: not found, which a delivery that committed cannot be).
    Committed(Vec<Option<Receipt>>),
    /// The database could not be asked.
    Unknown(DbErr),
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
        DatabaseBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            let mut conn = pool.acquire().await.map_err(postgres::db_err)?;
            commit_postgres(&mut conn, batch, false, None)
                .await
                .map_err(postgres::db_err)
        }
        _ => commit_sqlite(db, batch).await,
    }
}

/// SQLite outside the writers (tests, tools): a connection of the writers' kind for this batch.
async fn commit_sqlite(
    db: &DatabaseConnection,
    batch: &[Input<'_>],
) -> Result<Vec<Receipt>, DbErr> {
    SqliteStore::open_like(db).await?.commit(batch)
}

/// One batch on PostgreSQL, on `conn`: the load (skipped when `known`,
/// trusted, knows all the batch's calls, or they start with it) and the
/// write, which commits on its own (`postgres.rs`). `serialized` (a batch
/// that lost a race, or one no call version guards): in a transaction
/// holding the `event_clock` row from before the load, so that no other
/// write can come between; it loads all its calls whatever `known` holds.
/// What a committed batch wrote goes to `known`.
pub(super) async fn commit_postgres(
    conn: &mut PgConnection,
    batch: &[Input<'_>],
    serialized: bool,
    mut known: Option<&mut Known>,
) -> Result<Vec<Receipt>, sea_orm::sqlx::Error> {
    use sea_orm::sqlx::Connection;
    let (receipts, learned) = if serialized {
        // READ COMMITTED whatever the database's default: the load, a statement
        // after the lock, must see what the lock's last holder committed.
        let mut txn = conn
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await?;
        sea_orm::sqlx::query(postgres::SERIALIZE)
            .execute(&mut *txn)
            .await?;
        let done = load_apply_write(&mut txn, batch, known.as_deref_mut(), Trust::Nothing)
            .await?
            .ok_or_else(loaded_yet_unwritten)?;
        txn.commit().await?;
        done
    } else {
        let trust = match known.as_deref() {
            Some(k) if k.trusted() => Trust::Known,
            _ => Trust::Starts,
        };
        let done = load_apply_write(conn, batch, known.as_deref_mut(), trust).await?;
        match done {
            Some(done) => done,
            // A known call the batch would not write: loaded after all.
            None => load_apply_write(conn, batch, known.as_deref_mut(), Trust::Starts)
                .await?
                .ok_or_else(loaded_yet_unwritten)?,
        }
    };
    if let Some(known) = known {
        known.learn(learned);
    }
    Ok(receipts)
}

/// [`load_apply_write`] declines only calls it did not load.
fn loaded_yet_unwritten() -> sea_orm::sqlx::Error {
    sea_orm::sqlx::Error::Protocol("a batch that loaded its calls declined to write them".into())
}

/// What a batch may take from [`Known`] instead of loading it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// Known calls, and calls it starts (taken to be new).
    Known,
    /// Calls it starts only.
    Starts,
    /// Nothing: every call is loaded.
    Nothing,
}

/// Whether the first of `call`'s deliveries in the batch starts a call
/// (`call.initiate`, v2 `call.queued`): its call is taken to be new rather
/// than loaded, when not known.
fn starts(batch: &[Input<'_>], call: &str) -> bool {
    batch
        .iter()
        .find(|(d, ..)| d.call_id.as_deref() == Some(call))
        .is_some_and(|(d, ..)| matches!(d.kind, EventKind::Initiate | EventKind::Queued))
}

/// Load what `trust` does not take from `known`, apply, write. `None`,
/// writing nothing, when a call taken from `known` would not be written
/// (every delivery of it a duplicate, or of a kind calltrail does not
/// know): only a write checks a call's version, so what the batch answers
/// about such a call (a duplicate of which delivery, at which attempt)
/// must come from a load.
async fn load_apply_write(
    conn: &mut PgConnection,
    batch: &[Input<'_>],
    mut known: Option<&mut Known>,
    trust: Trust,
) -> Result<Option<(Vec<Receipt>, Learned)>, sea_orm::sqlx::Error> {
    let call_ids: BTreeSet<&str> = batch
        .iter()
        .filter_map(|(d, ..)| d.call_id.as_deref())
        .collect();
    let mut clock = Phases::start();
    let (mut calls, mut stored, mut versions) = (Vec::new(), Vec::new(), HashMap::new());
    let mut learned = Learned::default();
    let mut from_known = Vec::new();
    let mut to_load = Vec::new();
    for id in call_ids {
        if let Some(known) = known.as_deref_mut() {
            if trust == Trust::Known
                && let Some(entry) = known.get(id)
            {
                calls.push(entry.state.clone());
                stored.extend(entry.events.iter().cloned());
                versions.insert(id.to_owned(), entry.version);
                learned.priors.push((id.to_owned(), Prior::Known));
                from_known.push(id);
                continue;
            }
            if trust != Trust::Nothing
                && !known.contains(id)
                && !known.exists(id)
                && starts(batch, id)
            {
                learned.priors.push((id.to_owned(), Prior::New));
                continue;
            }
        }
        to_load.push(id.to_owned());
    }
    let lookups = postgres::Lookups::of(batch, |id| to_load.iter().any(|l| l == id));
    if !to_load.is_empty() || !lookups.is_empty() {
        let loaded = postgres::load(conn, &to_load, &lookups).await?;
        if let Some(known) = known {
            // A known call loaded as known (its version, and its creation:
            // a call deleted and started again restarts its versions)
            // stays known; otherwise someone else wrote it: it is
            // forgotten, and the writer loads for a while. A call found
            // and not known is not taken for new again.
            for id in &to_load {
                let Some(entry) = known.get(id) else {
                    if loaded.versions.contains_key(id) {
                        known.found(id);
                    }
                    continue;
                };
                let same = |c: &&CallState| c.id == *id && c.created_at == entry.state.created_at;
                if loaded.versions.get(id) == Some(&entry.version)
                    && loaded.calls.iter().any(|c| same(&c))
                {
                    learned.priors.push((id.clone(), Prior::Known));
                } else {
                    known.forget(id);
                    known.distrust();
                }
            }
        }
        calls.extend(loaded.calls);
        stored.extend(loaded.stored);
        versions.extend(loaded.versions);
    }
    let load_us = clock.lap();
    let (decisions, changes) = project(calls, stored, batch);
    if from_known
        .iter()
        .any(|id| !changes.calls.iter().any(|c| c.id == *id))
    {
        return Ok(None);
    }
    let apply_us = clock.lap();
    let ids = postgres::write(conn, &changes, &versions).await?;
    tracing::debug!(
        size = batch.len(),
        loaded = to_load.len(),
        load_us,
        apply_us,
        write_us = clock.lap(),
        "postgres batch phases"
    );
    learned.touched = changes.calls;
    learned.events = changes
        .events
        .into_iter()
        .zip(&ids)
        .map(|(e, &id)| StoredEvent {
            id,
            call_id: e.call_id,
            attempt_number: e.attempt_number,
            dedupe_key: e.dedupe_key,
        })
        .collect();
    Ok(Some((receipts(decisions, &ids), learned)))
}

/// Microseconds between laps.
pub(super) struct Phases(std::time::Instant);

impl Phases {
    pub(super) fn start() -> Self {
        Self(std::time::Instant::now())
    }

    pub(super) fn lap(&mut self) -> u64 {
        let now = std::time::Instant::now();
        let us = now.duration_since(self.0).as_micros() as u64;
        self.0 = now;
        us
    }
}

/// The pure part: dedupe and apply the whole batch in memory.
pub(super) fn project(
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

pub(super) fn receipts(decisions: Vec<Decision>, ids: &[i64]) -> Vec<Receipt> {
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

pub(super) const EVENT_COLUMNS: &[&str] = &[
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

pub(super) const CALL_COLUMNS: &[&str] = &[
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

pub(super) const ATTEMPT_COLUMNS: &[&str] = &[
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

pub(super) const ANALYSIS_COLUMNS: &[&str] = &[
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

pub(super) const ACTION_COLUMNS: &[&str] = &[
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
pub(super) static CALL_UPSERT: LazyLock<String> = LazyLock::new(|| {
    let update: Vec<&str> = CALL_COLUMNS
        .iter()
        .copied()
        .filter(|c| !matches!(*c, "id" | "created_at"))
        .collect();
    rows::upsert(&["id"], &update)
});

/// So is an attempt's, except its key and `created_at`.
pub(super) static ATTEMPT_UPSERT: LazyLock<String> = LazyLock::new(|| {
    let update: Vec<&str> = ATTEMPT_COLUMNS
        .iter()
        .copied()
        .filter(|c| !matches!(*c, "call_id" | "number" | "created_at"))
        .collect();
    rows::upsert(&["call_id", "number"], &update)
});

/// One analysis per attempt: a later one replaces it whole.
pub(super) static ANALYSIS_UPSERT: LazyLock<String> =
    LazyLock::new(|| rows::upsert(&["call_id", "attempt_number"], &ANALYSIS_COLUMNS[2..]));

/// An action rebuilt by `calltrail reprocess` keeps its row, found by the
/// delivery it came from: its id (workers hold it) and what a worker set
/// (status, note, when handled), and `created_at`; what the delivery says is
/// rewritten.
static ACTION_REBUILT: LazyLock<String> = LazyLock::new(|| {
    rows::upsert(
        &["event_id"],
        &["call_id", "attempt_number", "kind", "reason", "payload"],
    )
});

/// Write calls, attempts, analyses and actions; `ids` maps the event
/// indexes of analyses and actions to raw-log ids. For `calltrail
/// reprocess`, on both databases (ingestion writes through `postgres.rs` and
/// `sqlite.rs`, from the same row values).
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
        rows.push(analysis_values(ids[i], a));
    }
    insert(txn, rows, &ANALYSIS_UPSERT).await?;
    let mut rows = Rows::new("action", ACTION_COLUMNS, actions.len());
    for (i, a) in actions {
        rows.push(action_values(ids[i], a));
    }
    insert(txn, rows, &ACTION_REBUILT).await
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
pub(super) fn call_values(c: &CallState) -> [DbValue; 24] {
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
pub(super) fn attempt_values(call_id: &str, a: &AttemptState) -> [DbValue; 12] {
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

/// A raw-log row, in [`EVENT_COLUMNS`] order, at position `seq`.
pub(super) fn event_values(e: NewEvent, seq: i64) -> [DbValue; 12] {
    [
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
    ]
}

/// An analysis row, in [`ANALYSIS_COLUMNS`] order, from raw-log row `event_id`.
pub(super) fn analysis_values(event_id: i64, a: AnalysisRow) -> [DbValue; 11] {
    [
        a.call_id.into(),
        a.attempt_number.into(),
        event_id.into(),
        a.success.into(),
        a.summary.into(),
        Value::from(a.required_actions).into(),
        a.insights.into(),
        a.outcome.into(),
        a.credits_used.into(),
        a.credits_available.into(),
        a.created_at.into(),
    ]
}

/// A new (pending) action row, in [`ACTION_COLUMNS`] order, from raw-log row `event_id`.
pub(super) fn action_values(event_id: i64, a: ActionRow) -> [DbValue; 10] {
    [
        event_id.into(),
        a.call_id.into(),
        a.attempt_number.into(),
        a.kind.into(),
        a.reason.into(),
        a.payload.into(),
        a.status.into(),
        None::<String>.into(),
        a.created_at.into(),
        None::<DateTime<Utc>>.into(),
    ]
}
