//! The ingest writers (DESIGN "Ingest writers and group commit"): the webhook
//! hands a parsed delivery to the writer that owns its call, the writer
//! commits whatever is queued as one transaction, and only then answers.

mod known;
mod postgres;
mod reprocess;
mod rows;
mod sqlite;
mod store;
mod wal_writes;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{DatabaseBackend, DatabaseConnection, DbErr};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::bus::Publisher;
use crate::domain::Delivery;
use crate::metrics::{IngestMetrics, Metrics};

pub use reprocess::{ReprocessSummary, reprocess};
use sqlite::SqliteStore;
use store::Settled;
pub use store::{Receipt, call_row, commit_batch};

/// A delivery waiting for its commit.
pub struct Job {
    pub delivery: Delivery,
    pub signature_verified: bool,
    pub received_at: DateTime<Utc>,
    reply: oneshot::Sender<Result<Receipt, IngestError>>,
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the ingest queue is full; retry shortly")]
    Overloaded,
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// Handle to the writers; cheap to clone.
#[derive(Clone)]
pub struct Ingestor {
    queues: Vec<mpsc::Sender<Job>>,
    /// Unix microseconds of the latest commit that stored a delivery (0: none yet).
    last_stored: Arc<AtomicI64>,
    /// Senders waiting in [`Ingestor::submit`] for their answer.
    waiting: Arc<AtomicUsize>,
    /// Set by a stopping server once it stops waiting for requests: a
    /// delivery arriving later is refused (503) rather than taken by a
    /// writer after its connection may already be closed.
    refusing: Arc<AtomicBool>,
}

/// One sender waiting for its answer, counted while it waits.
struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Ingestor {
    /// Start `writers` writers on `db` (one on SQLite), each committing up
    /// to `batch` deliveries at once with up to `queue` waiting.
    pub async fn start(
        db: DatabaseConnection,
        writers: usize,
        batch: usize,
        queue: usize,
    ) -> Result<(Self, Vec<JoinHandle<()>>), DbErr> {
        let metrics = Metrics::new().ingest();
        // No limit (PostgreSQL's 0): `import` waits behind a rebuild
        // instead of failing.
        let lock_wait = std::time::Duration::ZERO;
        Self::start_publishing(
            db,
            writers,
            batch,
            queue,
            lock_wait,
            Publisher::none(),
            metrics,
        )
        .await
    }

    /// [`Self::start`], telling `publisher` after each commit that stored
    /// deliveries, and recording each commit in `metrics`; a PostgreSQL
    /// write waits at most `lock_wait` for a lock (SQLite's connection has
    /// its busy timeout already).
    ///
    /// A PostgreSQL writer is a task that holds a connection of the write
    /// pool (the pool has one per writer). SQLite's one writer is a thread
    /// with a connection of its own (`sqlite.rs`): its statements never
    /// leave that thread.
    pub async fn start_publishing(
        db: DatabaseConnection,
        writers: usize,
        batch: usize,
        queue: usize,
        lock_wait: std::time::Duration,
        publisher: Publisher,
        metrics: IngestMetrics,
    ) -> Result<(Self, Vec<JoinHandle<()>>), DbErr> {
        let (batch, queue) = (batch.max(1), queue.max(1));
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        if db.get_database_backend() == DatabaseBackend::Postgres {
            for _ in 0..writers.max(1) {
                let (tx, rx) = mpsc::channel(queue);
                let pool = db.get_postgres_connection_pool().clone();
                let store = Store::Postgres(Box::new(postgres::Writer::new(
                    pool,
                    metrics.conflicts.clone(),
                    writers.max(1),
                    lock_wait,
                )));
                queues.push(tx);
                tasks.push(tokio::spawn(run_writer(
                    store,
                    rx,
                    batch,
                    publisher.clone(),
                    metrics.clone(),
                )));
            }
        } else {
            let (tx, rx) = mpsc::channel(queue);
            let store = Store::Sqlite(Box::new(SqliteStore::open_like(&db).await?));
            let runtime = tokio::runtime::Handle::current();
            queues.push(tx);
            tasks.push(tokio::task::spawn_blocking(move || {
                runtime.block_on(run_writer(store, rx, batch, publisher, metrics));
            }));
        }
        let last_stored = Arc::new(AtomicI64::new(0));
        Ok((
            Self {
                queues,
                last_stored,
                waiting: Arc::new(AtomicUsize::new(0)),
                refusing: Arc::new(AtomicBool::new(false)),
            },
            tasks,
        ))
    }

    /// Commit one delivery (or find it already stored) and say which event it is.
    pub async fn submit(
        &self,
        delivery: Delivery,
        signature_verified: bool,
    ) -> Result<Receipt, IngestError> {
        let (queue, job, answer) = self.job(delivery, signature_verified);
        let _waiting = Waiting::new(&self.waiting);
        // Counted first, then checked: a stopping server either sees this
        // sender waiting, or this sender sees it refusing.
        if self.refusing.load(Ordering::SeqCst) {
            return Err(IngestError::ShuttingDown);
        }
        queue.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => IngestError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => IngestError::ShuttingDown,
        })?;
        let receipt = answer.await.map_err(|_| IngestError::ShuttingDown)??;
        if !receipt.duplicate {
            self.last_stored
                .fetch_max(Utc::now().timestamp_micros(), Ordering::Relaxed);
        }
        Ok(receipt)
    }

    /// When the latest stored delivery was committed (Unix seconds), if any.
    pub fn last_stored_at(&self) -> Option<f64> {
        let micros = self.last_stored.load(Ordering::Relaxed);
        (micros > 0).then(|| micros as f64 / 1e6)
    }

    /// Queue a delivery, waiting for room instead of refusing (for `import`,
    /// which prefers to slow down). Deliveries queued one after another keep
    /// their order; await the returned future for the receipt.
    pub async fn enqueue(
        &self,
        delivery: Delivery,
        signature_verified: bool,
    ) -> Result<impl Future<Output = Result<Receipt, IngestError>> + use<>, IngestError> {
        let (queue, job, answer) = self.job(delivery, signature_verified);
        queue
            .send(job)
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        Ok(async move { answer.await.map_err(|_| IngestError::ShuttingDown)? })
    }

    /// A delivery as a job for the writer that owns its call, arriving now.
    fn job(
        &self,
        delivery: Delivery,
        signature_verified: bool,
    ) -> (
        &mpsc::Sender<Job>,
        Job,
        oneshot::Receiver<Result<Receipt, IngestError>>,
    ) {
        let (reply, answer) = oneshot::channel();
        let queue = &self.queues[self.route(&delivery)];
        let job = Job {
            delivery,
            signature_verified,
            received_at: Utc::now().trunc_subsecs(6),
            reply,
        };
        (queue, job, answer)
    }

    /// Refuse every delivery submitted from now on (`503 shutting_down`).
    pub fn refuse_new(&self) {
        self.refusing.store(true, Ordering::SeqCst);
    }

    /// Webhook requests waiting for their delivery's commit (queued, or in
    /// a batch being written): a stopping server answers them all before
    /// it closes their connections.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Deliveries waiting for a writer, over all writers.
    pub fn queue_depth(&self) -> usize {
        self.queues
            .iter()
            .map(|q| q.max_capacity() - q.capacity())
            .sum()
    }

    /// Every delivery of one call goes to the same writer, so a call's
    /// deliveries are applied in arrival order and writers never contend for
    /// a call row. Deliveries without a call are routed by their bytes, so
    /// that copies of one meet in the same writer.
    fn route(&self, d: &Delivery) -> usize {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let key = d.call_id.as_deref().unwrap_or(&d.dedupe_key);
        (BuildHasherDefault::<DefaultHasher>::default().hash_one(key) % self.queues.len() as u64)
            as usize
    }
}

