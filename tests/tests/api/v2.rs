//! The platform's v2 webhooks (issue 7) on the same route, into the same
//! tables as v1: signatures with a replay window, normalization of every v2
//! type, dedupe on the event id, mixed histories and `simulate --format v2`.

mod dedupe;
mod history;
mod normalization;
mod signatures;
mod simulate;

use serde_json::Value;

/// The lines of a v2 fixture as JSON, to read ids and fields from.
pub fn lines_json(path: &str) -> Vec<Value> {
    calltrail_tests::fixture_lines(path)
        .iter()
        .map(|l| serde_json::from_slice(l).expect("a fixture line is JSON"))
        .collect()
}

/// `data.call.id` of a v2 delivery.
pub fn call_id(event: &Value) -> String {
    event["data"]["call"]["id"]
        .as_str()
        .expect("a call id")
        .to_owned()
}
