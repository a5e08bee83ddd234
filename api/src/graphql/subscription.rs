//! The Subscription root (CONTRACT §3): `callEvents` and `actionCreated`,
//! fed by the bus ([`crate::bus`]). Resolvers only open a feed and map its
//! items; the replay, the seam and the lag handling live in the bus.

use std::sync::{Arc, Mutex};

use async_graphql::{Context, Error, ErrorExtensions, ID, Result, SimpleObject, Subscription};
use chrono::Utc;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt, stream};

use super::types::{Action, Call, WebhookEvent};
use super::{StaleAfter, db};
use crate::bus::{Bus, FeedError};
use crate::service::live::{LiveEvent, LiveFilter};
use crate::service::{actions, events};

/// `extensions.code` of the error that ends a subscription that read too slowly.
pub const TOO_SLOW: &str = "SUBSCRIPTION_TOO_SLOW";

#[derive(Default)]
pub struct SubscriptionRoot;

/// Request data of a `callEvents` execution that only checks its arguments
/// (the WebSocket layer's probe): the resolver records the filter and the
/// resume position here and yields nothing.
#[derive(Default)]
pub struct Probe(Mutex<Option<(LiveFilter, Option<i64>)>>);

impl Probe {
    /// The arguments the resolver recorded (None: it did not run).
    pub fn take(&self) -> Option<(LiveFilter, Option<i64>)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Request data of a `callEvents` execution that renders one message: the
/// resolver yields this delivery only, whatever its arguments.
pub struct OneEvent(pub Arc<LiveEvent>);

/// One accepted delivery and its call right after it.
#[derive(SimpleObject, Clone, Debug)]
pub struct CallEvent {
    /// The delivery; its `cursor` is what to pass as `after` to resume after it.
    pub event: WebhookEvent,
    /// The call as it was right after this delivery, `stale` judged as of
    /// the delivery's arrival (its nested lists are read when the message
    /// is sent); null when the delivery names no call.
    pub call: Option<Call>,
}

/// Live updates over `/graphql/ws`: deliveries as they commit, and the action inbox.
#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// Every accepted (not duplicate) delivery, after its commit and in commit
    /// order. With `after` (a `WebhookEvent.cursor`), first the stored deliveries
    /// after it, then live: no gap, no repeat. A subscriber that reads too
    /// slowly is dropped with an error whose `extensions.resumeAfter` is the
    /// cursor to resubscribe with.
    async fn call_events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only this call's deliveries.")] call_id: Option<ID>,
        #[graphql(desc = "Only deliveries of these `event.type`s.")] types: Option<Vec<String>>,
        #[graphql(desc = "Replay the stored deliveries after this `WebhookEvent.cursor` first.")]
        after: Option<String>,
    ) -> Result<BoxStream<'static, Result<CallEvent>>> {
        let stale_after = stale_window(ctx)?;
        if let Some(one) = ctx.data_opt::<OneEvent>() {
            return Ok(stream::iter([call_event(&one.0, stale_after)]).boxed());
        }
        let after = after
            .as_deref()
            .map(events::position)
            .transpose()
            .map_err(|e| e.extend())?;
        let filter = LiveFilter {
            call_id: call_id.map(|id| id.0),
            types,
            without_calls: false,
        };
        if let Some(probe) = ctx.data_opt::<Arc<Probe>>() {
            *probe.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((filter, after));
            return Ok(stream::empty().boxed());
        }
        Ok(ctx
            .data::<Bus>()?
            .feed(filter, after)
            .into_stream()
            .map(move |item| match item {
                Ok(e) => call_event(&e, stale_after),
                Err(err) => Err(feed_error(err, true)),
            })
            .boxed())
    }

    /// Every new action (the inbox, live), oldest first. With `after` (an
    /// `Action.cursor`), first the stored actions after it, then live: no
    /// gap, no repeat. A subscriber that reads too slowly is dropped with an
    /// error whose `extensions.resumeAfter` is the cursor of the last action
    /// it passed (sent, or skipped for its kind), else its `after` (absent
    /// when it had neither).
    async fn action_created(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only actions of these kinds (`create_order`, …).")] kinds: Option<
            Vec<String>,
        >,
        #[graphql(desc = "Replay the stored actions after this `Action.cursor` first.")]
        after: Option<String>,
    ) -> Result<impl Stream<Item = Result<Action>> + use<>> {
        let bus = ctx.data::<Bus>()?;
        let (seen, start) = match after.as_deref() {
            None => (None, None),
            Some(cursor) => {
                let id = actions::id_of(cursor).map_err(|e| e.extend())?;
                let start = actions::position_after(db(ctx)?, id)
                    .await
                    .map_err(|e| e.extend())?;
                (Some(id), Some(start))
            }
        };
        // Only `action` deliveries create actions.
        let filter = LiveFilter {
            call_id: None,
            types: Some(vec!["action".to_owned()]),
            without_calls: true,
        };
        // Positions, not ids, say what was seen: the feed passes each
        // delivery after the cursor's once, with its actions (an action
        // `reprocess` made for an old delivery has a larger id than those
        // after it in the log, so an id bound would hide them).
        let mut last = seen;
        Ok(bus.feed(filter, start).into_stream().flat_map(move |item| {
            let items: Vec<Result<Action>> = match item {
                Ok(e) => {
                    let mut items = Vec::new();
                    for a in &e.actions {
                        last = Some(a.id);
                        if kinds.as_ref().is_none_or(|k| k.contains(&a.kind)) {
                            items.push(Action::try_from(a.clone()));
                        }
                    }
                    items
                }
                Err(err) => vec![Err(action_feed_error(err, last))],
            };
            stream::iter(items)
        }))
    }
}

