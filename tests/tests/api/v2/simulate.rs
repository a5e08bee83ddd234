//! `calltrail simulate --format v2`, the real binary against a real server
//! that checks v2 signatures.

use std::process::Output;

use calltrail_tests::{fresh_database, on_each_backend};
use serde_json::{Value, json};

use crate::process::start_server_with;

const SECRET: &str = "whsec_simulate_0123456789abcdef";

async fn simulate(url: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_calltrail-under-test"))
        .env_clear()
        .args([
            "simulate",
            "--url",
            url,
            "--format",
            "v2",
            "--concurrency",
            "4",
        ])
        .args(args)
        .output()
        .await
        .expect("simulate runs")
}

/// The `sent N  stored N  duplicates N  errors N` figures of a run's summary.
fn figures(output: &Output) -> [usize; 4] {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let words: Vec<&str> = stdout.split_whitespace().collect();
    ["sent", "stored", "duplicates", "errors"].map(|name| {
        let at = words
            .iter()
            .position(|w| *w == name)
            .unwrap_or_else(|| panic!("{name} in {stdout}"));
        words[at + 1].parse().expect("a count")
    })
}

#[tokio::test]
async fn simulate_format_v2_sends_signed_v2_lifecycles_that_graphql_then_reports() {
    on_each_backend(|backend| async move {
        let database = fresh_database(backend).await;
        let (_server, url) =
            start_server_with(&database, &[("CALLTRAIL_WEBHOOK_SECRETS", SECRET)]).await;
        let signed = ["--calls", "40", "--seed", "11", "--secret", SECRET];

        let first = simulate(&url, &signed).await;
        assert!(first.status.success(), "{backend:?}: {}", String::from_utf8_lossy(&first.stderr));
        let [sent, stored, duplicates, errors] = figures(&first);
        assert_eq!((stored, duplicates, errors), (sent, 0, 0), "{backend:?}");
        assert!(sent >= 80, "two or three deliveries per call: {sent}");

        let answer: Value = reqwest::Client::new()
            .post(format!("{url}/graphql"))
            .json(&json!({"query": "{ callStats { total attemptsPerCall }
                open: calls(filter: {lifecycleEnded: false}) { totalCount }
                v2: events(first: 100) { totalCount nodes { format upstreamId signatureVerified } } }"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let d = &answer["data"];
        assert_eq!(d["callStats"], json!({"total": 40, "attemptsPerCall": 1.0}), "{backend:?}: {answer}");
        assert_eq!(d["open"]["totalCount"], 0, "every v2 lifecycle ended");
        assert_eq!(d["v2"]["totalCount"], sent);
        for node in d["v2"]["nodes"].as_array().unwrap() {
            assert_eq!((&node["format"], &node["signatureVerified"]), (&json!("V2"), &json!(true)));
            assert!(node["upstreamId"].as_str().is_some_and(|id| id.starts_with("evt_")));
        }

        // The same seed again: the same event ids, every one a duplicate.
        let again = simulate(&url, &signed).await;
        assert_eq!(figures(&again), [sent, 0, sent, 0], "{backend:?}");
        // Unsigned, the server refuses them all and simulate says so.
        let unsigned = simulate(&url, &["--calls", "3", "--seed", "12"]).await;
        assert!(!unsigned.status.success());
        let [sent, stored, _, errors] = figures(&unsigned);
        assert_eq!((stored, errors), (0, sent), "{backend:?}");
    })
    .await;
}
