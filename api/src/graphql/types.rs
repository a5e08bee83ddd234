//! GraphQL output types (CONTRACT §3). Their own structs, filled from entity
//! rows, so a column change cannot silently change the API. Nested fields go
//! through the DataLoader ([`super::loaders`]): no N+1.

use async_graphql::{ComplexObject, Context, Enum, ID, Json, Result, SimpleObject};
use chrono::Utc;
use entity::{action, analysis, attempt, call, webhook_event};
use serde_json::Value;

use super::loaders;
use super::scalars::DateTime;
use crate::domain::Format;
use crate::service::{ServiceError, events};

/// Where a call or an attempt stands. An attempt moves forward only
/// (INITIATE < IN_PROGRESS < ENDED < COMPLETED < an outcome) and keeps its
/// first outcome; a call has the status of its latest attempt.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[graphql(remote = "crate::domain::CallStatus")]
pub enum CallStatus {
    /// Queued and dialing (`call.initiate`).
    Initiate,
    /// Picked up; the AI conversation is running (`call.in-progress`).
    InProgress,
    /// The phone connection dropped (`call.ended`).
    Ended,
    /// Recording, transcript and duration processed (`call.completed`, `end-of-call`).
    Completed,
    /// Exceeded the maximum duration (`call.timeout`).
    Timeout,
    /// Could not connect (`call.failed`).
    Failed,
    /// Pre-call validation failed, e.g. an invalid number (`call.validation-failed`).
    ValidationFailed,
    /// The line was busy (`call.busy`).
    Busy,
    /// Not picked up (`call.no-answer`).
    NoAnswer,
    /// Skipped, e.g. a do-not-disturb number (`call.skip`).
    Skip,
    /// A callback was scheduled; the next attempt follows (`call.rescheduled`).
    Rescheduled,
    /// Cancelled through the platform's abort API (`call.aborted`).
    Aborted,
    /// An answering machine answered (v2 `call.voicemail`).
    Voicemail,
}

/// The platform's webhook wire format a delivery came in.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[graphql(remote = "crate::domain::Format")]
pub enum WebhookFormat {
    /// `{"metadata", "event": {"type", "data"}}`, signed with `x-signature`; no event id.
    V1,
    /// `{"id", "type", "created_at", "data": {"call"}}`, signed with `X-Mirai-Signature`; the `id` is the event's.
    V2,
}

/// Where an action stands in a worker's inbox.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[graphql(remote = "crate::service::actions::ActionStatus")]
pub enum ActionStatus {
    /// Not handled yet (every action starts here).
    Pending,
    /// A worker did what the action asks.
    Handled,
    /// A worker tried and could not.
    Failed,
}

fn call_status(stored: &str) -> Result<CallStatus> {
    crate::domain::CallStatus::from_db(stored)
        .map(Into::into)
        .ok_or_else(|| internal(format!("unknown status {stored:?} in the database")))
}

fn internal(message: String) -> async_graphql::Error {
    use async_graphql::ErrorExtensions;
    ServiceError::from(sea_orm::DbErr::Type(message)).extend()
}

/// One call task of the platform: every dial made to reach one customer
/// under one platform call id, and what came of it.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct Call {
    /// The platform's call id.
    pub id: ID,
    /// The status of the latest attempt.
    pub status: CallStatus,
    /// The `metadata` sent with the call's deliveries: top-level keys merged, a later delivery winning a key.
    pub metadata: Option<Json<Value>>,
    /// When the conversation started (from the latest attempt that has it).
    pub started_at: Option<DateTime>,
    /// When the conversation ended (from the latest attempt that has it).
    pub ended_at: Option<DateTime>,
    /// Length of the conversation in seconds (from the latest attempt that has it).
    pub duration_seconds: Option<f64>,
    /// The recording (from the latest attempt that has it).
    pub recording_url: Option<String>,
    /// The call's page in the platform's dashboard (from the latest attempt that has it).
    pub detail_url: Option<String>,
    /// Number of attempts (dials) so far.
    pub attempt_count: i32,
    /// Retries after the first dial, as the platform's final report counts them (0 for v2, which never retries); null until the lifecycle ended.
    pub re_attempt_count: Option<i32>,
    /// Callbacks scheduled, as the platform's final report counts them (0 for v2); null until the lifecycle ended.
    pub rescheduled_count: Option<i32>,
    /// The platform's final status word as sent (v1 `completed`, `no-answer`, …; v2 `completed`, `no_answer`, …); null until the lifecycle ended.
    pub final_status: Option<String>,
    /// The platform sent `call.lifecycle-ended` (v1) or the call's terminal event (v2): no attempt follows.
    pub lifecycle_ended: bool,
    /// Not ended, and nothing arrived for longer than the platform's retry window (`CALLTRAIL_STALE_AFTER`): a delivery was probably lost.
    pub stale: bool,
    /// Credits used by all analyses of the call; null until one reports credits.
    pub credits_used: Option<f64>,
    /// The number dialled, E.164 (v2 `to`); null for v1 calls.
    pub to: Option<String>,
    /// The platform's agent that placed the call (v2 `agent_id`); null for v1 calls.
    pub agent_id: Option<String>,
    /// Why the call ended, the platform's word such as `customer_ended_call` (v2 `ended_reason`); null for v1 calls.
    pub ended_reason: Option<String>,
    /// What the call cost, as last reported (v2 `cost`); null for v1 calls and until reported.
    pub cost: Option<CallCost>,
    /// Arrival of the call's first delivery.
    pub created_at: DateTime,
    /// When the call last changed.
    pub updated_at: DateTime,
}

