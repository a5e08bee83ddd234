//! One subscription's stream: the log after its cursor, then live, with no
//! gap and no repeat at the seam; dropped with the cursor to resume from when
//! it falls more than the bus's buffer behind.

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::Stream;
use sea_orm::DatabaseConnection;
use tokio::sync::broadcast::{self, error::RecvError};

use super::Active;
use crate::service::ServiceError;
use crate::service::live::{self, LiveEvent, LiveFilter};

/// Deliveries read from the log per query while replaying.
const REPLAY_PAGE: u64 = 100;

/// Where a feed starts.
#[derive(Clone, Copy, Debug)]
pub enum Start {
    /// Replay what committed after this position, then go live.
    After(i64),
    /// Live from this position (the last one the bus broadcast).
    Live(i64),
}

/// Why a feed ended early.
#[derive(Clone, Debug, thiserror::Error)]
pub enum FeedError {
    /// The subscriber read too slowly; `resume_after` is the cursor position
    /// of the last delivery it was sent.
    #[error("this subscription fell too far behind and was dropped")]
    TooSlow { resume_after: i64 },
    #[error(transparent)]
    Read(#[from] ServiceError),
}

pub struct Feed {
    db: DatabaseConnection,
    receiver: broadcast::Receiver<Arc<LiveEvent>>,
    filter: LiveFilter,
    /// Position of the last delivery sent (or the resume cursor).
    last: i64,
    replaying: bool,
    /// Started with a replay (`after`).
    resumed: bool,
    /// Whether a live delivery was sent since the last replay began.
    live_sent: bool,
    pending: VecDeque<Arc<LiveEvent>>,
    done: bool,
    _active: Active,
}

impl Feed {
    pub(super) fn new(
        db: DatabaseConnection,
        receiver: broadcast::Receiver<Arc<LiveEvent>>,
        filter: LiveFilter,
        start: Start,
        active: Active,
    ) -> Self {
        let (last, resumed) = match start {
            Start::After(p) => (p, true),
            Start::Live(p) => (p, false),
        };
        Self {
            db,
            receiver,
            filter,
            last,
            replaying: resumed,
            resumed,
            live_sent: false,
            pending: VecDeque::new(),
            done: false,
            _active: active,
        }
    }

    /// The next delivery for this subscriber; None when the server stops.
    pub async fn next(&mut self) -> Option<Result<Arc<LiveEvent>, FeedError>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.last = event.event.seq;
                return Some(Ok(event));
            }
            if self.replaying {
                match live::after(&self.db, self.last, &self.filter, REPLAY_PAGE).await {
                    Ok(page) => {
                        // A short page: caught up with everything committed
                        // before the subscription; the receiver has the rest.
                        self.replaying = page.len() as u64 == REPLAY_PAGE;
                        self.pending.extend(page.into_iter().map(Arc::new));
                    }
                    Err(err) => {
                        self.done = true;
                        return Some(Err(err.into()));
                    }
                }
                continue;
            }
            match self.receiver.recv().await {
                Ok(event) => {
                    if event.event.seq > self.last && self.filter.matches(&event.event) {
                        self.live_sent = true;
                        self.pending.push_back(event);
                    }
                }
                Err(RecvError::Lagged(_)) if self.resumed && !self.live_sent => {
                    // Fell behind while replaying (our reads, not the
                    // subscriber's pace): read the log again from where we are.
                    self.receiver = self.receiver.resubscribe();
                    self.replaying = true;
                }
                Err(RecvError::Lagged(_)) => {
                    self.done = true;
                    return Some(Err(FeedError::TooSlow {
                        resume_after: self.last,
                    }));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// The feed as a stream.
    pub fn into_stream(self) -> impl Stream<Item = Result<Arc<LiveEvent>, FeedError>> + Send {
        futures_util::stream::unfold(self, |mut feed| async move {
            feed.next().await.map(|item| (item, feed))
        })
    }
}
