//! Actions: the workers' inbox (oldest first), actions by call, and the one
//! write GraphQL makes: acknowledging an action.

use chrono::{DateTime, Utc};
use entity::action;
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use super::cursor::IdCursor;
use super::{Page, ServiceError, Window};

/// Where an action stands. Stored as these names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionStatus {
    Pending,
    Handled,
    Failed,
}

impl ActionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Handled => "HANDLED",
            Self::Failed => "FAILED",
        }
    }

    pub fn from_db(s: &str) -> Option<Self> {
        [Self::Pending, Self::Handled, Self::Failed]
            .into_iter()
            .find(|status| status.as_str() == s)
    }
}

#[derive(Clone, Debug, Default)]
pub struct ActionFilter {
    pub kind: Option<Vec<String>>,
    pub status: Option<Vec<ActionStatus>>,
    pub call_id: Option<String>,
}

impl ActionFilter {
    fn condition(&self) -> Condition {
        use action::Column as A;
        let mut all = Condition::all();
        if let Some(kinds) = &self.kind {
            all = all.add(A::Kind.is_in(kinds.iter().cloned()));
        }
        if let Some(statuses) = &self.status {
            all = all.add(A::Status.is_in(statuses.iter().map(|s| s.as_str())));
        }
        if let Some(call_id) = &self.call_id {
            all = all.add(A::CallId.eq(call_id.as_str()));
        }
        all
    }
}

const CURSOR: &str = "action";

pub fn cursor_of(a: &action::Model) -> String {
    IdCursor::encode(CURSOR, a.id)
}

/// The cursor of the action with this id.
pub fn cursor_of_id(id: i64) -> String {
    IdCursor::encode(CURSOR, id)
}

/// The action id an action cursor names.
pub fn id_of(cursor: &str) -> Result<i64, ServiceError> {
    IdCursor::decode(cursor, CURSOR)
}

/// Where in the raw log (`seq`) the actions after action `after` start:
/// the position of its delivery (of the newest action before it, should it
/// have been deleted); 0 when there is none. The actions after it are
/// those of the deliveries after that position. A
/// cursor past the newest action is refused: it comes from another
/// database (or one emptied since), and the actions with smaller ids to
/// come would be skipped as already seen.
pub async fn position_after(db: &DatabaseConnection, after: i64) -> Result<i64, ServiceError> {
    use entity::webhook_event;
    use sea_orm::JoinType;
    let newest: Option<i64> = action::Entity::find()
        .select_only()
        .column_as(action::Column::Id.max(), "max")
        .into_tuple::<Option<i64>>()
        .one(db)
        .await?
        .flatten();
    if newest.is_none_or(|newest| after > newest) {
        return Err(ServiceError::bad_input(format!(
            "invalid cursor: no action {after} is stored here; subscribe without `after` and read what is pending with `actions(filter: {{status: [PENDING]}})`"
        )));
    }
    let seq: Option<i64> = action::Entity::find()
        .select_only()
        .column(webhook_event::Column::Seq)
        .join(
            JoinType::InnerJoin,
            action::Entity::belongs_to(webhook_event::Entity)
                .from(action::Column::EventId)
                .to(webhook_event::Column::Id)
                .into(),
        )
        .filter(action::Column::Id.lte(after))
        .order_by_desc(action::Column::Id)
        .into_tuple::<i64>()
        .one(db)
        .await?;
    Ok(seq.unwrap_or(0))
}

/// A page of actions, oldest first (the order a worker handles them in).
pub async fn page(
    db: &DatabaseConnection,
    filter: &ActionFilter,
    window: &Window,
) -> Result<Page<action::Model>, ServiceError> {
    let mut select = action::Entity::find().filter(filter.condition());
    if let Some(cursor) = window.cursor() {
        select = select.filter(action::Column::Id.gt(IdCursor::decode(cursor, CURSOR)?));
    }
    let rows = select
        .order_by_asc(action::Column::Id)
        .limit(window.size() + 1)
        .all(db)
        .await?;
    Ok(Page::from_scan(rows, window, cursor_of))
}

pub async fn count(db: &DatabaseConnection, filter: &ActionFilter) -> Result<i64, ServiceError> {
    let n = action::Entity::find()
        .filter(filter.condition())
        .count(db)
        .await?;
    Ok(n as i64)
}

/// The actions of these calls, oldest first.
pub async fn of_calls(
    db: &DatabaseConnection,
    call_ids: &[String],
) -> Result<Vec<action::Model>, ServiceError> {
    Ok(action::Entity::find()
        .filter(action::Column::CallId.is_in(call_ids.iter().cloned()))
        .order_by_asc(action::Column::Id)
        .all(db)
        .await?)
}

/// An action id as clients see it (`ID`): the row id in decimal.
pub fn parse_id(id: &str) -> Result<i64, ServiceError> {
    id.trim()
        .parse()
        .map_err(|_| ServiceError::bad_input(format!("{id:?} is not an action id")))
}

/// Set an action's status and note; `handled_at` becomes `now`, or null
/// when the action goes back to PENDING. One `UPDATE … RETURNING`; with
/// `expected`, only while the action is still in that status (a worker
/// claiming a PENDING action: of two at once, one wins), else
/// [`ServiceError::Conflict`] and nothing changes.
pub async fn acknowledge(
    db: &DatabaseConnection,
    id: i64,
    status: ActionStatus,
    note: Option<String>,
    now: DateTime<Utc>,
    expected: Option<ActionStatus>,
) -> Result<action::Model, ServiceError> {
    let change = action::ActiveModel {
        status: Set(status.as_str().to_owned()),
        note: Set(note),
        handled_at: Set((status != ActionStatus::Pending).then_some(now)),
        ..Default::default()
    };
    let mut update = action::Entity::update_many()
        .set(change)
        .filter(action::Column::Id.eq(id));
    if let Some(expected) = expected {
        update = update.filter(action::Column::Status.eq(expected.as_str()));
    }
    if let Some(model) = update.exec_with_returning(db).await?.pop() {
        return Ok(model);
    }
    match (expected, action::Entity::find_by_id(id).one(db).await?) {
        (Some(expected), Some(current)) if current.status != expected.as_str() => {
            Err(ServiceError::Conflict(format!(
                "action {id} is {}, not {}: nothing changed",
                current.status,
                expected.as_str()
            )))
        }
        (Some(_), Some(_)) => Err(ServiceError::Conflict(format!(
            "action {id} changed while it was being acknowledged: nothing changed; read it again"
        ))),
        _ => Err(ServiceError::NotFound(format!("no action {id}"))),
    }
}
