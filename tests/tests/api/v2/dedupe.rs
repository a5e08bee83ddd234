//! v2 retries are one event by their `id`, whatever their bytes: the second
//! answer is `duplicate: true` with the first's `eventId`, one row is stored,
//! and the database itself refuses a second row with the same id.

use calltrail_tests::{
    TestApp, fixture, fixture_lines, on_each_backend, on_each_backend_and_batch,
};
use chrono::Utc;
use entity::webhook_event;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter,
};

use super::lines_json;

async fn stored_with(app: &TestApp, upstream_id: &str) -> u64 {
    webhook_event::Entity::find()
        .filter(webhook_event::Column::UpstreamId.eq(upstream_id))
        .count(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retry_with_other_bytes_is_a_duplicate_of_the_first() {
    on_each_backend_and_batch(|backend, batch| async move {
        let app = TestApp::spawn_with(backend, |c| c.ingest_batch = batch).await;
        let lines = fixture_lines("v2/completed.jsonl");
        let retry = fixture("v2/completed-retry.json");
        assert_ne!(retry, lines[2], "the retry's bytes differ");
        let id = lines_json("v2/completed.jsonl")[2]["id"]
            .as_str()
            .unwrap()
            .to_owned();

        app.post_all(&lines[..2]).await;
        let first = app.post_webhook(lines[2].clone()).await;
        let again = app.post_webhook(retry.clone()).await;
        let third = app.post_webhook(lines[2].clone()).await;
        assert_eq!(
            first.body["duplicate"], false,
            "{backend:?}: {}",
            first.body
        );
        for answer in [&again, &third] {
            assert_eq!(answer.status, 200, "{backend:?}: {}", answer.body);
            assert_eq!(answer.body["duplicate"], true, "{backend:?} batch {batch}");
            assert_eq!(answer.event_id(), first.event_id());
        }
        assert_eq!(stored_with(&app, &id).await, 1, "{backend:?}");
        assert_eq!(app.count("webhook_event").await, 3);
        assert_eq!(app.count("attempt").await, 1);
    })
    .await;
}

#[tokio::test]
async fn an_event_and_its_retry_arriving_together_are_stored_once() {
    on_each_backend_and_batch(|backend, batch| async move {
        let app = TestApp::spawn_with(backend, |c| c.ingest_batch = batch).await;
        let lines = fixture_lines("v2/completed.jsonl");
        app.post_all(&lines[..2]).await;
        let (a, b) = tokio::join!(
            app.post_webhook(lines[2].clone()),
            app.post_webhook(fixture("v2/completed-retry.json"))
        );
        let mut duplicates = [&a, &b].map(|x| x.body["duplicate"].as_bool().unwrap());
        duplicates.sort();
        assert_eq!(
            duplicates,
            [false, true],
            "{backend:?}: {} {}",
            a.body,
            b.body
        );
        assert_eq!(a.event_id(), b.event_id());
        assert_eq!(app.count("webhook_event").await, 3, "{backend:?}");
    })
    .await;
}

#[tokio::test]
async fn the_database_refuses_a_second_row_with_the_same_event_id() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let line = fixture_lines("v2/aborted.jsonl").remove(0);
        let id = lines_json("v2/aborted.jsonl")[0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        app.post_all(&[line]).await;
        let copy = webhook_event::ActiveModel {
            seq: Set(1_000_000),
            received_at: Set(Utc::now()),
            format: Set("v2".into()),
            event_type: Set("call.queued".into()),
            call_id: Set(Some("c_elsewhere".into())),
            attempt_number: Set(Some(1)),
            dedupe_key: Set("a different key".into()),
            upstream_id: Set(Some(id.clone())),
            signature_verified: Set(false),
            recognized: Set(true),
            outcome: Set("applied".into()),
            body: Set("{}".into()),
            ..Default::default()
        };
        let refused = copy.clone().insert(&app.db).await.unwrap_err();
        assert!(
            matches!(
                refused.sql_err(),
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
            ),
            "{backend:?}: unique upstream_id, not another error: {refused}"
        );
        // The same row with another event id goes in: only the id refused it.
        let mut other = copy;
        other.seq = Set(1_000_001);
        other.upstream_id = Set(Some(format!("{id}-other")));
        other.insert(&app.db).await.unwrap();
        assert_eq!(stored_with(&app, &id).await, 1);
        // v1 rows have no event id, and any number of them may say so.
        app.post_all(&fixture_lines("v1/happy-path.jsonl")).await;
        let without: u64 = webhook_event::Entity::find()
            .filter(webhook_event::Column::UpstreamId.is_null())
            .count(&app.db)
            .await
            .unwrap();
        assert_eq!(without, 7, "{backend:?}");
    })
    .await;
}
