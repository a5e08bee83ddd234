//! `GET /graphql/ws`: subscriptions (and queries) over WebSocket, with the
//! `graphql-transport-ws` and `graphql-ws` subprotocols. With
//! `CALLTRAIL_API_TOKEN` set, `connection_init` must carry
//! `{"Authorization": "Bearer <token>"}`. On shutdown every socket gets a
//! close frame 1001 ("going away").

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_graphql::http::{ClientMessage, WebSocketProtocols};
use async_graphql::{BatchResponse, Data, Executor, PathSegment, Pos, Request, Response};
use axum::Extension;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::get;
use futures_util::stream::{self, AbortHandle, BoxStream, SelectAll};
use futures_util::{FutureExt, SinkExt, StreamExt};
use metrics::Counter;
use sea_orm::DatabaseConnection;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::{Notify, watch};

use super::fanout::{self, Shares};
use super::host::AllowedHosts;
use super::subscription::{Probe, feed_error};
use super::{AppSchema, batch, execute, loaders};
use crate::bus::Bus;
use crate::serve::Seat;
use crate::startup::AppState;

// Close codes of `graphql-transport-ws`.
const UNAUTHORIZED: u16 = 4401;
const FORBIDDEN: u16 = 4403;
/// "Going away": the server is shutting down.
const GOING_AWAY: u16 = 1001;

/// The open WebSockets, and the switch that closes them on shutdown.
#[derive(Clone)]
pub struct Sockets(Arc<SocketsInner>);

struct SocketsInner {
    stop: watch::Sender<bool>,
    open: AtomicUsize,
    closed: Notify,
}

impl Default for Sockets {
    fn default() -> Self {
        Self(Arc::new(SocketsInner {
            stop: watch::Sender::new(false),
            open: AtomicUsize::new(0),
            closed: Notify::new(),
        }))
    }
}

impl Sockets {
    /// Send every socket a close frame 1001 and wait (up to `grace`) until all are closed.
    pub async fn close_all(&self, grace: Duration) {
        self.0.stop.send_replace(true);
        let all_closed = async {
            loop {
                let closed = self.0.closed.notified();
                if self.0.open.load(Ordering::SeqCst) == 0 {
                    return;
                }
                closed.await;
            }
        };
        if tokio::time::timeout(grace, all_closed).await.is_err() {
            tracing::warn!(
                open = self.0.open.load(Ordering::SeqCst),
                "WebSockets still open after the shutdown grace period"
            );
        }
    }

    fn open(&self) -> OpenSocket {
        self.0.open.fetch_add(1, Ordering::SeqCst);
        OpenSocket(self.clone())
    }
}

struct OpenSocket(Sockets);

impl Drop for OpenSocket {
    fn drop(&mut self) {
        (self.0).0.open.fetch_sub(1, Ordering::SeqCst);
        (self.0).0.closed.notify_waiters();
    }
}

/// Runs what arrives over a socket: the schema with a DataLoader of its own
/// per operation and the bus as request data.
#[derive(Clone)]
struct LiveExecutor {
    schema: AppSchema,
    db: DatabaseConnection,
    bus: Bus,
}

impl Executor for LiveExecutor {
    async fn execute(&self, request: Request) -> Response {
        match execute(&self.schema, &self.db, request.data(self.bus.clone())).await {
            BatchResponse::Single(response) => response,
            BatchResponse::Batch(mut responses) => responses.pop().unwrap_or_default(),
        }
    }

    fn execute_stream(
        &self,
        request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        let (loader, batches) = loaders::for_request(self.db.clone());
        let request = request.data(loader).data(self.bus.clone());
        let stream = self
            .schema
            .execute_stream_with_session_data(request, session_data.unwrap_or_default());
        batch::run_stream(stream, batches).boxed()
    }
}

#[derive(Clone)]
struct Ws {
    executor: LiveExecutor,
    /// `CALLTRAIL_CORS_ORIGINS`: pages of other origins allowed to open a socket.
    origins: Arc<[String]>,
    shares: Arc<Shares<LiveExecutor>>,
    /// `calltrail_subscription_messages_sent_total`.
    sent: Counter,
    token: Option<Arc<[u8; 32]>>,
    /// `CALLTRAIL_ALLOWED_HOSTS`: checked when there is no token.
    hosts: AllowedHosts,
    sockets: Sockets,
    /// `CALLTRAIL_WS_WRITE_TIMEOUT`.
    write_timeout: Duration,
}

