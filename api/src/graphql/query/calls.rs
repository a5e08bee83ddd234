//! `call(id)` and `calls(…)`.

use async_graphql::{Context, ErrorExtensions, ID, Object, Result};

use crate::graphql::connection::CallConnection;
use crate::graphql::inputs::{CallFilter, CallOrder};
use crate::graphql::types::Call;
use crate::graphql::{db, page_cost, stale_cutoff};
use crate::service::{Window, calls};

#[derive(Default)]
pub struct CallsQuery;

#[Object]
impl CallsQuery {
    /// One call by the platform's call id; null when calltrail has no such call.
    async fn call(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The platform's call id.")] id: ID,
    ) -> Result<Option<Call>> {
        let found = calls::find(db(ctx)?, &id).await.map_err(|e| e.extend())?;
        let cutoff = stale_cutoff(ctx)?;
        found.map(|c| Call::new(c, cutoff)).transpose()
    }

    /// Calls, newest first unless `orderBy` says otherwise, a page at a time.
    #[graphql(complexity = "page_cost(first, last, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn calls(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which calls; all when omitted.")] filter: Option<CallFilter>,
        #[graphql(desc = "The order; newest first (CREATED_AT DESC) when omitted.")]
        order_by: Option<CallOrder>,
        #[graphql(
            desc = "Page forward: this many calls (20 when neither `first` nor `last` is given; at most 100, larger values are clamped)."
        )]
        first: Option<i32>,
        #[graphql(desc = "Page forward: the calls after this cursor.")] after: Option<String>,
        #[graphql(
            desc = "Page backward: this many calls (at most 100, larger values are clamped)."
        )]
        last: Option<i32>,
        #[graphql(desc = "Page backward: the calls before this cursor.")] before: Option<String>,
    ) -> Result<CallConnection> {
        let window = Window::from_args(first, after, last, before).map_err(|e| e.extend())?;
        let filter = filter.unwrap_or_default().into_service(stale_cutoff(ctx)?);
        let order = order_by.map(Into::into).unwrap_or_default();
        let page = calls::page(db(ctx)?, &filter, order, &window)
            .await
            .map_err(|e| e.extend())?;
        CallConnection::new(page, filter)
    }
}
