//! One batch, one transaction: (lock and) load the batch's calls and the
//! stored copies of its bytes, run the pure [`Projection`], write its changes
//! with multi-row statements, commit. PostgreSQL's statements are in
//! `postgres.rs`; SQLite's are built here with SeaORM.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use entity::{action, analysis, attempt, call, webhook_event};
use sea_orm::sea_query::OnConflict;
use sea_orm::sqlx::PgPool;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, Condition, ConnectionTrait, DatabaseBackend, DatabaseConnection,
    DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QuerySelect, SqliteTransactionMode,
    Statement, TransactionOptions, TransactionTrait,
};
use serde_json::Value;

use super::postgres;
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

async fn load_calls(
    txn: &DatabaseTransaction,
    ids: &BTreeSet<&str>,
) -> Result<Vec<CallState>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let calls = call::Entity::find()
        .filter(call::Column::Id.is_in(ids.iter().copied()))
        .all(txn)
        .await?;
    if calls.is_empty() {
        return Ok(Vec::new());
    }
    let current = calls.iter().fold(Condition::any(), |cond, c| {
        cond.add(
            Condition::all()
                .add(attempt::Column::CallId.eq(c.id.as_str()))
                .add(attempt::Column::Number.eq(c.attempt_count)),
        )
    });
    let mut attempts = attempt::Entity::find().filter(current).all(txn).await?;
    calls
        .into_iter()
        .map(|c| {
            let i = attempts
                .iter()
                .position(|a| a.call_id == c.id)
                .ok_or_else(|| {
                    DbErr::RecordNotFound(format!("attempt {} of call {}", c.attempt_count, c.id))
                })?;
            call_state(c, attempts.swap_remove(i))
        })
        .collect()
}