/// The `/graphql/ws` route. Not behind the HTTP token check: browsers cannot
/// set headers on a WebSocket, so the token travels in `connection_init`.
pub fn routes(
    schema: AppSchema,
    token: Option<Arc<[u8; 32]>>,
    hosts: AllowedHosts,
    app: &AppState,
) -> Router<AppState> {
    let executor = LiveExecutor {
        schema,
        db: app.db.read.clone(),
        bus: app.bus.clone(),
    };
    let (rendered, sent) = app.metrics.subscription_messages();
    let ws = Ws {
        origins: app
            .config
            .cors_origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect(),
        shares: Arc::new(Shares::new(executor.clone(), rendered)),
        sent,
        executor,
        token,
        hosts,
        sockets: app.sockets.clone(),
        write_timeout: app.config.ws_write_timeout,
    };
    Router::new()
        .route(crate::serve::WEBSOCKET_PATH, get(upgrade))
        .with_state(ws)
}

async fn upgrade(
    State(ws): State<Ws>,
    seat: Option<Extension<Seat>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> HttpResponse {
    let Some(protocol) = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .find_map(|p| WebSocketProtocols::from_str(p.trim()).ok())
        })
    else {
        return (
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Protocol must name graphql-transport-ws or graphql-ws",
        )
            .into_response();
    };
    if !same_or_allowed_origin(&headers, &ws.origins) {
        return (
            StatusCode::FORBIDDEN,
            "a page of another origin may not open /graphql/ws: add its origin to CALLTRAIL_CORS_ORIGINS",
        )
            .into_response();
    }
    if ws.token.is_none() && !ws.hosts.allow(&headers) {
        return (StatusCode::FORBIDDEN, super::host::REFUSED).into_response();
    }
    if *ws.sockets.0.stop.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    upgrade
        // The protocol this socket will speak, whatever order the client named them in.
        .protocols([protocol.sec_websocket_protocol()])
        // Clients send small messages; tungstenite zeroes this much on every read.
        .read_buffer_size(READ_BUFFER)
        // tungstenite's 64 MiB would be read before `connection_init`
        // checks the token; a larger message closes the socket.
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        // The socket keeps its connection's seat (`CALLTRAIL_MAX_CONNECTIONS`).
        .on_upgrade(move |socket| async move {
            serve(socket, ws, protocol).await;
            drop(seat);
        })
        .into_response()
}

/// One socket: the protocol (`connection_init`, `subscribe`, `complete`,
/// `ping`; `start`/`stop` in legacy graphql-ws), its subscriptions, and the
/// messages they yield, written in batches (one flush for all that is
/// ready). A socket whose peer stops reading blocks only its own task: its
/// subscriptions fall behind in the bus and end with `SUBSCRIPTION_TOO_SLOW`
/// once it reads again; a write still waiting after
/// `CALLTRAIL_WS_WRITE_TIMEOUT` closes the socket.
async fn serve(socket: WebSocket, ws: Ws, protocol: WebSocketProtocols) {
    let _open = ws.sockets.open();
    let mut stop = ws.sockets.0.stop.subscribe();
    let (mut sink, mut input) = socket.split();
    let mut connection = Connection {
        ws: &ws,
        protocol,
        phase: Phase::Waiting,
        subscriptions: SelectAll::new(),
        running: HashMap::new(),
        started: 0,
    };
    let init_deadline = tokio::time::sleep(INIT_WAIT);
    tokio::pin!(init_deadline);
    let mut out: Vec<Message> = Vec::new();
    loop {
        let mut end = tokio::select! {
            biased;
            _ = stopped(&mut stop) => Some((GOING_AWAY, "server shutting down".to_owned())),
            message = input.next() => match message {
                Some(Ok(Message::Text(text))) => connection.receive(text.as_bytes(), &mut out).await,
                Some(Ok(Message::Binary(bytes))) => connection.receive(&bytes, &mut out).await,
                Some(Ok(_)) => None,
                Some(Err(_)) | None => return,
            },
            Some((operation, item)) = connection.subscriptions.next(), if !connection.subscriptions.is_empty() => {
                connection.emit(&operation, item, &mut out);
                while out.len() < WRITE_BATCH {
                    match connection.subscriptions.next().now_or_never() {
                        Some(Some((operation, item))) => connection.emit(&operation, item, &mut out),
                        _ => break,
                    }
                }
                None
            }
            // Both protocols: the legacy one names no deadline, but a socket
            // that never authenticates must not stay open.
            _ = &mut init_deadline, if connection.phase == Phase::Waiting => {
                Some((INIT_TIMEOUT, "Connection initialisation timeout".to_owned()))
            }
        };
        if !out.is_empty() {
            let written = async {
                for message in out.drain(..) {
                    sink.feed(message).await?;
                }
                sink.flush().await
            };
            // A client that reads nothing for `write_timeout` loses its
            // socket: a close frame could not reach it either.
            tokio::select! {
                written = tokio::time::timeout(ws.write_timeout, written) => match written {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::info!(timeout = ?ws.write_timeout, "closing a WebSocket whose client stopped reading");
                        return;
                    }
                },
                _ = stopped(&mut stop) => end = Some((GOING_AWAY, "server shutting down".to_owned())),
            }
            out.clear();
        }
        if let Some((code, mut reason)) = end {
            // A close frame's reason holds at most 123 bytes.
            if reason.len() > 123 {
                let mut cut = 120;
                while !reason.is_char_boundary(cut) {
                    cut -= 1;
                }
                reason.truncate(cut);
                reason.push('…');
            }
            let frame = Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            }));
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(frame)).await;
            return;
        }
    }
}

