//! v2 signatures over HTTP: `X-Mirai-Signature: t=…,v1=…` over
//! "<t>.<body>", the replay window against an injected clock, every
//! configured secret tried, and each refusal a 401 with its own code.

use calltrail::config::Clock;
use calltrail_tests::{
    Answer, Backend, PUBLIC_KEY, SECRET, TestApp, fixture, fixture_lines, on_each_backend,
};
use entity::webhook_event;
use sea_orm::EntityTrait;

/// The platform's published test vector (tests/fixtures/v2/test-vector.json).
const VECTOR_SECRET: &str = "whsec_7d4f1a09c2e58b36a1f0d7c93b2e64a8";
const VECTOR_T: i64 = 1_785_057_398;
const VECTOR_SIGNATURE: &str =
    "t=1785057398,v1=771bca27e1647dfbe59ff5d8f32d9de69be246f6e604c05bddcbaefd8604ccb3";

/// An app whose clock stands still at `now`, with these secrets.
async fn app_at(backend: Backend, now: i64, secrets: &str) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.webhook_secrets = Some(secrets.parse().unwrap());
        c.clock = Clock::Fixed(now);
    })
    .await
}

async fn post_v2(app: &TestApp, body: Vec<u8>, signature: &str) -> Answer {
    app.post_with(
        body,
        &[
            ("content-type", "application/json"),
            ("x-mirai-signature", signature),
        ],
    )
    .await
}

fn refused(answer: &Answer, code: &str, what: &str) {
    assert_eq!(answer.status, 401, "{what}: {}", answer.body);
    assert_eq!(answer.body["error"]["code"], code, "{what}");
}

/// Distinct v2 deliveries to sign at different times.
fn bodies() -> Vec<Vec<u8>> {
    ["v2/completed.jsonl", "v2/failed.jsonl"]
        .into_iter()
        .flat_map(fixture_lines)
        .collect()
}

#[tokio::test]
async fn the_published_test_vector_verifies_and_a_flipped_byte_does_not() {
    on_each_backend(|backend| async move {
        let app = app_at(backend, VECTOR_T, VECTOR_SECRET).await;
        let body = fixture("v2/test-vector.json");
        assert_eq!(body.len(), 177);

        let mut flipped = body.clone();
        let at = body.windows(9).position(|w| w == b"call_01JZ").unwrap() + 6;
        flipped[at] ^= 0x01; // "1" → "0": still JSON, another call
        refused(
            &post_v2(&app, flipped, VECTOR_SIGNATURE).await,
            "signature_invalid",
            "flipped body byte",
        );
        let mut bad_hex = VECTOR_SIGNATURE.to_owned();
        bad_hex.replace_range(bad_hex.len() - 1.., "4");
        refused(
            &post_v2(&app, body.clone(), &bad_hex).await,
            "signature_invalid",
            "flipped signature",
        );
        assert_eq!(app.count("webhook_event").await, 0, "{backend:?}");

        let answer = post_v2(&app, body, VECTOR_SIGNATURE).await;
        assert_eq!(answer.status, 200, "{backend:?}: {}", answer.body);
        let event = webhook_event::Entity::find()
            .one(&app.db)
            .await
            .unwrap()
            .unwrap();
        assert!(event.signature_verified);
        assert_eq!(
            (event.format.as_str(), event.upstream_id.as_deref()),
            ("v2", Some("evt_01JZQ9C5N9P4R7S3T6V8W2X4YB"))
        );
        assert_eq!(event.body.as_bytes(), &fixture("v2/test-vector.json")[..]);
    })
    .await;
}

#[tokio::test]
async fn the_window_accepts_299_seconds_and_refuses_301_in_the_past_and_the_future() {
    on_each_backend(|backend| async move {
        let now = VECTOR_T + 86_400;
        let app = app_at(backend, now, VECTOR_SECRET).await;
        let mut bodies = bodies().into_iter();
        for skew in [-301, 301] {
            let answer = app
                .post_signed_v2(bodies.next().unwrap(), VECTOR_SECRET, now + skew)
                .await;
            refused(
                &answer,
                "signature_timestamp_out_of_tolerance",
                &format!("{backend:?} {skew:+}"),
            );
            assert!(
                answer.body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("301 s")
            );
        }
        assert_eq!(
            app.count("webhook_event").await,
            0,
            "{backend:?}: nothing stored"
        );
        for skew in [-299, 299, -300, 300, 0] {
            let answer = app
                .post_signed_v2(bodies.next().unwrap(), VECTOR_SECRET, now + skew)
                .await;
            assert_eq!(answer.status, 200, "{backend:?} {skew:+}: {}", answer.body);
            assert_eq!(answer.body["duplicate"], false);
        }
        // The published vector is judged by the same clock.
        refused(
            &post_v2(&app, fixture("v2/test-vector.json"), VECTOR_SIGNATURE).await,
            "signature_timestamp_out_of_tolerance",
            "the vector a day later",
        );
    })
    .await;
}

