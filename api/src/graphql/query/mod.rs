//! The Query root, merged from one object per area.

mod actions;
mod calls;
mod events;
mod stats;

use async_graphql::MergedObject;

/// Read calls, actions, deliveries and statistics.
#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct QueryRoot(
    calls::CallsQuery,
    actions::ActionsQuery,
    events::EventsQuery,
    stats::StatsQuery,
);
