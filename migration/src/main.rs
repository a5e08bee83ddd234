//! `cargo run -p migration -- up|down|status|fresh`: the migrator alone, for
//! operators who want it without the server (the same as `calltrail migrate`).

use migration::{Migrator, MigratorTrait};
use sea_orm_migration::sea_orm::Database;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_else(|| "up".to_owned());
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "sqlite://calltrail.db?mode=rwc".to_owned());
    let result = async {
        let db = Database::connect(&url).await?;
        match command.as_str() {
            "up" => Migrator::up(&db, None).await,
            "down" => Migrator::down(&db, Some(1)).await,
            "status" => Migrator::get_migration_with_status(&db).await.map(|all| {
                for m in all {
                    println!("{:?}\t{}", m.status(), m.name());
                }
            }),
            "fresh" => Migrator::fresh(&db).await,
            other => {
                eprintln!("migration: unknown command {other:?}; use up, down, status or fresh");
                std::process::exit(2);
            }
        }
    }
    .await;
    match result {
        Ok(()) if command != "status" => println!("migration: {command}: done"),
        Ok(()) => {}
        Err(err) => {
            eprintln!("migration: {err}");
            std::process::exit(1);
        }
    }
}
