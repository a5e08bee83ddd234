//! `calltrail import` and `calltrail reprocess`: the same rules as the webhook.

use std::process::Output;

use calltrail_tests::{TestApp, fixture, fixture_lines, fresh_database, on_each_backend};
use entity::{action, analysis, attempt, call, webhook_event};
use futures_util::future::join_all;
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, QueryOrder};
use serde_json::{Value, json};

fn calltrail(database_url: &str, args: &[&str]) -> Output {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_calltrail-under-test"))
        .args(args)
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "calltrail {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Everything the projection holds, without database ids; with or without
/// the arrival clocks (which differ between two ingestions of the same data).
async fn snapshot(db: &DatabaseConnection, clocks: bool) -> Value {
    let calls = call::Entity::find()
        .order_by_asc(call::Column::Id)
        .all(db)
        .await
        .unwrap();
    let attempts = attempt::Entity::find()
        .order_by_asc(attempt::Column::CallId)
        .order_by_asc(attempt::Column::Number)
        .all(db)
        .await
        .unwrap();
    let analyses = analysis::Entity::find()
        .order_by_asc(analysis::Column::CallId)
        .order_by_asc(analysis::Column::AttemptNumber)
        .all(db)
        .await
        .unwrap();
    let mut actions: Vec<Value> = action::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|a| {
            json!([
                a.call_id,
                a.attempt_number,
                a.kind,
                a.reason,
                a.payload,
                a.status,
                a.note,
                clocks.then_some(a.created_at),
                a.handled_at.is_some()
            ])
        })
        .collect();
    actions.sort_by_key(Value::to_string);
    let clock = |t: sea_orm::prelude::DateTimeUtc| clocks.then_some(t);
    json!({
        "calls": calls.into_iter().map(|c| json!([c.id, c.status, c.metadata, c.started_at, c.ended_at, c.duration_seconds,
            c.recording_url, c.detail_url, c.attempt_count, c.re_attempt_count, c.rescheduled_count, c.final_status,
            c.lifecycle_ended, c.success, c.credits_used, clock(c.created_at), clock(c.updated_at), clock(c.last_event_at)])).collect::<Vec<_>>(),
        "attempts": attempts.into_iter().map(|a| json!([a.call_id, a.number, a.status, a.connected, a.started_at, a.ended_at,
            a.duration_seconds, a.recording_url, a.detail_url, a.credits_used, clock(a.created_at), clock(a.updated_at)])).collect::<Vec<_>>(),
        "analyses": analyses.into_iter().map(|n| json!([n.call_id, n.attempt_number, n.success, n.summary, n.required_actions,
            n.insights, n.outcome, n.credits_used, n.credits_available, clock(n.created_at)])).collect::<Vec<_>>(),
        "actions": actions,
    })
}

/// The fixtures as JSON lines: the v1 sequences, and the edge cases compacted to one line each.
fn fixture_jsonl() -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    for file in [
        "v1/happy-path.jsonl",
        "v1/retry-no-answer-busy.jsonl",
        "v1/rescheduled-then-invalid.jsonl",
    ] {
        lines.extend(fixture_lines(file));
    }
    for name in [
        "unknown-type",
        "unknown-action",
        "action-without-call",
        "no-metadata",
        "extra-fields",
    ] {
        let value: Value = serde_json::from_slice(&fixture(&format!("edge/{name}.json"))).unwrap();
        lines.push(serde_json::to_vec(&value).unwrap());
    }
    lines
}

