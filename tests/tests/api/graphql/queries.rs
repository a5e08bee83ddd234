//! `call(id)` with every field and nested list, `Call.events` sizes, and the
//! raw log through `events`.

use calltrail_tests::{TestApp, fixture, fixture_lines, on_each_backend};
use serde_json::{Value, json};

use super::{data, error_codes, ids};

const CALL: &str = r#"
query Call($id: ID!) {
  call(id: $id) {
    id status metadata startedAt endedAt durationSeconds recordingUrl detailUrl
    attemptCount reAttemptCount rescheduledCount finalStatus lifecycleEnded stale
    creditsUsed createdAt updatedAt
    attempts {
      id number status startedAt endedAt durationSeconds recordingUrl
      analysis { id success }
      events { id type }
    }
    analysis { id success summary requiredActions insights outcome creditsUsed creditsAvailable createdAt }
    analyses { id }
    actions { id kind reason payload status note callId call { id } createdAt handledAt }
    events { id cursor type callId receivedAt signatureVerified recognized payload }
  }
}"#;

#[tokio::test]
async fn a_call_answers_every_field_the_happy_path_implies() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let lines = fixture_lines("v1/happy-path.jsonl");
        let mut event_ids = Vec::new();
        for line in &lines {
            event_ids.push(app.post_webhook(line.clone()).await.event_id());
        }

        let answer = app.graphql(CALL, json!({"id": "c_7f3e2a90-happy"})).await;
        let call = &data(&answer)["call"];
        assert_eq!(call["id"], "c_7f3e2a90-happy");
        assert_eq!(call["status"], "COMPLETED");
        assert_eq!(
            call["metadata"],
            json!({"customer_id": "cus_1042", "order_ref": "ORD-7781"})
        );
        assert_eq!(call["startedAt"], "2026-11-20T10:00:04Z");
        assert_eq!(call["endedAt"], "2026-11-20T10:02:41Z");
        assert_eq!(call["durationSeconds"], 157.0);
        assert_eq!(
            call["recordingUrl"],
            "https://recordings.example.invalid/c_7f3e2a90.mp3"
        );
        assert_eq!(
            call["detailUrl"],
            "https://dashboard.example.invalid/calls/c_7f3e2a90"
        );
        assert_eq!(
            [
                &call["attemptCount"],
                &call["reAttemptCount"],
                &call["rescheduledCount"]
            ],
            [&json!(1), &json!(0), &json!(0)]
        );
        assert_eq!(call["finalStatus"], "completed");
        assert_eq!(
            (&call["lifecycleEnded"], &call["stale"]),
            (&json!(true), &json!(false))
        );
        assert_eq!(call["creditsUsed"], 2.5);
        assert!(call["createdAt"].as_str().unwrap() <= call["updatedAt"].as_str().unwrap());

        let attempts = call["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0]["number"], 1);
        assert_eq!(attempts[0]["status"], "COMPLETED");
        assert_eq!(attempts[0]["durationSeconds"], 157.0);
        assert_eq!(attempts[0]["analysis"]["success"], true);
        assert_eq!(attempts[0]["analysis"]["id"], call["analysis"]["id"]);
        assert_eq!(
            ids(&attempts[0]["events"]),
            event_ids,
            "every delivery applied to attempt 1"
        );

        let analysis = &call["analysis"];
        assert_eq!(
            analysis["summary"],
            "Customer confirmed a COD order for two units."
        );
        assert_eq!(analysis["requiredActions"], json!(["create-order"]));
        assert_eq!(
            analysis["insights"],
            json!({"sentiment": "positive", "intent": "order_placed"})
        );
        assert_eq!(analysis["outcome"], json!({}));
        assert_eq!(
            (&analysis["creditsUsed"], &analysis["creditsAvailable"]),
            (&json!(2.5), &json!(97.5))
        );
        assert_eq!(ids(&call["analyses"]), [analysis["id"].as_str().unwrap()]);

        let action = &call["actions"][0];
        assert_eq!(call["actions"].as_array().unwrap().len(), 1);
        assert_eq!(action["kind"], "create_order");
        assert_eq!(action["status"], "PENDING");
        assert_eq!(action["reason"], Value::Null);
        assert_eq!(action["payload"]["shippingAddress"]["city"], "Pune");
        assert_eq!(action["callId"], "c_7f3e2a90-happy");
        assert_eq!(action["call"]["id"], "c_7f3e2a90-happy");
        assert_eq!(action["handledAt"], Value::Null);

        let events = call["events"].as_array().unwrap();
        assert_eq!(ids(&call["events"]), event_ids, "oldest first");
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types[0], "call.initiate");
        assert_eq!(types[6], "call.lifecycle-ended");
        for (event, line) in events.iter().zip(&lines) {
            let sent: Value = serde_json::from_slice(line).unwrap();
            assert_eq!(event["payload"], sent, "the whole body as JSON");
            assert_eq!(event["callId"], "c_7f3e2a90-happy");
            assert_eq!(
                (&event["recognized"], &event["signatureVerified"]),
                (&json!(true), &json!(false))
            );
        }
        let cursors: Vec<&str> = events
            .iter()
            .map(|e| e["cursor"].as_str().unwrap())
            .collect();
        assert!(cursors.windows(2).all(|w| w[0] != w[1]));

        let missing = app.graphql(CALL, json!({"id": "c_nope"})).await;
        assert_eq!(data(&missing)["call"], Value::Null);
    })
    .await;
}

