//! Each fixture sequence gives the calls, attempts, analyses and actions the
//! contract implies.

use calltrail_tests::{
    Backend, TestApp, fixture, fixture_lines, on_each_backend, on_each_backend_and_batch,
};
use entity::{action, analysis, attempt, call, webhook_event};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::json;

async fn call_row(app: &TestApp, id: &str) -> call::Model {
    call::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{:?}: call {id} stored", app.backend))
}

async fn attempts(app: &TestApp, id: &str) -> Vec<attempt::Model> {
    attempt::Entity::find()
        .filter(attempt::Column::CallId.eq(id))
        .order_by_asc(attempt::Column::Number)
        .all(&app.db)
        .await
        .unwrap()
}

async fn run_happy_path(backend: Backend, batch: usize) {
    let app = TestApp::spawn_with(backend, |c| c.ingest_batch = batch).await;
    app.post_all(&fixture_lines("v1/happy-path.jsonl")).await;

    let call = call_row(&app, "c_7f3e2a90-happy").await;
    assert_eq!(call.status, "COMPLETED");
    assert_eq!(
        call.metadata,
        Some(json!({"customer_id": "cus_1042", "order_ref": "ORD-7781"}))
    );
    assert_eq!(call.duration_seconds, Some(157.0));
    assert_eq!(
        call.started_at.unwrap().to_rfc3339(),
        "2026-11-20T10:00:04+00:00"
    );
    assert_eq!(
        call.ended_at.unwrap().to_rfc3339(),
        "2026-11-20T10:02:41+00:00"
    );
    assert_eq!(
        call.recording_url.as_deref(),
        Some("https://recordings.example.invalid/c_7f3e2a90.mp3")
    );
    assert_eq!(
        call.detail_url.as_deref(),
        Some("https://dashboard.example.invalid/calls/c_7f3e2a90")
    );
    assert_eq!(
        (call.attempt_count, call.lifecycle_ended, call.success),
        (1, true, Some(true))
    );
    assert_eq!(
        (
            call.re_attempt_count,
            call.rescheduled_count,
            call.final_status.as_deref()
        ),
        (Some(0), Some(0), Some("completed"))
    );
    assert_eq!(call.credits_used, Some(2.5));

    let attempts = attempts(&app, "c_7f3e2a90-happy").await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (
            attempts[0].number,
            attempts[0].status.as_str(),
            attempts[0].connected
        ),
        (1, "COMPLETED", true)
    );

    let analyses = analysis::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(analyses.len(), 1);
    let a = &analyses[0];
    assert_eq!(
        (
            a.attempt_number,
            a.success,
            a.credits_used,
            a.credits_available
        ),
        (1, Some(true), Some(2.5), Some(97.5))
    );
    assert_eq!(
        a.summary.as_deref(),
        Some("Customer confirmed a COD order for two units.")
    );
    assert_eq!(a.required_actions, json!(["create-order"]));
    assert_eq!(
        a.insights,
        Some(json!({"sentiment": "positive", "intent": "order_placed"}))
    );

    let actions = action::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(actions.len(), 1);
    assert_eq!(
        (actions[0].kind.as_str(), actions[0].status.as_str()),
        ("create_order", "PENDING")
    );
    assert_eq!(actions[0].call_id.as_deref(), Some("c_7f3e2a90-happy"));
    assert_eq!(
        actions[0].payload.as_ref().unwrap()["shippingAddress"]["city"],
        "Pune"
    );
    assert_eq!(app.count("webhook_event").await, 7);
}

#[tokio::test]
async fn the_happy_path_is_one_completed_attempt_with_its_analysis_and_order() {
    on_each_backend_and_batch(run_happy_path).await;
}

