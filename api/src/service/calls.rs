//! Calls and their parts (attempts, analyses): the filter every call query
//! shares, keyset pages in three orders, counts, and batch loads by call id.

use chrono::{DateTime, Utc};
use entity::{analysis, attempt, call};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, Condition, DatabaseBackend, DatabaseConnection, EntityTrait, Order,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cursor;
use super::{Page, ServiceError, Window};
use crate::domain::CallStatus;

/// Which calls a query is about. Every condition set must hold.
#[derive(Clone, Debug)]
pub struct CallFilter {
    pub status: Option<Vec<CallStatus>>,
    pub success: Option<bool>,
    pub lifecycle_ended: Option<bool>,
    pub stale: Option<bool>,
    /// `created_at >= created_after`.
    pub created_after: Option<DateTime<Utc>>,
    /// `created_at < created_before`.
    pub created_before: Option<DateTime<Utc>>,
    /// Top-level metadata keys and the JSON value each must equal.
    pub metadata: Vec<(String, Value)>,
    /// An unfinished call whose last delivery arrived before this is stale.
    pub stale_cutoff: DateTime<Utc>,
}

impl CallFilter {
    /// No condition: every call.
    pub fn all(stale_cutoff: DateTime<Utc>) -> Self {
        Self {
            status: None,
            success: None,
            lifecycle_ended: None,
            stale: None,
            created_after: None,
            created_before: None,
            metadata: Vec::new(),
            stale_cutoff,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.success.is_none()
            && self.lifecycle_ended.is_none()
            && self.stale.is_none()
            && self.created_after.is_none()
            && self.created_before.is_none()
            && self.metadata.is_empty()
    }

    /// The filter as a WHERE condition on `call`. Written so that SQLite
    /// and PostgreSQL select the same rows.
    pub fn condition(&self, backend: DatabaseBackend) -> Result<Condition, ServiceError> {
        use call::Column as C;
        let mut all = Condition::all();
        if let Some(statuses) = &self.status {
            all = all.add(C::Status.is_in(statuses.iter().map(|s| s.as_str())));
        }
        if let Some(success) = self.success {
            all = all.add(C::Success.eq(success));
        }
        if let Some(ended) = self.lifecycle_ended {
            all = all.add(C::LifecycleEnded.eq(ended));
        }
        if let Some(stale) = self.stale {
            // `updated_at` is `last_event_at`: both are set by every delivery
            // applied to the call and by nothing else; `updated_at` is the
            // indexed one (migration 000010).
            let is_stale = Condition::all()
                .add(C::LifecycleEnded.eq(false))
                .add(C::UpdatedAt.lt(self.stale_cutoff));
            all = all.add(if stale { is_stale } else { is_stale.not() });
        }
        if let Some(after) = self.created_after {
            all = all.add(C::CreatedAt.gte(after));
        }
        if let Some(before) = self.created_before {
            all = all.add(C::CreatedAt.lt(before));
        }
        for (key, value) in &self.metadata {
            all = all.add(metadata_equals(backend, key, value)?);
        }
        Ok(all)
    }
}

/// `metadata[key] = value`, with JSON equality on both backends: strings,
/// booleans and numbers compare by type and value (`1` matches `1.0` but
/// not `"1"` or `true`), arrays and objects by their canonical JSON.
fn metadata_equals(
    backend: DatabaseBackend,
    key: &str,
    value: &Value,
) -> Result<Expr, ServiceError> {
    if key.contains('"') {
        return Err(ServiceError::bad_input(
            "a metadata key to match cannot contain a double quote",
        ));
    }
    if value.is_null() {
        return Err(ServiceError::bad_input(
            "a metadata match needs a value (null matches nothing)",
        ));
    }
    Ok(match backend {
        // `@>` lets the GIN index find candidates; `->` makes it an exact
        // equality (containment alone would let [1, 2] match [1]).
        DatabaseBackend::Postgres => Expr::cust_with_values(
            r#"("call"."metadata" @> $1 AND ("call"."metadata" -> $2) = $3)"#,
            [
                sea_orm::Value::from(serde_json::json!({ key: value })),
                sea_orm::Value::from(key.to_owned()),
                sea_orm::Value::from(value.clone()),
            ],
        ),
        _ => {
            let path = format!("$.\"{key}\"");
            match value {
                // `->>` yields an SQL number, compared numerically; `->`
                // tells JSON true/false (which `->>` turns into 1/0) apart.
                Value::Number(n) => Expr::cust_with_values(
                    r#"(("call"."metadata" ->> ?) = ? AND ("call"."metadata" -> ?) NOT IN ('true', 'false'))"#,
                    [
                        sea_orm::Value::from(path.clone()),
                        match n.as_i64() {
                            Some(i) => sea_orm::Value::from(i),
                            None => sea_orm::Value::from(n.as_f64().unwrap_or(f64::NAN)),
                        },
                        sea_orm::Value::from(path),
                    ],
                ),
                // `->` yields the member's JSON text, as serde_json wrote it.
                other => Expr::cust_with_values(
                    r#"(("call"."metadata" -> ?) = ?)"#,
                    [
                        sea_orm::Value::from(path),
                        sea_orm::Value::from(other.to_string()),
                    ],
                ),
            }
        }
    })
}

/// The orders of `calls(orderBy:)`. Ties are broken by id, in the same direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderField {
    CreatedAt,
    UpdatedAt,
    /// Calls without a duration come after all others, in either direction.
    Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallOrder {
    pub field: OrderField,
    pub descending: bool,
}

impl Default for CallOrder {
    /// Newest first: what a call list shows.
    fn default() -> Self {
        Self {
            field: OrderField::CreatedAt,
            descending: true,
        }
    }
}

impl OrderField {
    fn column(self) -> call::Column {
        match self {
            Self::CreatedAt => call::Column::CreatedAt,
            Self::UpdatedAt => call::Column::UpdatedAt,
            Self::Duration => call::Column::DurationSeconds,
        }
    }

