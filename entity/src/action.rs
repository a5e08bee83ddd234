//! Something the AI asked the business to do; workers acknowledge it.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "action")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The `action` delivery it came from (one action per delivery).
    #[sea_orm(unique)]
    pub event_id: i64,
    pub call_id: Option<String>,
    pub attempt_number: Option<i32>,
    /// `create_order`, `send_whatsapp`, … or any name the platform adds.
    pub kind: String,
    pub reason: Option<String>,
    pub payload: Option<Json>,
    /// `PENDING`, `HANDLED` or `FAILED`.
    pub status: String,
    pub note: Option<String>,
    pub created_at: DateTimeUtc,
    pub handled_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
