//! Commit order for the raw log: `webhook_event.seq`, numbered by the
//! one-row `event_clock` while the committing transaction holds that row, so
//! `seq` increases in commit order even with several writers and replicas
//! (ids are drawn at insert time and may commit out of order). Existing rows
//! keep their order: `seq = id`.

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
enum EventClock {
    Table,
    Id,
    Last,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(WebhookEvent::Table)
                    .add_column(
                        ColumnDef::new(WebhookEvent::Seq)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared("UPDATE webhook_event SET seq = id")
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("webhook_event_seq")
                    .table(WebhookEvent::Table)
                    .col(WebhookEvent::Seq)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Replays of one call (`callEvents(callId:, after:)`).
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
            .create_table(
                Table::create()
                    .table(EventClock::Table)
                    .col(
                        ColumnDef::new(EventClock::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(EventClock::Last).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        db.execute_unprepared(
            "INSERT INTO event_clock (id, last) SELECT 1, COALESCE(MAX(id), 0) FROM webhook_event",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(EventClock::Table).to_owned())
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("webhook_event_call_seq")
                    .table(WebhookEvent::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("webhook_event_seq")
                    .table(WebhookEvent::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(WebhookEvent::Table)
                    .drop_column(WebhookEvent::Seq)
                    .to_owned(),
            )
            .await
    }
}
