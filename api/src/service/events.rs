//! The raw log as clients read it: pages of deliveries in commit order, and
//! the deliveries of calls and of attempts, oldest first.

use entity::webhook_event;
use sea_orm::sea_query::{Alias, Asterisk, Expr, ExprTrait, Func, Query, WindowStatement};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, Order, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait,
};

use super::cursor::IdCursor;
use super::{Page, ServiceError, Window};

#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub call_id: Option<String>,
    /// `event.type` as sent (`call.completed`, or a type calltrail does not know).
    pub types: Option<Vec<String>>,
    pub recognized: Option<bool>,
}

impl EventFilter {
    pub(crate) fn condition(&self) -> Condition {
        use webhook_event::Column as E;
        let mut all = Condition::all();
        if let Some(call_id) = &self.call_id {
            all = all.add(E::CallId.eq(call_id.as_str()));
        }
        if let Some(types) = &self.types {
            all = all.add(E::EventType.is_in(types.iter().cloned()));
        }
        if let Some(recognized) = self.recognized {
            all = all.add(E::Recognized.eq(recognized));
        }
        all
    }
}

const CURSOR: &str = "event";

/// `WebhookEvent.cursor`: the delivery's position in commit order (`seq`).
pub fn cursor_of(e: &webhook_event::Model) -> String {
    cursor_at(e.seq)
}

/// The cursor of position `seq` in commit order.
pub fn cursor_at(seq: i64) -> String {
    IdCursor::encode(CURSOR, seq)
}

/// The position in commit order a `WebhookEvent.cursor` names.
pub fn position(cursor: &str) -> Result<i64, ServiceError> {
    IdCursor::decode(cursor, CURSOR)
}

/// A page of deliveries, oldest first.
pub async fn page(
    db: &DatabaseConnection,
    filter: &EventFilter,
    window: &Window,
) -> Result<Page<webhook_event::Model>, ServiceError> {
    let mut select = webhook_event::Entity::find().filter(filter.condition());
    if let Some(cursor) = window.cursor() {
        select = select.filter(webhook_event::Column::Seq.gt(position(cursor)?));
    }
    let rows = select
        .order_by_asc(webhook_event::Column::Seq)
        .limit(window.size() + 1)
        .all(db)
        .await?;
    Ok(Page::from_scan(rows, window, cursor_of))
}

pub async fn count(db: &DatabaseConnection, filter: &EventFilter) -> Result<i64, ServiceError> {
    let n = webhook_event::Entity::find()
        .filter(filter.condition())
        .count(db)
        .await?;
    Ok(n as i64)
}

/// The first `limit` deliveries of each of these calls, oldest first, in
/// one statement (a window function numbers each call's deliveries).
pub async fn first_of_calls(
    db: &DatabaseConnection,
    call_ids: &[String],
    limit: u64,
) -> Result<Vec<webhook_event::Model>, ServiceError> {
    use webhook_event::Column as E;
    let of_calls = Condition::all().add(E::CallId.is_in(call_ids.iter().cloned()));
    first_per_group(db, of_calls, &[E::CallId], limit).await
}

/// The first `limit` deliveries applied to each of these attempts (by
/// commit order), oldest first: numbered per attempt in SQL, so a chatty
/// attempt costs `limit` rows, not all of its deliveries.
pub async fn of_attempts(
    db: &DatabaseConnection,
    attempts: &[(String, i32)],
    limit: u64,
) -> Result<Vec<webhook_event::Model>, ServiceError> {
    use webhook_event::Column as E;
    let any = attempts.iter().fold(Condition::any(), |any, (call_id, n)| {
        any.add(E::CallId.eq(call_id.as_str()).and(E::AttemptNumber.eq(*n)))
    });
    first_per_group(db, any, &[E::CallId, E::AttemptNumber], limit).await
}

/// The first `limit` deliveries (by `seq`) matching `condition` in each
/// group of equal `group` columns, oldest first: one statement, a window
/// function numbering each group's rows.
async fn first_per_group(
    db: &DatabaseConnection,
    condition: Condition,
    group: &[webhook_event::Column],
    limit: u64,
) -> Result<Vec<webhook_event::Model>, ServiceError> {
    use sea_orm::sea_query::OverStatement;
    let mut window = WindowStatement::new();
    window
        .partition_by_columns(group.iter().copied())
        .order_by(webhook_event::Column::Seq, Order::Asc);
    let numbered = webhook_event::Entity::find()
        .filter(condition)
        .into_query()
        .expr_window_as(Func::cust("ROW_NUMBER"), window, Alias::new("n"))
        .to_owned();
    let query = Query::select()
        .column(Asterisk)
        .from_subquery(numbered, Alias::new("numbered"))
        .and_where(Expr::col(Alias::new("n")).lte(limit))
        .order_by(Alias::new("seq"), Order::Asc)
        .to_owned();
    let statement = db.get_database_backend().build(&query);
    Ok(webhook_event::Entity::find()
        .from_raw_sql(statement)
        .all(db)
        .await?)
}
