//! The event bus: after a commit, every server process learns that the raw
//! log grew, reads what was committed (once per process, in commit order) and
//! fans it out to its own subscribers.
//!
//! Two back ends behind one [`Bus`]: in-process (SQLite: the writer wakes the
//! reader after its commit) and PostgreSQL LISTEN/NOTIFY (the writer's batch
//! transaction sends `NOTIFY calltrail_events`, delivered at commit to every
//! replica). Either way a notification is only a wake-up: the reader takes
//! everything after the last position it read (`seq`, numbered in commit
//! order), so a lost notification or a dropped LISTEN connection delays
//! events but never loses them. Owned by the application state, never global.

mod feed;
mod postgres;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use sea_orm::{DatabaseBackend, DatabaseConnection, SqlxPostgresConnector, SqlxSqliteConnector};
use tokio::sync::{Notify, broadcast};

use crate::service::live::{self, LiveEvent, LiveFilter};

pub use feed::{Feed, FeedError, Start};

/// Committed deliveries read per query of the reader.
const READ_PAGE: u64 = 256;
/// How often the reader looks at the log even without a wake-up (deliveries
/// committed by another process on SQLite, e.g. `calltrail import`).
const POLL: Duration = Duration::from_secs(2);

/// Handle to the bus; cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    /// Wakes the reader; poked by in-process writers and by the LISTEN task.
    wake: Arc<Notify>,
    sender: broadcast::Sender<Arc<LiveEvent>>,
    /// Position of the last delivery broadcast: where a new live feed starts.
    position: AtomicI64,
    /// The newest position a commit announced: a PostgreSQL notification's
    /// payload, or what the in-process SQLite writer committed (the
    /// batch's last `seq`); 0 until one arrives.
    heard: AtomicI64,
    active: AtomicUsize,
}

/// What a writer calls after a commit that stored deliveries.
#[derive(Clone)]
pub struct Publisher(Option<Arc<Inner>>);

impl Publisher {
    /// A publisher that tells nobody (for commands that run no server).
    pub fn none() -> Self {
        Self(None)
    }

    /// Deliveries were committed, up to position `head` if the writer knows
    /// it. On PostgreSQL the transaction's NOTIFY already told every
    /// replica; in-process, wake the reader (with the head, it need not ask
    /// the log for it).
    pub fn committed(&self, head: Option<i64>) {
        if let Some(inner) = &self.0 {
            if let Some(head) = head {
                inner.heard.fetch_max(head, Ordering::SeqCst);
            }
            inner.wake.notify_one();
        }
    }
}

impl Bus {
    /// Start the bus reading committed deliveries on `db`: each subscriber
    /// may fall `buffer` deliveries behind before it is dropped.
    pub async fn start(
        db: DatabaseConnection,
        buffer: usize,
    ) -> Result<Self, crate::service::ServiceError> {
        let (sender, _) = broadcast::channel(buffer.max(1));
        let bus = Self {
            inner: Arc::new(Inner {
                db: uncounted(&db),
                wake: Arc::new(Notify::new()),
                sender,
                position: AtomicI64::new(0),
                heard: AtomicI64::new(0),
                active: AtomicUsize::new(0),
            }),
        };
        let head = live::head(&bus.inner.db).await?;
        bus.inner.position.store(head, Ordering::SeqCst);
        if bus.inner.db.get_database_backend() == DatabaseBackend::Postgres {
            let read = bus.inner.db.get_postgres_connection_pool().clone();
            tokio::spawn(postgres::listen(
                postgres::own_pool(&read),
                Arc::downgrade(&bus.inner),
            ));
        }
        tokio::spawn(read(
            Arc::downgrade(&bus.inner),
            bus.inner.wake.clone(),
            head,
        ));
        Ok(bus)
    }

