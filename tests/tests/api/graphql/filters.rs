//! `calls(filter:)`: each condition selects what the rows say it should,
//! the same on SQLite and PostgreSQL; metadata matches compare JSON by type
//! and value.

use std::collections::BTreeSet;

use calltrail_tests::{TestApp, on_each_backend};
use chrono::SecondsFormat;
use entity::call;
use serde_json::{Value, json};

use super::{call_rows, data, error_codes, ids, seed_fixtures, seed_simulated};

const CALLS: &str = r#"
query Calls($filter: CallFilter) {
  calls(filter: $filter, first: 100) { totalCount nodes { id stale } }
}"#;

/// The ids a filter selects, as a set; asserts totalCount agrees.
async fn selected(app: &TestApp, filter: Value) -> BTreeSet<String> {
    let answer = app.graphql(CALLS, json!({ "filter": filter })).await;
    let calls = &data(&answer)["calls"];
    let found: BTreeSet<String> = ids(&calls["nodes"]).into_iter().collect();
    assert_eq!(calls["totalCount"], found.len(), "{filter}");
    found
}

fn ids_where(rows: &[call::Model], keep: impl Fn(&call::Model) -> bool) -> BTreeSet<String> {
    rows.iter()
        .filter(|c| keep(c))
        .map(|c| c.id.clone())
        .collect()
}

/// The first `n` deliveries of a simulated lifecycle: a call still in progress.
async fn seed_unfinished(app: &TestApp, calls: std::ops::Range<usize>) {
    for i in calls {
        for body in calltrail::simulate::lifecycle(super::SEED, i)
            .into_iter()
            .take(2)
        {
            assert_eq!(app.post_webhook(body).await.status, 200);
        }
    }
}

#[tokio::test]
async fn status_success_lifecycle_and_creation_filters_select_what_the_rows_say() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        seed_simulated(&app, 0..45).await;
        seed_unfinished(&app, 200..205).await;
        seed_fixtures(&app).await;
        let rows = call_rows(&app).await;
        let all = ids_where(&rows, |_| true);
        assert_eq!(selected(&app, json!({})).await, all);

        let statuses = ["COMPLETED", "NO_ANSWER"];
        assert_eq!(
            selected(&app, json!({"status": statuses})).await,
            ids_where(&rows, |c| statuses.contains(&c.status.as_str())),
            "{backend:?} status"
        );
        assert!(selected(&app, json!({"status": []})).await.is_empty());
        for success in [true, false] {
            let want = ids_where(&rows, |c| c.success == Some(success));
            assert!(!want.is_empty());
            assert_eq!(selected(&app, json!({ "success": success })).await, want);
        }
        for ended in [true, false] {
            let want = ids_where(&rows, |c| c.lifecycle_ended == ended);
            assert!(!want.is_empty());
            assert_eq!(
                selected(&app, json!({ "lifecycleEnded": ended })).await,
                want
            );
        }

        // createdAfter is inclusive, createdBefore exclusive: they tile.
        let mut created: Vec<_> = rows.iter().map(|c| c.created_at).collect();
        created.sort();
        let at = created[20];
        let text = at.to_rfc3339_opts(SecondsFormat::Micros, true);
        let after = selected(&app, json!({ "createdAfter": text })).await;
        let before = selected(&app, json!({ "createdBefore": text })).await;
        assert_eq!(after, ids_where(&rows, |c| c.created_at >= at));
        assert_eq!(before, ids_where(&rows, |c| c.created_at < at));
        assert_eq!(after.len() + before.len(), rows.len());
        let same_instant = at
            .with_timezone(&chrono::FixedOffset::east_opt(5 * 3600 + 1800).unwrap())
            .to_rfc3339_opts(SecondsFormat::Micros, false);
        assert_eq!(
            selected(&app, json!({ "createdAfter": same_instant })).await,
            after,
            "any offset names the same instant"
        );
        // Finer than a microsecond (what either database keeps), a bound
        // still selects what it says, alike on both. (SQLite compared the
        // digits as text, PostgreSQL cut them off: 10:00:00.000000001
        // counted as after 10:00:00 on one and equal to it on the other.)
        let finer = at
            .to_rfc3339_opts(SecondsFormat::Micros, true)
            .replace('Z', "001Z");
        assert_eq!(
            selected(&app, json!({ "createdBefore": finer })).await,
            ids_where(&rows, |c| c.created_at <= at),
            "{backend:?}: {finer}"
        );
        assert_eq!(
            selected(&app, json!({ "createdAfter": finer })).await,
            ids_where(&rows, |c| c.created_at > at),
            "{backend:?}: {finer}"
        );
        let window = json!({"createdAfter": created[10].to_rfc3339(), "createdBefore": text});
        assert_eq!(
            selected(&app, window).await,
            ids_where(&rows, |c| c.created_at >= created[10] && c.created_at < at)
        );

        // Conditions combine with AND.
        let combined = json!({"status": ["COMPLETED"], "success": true, "lifecycleEnded": true});
        assert_eq!(
            selected(&app, combined).await,
            ids_where(&rows, |c| c.status == "COMPLETED"
                && c.success == Some(true)
                && c.lifecycle_ended)
        );
    })
    .await;
}