/// What a call cost, as the platform reports it.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct CallCost {
    /// The call's total cost (v2 `amount_inr`); null when only the rate is known.
    pub amount: Option<f64>,
    /// ISO 4217 code of `amount` and `perMinute`: `INR` for v2.
    pub currency: String,
    /// The price of a minute (v2 `per_min_inr`).
    pub per_minute: Option<f64>,
}

impl Call {
    /// A call row as of a request whose stale cutoff is `stale_cutoff`.
    pub fn new(c: call::Model, stale_cutoff: chrono::DateTime<Utc>) -> Result<Self> {
        Ok(Self {
            status: call_status(&c.status)?,
            stale: !c.lifecycle_ended && c.last_event_at < stale_cutoff,
            id: ID(c.id),
            metadata: c.metadata.map(Json),
            started_at: c.started_at.map(Into::into),
            ended_at: c.ended_at.map(Into::into),
            duration_seconds: c.duration_seconds,
            recording_url: c.recording_url,
            detail_url: c.detail_url,
            attempt_count: c.attempt_count,
            re_attempt_count: c.re_attempt_count,
            rescheduled_count: c.rescheduled_count,
            final_status: c.final_status,
            lifecycle_ended: c.lifecycle_ended,
            credits_used: c.credits_used,
            to: c.to_number,
            agent_id: c.agent_id,
            ended_reason: c.ended_reason,
            cost: c.cost_currency.map(|currency| CallCost {
                amount: c.cost_amount,
                currency,
                per_minute: c.cost_per_minute,
            }),
            created_at: c.created_at.into(),
            updated_at: c.updated_at.into(),
        })
    }
}

/// `Call.events` returns this many deliveries unless asked, and never more than `MAX_CALL_EVENTS`.
pub const DEFAULT_CALL_EVENTS: i32 = 100;
pub const MAX_CALL_EVENTS: i32 = 1000;

#[ComplexObject]
impl Call {
    /// Every attempt (dial), first to latest.
    async fn attempts(&self, ctx: &Context<'_>) -> Result<Vec<Attempt>> {
        let rows = loaders::attempts_of(ctx, &self.id).await?;
        rows.into_iter().map(Attempt::try_from).collect()
    }

    /// The latest analysis: that of the latest attempt that has one.
    async fn analysis(&self, ctx: &Context<'_>) -> Result<Option<Analysis>> {
        let rows = loaders::analyses_of(ctx, &self.id).await?;
        Ok(rows.into_iter().next_back().map(Analysis::from))
    }

    /// Every analysis, one per attempt that reached the AI's end-of-call report, first to latest.
    async fn analyses(&self, ctx: &Context<'_>) -> Result<Vec<Analysis>> {
        let rows = loaders::analyses_of(ctx, &self.id).await?;
        Ok(rows.into_iter().map(Analysis::from).collect())
    }

    /// The actions the AI asked for during this call, oldest first.
    async fn actions(&self, ctx: &Context<'_>) -> Result<Vec<Action>> {
        let rows = loaders::actions_of(ctx, &self.id).await?;
        rows.into_iter().map(Action::try_from).collect()
    }

