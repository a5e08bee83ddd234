//! Opening the database: connection options that make a 2xx durable, one
//! pool for the ingest writers and one for reads, and the migration checks.

use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::Connection;
use sea_orm::sqlx::pool::PoolConnectionMetadata;
use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sea_orm::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sea_orm::{DatabaseBackend, DatabaseConnection, SqlxPostgresConnector, SqlxSqliteConnector};

use crate::config::{Config, SqliteSynchronous as Sync};

/// A pooled connection idle this long is pinged before it is handed out (a
/// broken one is replaced). sqlx pings on every acquire by default: on
/// PostgreSQL a round trip more for every ingest batch and every query,
/// with nothing to find on a connection that was in use a moment ago.
pub(crate) const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Both pools' check before handing a connection out: a ping, only for a
/// connection idle for more than [`PING_AFTER_IDLE`].
fn ping_when_idle<C: Connection>(
    conn: &mut C,
    meta: PoolConnectionMetadata,
) -> Pin<Box<dyn Future<Output = Result<bool, sea_orm::sqlx::Error>> + Send + '_>> {
    Box::pin(async move {
        if meta.idle_for > PING_AFTER_IDLE {
            conn.ping().await?;
        }
        Ok(true)
    })
}

/// The PostgreSQL advisory lock key replicas take around their migrations
/// (`calltrail` in ASCII).
pub const MIGRATION_LOCK: i64 = 0x63_61_6c_6c_74_72_61_69;

/// The two pools: writers never wait behind readers, readers never behind a
/// writer's transaction.
#[derive(Clone, Debug)]
pub struct Db {
    pub write: DatabaseConnection,
    pub read: DatabaseConnection,
    /// Statements run on `read` since start: GraphQL's database cost.
    pub read_statements: StatementCounter,
}

/// Counts the statements a connection runs (sea-orm's metric callback).
#[derive(Clone, Debug, Default)]
pub struct StatementCounter(Arc<AtomicU64>);

impl StatementCounter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Count every statement `conn` runs from now on (set before cloning it).
    fn observe(&self, conn: &mut DatabaseConnection) {
        let count = self.0.clone();
        conn.set_metric_callback(move |_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
    }
}

impl Db {
    pub fn backend(&self) -> DatabaseBackend {
        self.write.get_database_backend()
    }

    fn new(write: DatabaseConnection, mut read: DatabaseConnection) -> Self {
        let read_statements = StatementCounter::default();
        read_statements.observe(&mut read);
        Self {
            write,
            read,
            read_statements,
        }
    }

    /// Open both pools for this configuration (`writers` write connections).
    pub async fn connect(config: &Config, writers: usize) -> anyhow::Result<Self> {
        let url = config.database_url.as_str();
        if url.starts_with("sqlite:") {
            if url.contains(":memory:") || url.contains("mode=memory") {
                anyhow::bail!(
                    "DATABASE_URL names an in-memory SQLite database: the ingest writer opens its own connection, which would see another, empty database. Use a file, e.g. sqlite://calltrail.db?mode=rwc"
                );
            }
            let options = SqliteConnectOptions::from_str(url)
                .with_context(|| "DATABASE_URL is not a valid sqlite:// URL")?
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(match config.sqlite_synchronous {
                    Sync::Full => SqliteSynchronous::Full,
                    Sync::Normal => SqliteSynchronous::Normal,
                })
                .busy_timeout(config.write_lock_timeout)
                .foreign_keys(true);
            let pool = |n: u32| {
                SqlitePoolOptions::new()
                    .max_connections(n)
                    .acquire_timeout(Duration::from_secs(5))
                    .test_before_acquire(false)
                    .before_acquire(ping_when_idle)
            };
            let write = pool(writers as u32)
                .connect_with(options.clone())
                .await
                .map_err(unreachable(url))?;
            let read = pool(config.db_read_connections)
                .connect_with(options)
                .await
                .map_err(unreachable(url))?;
            Ok(Self::new(
                SqlxSqliteConnector::from_sqlx_sqlite_pool(write),
                SqlxSqliteConnector::from_sqlx_sqlite_pool(read),
            ))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let port = PgConnectOptions::from_str(url)
                .map(|o| o.get_port())
                .unwrap_or(5432);
            let pool = move |n: u32| {
                PgPoolOptions::new()
                    .max_connections(n)
                    .acquire_timeout(Duration::from_secs(5))
                    .test_before_acquire(false)
                    .before_acquire(ping_when_idle)
                    .after_connect(move |_, _| {
                        Box::pin(async move {
                            nodelay_towards(port);
                            Ok(())
                        })
                    })
            };
            let options = PgConnectOptions::from_str(url)
                .with_context(|| "DATABASE_URL is not a valid postgres:// URL")?;
            // One direct connection first: a pool would only report a timeout.
            PgConnection::connect_with(&options)
                .await
                .map_err(unreachable(url))?
                .close()
                .await
                .ok();
            // The writers only look rows up by key. Their statements have
            // fixed texts, prepared once per connection: run them on generic
            // plans (left to choose, PostgreSQL planned the batch statements
            // again and again: a quarter of its CPU for a batch of one,
            // docs/PERFORMANCE.md), and keep those plans on the indexes even
            // when they were made while the tables were still empty (a
            // sequential scan then looks cheapest, forever).
            let write = pool(writers as u32)
                .connect_with(options.clone().options([
                    ("enable_seqscan", "off"),
                    ("plan_cache_mode", "force_generic_plan"),
                ]))
                .await
                .map_err(unreachable(url))?;
            // Reads vary with every filter: plan each for its actual arguments.
            // (The bus's LISTEN has a pool of its own: `bus/postgres.rs`.)
            let read = pool(config.db_read_connections)
                .connect_with(options.options([("plan_cache_mode", "force_custom_plan")]))
                .await
                .map_err(unreachable(url))?;
            Ok(Self::new(
                SqlxPostgresConnector::from_sqlx_postgres_pool(write),
                SqlxPostgresConnector::from_sqlx_postgres_pool(read),
            ))
        } else {
            bail!(
                "DATABASE_URL must start with sqlite:// or postgres:// (got {:?})",
                redact(url)
            )
        }
    }

