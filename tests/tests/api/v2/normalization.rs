//! Every v2 type becomes the status and fields the table gives it,
//! as GraphQL shows them.

use calltrail_tests::{TestApp, fixture, fixture_lines, on_each_backend_and_batch};
use serde_json::{Value, json};

use super::{call_id, lines_json};
use crate::graphql::data;

const CALL: &str = "query($id: ID!) { call(id: $id) {
  status attemptCount lifecycleEnded finalStatus reAttemptCount rescheduledCount
  to agentId endedReason cost { amount currency perMinute }
  startedAt endedAt durationSeconds metadata
  attempts { number status }
  events { type format upstreamId recognized }
} }";

/// What GraphQL says of the call of a v2 fixture's deliveries.
async fn call_of(app: &TestApp, events: &[Value]) -> Value {
    let answer = app.graphql(CALL, json!({"id": call_id(&events[0])})).await;
    data(&answer)["call"].clone()
}

/// The call's `events` as v2 deliveries of these types.
fn v2_events(events: &[Value]) -> Value {
    events
        .iter()
        .map(|e| json!({"type": e["type"], "format": "V2", "upstreamId": e["id"], "recognized": true}))
        .collect()
}

#[tokio::test]
async fn every_v2_type_normalizes_to_its_status_and_fields() {
    on_each_backend_and_batch(|backend, batch| async move {
        let app = TestApp::spawn_with(backend, |c| c.ingest_batch = batch).await;
        for file in ["completed", "voicemail", "failed", "aborted"] {
            app.post_all(&fixture_lines(&format!("v2/{file}.jsonl")))
                .await;
        }
        let cost = |amount: f64| json!({"amount": amount, "currency": "INR", "perMinute": 2.5});

        // call.queued → call.started → call.completed
        let completed = lines_json("v2/completed.jsonl");
        assert_eq!(
            call_of(&app, &completed).await,
            json!({
                "status": "COMPLETED", "attemptCount": 1, "lifecycleEnded": true,
                "finalStatus": "completed", "reAttemptCount": 0, "rescheduledCount": 0,
                "to": "+919812345678", "agentId": "agt_01JX8M2Q4R6T8V0W2Y4Z6A8B0C",
                "endedReason": "customer_ended_call", "cost": cost(6.54),
                "startedAt": "2026-11-20T10:00:04Z", "endedAt": "2026-11-20T10:02:41Z",
                "durationSeconds": 157.0, "metadata": null,
                "attempts": [{"number": 1, "status": "COMPLETED"}],
                "events": v2_events(&completed),
            }),
            "{backend:?} batch {batch}"
        );

        // call.voicemail: a status of its own.
        let voicemail = lines_json("v2/voicemail.jsonl");
        let call = call_of(&app, &voicemail).await;
        assert_eq!(
            (
                &call["status"],
                &call["endedReason"],
                &call["durationSeconds"],
                &call["cost"]
            ),
            (
                &json!("VOICEMAIL"),
                &json!("voicemail_detected"),
                &json!(24.0),
                &cost(1.0)
            ),
            "{backend:?}"
        );
        assert_eq!(call["finalStatus"], "voicemail");
        assert_eq!(call["events"], v2_events(&voicemail));

        // call.failed: its data.call.status says which failure.
        let failed = lines_json("v2/failed.jsonl");
        let expected = [
            ("NO_ANSWER", "no_answer", "customer_did_not_answer"),
            ("BUSY", "busy", "customer_busy"),
            ("FAILED", "failed", "carrier_error"),
            ("TIMEOUT", "timeout", "ring_timeout"),
        ];
        for (pair, (status, word, reason)) in failed.chunks(2).zip(expected) {
            let call = call_of(&app, pair).await;
            assert_eq!(
                (&call["status"], &call["finalStatus"], &call["endedReason"]),
                (&json!(status), &json!(word), &json!(reason)),
                "{backend:?}"
            );
            assert_eq!(call["attempts"], json!([{"number": 1, "status": status}]));
            assert_eq!(
                (&call["lifecycleEnded"], &call["cost"]),
                (&json!(true), &cost(0.0))
            );
            assert_eq!(
                (&call["startedAt"], &call["durationSeconds"]),
                (&Value::Null, &Value::Null)
            );
            assert_eq!(call["to"], pair[0]["data"]["call"]["to"]);
        }

        // call.aborted
        let aborted = lines_json("v2/aborted.jsonl");
        let call = call_of(&app, &aborted).await;
        assert_eq!(
            (
                &call["status"],
                &call["endedReason"],
                &call["cost"],
                &call["lifecycleEnded"]
            ),
            (
                &json!("ABORTED"),
                &json!("aborted_via_api"),
                &Value::Null,
                &json!(true)
            ),
            "{backend:?}"
        );

        // The new status filters and counts like any other.
        let answer = app
            .graphql(
                "{ calls(filter: {status: [VOICEMAIL, NO_ANSWER]}) { totalCount }
                   callStats { total byStatus { status count } connectRate } }",
                json!({}),
            )
            .await;
        let d = data(&answer);
        assert_eq!(d["calls"]["totalCount"], 2, "{backend:?}");
        assert_eq!(d["callStats"]["total"], 7);
        assert_eq!(
            d["callStats"]["byStatus"],
            json!([
                {"status": "COMPLETED", "count": 1}, {"status": "TIMEOUT", "count": 1},
                {"status": "FAILED", "count": 1}, {"status": "BUSY", "count": 1},
                {"status": "NO_ANSWER", "count": 1}, {"status": "ABORTED", "count": 1},
                {"status": "VOICEMAIL", "count": 1},
            ])
        );
        // Connected: the calls that were started (completed and voicemail).
        let connect_rate = d["callStats"]["connectRate"].as_f64().unwrap();
        assert!((connect_rate - 2.0 / 7.0).abs() < 1e-9, "{connect_rate}");
    })
    .await;
}

#[tokio::test]
async fn an_unknown_v2_type_is_kept_with_no_other_effect() {
    on_each_backend_and_batch(|backend, batch| async move {
        let app = TestApp::spawn_with(backend, |c| c.ingest_batch = batch).await;
        let completed = lines_json("v2/completed.jsonl");
        app.post_all(&fixture_lines("v2/completed.jsonl")).await;
        let before = call_of(&app, &completed).await;
        let answer = app.post_webhook(fixture("v2/unknown-type.json")).await;
        assert_eq!(answer.status, 200, "{backend:?}: {}", answer.body);
        let after = call_of(&app, &completed).await;
        let without_events = |call: &serde_json::Value| {
            let mut call = call.clone();
            call.as_object_mut().unwrap().remove("events");
            call
        };
        assert_eq!(
            without_events(&after),
            without_events(&before),
            "{backend:?}: the call, every field, unchanged"
        );
        assert_eq!(
            (
                app.count("attempt").await,
                app.count("analysis").await,
                app.count("action").await
            ),
            (1, 0, 0),
            "{backend:?}"
        );
        let last = after["events"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(
            (&last["type"], &last["format"], &last["recognized"]),
            (&json!("call.transcript_ready"), &json!("V2"), &json!(false)),
            "{backend:?}"
        );
    })
    .await;
}
