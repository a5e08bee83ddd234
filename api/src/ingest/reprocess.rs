//! `calltrail reprocess`: rebuild calls, attempts, analyses and actions from
//! the raw log with today's rules, so a fix to `apply` reaches history. The
//! raw log is replayed call by call in commit order through the same
//! [`Projection`] ingestion uses. Actions keep their rows (their ids, which
//! workers hold, and their acknowledgements): an action today's rules still
//! derive is rewritten in place, one they no longer derive is deleted.

use std::collections::HashSet;

use entity::{action, analysis, attempt, call, webhook_event};
use sea_orm::sea_query::{Alias, Expr};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};

use super::store::write_projection;
use crate::domain::{Changes, Decision, Projection, parse};

/// Calls rebuilt per transaction step (and per query of the raw log).
const CHUNK: usize = 500;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReprocessSummary {
    pub calls: usize,
    pub events: usize,
    /// Stored deliveries today's rules see as duplicates (kept, without effect).
    pub now_duplicates: usize,
}

/// A write that changes nothing: SQLite's write lock, taken first.
const LOCK_SQLITE: &str = "UPDATE event_clock SET last = last WHERE id = 1";

/// Rebuild one call (`Some(id)`) or everything, in one transaction: readers
/// see the old projection or the new one, never half of each, and ingestion
/// waits for it.
pub async fn reprocess(
    db: &DatabaseConnection,
    only: Option<&str>,
) -> Result<ReprocessSummary, DbErr> {
    let txn = db.begin().await?;
    // Ingestion waits until the rebuild commits: every write takes the
    // clock row first, so no writer changes a call between the rebuild's
    // read of the raw log and its write of the call, nor writes back a call
    // it loaded before the rebuild.
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        txn.execute_unprepared(super::postgres::SERIALIZE).await?;
    } else {
        // SQLite: take the write lock before reading anything (a deferred
        // transaction that has read cannot wait for it: a writer's commit
        // in between fails it at once with "database is locked"). This
        // statement waits for the writer's batch like any other writer.
        txn.execute_unprepared(LOCK_SQLITE).await?;
    }
    let before = action_events(&txn, only).await?;
    let version = next_version(&txn, only).await?;
    clear(&txn, only).await?;

    let mut call_ids: Vec<Option<String>> = match only {
        Some(id) => vec![Some(id.to_owned())],
        None => {
            webhook_event::Entity::find()
                .select_only()
                .column(webhook_event::Column::CallId)
                .distinct()
                .into_tuple()
                .all(&txn)
                .await?
        }
    };
    call_ids.sort();
    let mut summary = ReprocessSummary::default();
    let mut rebuilt = HashSet::new();
    for chunk in call_ids.chunks(CHUNK) {
        rebuild(&txn, chunk, &mut summary, &mut rebuilt).await?;
    }
    set_version(&txn, only, version).await?;
    // Actions today's rules no longer derive from their delivery.
    let gone: Vec<i64> = before.difference(&rebuilt).copied().collect();
    for chunk in gone.chunks(CHUNK) {
        action::Entity::delete_many()
            .filter(action::Column::EventId.is_in(chunk.iter().copied()))
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(summary)
}

/// The deliveries the actions in scope came from.
async fn action_events(
    txn: &DatabaseTransaction,
    only: Option<&str>,
) -> Result<HashSet<i64>, DbErr> {
    let mut query = action::Entity::find()
        .select_only()
        .column(action::Column::EventId);
    if let Some(id) = only {
        query = query.filter(action::Column::CallId.eq(id));
    }
    Ok(query.into_tuple().all(txn).await?.into_iter().collect())
}

/// A version above any the calls in scope have, read before they are
/// deleted (no write comes between: PostgreSQL's writers wait for the clock
/// this transaction holds; SQLite's one writer waits for its write lock,
/// or fails it).
async fn next_version(txn: &DatabaseTransaction, only: Option<&str>) -> Result<i64, DbErr> {
    let mut query = call::Entity::find()
        .select_only()
        .column_as(Expr::cust("MAX(\"version\")"), "version");
    if let Some(id) = only {
        query = query.filter(call::Column::Id.eq(id));
    }
    let max: Option<Option<i64>> = query.into_tuple().one(txn).await?;
    Ok(max.flatten().unwrap_or(0) + 1)
}

