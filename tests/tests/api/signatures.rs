//! v1 signatures: x-signature over the raw body, secret chosen by x-public-key.

use calltrail_tests::{Backend, PUBLIC_KEY, SECRET, TestApp, fixture_lines, on_each_backend};
use entity::webhook_event;
use sea_orm::EntityTrait;

async fn signed_app(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.webhook_secrets = Some(
            format!("{PUBLIC_KEY}:{SECRET},sk_rotated_bare")
                .parse()
                .unwrap(),
        );
    })
    .await
}

fn body() -> Vec<u8> {
    fixture_lines("v1/happy-path.jsonl").remove(0)
}

#[tokio::test]
async fn a_good_signature_is_accepted_and_recorded_as_verified() {
    on_each_backend(|backend| async move {
        let app = signed_app(backend).await;
        assert_eq!(
            app.post_signed(body(), SECRET, Some(PUBLIC_KEY))
                .await
                .status,
            200
        );
        let event = webhook_event::Entity::find()
            .one(&app.db)
            .await
            .unwrap()
            .unwrap();
        assert!(event.signature_verified);
    })
    .await;
}

#[tokio::test]
async fn wrong_missing_unknown_key_and_altered_body_are_401() {
    on_each_backend(|backend| async move {
        let app = signed_app(backend).await;
        let good = calltrail::webhook::sign(SECRET, &body());
        let wrong = calltrail::webhook::sign("sk_nope", &body());
        let other_secret = calltrail::webhook::sign("sk_rotated_bare", &body());
        let mut altered = body();
        altered.push(b' ');
        // (case, body, headers, expected error code)
        type Case<'a> = (&'a str, Vec<u8>, Vec<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Case> = vec![
            (
                "wrong secret",
                body(),
                vec![("x-signature", &wrong)],
                "signature_invalid",
            ),
            ("missing", body(), vec![], "signature_missing"),
            (
                "unknown key",
                body(),
                vec![("x-signature", &good), ("x-public-key", "pk_unknown")],
                "unknown_public_key",
            ),
            (
                "altered body",
                altered,
                vec![("x-signature", &good), ("x-public-key", PUBLIC_KEY)],
                "signature_invalid",
            ),
            (
                "not hex",
                body(),
                vec![("x-signature", "zz-not-hex")],
                "signature_invalid",
            ),
            (
                "another pair's key",
                body(),
                vec![("x-signature", &other_secret), ("x-public-key", PUBLIC_KEY)],
                "signature_invalid",
            ),
        ];
        for (name, payload, mut headers, code) in cases {
            headers.push(("content-type", "application/json"));
            let answer = app.post_with(payload, &headers).await;
            assert_eq!(answer.status, 401, "{backend:?} {name}");
            assert_eq!(answer.body["error"]["code"], code, "{backend:?} {name}");
        }
        assert_eq!(app.count("webhook_event").await, 0);
    })
    .await;
}

#[tokio::test]
async fn without_a_public_key_every_secret_is_tried_and_hex_case_does_not_matter() {
    on_each_backend(|backend| async move {
        let app = signed_app(backend).await;
        let lines = fixture_lines("v1/happy-path.jsonl");
        assert_eq!(
            app.post_signed(lines[0].clone(), "sk_rotated_bare", None)
                .await
                .status,
            200
        );
        assert_eq!(
            app.post_signed(lines[1].clone(), SECRET, None).await.status,
            200
        );
        let upper = calltrail::webhook::sign(SECRET, &lines[2]).to_uppercase();
        let answer = app
            .post_with(
                lines[2].clone(),
                &[
                    ("content-type", "application/json"),
                    ("x-signature", &upper),
                ],
            )
            .await;
        assert_eq!(answer.status, 200);
    })
    .await;
}

#[tokio::test]
async fn without_secrets_unsigned_deliveries_are_accepted_as_unverified() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        assert_eq!(app.post_webhook(body()).await.status, 200);
        let event = webhook_event::Entity::find()
            .one(&app.db)
            .await
            .unwrap()
            .unwrap();
        assert!(!event.signature_verified);
    })
    .await;
}

/// With secrets configured, a malformed body is judged after its
/// signature: signed, it gets the 400 that names what is wrong; unsigned,
/// the 401 (nothing from an unknown sender is read). Neither stores anything.
#[tokio::test]
async fn a_signed_malformed_body_gets_its_400_and_an_unsigned_one_401() {
    on_each_backend(|backend| async move {
        let app = signed_app(backend).await;
        for (file, code) in calltrail_tests::BAD_FIXTURES {
            let body = calltrail_tests::fixture(file);
            let signed = app
                .post_signed(body.clone(), SECRET, Some(PUBLIC_KEY))
                .await;
            assert_eq!(signed.status, 400, "{backend:?} {file}: {}", signed.body);
            assert_eq!(signed.body["error"]["code"], code, "{file}");
            let unsigned = app.post_webhook(body).await;
            assert_eq!(unsigned.status, 401, "{backend:?} {file}");
            assert_eq!(unsigned.body["error"]["code"], "signature_missing");
        }
        assert_eq!(app.count("webhook_event").await, 0);
        let metrics = app.metrics().await;
        let refused = |reason: &str| {
            calltrail_tests::sample(
                &metrics,
                "calltrail_deliveries_total",
                &[
                    ("type", "unknown"),
                    ("outcome", "refused"),
                    ("reason", reason),
                ],
            )
        };
        assert_eq!(
            (refused("signature"), refused("malformed")),
            (Some(5.0), Some(5.0)),
            "{backend:?}: {metrics}"
        );
    })
    .await;
}
