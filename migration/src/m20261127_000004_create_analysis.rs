//! Analyses: the AI's end-of-call report, one per attempt.

use sea_orm_migration::prelude::*;

use crate::timestamp;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Analysis {
    Table,
    CallId,
    AttemptNumber,
    EventId,
    Success,
    Summary,
    RequiredActions,
    Insights,
    Outcome,
    CreditsUsed,
    CreditsAvailable,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Call {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use Analysis::*;
        manager
            .create_table(
                sea_query::Table::create()
                    .table(Table)
                    .col(ColumnDef::new(CallId).string().not_null())
                    .col(ColumnDef::new(AttemptNumber).integer().not_null())
                    .col(ColumnDef::new(EventId).big_integer().not_null())
                    .col(ColumnDef::new(Success).boolean().null())
                    .col(ColumnDef::new(Summary).text().null())
                    .col(ColumnDef::new(RequiredActions).json_binary().not_null())
                    .col(ColumnDef::new(Insights).json_binary().null())
                    .col(ColumnDef::new(Outcome).json_binary().null())
                    .col(ColumnDef::new(CreditsUsed).double().null())
                    .col(ColumnDef::new(CreditsAvailable).double().null())
                    .col(timestamp(CreatedAt))
                    .primary_key(Index::create().col(CallId).col(AttemptNumber))
                    .foreign_key(
                        ForeignKey::create()
                            .name("analysis_call")
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
            .drop_table(Table::drop().table(Analysis::Table).to_owned())
            .await
    }
}