/// How long a client may take to send `connection_init` (closed with 4408).
const INIT_WAIT: Duration = Duration::from_secs(3);
/// Largest message a client may send, in bytes.
pub const MAX_MESSAGE: usize = 256 * 1024;
/// Most operations one socket runs at once; a `subscribe` past it gets an
/// `error` (each `callEvents` from an old cursor reads the log on the
/// shared read pool, so one socket could otherwise slow every reader).
pub const MAX_OPERATIONS: usize = 100;
/// Bytes read from a socket at a time.
const READ_BUFFER: usize = 4096;
/// Messages written per flush at most.
const WRITE_BATCH: usize = 256;
const BAD_REQUEST: u16 = 4400;
const INIT_TIMEOUT: u16 = 4408;
const DUPLICATE_ID: u16 = 4409;
const TOO_MANY_INITS: u16 = 4429;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Ready,
}

/// A subscription's messages: payloads (serialized responses), then None when it ends.
type Messages = BoxStream<'static, (Arc<Operation>, Option<Arc<str>>)>;

/// A running operation of a socket.
struct Operation {
    id: String,
    /// Which start of the socket this is (an id may be reused after `complete`).
    generation: u64,
    /// `{"id":"…","type":"next","payload":`: a message is this, the payload and `}`.
    prefix: String,
}

struct Connection<'a> {
    ws: &'a Ws,
    protocol: WebSocketProtocols,
    phase: Phase,
    subscriptions: SelectAll<Messages>,
    /// The running subscriptions by id: which start they are, and their stop switch.
    running: HashMap<String, (u64, AbortHandle)>,
    started: u64,
}

