//! `events(…)`: the raw log.

use async_graphql::{Context, ErrorExtensions, Object, Result};

use crate::graphql::connection::WebhookEventConnection;
use crate::graphql::inputs::EventFilter;
use crate::graphql::{db, page_cost};
use crate::service::{Window, events};

#[derive(Default)]
pub struct EventsQuery;

#[Object]
impl EventsQuery {
    /// Deliveries as received, oldest first (in commit order), a page at a time.
    #[graphql(complexity = "page_cost(first, None, child_complexity)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which deliveries; all when omitted.")] filter: Option<EventFilter>,
        #[graphql(
            desc = "This many deliveries (20 when omitted; at most 100, larger values are clamped)."
        )]
        first: Option<i32>,
        #[graphql(
            desc = "The deliveries after this cursor (an edge's or a `WebhookEvent.cursor`)."
        )]
        after: Option<String>,
    ) -> Result<WebhookEventConnection> {
        let window = Window::from_args(first, after, None, None).map_err(|e| e.extend())?;
        let filter: events::EventFilter = filter.unwrap_or_default().into();
        let page = events::page(db(ctx)?, &filter, &window)
            .await
            .map_err(|e| e.extend())?;
        WebhookEventConnection::new(page, filter)
    }
}
