//! Clients that send slowly, send the wrong thing, or are still sending when
//! the server stops: each costs the server a bounded time.

use std::process::Stdio;
use std::time::{Duration, Instant};

use calltrail_tests::{TestApp, fixture_lines, on_each_backend};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::process::start_server_with;

async fn connect(base: &str) -> TcpStream {
    TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// Everything the server sends until it closes the connection; None if it
/// is still open after `within`.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&seen).into_owned())
}

/// The headers of a POST whose body will be `length` bytes long.
fn post_head(path: &str, length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn_with(backend, |c| c.client_timeout = Duration::from_secs(1)).await;
        let mut slow = connect(&app.address).await;
        slow.write_all(b"POST /webhooks/call-events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Waiting: ")
            .await
            .unwrap();
        let started = Instant::now();
        let closed = until_closed(&mut slow, Duration::from_secs(15)).await;
        assert!(closed.is_some(), "{backend:?}: still open after 15 s");
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "{backend:?}: closed by the header deadline, not at once"
        );
        // The server still serves everyone else.
        assert_eq!(app.get("/healthz").await.status, 200);
    })
    .await;
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_answered_408_and_nothing_is_stored() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn_with(backend, |c| c.client_timeout = Duration::from_secs(1)).await;
        let body = fixture_lines("v1/happy-path.jsonl").remove(0);
        for path in ["/webhooks/call-events", "/graphql"] {
            let mut slow = connect(&app.address).await;
            slow.write_all(post_head(path, body.len()).as_bytes())
                .await
                .unwrap();
            slow.write_all(&body[..body.len() / 2]).await.unwrap();
            let answer = until_closed(&mut slow, Duration::from_secs(15))
                .await
                .unwrap_or_else(|| panic!("{backend:?} {path}: no answer after 15 s"));
            assert!(
                answer.starts_with("HTTP/1.1 408"),
                "{backend:?} {path}: {answer}"
            );
            assert!(answer.contains("within 1 seconds"), "{answer}");
        }
        assert_eq!(app.count("webhook_event").await, 0, "{backend:?}");
        let metrics = app.metrics().await;
        assert_eq!(
            calltrail_tests::sample(
                &metrics,
                "calltrail_deliveries_total",
                &[
                    ("type", "unknown"),
                    ("outcome", "refused"),
                    ("reason", "timeout")
                ]
            ),
            Some(1.0),
            "{backend:?}"
        );
        // Sent whole, the same delivery is stored.
        assert_eq!(app.post_webhook(body).await.status, 200);
    })
    .await;
}

#[tokio::test]
async fn a_graphql_post_that_is_not_json_is_refused_415_and_runs_nothing() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        app.post_all(&fixture_lines("v1/happy-path.jsonl")).await;
        let pending = app
            .graphql("{ actions(first: 1) { nodes { id status } } }", Value::Null)
            .await;
        let action = &pending.body["data"]["actions"]["nodes"][0];
        assert_eq!(action["status"], "PENDING", "{}", pending.body);
        let mutation = json!({
            "query": format!("mutation {{ acknowledgeAction(id: \"{}\", status: HANDLED) {{ status }} }}", action["id"].as_str().unwrap())
        })
        .to_string();
        // What a page of another site can send without asking first.
        for content_type in ["text/plain", "application/x-www-form-urlencoded", ""] {
            let mut request = app
                .client
                .post(format!("{}/graphql", app.address))
                .header("origin", "https://evil.example")
                .body(mutation.clone());
            if !content_type.is_empty() {
                request = request.header("content-type", content_type);
            }
            let answer = calltrail_tests::Answer::from(request.send().await.unwrap()).await;
            assert_eq!(answer.status, 415, "{backend:?} {content_type:?}: {}", answer.body);
            assert!(answer.body.get("data").is_none(), "{}", answer.body);
        }
        let after = app
            .graphql("{ actions(first: 1) { nodes { status } } }", Value::Null)
            .await;
        assert_eq!(
            after.body["data"]["actions"]["nodes"][0]["status"],
            "PENDING",
            "{backend:?}: no refused mutation ran"
        );
        // JSON with parameters is fine.
        let answer = app
            .client
            .post(format!("{}/graphql", app.address))
            .header("content-type", "application/json; charset=utf-8")
            .body(mutation)
            .send()
            .await
            .unwrap();
        let answer = calltrail_tests::Answer::from(answer).await;
        assert_eq!(
            answer.body["data"]["acknowledgeAction"]["status"],
            "HANDLED",
            "{}",
            answer.body
        );
    })
    .await;
}

