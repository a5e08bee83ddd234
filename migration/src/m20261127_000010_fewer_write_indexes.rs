//! Two more indexes that every stored delivery paid for and no read needs
//! (docs/PERFORMANCE.md, "pages written per batch"):
//!
//! - `call_last_event (last_event_at)` goes. A call's `last_event_at` and
//!   `updated_at` are set together, by every delivery applied to it and by
//!   nothing else, so the `stale` filter reads `updated_at` through
//!   `call_updated (updated_at, id)`. Every delivery updates its call, so
//!   the index cost one entry per delivery (on SQLite ~1.1 of the ~29 pages
//!   a batch of eight wrote).
//! - `webhook_event_call_seq (call_id, seq)` goes. A call's deliveries
//!   (replays, `events(filter: {callId})`, a call's and an attempt's
//!   events) are found through `webhook_event_dedupe (call_id, dedupe_key,
//!   attempt_number)` and put in commit order by sorting: a call has tens
//!   of deliveries, not thousands (~1.9 pages per batch on SQLite).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebhookEvent {
    Table,
    CallId,
    Seq,
}

#[derive(DeriveIden)]
enum Call {
    Table,
    LastEventAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("call_last_event")
                    .table(Call::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("webhook_event_call_seq")
                    .table(WebhookEvent::Table)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("webhook_event_call_seq")
                    .table(WebhookEvent::Table)
                    .col(WebhookEvent::CallId)
                    .col(WebhookEvent::Seq)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("call_last_event")
                    .table(Call::Table)
                    .col(Call::LastEventAt)
                    .to_owned(),
            )
            .await
    }
}
