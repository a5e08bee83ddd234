//! Attempts: one row per dial of a call task.

use sea_orm_migration::prelude::*;

use crate::{timestamp, timestamp_null};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Attempt {
    Table,
    CallId,
    Number,
    Status,
    Connected,
    StartedAt,
    EndedAt,
    DurationSeconds,
    RecordingUrl,
    DetailUrl,
    CreditsUsed,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Call {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use Attempt::*;
        manager
            .create_table(
                sea_query::Table::create()
                    .table(Table)
                    .col(ColumnDef::new(CallId).string().not_null())
                    .col(ColumnDef::new(Number).integer().not_null())
                    .col(ColumnDef::new(Status).string().not_null())
                    .col(ColumnDef::new(Connected).boolean().not_null())
                    .col(timestamp_null(StartedAt))
                    .col(timestamp_null(EndedAt))
                    .col(ColumnDef::new(DurationSeconds).double().null())
                    .col(ColumnDef::new(RecordingUrl).text().null())
                    .col(ColumnDef::new(DetailUrl).text().null())
                    .col(ColumnDef::new(CreditsUsed).double().null())
                    .col(timestamp(CreatedAt))
                    .col(timestamp(UpdatedAt))
                    .primary_key(Index::create().col(CallId).col(Number))
                    .foreign_key(
                        ForeignKey::create()
                            .name("attempt_call")
                            .from(Table, CallId)
                            .to(Call::Table, Call::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Attempt::Table).to_owned())
            .await
    }
}