    /// What the ingest writers call after their commits.
    pub fn publisher(&self) -> Publisher {
        match self.inner.db.get_database_backend() {
            DatabaseBackend::Postgres => Publisher(None),
            _ => Publisher(Some(self.inner.clone())),
        }
    }

    /// Subscriptions open now (for `calltrail_subscriptions_active`).
    pub fn active(&self) -> usize {
        self.inner.active.load(Ordering::Relaxed)
    }

    /// Deliveries matching `filter`: those committed after position `after`
    /// first (read from the log), then live, each exactly once, in commit order.
    pub fn feed(&self, filter: LiveFilter, after: Option<i64>) -> Feed {
        // Subscribe before reading the log: whatever commits from here on
        // reaches the receiver, whatever committed before is in the log.
        let receiver = self.inner.sender.subscribe();
        let start = self.inner.position.load(Ordering::SeqCst);
        Feed::new(
            self.inner.db.clone(),
            receiver,
            filter,
            after.map_or(Start::Live(start), Start::After),
            Active::new(&self.inner),
        )
    }
}

/// The same pool without the read-statement counter: the bus's own reads
/// are not GraphQL's cost.
fn uncounted(db: &DatabaseConnection) -> DatabaseConnection {
    match db.get_database_backend() {
        DatabaseBackend::Postgres => SqlxPostgresConnector::from_sqlx_postgres_pool(
            db.get_postgres_connection_pool().clone(),
        ),
        _ => SqlxSqliteConnector::from_sqlx_sqlite_pool(db.get_sqlite_connection_pool().clone()),
    }
}

/// Counts an open subscription while it lives.
struct Active(Arc<Inner>);

impl Active {
    fn new(inner: &Arc<Inner>) -> Self {
        inner.active.fetch_add(1, Ordering::Relaxed);
        Self(inner.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The reader: on every wake-up (or poll), read the log after the last
/// position read and broadcast it. One read per process, whatever the
/// number of subscribers; with none, only the position moves.
async fn read(inner: std::sync::Weak<Inner>, wake: Arc<Notify>, mut last: i64) {
    let mut known = live::Projections::default();
    loop {
        let Some(bus) = inner.upgrade() else { return };
        if let Err(err) = catch_up(&bus, &mut last, &mut known).await {
            tracing::error!(error = %err, "reading committed deliveries for subscribers failed; retrying");
        }
        drop(bus);
        let _ = tokio::time::timeout(POLL, wake.notified()).await;
    }
}

async fn catch_up(
    bus: &Inner,
    last: &mut i64,
    known: &mut live::Projections,
) -> Result<(), crate::service::ServiceError> {
    loop {
        // Nobody listens: only move the position. Count the receivers after
        // reading the head, so that a subscriber that came meanwhile gets
        // everything after the head read by its own replay or from us.
        // A commit announced since the last read names the head: with
        // nobody listening that saves a query per commit (on PostgreSQL a
        // round trip and a sixth of the database's CPU per delivery at
        // C=16; on SQLite a trip through the pool's worker thread). Polls
        // ask the log (another process may have written to it).
        let heard = bus.heard.load(Ordering::SeqCst);
        let head = if heard > *last {
            heard
        } else {
            live::head(&bus.db).await?
        };
        if bus.sender.receiver_count() == 0 {
            if head > *last {
                // Deliveries not read: the calls known are behind now.
                known.clear();
            }
            *last = (*last).max(head);
            bus.position.store(*last, Ordering::SeqCst);
            return Ok(());
        }
        let page = live::after_all(&bus.db, *last, READ_PAGE, known).await?;
        let Some(newest) = page.last() else {
            return Ok(());
        };
        *last = newest.event.seq;
        let full = page.len() as u64 == READ_PAGE;
        for event in page {
            let seq = event.event.seq;
            // No receiver right now is fine: nobody is listening.
            let _ = bus.sender.send(Arc::new(event));
            bus.position.store(seq, Ordering::SeqCst);
        }
        if !full {
            return Ok(());
        }
    }
}
