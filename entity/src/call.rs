//! One call task of the platform, identified by the platform's call id.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "call")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Status of the latest attempt, as the GraphQL enum name (`IN_PROGRESS`).
    pub status: String,
    /// Top-level keys merged across deliveries.
    pub metadata: Option<Json>,
    pub started_at: Option<DateTimeUtc>,
    pub ended_at: Option<DateTimeUtc>,
    pub duration_seconds: Option<f64>,
    pub recording_url: Option<String>,
    pub detail_url: Option<String>,
    pub attempt_count: i32,
    pub re_attempt_count: Option<i32>,
    pub rescheduled_count: Option<i32>,
    pub final_status: Option<String>,
    pub lifecycle_ended: bool,
    /// `success` of the latest analysis.
    pub success: Option<bool>,
    /// Sum of the credits of every analysis; null until one arrives.
    pub credits_used: Option<f64>,
    /// The number dialled, E.164 (v2 `to`; `to` is a reserved word in SQL).
    pub to_number: Option<String>,
    /// The platform's agent that placed the call (v2).
    pub agent_id: Option<String>,
    /// Why the call ended, the platform's word (v2).
    pub ended_reason: Option<String>,
    /// What the call cost (v2 `cost.amount_inr`), in `cost_currency`.
    pub cost_amount: Option<f64>,
    /// Price per minute (v2 `cost.per_min_inr`), in `cost_currency`.
    pub cost_per_minute: Option<f64>,
    /// ISO 4217 currency of the cost (`INR`); null when no cost is known.
    pub cost_currency: Option<String>,
    /// Arrival of the first delivery.
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// Arrival of the latest delivery (what `stale` measures from).
    pub last_event_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
