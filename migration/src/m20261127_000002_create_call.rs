//! Calls: one row per platform call id, the projection's top level.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::{timestamp, timestamp_null};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Call {
    Table,
    Id,
    Status,
    Metadata,
    StartedAt,
    EndedAt,
    DurationSeconds,
    RecordingUrl,
    DetailUrl,
    AttemptCount,
    ReAttemptCount,
    RescheduledCount,
    FinalStatus,
    LifecycleEnded,
    Success,
    CreditsUsed,
    CreatedAt,
    UpdatedAt,
    LastEventAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use Call::*;
        manager
            .create_table(
                sea_query::Table::create()
                    .table(Table)
                    .col(ColumnDef::new(Id).string().not_null().primary_key())
                    .col(ColumnDef::new(Status).string().not_null())
                    .col(ColumnDef::new(Metadata).json_binary().null())
                    .col(timestamp_null(StartedAt))
                    .col(timestamp_null(EndedAt))
                    .col(ColumnDef::new(DurationSeconds).double().null())
                    .col(ColumnDef::new(RecordingUrl).text().null())
                    .col(ColumnDef::new(DetailUrl).text().null())
                    .col(ColumnDef::new(AttemptCount).integer().not_null())
                    .col(ColumnDef::new(ReAttemptCount).integer().null())
                    .col(ColumnDef::new(RescheduledCount).integer().null())
                    .col(ColumnDef::new(FinalStatus).string().null())
                    .col(ColumnDef::new(LifecycleEnded).boolean().not_null())
                    .col(ColumnDef::new(Success).boolean().null())
                    .col(ColumnDef::new(CreditsUsed).double().null())
                    .col(timestamp(CreatedAt))
                    .col(timestamp(UpdatedAt))
                    .col(timestamp(LastEventAt))
                    .to_owned(),
            )
            .await?;
        // Keyset pages order by (key, id); filters by status and creation time.
        for (name, col) in [
            ("call_created", CreatedAt),
            ("call_updated", UpdatedAt),
            ("call_duration", DurationSeconds),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Table)
                        .col(col)
                        .col(Id)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("call_status")
                    .table(Table)
                    .col(Status)
                    .col(CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("call_last_event")
                    .table(Table)
                    .col(LastEventAt)
                    .to_owned(),
            )
            .await?;
        // Metadata matches (`metadata @> {"key": value}`) on PostgreSQL.
        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(
                    "CREATE INDEX call_metadata ON call USING gin (metadata jsonb_path_ops)",
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Call::Table).to_owned())
            .await
    }
}