    /// The call's deliveries as received, oldest first.
    #[graphql(
        complexity = "super::list_cost(first, DEFAULT_CALL_EVENTS, MAX_CALL_EVENTS, child_complexity)"
    )]
    async fn events(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "How many deliveries, from the oldest: 100 unless given, at most 1000 (larger values are clamped)."
        )]
        first: Option<i32>,
    ) -> Result<Vec<WebhookEvent>> {
        let limit = super::list_size(first, DEFAULT_CALL_EVENTS, MAX_CALL_EVENTS)?;
        let rows = loaders::events_of(ctx, &self.id, limit).await?;
        Ok(rows.into_iter().map(WebhookEvent::from).collect())
    }
}

/// `<call id>#<attempt number>`: the opaque id of an attempt and of its analysis.
fn part_id(call_id: &str, number: i32) -> ID {
    ID(format!("{call_id}#{number}"))
}

/// One dial of a call task. The platform retries a call (busy, no answer,
/// rescheduled) under the same call id; each retry is a new attempt.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct Attempt {
    /// Opaque id of the attempt.
    pub id: ID,
    /// 1 for the first dial, then 2, 3, …
    pub number: i32,
    /// Where this attempt stands.
    pub status: CallStatus,
    /// When the conversation started.
    pub started_at: Option<DateTime>,
    /// When the conversation ended.
    pub ended_at: Option<DateTime>,
    /// Length of the conversation in seconds.
    pub duration_seconds: Option<f64>,
    /// The recording of this attempt.
    pub recording_url: Option<String>,
    #[graphql(skip)]
    pub call_id: String,
}

impl TryFrom<attempt::Model> for Attempt {
    type Error = async_graphql::Error;
    fn try_from(a: attempt::Model) -> Result<Self> {
        Ok(Self {
            id: part_id(&a.call_id, a.number),
            number: a.number,
            status: call_status(&a.status)?,
            started_at: a.started_at.map(Into::into),
            ended_at: a.ended_at.map(Into::into),
            duration_seconds: a.duration_seconds,
            recording_url: a.recording_url,
            call_id: a.call_id,
        })
    }
}

#[ComplexObject]
impl Attempt {
    /// The AI's analysis of this attempt, if it reached one.
    async fn analysis(&self, ctx: &Context<'_>) -> Result<Option<Analysis>> {
        let rows = loaders::analyses_of(ctx, &self.call_id).await?;
        Ok(rows
            .into_iter()
            .find(|a| a.attempt_number == self.number)
            .map(Analysis::from))
    }

    /// The deliveries applied to this attempt, oldest first.
    #[graphql(
        complexity = "super::list_cost(first, DEFAULT_CALL_EVENTS, MAX_CALL_EVENTS, child_complexity)"
    )]
    async fn events(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "How many deliveries, from the oldest: 100 unless given, at most 1000 (larger values are clamped)."
        )]
        first: Option<i32>,
    ) -> Result<Vec<WebhookEvent>> {
        let size = super::list_size(first, DEFAULT_CALL_EVENTS, MAX_CALL_EVENTS)?;
        let rows = loaders::events_of_attempt(ctx, &self.call_id, self.number, size).await?;
        Ok(rows.into_iter().map(WebhookEvent::from).collect())
    }
}

/// The AI's end-of-call analysis of one attempt (`end-of-call`).
#[derive(SimpleObject, Clone, Debug)]
pub struct Analysis {
    /// Opaque id of the analysis.
    pub id: ID,
    /// Whether the conversation reached its goal, as the AI judged it.
    pub success: Option<bool>,
    /// The AI's summary of the conversation.
    pub summary: Option<String>,
    /// Follow-ups the AI lists (`create-order`, …); empty when none.
    pub required_actions: Vec<String>,
    /// The AI's insights, as the platform sent them.
    pub insights: Option<Json<Value>>,
    /// The structured outcome, as the platform sent it.
    pub outcome: Option<Json<Value>>,
    /// Credits this analysis used.
    pub credits_used: Option<f64>,
    /// Credits left on the account after it.
    pub credits_available: Option<f64>,
    /// Arrival of the analysis.
    pub created_at: DateTime,
}