#[tokio::test]
async fn importing_the_fixtures_equals_posting_them() {
    on_each_backend(|backend| async move {
        let lines = fixture_jsonl();
        let posted = TestApp::spawn(backend).await;
        posted.post_all(&lines).await;

        let dir = std::env::temp_dir().join("calltrail-tests");
        let file = dir.join(format!("import-{:x}.jsonl", rand::random::<u64>()));
        let mut content = lines.join(&b'\n');
        content.extend_from_slice(b"\n\nnot a delivery\n");
        std::fs::write(&file, content).unwrap();
        let url = fresh_database(backend).await;
        let output = calltrail(&url, &["import", file.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains(&format!(
                "imported {} lines: {} stored, 0 duplicates, 1 malformed",
                lines.len() + 1,
                lines.len()
            )),
            "{stdout}"
        );

        let imported = sea_orm::Database::connect(&url).await.unwrap();
        assert_eq!(
            snapshot(&imported, false).await,
            snapshot(&posted.db, false).await,
            "{backend:?}"
        );

        // Importing again stores nothing new.
        let again = calltrail(&url, &["import", file.to_str().unwrap()]);
        assert!(
            String::from_utf8_lossy(&again.stdout)
                .contains(&format!("0 stored, {} duplicates", lines.len()))
        );
    })
    .await;
}

#[tokio::test]
async fn reprocess_rebuilds_exactly_what_live_ingestion_built_and_keeps_acknowledgements() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let seed = rand::random::<u64>();
        // A randomized simulated history, calls in parallel, each call in order.
        join_all((0..40).map(|i| {
            let app = &app;
            async move {
                for body in calltrail::simulate::lifecycle(seed, i) {
                    assert_eq!(app.post_webhook(body).await.status, 200);
                }
            }
        }))
        .await;
        let first = action::Entity::find().order_by_asc(action::Column::Id).one(&app.db).await.unwrap().expect("the history has actions");
        let ack = app
            .graphql(
                "mutation($id: ID!) { acknowledgeAction(id: $id, status: HANDLED, note: \"order 1042 created\") { status } }",
                json!({"id": first.id.to_string()}),
            )
            .await;
        assert_eq!(ack.body["data"]["acknowledgeAction"]["status"], "HANDLED", "{}", ack.body);
        let live = snapshot(&app.db, true).await;
        // Workers hold action ids (acknowledgeAction takes one): they survive.
        let action_ids = |db: DatabaseConnection| async move {
            let mut ids: Vec<(i64, i64)> = action::Entity::find().all(&db).await.unwrap().into_iter().map(|a| (a.id, a.event_id)).collect();
            ids.sort_unstable();
            ids
        };
        let ids = action_ids(app.db.clone()).await;
        // An action that older rules derived from a delivery today's rules
        // derive none from (the call's first delivery): reprocess deletes it.
        let first_event: webhook_event::Model = webhook_event::Entity::find().order_by_asc(webhook_event::Column::Id).one(&app.db).await.unwrap().unwrap();
        assert!(ids.iter().all(|(_, event)| *event != first_event.id));
        app.db
            .execute_unprepared(&format!(
                "INSERT INTO action (event_id, call_id, attempt_number, kind, status, created_at) \
                 VALUES ({}, '{}', 1, 'send_whatsapp', 'PENDING', '2026-11-27T00:00:00+00:00')",
                first_event.id,
                first_event.call_id.clone().unwrap()
            ))
            .await
            .unwrap();

        // Rebuilt calls get a version above any they had, so a writer that
        // loaded one before the rebuild loads it again (ingest/postgres.rs).
        let versions = |db: DatabaseConnection| async move {
            let rows = db
                .query_all_raw(sea_orm::Statement::from_string(db.get_database_backend(), "SELECT id, version FROM call ORDER BY id"))
                .await
                .unwrap();
            rows.iter().map(|r| (r.try_get::<String>("", "id").unwrap(), r.try_get::<i64>("", "version").unwrap())).collect::<Vec<_>>()
        };
        let before = versions(app.db.clone()).await;
        let highest = before.iter().map(|(_, v)| *v).max().unwrap();
        assert!(highest > 1, "live ingestion bumps a call's version per batch: {before:?}");

        let output = calltrail(&app.database_url, &["reprocess"]);
        assert!(String::from_utf8_lossy(&output.stdout).contains("rebuilt 40 calls"), "seed {seed}");
        assert_eq!(snapshot(&app.db, true).await, live, "{backend:?}, seed {seed}");
        assert_eq!(action_ids(app.db.clone()).await, ids, "{backend:?}, seed {seed}");
        let rebuilt = versions(app.db.clone()).await;
        assert_eq!(rebuilt.len(), 40);
        assert!(rebuilt.iter().all(|(_, v)| *v == highest + 1), "{backend:?}: {rebuilt:?}");

        let one = first.call_id.clone().unwrap();
        calltrail(&app.database_url, &["reprocess", "--call", &one]);
        assert_eq!(snapshot(&app.db, true).await, live, "{backend:?}, seed {seed}, --call {one}");
        assert_eq!(action_ids(app.db.clone()).await, ids, "{backend:?}, seed {seed}, --call {one}");
        let after_one = versions(app.db.clone()).await;
        assert!(
            after_one.iter().all(|(id, v)| *v == if *id == one { highest + 2 } else { highest + 1 }),
            "{backend:?}: {after_one:?}"
        );
        let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_calltrail-under-test"))
            .args(["reprocess", "--call", "c_nope"])
            .env_clear()
            .env("DATABASE_URL", &app.database_url)
            .output()
            .unwrap();
        assert_eq!(unknown.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&unknown.stderr).contains("no delivery of call `c_nope` is stored"));
        assert_eq!(snapshot(&app.db, true).await, live, "{backend:?}: an unknown call changes nothing");
        let kept = action::Entity::find().all(&app.db).await.unwrap().into_iter().find(|a| a.event_id == first.event_id).unwrap();
        assert_eq!((kept.status.as_str(), kept.note.as_deref()), ("HANDLED", Some("order 1042 created")));
    })
    .await;
}

/// SQLite: `calltrail reprocess` while the server's writer commits. A
/// rebuild that read before it wrote failed at once ("database is locked":
/// a reader cannot become the writer once another commit has moved the
/// database on); it now takes the write lock first and waits for the batch
/// being written, like any writer.
#[tokio::test]
async fn reprocess_on_sqlite_waits_for_a_write_in_progress() {
    let app = TestApp::spawn(calltrail_tests::Backend::Sqlite).await;
    for line in fixture_lines("v1/happy-path.jsonl") {
        assert_eq!(app.post_webhook(line).await.status, 200);
    }
    let options = sea_orm::TransactionOptions {
        sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
        ..Default::default()
    };
    // A write in progress, as the server's writer's would be.
    let writer = sea_orm::TransactionTrait::begin_with_options(&app.db, options)
        .await
        .unwrap();
    writer
        .execute_unprepared("UPDATE event_clock SET last = last WHERE id = 1")
        .await
        .unwrap();
    let rebuild = {
        let url = app.database_url.clone();
        tokio::spawn(async move {
            let db = sea_orm::Database::connect(&url).await.unwrap();
            calltrail::ingest::reprocess(&db, None).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    writer.commit().await.unwrap();
    let summary = rebuild
        .await
        .unwrap()
        .expect("the rebuild waits for the write, then runs");
    assert_eq!(summary.calls, 1);
    assert_eq!(app.count("call").await, 1);
}
