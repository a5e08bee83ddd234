//! `GET /graphql/ws`: subscriptions (and queries) over WebSocket, with the
//! `graphql-transport-ws` and `graphql-ws` subprotocols. With
//! `CALLTRAIL_API_TOKEN` set, `connection_init` must carry
//! `{"Authorization": "Bearer <token>"}`. On shutdown every socket gets a
//! close frame 1001 ("going away").

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, WebSocketProtocols, WsMessage};
use async_graphql::{BatchResponse, Data, Executor, Request, Response};
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::get;
use futures_util::stream::BoxStream;
use futures_util::{SinkExt, StreamExt, future};
use sea_orm::DatabaseConnection;
use subtle::ConstantTimeEq;
use tokio::sync::{Notify, watch};

use super::{AppSchema, batch, execute, loaders};
use crate::bus::Bus;
use crate::startup::AppState;

/// Close codes of `graphql-transport-ws`.
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
    token: Option<Arc<[u8; 32]>>,
    sockets: Sockets,
}

/// The `/graphql/ws` route. Not behind the HTTP token check: browsers cannot
/// set headers on a WebSocket, so the token travels in `connection_init`.
pub fn routes(schema: AppSchema, token: Option<Arc<[u8; 32]>>, app: &AppState) -> Router<AppState> {
    let ws = Ws {
        executor: LiveExecutor {
            schema,
            db: app.db.read.clone(),
            bus: app.bus.clone(),
        },
        token,
        sockets: app.sockets.clone(),
    };
    Router::new()
        .route("/graphql/ws", get(upgrade))
        .with_state(ws)
}

async fn upgrade(
    State(ws): State<Ws>,
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
    if *ws.sockets.0.stop.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| serve(socket, ws, protocol))
        .into_response()
}

/// Relay between the socket and async-graphql's protocol state machine,
/// closing with 1001 when the server stops.
async fn serve(socket: WebSocket, ws: Ws, protocol: WebSocketProtocols) {
    let _open = ws.sockets.open();
    let mut stop = ws.sockets.0.stop.subscribe();
    let (mut sink, input) = socket.split();
    let input = input
        .take_while(|m| future::ready(m.is_ok()))
        .filter_map(|m| {
            future::ready(match m {
                Ok(m @ (Message::Text(_) | Message::Binary(_))) => Some(m.into_data()),
                _ => None,
            })
        });
    let refused = Arc::new(AtomicBool::new(false));
    let check = {
        let (token, refused) = (ws.token.clone(), refused.clone());
        move |payload: serde_json::Value| async move {
            if authorized(token.as_deref(), &payload) {
                Ok(Data::default())
            } else {
                refused.store(true, Ordering::SeqCst);
                Err("Forbidden: connection_init needs {\"Authorization\": \"Bearer <token>\"} (CALLTRAIL_API_TOKEN)".into())
            }
        }
    };
    let mut messages =
        async_graphql::http::WebSocket::new(ws.executor, input, protocol).on_connection_init(check);
    loop {
        let next = tokio::select! {
            next = messages.next() => next,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (frame, last) = match next {
            None => {
                if refused.load(Ordering::SeqCst) {
                    // graphql-ws (legacy) answered `connection_error`; now close.
                    close_frame(FORBIDDEN, "Forbidden")
                } else {
                    return;
                }
            }
            Some(WsMessage::Text(text)) => (Message::Text(text.into()), false),
            Some(WsMessage::Close(code, reason)) => {
                let code = match code {
                    1002 if refused.load(Ordering::SeqCst) => FORBIDDEN,
                    1011 => UNAUTHORIZED,
                    other => other,
                };
                close_frame(code, &reason)
            }
        };
        let sent = tokio::select! {
            sent = sink.send(frame) => sent.is_ok(),
            _ = stop.wait_for(|s| *s) => break,
        };
        if !sent || last {
            return;
        }
    }
    let (frame, _) = close_frame(GOING_AWAY, "server shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(frame)).await;
}

fn close_frame(code: u16, reason: &str) -> (Message, bool) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    (Message::Close(Some(frame)), true)
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
