//! A batch of deliveries applied in memory: dedupe (CONTRACT §2: v1 bytes
//! scoped to the call's current attempt, or to the whole call once its
//! lifecycle ended; a v2 event id anywhere) and the lifecycle rules, over
//! states loaded by the writer. What it
//! collects is written in one transaction. Pure, so the same code is what the
//! property tests drive.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::apply::action_row;
use super::{ActionRow, AnalysisRow, AttemptState, CallState, Delivery, Effect, EventKind, Format};

/// A delivery already in the raw log, as dedupe needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub id: i64,
    pub call_id: Option<String>,
    pub attempt_number: Option<i32>,
    pub dedupe_key: String,
}

/// Which stored delivery a duplicate repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventRef {
    /// Committed before this batch.
    Stored(i64),
    /// Stored by this batch: index into [`Changes::events`].
    New(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Stored(usize),
    Duplicate(EventRef),
}

/// A raw-log row this batch adds.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub received_at: DateTime<Utc>,
    pub format: Format,
    pub event_type: String,
    pub call_id: Option<String>,
    pub attempt_number: Option<i32>,
    pub dedupe_key: String,
    /// The platform's event id (v2); unique in the raw log.
    pub upstream_id: Option<String>,
    pub signature_verified: bool,
    pub recognized: bool,
    /// `applied`, `unrecognized` or `no_call`.
    pub outcome: &'static str,
    pub body: String,
}

/// Everything a batch writes. Calls and attempts hold their final state;
/// analyses and actions point at their event by index into `events`.
#[derive(Debug, Default)]
pub struct Changes {
    pub events: Vec<NewEvent>,
    pub calls: Vec<CallState>,
    pub attempts: Vec<(String, AttemptState)>,
    pub analyses: Vec<(usize, AnalysisRow)>,
    pub actions: Vec<(usize, ActionRow)>,
}

/// A delivery with a given dedupe key: which one, its call and its attempt.
type Seen = (EventRef, Option<String>, Option<i32>);

#[derive(Debug, Default)]
pub struct Projection {
    calls: HashMap<String, CallState>,
    /// Stored and new deliveries by dedupe key.
    seen: HashMap<String, Vec<Seen>>,
    touched: Vec<String>,
    closed_attempts: Vec<(String, AttemptState)>,
    analyses: HashMap<(String, i32), (usize, AnalysisRow)>,
    events: Vec<NewEvent>,
    actions: Vec<(usize, ActionRow)>,
}

impl Projection {
    /// Start from the loaded states of the batch's calls and the stored
    /// deliveries sharing a dedupe key with one of the batch.
    pub fn new(
        calls: impl IntoIterator<Item = CallState>,
        stored: impl IntoIterator<Item = StoredEvent>,
    ) -> Self {
        let mut this = Self {
            calls: calls.into_iter().map(|c| (c.id.clone(), c)).collect(),
            ..Self::default()
        };
        for e in stored {
            this.seen.entry(e.dedupe_key).or_default().push((
                EventRef::Stored(e.id),
                e.call_id,
                e.attempt_number,
            ));
        }
        this
    }

    /// Forget what a batch would write (raw bodies, rows), keeping the
    /// calls' states and the dedupe keys: for readers that only follow state.
    pub fn forget_changes(&mut self) {
        self.events.clear();
        self.actions.clear();
        self.analyses.clear();
        self.closed_attempts.clear();
        self.touched.clear();
    }

    pub fn call(&self, id: &str) -> Option<&CallState> {
        self.calls.get(id)
    }

