//! `actions(…)`: the workers' inbox.

use async_graphql::{Context, ErrorExtensions, Object, Result};

use crate::graphql::connection::ActionConnection;
use crate::graphql::inputs::ActionFilter;
use crate::graphql::{db, page_cost};
use crate::service::{Window, actions};

#[derive(Default)]
pub struct ActionsQuery;

#[Object]
impl ActionsQuery {
    /// Actions, oldest first, a page at a time.
    #[graphql(complexity = "page_cost(first, None, child_complexity)")]
    async fn actions(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which actions; all when omitted.")] filter: Option<ActionFilter>,
        #[graphql(
            desc = "This many actions (20 when omitted; at most 100, larger values are clamped)."
        )]
        first: Option<i32>,
        #[graphql(desc = "The actions after this cursor.")] after: Option<String>,
    ) -> Result<ActionConnection> {
        let window = Window::from_args(first, after, None, None).map_err(|e| e.extend())?;
        let filter: actions::ActionFilter = filter.unwrap_or_default().into();
        let page = actions::page(db(ctx)?, &filter, &window)
            .await
            .map_err(|e| e.extend())?;
        ActionConnection::new(page, filter)
    }
}
