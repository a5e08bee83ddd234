//! The GraphQL API (CONTRACT §3) through HTTP, on SQLite and PostgreSQL.
//! Data is seeded only through the webhook: the fixtures and the
//! simulator's realistic lifecycles.

mod actions;
mod cost;
mod filters;
mod http;
mod pages;
mod queries;
mod schema;
mod stats;

use calltrail_tests::{Answer, TestApp, fixture_lines};
use entity::call;
use futures_util::StreamExt;
use sea_orm::{EntityTrait, QueryOrder};
use serde_json::Value;

/// The generator seed every simulated test uses.
pub const SEED: u64 = 7;

/// The `data` of a successful GraphQL answer (HTTP 200, no `errors`).
pub fn data(answer: &Answer) -> &Value {
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.body.get("errors").is_none(),
        "unexpected errors: {}",
        answer.body
    );
    &answer.body["data"]
}

/// The `extensions.code` of every error of an answer.
pub fn error_codes(answer: &Answer) -> Vec<String> {
    answer.body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("expected errors: {}", answer.body))
        .iter()
        .map(|e| e["extensions"]["code"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// The `id` of every item of a list of nodes.
pub fn ids(nodes: &Value) -> Vec<String> {
    nodes
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {nodes}"))
        .iter()
        .map(|n| n["id"].as_str().expect("an id").to_owned())
        .collect()
}

/// Post the simulator's lifecycles `calls` (eight calls at a time, each
/// call's deliveries in order), asserting every one is stored.
pub async fn seed_simulated(app: &TestApp, calls: std::ops::Range<usize>) {
    futures_util::stream::iter(calls)
        .for_each_concurrent(8, |i| async move {
            for body in calltrail::simulate::lifecycle(SEED, i) {
                let answer = app.post_webhook(body).await;
                assert_eq!(answer.status, 200, "{:?}: {}", app.backend, answer.body);
            }
        })
        .await;
}

/// Post the three v1 fixture sequences.
pub async fn seed_fixtures(app: &TestApp) {
    for name in [
        "happy-path",
        "retry-no-answer-busy",
        "rescheduled-then-invalid",
    ] {
        app.post_all(&fixture_lines(&format!("v1/{name}.jsonl")))
            .await;
    }
}

/// Every call row, through the test's own connection.
pub async fn call_rows(app: &TestApp) -> Vec<call::Model> {
    call::Entity::find()
        .order_by_asc(call::Column::Id)
        .all(&app.db)
        .await
        .expect("calls")
}
