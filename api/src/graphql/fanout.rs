//! One rendering per message, however many subscribers receive it.
//!
//! A dashboard's `callEvents` subscription is the same document for every
//! open tab, so the message each tab receives for a delivery is the same
//! bytes. Subscriptions whose document, operation and variables are equal
//! (the variable that only carries `after` aside: it says where a feed
//! starts, not what a message holds) share one [`Share`]: the first
//! subscriber that needs the message for a delivery renders it (the schema
//! resolves the selection for that one delivery, nested lists included, and
//! serializes it) in a task of its own, and every other subscriber awaits
//! and reuses those bytes. Where each subscriber is in the log, its filter
//! and its lag stay its own ([`crate::bus::Feed`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection,
};
use async_graphql::{Executor, Name, Request, Response, ServerError, Value, Variables};
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use metrics::Counter;

use super::subscription::OneEvent;
use crate::service::live::LiveEvent;

/// A message being rendered: its bytes, and whether it rendered without errors.
type Rendering = Shared<BoxFuture<'static, (Arc<str>, bool)>>;

/// Messages kept per share: enough for subscribers a few commits apart;
/// one further behind renders its own.
const KEPT: usize = 128;
/// A message larger than this is shared with the subscribers already waiting
/// for it, not kept for later ones: a share holds at most `KEPT` × this.
const KEPT_BYTES: usize = 64 * 1024;

/// The shares of one server, by key; a share lives while a subscriber holds it.
pub struct Shares<E> {
    executor: E,
    rendered: Counter,
    shares: Mutex<HashMap<String, Weak<Share<E>>>>,
}

/// One document's rendered messages, by position in the log.
pub struct Share<E> {
    executor: E,
    counted: Counter,
    query: String,
    operation_name: Option<String>,
    variables: Variables,
    /// Subscriptions using this share: with one, nothing is worth keeping.
    subscribers: AtomicUsize,
    /// The document, parsed once for every rendering.
    document: Option<ExecutableDocument>,
    rendered: Mutex<BTreeMap<i64, Rendering>>,
}

impl<E: Executor + Clone> Shares<E> {
    pub fn new(executor: E, rendered: Counter) -> Self {
        Self {
            executor,
            rendered,
            shares: Mutex::new(HashMap::new()),
        }
    }

    /// The share for `request`, a `callEvents` subscription; `after` names the
    /// variable that only carries its `after` argument, if one does.
    pub fn get(&self, request: &Request, after: Option<&str>) -> Subscriber<E> {
        Subscriber::new(self.share(request, after))
    }

    fn share(&self, request: &Request, after: Option<&str>) -> Arc<Share<E>> {
        let mut variables: Vec<(&str, &Value)> = request
            .variables
            .iter()
            .filter(|(name, _)| Some(name.as_str()) != after)
            .map(|(name, value)| (name.as_str(), value))
            .collect();
        variables.sort_unstable_by_key(|(name, _)| *name);
        let variables = serde_json::to_string(&variables).unwrap_or_default();
        let key = format!(
            "{:?}\n{}\n{variables}",
            request.operation_name, request.query
        );
        let mut shares = self.shares.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(share) = shares.get(&key).and_then(Weak::upgrade) {
            return share;
        }
        shares.retain(|_, share| share.strong_count() > 0);
        let share = Arc::new(Share {
            executor: self.executor.clone(),
            counted: self.rendered.clone(),
            query: request.query.clone(),
            operation_name: request.operation_name.clone(),
            // Not the first subscriber's own `after`: renderings ignore it,
            // and no subscriber's value belongs in what the others get.
            variables: {
                let mut variables = request.variables.clone();
                if let Some(after) = after {
                    variables.insert(Name::new(after), Value::String(String::new()));
                }
                variables
            },
            subscribers: AtomicUsize::new(0),
            document: async_graphql::parser::parse_query(&request.query).ok(),
            rendered: Mutex::new(BTreeMap::new()),
        });
        shares.insert(key, Arc::downgrade(&share));
        share
    }
}

/// One subscription's hold on its share (counted while it lives).
pub struct Subscriber<E>(Arc<Share<E>>);

impl<E> Subscriber<E> {
    fn new(share: Arc<Share<E>>) -> Self {
        share.subscribers.fetch_add(1, Ordering::Relaxed);
        Self(share)
    }
}

impl<E> Drop for Subscriber<E> {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<E: Executor + Clone> Subscriber<E> {
    /// The message (a GraphQL response, serialized) for `event`.
    pub async fn message(&self, event: &Arc<LiveEvent>) -> Arc<str> {
        self.0.message(event).await
    }
}

impl<E: Executor + Clone> Share<E> {
    async fn message(&self, event: &Arc<LiveEvent>) -> Arc<str> {
        let seq = event.event.seq;
        let rendering = {
            let mut rendered = self.rendered.lock().unwrap_or_else(|e| e.into_inner());
            match rendered.get(&seq) {
                Some(rendering) => rendering.clone(),
                None => {
                    let rendering = self.render(event.clone());
                    let oldest = rendered.first_key_value().map(|(s, _)| *s);
                    let shared = self.subscribers.load(Ordering::Relaxed) > 1;
                    // Full: forget the oldest, unless this one is older still
                    // (a subscriber far behind: it renders for itself).
                    if shared && (rendered.len() < KEPT || oldest.is_some_and(|o| o < seq)) {
                        if rendered.len() >= KEPT {
                            rendered.pop_first();
                        }
                        rendered.insert(seq, rendering.clone());
                    }
                    rendering
                }
            }
        };
        let (message, ok) = rendering.clone().await;
        if !ok || message.len() > KEPT_BYTES {
            // Not kept: the next subscriber to need it renders it again (a
            // read that failed once may not fail twice; a big one is not
            // worth its memory).
            let mut rendered = self.rendered.lock().unwrap_or_else(|e| e.into_inner());
            if rendered.get(&seq).is_some_and(|r| r.ptr_eq(&rendering)) {
                rendered.remove(&seq);
            }
        }
        message
    }

