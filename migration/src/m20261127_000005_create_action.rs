//! Actions: the AI's requests to the business, the workers' inbox.

use sea_orm_migration::prelude::*;

use crate::{id, timestamp, timestamp_null};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Action {
    Table,
    Id,
    EventId,
    CallId,
    AttemptNumber,
    Kind,
    Reason,
    Payload,
    Status,
    Note,
    CreatedAt,
    HandledAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use Action::*;
        manager
            .create_table(
                sea_query::Table::create()
                    .table(Table)
                    .col(id(Id))
                    .col(
                        ColumnDef::new(EventId)
                            .big_integer()
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(CallId).string().null())
                    .col(ColumnDef::new(AttemptNumber).integer().null())
                    .col(ColumnDef::new(Kind).string().not_null())
                    .col(ColumnDef::new(Reason).string().null())
                    .col(ColumnDef::new(Payload).json_binary().null())
                    .col(ColumnDef::new(Status).string().not_null())
                    .col(ColumnDef::new(Note).text().null())
                    .col(timestamp(CreatedAt))
                    .col(timestamp_null(HandledAt))
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            ("action_kind", [Kind, Id]),
            ("action_status", [Status, Id]),
            ("action_call", [CallId, Id]),
        ] {
            let mut index = Index::create().name(name).table(Table).to_owned();
            for col in cols {
                index.col(col);
            }
            manager.create_index(index).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Action::Table).to_owned())
            .await
    }
}
