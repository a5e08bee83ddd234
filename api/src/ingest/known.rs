//! What a PostgreSQL writer knows of the calls routed to it: each call's
//! state and `version` as its last commit left them, and every delivery
//! stored for it (dedupe needs them all: v1 bytes repeat within an attempt,
//! or anywhere in the call once its lifecycle ended). A batch whose calls
//! are all known skips the load and goes straight to its write, one round
//! trip instead of two. Nothing here has to be true: the write replaces a
//! call only at the version it names and the unique indexes refuse a
//! delivery stored twice, so a call that changed elsewhere (another
//! replica, `calltrail reprocess`, manual SQL) fails the write, which then
//! runs again from a fresh load (`postgres.rs`). Knowledge is only ever
//! learned from a committed batch, and a failed batch forgets its calls.
//!
//! Trusted only while it does not fail: a writer whose batch took a known
//! call and lost a race (calls changed elsewhere: replicas sharing calls,
//! say) loads every batch for the next [`DISTRUST`], as it would without
//! it, starting calls still without a load. A wrong guess of a new call
//! (a `call.initiate` retried for a call stored before this writer's start,
//! or by another replica) costs that batch a run again, nothing more.
//!
//! Bounded: [`CAPACITY`] calls shared by a server's writers (~4–5 KB each
//! with `simulate`'s calls: the load benchmark's burst, ~9,600 calls known,
//! added ~43 MB), in two generations of at most half a writer's share each;
//! a call used is moved to the young one, and when that is full the old one
//! is dropped. A call with more stored deliveries than [`MAX_EVENTS`] is not
//! kept (each of its batches loads it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::domain::{CallState, StoredEvent};

/// Calls a server's writers keep, at most, together.
pub(super) const CAPACITY: usize = 10_000;

/// Stored deliveries a known call may have.
const MAX_EVENTS: usize = 256;

/// How long a writer loads every batch after an optimistic one lost a race.
const DISTRUST: Duration = Duration::from_secs(60);

/// A call as the database holds it after this writer's last commit of it.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) state: CallState,
    pub(super) version: i64,
    /// Every delivery stored with this call's id.
    pub(super) events: Vec<StoredEvent>,
}

pub(super) struct Known {
    young: HashMap<String, Entry>,
    old: HashMap<String, Entry>,
    /// Calls at most (twice a generation's).
    capacity: usize,
    distrusted_until: Option<Instant>,
}

impl Known {
    /// One writer's share of [`CAPACITY`], `writers` sharing it.
    pub(super) fn new(writers: usize) -> Self {
        Self {
            young: HashMap::new(),
            old: HashMap::new(),
            capacity: (CAPACITY / writers.max(1)).max(2),
            distrusted_until: None,
        }
    }

    /// Whether batches may skip loading what is known (see [`DISTRUST`]).
    pub(super) fn trusted(&self) -> bool {
        self.distrusted_until
            .is_none_or(|until| Instant::now() >= until)
    }

    /// A batch that took known calls lost a race: load every batch for a
    /// while.
    pub(super) fn distrust(&mut self) {
        self.distrusted_until = Some(Instant::now() + DISTRUST);
    }

    /// The call's entry, if known (it becomes young again).
    pub(super) fn get(&mut self, id: &str) -> Option<&mut Entry> {
        if !self.young.contains_key(id) {
            let entry = self.old.remove(id)?;
            self.insert(id.to_owned(), entry);
        }
        self.young.get_mut(id)
    }

