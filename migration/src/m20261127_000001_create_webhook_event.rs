//! The raw log of every accepted delivery.

use sea_orm_migration::prelude::*;

use crate::{id, timestamp};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebhookEvent {
    Table,
    Id,
    ReceivedAt,
    Format,
    EventType,
    CallId,
    AttemptNumber,
    DedupeKey,
    SignatureVerified,
    Recognized,
    Outcome,
    Body,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use WebhookEvent::*;
        manager
            .create_table(
                sea_query::Table::create()
                    .table(Table)
                    .col(id(Id))
                    .col(timestamp(ReceivedAt))
                    .col(ColumnDef::new(Format).string().not_null())
                    .col(ColumnDef::new(EventType).string().not_null())
                    .col(ColumnDef::new(CallId).string().null())
                    .col(ColumnDef::new(AttemptNumber).integer().null())
                    .col(ColumnDef::new(DedupeKey).string().not_null())
                    .col(ColumnDef::new(SignatureVerified).boolean().not_null())
                    .col(ColumnDef::new(Recognized).boolean().not_null())
                    .col(ColumnDef::new(Outcome).string().not_null())
                    .col(ColumnDef::new(Body).text().not_null())
                    .to_owned(),
            )
            .await?;
        // Dedupe lookups: by the body's hash; and, as a guard against two
        // replicas racing, one stored copy per (call, attempt, bytes).
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
        // `events(filter: {callId})` and `Call.events`, oldest first.
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

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WebhookEvent::Table).to_owned())
            .await
    }
}