impl Connection<'_> {
    /// Handle one client message; `Some` closes the socket with that code.
    async fn receive(&mut self, bytes: &[u8], out: &mut Vec<Message>) -> Option<(u16, String)> {
        let message = match ClientMessage::from_bytes(bytes) {
            Ok(message) => message,
            Err(err) => return Some((BAD_REQUEST, format!("Invalid message received: {err}"))),
        };
        match message {
            ClientMessage::ConnectionInit { payload } => {
                if self.phase == Phase::Ready {
                    return Some((
                        TOO_MANY_INITS,
                        "Too many initialisation requests".to_owned(),
                    ));
                }
                if !authorized(self.ws.token.as_deref(), &payload.unwrap_or_default()) {
                    let message = "Forbidden: connection_init needs {\"Authorization\": \"Bearer <token>\"} (CALLTRAIL_API_TOKEN)";
                    if self.protocol == WebSocketProtocols::SubscriptionsTransportWS {
                        out.push(text(
                            json!({"type": "connection_error", "payload": {"message": message}}),
                        ));
                    }
                    return Some((FORBIDDEN, "Forbidden".to_owned()));
                }
                self.phase = Phase::Ready;
                out.push(Message::Text(r#"{"type":"connection_ack"}"#.into()));
            }
            ClientMessage::Start { id, payload } => {
                if self.phase != Phase::Ready {
                    return Some((UNAUTHORIZED, "Unauthorized".to_owned()));
                }
                if self.running.contains_key(&id) {
                    return Some((DUPLICATE_ID, format!("Subscriber for {id} already exists")));
                }
                if self.running.len() >= MAX_OPERATIONS {
                    out.push(self.error(
                        &id,
                        &format!("at most {MAX_OPERATIONS} operations run at once on one connection; complete one first"),
                    ));
                    return None;
                }
                self.start(id, payload).await;
            }
            ClientMessage::Stop { id } => {
                if let Some((_, handle)) = self.running.remove(&id) {
                    handle.abort();
                    out.push(self.complete(&id));
                }
            }
            ClientMessage::ConnectionTerminate => return Some((1000, String::new())),
            ClientMessage::Ping { .. } => out.push(Message::Text(r#"{"type":"pong"}"#.into())),
            ClientMessage::Pong { .. } => {}
        }
        None
    }

    /// Start operation `id`: a `callEvents` subscription through its share,
    /// anything else through the schema.
    async fn start(&mut self, id: String, request: Request) {
        let messages = match fanout::shareable(&request) {
            Some(after) => call_events(self.ws, request, after.as_deref()).await,
            None => self
                .ws
                .executor
                .execute_stream(request, None)
                .map(|response| fanout::serialize(&response))
                .boxed(),
        };
        self.started += 1;
        let generation = self.started;
        let (messages, handle) = stream::abortable(messages);
        let kind = match self.protocol {
            WebSocketProtocols::GraphQLWS => "next",
            WebSocketProtocols::SubscriptionsTransportWS => "data",
        };
        let operation = Arc::new(Operation {
            prefix: format!(
                r#"{{"id":{},"type":"{kind}","payload":"#,
                serde_json::Value::from(id.as_str())
            ),
            id: id.clone(),
            generation,
        });
        let last = operation.clone();
        self.running.insert(id, (generation, handle));
        self.subscriptions.push(
            messages
                .map(move |m| (operation.clone(), Some(m)))
                .chain(stream::once(async move { (last, None) }))
                .boxed(),
        );
    }

    /// Queue what an operation yielded: a message, or `complete` when it ended by itself.
    fn emit(&mut self, operation: &Operation, item: Option<Arc<str>>, out: &mut Vec<Message>) {
        match item {
            Some(payload) => {
                self.ws.sent.increment(1);
                let mut message = String::with_capacity(operation.prefix.len() + payload.len() + 1);
                message.push_str(&operation.prefix);
                message.push_str(&payload);
                message.push('}');
                out.push(Message::Text(message.into()));
            }
            None => {
                let id = operation.id.as_str();
                if self
                    .running
                    .get(id)
                    .is_some_and(|(g, _)| *g == operation.generation)
                {
                    self.running.remove(id);
                    out.push(self.complete(id));
                }
            }
        }
    }

    /// An operation refused before it started: `error` (no `complete` follows).
    fn error(&self, id: &str, message: &str) -> Message {
        let error = json!({"message": message, "extensions": {"code": "TOO_MANY_OPERATIONS"}});
        match self.protocol {
            WebSocketProtocols::GraphQLWS => {
                text(json!({"type": "error", "id": id, "payload": [error]}))
            }
            WebSocketProtocols::SubscriptionsTransportWS => {
                text(json!({"type": "error", "id": id, "payload": error}))
            }
        }
    }

    fn complete(&self, id: &str) -> Message {
        text(json!({"type": "complete", "id": id}))
    }
}

/// A `callEvents` subscription: its arguments checked by the probe, its
/// feed from the bus, its messages from the share of its document. The
/// share is looked up only once the probe accepted the request: a refused
/// one must not become the document others render with.
async fn call_events(
    ws: &Ws,
    request: Request,
    after: Option<&str>,
) -> BoxStream<'static, Arc<str>> {
    let mut accepted = Request::new(request.query.clone()).variables(request.variables.clone());
    accepted.operation_name = request.operation_name.clone();
    let probe = Arc::new(Probe::default());
    let mut checked = ws
        .executor
        .execute_stream(request.data(probe.clone()), None);
    while let Some(response) = checked.next().await {
        if response.is_err() {
            return stream::iter([fanout::serialize(&response)]).boxed();
        }
    }
    let Some((filter, position)) = probe.take() else {
        return stream::empty().boxed();
    };
    let share = Arc::new(ws.shares.get(&accepted, after));
    ws.executor
        .bus
        .feed(filter, position)
        .into_stream()
        .then(move |item| {
            let share = share.clone();
            async move {
                match item {
                    Ok(event) => share.message(&event).await,
                    Err(err) => {
                        let error = feed_error(err, true)
                            .into_server_error(Pos::default())
                            .with_path(vec![PathSegment::Field("callEvents".into())]);
                        fanout::serialize(&Response::from_errors(vec![error]))
                    }
                }
            }
        })
        .boxed()
}

/// Resolves once the server is stopping.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn text(value: serde_json::Value) -> Message {
    Message::Text(value.to_string().into())
}

/// Browsers send `Origin` with every WebSocket and let any page open one, with
/// no CORS check: without this, any site its user visits could read calls
/// through a server on their machine or network. Allowed: no `Origin` (not a
/// browser), the server's own origin (the dashboard), `CALLTRAIL_CORS_ORIGINS`.
fn same_or_allowed_origin(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

/// No token configured, or `connection_init`'s payload carries `Authorization: Bearer <token>`.
fn authorized(expected: Option<&[u8; 32]>, payload: &serde_json::Value) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let presented = payload
        .as_object()
        .and_then(|o| {
            o.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .and_then(|(_, v)| v.as_str())
        })
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| super::http::digest(token.trim().as_bytes()));
    presented.is_some_and(|t| bool::from(t.ct_eq(expected)))
}