    pub(super) fn insert(&mut self, id: String, entry: Entry) {
        if entry.events.len() > MAX_EVENTS {
            self.forget(&id);
            return;
        }
        self.old.remove(&id);
        if self.young.len() >= self.capacity / 2 && !self.young.contains_key(&id) {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(id, entry);
    }

    pub(super) fn forget(&mut self, id: &str) {
        self.young.remove(id);
        self.old.remove(id);
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.young.contains_key(id) || self.old.contains_key(id)
    }

    /// What a committed batch taught: its calls' new states and versions,
    /// and the deliveries it stored.
    pub(super) fn learn(&mut self, learned: Learned) {
        let Learned {
            priors,
            touched,
            events,
        } = learned;
        let mut touched: HashMap<String, CallState> =
            touched.into_iter().map(|c| (c.id.clone(), c)).collect();
        let mut stored: HashMap<String, Vec<StoredEvent>> = HashMap::new();
        for e in events {
            if let Some(id) = &e.call_id {
                stored.entry(id.clone()).or_default().push(e);
            }
        }
        for (id, prior) in priors {
            let state = touched.remove(&id);
            let new = stored.remove(&id).unwrap_or_default();
            match prior {
                Prior::Known => {
                    let Some(entry) = self.get(&id) else { continue };
                    if let Some(state) = state {
                        entry.state = state;
                        entry.version += 1;
                    }
                    entry.events.extend(new);
                    if entry.events.len() > MAX_EVENTS {
                        self.forget(&id);
                    }
                }
                // Started by this batch: known if it was written.
                Prior::New => {
                    if let Some(state) = state {
                        let entry = Entry {
                            state,
                            version: 1,
                            events: new,
                        };
                        self.insert(id, entry);
                    }
                }
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

/// Where a batch's idea of one of its calls came from.
#[derive(Debug)]
pub(super) enum Prior {
    /// [`Known`] (taken from it, or loaded at the version it knows):
    /// updated in place.
    Known,
    /// Taken to be new (the batch starts it): not loaded, no deliveries
    /// stored for it. If it was there after all, the write fails on its
    /// version.
    New,
}

/// What a batch knows of its calls before it is applied, and what it
/// wrote: for [`Known::learn`] once it is committed.
#[derive(Debug, Default)]
pub(super) struct Learned {
    pub(super) priors: Vec<(String, Prior)>,
    /// The calls the batch wrote, in their new state.
    pub(super) touched: Vec<CallState>,
    /// The deliveries it stored, with their ids.
    pub(super) events: Vec<StoredEvent>,
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn entry(id: &str, events: usize) -> Entry {
        Entry {
            state: CallState::new(id.to_owned(), Utc::now()),
            version: 1,
            events: (0..events as i64)
                .map(|n| StoredEvent {
                    id: n,
                    call_id: Some(id.to_owned()),
                    attempt_number: Some(1),
                    dedupe_key: format!("k{n}"),
                })
                .collect(),
        }
    }

    #[test]
    fn keeps_at_most_its_capacity_and_the_calls_used_last() {
        let mut known = Known::new(1);
        known.insert("kept".into(), entry("kept", 1));
        for n in 0..CAPACITY * 2 {
            known.insert(format!("c{n}"), entry("c", 1));
            // Used all along: never the one dropped.
            assert!(known.get("kept").is_some(), "after {n}");
            assert!(known.len() <= CAPACITY, "{} after {n}", known.len());
        }
        assert!(known.get("c0").is_none(), "the oldest are dropped");
        let last = format!("c{}", CAPACITY * 2 - 1);
        assert!(known.get(&last).is_some(), "the newest are kept");
        let mut shared = Known::new(4);
        for n in 0..CAPACITY {
            shared.insert(format!("c{n}"), entry("c", 1));
        }
        assert!(
            shared.len() <= CAPACITY / 4,
            "{}: a quarter each",
            shared.len()
        );
    }

    #[test]
    fn forgets_a_call_with_too_many_deliveries() {
        let mut known = Known::new(1);
        known.insert("c".into(), entry("c", 1));
        known.insert("c".into(), entry("c", MAX_EVENTS + 1));
        assert!(known.get("c").is_none());
        known.insert("c".into(), entry("c", MAX_EVENTS));
        known.forget("c");
        assert!(known.get("c").is_none());
    }
}