    /// Render in a task of its own: a subscriber that stalls while awaiting
    /// it never holds up the others.
    fn render(&self, event: Arc<LiveEvent>) -> Rendering {
        let mut request = Request::new(self.query.clone())
            .variables(self.variables.clone())
            .data(OneEvent(event));
        if let Some(document) = &self.document {
            request.set_parsed_query(document.clone());
        }
        let request = match &self.operation_name {
            Some(name) => request.operation_name(name.clone()),
            None => request,
        };
        let executor = self.executor.clone();
        self.counted.increment(1);
        let task = tokio::spawn(async move {
            let mut stream = executor.execute_stream(request, None);
            let response = stream.next().await.unwrap_or_else(|| {
                Response::from_errors(vec![ServerError::new("no message was rendered", None)])
            });
            (serialize(&response), response.is_ok())
        });
        async move {
            task.await.unwrap_or_else(|err| {
                tracing::error!(error = %err, "rendering a subscription message failed");
                let response = Response::from_errors(vec![ServerError::new(
                    "rendering this message failed",
                    None,
                )]);
                (serialize(&response), false)
            })
        }
        .boxed()
        .shared()
    }
}

/// A response as the `payload` of a message.
pub fn serialize(response: &Response) -> Arc<str> {
    Arc::from(serde_json::to_string(response).unwrap_or_else(|err| {
        format!(r#"{{"errors":[{{"message":"serializing a message failed: {err}"}}]}}"#)
    }))
}

/// Whether `request` is a subscription to `callEvents` alone, whose messages
/// can be shared: `Some(after)` with the variable that only carries its
/// `after` argument (if any), `None` for anything else.
pub fn shareable(request: &Request) -> Option<Option<String>> {
    let document = async_graphql::parser::parse_query(&request.query).ok()?;
    let operation = match (&document.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(op), _) => op,
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name)?,
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next()?,
        (DocumentOperations::Multiple(_), None) => return None,
    };
    if operation.node.ty != OperationType::Subscription {
        return None;
    }
    let [selection] = operation.node.selection_set.node.items.as_slice() else {
        return None;
    };
    let Selection::Field(field) = &selection.node else {
        return None;
    };
    if field.node.name.node != "callEvents" {
        return None;
    }
    let variable = field
        .node
        .arguments
        .iter()
        .find(|(name, _)| name.node == "after")
        .and_then(|(_, value)| value.node.to_string().strip_prefix('$').map(str::to_owned))
        // Only when the variable is used nowhere else (its declaration and
        // this argument): otherwise it may shape the messages.
        .filter(|name| uses(&request.query, name) == 2);
    Some(variable)
}

/// How often `$name` occurs in `query` as a whole variable name.
fn uses(query: &str, name: &str) -> usize {
    let needle = format!("${name}");
    query
        .match_indices(&needle)
        .filter(|(at, _)| {
            query[at + needle.len()..]
                .chars()
                .next()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after_variable(query: &str) -> Option<Option<String>> {
        shareable(&Request::new(query))
    }

    #[test]
    fn a_call_events_subscription_shares_without_its_after_variable() {
        assert_eq!(
            after_variable(
                "subscription($after: String) { callEvents(after: $after) { event { id } } }"
            ),
            Some(Some("after".into()))
        );
        assert_eq!(
            after_variable(
                "subscription S($a: String, $c: ID) { live: callEvents(after: $a, callId: $c) { event { id } } }"
            ),
            Some(Some("a".into()))
        );
        assert_eq!(
            after_variable("subscription { callEvents(after: \"x\") { event { id } } }"),
            Some(None)
        );
    }

    #[test]
    fn a_variable_used_elsewhere_stays_in_the_key() {
        assert_eq!(
            after_variable(
                "subscription($after: String) { callEvents(after: $after) { call { events(after: $after) { nodes { id } } } } }"
            ),
            Some(None)
        );
        // `$afterAll` is another variable.
        assert_eq!(
            uses(
                "($after: String, $afterAll: Int) { f(after: $after) }",
                "after"
            ),
            2
        );
    }

    #[test]
    fn other_operations_are_not_shared() {
        assert_eq!(
            after_variable("subscription { actionCreated { id } }"),
            None
        );
        assert_eq!(after_variable("{ calls { nodes { id } } }"), None);
        assert_eq!(after_variable("subscription {"), None);
    }
}