impl From<analysis::Model> for Analysis {
    fn from(a: analysis::Model) -> Self {
        let required_actions = match a.required_actions {
            Value::Array(items) => items
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        Self {
            id: part_id(&a.call_id, a.attempt_number),
            success: a.success,
            summary: a.summary,
            required_actions,
            insights: a.insights.map(Json),
            outcome: a.outcome.map(Json),
            credits_used: a.credits_used,
            credits_available: a.credits_available,
            created_at: a.created_at.into(),
        }
    }
}

/// Something the AI asked the business to do (`action` deliveries), e.g.
/// create an order; workers acknowledge it with `acknowledgeAction`.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct Action {
    /// Opaque id of the action.
    pub id: ID,
    /// Opaque position of this action in the inbox (the same as its edge's
    /// in `actions`): pass it as `after` to `actionCreated`, or to `actions`.
    pub cursor: String,
    /// What to do: `create_order`, `send_whatsapp`, `mark_prepaid`, `update_address`, `confirmed_address`, or a name the platform added since.
    pub kind: String,
    /// Why, when the platform says (`missing_address`, …).
    pub reason: Option<String>,
    /// The action's data as sent (for `create_order`: the order); NUL characters and lone
    /// surrogate escapes read as U+FFFD.
    pub payload: Option<Json<Value>>,
    /// Where the action stands.
    pub status: ActionStatus,
    /// The note of the latest acknowledgement.
    pub note: Option<String>,
    /// The call it came from; null for deliveries that named no call.
    pub call_id: Option<ID>,
    /// Arrival of the action.
    pub created_at: DateTime,
    /// When it was acknowledged HANDLED or FAILED; null while PENDING.
    pub handled_at: Option<DateTime>,
}

impl TryFrom<action::Model> for Action {
    type Error = async_graphql::Error;
    fn try_from(a: action::Model) -> Result<Self> {
        let status = crate::service::actions::ActionStatus::from_db(&a.status)
            .ok_or_else(|| internal(format!("unknown action status {:?}", a.status)))?;
        Ok(Self {
            id: ID(a.id.to_string()),
            cursor: crate::service::actions::cursor_of(&a),
            kind: a.kind,
            reason: a.reason,
            payload: a.payload.map(Json),
            status: status.into(),
            note: a.note,
            call_id: a.call_id.map(ID),
            created_at: a.created_at.into(),
            handled_at: a.handled_at.map(Into::into),
        })
    }
}

#[ComplexObject]
impl Action {
    /// The call it came from.
    async fn call(&self, ctx: &Context<'_>) -> Result<Option<Call>> {
        let Some(id) = &self.call_id else {
            return Ok(None);
        };
        let cutoff = super::stale_cutoff(ctx)?;
        loaders::call(ctx, id)
            .await?
            .map(|c| Call::new(c, cutoff))
            .transpose()
    }
}

/// One delivery as received: the raw log, kept forever.
#[derive(SimpleObject, Clone, Debug)]
pub struct WebhookEvent {
    /// Opaque id of the delivery: the `eventId` the webhook answered.
    pub id: ID,
    /// Position in the log, increasing in commit order: pass it as `after` to read what came later.
    pub cursor: String,
    /// The event type as sent (v1 `event.type`, v2 `type`), also for types calltrail does not know.
    #[graphql(name = "type")]
    pub event_type: String,
    /// The wire format it came in.
    pub format: WebhookFormat,
    /// The platform's event id (v2 `id`, shared by the retries of one event); null for v1, which has none.
    pub upstream_id: Option<ID>,
    /// The call it names; null when it names none.
    pub call_id: Option<ID>,
    /// When calltrail received it.
    pub received_at: DateTime,
    /// Its signature was checked against a configured secret.
    pub signature_verified: bool,
    /// calltrail knows its type; unknown types are kept with no other effect.
    pub recognized: bool,
    /// The whole delivery body, as JSON (a lone surrogate escape reads as U+FFFD; the body is
    /// stored byte for byte).
    pub payload: Json<Value>,
}

impl From<webhook_event::Model> for WebhookEvent {
    fn from(e: webhook_event::Model) -> Self {
        Self {
            cursor: events::cursor_of(&e),
            id: ID(e.id.to_string()),
            payload: Json(crate::domain::json(e.body.as_bytes()).unwrap_or(Value::String(e.body))),
            event_type: e.event_type,
            format: Format::from_db(&e.format).into(),
            upstream_id: e.upstream_id.map(ID),
            call_id: e.call_id.map(ID),
            received_at: e.received_at.into(),
            signature_verified: e.signature_verified,
            recognized: e.recognized,
        }
    }
}
