//! The GraphQL API (CONTRACT §3): a typed schema over the normalized
//! tables, read through the read pool only. Building a schema does no I/O:
//! [`schema_builder`] has no data (for the SDL), [`build_schema`] attaches
//! the read pool, the DataLoader and the stale window.

mod batch;
mod connection;
pub mod error;
mod fanout;
pub mod host;
pub mod http;
mod inputs;
pub mod limits;
mod loaders;
mod metrics;
mod mutation;
mod order;
mod query;
mod scalars;
mod subscription;
mod types;
pub mod ws;

use std::time::Duration;

use async_graphql::{
    BatchRequest, BatchResponse, Context, Result, SDLExportOptions, Schema, SchemaBuilder,
};
use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::DatabaseConnection;

use crate::config::Config;
use crate::db::Db;
use crate::metrics::Metrics;

pub use mutation::MutationRoot;
pub use query::QueryRoot;
pub use subscription::{CallEvent, SubscriptionRoot};

pub type AppSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// The schema's types and limits, without data.
pub fn schema_builder() -> SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot,
    )
    .extension(limits::Limits)
    .extension(order::QueryOrder)
}

/// The schema the server runs: reads on `db.read`, stale after
/// `config.stale_after`, operations counted in `metrics`.
pub fn build_schema(db: &Db, config: &Config, metrics: &Metrics) -> AppSchema {
    schema_builder()
        .extension(metrics::Measure(metrics.clone()))
        .data(ReadDb(db.read.clone()))
        .data(StaleAfter(config.stale_after))
        .finish()
}

/// Execute a request (or a batch) as the server does: one "now" for the
/// request, and a DataLoader of its own whose batches [`batch::run`] cuts.
pub async fn execute(
    schema: &AppSchema,
    db: &DatabaseConnection,
    request: impl Into<BatchRequest>,
) -> BatchResponse {
    let (loader, batches) = loaders::for_request(db.clone());
    let request = request
        .into()
        .data(RequestTime(Utc::now().trunc_subsecs(6)))
        .data(loader);
    batch::run(schema.execute_batch(request), batches).await
}

/// The SDL, as `calltrail schema` prints it and `schema.graphql` holds it.
pub fn sdl() -> String {
    let options = SDLExportOptions::new().sorted_fields().sorted_arguments();
    let sdl = schema_builder().finish().sdl_with_options(options);
    format!("{}\n", sdl.trim_end())
}

/// The read pool, as schema data.
struct ReadDb(DatabaseConnection);

/// `CALLTRAIL_STALE_AFTER`, as schema data.
struct StaleAfter(Duration);

/// When the request arrived: one "now" for every stale check and every
/// timestamp a request writes.
#[derive(Clone, Copy, Debug)]
pub struct RequestTime(pub DateTime<Utc>);

fn db<'a>(ctx: &Context<'a>) -> Result<&'a DatabaseConnection> {
    Ok(&ctx.data::<ReadDb>()?.0)
}

fn now(ctx: &Context<'_>) -> DateTime<Utc> {
    ctx.data_opt::<RequestTime>()
        .map_or_else(|| Utc::now().trunc_subsecs(6), |t| t.0)
}

/// Unfinished calls whose last delivery arrived before this instant are stale.
fn stale_cutoff(ctx: &Context<'_>) -> Result<DateTime<Utc>> {
    let window = ctx.data::<StaleAfter>()?.0;
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    Ok(now(ctx)
        .checked_sub_signed(window)
        .unwrap_or(DateTime::<Utc>::MIN_UTC))
}

/// Complexity of a connection field: its page size times what each item asks for.
fn page_cost(first: Option<i32>, last: Option<i32>, child_complexity: usize) -> usize {
    let size = first.or(last).map_or(crate::service::DEFAULT_PAGE, |n| {
        (n.max(0) as u64).min(crate::service::MAX_PAGE)
    });
    1 + size.max(1) as usize * child_complexity
}

/// Complexity of a list field with a `first` argument.
fn list_cost(first: Option<i32>, default: i32, max: i32, child_complexity: usize) -> usize {
    let size = first.unwrap_or(default).clamp(1, max);
    1 + size as usize * child_complexity
}

/// A list size from `first`: `default` when omitted, at most `max`, never negative.
fn list_size(first: Option<i32>, default: i32, max: i32) -> Result<u64> {
    match first {
        Some(n) if n < 0 => Err(error::bad_input(format!(
            "`first` must not be negative (got {n})"
        ))),
        n => Ok(n.unwrap_or(default).min(max) as u64),
    }
}
