//! The HTTP server: the router on hyper's HTTP/1 connections, with what
//! `axum::serve` leaves out for a server on an open network: a deadline for
//! a request's headers and for its body, and a shutdown that waits for
//! in-flight requests only so long.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::ingest::Ingestor;
use tower::ServiceExt;

/// Serve `router` on `listener` until `shutdown` resolves; then stop
/// accepting, let each connection finish the request it is in, and return
/// once all have, or after `drain` (`CALLTRAIL_SHUTDOWN_TIMEOUT`); then
/// `ingestor` refuses new deliveries, and the server returns once no
/// request waits for its delivery's commit any more: such a request is
/// always answered (cut off, its delivery could commit with no one told,
/// and its resend count again); the connections closed are those of slow
/// clients and of other requests (queries).
///
/// Each connection has `header_timeout` to send a request's headers, also
/// the longest a kept-alive connection sits idle between requests (hyper's
/// own default, which `axum::serve` drops: without it one trickled header
/// holds its connection for good, and a stopping server waits for it).
///
/// At most `max_connections` connections are served at once, WebSockets
/// included; the next waits, unaccepted, in the listener's backlog until
/// one closes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
    ingestor: &Ingestor,
) {
    let Limits {
        header_timeout,
        drain,
        max_connections,
    } = limits;
    let room = Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS)));
    // Every route turned into a service once, not again for each request
    // (what `axum::serve` does too).
    let router = router.with_state(());
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener, &room) => match accepted {
                Ok((tcp, permit)) => {
                    let seat = Seat(Arc::new(permit));
                    connections.spawn(connection(tcp, router.clone(), seat, header_timeout, stopping.clone()));
                }
                Err(e) => accept_failed(e).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop.send(true);
    let drained = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        ingestor.refuse_new();
        let answered = async {
            while ingestor.waiting() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let mut answered = std::pin::pin!(answered);
        loop {
            tokio::select! {
                () = &mut answered => break,
                joined = connections.join_next() => if joined.is_none() { break },
            }
        }
        // The last answers are on their way out.
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            while connections.join_next().await.is_some() {}
        })
        .await;
    }
    if !connections.is_empty() {
        tracing::warn!(
            connections = connections.len(),
            timeout = ?drain,
            "closing connections whose requests did not finish in time"
        );
        connections.shutdown().await;
    }
}

/// What [`serve`] allows its clients.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `CALLTRAIL_CLIENT_TIMEOUT`: to send a request's headers, or to keep
    /// an idle connection.
    pub header_timeout: Duration,
    /// `CALLTRAIL_SHUTDOWN_TIMEOUT`.
    pub drain: Duration,
    /// `CALLTRAIL_MAX_CONNECTIONS`.
    pub max_connections: usize,
}

/// The route of the WebSockets (`graphql/ws.rs`), whose upgrades take
/// their connection's [`Seat`] along.
pub const WEBSOCKET_PATH: &str = "/graphql/ws";

/// A connection's place among `CALLTRAIL_MAX_CONNECTIONS`, freed when the
/// last holder drops it: the connection, or the WebSocket upgraded from it.
#[derive(Clone, Debug)]
pub struct Seat(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// The next connection, once there is room for it.
async fn accept(
    listener: &TcpListener,
    room: &Arc<Semaphore>,
) -> std::io::Result<(TcpStream, OwnedSemaphorePermit)> {
    let permit = room.clone().acquire_owned().await.expect("never closed");
    let (tcp, _) = listener.accept().await?;
    Ok((tcp, permit))
}

/// One connection: requests until the client closes it, an error, a
/// deadline, or the server stops (then after the request in progress).
async fn connection(
    tcp: TcpStream,
    router: Router,
    seat: Seat,
    header_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    // Answers are small and latency-bound: send them without waiting for
    // the client's ACK of the previous segment (Nagle).
    let _ = tcp.set_nodelay(true);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    // A WebSocket upgrade carries the connection's seat, which the socket
    // keeps for as long as it is open (other requests need none: the
    // connection holds it).
    let service = TowerToHyperService::new(router.map_request(move |mut request: Request<_>| {
        if request.uri().path() == WEBSOCKET_PATH {
            request.extensions_mut().insert(seat.clone());
        }
        request
    }));
    let conn = builder
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stopping.wait_for(|stop| *stop) => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

/// Out of file descriptors and the like: wait a little instead of spinning
/// (what `axum::serve` does); a connection reset before it was accepted is
/// nothing to wait for.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The media type of a request's `Content-Type`, parameters (`;
/// charset=utf-8`) and surrounding spaces left out ("" when there is none).
pub fn content_type(headers: &axum::http::HeaderMap) -> &str {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    #[error("the body was not received within {} seconds", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("could not read the body: {0}")]
    Read(String),
}

/// The whole body, at most `limit` bytes, received within `timeout`
/// (`CALLTRAIL_CLIENT_TIMEOUT`: a client trickling its body would otherwise
/// hold a task and up to `limit` bytes for good). A declared
/// `Content-Length` over the limit is refused before reading.
pub async fn read_body(
    body: Body,
    headers: &axum::http::HeaderMap,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let read = tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await;
    read.map_err(|_| BodyError::Timeout(timeout))?.map_err(|e| {
        let inner = e.into_inner();
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
        while let Some(err) = cause {
            if err.is::<http_body_util::LengthLimitError>() {
                return BodyError::TooLarge(limit);
            }
            cause = err.source();
        }
        BodyError::Read(inner.to_string())
    })
}
