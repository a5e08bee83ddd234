//! What subscriptions read: committed deliveries in commit order (`seq`),
//! each with the call as it stood right after it and the actions it created.
//! The live feed and the replay after a cursor read through the same function,
//! so a subscriber sees the same messages either way.

use std::collections::{HashMap, HashSet};

use entity::{action, call, webhook_event};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::ServiceError;
use super::events::EventFilter;
use crate::domain::{CallState, Projection, parse};

/// One committed delivery, as subscribers receive it.
#[derive(Clone, Debug)]
pub struct LiveEvent {
    pub event: webhook_event::Model,
    /// The call as it was right after this delivery (None when it names no call).
    pub call: Option<call::Model>,
    /// The actions this delivery created, oldest first.
    pub actions: Vec<action::Model>,
}

/// `callEvents(callId, types)`: which deliveries a subscriber wants.
#[derive(Clone, Debug, Default)]
pub struct LiveFilter {
    pub call_id: Option<String>,
    pub types: Option<Vec<String>>,
    /// A replay without `LiveEvent.call` (`actionCreated` never reads it,
    /// and rebuilding each call's history is most of a replay's work).
    pub without_calls: bool,
}

impl LiveFilter {
    /// The filter in memory, for the live feed; [`Self::condition`] is the same in SQL.
    pub fn matches(&self, e: &webhook_event::Model) -> bool {
        self.call_id
            .as_ref()
            .is_none_or(|id| e.call_id.as_ref() == Some(id))
            && self
                .types
                .as_ref()
                .is_none_or(|t| t.contains(&e.event_type))
    }

    fn condition(&self) -> Condition {
        EventFilter {
            call_id: self.call_id.clone(),
            types: self.types.clone(),
            recognized: None,
        }
        .condition()
    }
}

/// The newest position in commit order (0 for an empty log).
pub async fn head(db: &DatabaseConnection) -> Result<i64, ServiceError> {
    let max: Option<Option<i64>> = webhook_event::Entity::find()
        .select_only()
        .column_as(webhook_event::Column::Seq.max(), "max")
        .into_tuple()
        .one(db)
        .await?;
    Ok(max.flatten().unwrap_or(0))
}

/// Calls most recently seen by a reader of the whole log, as of the last
/// delivery it read: [`after_all`] applies the next deliveries to them
/// instead of replaying each call's history again.
#[derive(Default)]
pub struct Projections {
    calls: HashMap<String, Projection>,
}

impl Projections {
    /// Calls kept at most; past that the reader starts over from the log.
    const KEPT: usize = 10_000;

    /// Forget everything (the reader skipped deliveries).
    pub fn clear(&mut self) {
        self.calls.clear();
    }
}

/// [`after`] for the bus's reader, which reads every delivery in commit
/// order: the calls as of each come from `known` (the state after the
/// deliveries read before), so only calls new to it are read from the log.
/// `after` must be the position of the last delivery read into `known`.
pub async fn after_all(
    db: &DatabaseConnection,
    after: i64,
    limit: u64,
    known: &mut Projections,
) -> Result<Vec<LiveEvent>, ServiceError> {
    let events = page(db, after, &LiveFilter::default(), limit).await?;
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let unknown: HashSet<&str> = events
        .iter()
        .filter_map(|e| e.call_id.as_deref())
        .filter(|id| !known.calls.contains_key(*id))
        .collect();
    let history = if unknown.is_empty() {
        Vec::new()
    } else {
        webhook_event::Entity::find()
            .filter(webhook_event::Column::CallId.is_in(unknown.iter().copied()))
            .filter(webhook_event::Column::Seq.lte(after))
            .order_by_asc(webhook_event::Column::Seq)
            .all(db)
            .await?
    };
    let mut actions = actions_of(db, &events).await?;
    // Every read done: from here on `known` moves to the page's last delivery.
    if known.calls.len() + unknown.len() > Projections::KEPT {
        known.clear();
        return Box::pin(after_all(db, after, limit, known)).await;
    }
    for id in unknown {
        known.calls.insert(id.to_owned(), Projection::default());
    }
    for e in &history {
        apply(known, e);
    }
    Ok(events
        .into_iter()
        .map(|event| LiveEvent {
            call: apply(known, &event).map(crate::ingest::call_row),
            actions: actions.remove(&event.id).unwrap_or_default(),
            event,
        })
        .collect())
}

/// Apply a stored delivery to its call in `known` (as ingestion applied it);
/// the call's state after it.
fn apply<'a>(known: &'a mut Projections, e: &webhook_event::Model) -> Option<&'a CallState> {
    let call_id = e.call_id.as_deref()?;
    let projection = known.calls.get_mut(call_id)?;
    if let Ok(delivery) = parse(e.body.as_bytes()) {
        projection.accept(delivery, e.received_at, e.signature_verified);
        projection.forget_changes();
    }
    projection.call(call_id)
}

/// Up to `limit` deliveries committed after position `after` that match
/// `filter`, in commit order.
async fn page(
    db: &DatabaseConnection,
    after: i64,
    filter: &LiveFilter,
    limit: u64,
) -> Result<Vec<webhook_event::Model>, ServiceError> {
    Ok(webhook_event::Entity::find()
        .filter(filter.condition())
        .filter(webhook_event::Column::Seq.gt(after))
        .order_by_asc(webhook_event::Column::Seq)
        .limit(limit)
        .all(db)
        .await?)
}