/// `kill -TERM <pid>`.
async fn terminate(pid: u32) {
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .await
        .expect("kill runs");
    assert!(status.success());
}

/// How the server process ended, which it must within 15 s (else `why` fails the test).
async fn exit_within_15_s(
    server: &mut tokio::process::Child,
    why: &str,
) -> std::process::ExitStatus {
    tokio::time::timeout(Duration::from_secs(15), server.wait())
        .await
        .unwrap_or_else(|_| panic!("{why}"))
        .unwrap()
}

/// A webhook request whose body is still on its way.
async fn stalled_delivery(base: &str) -> TcpStream {
    let mut slow = connect(base).await;
    slow.write_all(post_head("/webhooks/call-events", 1000).as_bytes())
        .await
        .unwrap();
    slow.write_all(b"{\"event\":").await.unwrap();
    // Let the request reach its handler.
    tokio::time::sleep(Duration::from_millis(300)).await;
    slow
}

#[tokio::test]
async fn a_stopping_server_waits_for_a_stalled_request_only_the_shutdown_timeout() {
    on_each_backend(|backend| async move {
        let url = calltrail_tests::fresh_database(backend).await;
        let (mut server, base) =
            start_server_with(&url, &[("CALLTRAIL_SHUTDOWN_TIMEOUT", "1s")]).await;
        let _slow = stalled_delivery(&base).await;
        let started = Instant::now();
        terminate(server.id().expect("running")).await;
        let status = exit_within_15_s(
            &mut server,
            &format!("{backend:?}: still running 15 s after SIGTERM"),
        )
        .await;
        assert!(status.success(), "{backend:?}: {status:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "{backend:?}: it waited for the request first"
        );
    })
    .await;
}

#[tokio::test]
async fn a_second_signal_stops_the_server_at_once() {
    on_each_backend(|backend| async move {
        let url = calltrail_tests::fresh_database(backend).await;
        let (mut server, base) =
            start_server_with(&url, &[("CALLTRAIL_SHUTDOWN_TIMEOUT", "10m")]).await;
        let _slow = stalled_delivery(&base).await;
        let pid = server.id().expect("running");
        terminate(pid).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            server.try_wait().unwrap().is_none(),
            "{backend:?}: the first signal waits for the request in flight"
        );
        terminate(pid).await;
        let status = exit_within_15_s(
            &mut server,
            &format!("{backend:?}: still running after a second SIGTERM"),
        )
        .await;
        assert_eq!(status.code(), Some(143), "{backend:?}: 128 + SIGTERM");
    })
    .await;
}

