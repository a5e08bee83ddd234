//! The action inbox: `actions` pages and filters, and `acknowledgeAction`
//! with its error codes.

use calltrail_tests::{TestApp, fixture, on_each_backend};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{data, error_codes, ids, seed_fixtures, seed_simulated};

const ACTIONS: &str = r#"
query Actions($filter: ActionFilter, $first: Int, $after: String) {
  actions(filter: $filter, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage endCursor }
    nodes { id kind status callId call { id } }
  }
}"#;

const ACKNOWLEDGE: &str = r#"
mutation Ack($id: ID!, $status: ActionStatus!, $note: String) {
  acknowledgeAction(id: $id, status: $status, note: $note) { id kind status note handledAt callId }
}"#;

async fn actions(app: &TestApp, variables: Value) -> Value {
    data(&app.graphql(ACTIONS, variables).await)["actions"].clone()
}

#[tokio::test]
async fn the_inbox_pages_oldest_first_and_filters_by_kind_status_and_call() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        seed_simulated(&app, 0..40).await;
        seed_fixtures(&app).await;
        assert_eq!(
            app.post_webhook(fixture("edge/action-without-call.json"))
                .await
                .status,
            200
        );
        let stored = app.count("action").await as usize;
        assert!(stored > 10, "the seed has actions");

        let mut walked: Vec<i64> = Vec::new();
        let mut after = Value::Null;
        loop {
            let page = actions(&app, json!({"first": 7, "after": after})).await;
            assert_eq!(page["totalCount"], stored);
            walked.extend(
                ids(&page["nodes"])
                    .iter()
                    .map(|id| id.parse::<i64>().unwrap()),
            );
            if page["pageInfo"]["hasNextPage"] == false {
                break;
            }
            after = page["pageInfo"]["endCursor"].clone();
        }
        assert_eq!(walked.len(), stored);
        assert!(
            walked.windows(2).all(|w| w[0] < w[1]),
            "{backend:?}: oldest first, once each"
        );

        let all = actions(&app, json!({"first": 100})).await;
        let nodes = all["nodes"].as_array().unwrap().clone();
        for node in &nodes {
            assert_eq!(
                node["call"]["id"], node["callId"],
                "Action.call is its call"
            );
        }
        let count_of = |kind: &str| nodes.iter().filter(|n| n["kind"] == kind).count();
        let whatsapp = actions(
            &app,
            json!({"filter": {"kind": ["send_whatsapp"]}, "first": 100}),
        )
        .await;
        assert_eq!(whatsapp["totalCount"], count_of("send_whatsapp"));
        let two = actions(
            &app,
            json!({"filter": {"kind": ["send_whatsapp", "create_order"]}, "first": 100}),
        )
        .await;
        assert_eq!(
            two["totalCount"],
            count_of("send_whatsapp") + count_of("create_order")
        );
        let of_call = actions(&app, json!({"filter": {"callId": "c_91b0d3c4-retry"}})).await;
        assert_eq!(of_call["nodes"].as_array().unwrap().len(), 1);
        assert_eq!(of_call["nodes"][0]["kind"], "send_whatsapp");
        let orphan = nodes
            .iter()
            .find(|n| n["callId"].is_null())
            .expect("the orphan action");
        assert_eq!(orphan["call"], Value::Null);

        let pending = actions(&app, json!({"filter": {"status": ["PENDING"]}})).await;
        assert_eq!(pending["totalCount"], stored);
        let handled = actions(&app, json!({"filter": {"status": ["HANDLED", "FAILED"]}})).await;
        assert_eq!(handled["totalCount"], 0);
    })
    .await;
}

#[tokio::test]
async fn acknowledging_an_action_sets_status_note_and_handled_at() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        seed_fixtures(&app).await;
        let inbox = actions(&app, json!({"filter": {"status": ["PENDING"]}})).await;
        let id = inbox["nodes"][0]["id"].as_str().unwrap().to_owned();

        let before = Utc::now();
        let answer = app
            .graphql(
                ACKNOWLEDGE,
                json!({"id": id, "status": "HANDLED", "note": "order #1001 created"}),
            )
            .await;
        let after = Utc::now();
        let acked = &data(&answer)["acknowledgeAction"];
        assert_eq!(acked["id"], id);
        assert_eq!(acked["status"], "HANDLED");
        assert_eq!(acked["note"], "order #1001 created");
        let handled_at: DateTime<Utc> = acked["handledAt"].as_str().unwrap().parse().unwrap();
        assert!(
            handled_at >= before - chrono::TimeDelta::milliseconds(1) && handled_at <= after,
            "{backend:?}: {handled_at}"
        );

        // The inbox sees it, and reads back the same values.
        let pending = actions(&app, json!({"filter": {"status": ["PENDING"]}})).await;
        assert!(!ids(&pending["nodes"]).contains(&id));
        let query = "{ actions(filter: {status: [HANDLED]}) { nodes { id note handledAt } } }";
        let read = app.graphql(query, Value::Null).await;
        assert_eq!(
            data(&read)["actions"]["nodes"][0]["handledAt"],
            acked["handledAt"]
        );

        let failed = app
            .graphql(ACKNOWLEDGE, json!({"id": id, "status": "FAILED"}))
            .await;
        let failed = &data(&failed)["acknowledgeAction"];
        assert_eq!(
            (&failed["status"], &failed["note"]),
            (&json!("FAILED"), &Value::Null)
        );
        assert!(failed["handledAt"].is_string());

        let reopened = app
            .graphql(
                ACKNOWLEDGE,
                json!({"id": id, "status": "PENDING", "note": "retry"}),
            )
            .await;
        let reopened = &data(&reopened)["acknowledgeAction"];
        assert_eq!(
            (&reopened["status"], &reopened["handledAt"]),
            (&json!("PENDING"), &Value::Null)
        );
    })
    .await;
}

