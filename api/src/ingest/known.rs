//! What a PostgreSQL writer knows of the calls routed to it: each call it
//! started, with its state and `version` as its last commit left them, and
//! every delivery stored for it (dedupe needs them all: v1 bytes repeat
//! within an attempt, or anywhere in the call once its lifecycle ended). A
//! batch whose calls are all known (or start with it) skips the load and
//! goes straight to its write, one round trip instead of two. Nothing here
//! has to be true: the write replaces a call only at the version and
//! creation it names and the unique indexes refuse a delivery stored twice,
//! so a call that changed elsewhere (another replica, `calltrail
//! reprocess`, manual SQL) fails the write, which then runs again from a
//! fresh load (`postgres.rs`); and a batch in which a known call would not
//! be written loads it (`store.rs`). Knowledge is only ever learned from a
//! committed batch; a batch that failed for another reason than a lost race
//! forgets its calls.
//!
//! Trusted while loads agree with it: when a load finds a known call at
//! another version or creation than known (someone else wrote it: replicas
//! sharing calls, say), the writer forgets it and loads every batch for
//! the next [`DISTRUST`], as it would without known calls, starting calls
//! still without a load. A wrong guess of a new call (a `call.initiate`
//! retried for a call stored before this writer started, or by another
//! replica) costs its batch a run again, and the call is remembered as
//! stored ([`Known::exists`]), so its next retry is not taken for new.
//!
//! Bounded: [`CAPACITY`] calls shared by a server's writers (~4–5 KB each
//! with `simulate`'s calls: the load benchmark's burst, ~9,600 calls known,
//! added ~43 MB), in two generations of at most half a writer's share each;
//! a call used is moved to the young one, and when that is full the old one
//! is dropped. A call with more stored deliveries than [`MAX_EVENTS`], or
//! metadata larger than [`MAX_METADATA`], is not kept (each of its batches
//! loads it): at most ~20 KB a call, ~200 MB for a full cache of such calls.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::domain::{CallState, StoredEvent};

/// Calls a server's writers keep, at most, together.
pub(super) const CAPACITY: usize = 10_000;

/// Stored deliveries a known call may have.
const MAX_EVENTS: usize = 64;

/// Bytes of metadata (as JSON) a known call may have.
const MAX_METADATA: usize = 4096;

/// How long a writer loads every batch after a load disagreed with it.
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
    /// Calls a load found that are not known (as many as `capacity`).
    exists: HashSet<String>,
    distrusted_until: Option<Instant>,
}

impl Known {
    /// One writer's share of [`CAPACITY`], `writers` sharing it.
    pub(super) fn new(writers: usize) -> Self {
        Self {
            young: HashMap::new(),
            old: HashMap::new(),
            capacity: (CAPACITY / writers.max(1)).max(2),
            exists: HashSet::new(),
            distrusted_until: None,
        }
    }

    /// Whether batches may skip loading what is known (see [`DISTRUST`]).
    pub(super) fn trusted(&self) -> bool {
        self.distrusted_until
            .is_none_or(|until| Instant::now() >= until)
    }

    /// A load found a known call changed: load every batch for a while.
    pub(super) fn distrust(&mut self) {
        self.distrusted_until = Some(Instant::now() + DISTRUST);
    }

    /// The call's entry, if known (it becomes young again).
    pub(super) fn get(&mut self, id: &str) -> Option<&mut Entry> {
        if !self.young.contains_key(id) {
            let entry = self.old.remove(id)?;
            self.place(id.to_owned(), entry);
        }
        self.young.get_mut(id)
    }

    pub(super) fn insert(&mut self, id: String, entry: Entry) {
        if too_big(&entry) {
            self.forget(&id);
            return;
        }
        self.old.remove(&id);
        self.place(id, entry);
    }

    /// Into the young generation (not in the old one), which starts anew
    /// (the old one dropped) when full.
    fn place(&mut self, id: String, entry: Entry) {
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

    /// Whether a load found the call stored (it is not known): a batch
    /// that would start it loads it instead.
    pub(super) fn exists(&self, id: &str) -> bool {
        self.exists.contains(id)
    }

    /// A load found the call stored, and it is not known.
    pub(super) fn found(&mut self, id: &str) {
        if self.exists.len() >= self.capacity {
            self.exists.clear();
        }
        self.exists.insert(id.to_owned());
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
                    if too_big(entry) {
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

/// Whether an entry is past what a known call may hold.
fn too_big(entry: &Entry) -> bool {
    entry.events.len() > MAX_EVENTS
        || (!entry.state.metadata.is_empty()
            && serde_json::to_vec(&entry.state.metadata).map_or(true, |m| m.len() > MAX_METADATA))
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
    fn does_not_keep_a_call_with_large_metadata() {
        let mut known = Known::new(1);
        let mut large = entry("c", 1);
        large
            .state
            .metadata
            .insert("pad".into(), "x".repeat(MAX_METADATA).into());
        known.insert("c".into(), large);
        assert!(known.get("c").is_none());
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