    fn key(self, c: &call::Model) -> Option<Key> {
        match self {
            Self::CreatedAt => Some(Key::Time(c.created_at)),
            Self::UpdatedAt => Some(Key::Time(c.updated_at)),
            Self::Duration => c.duration_seconds.map(Key::Number),
        }
    }
}

/// An order key's value, as a cursor keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Key {
    Time(DateTime<Utc>),
    Number(f64),
}

impl From<Key> for sea_orm::Value {
    fn from(key: Key) -> Self {
        match key {
            Key::Time(t) => t.into(),
            Key::Number(n) => n.into(),
        }
    }
}

/// Where a call sits in one order: its key (null: no duration) and id.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallCursor {
    order: OrderField,
    key: Option<Key>,
    id: String,
}

fn cursor_of(field: OrderField, c: &call::Model) -> String {
    cursor::encode(&CallCursor {
        order: field,
        key: field.key(c),
        id: c.id.clone(),
    })
}

/// A run of rows scanned in one direction: those with a key, or (duration
/// only) those without one, which sort by id alone.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Segment {
    nulls: bool,
    descending: bool,
}

/// The segments a scan visits, in order. Null durations come last in the
/// asked-for order, so a backward scan visits them first.
fn segments(order: CallOrder, backward: bool) -> Vec<Segment> {
    let descending = order.descending ^ backward;
    let mut all = vec![Segment {
        nulls: false,
        descending,
    }];
    if order.field == OrderField::Duration {
        all.push(Segment {
            nulls: true,
            descending,
        });
    }
    if backward {
        all.reverse();
    }
    all
}

/// One page of calls: at most two statements (one per segment), each an
/// index range scan on `(order key, id)`.
pub async fn page(
    db: &DatabaseConnection,
    filter: &CallFilter,
    order: CallOrder,
    window: &Window,
) -> Result<Page<call::Model>, ServiceError> {
    let condition = filter.condition(db.get_database_backend())?;
    let position: Option<CallCursor> = window
        .cursor()
        .map(|c| cursor::decode(c, "calls"))
        .transpose()?;
    if let Some(p) = &position
        && p.order != order.field
    {
        return Err(ServiceError::bad_input(format!(
            "this cursor belongs to calls ordered by {:?}, not by {:?}",
            p.order, order.field
        )));
    }
    // A key of the order's kind: a time for the time orders, a number or
    // null (no duration) for DURATION; anything else was not made here.
    if let Some(p) = &position {
        let fits = matches!(
            (p.order, p.key),
            (
                OrderField::CreatedAt | OrderField::UpdatedAt,
                Some(Key::Time(_))
            ) | (OrderField::Duration, Some(Key::Number(_)) | None)
        );
        if !fits {
            return Err(ServiceError::bad_input(format!(
                "invalid cursor {:?}: use a cursor from a calls page with the same order",
                window.cursor().unwrap_or_default()
            )));
        }
    }
    let want = window.size() + 1;
    let mut rows = Vec::new();
    let mut reached = position.is_none();
    for segment in segments(order, window.is_backward()) {
        let bound = match &position {
            Some(p) if p.key.is_none() == segment.nulls => {
                reached = true;
                Some(p)
            }
            _ if reached => None,
            _ => continue,
        };
        let fetched = scan(
            db,
            condition.clone(),
            order.field,
            segment,
            bound,
            want - rows.len() as u64,
        )
        .await?;
        rows.extend(fetched);
        if rows.len() as u64 >= want {
            break;
        }
    }
    Ok(Page::from_scan(rows, window, |c| cursor_of(order.field, c)))
}

