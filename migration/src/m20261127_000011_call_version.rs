//! A call's version, for PostgreSQL's ingest writers: each batch loads its
//! calls' rows with their versions in one statement and writes them back
//! in another, and the write only replaces a call whose version is still
//! the one loaded (then bumps it). When another writer, another replica or
//! `calltrail reprocess` changed the call in between, the write statement
//! fails as a whole with SQLSTATE 40001 (`calltrail_call_changed`) and the
//! writer retries the batch from its load. This replaces the advisory lock
//! taken in a transaction of its own (`BEGIN`, lock, load, write, `COMMIT`:
//! four round trips per batch, now two; docs/ARCHITECTURE.md, "Durability
//! and concurrency").
//!
//! Rows get version 1 when created, so 0 means "not there when loaded":
//! a call created by someone else in between is never taken for ours.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Call {
    Table,
    Version,
}

/// Raises serialization_failure unless `ok`: the write statement's guard.
const GUARD: &str = "CREATE OR REPLACE FUNCTION calltrail_call_changed(ok boolean) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ok THEN
        RAISE EXCEPTION 'a call of this batch changed since the batch loaded it'
            USING ERRCODE = 'serialization_failure',
                  HINT = 'calltrail retries the batch from its load';
    END IF;
    RETURN ok;
END
$$";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Call::Table)
                    .add_column(
                        ColumnDef::new(Call::Version)
                            .big_integer()
                            .not_null()
                            .default(1),
                    )
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            manager.get_connection().execute_unprepared(GUARD).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared("DROP FUNCTION IF EXISTS calltrail_call_changed(boolean)")
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Call::Table)
                    .drop_column(Call::Version)
                    .to_owned(),
            )
            .await
    }
}
