//! Concurrent deliveries: no double count, no lost update.

use calltrail_tests::{TestApp, on_each_backend_and_batch};
use entity::{action, analysis, attempt, call};
use futures_util::future::join_all;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::json;

#[tokio::test]
async fn twenty_identical_deliveries_sent_at_once_store_exactly_one_event() {
    on_each_backend_and_batch(|backend, batch| async move {
        let app = TestApp::spawn_with(backend, |c| c.ingest_batch = batch).await;
        let body =
            br#"{"event":{"type":"call.initiate","data":{"call":{"id":"c_twenty"}}}}"#.to_vec();
        let answers = join_all((0..20).map(|_| app.post_webhook(body.clone()))).await;
        let ids: Vec<String> = answers.iter().map(|a| a.event_id()).collect();
        assert!(
            ids.iter().all(|id| *id == ids[0]),
            "{backend:?}: one eventId for all: {ids:?}"
        );
        let fresh = answers
            .iter()
            .filter(|a| a.body["duplicate"] == false)
            .count();
        assert_eq!(fresh, 1, "{backend:?}: exactly one is not a duplicate");
        assert_eq!(app.count("webhook_event").await, 1);
        assert_eq!(app.count("attempt").await, 1);
    })
    .await;
}

/// One single-attempt call: initiate, then in-progress, 44 actions, ended,
/// completed, end-of-call, lifecycle-ended — 50 distinct deliveries.
fn fifty_deliveries(call_id: &str) -> Vec<Vec<u8>> {
    let event = |kind: &str, data: serde_json::Value| {
        let mut data = data;
        data["call"]["id"] = json!(call_id);
        serde_json::to_vec(
            &json!({"metadata": {"campaign": "c50"}, "event": {"type": kind, "data": data}}),
        )
        .unwrap()
    };
    let mut all = vec![
        event("call.initiate", json!({"call": {"status": "initiate"}})),
        event(
            "call.in-progress",
            json!({"call": {"status": "in-progress", "startedAt": "2026-11-20T10:00:04Z"}}),
        ),
    ];
    for i in 0..44 {
        let kind = [
            "create_order",
            "send_whatsapp",
            "mark_prepaid",
            "update_address",
        ][i % 4];
        all.push(event(
            "action",
            json!({"action": kind, "call": {}, "payload": {"n": i}}),
        ));
    }
    all.push(event(
        "call.ended",
        json!({"call": {"status": "ended", "endedAt": "2026-11-20T10:02:41Z"}}),
    ));
    all.push(event(
        "call.completed",
        json!({"call": {"status": "completed", "durationSeconds": 157}}),
    ));
    all.push(event(
        "end-of-call",
        json!({"call": {}, "analysis": {"success": true}, "credits": {"used": 2.5}}),
    ));
    all.push(event("call.lifecycle-ended", json!({"call": {}, "report": {"reAttemptCount": 0, "rescheduledCount": 0, "finalStatus": "completed"}})));
    assert_eq!(all.len(), 50);
    all
}

/// What a user would compare: the call, its attempts, analyses and actions (ids and clocks aside).
async fn projection(app: &TestApp, id: &str) -> serde_json::Value {
    let c = call::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let attempts: Vec<_> = attempt::Entity::find()
        .filter(attempt::Column::CallId.eq(id))
        .order_by_asc(attempt::Column::Number)
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|a| {
            json!([
                a.number,
                a.status,
                a.connected,
                a.started_at,
                a.ended_at,
                a.duration_seconds
            ])
        })
        .collect();
    let analyses: Vec<_> = analysis::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|a| json!([a.attempt_number, a.success, a.credits_used]))
        .collect();
    let mut actions: Vec<_> = action::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|a| json!([a.kind, a.payload, a.status, a.attempt_number]))
        .collect();
    actions.sort_by_key(|a| a.to_string());
    json!({
        "call": [c.status, c.metadata, c.started_at, c.ended_at, c.duration_seconds, c.attempt_count, c.lifecycle_ended,
                 c.final_status, c.re_attempt_count, c.success, c.credits_used],
        "attempts": attempts, "analyses": analyses, "actions": actions,
    })
}

/// `app` stored the fifty deliveries of `call` once each and ends with the
/// call `in_order` has.
async fn assert_ends_as_in_order(app: &TestApp, in_order: &TestApp, call: &str) {
    assert_eq!(app.count("webhook_event").await, 50);
    assert_eq!(app.count("action").await, 44);
    assert_eq!(
        projection(app, call).await,
        projection(in_order, call).await,
        "{:?}",
        app.backend
    );
}

#[tokio::test]
async fn fifty_deliveries_of_one_call_sent_at_once_end_as_if_sent_in_order() {
    on_each_backend_and_batch(|backend, batch| async move {
        let bodies = fifty_deliveries("c_fifty");
        let in_order = TestApp::spawn_with(backend, |c| c.ingest_batch = batch).await;
        in_order.post_all(&bodies).await;

        let at_once = TestApp::spawn_with(backend, |c| c.ingest_batch = batch).await;
        at_once.post_all(&bodies[..1]).await;
        let answers = join_all(bodies[1..].iter().map(|b| at_once.post_webhook(b.clone()))).await;
        assert!(
            answers
                .iter()
                .all(|a| a.status == 200 && a.body["duplicate"] == false),
            "{backend:?}"
        );

        assert_ends_as_in_order(&at_once, &in_order, "c_fifty").await;
    })
    .await;
}

/// Two servers on one database (replicas): the fifty deliveries of one call,
/// each sent to either server, all at once, end as if sent in order to one.
/// Each server's writer loads the call and writes it back whole, so without
/// what serializes a call across servers (PostgreSQL: the call's version,
/// checked by the write; SQLite: its write lock) one server's write would
/// undo the other's.
#[tokio::test]
async fn two_servers_sharing_a_database_end_a_call_as_if_sent_in_order_to_one() {
    on_each_backend_and_batch(|backend, batch| async move {
        let bodies = fifty_deliveries("c_shared");
        let in_order = TestApp::spawn_with(backend, |c| c.ingest_batch = batch).await;
        in_order.post_all(&bodies).await;

        let first = TestApp::spawn_with(backend, |c| c.ingest_batch = batch).await;
        let second = first.spawn_sharing(|c| c.ingest_batch = batch).await;
        first.post_all(&bodies[..1]).await;
        let servers = [&first, &second];
        let answers = join_all(
            bodies[1..]
                .iter()
                .enumerate()
                .map(|(i, b)| servers[i % 2].post_webhook(b.clone())),
        )
        .await;
        assert!(
            answers
                .iter()
                .all(|a| a.status == 200 && a.body["duplicate"] == false),
            "{backend:?}: {:?}",
            answers.iter().map(|a| &a.body).collect::<Vec<_>>()
        );
        assert_ends_as_in_order(&first, &in_order, "c_shared").await;
    })
    .await;
}