#[tokio::test]
async fn the_tolerance_is_a_setting() {
    on_each_backend(|backend| async move {
        let now = VECTOR_T;
        let app = TestApp::spawn_with(backend, |c| {
            c.webhook_secrets = Some(VECTOR_SECRET.parse().unwrap());
            c.clock = Clock::Fixed(now);
            c.webhook_tolerance = std::time::Duration::from_secs(60);
        })
        .await;
        let mut bodies = bodies().into_iter();
        let late = app
            .post_signed_v2(bodies.next().unwrap(), VECTOR_SECRET, now - 61)
            .await;
        refused(
            &late,
            "signature_timestamp_out_of_tolerance",
            "61 s with a 60 s tolerance",
        );
        let edge = app
            .post_signed_v2(bodies.next().unwrap(), VECTOR_SECRET, now + 60)
            .await;
        assert_eq!(edge.status, 200, "{backend:?}: {}", edge.body);
    })
    .await;
}

#[tokio::test]
async fn every_configured_secret_verifies_a_v2_delivery_while_v1_keeps_its_rules() {
    on_each_backend(|backend| async move {
        let now = VECTOR_T;
        let secrets = format!("{PUBLIC_KEY}:{SECRET},whsec_old,whsec_new");
        let app = app_at(backend, now, &secrets).await;
        let mut bodies = bodies().into_iter();
        for secret in ["whsec_old", "whsec_new", SECRET] {
            let answer = app
                .post_signed_v2(bodies.next().unwrap(), secret, now)
                .await;
            assert_eq!(answer.status, 200, "{backend:?} {secret}: {}", answer.body);
        }
        let stranger = app
            .post_signed_v2(bodies.next().unwrap(), "whsec_stranger", now)
            .await;
        refused(&stranger, "signature_invalid", "an unknown secret");
        let v1 = fixture_lines("v1/happy-path.jsonl").remove(0);
        assert_eq!(
            app.post_signed(v1, SECRET, Some(PUBLIC_KEY)).await.status,
            200
        );
        assert_eq!(app.count("webhook_event").await, 4, "{backend:?}");
    })
    .await;
}

#[tokio::test]
async fn each_format_must_come_with_its_own_signature() {
    on_each_backend(|backend| async move {
        let now = VECTOR_T;
        let app = app_at(backend, now, &format!("{SECRET},{VECTOR_SECRET}")).await;
        let v2 = fixture("v2/test-vector.json");
        let v1 = fixture_lines("v1/happy-path.jsonl").remove(0);

        // A v1-style signature cannot carry a v2 body past the replay window.
        let v1_style = app.post_signed(v2.clone(), VECTOR_SECRET, None).await;
        refused(&v1_style, "signature_missing", "v2 body, x-signature only");
        let v2_style = app.post_signed_v2(v1.clone(), SECRET, now).await;
        refused(
            &v2_style,
            "signature_missing",
            "v1 body, X-Mirai-Signature only",
        );
        for header in ["v1=771bca27", "t=yesterday,v1=771bca27", "771bca27"] {
            refused(
                &post_v2(&app, v2.clone(), header).await,
                "signature_malformed",
                header,
            );
        }
        // A body that is not a delivery: the signature is judged first, by
        // the scheme its headers claim.
        refused(
            &post_v2(&app, b"{not json".to_vec(), VECTOR_SIGNATURE).await,
            "signature_invalid",
            "garbage with a v2 header",
        );
        assert_eq!(app.count("webhook_event").await, 0, "{backend:?}");
    })
    .await;
}

#[tokio::test]
async fn without_secrets_v2_deliveries_are_accepted_as_unverified() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        assert_eq!(
            app.post_webhook(fixture("v2/test-vector.json"))
                .await
                .status,
            200
        );
        let event = webhook_event::Entity::find()
            .one(&app.db)
            .await
            .unwrap()
            .unwrap();
        assert!(!event.signature_verified);
        assert_eq!(event.format, "v2");
    })
    .await;
}
