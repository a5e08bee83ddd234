//! The PostgreSQL back end: one LISTEN connection per process. Notifications
//! wake the reader, which reads the log by position (a notification's payload,
//! the batch's last `seq`, only spares the reader a query for the head while
//! nobody subscribes); so when the connection drops, reconnect, then read
//! everything committed meanwhile.

use std::sync::Weak;
use std::time::Duration;

use sea_orm::sqlx::PgPool;
use sea_orm::sqlx::postgres::{PgListener, PgPoolOptions};

use super::Inner;

/// The channel the ingest writers NOTIFY (see `ingest/postgres.rs`).
pub const CHANNEL: &str = "calltrail_events";

/// The LISTEN connection's own pool, on the read pool's settings and closed
/// with it: the read pool keeps every connection
/// `CALLTRAIL_DB_READ_CONNECTIONS` names for GraphQL (a listener holds its
/// connection for as long as it runs), and a reconnect never waits for one
/// of them. Four at most: after some errors sqlx returns the old connection
/// from a task of its own (its `UNLISTEN` first), while the new one
/// connects; a connection that went silent is only given up when TCP gives
/// up on it (~15 minutes), its `UNLISTEN` waiting that long.
pub(super) fn own_pool(read: &PgPool) -> PgPool {
    let own = PgPoolOptions::new()
        .max_connections(4)
        .connect_lazy_with((*read.connect_options()).clone());
    let (read, closing) = (read.clone(), own.clone());
    tokio::spawn(async move {
        read.close_event().await;
        closing.close().await;
    });
    own
}

pub(super) async fn listen(pool: PgPool, bus: Weak<Inner>) {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    while bus.strong_count() > 0 {
        let mut listener = match connect(&pool).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::error!(error = %err, retry_in = ?backoff, "cannot LISTEN for committed deliveries; subscribers get live events only from the log's poll (every 2 s) until this succeeds");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        if !first {
            tracing::warn!(
                "LISTEN connection re-established; notifications sent while it was down were missed, reading the log from the last position delivered to subscribers"
            );
        }
        first = false;
        // Read what committed while nobody listened.
        wake(&bus);
        loop {
            // A connection that died without a word (a failover, a firewall
            // forgetting it) would wait here for good: when nothing is heard
            // for a while, ask the server something.
            let heard = match tokio::time::timeout(QUIET, listener.try_recv()).await {
                Ok(heard) => heard,
                Err(_) => {
                    let probe = sea_orm::sqlx::query("SELECT 1").execute(&mut listener);
                    match tokio::time::timeout(PROBE_WAIT, probe).await {
                        Ok(Ok(_)) => continue,
                        _ => Ok(None),
                    }
                }
            };
            match heard {
                Ok(Some(notification)) => {
                    if let (Some(bus), Ok(seq)) =
                        (bus.upgrade(), notification.payload().parse::<i64>())
                    {
                        bus.heard
                            .fetch_max(seq, std::sync::atomic::Ordering::SeqCst);
                    }
                    wake(&bus)
                }
                Ok(None) | Err(_) => {
                    tracing::warn!(
                        "the LISTEN connection dropped: events committed from now until it is back may be missed by the notification, and will be read from the log on reconnect"
                    );
                    break;
                }
            }
            if bus.strong_count() == 0 {
                return;
            }
        }
    }
}

/// How long the LISTEN connection may stay silent before it is probed.
const QUIET: Duration = Duration::from_secs(30);
/// How long the probe may take before the connection counts as dead.
const PROBE_WAIT: Duration = Duration::from_secs(10);

async fn connect(pool: &PgPool) -> Result<PgListener, sea_orm::sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Reconnection is ours (with the catch-up read); the pool's close event ends the task.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

fn wake(bus: &Weak<Inner>) {
    if let Some(bus) = bus.upgrade() {
        bus.wake.notify_one();
    }
}
