//! Relay connections: `edges { cursor node }`, `nodes`, `pageInfo` and
//! `totalCount` (counted only when asked for: one COUNT statement).

use async_graphql::{ComplexObject, Context, ErrorExtensions, Result, SimpleObject};

use super::types::{Action, Call, WebhookEvent};
use crate::service::{Page, actions, calls, events};

/// Where a page sits in the whole list.
#[derive(SimpleObject, Clone, Debug)]
pub struct PageInfo {
    /// More items follow this page (when paging forward: ask again with `after: endCursor`).
    pub has_next_page: bool,
    /// Items precede this page (when paging backward: ask again with `before: startCursor`).
    pub has_previous_page: bool,
    /// Cursor of the page's first item; null on an empty page.
    pub start_cursor: Option<String>,
    /// Cursor of the page's last item; null on an empty page.
    pub end_cursor: Option<String>,
}

impl PageInfo {
    fn of<T>(page: &Page<T>) -> Self {
        Self {
            has_next_page: page.has_next_page,
            has_previous_page: page.has_previous_page,
            start_cursor: page.items.first().map(|(c, _)| c.clone()),
            end_cursor: page.items.last().map(|(c, _)| c.clone()),
        }
    }
}

/// Turns a service page into edges, converting each row.
fn edges<T, N, E>(
    page: &mut Page<T>,
    node: impl Fn(T) -> Result<N>,
    edge: impl Fn(String, N) -> E,
) -> Result<Vec<E>> {
    std::mem::take(&mut page.items)
        .into_iter()
        .map(|(cursor, row)| Ok(edge(cursor, node(row)?)))
        .collect()
}

/// A call and its position in the list.
#[derive(SimpleObject, Clone, Debug)]
pub struct CallEdge {
    /// Opaque position of this call: pass it as `after` or `before`.
    pub cursor: String,
    /// The call.
    pub node: Call,
}

/// A page of calls.
#[derive(SimpleObject, Debug)]
#[graphql(complex)]
pub struct CallConnection {
    /// The page's calls, each with its cursor.
    pub edges: Vec<CallEdge>,
    /// Where this page sits in the whole list.
    pub page_info: PageInfo,
    #[graphql(skip)]
    pub filter: calls::CallFilter,
}

impl CallConnection {
    pub fn new(mut page: Page<entity::call::Model>, filter: calls::CallFilter) -> Result<Self> {
        let cutoff = filter.stale_cutoff;
        let page_info = PageInfo::of(&page);
        let edges = edges(
            &mut page,
            |c| Call::new(c, cutoff),
            |cursor, node| CallEdge { cursor, node },
        )?;
        Ok(Self {
            edges,
            page_info,
            filter,
        })
    }
}

#[ComplexObject]
impl CallConnection {
    /// The page's calls, without cursors.
    async fn nodes(&self) -> Vec<&Call> {
        self.edges.iter().map(|e| &e.node).collect()
    }

    /// How many calls the filter selects, over all pages.
    async fn total_count(&self, ctx: &Context<'_>) -> Result<i64> {
        calls::count(super::db(ctx)?, &self.filter)
            .await
            .map_err(|e| e.extend())
    }
}

/// An action and its position in the list.
#[derive(SimpleObject, Clone, Debug)]
pub struct ActionEdge {
    /// Opaque position of this action: pass it as `after`.
    pub cursor: String,
    /// The action.
    pub node: Action,
}

/// A page of actions, oldest first.
#[derive(SimpleObject, Debug)]
#[graphql(complex)]
pub struct ActionConnection {
    /// The page's actions, each with its cursor.
    pub edges: Vec<ActionEdge>,
    /// Where this page sits in the whole list.
    pub page_info: PageInfo,
    #[graphql(skip)]
    pub filter: actions::ActionFilter,
}

impl ActionConnection {
    pub fn new(
        mut page: Page<entity::action::Model>,
        filter: actions::ActionFilter,
    ) -> Result<Self> {
        let page_info = PageInfo::of(&page);
        let edges = edges(&mut page, Action::try_from, |cursor, node| ActionEdge {
            cursor,
            node,
        })?;
        Ok(Self {
            edges,
            page_info,
            filter,
        })
    }
}

#[ComplexObject]
impl ActionConnection {
    /// The page's actions, without cursors.
    async fn nodes(&self) -> Vec<&Action> {
        self.edges.iter().map(|e| &e.node).collect()
    }

    /// How many actions the filter selects, over all pages.
    async fn total_count(&self, ctx: &Context<'_>) -> Result<i64> {
        actions::count(super::db(ctx)?, &self.filter)
            .await
            .map_err(|e| e.extend())
    }
}

/// A delivery and its position in the log.
#[derive(SimpleObject, Clone, Debug)]
pub struct WebhookEventEdge {
    /// Opaque position of this delivery (its `cursor`): pass it as `after`.
    pub cursor: String,
    /// The delivery.
    pub node: WebhookEvent,
}

/// A page of deliveries, oldest first.
#[derive(SimpleObject, Debug)]
#[graphql(complex)]
pub struct WebhookEventConnection {
    /// The page's deliveries, each with its cursor.
    pub edges: Vec<WebhookEventEdge>,
    /// Where this page sits in the whole log.
    pub page_info: PageInfo,
    #[graphql(skip)]
    pub filter: events::EventFilter,
}

impl WebhookEventConnection {
    pub fn new(
        mut page: Page<entity::webhook_event::Model>,
        filter: events::EventFilter,
    ) -> Result<Self> {
        let page_info = PageInfo::of(&page);
        let edges = edges(
            &mut page,
            |e| Ok(WebhookEvent::from(e)),
            |cursor, node| WebhookEventEdge { cursor, node },
        )?;
        Ok(Self {
            edges,
            page_info,
            filter,
        })
    }
}

#[ComplexObject]
impl WebhookEventConnection {
    /// The page's deliveries, without cursors.
    async fn nodes(&self) -> Vec<&WebhookEvent> {
        self.edges.iter().map(|e| &e.node).collect()
    }

    /// How many deliveries the filter selects, over all pages.
    async fn total_count(&self, ctx: &Context<'_>) -> Result<i64> {
        events::count(super::db(ctx)?, &self.filter)
            .await
            .map_err(|e| e.extend())
    }
}
