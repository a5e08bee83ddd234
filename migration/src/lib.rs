//! calltrail's migrations. Append-only: one change per file, always with `down`,
//! never edited once released. Applied by `calltrail serve` at start, by
//! `calltrail migrate`, or alone with `cargo run -p migration -- up`.

pub use sea_orm_migration::prelude::*;

mod m20261127_000001_create_webhook_event;
mod m20261127_000002_create_call;
mod m20261127_000003_create_attempt;
mod m20261127_000004_create_analysis;
mod m20261127_000005_create_action;
mod m20261127_000006_webhook_event_seq;
mod m20261127_000007_v2_webhooks;
mod m20261127_000008_lean_event_indexes;
mod m20261127_000009_fewer_event_indexes;
mod m20261127_000010_fewer_write_indexes;
mod m20261127_000011_call_version;
mod m20261128_000012_batch_written;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_create_webhook_event::Migration),
            Box::new(m20261127_000002_create_call::Migration),
            Box::new(m20261127_000003_create_attempt::Migration),
            Box::new(m20261127_000004_create_analysis::Migration),
            Box::new(m20261127_000005_create_action::Migration),
            Box::new(m20261127_000006_webhook_event_seq::Migration),
            Box::new(m20261127_000007_v2_webhooks::Migration),
            Box::new(m20261127_000008_lean_event_indexes::Migration),
            Box::new(m20261127_000009_fewer_event_indexes::Migration),
            Box::new(m20261127_000010_fewer_write_indexes::Migration),
            Box::new(m20261127_000011_call_version::Migration),
            Box::new(m20261128_000012_batch_written::Migration),
        ]
    }
}

/// Timestamps are stored in UTC: `timestamptz` on PostgreSQL, RFC 3339 text on SQLite.
pub(crate) fn timestamp(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

pub(crate) fn timestamp_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

/// A 64-bit auto-increment primary key (`bigserial` / SQLite `integer primary key`).
pub(crate) fn id(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned()
}
