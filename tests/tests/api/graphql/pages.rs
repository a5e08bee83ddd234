//! `calls` pages: every order in both directions walked forward and
//! backward with no gap and no repeat, the default size, the cap of 100,
//! and a walk that stays right while new calls arrive.

use std::cmp::Ordering;
use std::collections::HashSet;

use calltrail_tests::{TestApp, on_each_backend};
use entity::call;
use serde_json::{Value, json};

use super::{call_rows, data, ids, seed_fixtures, seed_simulated};

const PAGE: &str = r#"
query Page($orderBy: CallOrder, $first: Int, $after: String, $last: Int, $before: String) {
  calls(orderBy: $orderBy, first: $first, after: $after, last: $last, before: $before) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { id } }
    nodes { id }
  }
}"#;

const FIELDS: [&str; 3] = ["CREATED_AT", "UPDATED_AT", "DURATION"];

/// The order the contract promises, computed here from the rows: the key,
/// then the id (in the database's own text order, which `rows` is sorted
/// by), both in the asked direction; calls without a duration last.
fn expected(rows: &[call::Model], field: &str, descending: bool) -> Vec<String> {
    let mut ranked: Vec<(usize, &call::Model)> = rows.iter().enumerate().collect();
    let flip = |o: Ordering| if descending { o.reverse() } else { o };
    ranked.sort_by(|(ra, a), (rb, b)| {
        let by_id = flip(ra.cmp(rb));
        match field {
            "CREATED_AT" => flip(a.created_at.cmp(&b.created_at)).then(by_id),
            "UPDATED_AT" => flip(a.updated_at.cmp(&b.updated_at)).then(by_id),
            _ => match (a.duration_seconds, b.duration_seconds) {
                (Some(x), Some(y)) => flip(x.total_cmp(&y)).then(by_id),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => by_id,
            },
        }
    });
    ranked.into_iter().map(|(_, c)| c.id.clone()).collect()
}

async fn page(app: &TestApp, variables: Value) -> Value {
    let answer = app.graphql(PAGE, variables).await;
    let page = data(&answer)["calls"].clone();
    let edge_ids: Vec<String> = page["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(edge_ids, ids(&page["nodes"]), "nodes are the edges' nodes");
    let edges = page["edges"].as_array().unwrap();
    assert_eq!(
        page["pageInfo"]["startCursor"],
        edges.first().map_or(Value::Null, |e| e["cursor"].clone())
    );
    assert_eq!(
        page["pageInfo"]["endCursor"],
        edges.last().map_or(Value::Null, |e| e["cursor"].clone())
    );
    page
}

/// Walk from the start with `first: size`, following `endCursor`.
async fn walk_forward(app: &TestApp, order: &Value, size: i64, total: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after = Value::Null;
    for n in 0.. {
        assert!(n <= total, "the walk does not end");
        let page = page(
            app,
            json!({"orderBy": order, "first": size, "after": after}),
        )
        .await;
        assert_eq!(page["totalCount"], total, "totalCount on every page");
        assert_eq!(page["pageInfo"]["hasPreviousPage"], n > 0);
        seen.extend(ids(&page["nodes"]));
        if page["pageInfo"]["hasNextPage"] == false {
            break;
        }
        assert_eq!(page["nodes"].as_array().unwrap().len() as i64, size);
        after = page["pageInfo"]["endCursor"].clone();
    }
    seen
}

/// Walk from the end with `last: size`, following `startCursor`.
async fn walk_backward(app: &TestApp, order: &Value, size: i64, total: usize) -> Vec<String> {
    let mut pages = Vec::new();
    let mut before = Value::Null;
    for n in 0.. {
        assert!(n <= total, "the walk does not end");
        let page = page(
            app,
            json!({"orderBy": order, "last": size, "before": before}),
        )
        .await;
        assert_eq!(page["totalCount"], total);
        assert_eq!(page["pageInfo"]["hasNextPage"], n > 0);
        pages.push(ids(&page["nodes"]));
        if page["pageInfo"]["hasPreviousPage"] == false {
            break;
        }
        before = page["pageInfo"]["startCursor"].clone();
    }
    pages.into_iter().rev().flatten().collect()
}

fn assert_no_repeat(walk: &[String]) {
    let unique: HashSet<&String> = walk.iter().collect();
    assert_eq!(unique.len(), walk.len(), "a call shows up twice");
}

#[tokio::test]
async fn every_order_walks_forward_and_backward_without_gaps_or_repeats() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        seed_simulated(&app, 0..130).await;
        seed_fixtures(&app).await;
        let rows = call_rows(&app).await;
        let total = rows.len();
        assert_eq!(total, 133);
        assert!(
            rows.iter().filter(|c| c.duration_seconds.is_none()).count() > 10,
            "the seed has calls without a duration"
        );

        for field in FIELDS {
            for (direction, descending) in [("ASC", false), ("DESC", true)] {
                let order = json!({"field": field, "direction": direction});
                let want = expected(&rows, field, descending);
                let forward = walk_forward(&app, &order, 17, total).await;
                assert_no_repeat(&forward);
                assert_eq!(forward, want, "{backend:?} {field} {direction} forward");
                let backward = walk_backward(&app, &order, 23, total).await;
                assert_no_repeat(&backward);
                assert_eq!(backward, want, "{backend:?} {field} {direction} backward");
            }
        }

        // Without orderBy: newest first.
        let first = page(&app, json!({})).await;
        assert_eq!(
            ids(&first["nodes"]),
            expected(&rows, "CREATED_AT", true)[..20],
            "20 newest calls by default"
        );
        assert_eq!(first["pageInfo"]["hasNextPage"], true);

        // More than 100 asked for: 100 given, not an error.
        let capped = page(&app, json!({"first": 1000})).await;
        assert_eq!(capped["nodes"].as_array().unwrap().len(), 100);
        assert_eq!(capped["pageInfo"]["hasNextPage"], true);
        let capped = page(&app, json!({"last": 101})).await;
        assert_eq!(capped["nodes"].as_array().unwrap().len(), 100);
        assert_eq!(capped["pageInfo"]["hasPreviousPage"], true);

        // An empty page has no cursors.
        let none = page(&app, json!({"first": 0})).await;
        assert_eq!(none["nodes"], json!([]));
        assert_eq!(none["pageInfo"]["endCursor"], Value::Null);
        assert_eq!(none["totalCount"], total);
    })
    .await;
}

#[tokio::test]
async fn a_walk_stays_right_while_new_calls_arrive() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        seed_simulated(&app, 0..60).await;
        let before_walk = expected(&call_rows(&app).await, "CREATED_AT", true);

        let order = json!({"field": "CREATED_AT", "direction": "DESC"});
        let mut seen = Vec::new();
        let mut after = Value::Null;
        for n in 0.. {
            if n == 2 {
                // Newer calls than any seen land before the cursor.
                seed_simulated(&app, 60..70).await;
            }
            let page = page(&app, json!({"orderBy": order, "first": 15, "after": after})).await;
            seen.extend(ids(&page["nodes"]));
            if page["pageInfo"]["hasNextPage"] == false {
                break;
            }
            after = page["pageInfo"]["endCursor"].clone();
        }
        assert_eq!(seen, before_walk, "{backend:?}: every call once, in order");
    })
    .await;
}
