//! `callEvents` carries v1 and v2 deliveries alike, in commit order, each
//! with its format and the call as of it; a v2 retry sends nothing.

use calltrail_tests::{TestApp, fixture, fixture_lines, on_each_backend};
use serde_json::{Value, json};

use super::client::{Client, cursor_now};

const MIXED: &str = "subscription($after: String, $types: [String!]) {
  callEvents(after: $after, types: $types) {
    event { id type format upstreamId callId }
    call { id status lifecycleEnded to cost { amount } }
  }
}";

fn upstream_id(line: &[u8]) -> Value {
    serde_json::from_slice::<Value>(line).unwrap()["id"].clone()
}

#[tokio::test]
async fn call_events_carry_v1_and_v2_deliveries_in_commit_order() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let mut everything = Client::connect(&app.address, None).await;
        let mut completions = Client::connect(&app.address, None).await;
        let from = cursor_now(&app.address, None).await;
        everything.subscribe("1", MIXED, json!({"after": from})).await;
        completions
            .subscribe("1", MIXED, json!({"after": from, "types": ["call.completed"]}))
            .await;

        let v1 = fixture_lines("v1/happy-path.jsonl");
        let v2 = fixture_lines("v2/completed.jsonl");
        let v2_call = serde_json::from_slice::<Value>(&v2[0]).unwrap()["data"]["call"]["id"].clone();
        // Interleaved, as two integrations mid-migration send them; the v2
        // retry is a duplicate and sends nothing.
        let sends = [&v1[0], &v2[0], &v1[1], &v2[1], &v1[3], &v2[2], &v1[4]];
        let mut ids = Vec::new();
        for (n, body) in sends.iter().enumerate() {
            ids.push(app.post_webhook((*body).clone()).await.event_id());
            if n == 5 {
                let retry = app.post_webhook(fixture("v2/completed-retry.json")).await;
                assert_eq!(retry.body["duplicate"], true, "{backend:?}");
            }
        }

        let v1_event = |t: &str, status: &str| {
            json!({"type": t, "format": "V1", "upstreamId": null, "callId": "c_7f3e2a90-happy",
                   "status": status, "lifecycleEnded": false, "to": null, "cost": null})
        };
        let v2_event = |line: &Vec<u8>, t: &str, status: &str, ended: bool, cost: Value| {
            json!({"type": t, "format": "V2", "upstreamId": upstream_id(line), "callId": v2_call,
                   "status": status, "lifecycleEnded": ended, "to": "+919812345678", "cost": cost})
        };
        let expected = [
            v1_event("call.initiate", "INITIATE"),
            v2_event(&v2[0], "call.queued", "INITIATE", false, Value::Null),
            v1_event("call.in-progress", "IN_PROGRESS"),
            v2_event(&v2[1], "call.started", "IN_PROGRESS", false, Value::Null),
            v1_event("call.ended", "ENDED"),
            v2_event(&v2[2], "call.completed", "COMPLETED", true, json!({"amount": 6.54})),
            v1_event("call.completed", "COMPLETED"),
        ];
        let flat = |m: &Value| {
            let (e, c) = (&m["event"], &m["call"]);
            assert_eq!(e["callId"], c["id"]);
            json!({"type": e["type"], "format": e["format"], "upstreamId": e["upstreamId"],
                   "callId": e["callId"], "status": c["status"], "lifecycleEnded": c["lifecycleEnded"],
                   "to": c["to"], "cost": c["cost"]})
        };
        for (n, want) in expected.iter().enumerate() {
            let m = everything.next_call_event().await;
            assert_eq!(m["event"]["id"], ids[n].as_str(), "{backend:?}: commit order");
            assert_eq!(flat(&m), *want, "{backend:?}: message {n}");
        }
        // A type filter matches the type as sent, whatever the format.
        for n in [5, 6] {
            let m = completions.next_call_event().await;
            assert_eq!(flat(&m), expected[n], "{backend:?}");
        }
    })
    .await;
}