#[tokio::test]
async fn stale_marks_unfinished_calls_silent_past_the_window() {
    on_each_backend(|backend| async move {
        // The default window (40 minutes): four unfinished calls last heard
        // of an hour ago, three just now.
        let app = TestApp::spawn(backend).await;
        seed_simulated(&app, 0..10).await;
        seed_unfinished(&app, 100..107).await;
        {
            use sea_orm::sea_query::Expr;
            use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
            let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
            call::Entity::update_many()
                // Set together by every delivery, as the server does.
                .col_expr(call::Column::LastEventAt, Expr::value(hour_ago))
                .col_expr(call::Column::UpdatedAt, Expr::value(hour_ago))
                .filter(call::Column::Id.is_in([
                    "c_sim-7-100",
                    "c_sim-7-101",
                    "c_sim-7-102",
                    "c_sim-7-103",
                ]))
                .exec(&app.db)
                .await
                .unwrap();
        }

        let rows = call_rows(&app).await;
        let silent = ids_where(&rows, |c| {
            !c.lifecycle_ended
                && ["c_sim-7-100", "c_sim-7-101", "c_sim-7-102", "c_sim-7-103"]
                    .contains(&c.id.as_str())
        });
        assert_eq!(silent.len(), 4);
        assert_eq!(
            selected(&app, json!({"stale": true})).await,
            silent,
            "{backend:?}"
        );
        let fresh: BTreeSet<String> = rows
            .iter()
            .map(|c| c.id.clone())
            .filter(|id| !silent.contains(id))
            .collect();
        assert_eq!(selected(&app, json!({"stale": false})).await, fresh);

        let answer = app.graphql(CALLS, json!({"filter": null})).await;
        for call in data(&answer)["calls"]["nodes"].as_array().unwrap() {
            let id = call["id"].as_str().unwrap();
            assert_eq!(call["stale"], silent.contains(id), "Call.stale of {id}");
        }
        let summary = app
            .graphql(
                "{ callStats(filter: {stale: true}) { total } }",
                Value::Null,
            )
            .await;
        assert_eq!(data(&summary)["callStats"]["total"], 4);
    })
    .await;
}

#[tokio::test]
async fn with_the_default_window_a_just_silent_call_is_not_stale() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        seed_unfinished(&app, 0..3).await;
        assert!(selected(&app, json!({"stale": true})).await.is_empty());
        assert_eq!(selected(&app, json!({"stale": false})).await.len(), 3);
    })
    .await;
}

fn delivery(call_id: &str, metadata: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "metadata": metadata,
        "event": {"type": "call.initiate", "data": {"call": {"id": call_id, "status": "initiate"}}}
    }))
    .unwrap()
}

#[tokio::test]
async fn metadata_matches_compare_json_values_by_type_the_same_on_both_backends() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        seed_simulated(&app, 0..30).await;
        for (id, metadata) in [
            (
                "c_meta-int",
                json!({"tier": 2, "vip": true, "tags": ["a", "b"], "dotted.key": "x"}),
            ),
            ("c_meta-float", json!({"tier": 2.0, "vip": 1})),
            (
                "c_meta-str",
                json!({"tier": "2", "vip": "true", "tags": ["a"]}),
            ),
            (
                "c_meta-nested",
                json!({"tier": {"level": 2, "since": "2025"}}),
            ),
        ] {
            assert_eq!(app.post_webhook(delivery(id, metadata)).await.status, 200);
        }
        let rows = call_rows(&app).await;
        let matches =
            |key: &str, equals: Value| json!({"metadata": [{"key": key, "equals": equals}]});
        let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();

        // The simulator's string metadata, against the rows.
        for campaign in [
            "abandoned-cart-nov",
            "order-confirmation",
            "cod-verification",
        ] {
            let want = ids_where(&rows, |c| {
                c.metadata
                    .as_ref()
                    .is_some_and(|m| m["campaign"] == campaign)
            });
            assert!(!want.is_empty(), "the seed has {campaign} calls");
            assert_eq!(
                selected(&app, matches("campaign", json!(campaign))).await,
                want
            );
        }
        let some = rows.iter().find(|c| c.id == "c_sim-7-3").unwrap();
        let customer = some.metadata.as_ref().unwrap()["customer_id"].clone();
        let both = json!({"metadata": [
            {"key": "customer_id", "equals": customer},
            {"key": "store", "equals": "kurta-house.example.invalid"}
        ]});
        assert_eq!(
            selected(&app, both).await,
            set(&["c_sim-7-3"]),
            "all must match"
        );

        assert_eq!(
            selected(&app, matches("tier", json!(2))).await,
            set(&["c_meta-float", "c_meta-int"]),
            "{backend:?}: 2 equals 2.0 but not \"2\""
        );
        assert_eq!(
            selected(&app, matches("tier", json!("2"))).await,
            set(&["c_meta-str"])
        );
        assert_eq!(
            selected(&app, matches("vip", json!(true))).await,
            set(&["c_meta-int"]),
            "true is not 1"
        );
        assert_eq!(
            selected(&app, matches("vip", json!(1))).await,
            set(&["c_meta-float"]),
            "1 is not true"
        );
        assert_eq!(
            selected(&app, matches("tags", json!(["a", "b"]))).await,
            set(&["c_meta-int"]),
            "arrays compare whole, not by containment"
        );
        assert_eq!(
            selected(&app, matches("tier", json!({"since": "2025", "level": 2}))).await,
            set(&["c_meta-nested"]),
            "objects compare whatever the key order"
        );
        assert_eq!(
            selected(&app, matches("dotted.key", json!("x"))).await,
            set(&["c_meta-int"])
        );
        assert!(
            selected(&app, matches("absent", json!("x")))
                .await
                .is_empty()
        );

        let answer = app
            .graphql(CALLS, json!({"filter": matches("a\"b", json!(1))}))
            .await;
        assert_eq!(error_codes(&answer), ["BAD_USER_INPUT"]);
    })
    .await;
}