fn stale_window(ctx: &Context<'_>) -> Result<chrono::Duration> {
    let window = ctx.data::<StaleAfter>()?.0;
    Ok(chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX))
}

/// A message: the call as it was right after the delivery, `stale` too
/// (judged at the delivery's arrival, not when the message is sent), so a
/// replayed message says what the live one said.
fn call_event(e: &Arc<LiveEvent>, stale_after: chrono::Duration) -> Result<CallEvent> {
    let cutoff = e
        .event
        .received_at
        .checked_sub_signed(stale_after)
        .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
    Ok(CallEvent {
        event: WebhookEvent::from(e.event.clone()),
        call: e.call.clone().map(|c| Call::new(c, cutoff)).transpose()?,
    })
}

/// The error that ends an `actionCreated` feed: resumable from the last
/// action it passed (delivered, or skipped for its kind).
fn action_feed_error(err: FeedError, last: Option<i64>) -> Error {
    match (err, last) {
        (FeedError::TooSlow { .. }, Some(id)) => {
            let cursor = actions::cursor_of_id(id);
            Error::new(format!(
                "this subscription fell too far behind and was dropped; resubscribe with after: \"{cursor}\" to continue where it stopped"
            ))
            .extend_with(|_, ext| {
                ext.set("code", TOO_SLOW);
                ext.set("resumeAfter", cursor.as_str());
            })
        }
        (FeedError::TooSlow { .. }, None) => Error::new(
            "this subscription fell too far behind and was dropped before it received an action; resubscribe, and read what was missed with `actions(filter: {status: [PENDING]})`",
        )
        .extend_with(|_, ext| ext.set("code", TOO_SLOW)),
        (err, _) => feed_error(err, false),
    }
}

/// The error that ends a feed, as subscribers receive it.
pub fn feed_error(err: FeedError, resumable: bool) -> Error {
    match err {
        FeedError::TooSlow { resume_after } => {
            let cursor = events::cursor_at(resume_after);
            let message = if resumable {
                format!(
                    "this subscription fell too far behind and was dropped; resubscribe with after: \"{cursor}\" to continue where it stopped"
                )
            } else {
                "this subscription fell too far behind and was dropped; resubscribe, and read what was missed with `actions(filter: {status: [PENDING]})`".to_owned()
            };
            Error::new(message).extend_with(|_, ext| {
                ext.set("code", TOO_SLOW);
                ext.set("resumeAfter", cursor.as_str());
            })
        }
        FeedError::Read(err) => err.extend(),
    }
}
