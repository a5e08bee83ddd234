//! Subscriptions across real server processes: two replicas on one
//! database, and a clean shutdown.

use std::time::Duration;

use calltrail_tests::{Answer, fresh_database, on_each_backend};
use serde_json::json;
use tokio::process::Command;

use super::client::{Client, Received, cursor_now};
use super::{CALL_EVENTS_LEAN, delivery, event_ids};
use crate::process::start_server;

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
