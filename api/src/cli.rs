//! The subcommands other than `serve`.

use anyhow::Context;
use migration::{Migrator, MigratorTrait};

use crate::config::{Config, MigrateAction};
use crate::db::Db;

/// `calltrail migrate up|down|status|fresh`.
pub async fn migrate(config: &Config, action: MigrateAction) -> anyhow::Result<()> {
    let db = Db::connect(config, 1).await?;
    let conn = &db.write;
    match action {
        MigrateAction::Up => Migrator::up(conn, None).await,
        MigrateAction::Down => Migrator::down(conn, Some(1)).await,
        MigrateAction::Status => Migrator::status(conn).await,
        MigrateAction::Fresh => Migrator::fresh(conn).await,
    }
    .with_context(|| format!("migrate {action:?}").to_lowercase())
}
