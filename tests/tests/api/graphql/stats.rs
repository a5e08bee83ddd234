//! `callStats` against the seeded data: every figure recomputed here from
//! the stored rows, over all calls and over a filtered selection.

use std::collections::BTreeMap;

use calltrail_tests::{TestApp, on_each_backend};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use entity::{action, analysis, attempt, call};
use sea_orm::EntityTrait;
use serde_json::{Value, json};

use super::{call_rows, data, seed_fixtures, seed_simulated};

const STATS: &str = r#"
query Stats($filter: CallFilter) {
  callStats(filter: $filter) {
    total
    byStatus { status count }
    successRate connectRate attemptsPerCall averageDurationSeconds creditsUsed
    actionsByKind { kind count }
    hours: series(bucket: HOUR) { start total completed failed creditsUsed }
    days: series(bucket: DAY) { start total completed failed creditsUsed }
  }
}"#;

const STATUS_ORDER: [&str; 12] = [
    "INITIATE",
    "IN_PROGRESS",
    "ENDED",
    "COMPLETED",
    "TIMEOUT",
    "FAILED",
    "VALIDATION_FAILED",
    "BUSY",
    "NO_ANSWER",
    "SKIP",
    "RESCHEDULED",
    "ABORTED",
];
const FAILED: [&str; 7] = [
    "TIMEOUT",
    "FAILED",
    "VALIDATION_FAILED",
    "BUSY",
    "NO_ANSWER",
    "SKIP",
    "ABORTED",
];

fn ratio(part: usize, whole: usize) -> Value {
    if whole == 0 {
        Value::Null
    } else {
        json!(part as f64 / whole as f64)
    }
}

fn series(calls: &[&call::Model], bucket: TimeDelta) -> Value {
    let mut points: BTreeMap<DateTime<Utc>, (i64, i64, i64, f64)> = BTreeMap::new();
    for c in calls {
        let p = points
            .entry(c.created_at.duration_trunc(bucket).unwrap())
            .or_default();
        p.0 += 1;
        p.1 += i64::from(c.status == "COMPLETED");
        p.2 += i64::from(FAILED.contains(&c.status.as_str()));
        p.3 += c.credits_used.unwrap_or(0.0);
    }
    points
        .into_iter()
        .map(|(start, (total, completed, failed, credits))| {
            json!({"start": start.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                   "total": total, "completed": completed, "failed": failed, "creditsUsed": credits})
        })
        .collect()
}

/// What `callStats` must say about `calls`, from the rows alone.
async fn expected(app: &TestApp, calls: &[&call::Model]) -> Value {
    let ids: Vec<&str> = calls.iter().map(|c| c.id.as_str()).collect();
    let mine = |id: &Option<String>| id.as_deref().is_some_and(|id| ids.contains(&id));
    let attempts: Vec<attempt::Model> = attempt::Entity::find().all(&app.db).await.unwrap();
    let attempts: Vec<_> = attempts
        .iter()
        .filter(|a| ids.contains(&a.call_id.as_str()))
        .collect();
    let analyses: Vec<analysis::Model> = analysis::Entity::find().all(&app.db).await.unwrap();
    let actions: Vec<action::Model> = action::Entity::find().all(&app.db).await.unwrap();

    let by_status: Vec<Value> = STATUS_ORDER
        .iter()
        .map(|s| (s, calls.iter().filter(|c| c.status == *s).count()))
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| json!({"status": s, "count": n}))
        .collect();
    let analysed = calls
        .iter()
        .filter(|c| analyses.iter().any(|a| a.call_id == c.id))
        .count();
    let successful = calls.iter().filter(|c| c.success == Some(true)).count();
    let connected = attempts.iter().filter(|a| a.connected).count();
    let durations: Vec<f64> = calls.iter().filter_map(|c| c.duration_seconds).collect();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for a in actions.iter().filter(|a| mine(&a.call_id)) {
        *kinds.entry(a.kind.as_str()).or_default() += 1;
    }
    let mut kinds: Vec<(&str, usize)> = kinds.into_iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    json!({
        "total": calls.len(),
        "byStatus": by_status,
        "successRate": ratio(successful, analysed),
        "connectRate": ratio(connected, attempts.len()),
        "attemptsPerCall": ratio(attempts.len(), calls.len()),
        "averageDurationSeconds": if durations.is_empty() { Value::Null } else { json!(durations.iter().sum::<f64>() / durations.len() as f64) },
        "creditsUsed": calls.iter().filter_map(|c| c.credits_used).sum::<f64>(),
        "actionsByKind": kinds.iter().map(|(k, n)| json!({"kind": k, "count": n})).collect::<Vec<_>>(),
        "hours": series(calls, TimeDelta::hours(1)),
        "days": series(calls, TimeDelta::days(1)),
    })
}