#[tokio::test]
async fn a_retried_call_lists_its_attempts_with_their_own_events_and_analysis() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        app.post_all(&fixture_lines("v1/retry-no-answer-busy.jsonl"))
            .await;
        let answer = app.graphql(CALL, json!({"id": "c_91b0d3c4-retry"})).await;
        let call = &data(&answer)["call"];
        let attempts = call["attempts"].as_array().unwrap();
        let summary: Vec<(i64, &str, usize, bool)> = attempts
            .iter()
            .map(|a| {
                (
                    a["number"].as_i64().unwrap(),
                    a["status"].as_str().unwrap(),
                    a["events"].as_array().unwrap().len(),
                    a["analysis"].is_null(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (1, "NO_ANSWER", 2, true),
                (2, "BUSY", 2, true),
                (3, "COMPLETED", 7, false)
            ],
            "{backend:?}"
        );
        assert_eq!(attempts[2]["id"], "c_91b0d3c4-retry#3");
        assert_eq!(call["analysis"]["success"], false);
        assert_eq!(call["actions"][0]["reason"], "missing_address");
        assert_eq!(call["reAttemptCount"], 2);
    })
    .await;
}

#[tokio::test]
async fn call_and_attempt_events_default_to_100_are_capped_at_1000_and_refuse_negatives() {
    use futures_util::StreamExt;
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let initiate = r#"{"event":{"type":"call.initiate","data":{"call":{"id":"c_chatty"}}}}"#;
        assert_eq!(app.post_webhook(initiate).await.status, 200);
        // An unknown type names the call (and its attempt) without changing
        // it: 1,001 distinct deliveries, 16 at a time.
        let answers: Vec<u16> = futures_util::stream::iter(0..1001)
            .map(|i| {
                let app = &app;
                async move {
                    let body = format!(r#"{{"event":{{"type":"call.note","data":{{"call":{{"id":"c_chatty"}},"n":{i}}}}}}}"#);
                    app.post_webhook(body).await.status
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        assert!(answers.iter().all(|s| *s == 200), "{backend:?}");
        for (query, list) in [
            (
                "query($first: Int) { call(id: \"c_chatty\") { events(first: $first) { id type } } }",
                "/call/events",
            ),
            (
                "query($first: Int) { call(id: \"c_chatty\") { attempts { events(first: $first) { id type } } } }",
                "/call/attempts/0/events",
            ),
        ] {
            let count = |answer: &calltrail_tests::Answer| {
                data(answer).pointer(list).and_then(Value::as_array).map_or(0, Vec::len)
            };
            assert_eq!(count(&app.graphql(query, json!({})).await), 100, "{backend:?} {list}");
            assert_eq!(count(&app.graphql(query, json!({"first": 5000})).await), 1000, "{backend:?} {list}");
            assert_eq!(count(&app.graphql(query, json!({"first": 0})).await), 0);
            let three = app.graphql(query, json!({"first": 3})).await;
            assert_eq!(
                data(&three).pointer(list).unwrap()[0]["type"],
                "call.initiate",
                "{list}: oldest first"
            );
            assert_eq!(count(&three), 3);
            let negative = app.graphql(query, json!({"first": -1})).await;
            assert_eq!(error_codes(&negative), ["BAD_USER_INPUT"], "{list}");
        }
    })
    .await;
}

/// A batched POST runs at most 20 operations: each is limited on its own,
/// so more would let one request ask for any amount of work.
#[tokio::test]
async fn a_batch_of_more_than_20_operations_is_refused_whole() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let send = |n: usize| {
            let batch: Vec<Value> = (0..n)
                .map(|_| json!({"query": "{ callStats { total } }"}))
                .collect();
            let request = app
                .client
                .post(format!("{}/graphql", app.address))
                .json(&batch);
            async move { calltrail_tests::Answer::from(request.send().await.unwrap()).await }
        };
        let twenty = send(20).await;
        assert_eq!(twenty.status, 200, "{backend:?}: {}", twenty.body);
        assert_eq!(twenty.body.as_array().map(Vec::len), Some(20));
        let too_many = send(21).await;
        assert_eq!(too_many.status, 400, "{}", too_many.body);
        assert_eq!(
            too_many.body["errors"][0]["extensions"]["code"],
            "BAD_REQUEST"
        );
        assert!(
            too_many.body.to_string().contains("at most 20"),
            "{}",
            too_many.body
        );
    })
    .await;
}

