//! Subscriptions across real server processes: two replicas on one
//! database, and a clean shutdown.

use std::process::Stdio;
use std::time::Duration;

use calltrail_tests::{Answer, fresh_database, on_each_backend};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::client::{Client, Received, cursor_now};
use super::{CALL_EVENTS_LEAN, delivery, event_ids};

/// Start the real binary on `database_url`; returns it and its base URL.
async fn start_server(database_url: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_calltrail-under-test"))
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("CALLTRAIL_LISTEN", "127.0.0.1:0")
        .env("CALLTRAIL_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the server starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let address = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            if let Ok(log) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(address) = log["address"].as_str()
            {
                return address.to_owned();
            }
        }
        panic!("the server exited before listening")
    })
    .await
    .expect("the server listens within a minute");
    // Keep draining its logs (shown with TEST_LOG) so it never blocks on a full pipe.
    let show = std::env::var("TEST_LOG").is_ok();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if show {
                eprintln!("{line}");
            }
        }
    });
    (child, format!("http://{address}"))
}

async fn post(base: &str, body: Vec<u8>) -> String {
    let response = reqwest::Client::new()
        .post(format!("{base}/webhooks/call-events"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the server answers");
    Answer::from(response).await.event_id()
}

/// On PostgreSQL through LISTEN/NOTIFY; on SQLite (one file, two processes)
/// through the bus's periodic look at the log.
#[tokio::test]
async fn a_delivery_taken_by_one_replica_reaches_a_subscriber_of_the_other() {
    on_each_backend(|backend| async move {
        let database_url = fresh_database(backend).await;
        let (_a, first) = start_server(&database_url).await;
        let (_b, second) = start_server(&database_url).await;
        let mut subscriber = Client::connect(&second, None).await;
        let from = cursor_now(&first, None).await;
        subscriber
            .subscribe("1", CALL_EVENTS_LEAN, json!({"after": from}))
            .await;

        // Once one delivery came through, the subscription is live: the rest
        // can only come over the bus (the replay is over).
        let one = post(&first, delivery("c_replica", "call.initiate", 0)).await;
        assert_eq!(event_ids(&mut subscriber, 1).await, vec![json!(one)]);
        let mut posted = Vec::new();
        for n in 1..6 {
            posted.push(json!(
                post(&first, delivery("c_replica", "call.in-progress", n)).await
            ));
        }
        assert_eq!(event_ids(&mut subscriber, 5).await, posted, "{backend:?}");
    })
    .await;
}

#[tokio::test]
async fn on_sigterm_websockets_get_a_going_away_close_and_the_server_exits_0() {
    on_each_backend(|backend| async move {
        let database_url = fresh_database(backend).await;
        let (mut server, base) = start_server(&database_url).await;
        let mut subscriber = Client::connect(&base, None).await;
        let from = cursor_now(&base, None).await;
        subscriber
            .subscribe("1", CALL_EVENTS_LEAN, json!({"after": from}))
            .await;
        let id = post(&base, delivery("c_bye", "call.ended", 1)).await;
        assert_eq!(event_ids(&mut subscriber, 1).await, vec![json!(id)]);

        let pid = server.id().expect("running").to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().await;
        assert!(killed.expect("kill runs").success());
        match subscriber.receive().await {
            Received::Close(Some(1001), _) => {}
            other => panic!("{backend:?}: expected close 1001, got {other:?}"),
        }
        let status = tokio::time::timeout(Duration::from_secs(30), server.wait())
            .await
            .expect("the server exits")
            .expect("wait");
        assert_eq!(status.code(), Some(0), "{backend:?}");
    })
    .await;
}