/// JSON equality with a tolerance for floats (sums differ in the last bits).
fn assert_close(got: &Value, want: &Value, path: &str) {
    match (got, want) {
        (Value::Number(g), Value::Number(w)) => {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert!((g - w).abs() < 1e-6, "{path}: got {g}, want {w}");
        }
        (Value::Array(g), Value::Array(w)) => {
            assert_eq!(g.len(), w.len(), "{path}: {got} vs {want}");
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                assert_close(g, w, &format!("{path}[{i}]"));
            }
        }
        (Value::Object(g), Value::Object(w)) => {
            assert_eq!(
                g.keys().collect::<Vec<_>>().len(),
                w.keys().len(),
                "{path}: {got} vs {want}"
            );
            for (k, w) in w {
                assert_close(&g[k], w, &format!("{path}.{k}"));
            }
        }
        _ => assert_eq!(got, want, "{path}"),
    }
}

#[tokio::test]
async fn call_stats_agree_with_the_stored_rows_for_all_calls_and_a_selection() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        seed_simulated(&app, 0..60).await;
        seed_fixtures(&app).await;
        let orphan = calltrail_tests::fixture("edge/action-without-call.json");
        assert_eq!(app.post_webhook(orphan).await.status, 200);
        let rows = call_rows(&app).await;

        let all: Vec<&call::Model> = rows.iter().collect();
        let answer = app.graphql(STATS, json!({})).await;
        let got = &data(&answer)["callStats"];
        assert_close(got, &expected(&app, &all).await, &format!("{backend:?}"));
        assert!(got["successRate"].as_f64().unwrap() > 0.0);
        assert!(got["connectRate"].as_f64().unwrap() < 1.0);
        assert!(
            got["byStatus"].as_array().unwrap().len() >= 5,
            "the seed spreads over many statuses: {}",
            got["byStatus"]
        );

        let filter = json!({"status": ["COMPLETED", "NO_ANSWER"], "metadata": [{"key": "campaign", "equals": "cod-verification"}]});
        let some: Vec<&call::Model> = rows
            .iter()
            .filter(|c| ["COMPLETED", "NO_ANSWER"].contains(&c.status.as_str()))
            .filter(|c| {
                c.metadata
                    .as_ref()
                    .is_some_and(|m| m["campaign"] == "cod-verification")
            })
            .collect();
        assert!(some.len() > 3 && some.len() < rows.len());
        let answer = app.graphql(STATS, json!({ "filter": filter })).await;
        assert_close(
            &data(&answer)["callStats"],
            &expected(&app, &some).await,
            &format!("{backend:?} filtered"),
        );
    })
    .await;
}

#[tokio::test]
async fn call_stats_of_nothing_are_zeros_and_nulls() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let answer = app.graphql(STATS, json!({})).await;
        assert_eq!(
            data(&answer)["callStats"],
            json!({"total": 0, "byStatus": [], "successRate": null, "connectRate": null,
                   "attemptsPerCall": null, "averageDurationSeconds": null, "creditsUsed": 0.0,
                   "actionsByKind": [], "hours": [], "days": []}),
            "{backend:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_fixtures_give_the_figures_a_person_would_count() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        seed_fixtures(&app).await;
        let answer = app.graphql(STATS, json!({})).await;
        let got = &data(&answer)["callStats"];
        // happy: 1 connected attempt; retry: no-answer, busy, connected;
        // resched: in-progress then rescheduled, validation failed.
        assert_eq!(got["total"], 3);
        assert_eq!(
            got["byStatus"],
            json!([{"status": "COMPLETED", "count": 2}, {"status": "VALIDATION_FAILED", "count": 1}])
        );
        assert_eq!(got["successRate"], 0.5, "happy succeeded, retry did not");
        assert_eq!(got["connectRate"], 0.5, "3 of 6 attempts connected");
        assert_eq!(got["attemptsPerCall"], 2.0);
        assert_eq!(got["averageDurationSeconds"], (157.0 + 68.0) / 2.0);
        assert!((got["creditsUsed"].as_f64().unwrap() - (2.5 + 1.2)).abs() < 1e-9);
        assert_eq!(
            got["actionsByKind"],
            json!([{"kind": "create_order", "count": 1}, {"kind": "send_whatsapp", "count": 1}])
        );
        assert_eq!(got["hours"].as_array().unwrap().iter().map(|p| p["total"].as_i64().unwrap()).sum::<i64>(), 3);
    })
    .await;
}
