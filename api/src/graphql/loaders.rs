//! DataLoader keys for every nested field: the resolvers of a page ask for
//! one key each, the loader runs one statement per kind of key for all of
//! them. A page of calls with all nested fields costs a fixed number of
//! statements, whatever its size. Each request has its own loader, whose
//! batches [`super::batch::run`] starts when the request is idle.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::{Context, ErrorExtensions, Result};
use entity::{action, analysis, attempt, call, webhook_event};
use sea_orm::DatabaseConnection;

use super::batch::Batches;
use crate::service::{ServiceError, actions, calls, events};

/// Loads for one request; one `Loader` impl per key type.
pub struct Loaders {
    db: DatabaseConnection,
}

/// A request's loader (request data) and the queue [`super::batch::run`] drains.
pub fn for_request(db: DatabaseConnection) -> (Arc<DataLoader<Loaders>>, Batches) {
    let batches = Batches::default();
    let loader = DataLoader::new(Loaders { db }, batches.spawner()).delay(Duration::ZERO);
    (Arc::new(loader), batches)
}

/// A call by id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CallById(pub String);
/// The attempts of a call.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AttemptsOf(pub String);
/// The analyses of a call.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AnalysesOf(pub String);
/// The actions of a call.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ActionsOf(pub String);
/// The first `limit` deliveries of a call.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventsOf {
    pub call_id: String,
    pub limit: u64,
}
/// The deliveries of one attempt.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventsOfAttempt {
    pub call_id: String,
    pub number: i32,
    /// At most this many, from the oldest.
    pub limit: u64,
}

/// Group rows by the key they belong to; every asked-for key gets a list,
/// empty when no row belongs to it.
fn group<K: Clone + Eq + std::hash::Hash, R>(
    keys: &[K],
    rows: Vec<R>,
    key_of: impl Fn(&R) -> K,
) -> HashMap<K, Vec<R>> {
    let mut map: HashMap<K, Vec<R>> = keys.iter().map(|k| (k.clone(), Vec::new())).collect();
    for row in rows {
        if let Some(list) = map.get_mut(&key_of(&row)) {
            list.push(row);
        }
    }
    map
}

fn call_ids<'a>(ids: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut ids: Vec<String> = ids.cloned().collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

impl Loader<CallById> for Loaders {
    type Value = call::Model;
    type Error = ServiceError;

    async fn load(
        &self,
        keys: &[CallById],
    ) -> Result<HashMap<CallById, call::Model>, ServiceError> {
        let ids = call_ids(keys.iter().map(|k| &k.0));
        let rows = calls::by_ids(&self.db, &ids).await?;
        Ok(rows
            .into_iter()
            .map(|c| (CallById(c.id.clone()), c))
            .collect())
    }
}

impl Loader<AttemptsOf> for Loaders {
    type Value = Vec<attempt::Model>;
    type Error = ServiceError;

    async fn load(
        &self,
        keys: &[AttemptsOf],
    ) -> Result<HashMap<AttemptsOf, Self::Value>, ServiceError> {
        let rows = calls::attempts_of(&self.db, &call_ids(keys.iter().map(|k| &k.0))).await?;
        Ok(group(keys, rows, |a| AttemptsOf(a.call_id.clone())))
    }
}

impl Loader<AnalysesOf> for Loaders {
    type Value = Vec<analysis::Model>;
    type Error = ServiceError;

    async fn load(
        &self,
        keys: &[AnalysesOf],
    ) -> Result<HashMap<AnalysesOf, Self::Value>, ServiceError> {
        let rows = calls::analyses_of(&self.db, &call_ids(keys.iter().map(|k| &k.0))).await?;
        Ok(group(keys, rows, |a| AnalysesOf(a.call_id.clone())))
    }
}

impl Loader<ActionsOf> for Loaders {
    type Value = Vec<action::Model>;
    type Error = ServiceError;

    async fn load(
        &self,
        keys: &[ActionsOf],
    ) -> Result<HashMap<ActionsOf, Self::Value>, ServiceError> {
        let rows = actions::of_calls(&self.db, &call_ids(keys.iter().map(|k| &k.0))).await?;
        Ok(group(keys, rows, |a| {
            ActionsOf(a.call_id.clone().unwrap_or_default())
        }))
    }
}