    /// Dedupe one delivery and, unless it is a duplicate, apply it.
    pub fn accept(
        &mut self,
        d: Delivery,
        received_at: DateTime<Utc>,
        signature_verified: bool,
    ) -> Decision {
        let recognized = d.kind != EventKind::Unknown;
        let call = d.call_id.as_deref().and_then(|id| self.calls.get(id));
        // The attempt this delivery belongs to; None when it has no call to
        // belong to. A call created by this delivery starts at attempt 1.
        let attempt = match (&d.call_id, call) {
            (Some(_), Some(call)) => Some(call.target_attempt(d.kind)),
            (Some(_), None) if recognized => Some(1),
            _ => None,
        };
        let whole_call = call.is_some_and(|c| c.lifecycle_ended) || d.call_id.is_none();
        // A v2 event id names one event wherever it was stored: its retries
        // repeat it, whatever their bytes. v1 bytes repeat within their scope.
        let anywhere = d.upstream_id.is_some();
        // A copy stored for a call before the call existed has no attempt
        // (a delivery of an unknown type starts no call): it belongs to the
        // attempt the call then started with, the first.
        let first = |call_id: &Option<String>, n: Option<i32>| n.or(call_id.as_ref().map(|_| 1));
        if let Some(hit) = self.seen.get(&d.dedupe_key).and_then(|seen| {
            seen.iter().find(|(_, call_id, n)| {
                anywhere
                    || (*call_id == d.call_id
                        && (whole_call || first(call_id, *n) == first(&d.call_id, attempt)))
            })
        }) {
            return Decision::Duplicate(hit.0);
        }

        let index = self.events.len();
        let outcome = match (&d.call_id, recognized, d.kind) {
            (_, false, _) => "unrecognized",
            (None, true, EventKind::Action) => "applied",
            (None, true, _) => "no_call",
            (Some(_), true, _) => "applied",
        };
        match (&d.call_id, recognized) {
            (Some(id), true) => self.apply(id.clone(), &d, index, received_at),
            (None, true) if d.kind == EventKind::Action => {
                self.actions.push((index, action_row(&d, received_at)))
            }
            _ => {}
        }
        let attempt = match &d.call_id {
            Some(id) => self.calls.get(id).map(|c| c.current.number).or(attempt),
            None => None,
        };
        self.seen.entry(d.dedupe_key.clone()).or_default().push((
            EventRef::New(index),
            d.call_id.clone(),
            attempt,
        ));
        self.events.push(NewEvent {
            received_at,
            format: d.format,
            event_type: d.event_type,
            call_id: d.call_id,
            attempt_number: attempt,
            dedupe_key: d.dedupe_key,
            upstream_id: d.upstream_id,
            signature_verified,
            recognized,
            outcome,
            body: d.body,
        });
        Decision::Stored(index)
    }

    fn apply(&mut self, id: String, d: &Delivery, index: usize, now: DateTime<Utc>) {
        if !self.calls.contains_key(&id) {
            self.calls
                .insert(id.clone(), CallState::new(id.clone(), now));
        }
        if !self.touched.contains(&id) {
            self.touched.push(id.clone());
        }
        let call = self.calls.get_mut(&id).expect("inserted above");
        let (closed, effect) = call.apply(d, now);
        if let Some(closed) = closed {
            self.closed_attempts.push((id, closed));
        }
        match effect {
            Effect::None => {}
            Effect::Analysis(row) => {
                self.analyses
                    .insert((row.call_id.clone(), row.attempt_number), (index, row));
            }
            Effect::Action(row) => self.actions.push((index, row)),
        }
    }