const EVENTS: &str = r#"
query Events($filter: EventFilter, $first: Int, $after: String) {
  events(filter: $filter, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { cursor node { id cursor type callId recognized payload } }
  }
}"#;

#[tokio::test]
async fn events_page_through_the_raw_log_in_commit_order_with_filters() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let mut stored = Vec::new();
        for line in fixture_lines("v1/happy-path.jsonl") {
            stored.push(app.post_webhook(line).await.event_id());
        }
        for name in ["unknown-type", "action-without-call"] {
            stored.push(app.post_webhook(fixture(&format!("edge/{name}.json"))).await.event_id());
        }

        let mut walked = Vec::new();
        let mut after = Value::Null;
        loop {
            let answer = app.graphql(EVENTS, json!({"first": 4, "after": after})).await;
            let page = &data(&answer)["events"];
            assert_eq!(page["totalCount"], stored.len());
            for edge in page["edges"].as_array().unwrap() {
                assert_eq!(edge["cursor"], edge["node"]["cursor"], "the edge cursor is the event's");
                walked.push(edge["node"]["id"].as_str().unwrap().to_owned());
            }
            if page["pageInfo"]["hasNextPage"] == false {
                break;
            }
            after = page["pageInfo"]["endCursor"].clone();
        }
        assert_eq!(walked, stored, "{backend:?}: every delivery once, in commit order");

        let unknown = app.graphql(EVENTS, json!({"filter": {"recognized": false}})).await;
        let page = &data(&unknown)["events"];
        assert_eq!(page["totalCount"], 1);
        assert_eq!(page["edges"][0]["node"]["type"], "call.transferred");
        assert_eq!(page["edges"][0]["node"]["payload"]["metadata"], json!({"x": 1}));

        let typed = json!({"filter": {"callId": "c_7f3e2a90-happy", "type": ["call.ended", "call.completed"]}});
        let answer = app.graphql(EVENTS, typed).await;
        let types: Vec<&str> = data(&answer)["events"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["call.ended", "call.completed"]);

        let orphan = app.graphql(EVENTS, json!({"filter": {"type": ["action"]}})).await;
        let edges = data(&orphan)["events"]["edges"].as_array().unwrap().clone();
        assert_eq!(edges.len(), 2);
        assert_eq!(edges[1]["node"]["callId"], Value::Null);

        let bad = app.graphql(EVENTS, json!({"after": "bm9wZQ"})).await;
        assert_eq!(error_codes(&bad), ["BAD_USER_INPUT"]);
    })
    .await;
}
