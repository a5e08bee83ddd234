//! A check inside PostgreSQL's write statement that every row a batch
//! holds was written (its raw events, analyses and actions). Without it the
//! writer compared the counts the statement returned, after the statement
//! had committed: a row skipped by a trigger or a rule was then lost with
//! the rest of the batch stored, and the delivery answered as stored when
//! sent again. Now the statement fails whole, nothing of the batch is
//! stored, and the writer commits its deliveries one by one so that only
//! the one whose row is refused gets an error.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Raises unless `ok`: the write statement's count check.
const CHECK: &str = "CREATE OR REPLACE FUNCTION calltrail_batch_written(ok boolean) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ok THEN
        RAISE EXCEPTION 'rows of this batch were not written (a trigger or rule skipped them)'
            USING HINT = 'nothing of the batch is stored; calltrail commits its deliveries one by one';
    END IF;
    RETURN ok;
END
$$";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            manager.get_connection().execute_unprepared(CHECK).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared("DROP FUNCTION IF EXISTS calltrail_batch_written(boolean)")
                .await?;
        }
        Ok(())
    }
}
