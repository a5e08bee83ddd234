//! No N+1: a page of calls with every nested field costs the same number of
//! SQL statements whatever its size, counted on the app's read pool.

use calltrail_tests::{TestApp, on_each_backend};
use serde_json::{Value, json};

use super::{data, seed_simulated};

const EVERYTHING: &str = r#"
query Everything($first: Int) {
  calls(first: $first) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { cursor node {
      id status metadata startedAt endedAt durationSeconds recordingUrl detailUrl
      attemptCount reAttemptCount rescheduledCount finalStatus lifecycleEnded stale
      creditsUsed createdAt updatedAt
      attempts {
        id number status startedAt endedAt durationSeconds recordingUrl
        analysis { id success summary requiredActions }
        events { id cursor type payload }
      }
      analysis { id success summary requiredActions insights outcome creditsUsed creditsAvailable createdAt }
      analyses { id success }
      actions { id kind reason payload status note callId createdAt handledAt
        call { id status attempts { id status } } }
      events { id cursor type callId receivedAt signatureVerified recognized payload }
    } }
  }
}"#;

/// Statements the read pool ran for one request, and its answer.
async fn statements_for(app: &TestApp, first: i64) -> (u64, Value) {
    let before = app.read_statements.get();
    let answer = app.graphql(EVERYTHING, json!({ "first": first })).await;
    let page = data(&answer)["calls"].clone();
    (app.read_statements.get() - before, page)
}

fn count(page: &Value, list: &str) -> usize {
    page["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"][list].as_array().unwrap().len())
        .sum()
}

#[tokio::test]
async fn a_page_of_100_calls_with_every_nested_field_costs_as_many_statements_as_a_page_of_20() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        seed_simulated(&app, 0..110).await;

        let (small, page20) = statements_for(&app, 20).await;
        let (large, page100) = statements_for(&app, 100).await;
        assert_eq!(page100["edges"].as_array().unwrap().len(), 100);
        for page in [&page20, &page100] {
            assert!(count(page, "actions") > 0, "the page exercises Action.call");
            assert!(count(page, "analyses") > 0 && count(page, "events") > 0);
        }
        assert_eq!(
            small, large,
            "{backend:?}: statements must not grow with the page ({small} for 20 calls, {large} for 100)"
        );
        // page, totalCount, attempts, analyses, actions, events, attempt
        // events, Action.call and that call's attempts: one each, and a
        // second analyses batch for Attempt.analysis at most.
        assert!(large <= 10, "{backend:?}: {large} statements for one page");
    })
    .await;
}