/// Where a writer commits.
enum Store {
    /// On a connection of the write pool the writer holds.
    Postgres(Box<postgres::Writer>),
    /// On the writer thread's own connection.
    Sqlite(Box<SqliteStore>),
}

impl Store {
    /// The last position (`seq`) this writer committed, if it keeps count
    /// (SQLite's; PostgreSQL's commits announce theirs with NOTIFY).
    fn head(&self) -> Option<i64> {
        match self {
            Self::Postgres(_) => None,
            Self::Sqlite(store) => Some(store.head()),
        }
    }

    async fn commit(&mut self, batch: &[store::Input<'_>]) -> Result<Vec<Receipt>, DbErr> {
        match self {
            Self::Postgres(writer) => writer.commit(batch).await,
            Self::Sqlite(store) => store.commit(batch),
        }
    }

    /// Whether the batch that just failed failed because the database is
    /// unavailable (unreachable, locked past its timeout), not for what it
    /// carried: then its deliveries are not tried one by one, each would
    /// only wait as long again for the same 503.
    fn down(&self) -> bool {
        match self {
            Self::Postgres(writer) => writer.down(),
            Self::Sqlite(store) => store.down(),
        }
    }

    /// Whether the batch that just failed committed after all (PostgreSQL:
    /// its connection may have broken after the commit; SQLite commits in
    /// the writer's own transaction, so its error is the commit's).
    async fn settle(&mut self, batch: &[store::Input<'_>]) -> store::Settled {
        match self {
            Self::Postgres(writer) => writer.settle(batch).await,
            Self::Sqlite(_) => store::Settled::NotCommitted,
        }
    }
}

async fn run_writer(
    mut store: Store,
    mut rx: mpsc::Receiver<Job>,
    batch: usize,
    publisher: Publisher,
    metrics: IngestMetrics,
) {
    let mut carry = None;
    while let Some(jobs) = next_batch(&mut rx, &mut carry, batch).await {
        commit_and_answer(&mut store, jobs, &publisher, &metrics).await;
    }
}

/// Most body bytes one batch carries (besides its first delivery), so one
/// statement stays a few megabytes at most, whatever the batch limit.
const BATCH_BYTES: usize = 2 * 1024 * 1024;

/// What is queued, without waiting for more: up to `limit` deliveries and
/// [`BATCH_BYTES`] (at least one delivery, however large). A delivery that
/// does not fit waits in `carry` for the next batch, keeping arrival order.
async fn next_batch(
    rx: &mut mpsc::Receiver<Job>,
    carry: &mut Option<Job>,
    limit: usize,
) -> Option<Vec<Job>> {
    let first = match carry.take().filter(awaited) {
        Some(job) => job,
        None => loop {
            let job = rx.recv().await?;
            if awaited(&job) {
                break job;
            }
        },
    };
    let mut bytes = first.delivery.body.len();
    let mut jobs = vec![first];
    while jobs.len() < limit {
        let Ok(job) = rx.try_recv() else { break };
        if !awaited(&job) {
            continue;
        }
        bytes += job.delivery.body.len();
        if bytes > BATCH_BYTES {
            *carry = Some(job);
            break;
        }
        jobs.push(job);
    }
    Some(jobs)
}

/// Whether someone still waits for the job's answer. A sender that gave up
/// while its delivery was queued (its connection closed: a client timeout,
/// the server's drain at shutdown) counts it as failed and sends it again:
/// committing it now, unanswered, would store it with that resend still to
/// come, which can then count again (a `call.initiate` resent after its
/// attempt's outcome opens another attempt). Left out, nothing is stored.
fn awaited(job: &Job) -> bool {
    if job.reply.is_closed() {
        tracing::debug!("a delivery whose sender stopped waiting was dropped before its commit");
        return false;
    }
    true
}

/// Commit a batch; if it fails, commit its deliveries one at a time so one
/// bad delivery cannot fail its neighbours. Every answer follows a commit;
/// subscribers hear of stored (not duplicate) deliveries after it. Every
/// commit is recorded in `metrics` (size and duration), a retried batch too.
async fn commit_and_answer(
    store: &mut Store,
    jobs: Vec<Job>,
    publisher: &Publisher,
    metrics: &IngestMetrics,
) {
    let inputs: Vec<_> = jobs
        .iter()
        .map(|j| (&j.delivery, j.received_at, j.signature_verified))
        .collect();
    let committed = |size: usize, started: std::time::Instant| {
        let took = started.elapsed();
        metrics.batch_size.record(size as f64);
        metrics.commit_duration.record(took.as_secs_f64());
        took
    };
    let started = std::time::Instant::now();
    match store.commit(&inputs).await {
        Ok(receipts) => {
            let took = committed(receipts.len(), started);
            tracing::debug!(
                size = receipts.len(),
                took_us = took.as_micros() as u64,
                "batch committed"
            );
            if receipts.iter().any(|r| !r.duplicate) {
                publisher.committed(store.head());
            }
            for (job, receipt) in jobs.into_iter().zip(receipts) {
                let _ = job.reply.send(Ok(receipt));
            }
        }
        Err(err) => match store.settle(&inputs).await {
            // Committed, its answer lost: answered from what it stored (a
            // duplicate in it, from the copy it duplicates).
            Settled::Committed(receipts) => {
                tracing::warn!(error = %err, size = jobs.len(), "batch failed after its commit; answering from the rows it stored");
                committed(jobs.len(), started);
                publisher.committed(store.head());
                for (job, receipt) in jobs.into_iter().zip(receipts) {
                    let _ = job
                        .reply
                        .send(receipt.ok_or_else(|| IngestError::Unavailable(err.to_string())));
                }
            }
            Settled::Unknown(again) => {
                tracing::error!(error = %err, lookup = %again, size = jobs.len(), "batch failed and whether it committed is unknown");
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err(IngestError::Unavailable(err.to_string())));
                }
            }
            Settled::NotCommitted if jobs.len() > 1 && !store.down() => {
                tracing::warn!(error = %err, size = jobs.len(), "batch failed; committing its deliveries one by one");
                metrics.batches_retried.increment(1);
                let mut down: Option<String> = None;
                for job in jobs {
                    if let Some(err) = &down {
                        let _ = job.reply.send(Err(IngestError::Unavailable(err.clone())));
                        continue;
                    }
                    if !awaited(&job) {
                        continue;
                    }
                    let started = std::time::Instant::now();
                    let input = [(&job.delivery, job.received_at, job.signature_verified)];
                    let result = match store.commit(&input).await {
                        Err(err) => match store.settle(&input).await {
                            Settled::Committed(receipts) => {
                                Ok(receipts.into_iter().flatten().collect())
                            }
                            _ => Err(err),
                        },
                        result => result,
                    };
                    if result.is_ok() {
                        committed(1, started);
                    }
                    if result
                        .as_ref()
                        .is_ok_and(|r| r.iter().any(|r| !r.duplicate))
                    {
                        publisher.committed(store.head());
                    }
                    if let Err(err) = &result
                        && store.down()
                    {
                        // The rest would wait as long for the same answer.
                        down = Some(err.to_string());
                    }
                    let _ = job
                        .reply
                        .send(result.map(|mut r| r.remove(0)).map_err(unavailable));
                }
            }
            Settled::NotCommitted => {
                if jobs.len() > 1 {
                    tracing::warn!(error = %err, size = jobs.len(), "batch failed: the database is unavailable");
                }
                let err = unavailable(err);
                for job in jobs {
                    let _ = job.reply.send(Err(err.clone()));
                }
            }
        },
    }
}

fn unavailable(err: DbErr) -> IngestError {
    tracing::error!(error = %err, "delivery not committed");
    IngestError::Unavailable(err.to_string())
}
