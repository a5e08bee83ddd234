//! Two raw-log indexes that every stored delivery paid for and few reads
//! use (docs/PERFORMANCE.md, "pages written per batch"):
//!
//! - `webhook_event_type (event_type, id)` goes. At group commit on SQLite
//!   it was the most written index: each event type of a batch dirtied a
//!   leaf of its own (six of the ~37 pages a batch of eight wrote). Its
//!   only reader was the `type` filter of `events`, which pages in commit
//!   order, so it walks `webhook_event_seq` and keeps the matching rows
//!   (as the `recognized` filter always did).
//! - `webhook_event_upstream_id` becomes partial (`WHERE upstream_id IS NOT
//!   NULL`): v1 deliveries carry no event id, and no longer add a NULL
//!   entry each. Uniqueness of v2 event ids is the same; the writers' v2
//!   lookups say `upstream_id IS NOT NULL` so both databases use it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebhookEvent {
    Table,
    Id,
    EventType,
    UpstreamId,
}

const UPSTREAM_ID_INDEX: &str = "webhook_event_upstream_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use WebhookEvent::*;
        for name in ["webhook_event_type", UPSTREAM_ID_INDEX] {
            manager
                .drop_index(Index::drop().name(name).table(Table).to_owned())
                .await?;
        }
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX webhook_event_upstream_id ON webhook_event (upstream_id) \
                 WHERE upstream_id IS NOT NULL",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use WebhookEvent::*;
        manager
            .drop_index(
                Index::drop()
                    .name(UPSTREAM_ID_INDEX)
                    .table(Table)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(UPSTREAM_ID_INDEX)
                    .table(Table)
                    .col(UpstreamId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("webhook_event_type")
                    .table(Table)
                    .col(EventType)
                    .col(Id)
                    .to_owned(),
            )
            .await
    }
}