/// The shutdown timeout is for slow clients, not for commits: a delivery a
/// writer is committing when it runs out is still answered (cut off, it
/// could commit with its sender never told, and its resend count again).
#[tokio::test]
async fn a_delivery_still_committing_when_the_shutdown_timeout_ends_is_answered() {
    on_each_backend(|backend| async move {
        let url = calltrail_tests::fresh_database(backend).await;
        let (mut server, base) =
            start_server_with(&url, &[("CALLTRAIL_SHUTDOWN_TIMEOUT", "1s")]).await;
        let post = |call: &str| {
            reqwest::Client::new()
                .post(format!("{base}/webhooks/call-events"))
                .header("content-type", "application/json")
                .body(format!(
                    r#"{{"event":{{"type":"call.initiate","data":{{"call":{{"id":"{call}"}}}}}}}}"#
                ))
                .send()
        };
        assert_eq!(post("c_warm").await.unwrap().status(), 200);
        // The test holds the writers' lock: the next commit waits for it.
        let db = sea_orm::Database::connect(&url).await.unwrap();
        let holder = match backend {
            calltrail_tests::Backend::Sqlite => {
                let options = sea_orm::TransactionOptions {
                    sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                    ..Default::default()
                };
                sea_orm::TransactionTrait::begin_with_options(&db, options)
                    .await
                    .unwrap()
            }
            calltrail_tests::Backend::Postgres => {
                let txn = sea_orm::TransactionTrait::begin(&db).await.unwrap();
                sea_orm::ConnectionTrait::execute_unprepared(
                    &txn,
                    "SELECT 1 FROM event_clock WHERE id = 1 FOR UPDATE",
                )
                .await
                .unwrap();
                txn
            }
        };
        let waiting = tokio::spawn(post("c_waiting"));
        // And a delivery whose body is still on its way.
        let late = br#"{"event":{"type":"call.initiate","data":{"call":{"id":"c_late"}}}}"#;
        let mut slow = connect(&base).await;
        slow.write_all(post_head("/webhooks/call-events", late.len()).as_bytes())
            .await
            .unwrap();
        slow.write_all(&late[..10]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        terminate(server.id().expect("running")).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            server.try_wait().unwrap().is_none(),
            "{backend:?}: past its shutdown timeout, the server waits for the commit"
        );
        // Past the shutdown timeout, a delivery that arrives whole is
        // refused: a writer taking it now could commit it after its
        // connection is closed.
        slow.write_all(&late[10..]).await.unwrap();
        let refused = until_closed(&mut slow, Duration::from_secs(10))
            .await
            .expect("answered");
        assert!(
            refused.starts_with("HTTP/1.1 503"),
            "{backend:?}: {refused}"
        );
        assert!(refused.contains("shutting_down"), "{refused}");
        holder.commit().await.unwrap();
        let answer = waiting.await.unwrap().expect("answered, not cut off");
        assert_eq!(answer.status(), 200, "{backend:?}");
        let status = exit_within_15_s(
            &mut server,
            &format!("{backend:?}: still running after the commit"),
        )
        .await;
        assert!(status.success(), "{backend:?}: {status:?}");
        let stored = |call: &'static str| {
            use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
            entity::webhook_event::Entity::find()
                .filter(entity::webhook_event::Column::CallId.eq(call))
                .count(&db)
        };
        assert_eq!(stored("c_waiting").await.unwrap(), 1, "{backend:?}");
        let late = stored("c_late").await.unwrap();
        assert_eq!(late, 0, "{backend:?}: the refused delivery stored nothing");
    })
    .await;
}

/// Past `CALLTRAIL_MAX_CONNECTIONS` a new connection waits, unaccepted,
/// until one closes: many idle or stalled clients cannot take every file
/// descriptor the server needs for its database.
#[tokio::test]
async fn connections_past_the_limit_wait_until_one_closes() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn_with(backend, |c| c.max_connections = 2).await;
        let mut idle = vec![connect(&app.address).await, connect(&app.address).await];
        // Both are being served: each answers a request.
        for conn in &mut idle {
            conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 256];
            let n = conn.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{backend:?}");
        }
        let third = reqwest::Client::new()
            .get(format!("{}/healthz", app.address))
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        assert!(
            third.is_err_and(|e| e.is_timeout()),
            "{backend:?}: a third connection is not served"
        );
        drop(idle.pop());
        let third = reqwest::Client::new()
            .get(format!("{}/healthz", app.address))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("served once one closed");
        assert_eq!(third.status(), 200, "{backend:?}");
    })
    .await;
}

/// A WebSocket keeps the place of the connection it was upgraded from: open
/// sockets count against `CALLTRAIL_MAX_CONNECTIONS` too.
#[tokio::test]
async fn websockets_count_against_the_connection_limit() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    on_each_backend(|backend| async move {
        let app = TestApp::spawn_with(backend, |c| c.max_connections = 2).await;
        let address = app.address.trim_start_matches("http://");
        let mut sockets = Vec::new();
        for _ in 0..2 {
            let mut request = format!("ws://{address}/graphql/ws")
                .into_client_request()
                .unwrap();
            request.headers_mut().insert(
                "sec-websocket-protocol",
                "graphql-transport-ws".parse().unwrap(),
            );
            let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
            ws.send(Message::text(r#"{"type":"connection_init"}"#))
                .await
                .unwrap();
            sockets.push(ws);
        }
        let get = |wait: u64| {
            reqwest::Client::new()
                .get(format!("{}/healthz", app.address))
                .timeout(Duration::from_secs(wait))
                .send()
        };
        assert!(
            get(1).await.is_err_and(|e| e.is_timeout()),
            "{backend:?}: two open sockets fill a limit of two"
        );
        sockets.pop().unwrap().close(None).await.unwrap();
        let served = get(10).await.expect("served once a socket closed");
        assert_eq!(served.status(), 200, "{backend:?}");
    })
    .await;
}