#[tokio::test]
async fn retries_open_new_attempts_although_initiate_is_resent_byte_for_byte() {
    on_each_backend_and_batch(|backend, batch| async move {
        let app = TestApp::spawn_with(backend, |c| c.ingest_batch = batch).await;
        let lines = fixture_lines("v1/retry-no-answer-busy.jsonl");
        assert_eq!(lines[0], lines[2]);
        app.post_all(&lines).await;

        let call = call_row(&app, "c_91b0d3c4-retry").await;
        assert_eq!(
            (call.status.as_str(), call.attempt_count, call.success),
            ("COMPLETED", 3, Some(false))
        );
        assert_eq!(
            (call.re_attempt_count, call.final_status.as_deref()),
            (Some(2), Some("completed"))
        );
        assert_eq!(call.duration_seconds, Some(68.0));
        let statuses: Vec<_> = attempts(&app, "c_91b0d3c4-retry")
            .await
            .into_iter()
            .map(|a| (a.number, a.status, a.connected))
            .collect();
        assert_eq!(
            statuses,
            [
                (1, "NO_ANSWER".to_owned(), false),
                (2, "BUSY".to_owned(), false),
                (3, "COMPLETED".to_owned(), true)
            ]
        );
        let analysis = analysis::Entity::find()
            .one(&app.db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(analysis.attempt_number, 3);
        let action = action::Entity::find().one(&app.db).await.unwrap().unwrap();
        assert_eq!(
            (
                action.kind.as_str(),
                action.reason.as_deref(),
                action.attempt_number
            ),
            ("send_whatsapp", Some("missing_address"), Some(3))
        );

        // After the lifecycle ended, a resent initiate is a duplicate of the first.
        let again = app.post_webhook(lines[0].clone()).await;
        assert_eq!(again.body["duplicate"], true);
        assert_eq!(app.count("attempt").await, 3);
        assert_eq!(app.count("webhook_event").await, 11);
    })
    .await;
}

#[tokio::test]
async fn a_rescheduled_attempt_is_followed_by_a_failed_validation() {
    on_each_backend_and_batch(|backend, batch| async move {
        let app = TestApp::spawn_with(backend, |c| c.ingest_batch = batch).await;
        app.post_all(&fixture_lines("v1/rescheduled-then-invalid.jsonl"))
            .await;
        let call = call_row(&app, "c_44aa0e11-resched").await;
        assert_eq!(
            (
                call.status.as_str(),
                call.attempt_count,
                call.rescheduled_count
            ),
            ("VALIDATION_FAILED", 2, Some(1))
        );
        assert_eq!(
            (
                call.lifecycle_ended,
                call.final_status.as_deref(),
                call.re_attempt_count
            ),
            (true, Some("validation-failed"), Some(0)),
            "{backend:?}: the lifecycle-ended report"
        );
        assert_eq!(call.metadata, Some(json!({"customer_id": "cus_3001"})));
        assert_eq!((call.success, call.credits_used), (None, None));
        assert_eq!(
            call.started_at.unwrap().to_rfc3339(),
            "2026-11-20T12:00:03+00:00",
            "from the latest attempt that has it"
        );
        let statuses: Vec<_> = attempts(&app, "c_44aa0e11-resched")
            .await
            .into_iter()
            .map(|a| a.status)
            .collect();
        assert_eq!(statuses, ["RESCHEDULED", "VALIDATION_FAILED"]);
        assert_eq!(app.count("analysis").await + app.count("action").await, 0);
    })
    .await;
}

#[tokio::test]
async fn a_late_in_progress_does_not_move_a_completed_attempt_back() {
    on_each_backend_and_batch(|backend, batch| async move {
        let app = TestApp::spawn_with(backend, |c| c.ingest_batch = batch).await;
        let lines = fixture_lines("v1/happy-path.jsonl");
        app.post_all(&[
            lines[0].clone(),
            lines[4].clone(),
            lines[1].clone(),
            lines[3].clone(),
        ])
        .await;
        let call = call_row(&app, "c_7f3e2a90-happy").await;
        assert_eq!((call.status.as_str(), call.attempt_count), ("COMPLETED", 1));
    })
    .await;
}

#[tokio::test]
async fn an_unknown_type_resent_after_its_call_started_is_stored_once() {
    on_each_backend_and_batch(|backend, batch| async move {
        let app = TestApp::spawn_with(backend, |c| c.ingest_batch = batch).await;
        let unknown = fixture("edge/unknown-type.json");
        let first = app.post_webhook(unknown.clone()).await;
        assert_eq!(
            first.body["duplicate"], false,
            "{backend:?}: {}",
            first.body
        );
        let initiate = app
            .post_webhook(
                r#"{"event":{"type":"call.initiate","data":{"call":{"id":"c_unknown-1"}}}}"#,
            )
            .await;
        assert_eq!(initiate.body["duplicate"], false, "{}", initiate.body);
        // The platform resends the unknown delivery, the same bytes, to the
        // call's first attempt: stored before the call existed, it is that
        // attempt's.
        let again = app.post_webhook(unknown).await;
        assert_eq!(again.status, 200, "{}", again.body);
        assert_eq!(again.body["duplicate"], true, "{backend:?}: {}", again.body);
        assert_eq!(again.event_id(), first.event_id());
        assert_eq!(app.count("webhook_event").await, 2, "{backend:?}");
        assert_eq!(call_row(&app, "c_unknown-1").await.attempt_count, 1);
    })
    .await;
}

#[tokio::test]
async fn edge_deliveries_are_accepted_and_kept() {
    on_each_backend_and_batch(|backend, batch| async move {
        let app = TestApp::spawn_with(backend, |c| c.ingest_batch = batch).await;
        for name in [
            "unknown-type",
            "unknown-action",
            "action-without-call",
            "no-metadata",
            "extra-fields",
        ] {
            let answer = app
                .post_webhook(fixture(&format!("edge/{name}.json")))
                .await;
            assert_eq!(answer.status, 200, "{backend:?} {name}: {}", answer.body);
            assert_eq!(answer.body["received"], true);
        }
        let events = webhook_event::Entity::find()
            .order_by_asc(webhook_event::Column::Id)
            .all(&app.db)
            .await
            .unwrap();
        let kept: Vec<_> = events
            .iter()
            .map(|e| (e.event_type.as_str(), e.recognized, e.outcome.as_str()))
            .collect();
        assert_eq!(
            kept,
            [
                ("call.transferred", false, "unrecognized"),
                ("action", true, "applied"),
                ("action", true, "applied"),
                ("call.skip", true, "applied"),
                ("call.failed", true, "applied"),
            ]
        );
        assert_eq!(
            events[4].body.as_bytes(),
            &fixture("edge/extra-fields.json")[..],
            "kept byte for byte"
        );
        assert!(
            call::Entity::find_by_id("c_unknown-1")
                .one(&app.db)
                .await
                .unwrap()
                .is_none(),
            "an unknown type has no other effect"
        );

        let actions = action::Entity::find()
            .order_by_asc(action::Column::Id)
            .all(&app.db)
            .await
            .unwrap();
        assert_eq!(
            (actions[0].kind.as_str(), actions[0].call_id.as_deref()),
            ("book_appointment", Some("c_unknown-2"))
        );
        assert_eq!(
            actions[0].payload,
            Some(json!({"slot": "2026-11-21T09:00:00Z"}))
        );
        assert_eq!(
            (actions[1].kind.as_str(), actions[1].call_id.as_deref()),
            ("send_whatsapp", None)
        );
        assert_eq!(call_row(&app, "c_dnd-1").await.status, "SKIP");
        assert_eq!(call_row(&app, "c_dnd-1").await.metadata, None);
        assert_eq!(call_row(&app, "c_extra-1").await.status, "FAILED");
    })
    .await;
}

/// Characters a platform can send that some layer refuses: NUL (`\u0000`),
/// which PostgreSQL stores in neither text nor `jsonb`, and a lone UTF-16
/// surrogate escape (a string cut inside an emoji by JavaScript), which
/// serde_json refuses. Each delivery is stored, its body byte for byte;
/// what is read from it has U+FFFD in their place.
#[tokio::test]
async fn deliveries_with_nul_characters_or_a_lone_surrogate_are_stored() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let bodies: [&[u8]; 4] = [
            br#"{"metadata":{"n":"a\u0000b"},"event":{"type":"call.initiate","data":{"call":{"id":"c_nul","status":"initiate"}}}}"#,
            br#"{"metadata":{},"event":{"type":"end-of-call","data":{"call":{"id":"c_nul","status":"completed"},"analysis":{"success":true,"summary":"x\u0000y","insights":{"k":"\u0000"}}}}}"#,
            br#"{"event":{"type":"action","data":{"call":{"id":"c_nul"},"action":"send_whatsapp","reason":"r\u0000","payload":{"m":"\u0000"}}}}"#,
            br#"{"metadata":{"note":"cut \ud83d"},"event":{"type":"call.initiate","data":{"call":{"id":"c_cut","status":"initiate"}}}}"#,
        ];
        for body in bodies {
            let answer = app.post_webhook(body).await;
            assert_eq!(answer.status, 200, "{backend:?}: {}", answer.body);
            assert_eq!(answer.body["duplicate"], false);
        }
        let events = webhook_event::Entity::find()
            .order_by_asc(webhook_event::Column::Id)
            .all(&app.db)
            .await
            .unwrap();
        let kept: Vec<&[u8]> = events.iter().map(|e| e.body.as_bytes()).collect();
        assert_eq!(kept, bodies, "{backend:?}: kept byte for byte");

        let nul = call_row(&app, "c_nul").await;
        assert_eq!(nul.metadata, Some(json!({"n": "a\u{FFFD}b"})));
        assert_eq!(nul.status, "COMPLETED");
        let analysis = analysis::Entity::find().one(&app.db).await.unwrap().unwrap();
        assert_eq!(analysis.summary.as_deref(), Some("x\u{FFFD}y"));
        assert_eq!(analysis.insights, Some(json!({"k": "\u{FFFD}"})));
        let action = action::Entity::find().one(&app.db).await.unwrap().unwrap();
        assert_eq!(action.reason.as_deref(), Some("r\u{FFFD}"));
        assert_eq!(action.payload, Some(json!({"m": "\u{FFFD}"})));
        let cut = call_row(&app, "c_cut").await;
        assert_eq!(cut.metadata, Some(json!({"note": "cut \u{FFFD}"})));

        // GraphQL serves each payload as JSON (NUL as sent, the lone
        // surrogate as U+FFFD), not as a string.
        let answer = app
            .graphql(
                r#"{ a: call(id: "c_nul") { events { payload } } b: call(id: "c_cut") { events { payload } } }"#,
                json!({}),
            )
            .await;
        let data = &answer.body["data"];
        assert_eq!(data["a"]["events"][0]["payload"]["metadata"]["n"], "a\u{0}b", "{backend:?}: {}", answer.body);
        assert_eq!(data["b"]["events"][0]["payload"]["metadata"]["note"], "cut \u{FFFD}");
    })
    .await;
}
