//! The pure core: turning raw bytes into a [`Delivery`] ([`parse`]), and a
//! delivery into changes of a call's state ([`CallState::apply`], driven by
//! [`Projection`], which also decides what is a duplicate). No I/O here: the
//! ingest writers load state, run these functions and write what they return.

mod apply;
mod parse;
mod projection;

pub use apply::{ActionRow, AnalysisRow, AttemptState, CallState, Effect};
pub use parse::{
    ActionFields, AnalysisFields, CallFields, Cost, Credits, Delivery, Format, ParseError, Report,
    json, parse,
};
pub use projection::{Changes, Decision, EventRef, NewEvent, Projection, StoredEvent};

use std::fmt;

/// Status of an attempt (and of a call: the status of its latest attempt).
/// Stored as the GraphQL enum name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallStatus {
    Initiate,
    InProgress,
    Ended,
    Completed,
    Timeout,
    Failed,
    ValidationFailed,
    Busy,
    NoAnswer,
    Skip,
    Rescheduled,
    Aborted,
    /// An answering machine answered (v2 `call.voicemail`).
    Voicemail,
}

impl CallStatus {
    pub const ALL: [CallStatus; 13] = [
        Self::Initiate,
        Self::InProgress,
        Self::Ended,
        Self::Completed,
        Self::Timeout,
        Self::Failed,
        Self::ValidationFailed,
        Self::Busy,
        Self::NoAnswer,
        Self::Skip,
        Self::Rescheduled,
        Self::Aborted,
        Self::Voicemail,
    ];

    /// Position in the forward-only order: INITIATE < IN_PROGRESS < ENDED <
    /// COMPLETED < every outcome (outcomes share the top rank, so the first
    /// outcome an attempt reaches is kept).
    pub fn rank(self) -> u8 {
        match self {
            Self::Initiate => 0,
            Self::InProgress => 1,
            Self::Ended => 2,
            Self::Completed => 3,
            _ => 4,
        }
    }

    /// The attempt is over: a new `call.initiate` opens the next attempt.
    pub fn is_outcome(self) -> bool {
        self.rank() >= 3
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initiate => "INITIATE",
            Self::InProgress => "IN_PROGRESS",
            Self::Ended => "ENDED",
            Self::Completed => "COMPLETED",
            Self::Timeout => "TIMEOUT",
            Self::Failed => "FAILED",
            Self::ValidationFailed => "VALIDATION_FAILED",
            Self::Busy => "BUSY",
            Self::NoAnswer => "NO_ANSWER",
            Self::Skip => "SKIP",
            Self::Rescheduled => "RESCHEDULED",
            Self::Aborted => "ABORTED",
            Self::Voicemail => "VOICEMAIL",
        }
    }

    pub fn from_db(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an upstream event type means to calltrail (v1 `event.type`, v2 `type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Initiate,
    InProgress,
    Ended,
    Completed,
    Timeout,
    EndOfCall,
    LifecycleEnded,
    Failed,
    Busy,
    NoAnswer,
    ValidationFailed,
    Skip,
    Rescheduled,
    Aborted,
    Action,
    /// v2 `call.queued`: queued and dialing (INITIATE). v2 makes one attempt
    /// per call, so unlike `call.initiate` it never opens another.
    Queued,
    /// A v2 terminal event (`call.completed`, `call.voicemail`, `call.failed`,
    /// `call.aborted`): the attempt's outcome, and the end of the call's
    /// lifecycle (v2 sends exactly one per call and never retries).
    Terminal(CallStatus),
    /// A type calltrail does not know: kept in the raw log, no other effect.
    Unknown,
}

impl EventKind {
    pub fn from_v1(event_type: &str) -> Self {
        match event_type {
            "call.initiate" => Self::Initiate,
            "call.in-progress" => Self::InProgress,
            "call.ended" => Self::Ended,
            "call.completed" => Self::Completed,
            "call.timeout" => Self::Timeout,
            "end-of-call" => Self::EndOfCall,
            "call.lifecycle-ended" => Self::LifecycleEnded,
            "call.failed" => Self::Failed,
            "call.busy" => Self::Busy,
            "call.no-answer" => Self::NoAnswer,
            "call.validation-failed" => Self::ValidationFailed,
            "call.skip" => Self::Skip,
            "call.rescheduled" => Self::Rescheduled,
            "call.aborted" => Self::Aborted,
            "action" => Self::Action,
            _ => Self::Unknown,
        }
    }

    /// A v2 `type`; `status` is `data.call.status`, which says what a
    /// `call.failed` was (an unknown word reads as FAILED).
    pub fn from_v2(event_type: &str, status: Option<&str>) -> Self {
        match event_type {
            "call.queued" => Self::Queued,
            "call.started" => Self::InProgress,
            "call.completed" => Self::Terminal(CallStatus::Completed),
            "call.voicemail" => Self::Terminal(CallStatus::Voicemail),
            "call.failed" => Self::Terminal(match status {
                Some("no_answer") => CallStatus::NoAnswer,
                Some("busy") => CallStatus::Busy,
                Some("timeout") => CallStatus::Timeout,
                _ => CallStatus::Failed,
            }),
            "call.aborted" => Self::Terminal(CallStatus::Aborted),
            _ => Self::Unknown,
        }
    }

    /// The attempt status this event moves towards, if any. `end-of-call`
    /// means the conversation was processed, so it implies COMPLETED.
    pub fn status(self) -> Option<CallStatus> {
        Some(match self {
            Self::Initiate | Self::Queued => CallStatus::Initiate,
            Self::InProgress => CallStatus::InProgress,
            Self::Ended => CallStatus::Ended,
            Self::Completed | Self::EndOfCall => CallStatus::Completed,
            Self::Timeout => CallStatus::Timeout,
            Self::Failed => CallStatus::Failed,
            Self::Busy => CallStatus::Busy,
            Self::NoAnswer => CallStatus::NoAnswer,
            Self::ValidationFailed => CallStatus::ValidationFailed,
            Self::Skip => CallStatus::Skip,
            Self::Rescheduled => CallStatus::Rescheduled,
            Self::Aborted => CallStatus::Aborted,
            Self::Terminal(status) => status,
            Self::LifecycleEnded | Self::Action | Self::Unknown => return None,
        })
    }

    /// The customer picked up (counts towards `connectRate`). A v2 failure
    /// or voicemail says nobody did; `call.started` before it still counts.
    pub fn connects(self) -> bool {
        matches!(
            self,
            Self::InProgress
                | Self::Ended
                | Self::Completed
                | Self::EndOfCall
                | Self::Timeout
                | Self::Terminal(CallStatus::Completed)
        )
    }
}

/// `action` rows start PENDING; workers move them with `acknowledgeAction`.
pub const ACTION_PENDING: &str = "PENDING";
