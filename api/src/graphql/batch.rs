//! DataLoader batches cut by the request's own progress, not by a timer.
//!
//! async-graphql's DataLoader starts a batch a fixed delay after its first
//! key. Resolving a page of 100 calls takes longer than that, so the page's
//! keys were spread over many batches: N+1 again, worse on a busy machine.
//! Here a request's loader only queues its batches; [`run`] polls the
//! execution and starts what it queued once the execution is idle (every
//! resolver that can run has run and waits for data), so each batch holds
//! every key that could be asked for by then.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::Stream;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};

/// The batches a request's loader has queued and not started yet.
#[derive(Clone, Default)]
pub struct Batches(Arc<Mutex<Vec<BoxFuture<'static, ()>>>>);

impl Batches {
    /// The DataLoader's spawner: queue the batch instead of spawning it.
    pub fn spawner(&self) -> impl Fn(BoxFuture<'static, ()>) + Send + Sync + 'static {
        let queue = self.clone();
        move |batch| queue.lock().push(batch)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<BoxFuture<'static, ()>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self) -> Vec<BoxFuture<'static, ()>> {
        std::mem::take(&mut *self.lock())
    }
}

/// Run `execution` and the loader batches it queues, in one task: start
/// what it queued only once it is idle (waiting, and not merely yielding),
/// so each batch holds every key the resolvers could ask for by then.
pub async fn run<F: Future>(execution: F, batches: Batches) -> F::Output {
    let mut execution = pin!(execution);
    let mut running = FuturesUnordered::new();
    std::future::poll_fn(move |cx| {
        poll_cut(cx, &batches, &mut running, |cx| execution.as_mut().poll(cx))
    })
    .await
}

/// [`run`] for a subscription: each message's fields are resolved the same
/// way, so a message's nested fields batch as a query's do.
pub fn run_stream<S: Stream + Unpin>(
    mut stream: S,
    batches: Batches,
) -> impl Stream<Item = S::Item> {
    let mut running = FuturesUnordered::new();
    futures_util::stream::poll_fn(move |cx| {
        poll_cut(cx, &batches, &mut running, |cx| stream.poll_next_unpin(cx))
    })
}

/// Poll `inner` until it is idle, then start the batches it queued; repeat
/// while finished batches can make it progress.
fn poll_cut<T>(
    cx: &mut Context<'_>,
    batches: &Batches,
    running: &mut FuturesUnordered<BoxFuture<'static, ()>>,
    mut inner: impl FnMut(&mut Context<'_>) -> Poll<T>,
) -> Poll<T> {
    let mut yields = 0;
    loop {
        // async-graphql resolves fields and list items in a
        // FuturesUnordered, which yields (wakes itself, returns Pending)
        // once two of them yielded or each was polled once, often before
        // every item asked for its keys: poll again, do not cut there.
        let woke = Arc::new(WokeFlag::new(cx.waker().clone()));
        let waker = Waker::from(woke.clone());
        if let Poll::Ready(output) = inner(&mut Context::from_waker(&waker)) {
            return Poll::Ready(output);
        }
        if woke.get() {
            yields += 1;
            if yields < MAX_YIELDS {
                continue;
            }
            // Still yielding (out of its cooperative budget, say): let
            // the runtime run others; the wake-up brings us back.
            return Poll::Pending;
        }
        running.extend(batches.take());
        let mut finished = false;
        while let Poll::Ready(Some(())) = running.poll_next_unpin(cx) {
            finished = true;
        }
        // A finished batch has answered its resolvers: run them again.
        if !finished {
            return Poll::Pending;
        }
    }
}

/// Re-polls of a yielding execution before handing control back to the runtime.
const MAX_YIELDS: u32 = 64;

/// A waker that remembers being woken, then wakes the task.
struct WokeFlag {
    woke: AtomicBool,
    task: Waker,
}

impl WokeFlag {
    fn new(task: Waker) -> Self {
        Self {
            woke: AtomicBool::new(false),
            task,
        }
    }

    fn get(&self) -> bool {
        self.woke.load(Ordering::Acquire)
    }
}

impl Wake for WokeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woke.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use async_graphql::dataloader::{DataLoader, Loader};

    use super::*;

    /// Wakes itself and returns Pending once, as a busy future does.
    struct YieldOnce(bool);

    impl Future for YieldOnce {
        type Output = ();
        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                return Poll::Ready(());
            }
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// Counts its batches.
    struct Counting(Arc<AtomicUsize>);

    impl Loader<u32> for Counting {
        type Value = u32;
        type Error = ();

        async fn load(&self, keys: &[u32]) -> Result<HashMap<u32, u32>, ()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok(keys.iter().map(|k| (*k, k * 2)).collect())
        }
    }

    /// The mechanics: yielding items still land in one batch per wave, and
    /// every answer reaches its item. (That a timer would have split the
    /// page is shown end to end by the integration test `graphql::cost`.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_key_asked_for_before_the_request_waits_goes_into_one_batch() {
        let batches = Batches::default();
        let count = Arc::new(AtomicUsize::new(0));
        let loader =
            DataLoader::new(Counting(count.clone()), batches.spawner()).delay(Duration::ZERO);
        // Like a page of 100 items: a long join that yields between its
        // passes, each item loading twice in a row (a nested field).
        let items: FuturesUnordered<_> = (0..100u32)
            .map(|i| {
                let loader = &loader;
                async move {
                    YieldOnce(false).await;
                    let first = loader.load_one(i).await.unwrap().unwrap();
                    loader.load_one(first + 1000).await.unwrap().unwrap()
                }
            })
            .collect();
        let sum: u32 = run(items.collect::<Vec<_>>(), batches)
            .await
            .into_iter()
            .sum();
        assert_eq!(sum, (0..100).map(|i| (i * 2 + 1000) * 2).sum::<u32>());
        assert_eq!(
            count.load(Ordering::SeqCst),
            2,
            "one batch per wave of keys"
        );
    }
}