async fn scan(
    db: &DatabaseConnection,
    condition: Condition,
    field: OrderField,
    segment: Segment,
    after: Option<&CallCursor>,
    limit: u64,
) -> Result<Vec<call::Model>, ServiceError> {
    use call::Column as C;
    let key = field.column();
    let dir = if segment.descending {
        Order::Desc
    } else {
        Order::Asc
    };
    let beyond = |left: Expr, right: Expr| {
        if segment.descending {
            left.lt(right)
        } else {
            left.gt(right)
        }
    };
    let mut select = call::Entity::find().filter(condition);
    if field == OrderField::Duration {
        select = select.filter(if segment.nulls {
            key.is_null()
        } else {
            key.is_not_null()
        });
    }
    if let Some(p) = after {
        let id = Expr::val(p.id.clone());
        select = select.filter(match p.key {
            Some(k) => beyond(
                Expr::tuple([key.into_expr(), C::Id.into_expr()]),
                Expr::tuple([Expr::val(k), id]),
            ),
            None => beyond(C::Id.into_expr(), id),
        });
    }
    if !segment.nulls {
        select = select.order_by(key, dir.clone());
    }
    Ok(select.order_by(C::Id, dir).limit(limit).all(db).await?)
}

/// How many calls match (a connection's `totalCount`).
pub async fn count(db: &DatabaseConnection, filter: &CallFilter) -> Result<i64, ServiceError> {
    let condition = filter.condition(db.get_database_backend())?;
    let n = call::Entity::find().filter(condition).count(db).await?;
    Ok(n as i64)
}

pub async fn find(db: &DatabaseConnection, id: &str) -> Result<Option<call::Model>, ServiceError> {
    Ok(call::Entity::find_by_id(id).one(db).await?)
}

/// Calls by id, in one statement.
pub async fn by_ids(
    db: &DatabaseConnection,
    ids: &[String],
) -> Result<Vec<call::Model>, ServiceError> {
    Ok(call::Entity::find()
        .filter(call::Column::Id.is_in(ids.iter().cloned()))
        .all(db)
        .await?)
}

/// The attempts of these calls, by call and number.
pub async fn attempts_of(
    db: &DatabaseConnection,
    call_ids: &[String],
) -> Result<Vec<attempt::Model>, ServiceError> {
    Ok(attempt::Entity::find()
        .filter(attempt::Column::CallId.is_in(call_ids.iter().cloned()))
        .order_by_asc(attempt::Column::CallId)
        .order_by_asc(attempt::Column::Number)
        .all(db)
        .await?)
}

/// The analyses of these calls, by call and attempt number.
pub async fn analyses_of(
    db: &DatabaseConnection,
    call_ids: &[String],
) -> Result<Vec<analysis::Model>, ServiceError> {
    Ok(analysis::Entity::find()
        .filter(analysis::Column::CallId.is_in(call_ids.iter().cloned()))
        .order_by_asc(analysis::Column::CallId)
        .order_by_asc(analysis::Column::AttemptNumber)
        .all(db)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(field: OrderField, descending: bool) -> CallOrder {
        CallOrder { field, descending }
    }

    #[test]
    fn null_durations_come_last_both_ways_and_first_when_walking_back() {
        let asc = order(OrderField::Duration, false);
        let desc = order(OrderField::Duration, true);
        let s = |nulls, descending| Segment { nulls, descending };
        assert_eq!(segments(asc, false), [s(false, false), s(true, false)]);
        assert_eq!(segments(asc, true), [s(true, true), s(false, true)]);
        assert_eq!(segments(desc, false), [s(false, true), s(true, true)]);
        assert_eq!(segments(desc, true), [s(true, false), s(false, false)]);
        assert_eq!(
            segments(order(OrderField::CreatedAt, true), true),
            [s(false, false)]
        );
    }

    #[test]
    fn call_cursors_keep_key_and_id_exactly() {
        let at = DateTime::parse_from_rfc3339("2026-11-20T10:00:04.123456Z")
            .unwrap()
            .to_utc();
        for key in [Some(Key::Time(at)), Some(Key::Number(157.25)), None] {
            let c = CallCursor {
                order: OrderField::Duration,
                key,
                id: "c_1".into(),
            };
            let back: CallCursor = cursor::decode(&cursor::encode(&c), "calls").unwrap();
            assert_eq!(back, c);
        }
    }
}
