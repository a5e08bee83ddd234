//! A v1 history and a v2 history in one database answer the same GraphQL
//! queries: the v2 fixture `completed` is the v1 `happy-path` call (same
//! times and duration) in the other format, so where both formats say a
//! thing, both calls answer it alike.

use std::time::Duration;

use calltrail_tests::{TestApp, fixture_lines, on_each_backend};
use serde_json::{Value, json};

use super::{call_id, lines_json};
use crate::graphql::data;

const V1_CALL: &str = "c_7f3e2a90-happy";

/// What both formats say about a call.
const SHARED: &str = "status attemptCount startedAt endedAt durationSeconds lifecycleEnded stale
  reAttemptCount rescheduledCount finalStatus
  attempts { number status startedAt endedAt durationSeconds }";

async fn seeded(backend: calltrail_tests::Backend) -> (TestApp, String) {
    // Every unfinished call is stale at once: only the end of a lifecycle keeps a call fresh.
    let app = TestApp::spawn_with(backend, |c| c.stale_after = Duration::ZERO).await;
    app.post_all(&fixture_lines("v1/happy-path.jsonl")).await;
    app.post_all(&fixture_lines("v2/completed.jsonl")).await;
    // A v2 call that was only queued so far.
    app.post_all(&fixture_lines("v2/aborted.jsonl")[..1]).await;
    (app, call_id(&lines_json("v2/completed.jsonl")[0]))
}

async fn call(app: &TestApp, id: &str, fields: &str) -> Value {
    let query = format!("query($id: ID!) {{ call(id: $id) {{ {fields} }} }}");
    data(&app.graphql(&query, json!({"id": id})).await)["call"].clone()
}

#[tokio::test]
async fn call_by_id_answers_alike_and_only_v2_has_the_v2_fields() {
    on_each_backend(|backend| async move {
        let (app, v2_call) = seeded(backend).await;
        let v1 = call(&app, V1_CALL, SHARED).await;
        let v2 = call(&app, &v2_call, SHARED).await;
        assert_eq!(v1, v2, "{backend:?}");
        assert_eq!(
            (&v1["status"], &v1["lifecycleEnded"], &v1["stale"]),
            (&json!("COMPLETED"), &json!(true), &json!(false))
        );

        let only = "to agentId endedReason cost { amount currency perMinute }";
        assert_eq!(
            call(&app, V1_CALL, only).await,
            json!({"to": null, "agentId": null, "endedReason": null, "cost": null}),
            "{backend:?}"
        );
        assert_eq!(
            call(&app, &v2_call, only).await,
            json!({"to": "+919812345678", "agentId": "agt_01JX8M2Q4R6T8V0W2Y4Z6A8B0C",
                   "endedReason": "customer_ended_call",
                   "cost": {"amount": 6.54, "currency": "INR", "perMinute": 2.5}}),
            "{backend:?}"
        );
        let v1_only = "metadata analysis { success } actions { kind }";
        assert_eq!(
            call(&app, &v2_call, v1_only).await,
            json!({"metadata": null, "analysis": null, "actions": []})
        );
    })
    .await;
}

async fn events_of(app: &TestApp, call: &str) -> Value {
    let answer = app
        .graphql(
            "query($c: ID) { events(filter: {callId: $c}) { totalCount nodes { format upstreamId } } }",
            json!({"c": call}),
        )
        .await;
    data(&answer)["events"].clone()
}

#[tokio::test]
async fn calls_events_and_call_stats_take_both_formats() {
    on_each_backend(|backend| async move {
        let (app, v2_call) = seeded(backend).await;
        let queued = call_id(&lines_json("v2/aborted.jsonl")[0]);
        let answer = app
            .graphql(
                "{ ended: calls(filter: {lifecycleEnded: true, status: [COMPLETED]}, orderBy: {field: CREATED_AT, direction: ASC}) {
                     totalCount nodes { id durationSeconds } }
                   stale: calls(filter: {stale: true}) { nodes { id status } }
                   completed: events(filter: {type: [\"call.completed\"]}) { nodes { callId format upstreamId } }
                   callStats(filter: {lifecycleEnded: true}) {
                     total byStatus { status count } connectRate attemptsPerCall averageDurationSeconds
                     successRate creditsUsed } }",
                json!({}),
            )
            .await;
        let d = data(&answer);
        assert_eq!(
            d["ended"],
            json!({"totalCount": 2, "nodes": [
                {"id": V1_CALL, "durationSeconds": 157.0},
                {"id": v2_call, "durationSeconds": 157.0}]}),
            "{backend:?}"
        );
        assert_eq!(d["stale"]["nodes"], json!([{"id": queued, "status": "INITIATE"}]));
        let v2_completed = &lines_json("v2/completed.jsonl")[2];
        assert_eq!(
            d["completed"]["nodes"],
            json!([
                {"callId": V1_CALL, "format": "V1", "upstreamId": null},
                {"callId": v2_call, "format": "V2", "upstreamId": v2_completed["id"]},
            ]),
            "{backend:?}"
        );
        assert_eq!(
            d["callStats"],
            json!({"total": 2, "byStatus": [{"status": "COMPLETED", "count": 2}],
                   "connectRate": 1.0, "attemptsPerCall": 1.0, "averageDurationSeconds": 157.0,
                   "successRate": 1.0, "creditsUsed": 2.5}),
            "{backend:?}: analyses and credits are v1's alone"
        );

        let v1_events = events_of(&app, V1_CALL).await;
        assert_eq!(v1_events["totalCount"], 7);
        assert!(v1_events["nodes"].as_array().unwrap().iter().all(|n| *n == json!({"format": "V1", "upstreamId": null})));
        let v2_events = events_of(&app, &v2_call).await;
        let ids: Vec<_> = lines_json("v2/completed.jsonl").iter().map(|e| json!({"format": "V2", "upstreamId": e["id"]})).collect();
        assert_eq!(v2_events["nodes"], json!(ids), "{backend:?}");
    })
    .await;
}

#[tokio::test]
async fn reprocessing_a_mixed_log_gives_back_the_same_calls() {
    on_each_backend(|backend| async move {
        let (app, v2_call) = seeded(backend).await;
        let everything = format!(
            "{SHARED} to agentId endedReason cost {{ amount currency perMinute }} metadata"
        );
        let before = (
            call(&app, V1_CALL, &everything).await,
            call(&app, &v2_call, &everything).await,
        );
        let summary = calltrail::ingest::reprocess(&app.db, None).await.unwrap();
        assert_eq!(
            (summary.calls, summary.now_duplicates),
            (3, 0),
            "{backend:?}"
        );
        let after = (
            call(&app, V1_CALL, &everything).await,
            call(&app, &v2_call, &everything).await,
        );
        assert_eq!(after, before, "{backend:?}");
    })
    .await;
}
