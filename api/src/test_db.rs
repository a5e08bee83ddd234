//! For unit tests: a migrated SQLite file of this test process's own.

use std::path::PathBuf;

use migration::MigratorTrait;
use sea_orm::DatabaseConnection;

/// A new, migrated database file `calltrail-{name}-{pid}.db` in the
/// temporary directory; the caller removes it.
pub(crate) async fn scratch_database(name: &str) -> (DatabaseConnection, PathBuf) {
    let file = format!("calltrail-{name}-{}.db", std::process::id());
    let path = std::env::temp_dir().join(file);
    let _ = std::fs::remove_file(&path);
    let db = sea_orm::Database::connect(format!("sqlite:{}?mode=rwc", path.display()))
        .await
        .unwrap();
    migration::Migrator::up(&db, None).await.unwrap();
    (db, path)
}