    /// What to write: each touched call once, in its final state, with every
    /// attempt the batch closed or changed.
    pub fn into_changes(mut self) -> Changes {
        let calls: Vec<CallState> = self
            .touched
            .iter()
            .filter_map(|id| self.calls.remove(id))
            .collect();
        let mut attempts = self.closed_attempts;
        attempts.extend(calls.iter().map(|c| (c.id.clone(), c.current.clone())));
        let mut analyses: Vec<_> = self.analyses.into_values().collect();
        analyses.sort_by_key(|(index, _)| *index);
        Changes {
            events: self.events,
            calls,
            attempts,
            analyses,
            actions: self.actions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CallStatus, parse};
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000, 0).unwrap()
    }

    fn fixture(name: &str) -> Vec<Delivery> {
        let dir = if name.starts_with("v2/") { "" } else { "v1/" };
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(format!("{dir}{name}"));
        let raw = std::fs::read_to_string(path).unwrap();
        raw.lines()
            .filter(|l| !l.is_empty())
            .map(|l| parse(l.as_bytes()).unwrap())
            .collect()
    }

    fn ingest_all(p: &mut Projection, ds: &[Delivery]) -> Vec<Decision> {
        ds.iter()
            .map(|d| p.accept(d.clone(), now(), true))
            .collect()
    }

    #[test]
    fn retries_with_identical_initiate_bytes_open_new_attempts() {
        let ds = fixture("retry-no-answer-busy.jsonl");
        assert_eq!(
            ds[0].body, ds[2].body,
            "the fixture resends call.initiate byte for byte"
        );
        let mut p = Projection::default();
        let decisions = ingest_all(&mut p, &ds);
        assert!(decisions.iter().all(|d| matches!(d, Decision::Stored(_))));
        let call = p.call("c_91b0d3c4-retry").unwrap();
        assert_eq!(
            (call.current.number, call.status()),
            (3, CallStatus::Completed)
        );
        let changes = p.into_changes();
        let statuses: Vec<_> = changes
            .attempts
            .iter()
            .map(|(_, a)| (a.number, a.status))
            .collect();
        assert_eq!(
            statuses,
            [
                (1, CallStatus::NoAnswer),
                (2, CallStatus::Busy),
                (3, CallStatus::Completed)
            ]
        );
        assert_eq!(changes.actions.len(), 1);
        assert_eq!(changes.analyses.len(), 1);
    }

    #[test]
    fn a_resent_delivery_of_the_current_attempt_is_a_duplicate_of_the_first() {
        let ds = fixture("happy-path.jsonl");
        let mut p = Projection::default();
        ingest_all(&mut p, &ds[..3]);
        assert_eq!(
            p.accept(ds[2].clone(), now(), true),
            Decision::Duplicate(EventRef::New(2))
        );
        assert_eq!(p.into_changes().actions.len(), 1);
    }

    #[test]
    fn an_unknown_type_resent_after_its_call_started_is_a_duplicate() {
        let unknown =
            parse(br#"{"event":{"type":"call.transferred","data":{"call":{"id":"c_u"}}}}"#)
                .unwrap();
        let initiate =
            parse(br#"{"event":{"type":"call.initiate","data":{"call":{"id":"c_u"}}}}"#).unwrap();
        let mut p = Projection::default();
        assert_eq!(p.accept(unknown.clone(), now(), true), Decision::Stored(0));
        assert_eq!(p.accept(initiate, now(), true), Decision::Stored(1));
        assert_eq!(
            p.accept(unknown, now(), true),
            Decision::Duplicate(EventRef::New(0)),
            "stored before its call existed, it belongs to the call's first attempt"
        );
    }

    #[test]
    fn after_the_lifecycle_ended_the_scope_is_the_whole_call() {
        let ds = fixture("retry-no-answer-busy.jsonl");
        let mut p = Projection::default();
        ingest_all(&mut p, &ds);
        assert_eq!(
            p.accept(ds[0].clone(), now(), true),
            Decision::Duplicate(EventRef::New(0))
        );
        assert_eq!(
            p.accept(ds[1].clone(), now(), true),
            Decision::Duplicate(EventRef::New(1))
        );
    }

    #[test]
    fn stored_events_from_earlier_batches_dedupe_too() {
        let ds = fixture("happy-path.jsonl");
        let mut first = Projection::default();
        ingest_all(&mut first, &ds[..2]);
        let state = first.call("c_7f3e2a90-happy").unwrap().clone();
        let stored = [StoredEvent {
            id: 41,
            call_id: state.id.clone().into(),
            attempt_number: Some(1),
            dedupe_key: ds[1].dedupe_key.clone(),
        }];
        let mut second = Projection::new([state], stored);
        assert_eq!(
            second.accept(ds[1].clone(), now(), true),
            Decision::Duplicate(EventRef::Stored(41))
        );
    }

    #[test]
    fn deliveries_without_a_call_are_kept_and_actions_still_become_actions() {
        let orphan =
            parse(br#"{"event":{"type":"action","data":{"action":"send_whatsapp"}}}"#).unwrap();
        let lost = parse(br#"{"event":{"type":"call.ended","data":{}}}"#).unwrap();
        let unknown =
            parse(br#"{"event":{"type":"call.transferred","data":{"call":{"id":"c9"}}}}"#).unwrap();
        let mut p = Projection::default();
        for d in [&orphan, &lost, &unknown] {
            assert!(matches!(
                p.accept(d.clone(), now(), false),
                Decision::Stored(_)
            ));
        }
        assert!(matches!(
            p.accept(orphan, now(), false),
            Decision::Duplicate(_)
        ));
        let changes = p.into_changes();
        let outcomes: Vec<_> = changes
            .events
            .iter()
            .map(|e| (e.outcome, e.recognized))
            .collect();
        assert_eq!(
            outcomes,
            [
                ("applied", true),
                ("no_call", true),
                ("unrecognized", false)
            ]
        );
        assert!(changes.calls.is_empty(), "an unknown type creates no call");
        assert_eq!(changes.actions[0].1.call_id, None);
    }

    #[test]
    fn a_v2_retry_is_a_duplicate_by_its_id_whatever_its_bytes_or_scope() {
        let ds = fixture("v2/completed.jsonl");
        let retry = parse(
            &std::fs::read(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../tests/fixtures/v2/completed-retry.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let mut p = Projection::default();
        ingest_all(&mut p, &ds);
        assert_eq!(
            p.accept(retry.clone(), now(), true),
            Decision::Duplicate(EventRef::New(2))
        );
        // Stored by an earlier batch, under any call: still the same event.
        let stored = StoredEvent {
            id: 9,
            call_id: Some("another call".into()),
            attempt_number: Some(4),
            dedupe_key: retry.dedupe_key.clone(),
        };
        let mut later = Projection::new([], [stored]);
        assert_eq!(
            later.accept(retry, now(), true),
            Decision::Duplicate(EventRef::Stored(9))
        );
        assert_eq!(p.into_changes().events.len(), 3);
    }

    #[test]
    fn every_distinct_v2_event_is_stored_and_each_call_keeps_one_attempt() {
        let mut p = Projection::default();
        for file in [
            "v2/completed.jsonl",
            "v2/failed.jsonl",
            "v2/voicemail.jsonl",
        ] {
            let ds = fixture(file);
            assert!(
                ingest_all(&mut p, &ds)
                    .iter()
                    .all(|d| matches!(d, Decision::Stored(_)))
            );
        }
        let changes = p.into_changes();
        assert_eq!(changes.events.len(), 3 + 8 + 3);
        assert!(changes.events.iter().all(|e| e.upstream_id.is_some()));
        assert!(
            changes
                .calls
                .iter()
                .all(|c| c.lifecycle_ended && c.current.number == 1)
        );
    }

    fn one_attempt_sequences() -> impl Strategy<Value = Vec<Delivery>> {
        let happy = fixture("happy-path.jsonl");
        let retry = fixture("retry-no-answer-busy.jsonl");
        let resched = fixture("rescheduled-then-invalid.jsonl");
        let v2 = fixture("v2/completed.jsonl");
        let voicemail = fixture("v2/voicemail.jsonl");
        prop_oneof![
            Just(happy),
            // The third attempt of the retry fixture, after its own initiate.
            Just(retry[4..].to_vec()),
            Just(resched[..3].iter().chain(&resched[5..]).cloned().collect()),
            Just(v2),
            Just(voicemail),
        ]
    }

    fn state_after(ds: &[Delivery]) -> (CallState, Vec<(usize, AnalysisRow)>, usize) {
        let mut p = Projection::default();
        ingest_all(&mut p, ds);
        let id = ds[0].call_id.clone().unwrap();
        let call = p.call(&id).unwrap().clone();
        let changes = p.into_changes();
        let analyses = changes.analyses.into_iter().map(|(_, a)| (0, a)).collect();
        (call, analyses, changes.actions.len())
    }

    proptest! {
        #[test]
        fn any_order_of_one_attempt_after_its_initiate_ends_in_the_same_state(
            (ds, order) in one_attempt_sequences().prop_flat_map(|ds| {
                let n = ds.len() - 1;
                (Just(ds), Just((1..=n).collect::<Vec<_>>()).prop_shuffle())
            })
        ) {
            let shuffled: Vec<Delivery> = std::iter::once(ds[0].clone()).chain(order.iter().map(|&i| ds[i].clone())).collect();
            prop_assert_eq!(state_after(&shuffled), state_after(&ds));
        }

        #[test]
        fn applying_any_delivery_twice_changes_nothing(
            (ds, i) in one_attempt_sequences().prop_flat_map(|ds| { let n = ds.len(); (Just(ds), 0..n) })
        ) {
            let mut twice = ds.clone();
            twice.insert(i + 1, ds[i].clone());
            prop_assert_eq!(state_after(&twice), state_after(&ds));
        }
    }
}