    /// Apply every pending migration. On PostgreSQL under a session
    /// advisory lock ([`MIGRATION_LOCK`], on a connection of its own):
    /// replicas starting together on a new or older database migrate one
    /// after another (the later ones find nothing pending) instead of racing
    /// to create the same tables, the losers exiting with an error.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let lock = match self.backend() {
            DatabaseBackend::Postgres => {
                let options = self.write.get_postgres_connection_pool().connect_options();
                let mut conn = PgConnection::connect_with(&options)
                    .await
                    .context("connecting to take the migration lock")?;
                sea_orm::sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(MIGRATION_LOCK)
                    .execute(&mut conn)
                    .await
                    .context("taking the migration lock")?;
                Some(conn)
            }
            _ => None,
        };
        let applied = Migrator::up(&self.write, None)
            .await
            .context("applying migrations");
        if let Some(conn) = lock {
            // Ending the session releases the lock.
            let _ = conn.close().await;
        }
        applied
    }

    /// Ready: the database answers and no migration is pending.
    pub async fn ready(&self) -> Result<(), String> {
        // Read-only: no `CREATE TABLE IF NOT EXISTS` (nor its notice) per probe.
        match Migrator::get_pending_migrations_read_only(&self.read).await {
            Ok(pending) if pending.is_empty() => Ok(()),
            Ok(pending) => Err(format!("{} migration(s) pending", pending.len())),
            Err(e) => {
                // The database's own words (user names, hosts) stay in the
                // log: the probe needs no token.
                tracing::warn!(error = %e, "readiness check: the database does not answer");
                Err("database unavailable".to_owned())
            }
        }
    }
}

fn unreachable(url: &str) -> impl FnOnce(sea_orm::sqlx::Error) -> anyhow::Error + '_ {
    move |e| {
        anyhow::anyhow!(
            "cannot open the database {}: {e}. Check that the database server runs and that DATABASE_URL (--database-url) is right",
            redact(url)
        )
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme && url[scheme + 3..at].contains(':') => {
            let user = url[scheme + 3..at].split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// sqlx opens PostgreSQL connections without TCP_NODELAY, so a statement
/// larger than the socket's initial send buffer (16 KiB here) waits for a
/// delayed ACK: ~45 ms for a batch write of 30 deliveries or more, seven
/// times slower ingestion at 64 concurrent senders (docs/PERFORMANCE.md).
/// Until sqlx offers the option, set it on this process's TCP sockets
/// connected to the database's port, after each new connection. Harmless on
/// any other socket to that port; a no-op where /proc is absent.
fn nodelay_towards(port: u16) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::BorrowedFd;
        let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
            return;
        };
        for entry in fds.flatten() {
            let is_socket = std::fs::read_link(entry.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
                .filter(|_| is_socket)
            else {
                continue;
            };
            // SAFETY: the descriptor is only used for the duration of this
            // call; if it was closed meanwhile the calls below fail harmlessly.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let socket = socket2::SockRef::from(&fd);
            if socket
                .peer_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .is_some_and(|a| a.port() == port)
            {
                let _ = socket.set_tcp_nodelay(true);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = port;
}
