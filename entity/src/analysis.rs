//! The AI's end-of-call analysis of one attempt (at most one per attempt).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "analysis")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub call_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub attempt_number: i32,
    /// The `end-of-call` delivery it came from.
    pub event_id: i64,
    pub success: Option<bool>,
    pub summary: Option<String>,
    pub required_actions: Json,
    pub insights: Option<Json>,
    pub outcome: Option<Json>,
    pub credits_used: Option<f64>,
    pub credits_available: Option<f64>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
