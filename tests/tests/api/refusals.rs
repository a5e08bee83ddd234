//! Bad input gets a clear error and changes nothing.

use calltrail_tests::{Backend, TestApp, fixture, fixture_lines, on_each_backend};

async fn assert_nothing_stored(app: &TestApp) {
    for table in ["webhook_event", "call", "attempt", "analysis", "action"] {
        assert_eq!(
            app.count(table).await,
            0,
            "{:?}: {table} is empty",
            app.backend
        );
    }
}

#[tokio::test]
async fn malformed_bodies_are_refused_with_400_and_a_code() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        for (file, code) in calltrail_tests::BAD_FIXTURES {
            let answer = app.post_webhook(fixture(file)).await;
            assert_eq!(answer.status, 400, "{file}");
            assert_eq!(answer.body["error"]["code"], code, "{file}");
            assert!(
                answer.body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
        }
        assert_nothing_stored(&app).await;
    })
    .await;
}

#[tokio::test]
async fn content_type_must_be_json_but_parameters_are_fine() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let body = fixture_lines("v1/happy-path.jsonl").remove(0);
        let missing = app.post_with(body.clone(), &[]).await;
        let text = app
            .post_with(body.clone(), &[("content-type", "text/plain")])
            .await;
        for answer in [&missing, &text] {
            assert_eq!(answer.status, 415);
            assert_eq!(answer.body["error"]["code"], "unsupported_media_type");
        }
        assert_nothing_stored(&app).await;
        let charset = app
            .post_with(body, &[("content-type", "application/json; charset=utf-8")])
            .await;
        assert_eq!(charset.status, 200);
    })
    .await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_with_413() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn_with(backend, |c| c.max_body_bytes = 1024).await;
        let padding = "x".repeat(2000);
        let big = format!(r#"{{"metadata":{{"pad":"{padding}"}},"event":{{"type":"call.initiate","data":{{"call":{{"id":"c_big"}}}}}}}}"#);
        let answer = app.post_webhook(big).await;
        assert_eq!(answer.status, 413);
        assert_eq!(answer.body["error"]["code"], "payload_too_large");
        assert_nothing_stored(&app).await;
    })
    .await;
}

#[tokio::test]
async fn the_default_limit_is_one_mebibyte() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let body = |pad: usize| {
            format!(
                r#"{{"metadata":{{"pad":"{}"}},"event":{{"type":"x.y","data":{{}}}}}}"#,
                "x".repeat(pad)
            )
        };
        let overhead = body(0).len();
        assert_eq!(
            app.post_webhook(body(1_048_576 - overhead)).await.status,
            200
        );
        assert_eq!(
            app.post_webhook(body(1_048_576 - overhead + 1))
                .await
                .status,
            413
        );
    })
    .await;
}

#[tokio::test]
async fn a_delivery_the_database_refuses_is_a_503_and_stores_nothing() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let lines = fixture_lines("v1/happy-path.jsonl");
        // The database refuses every action row.
        let refuse = match backend {
            Backend::Sqlite => "CREATE TRIGGER refuse BEFORE INSERT ON action BEGIN SELECT RAISE(ABORT, 'refused'); END",
            Backend::Postgres => {
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$; \
                 CREATE TRIGGER refuse BEFORE INSERT ON action FOR EACH ROW EXECUTE FUNCTION refuse()"
            }
        };
        sea_orm::ConnectionTrait::execute_unprepared(&app.db, refuse).await.unwrap();
        let answer = app.post_webhook(lines[2].clone()).await;
        assert_eq!(answer.status, 503, "{}", answer.body);
        assert_eq!(answer.body["error"]["code"], "unavailable");
        assert!(answer.headers.contains_key("retry-after"));
        for table in ["webhook_event", "call", "attempt"] {
            assert_eq!(
                app.count(table).await,
                0,
                "{backend:?}: {table} rolled back"
            );
        }
        // Other deliveries still go through.
        assert_eq!(app.post_webhook(lines[0].clone()).await.status, 200);
    })
    .await;
}

#[tokio::test]
async fn other_methods_on_the_webhook_route_are_refused_with_405_and_a_code() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let answer = app.get("/webhooks/call-events").await;
    assert_eq!(answer.status, 405);
    assert_eq!(
        answer.body["error"]["code"], "method_not_allowed",
        "{}",
        answer.body
    );
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("POST"))
    );
    assert_nothing_stored(&app).await;
}
