//! One dial of a call task, numbered from 1.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "attempt")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub call_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub number: i32,
    pub status: String,
    /// Picked up: received in-progress, ended, completed, end-of-call or timeout.
    pub connected: bool,
    pub started_at: Option<DateTimeUtc>,
    pub ended_at: Option<DateTimeUtc>,
    pub duration_seconds: Option<f64>,
    pub recording_url: Option<String>,
    pub detail_url: Option<String>,
    /// Credits of this attempt's analysis, so a replaced analysis is not counted twice.
    pub credits_used: Option<f64>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