impl Loader<EventsOf> for Loaders {
    type Value = Vec<webhook_event::Model>;
    type Error = ServiceError;

    /// One statement per distinct limit (one in practice: sibling fields
    /// of a page ask with the same `first`).
    async fn load(
        &self,
        keys: &[EventsOf],
    ) -> Result<HashMap<EventsOf, Self::Value>, ServiceError> {
        let mut limits: Vec<u64> = keys.iter().map(|k| k.limit).collect();
        limits.sort_unstable();
        limits.dedup();
        let mut map = HashMap::new();
        for limit in limits {
            let of_limit: Vec<EventsOf> =
                keys.iter().filter(|k| k.limit == limit).cloned().collect();
            let ids = call_ids(of_limit.iter().map(|k| &k.call_id));
            let rows = events::first_of_calls(&self.db, &ids, limit).await?;
            map.extend(group(&of_limit, rows, |e| EventsOf {
                call_id: e.call_id.clone().unwrap_or_default(),
                limit,
            }));
        }
        Ok(map)
    }
}

impl Loader<EventsOfAttempt> for Loaders {
    type Value = Vec<webhook_event::Model>;
    type Error = ServiceError;

    /// One statement per distinct limit, as for [`EventsOf`].
    async fn load(
        &self,
        keys: &[EventsOfAttempt],
    ) -> Result<HashMap<EventsOfAttempt, Self::Value>, ServiceError> {
        let mut limits: Vec<u64> = keys.iter().map(|k| k.limit).collect();
        limits.sort_unstable();
        limits.dedup();
        let mut map = HashMap::new();
        for limit in limits {
            let of_limit: Vec<EventsOfAttempt> =
                keys.iter().filter(|k| k.limit == limit).cloned().collect();
            let attempts: Vec<(String, i32)> = of_limit
                .iter()
                .map(|k| (k.call_id.clone(), k.number))
                .collect();
            let rows = events::of_attempts(&self.db, &attempts, limit).await?;
            map.extend(group(&of_limit, rows, |e| EventsOfAttempt {
                call_id: e.call_id.clone().unwrap_or_default(),
                number: e.attempt_number.unwrap_or_default(),
                limit,
            }));
        }
        Ok(map)
    }
}

fn loader<'a>(ctx: &Context<'a>) -> Result<&'a DataLoader<Loaders>> {
    Ok(ctx.data::<Arc<DataLoader<Loaders>>>()?.as_ref())
}

/// Load one key; a key without rows is an empty list.
async fn list<K, V>(ctx: &Context<'_>, key: K) -> Result<Vec<V>>
where
    K: Send + Sync + std::hash::Hash + Eq + Clone + 'static,
    Loaders: Loader<K, Value = Vec<V>, Error = ServiceError>,
{
    Ok(loader(ctx)?
        .load_one(key)
        .await
        .map_err(|e| e.extend())?
        .unwrap_or_default())
}

pub async fn call(ctx: &Context<'_>, id: &str) -> Result<Option<call::Model>> {
    loader(ctx)?
        .load_one(CallById(id.to_owned()))
        .await
        .map_err(|e| e.extend())
}

pub async fn attempts_of(ctx: &Context<'_>, call_id: &str) -> Result<Vec<attempt::Model>> {
    list(ctx, AttemptsOf(call_id.to_owned())).await
}

pub async fn analyses_of(ctx: &Context<'_>, call_id: &str) -> Result<Vec<analysis::Model>> {
    list(ctx, AnalysesOf(call_id.to_owned())).await
}

pub async fn actions_of(ctx: &Context<'_>, call_id: &str) -> Result<Vec<action::Model>> {
    list(ctx, ActionsOf(call_id.to_owned())).await
}

pub async fn events_of(
    ctx: &Context<'_>,
    call_id: &str,
    limit: u64,
) -> Result<Vec<webhook_event::Model>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let key = EventsOf {
        call_id: call_id.to_owned(),
        limit,
    };
    list(ctx, key).await
}

pub async fn events_of_attempt(
    ctx: &Context<'_>,
    call_id: &str,
    number: i32,
    limit: u64,
) -> Result<Vec<webhook_event::Model>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let key = EventsOfAttempt {
        call_id: call_id.to_owned(),
        number,
        limit,
    };
    list(ctx, key).await
}
