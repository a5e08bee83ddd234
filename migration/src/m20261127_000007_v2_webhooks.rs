//! The platform's v2 webhooks: the event id they carry (unique, so a v2
//! retry is stored once even when its bytes differ, across writers and
//! replicas), and the call fields only v2 sends. v1 rows keep null in all of
//! them (NULLs never collide in a unique index).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebhookEvent {
    Table,
    UpstreamId,
}

#[derive(DeriveIden)]
enum Call {
    Table,
    ToNumber,
    AgentId,
    EndedReason,
    CostAmount,
    CostPerMinute,
    CostCurrency,
}

const UPSTREAM_ID_INDEX: &str = "webhook_event_upstream_id";

/// The new call columns. `to` is a reserved word in SQL, so the number
/// dialled is `to_number`.
fn call_columns() -> Vec<ColumnDef> {
    vec![
        ColumnDef::new(Call::ToNumber).string().null().to_owned(),
        ColumnDef::new(Call::AgentId).string().null().to_owned(),
        ColumnDef::new(Call::EndedReason).string().null().to_owned(),
        ColumnDef::new(Call::CostAmount).double().null().to_owned(),
        ColumnDef::new(Call::CostPerMinute)
            .double()
            .null()
            .to_owned(),
        ColumnDef::new(Call::CostCurrency)
            .string()
            .null()
            .to_owned(),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(WebhookEvent::Table)
                    .add_column(ColumnDef::new(WebhookEvent::UpstreamId).string().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(UPSTREAM_ID_INDEX)
                    .table(WebhookEvent::Table)
                    .col(WebhookEvent::UpstreamId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // One column per statement: SQLite alters one thing at a time.
        for column in call_columns() {
            manager
                .alter_table(
                    Table::alter()
                        .table(Call::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in call_columns() {
            manager
                .alter_table(
                    Table::alter()
                        .table(Call::Table)
                        .drop_column(column.get_column_name())
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name(UPSTREAM_ID_INDEX)
                    .table(WebhookEvent::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(WebhookEvent::Table)
                    .drop_column(WebhookEvent::UpstreamId)
                    .to_owned(),
            )
            .await
    }
}