#[tokio::test]
async fn acknowledging_an_unknown_or_malformed_id_is_an_error_with_a_code() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        seed_fixtures(&app).await;
        let unknown = app
            .graphql(ACKNOWLEDGE, json!({"id": "999999", "status": "HANDLED"}))
            .await;
        assert_eq!(unknown.status, 200);
        assert_eq!(error_codes(&unknown), ["NOT_FOUND"], "{backend:?}");
        assert_eq!(unknown.body["data"], Value::Null);
        assert_eq!(
            unknown.body["errors"][0]["path"],
            json!(["acknowledgeAction"])
        );

        let malformed = app
            .graphql(
                ACKNOWLEDGE,
                json!({"id": "not-a-number", "status": "HANDLED"}),
            )
            .await;
        assert_eq!(error_codes(&malformed), ["BAD_USER_INPUT"]);

        let bad_status = app
            .graphql(ACKNOWLEDGE, json!({"id": "1", "status": "DONE"}))
            .await;
        assert_eq!(error_codes(&bad_status), ["GRAPHQL_VALIDATION_FAILED"]);
        assert_eq!(app.count("action").await, 2, "nothing written");
    })
    .await;
}

/// Two workers claiming one action (`expectedStatus: PENDING`): exactly
/// one succeeds, the other gets CONFLICT and changes nothing; a condition
/// that does not hold changes nothing either.
#[tokio::test]
async fn of_two_workers_claiming_one_action_exactly_one_succeeds() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        seed_fixtures(&app).await;
        let inbox = actions(&app, json!({"filter": {"status": ["PENDING"]}})).await;
        let id = inbox["nodes"][0]["id"].as_str().unwrap().to_owned();
        const CLAIM: &str = r#"
        mutation Claim($id: ID!, $note: String) {
          acknowledgeAction(id: $id, status: HANDLED, note: $note, expectedStatus: PENDING) { status note }
        }"#;
        let (a, b) = tokio::join!(
            app.graphql(CLAIM, json!({"id": id, "note": "worker a"})),
            app.graphql(CLAIM, json!({"id": id, "note": "worker b"})),
        );
        let won: Vec<_> = [&a, &b]
            .into_iter()
            .filter(|answer| answer.body["errors"].is_null())
            .collect();
        assert_eq!(won.len(), 1, "{backend:?}: {} / {}", a.body, b.body);
        let lost = if won[0].body == a.body { &b } else { &a };
        assert_eq!(error_codes(lost), ["CONFLICT"], "{backend:?}");
        assert!(
            lost.body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("is HANDLED, not PENDING"),
            "{}",
            lost.body
        );
        let winner = won[0].body["data"]["acknowledgeAction"]["note"].clone();
        let stored = app
            .graphql(
                "{ actions(filter: {status: [HANDLED]}) { nodes { id note } } }",
                Value::Null,
            )
            .await;
        assert_eq!(
            data(&stored)["actions"]["nodes"],
            json!([{"id": id, "note": winner}]),
            "{backend:?}: the winner's note, once"
        );

        // Re-opening only what is FAILED: it is HANDLED, so nothing changes.
        let reopen = app
            .graphql(
                "mutation($id: ID!) { acknowledgeAction(id: $id, status: PENDING, expectedStatus: FAILED) { id } }",
                json!({"id": id}),
            )
            .await;
        assert_eq!(error_codes(&reopen), ["CONFLICT"]);
        let still = app
            .graphql(
                "{ actions(filter: {status: [HANDLED]}) { nodes { id note handledAt } } }",
                Value::Null,
            )
            .await;
        assert_eq!(data(&still)["actions"]["nodes"][0]["note"], winner);
        assert!(data(&still)["actions"]["nodes"][0]["handledAt"].is_string());
        // An unknown id stays NOT_FOUND, condition or not.
        let unknown = app
            .graphql(
                "mutation { acknowledgeAction(id: \"999999\", status: HANDLED, expectedStatus: PENDING) { id } }",
                Value::Null,
            )
            .await;
        assert_eq!(error_codes(&unknown), ["NOT_FOUND"]);
    })
    .await;
}