async fn load_stored(
    txn: &DatabaseTransaction,
    keys: &BTreeSet<&str>,
) -> Result<Vec<StoredEvent>, DbErr> {
    let rows: Vec<(i64, Option<String>, Option<i32>, String)> = webhook_event::Entity::find()
        .select_only()
        .columns([
            webhook_event::Column::Id,
            webhook_event::Column::CallId,
            webhook_event::Column::AttemptNumber,
            webhook_event::Column::DedupeKey,
        ])
        .filter(webhook_event::Column::DedupeKey.is_in(keys.iter().copied()))
        .into_tuple()
        .all(txn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, call_id, attempt_number, dedupe_key)| StoredEvent {
            id,
            call_id,
            attempt_number,
            dedupe_key,
        })
        .collect())
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
    let ids: Vec<i64> =
        webhook_event::Entity::insert_many(events.into_iter().zip(first_seq..).map(|(e, seq)| {
            webhook_event::ActiveModel {
                id: NotSet,
                seq: Set(seq),
                received_at: Set(e.received_at),
                format: Set(e.format.as_str().to_owned()),
                event_type: Set(e.event_type),
                call_id: Set(e.call_id),
                attempt_number: Set(e.attempt_number),
                dedupe_key: Set(e.dedupe_key),
                upstream_id: Set(e.upstream_id),
                signature_verified: Set(e.signature_verified),
                recognized: Set(e.recognized),
                outcome: Set(e.outcome.to_owned()),
                body: Set(e.body),
            }
        }))
        .exec_with_returning_keys(txn)
        .await?;

    write_projection(txn, calls, attempts, analyses, actions, &ids).await?;
    Ok(ids)
}

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
    if !calls.is_empty() {
        use call::Column as C;
        call::Entity::insert_many(calls.iter().map(call_model))
            .on_conflict(
                OnConflict::column(C::Id)
                    .update_columns([
                        C::Status,
                        C::Metadata,
                        C::StartedAt,
                        C::EndedAt,
                        C::DurationSeconds,
                        C::RecordingUrl,
                        C::DetailUrl,
                        C::AttemptCount,
                        C::ReAttemptCount,
                        C::RescheduledCount,
                        C::FinalStatus,
                        C::LifecycleEnded,
                        C::Success,
                        C::CreditsUsed,
                        C::ToNumber,
                        C::AgentId,
                        C::EndedReason,
                        C::CostAmount,
                        C::CostPerMinute,
                        C::CostCurrency,
                        C::UpdatedAt,
                        C::LastEventAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    if !attempts.is_empty() {
        use attempt::Column as A;
        attempt::Entity::insert_many(
            attempts
                .iter()
                .map(|(call_id, a)| attempt_model(call_id, a)),
        )
        .on_conflict(
            OnConflict::columns([A::CallId, A::Number])
                .update_columns([
                    A::Status,
                    A::Connected,
                    A::StartedAt,
                    A::EndedAt,
                    A::DurationSeconds,
                    A::RecordingUrl,
                    A::DetailUrl,
                    A::CreditsUsed,
                    A::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    }
    if !analyses.is_empty() {
        use analysis::Column as N;
        analysis::Entity::insert_many(analyses.into_iter().map(|(i, a)| analysis::ActiveModel {
            call_id: Set(a.call_id),
            attempt_number: Set(a.attempt_number),
            event_id: Set(ids[i]),
            success: Set(a.success),
            summary: Set(a.summary),
            required_actions: Set(Value::from(a.required_actions)),
            insights: Set(a.insights),
            outcome: Set(a.outcome),
            credits_used: Set(a.credits_used),
            credits_available: Set(a.credits_available),
            created_at: Set(a.created_at),
        }))
        .on_conflict(
            OnConflict::columns([N::CallId, N::AttemptNumber])
                .update_columns([
                    N::EventId,
                    N::Success,
                    N::Summary,
                    N::RequiredActions,
                    N::Insights,
                    N::Outcome,
                    N::CreditsUsed,
                    N::CreditsAvailable,
                    N::CreatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    }
    if !actions.is_empty() {
        action::Entity::insert_many(actions.into_iter().map(|(i, a)| action::ActiveModel {
            id: NotSet,
            event_id: Set(ids[i]),
            call_id: Set(a.call_id),
            attempt_number: Set(a.attempt_number),
            kind: Set(a.kind),
            reason: Set(a.reason),
            payload: Set(a.payload),
            status: Set(a.status.to_owned()),
            note: Set(None),
            created_at: Set(a.created_at),
            handled_at: Set(None),
        }))
        .exec_without_returning(txn)
        .await?;
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

fn attempt_model(call_id: &str, a: &AttemptState) -> attempt::ActiveModel {
    attempt::ActiveModel {
        call_id: Set(call_id.to_owned()),
        number: Set(a.number),
        status: Set(a.status.as_str().to_owned()),
        connected: Set(a.connected),
        started_at: Set(a.started_at),
        ended_at: Set(a.ended_at),
        duration_seconds: Set(a.duration_seconds),
        recording_url: Set(a.recording_url.clone()),
        detail_url: Set(a.detail_url.clone()),
        credits_used: Set(a.credits_used),
        created_at: Set(a.created_at),
        updated_at: Set(a.updated_at),
    }
}

fn status(s: &str) -> Result<CallStatus, DbErr> {
    CallStatus::from_db(s)
        .ok_or_else(|| DbErr::Type(format!("unknown call status {s:?} in the database")))
}

fn call_state(c: call::Model, a: attempt::Model) -> Result<CallState, DbErr> {
    Ok(CallState {
        metadata: match c.metadata {
            Some(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        },
        started_at: c.started_at,
        ended_at: c.ended_at,
        duration_seconds: c.duration_seconds,
        recording_url: c.recording_url,
        detail_url: c.detail_url,
        re_attempt_count: c.re_attempt_count,
        rescheduled_count: c.rescheduled_count,
        final_status: c.final_status,
        lifecycle_ended: c.lifecycle_ended,
        success: c.success,
        credits_used: c.credits_used,
        to: c.to_number,
        agent_id: c.agent_id,
        ended_reason: c.ended_reason,
        cost: cost(c.cost_amount, c.cost_per_minute, c.cost_currency),
        created_at: c.created_at,
        updated_at: c.updated_at,
        last_event_at: c.last_event_at,
        current: AttemptState {
            number: a.number,
            status: status(&a.status)?,
            connected: a.connected,
            started_at: a.started_at,
            ended_at: a.ended_at,
            duration_seconds: a.duration_seconds,
            recording_url: a.recording_url,
            detail_url: a.detail_url,
            credits_used: a.credits_used,
            created_at: a.created_at,
            updated_at: a.updated_at,
        },
        id: c.id,
    })
}