/// Up to `limit` deliveries committed after position `after` that match
/// `filter`, in commit order, with their calls as of each and their actions.
pub async fn after(
    db: &DatabaseConnection,
    after: i64,
    filter: &LiveFilter,
    limit: u64,
) -> Result<Vec<LiveEvent>, ServiceError> {
    let events = page(db, after, filter, limit).await?;
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut calls = if filter.without_calls {
        HashMap::new()
    } else {
        calls_as_of(db, &events).await?
    };
    let mut actions = actions_of(db, &events).await?;
    Ok(events
        .into_iter()
        .map(|event| LiveEvent {
            call: calls.remove(&event.id),
            actions: actions.remove(&event.id).unwrap_or_default(),
            event,
        })
        .collect())
}

/// The call of each event as it was right after that event: each call's raw
/// log up to the event replayed through the rules ingestion applies (as
/// `calltrail reprocess` does), so a message never shows a later state.
async fn calls_as_of(
    db: &DatabaseConnection,
    events: &[webhook_event::Model],
) -> Result<HashMap<i64, call::Model>, ServiceError> {
    let wanted: HashSet<i64> = events.iter().map(|e| e.id).collect();
    let call_ids: HashSet<&str> = events.iter().filter_map(|e| e.call_id.as_deref()).collect();
    if call_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let until = events.iter().map(|e| e.seq).max().unwrap_or(0);
    let history = webhook_event::Entity::find()
        .filter(webhook_event::Column::CallId.is_in(call_ids.iter().copied()))
        .filter(webhook_event::Column::Seq.lte(until))
        .order_by_asc(webhook_event::Column::Seq)
        .all(db)
        .await?;
    let mut known = Projections::default();
    for id in call_ids {
        known.calls.insert(id.to_owned(), Projection::default());
    }
    let mut out = HashMap::new();
    for e in &history {
        let state = apply(&mut known, e);
        if wanted.contains(&e.id)
            && let Some(state) = state
        {
            out.insert(e.id, crate::ingest::call_row(state));
        }
    }
    Ok(out)
}

async fn actions_of(
    db: &DatabaseConnection,
    events: &[webhook_event::Model],
) -> Result<HashMap<i64, Vec<action::Model>>, ServiceError> {
    let rows = action::Entity::find()
        .filter(action::Column::EventId.is_in(events.iter().map(|e| e.id)))
        .order_by_asc(action::Column::Id)
        .all(db)
        .await?;
    let mut map: HashMap<i64, Vec<action::Model>> = HashMap::new();
    for a in rows {
        map.entry(a.event_id).or_default().push(a);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_db::scratch_database;

    /// The bus reader's cache should hold each call's state, not every raw
    /// body the call ever received.
    #[tokio::test]
    async fn the_readers_known_calls_do_not_keep_every_body() {
        let (db, path) = scratch_database("live-known").await;
        let pad = "x".repeat(100_000);
        let deliveries: Vec<_> = (0..20)
            .map(|i| {
                let body = format!(
                    r#"{{"id":"evt_{i}","type":"call.started","created_at":"2026-11-20T10:00:00Z","pad":"{pad}","data":{{"call":{{"id":"call_1","status":"in_progress"}}}}}}"#
                );
                crate::domain::parse(body.as_bytes()).unwrap()
            })
            .collect();
        let now = chrono::Utc::now();
        let inputs: Vec<_> = deliveries.iter().map(|d| (d, now, false)).collect();
        crate::ingest::commit_batch(&db, &inputs).await.unwrap();

        let mut known = Projections::default();
        let page = after_all(&db, 0, 256, &mut known).await.unwrap();
        assert_eq!(page.len(), 20);
        let projection = std::mem::take(known.calls.get_mut("call_1").unwrap());
        let kept: usize = projection
            .into_changes()
            .events
            .iter()
            .map(|e| e.body.len())
            .sum();
        let _ = std::fs::remove_file(&path);
        assert!(
            kept < 100_000,
            "the reader keeps {kept} bytes of raw bodies for one call"
        );
    }

    /// `calltrail reprocess` of one call with many actions: its action rows
    /// become one INSERT with 10 parameters per row (SQLite allows 32766).
    #[tokio::test]
    async fn reprocess_rebuilds_a_call_with_3300_actions() {
        let (db, path) = scratch_database("live-params").await;
        let deliveries: Vec<_> = (0..3300)
            .map(|i| {
                let body = format!(
                    r#"{{"event":{{"type":"action","data":{{"action":"send_whatsapp","call":{{"id":"call_1"}},"reason":"r","payload":{{"n":{i}}}}}}}}}"#
                );
                crate::domain::parse(body.as_bytes()).unwrap()
            })
            .collect();
        let now = chrono::Utc::now();
        for chunk in deliveries.chunks(128) {
            let inputs: Vec<_> = chunk.iter().map(|d| (d, now, false)).collect();
            crate::ingest::commit_batch(&db, &inputs).await.unwrap();
        }
        let result = crate::ingest::reprocess(&db, Some("call_1")).await;
        let _ = std::fs::remove_file(&path);
        result.unwrap();
    }
}