/// Rebuilt calls get a version above any they had, so that a PostgreSQL
/// writer that loaded one of them before the rebuild, or keeps it in
/// memory (`known.rs`), cannot write over it (`postgres.rs`: it loads
/// again).
async fn set_version(
    txn: &DatabaseTransaction,
    only: Option<&str>,
    version: i64,
) -> Result<(), DbErr> {
    let mut update =
        call::Entity::update_many().col_expr(Alias::new("version"), Expr::value(version));
    if let Some(id) = only {
        update = update.filter(call::Column::Id.eq(id));
    }
    update.exec(txn).await?;
    Ok(())
}

async fn clear(txn: &DatabaseTransaction, only: Option<&str>) -> Result<(), DbErr> {
    match only {
        Some(id) => {
            analysis::Entity::delete_many()
                .filter(analysis::Column::CallId.eq(id))
                .exec(txn)
                .await?;
            attempt::Entity::delete_many()
                .filter(attempt::Column::CallId.eq(id))
                .exec(txn)
                .await?;
            call::Entity::delete_many()
                .filter(call::Column::Id.eq(id))
                .exec(txn)
                .await?;
        }
        None => {
            analysis::Entity::delete_many().exec(txn).await?;
            attempt::Entity::delete_many().exec(txn).await?;
            call::Entity::delete_many().exec(txn).await?;
        }
    }
    Ok(())
}

/// Replay the raw log of some calls (None: deliveries without a call) and write the result.
async fn rebuild(
    txn: &DatabaseTransaction,
    chunk: &[Option<String>],
    summary: &mut ReprocessSummary,
    rebuilt: &mut HashSet<i64>,
) -> Result<(), DbErr> {
    let named: Vec<&str> = chunk.iter().filter_map(|c| c.as_deref()).collect();
    let mut condition =
        sea_orm::Condition::any().add(webhook_event::Column::CallId.is_in(named.iter().copied()));
    if chunk.iter().any(Option::is_none) {
        condition = condition.add(webhook_event::Column::CallId.is_null());
    }
    // In commit order, as ingestion applied them and as subscriptions
    // rebuild a call (ids of old rows may have committed out of order).
    let events = webhook_event::Entity::find()
        .filter(condition)
        .order_by_asc(webhook_event::Column::Seq)
        .order_by_asc(webhook_event::Column::Id)
        .all(txn)
        .await?;

    let mut projection = Projection::default();
    let mut ids = Vec::new();
    let mut stored = Vec::new();
    for event in events {
        summary.events += 1;
        let Ok(delivery) = parse(event.body.as_bytes()) else {
            tracing::warn!(
                event_id = event.id,
                "stored delivery no longer parses; skipped"
            );
            continue;
        };
        match projection.accept(delivery, event.received_at, event.signature_verified) {
            Decision::Stored(_) => {
                ids.push(event.id);
                stored.push(event);
            }
            Decision::Duplicate(_) => summary.now_duplicates += 1,
        }
    }
    let Changes {
        events,
        calls,
        attempts,
        analyses,
        actions,
    } = projection.into_changes();
    summary.calls += calls.len();
    // The raw log keeps each delivery; only what today's rules derive from it changes.
    for (new, old) in events.iter().zip(&stored) {
        if new.attempt_number != old.attempt_number || new.outcome != old.outcome {
            webhook_event::Entity::update_many()
                .col_expr(
                    webhook_event::Column::AttemptNumber,
                    Expr::value(new.attempt_number),
                )
                .col_expr(webhook_event::Column::Outcome, Expr::value(new.outcome))
                .filter(webhook_event::Column::Id.eq(old.id))
                .exec(txn)
                .await?;
        }
    }
    rebuilt.extend(actions.iter().map(|(i, _)| ids[*i]));
    write_projection(txn, calls, attempts, analyses, actions, &ids).await
}
