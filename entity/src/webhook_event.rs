//! The raw log: every accepted delivery, byte for byte, forever.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_event")]
pub struct Model {
    /// Drawn at insert time (so not in commit order across writers); the GraphQL `eventId`.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Position in commit order: increasing as transactions commit, across
    /// writers and replicas (numbered under the `event_clock` row lock).
    /// `WebhookEvent.cursor` encodes it.
    pub seq: i64,
    pub received_at: DateTimeUtc,
    /// `v1` or `v2`: the upstream wire format.
    pub format: String,
    /// `event.type` as sent, also for types calltrail does not know.
    pub event_type: String,
    pub call_id: Option<String>,
    /// The attempt the delivery was applied to (its dedupe scope).
    pub attempt_number: Option<i32>,
    /// What makes two deliveries one: v1, hex SHA-256 of the raw body (scoped
    /// to the call's attempt); v2, `v2:` and the event id.
    pub dedupe_key: String,
    /// The platform's event id (v2 `id`, unique); null for v1.
    pub upstream_id: Option<String>,
    pub signature_verified: bool,
    pub recognized: bool,
    /// `applied`, `unrecognized` or `no_call` (recognized, but nothing to attach it to).
    pub outcome: String,
    /// The delivery body exactly as received (UTF-8 JSON).
    #[sea_orm(column_type = "Text")]
    pub body: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
