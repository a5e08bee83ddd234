//! Fewer indexes on the raw log, so each stored delivery dirties fewer
//! pages: at group commit on SQLite the raw log's indexes were a quarter of
//! the bytes written per delivery (docs/PERFORMANCE.md).
//!
//! - `webhook_event_dedupe_key (dedupe_key)` and the unique
//!   `webhook_event_dedupe_scope (call_id, attempt_number, dedupe_key)`
//!   become one unique `webhook_event_dedupe (call_id, dedupe_key,
//!   attempt_number)`: the same uniqueness, and the writers look stored
//!   copies up by (call, key); v2 copies by `upstream_id`, which has its own;
//!   copies of deliveries without a call by key, through the partial
//!   `webhook_event_callless (dedupe_key) WHERE call_id IS NULL` (such
//!   deliveries are rare, so it costs nothing for the others).
//! - `webhook_event_call (call_id, id)` goes: a call's deliveries are read in
//!   commit order through `webhook_event_call_seq (call_id, seq)`.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebhookEvent {
    Table,
    Id,
    CallId,
    AttemptNumber,
    DedupeKey,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use WebhookEvent::*;
        manager
            .create_index(
                Index::create()
                    .name("webhook_event_dedupe")
                    .table(Table)
                    .col(CallId)
                    .col(DedupeKey)
                    .col(AttemptNumber)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX webhook_event_callless ON webhook_event (dedupe_key) WHERE call_id IS NULL",
            )
            .await?;
        for name in [
            "webhook_event_dedupe_scope",
            "webhook_event_dedupe_key",
            "webhook_event_call",
        ] {
            manager
                .drop_index(Index::drop().name(name).table(Table).to_owned())
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use WebhookEvent::*;
        manager
            .create_index(
                Index::create()
                    .name("webhook_event_dedupe_key")
                    .table(Table)
                    .col(DedupeKey)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("webhook_event_dedupe_scope")
                    .table(Table)
                    .col(CallId)
                    .col(AttemptNumber)
                    .col(DedupeKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("webhook_event_call")
                    .table(Table)
                    .col(CallId)
                    .col(Id)
                    .to_owned(),
            )
            .await?;
        for name in ["webhook_event_callless", "webhook_event_dedupe"] {
            manager
                .drop_index(Index::drop().name(name).table(Table).to_owned())
                .await?;
        }
        Ok(())
    }
}
