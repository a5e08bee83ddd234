//! The lifecycle rules (CONTRACT §2 "Attempts"): how one delivery changes a
//! call and its current attempt. Every rule lives here and nowhere else.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{ACTION_PENDING, CallFields, CallStatus, Cost, Delivery, EventKind};

/// A call as the projection needs it: the call row and its latest attempt
/// (every delivery applies to the latest attempt, so older ones never change).
#[derive(Clone, Debug, PartialEq)]
pub struct CallState {
    pub id: String,
    pub metadata: Map<String, Value>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<f64>,
    pub recording_url: Option<String>,
    pub detail_url: Option<String>,
    pub re_attempt_count: Option<i32>,
    pub rescheduled_count: Option<i32>,
    pub final_status: Option<String>,
    pub lifecycle_ended: bool,
    /// `success` of the latest analysis.
    pub success: Option<bool>,
    pub credits_used: Option<f64>,
    /// The number dialled (v2 `to`).
    pub to: Option<String>,
    /// The platform's agent that placed the call (v2 `agent_id`).
    pub agent_id: Option<String>,
    /// Why the call ended (v2 `ended_reason`).
    pub ended_reason: Option<String>,
    /// What the call cost (v2 `cost`), as last reported.
    pub cost: Option<Cost>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_event_at: DateTime<Utc>,
    /// The latest attempt; `current.number` is the call's attempt count.
    pub current: AttemptState,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AttemptState {
    pub number: i32,
    pub status: CallStatus,
    pub connected: bool,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<f64>,
    pub recording_url: Option<String>,
    pub detail_url: Option<String>,
    /// Credits of this attempt's analysis, so a replaced analysis is not counted twice.
    pub credits_used: Option<f64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A row a delivery adds besides the call and attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    None,
    Analysis(AnalysisRow),
    Action(ActionRow),
}

#[derive(Clone, Debug, PartialEq)]
pub struct AnalysisRow {
    pub call_id: String,
    pub attempt_number: i32,
    pub success: Option<bool>,
    pub summary: Option<String>,
    pub required_actions: Vec<String>,
    pub insights: Option<Value>,
    pub outcome: Option<Value>,
    pub credits_used: Option<f64>,
    pub credits_available: Option<f64>,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ActionRow {
    pub call_id: Option<String>,
    pub attempt_number: Option<i32>,
    pub kind: String,
    pub reason: Option<String>,
    pub payload: Option<Value>,
    pub status: &'static str,
    pub created_at: DateTime<Utc>,
}

impl AttemptState {
    pub fn new(number: i32, now: DateTime<Utc>) -> Self {
        Self {
            number,
            status: CallStatus::Initiate,
            connected: false,
            started_at: None,
            ended_at: None,
            duration_seconds: None,
            recording_url: None,
            detail_url: None,
            credits_used: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// Forward only; once an outcome is reached a different outcome does not replace it.
    fn advance(&mut self, to: CallStatus) {
        if to.rank() > self.status.rank() {
            self.status = to;
        }
    }

    /// Fields a delivery of stage `at` carries are taken; absent ones never
    /// clear a value. A late delivery (an earlier stage than the attempt has
    /// reached: `call.ended` after `call.completed`) only fills what is still
    /// empty, so it does not move the attempt's times back either.
    fn take_fields(&mut self, f: &CallFields, at: CallStatus) {
        let late = at.rank() < self.status.rank();
        fill_unless(late, &mut self.started_at, &f.started_at);
        fill_unless(late, &mut self.ended_at, &f.ended_at);
        fill_unless(late, &mut self.duration_seconds, &f.duration_seconds);
        fill_unless(late, &mut self.recording_url, &f.recording_url);
        fill_unless(late, &mut self.detail_url, &f.detail_url);
    }
}

fn fill<T: Clone>(slot: &mut Option<T>, value: &Option<T>) {
    if value.is_some() {
        slot.clone_from(value);
    }
}

/// [`fill`]; when `late`, only an empty slot.
fn fill_unless<T: Clone>(late: bool, slot: &mut Option<T>, value: &Option<T>) {
    if !late || slot.is_none() {
        fill(slot, value);
    }
}

impl CallState {
    /// A call first seen now: attempt 1, not yet dialled.
    pub fn new(id: String, now: DateTime<Utc>) -> Self {
        Self {
            id,
            metadata: Map::new(),
            started_at: None,
            ended_at: None,
            duration_seconds: None,
            recording_url: None,
            detail_url: None,
            re_attempt_count: None,
            rescheduled_count: None,
            final_status: None,
            lifecycle_ended: false,
            success: None,
            credits_used: None,
            to: None,
            agent_id: None,
            ended_reason: None,
            cost: None,
            created_at: now,
            updated_at: now,
            last_event_at: now,
            current: AttemptState::new(1, now),
        }
    }

    pub fn status(&self) -> CallStatus {
        self.current.status
    }

    /// The attempt a delivery of this kind belongs to: `call.initiate` opens
    /// the next one once the current attempt has an outcome (and the
    /// lifecycle has not ended); everything else belongs to the current one,
    /// every v2 delivery included (v2 makes one attempt per call).
    pub fn target_attempt(&self, kind: EventKind) -> i32 {
        if self.opens_attempt(kind) {
            self.current.number + 1
        } else {
            self.current.number
        }
    }

    fn opens_attempt(&self, kind: EventKind) -> bool {
        kind == EventKind::Initiate && self.current.status.is_outcome() && !self.lifecycle_ended
    }

    /// Apply one (non-duplicate, recognized) delivery of this call. Returns
    /// the attempt that was opened before it, if any, so it can be written,
    /// and the row the delivery adds.
    pub fn apply(&mut self, d: &Delivery, now: DateTime<Utc>) -> (Option<AttemptState>, Effect) {
        let next = AttemptState::new(self.current.number + 1, now);
        let closed = self
            .opens_attempt(d.kind)
            .then(|| std::mem::replace(&mut self.current, next));
        if let Some(metadata) = &d.metadata {
            self.metadata
                .extend(metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        self.updated_at = now;
        self.last_event_at = now;
        // Only lifecycle events touch the attempt (actions and the final
        // report do not).
        if let Some(status) = d.kind.status() {
            let attempt = &mut self.current;
            attempt.updated_at = now;
            attempt.take_fields(&d.call, status);
            attempt.advance(status);
            attempt.connected |= d.kind.connects();
            self.lift_attempt_fields();
            self.take_call_fields(&d.call);
        }

        let effect = match d.kind {
            EventKind::EndOfCall => Effect::Analysis(self.take_analysis(d, now)),
            EventKind::LifecycleEnded => {
                self.end_lifecycle(d);
                Effect::None
            }
            EventKind::Terminal(status) => {
                self.end_v2_lifecycle(d, status);
                Effect::None
            }
            EventKind::Action => Effect::Action(self.action(d, now)),
            _ => Effect::None,
        };
        (closed, effect)
    }

    /// Call-level fields come from the latest attempt that has them.
    fn lift_attempt_fields(&mut self) {
        let a = &self.current;
        fill(&mut self.started_at, &a.started_at);
        fill(&mut self.ended_at, &a.ended_at);
        fill(&mut self.duration_seconds, &a.duration_seconds);
        fill(&mut self.recording_url, &a.recording_url);
        fill(&mut self.detail_url, &a.detail_url);
    }

    /// Fields only the call has (v2's): taken when sent, never cleared.
    fn take_call_fields(&mut self, f: &CallFields) {
        fill(&mut self.to, &f.to);
        fill(&mut self.agent_id, &f.agent_id);
        fill(&mut self.ended_reason, &f.ended_reason);
        if let Some(cost) = &f.cost {
            let slot = self.cost.get_or_insert_with(|| cost.clone());
            fill(&mut slot.amount, &cost.amount);
            fill(&mut slot.per_minute, &cost.per_minute);
            slot.currency.clone_from(&cost.currency);
        }
    }

    fn take_analysis(&mut self, d: &Delivery, now: DateTime<Utc>) -> AnalysisRow {
        let analysis = d.analysis.clone().unwrap_or_default();
        let credits = d.credits.clone().unwrap_or_default();
        // One analysis per attempt: a second one replaces the first, credits included.
        let previous = self
            .current
            .credits_used
            .replace(credits.used.unwrap_or(0.0));
        if credits.used.is_some() || previous.is_some() || self.credits_used.is_some() {
            let total = self.credits_used.unwrap_or(0.0) - previous.unwrap_or(0.0)
                + credits.used.unwrap_or(0.0);
            self.credits_used = Some((total * 1e6).round() / 1e6);
        }
        self.success = analysis.success;
        AnalysisRow {
            call_id: self.id.clone(),
            attempt_number: self.current.number,
            success: analysis.success,
            summary: analysis.summary,
            required_actions: analysis.required_actions,
            insights: analysis.insights,
            outcome: analysis.outcome,
            credits_used: credits.used,
            credits_available: credits.available,
            created_at: now,
        }
    }

    fn end_lifecycle(&mut self, d: &Delivery) {
        self.lifecycle_ended = true;
        if let Some(report) = &d.report {
            fill(&mut self.re_attempt_count, &report.re_attempt_count);
            fill(&mut self.rescheduled_count, &report.rescheduled_count);
            fill(&mut self.final_status, &report.final_status);
        }
    }

    /// A v2 terminal event is also the call's final report: v2 sends exactly
    /// one per call and never retries or reschedules, so no attempt follows,
    /// and the counts are zero. The final status is the platform's word
    /// (`completed`, `no_answer`, …), or the status when it sent none.
    fn end_v2_lifecycle(&mut self, d: &Delivery, status: CallStatus) {
        self.lifecycle_ended = true;
        self.re_attempt_count = Some(0);
        self.rescheduled_count = Some(0);
        self.final_status = Some(
            d.call
                .status
                .clone()
                .unwrap_or_else(|| status.as_str().to_lowercase()),
        );
    }

    fn action(&self, d: &Delivery, now: DateTime<Utc>) -> ActionRow {
        let mut row = action_row(d, now);
        row.attempt_number = Some(self.current.number);
        row
    }
}

/// The action a delivery asks for, whether or not it names a call.
pub(crate) fn action_row(d: &Delivery, now: DateTime<Utc>) -> ActionRow {
    let fields = d.action.clone();
    ActionRow {
        call_id: d.call_id.clone(),
        attempt_number: None,
        kind: fields
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), |a| a.kind.clone()),
        reason: fields.as_ref().and_then(|a| a.reason.clone()),
        payload: fields.and_then(|a| a.payload),
        status: ACTION_PENDING,
        created_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::parse;

    fn at(s: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + i64::from(s), 0).unwrap()
    }

    fn delivery(kind: &str, extra: &str) -> Delivery {
        let body =
            format!(r#"{{"event":{{"type":"{kind}","data":{{"call":{{"id":"c1"{extra}}}}}}}}}"#);
        parse(body.as_bytes()).unwrap()
    }

    fn run(kinds: &[&str]) -> CallState {
        let mut call = CallState::new("c1".into(), at(0));
        for (i, k) in kinds.iter().enumerate() {
            call.apply(&delivery(k, ""), at(i as u32 + 1));
        }
        call
    }

    #[test]
    fn the_happy_path_ends_completed_on_one_attempt() {
        let call = run(&[
            "call.initiate",
            "call.in-progress",
            "call.ended",
            "call.completed",
            "end-of-call",
        ]);
        assert_eq!(
            (call.status(), call.current.number, call.current.connected),
            (CallStatus::Completed, 1, true)
        );
    }

    #[test]
    fn an_initiate_after_an_outcome_opens_the_next_attempt() {
        let call = run(&[
            "call.initiate",
            "call.no-answer",
            "call.initiate",
            "call.busy",
            "call.initiate",
            "call.in-progress",
        ]);
        assert_eq!(
            (call.current.number, call.status()),
            (3, CallStatus::InProgress)
        );
    }

    #[test]
    fn an_initiate_before_an_outcome_stays_on_the_current_attempt() {
        let call = run(&["call.initiate", "call.in-progress", "call.initiate"]);
        assert_eq!(
            (call.current.number, call.status()),
            (1, CallStatus::InProgress)
        );
    }

    #[test]
    fn statuses_never_move_backwards_and_the_first_outcome_stays() {
        let call = run(&["call.initiate", "call.completed", "call.in-progress"]);
        assert_eq!(call.status(), CallStatus::Completed);
        let call = run(&[
            "call.initiate",
            "call.timeout",
            "call.failed",
            "call.completed",
        ]);
        assert_eq!(call.status(), CallStatus::Timeout);
    }

    #[test]
    fn a_call_whose_first_delivery_is_not_initiate_gets_attempt_one() {
        let call = run(&["call.ended"]);
        assert_eq!((call.current.number, call.status()), (1, CallStatus::Ended));
    }

    #[test]
    fn no_attempt_follows_the_end_of_the_lifecycle() {
        let mut call = run(&["call.initiate", "call.no-answer"]);
        let end = parse(br#"{"event":{"type":"call.lifecycle-ended","data":{"call":{"id":"c1"},"report":{"reAttemptCount":0,"rescheduledCount":0,"finalStatus":"no-answer"}}}}"#).unwrap();
        call.apply(&end, at(9));
        assert_eq!(call.target_attempt(EventKind::Initiate), 1);
        assert!(call.lifecycle_ended);
        assert_eq!(call.final_status.as_deref(), Some("no-answer"));
        assert_eq!(call.status(), CallStatus::NoAnswer);
    }

    #[test]
    fn call_fields_come_from_the_latest_attempt_that_has_them() {
        let mut call = CallState::new("c1".into(), at(0));
        call.apply(&delivery("call.initiate", ""), at(1));
        call.apply(
            &delivery(
                "call.completed",
                r#","durationSeconds":30,"startedAt":"2026-11-20T10:00:00Z""#,
            ),
            at(2),
        );
        call.apply(&delivery("call.initiate", ""), at(3));
        assert_eq!(call.duration_seconds, Some(30.0));
        call.apply(
            &delivery("call.completed", r#","durationSeconds":45"#),
            at(4),
        );
        assert_eq!(call.duration_seconds, Some(45.0));
        assert_eq!(
            call.started_at.unwrap().to_rfc3339(),
            "2026-11-20T10:00:00+00:00"
        );
    }

    #[test]
    fn a_late_earlier_stage_fills_only_what_is_empty() {
        let mut call = CallState::new("c1".into(), at(0));
        call.apply(&delivery("call.initiate", ""), at(1));
        call.apply(
            &delivery(
                "call.completed",
                r#","durationSeconds":157,"endedAt":"2026-11-20T10:02:41Z""#,
            ),
            at(2),
        );
        // `call.ended` arrives after `call.completed`, with earlier figures
        // and a recording the completion did not carry.
        call.apply(
            &delivery(
                "call.ended",
                r#","durationSeconds":150,"endedAt":"2026-11-20T10:02:30Z","recordingUrl":"https://r.example/1.mp3""#,
            ),
            at(3),
        );
        let a = &call.current;
        assert_eq!(a.status, CallStatus::Completed);
        assert_eq!(a.duration_seconds, Some(157.0));
        assert_eq!(
            a.ended_at.unwrap().to_rfc3339(),
            "2026-11-20T10:02:41+00:00"
        );
        assert_eq!(a.recording_url.as_deref(), Some("https://r.example/1.mp3"));
        assert_eq!(
            (call.duration_seconds, call.recording_url.as_deref()),
            (Some(157.0), Some("https://r.example/1.mp3"))
        );
        // A delivery of the same stage still replaces (a corrected completion).
        call.apply(
            &delivery("call.completed", r#","durationSeconds":158"#),
            at(4),
        );
        assert_eq!(call.current.duration_seconds, Some(158.0));
    }

    #[test]
    fn credits_sum_over_attempts_and_a_replaced_analysis_counts_once() {
        let eoc = |used: f64| {
            let body = format!(
                r#"{{"event":{{"type":"end-of-call","data":{{"call":{{"id":"c1"}},"analysis":{{"success":true}},"credits":{{"used":{used}}}}}}}}}"#
            );
            parse(body.as_bytes()).unwrap()
        };
        let mut call = run(&["call.initiate", "call.completed"]);
        call.apply(&eoc(2.5), at(5));
        call.apply(&eoc(3.0), at(6));
        assert_eq!(call.credits_used, Some(3.0));
        call.apply(&delivery("call.initiate", ""), at(7));
        call.apply(&eoc(1.2), at(8));
        assert_eq!((call.credits_used, call.success), (Some(4.2), Some(true)));
    }

    fn v2(kind: &str, call: &str) -> Delivery {
        let body = format!(
            r#"{{"id":"evt_{kind}","type":"{kind}","data":{{"call":{{"id":"c1"{call}}}}}}}"#
        );
        parse(body.as_bytes()).unwrap()
    }

    #[test]
    fn a_v2_terminal_event_ends_the_lifecycle_as_its_final_report() {
        let mut call = CallState::new("c1".into(), at(0));
        call.apply(&v2("call.queued", r#","status":"queued""#), at(1));
        call.apply(&v2("call.failed", r#","status":"no_answer""#), at(2));
        assert_eq!(call.status(), CallStatus::NoAnswer);
        assert!(call.lifecycle_ended);
        assert_eq!(
            (
                call.re_attempt_count,
                call.rescheduled_count,
                call.final_status.as_deref()
            ),
            (Some(0), Some(0), Some("no_answer"))
        );
        assert!(!call.current.connected);
    }

    #[test]
    fn a_late_v2_queued_never_opens_a_second_attempt() {
        let mut call = CallState::new("c1".into(), at(0));
        call.apply(&v2("call.completed", r#","status":"completed""#), at(1));
        call.apply(&v2("call.queued", r#","status":"queued""#), at(2));
        call.apply(&v2("call.started", r#","status":"in_progress""#), at(3));
        assert_eq!(
            (call.current.number, call.status(), call.current.connected),
            (1, CallStatus::Completed, true)
        );
    }

    #[test]
    fn voicemail_is_an_outcome_and_not_a_connection() {
        let mut call = CallState::new("c1".into(), at(0));
        call.apply(&v2("call.queued", ""), at(1));
        call.apply(&v2("call.voicemail", ""), at(2));
        assert_eq!(call.status(), CallStatus::Voicemail);
        assert!(call.status().is_outcome() && !call.current.connected);
        assert_eq!(
            call.final_status.as_deref(),
            Some("voicemail"),
            "the status when none is sent"
        );
    }

    #[test]
    fn v2_call_fields_are_taken_when_sent_and_never_cleared() {
        let mut call = CallState::new("c1".into(), at(0));
        call.apply(
            &v2(
                "call.queued",
                r#","to":"+919812345678","agent_id":"agt_1","cost":null"#,
            ),
            at(1),
        );
        call.apply(
            &v2(
                "call.completed",
                r#","ended_reason":"customer_ended_call","duration_secs":90,"cost":{"amount_inr":3.6,"per_min_inr":2.4}"#,
            ),
            at(2),
        );
        call.apply(
            &v2("call.started", r#","to":null,"cost":{"per_min_inr":2.5}"#),
            at(3),
        );
        assert_eq!(call.to.as_deref(), Some("+919812345678"));
        assert_eq!(call.agent_id.as_deref(), Some("agt_1"));
        assert_eq!(call.ended_reason.as_deref(), Some("customer_ended_call"));
        assert_eq!(call.duration_seconds, Some(90.0));
        assert_eq!(
            call.cost,
            Some(Cost {
                amount: Some(3.6),
                per_minute: Some(2.5),
                currency: "INR".into()
            })
        );
    }

    #[test]
    fn metadata_keys_merge_and_a_later_arrival_wins_a_key() {
        let mut call = CallState::new("c1".into(), at(0));
        for body in [
            r#"{"metadata":{"a":1,"b":1},"event":{"type":"call.initiate","data":{"call":{"id":"c1"}}}}"#,
            r#"{"metadata":{"b":2,"c":3},"event":{"type":"call.ended","data":{"call":{"id":"c1"}}}}"#,
        ] {
            call.apply(&parse(body.as_bytes()).unwrap(), at(1));
        }
        assert_eq!(
            Value::Object(call.metadata),
            serde_json::json!({"a":1,"b":2,"c":3})
        );
    }
}
