//! `/graphql` over HTTP: the token, GET queries and GraphiQL, CORS, the
//! depth and complexity limits, and refusals with codes.

use calltrail::config::Secret;
use calltrail_tests::{Answer, TestApp, on_each_backend};
use serde_json::{Value, json};

use super::{data, error_codes, seed_fixtures};

const TOKEN: &str = "t0ken-for-tests";
const QUERY: &str = "{ calls { totalCount } }";

async fn get(app: &TestApp, query: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = app
        .client
        .get(format!("{}/graphql", app.address))
        .query(&[("query", query)]);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Answer::from(request.send().await.expect("the server answers")).await
}

#[tokio::test]
async fn with_a_token_configured_graphql_needs_it_and_nothing_else_does() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn_with(backend, |c| c.api_token = Some(Secret(TOKEN.into()))).await;
        seed_fixtures(&app).await; // the webhook keeps its own (signature) auth

        for token in [
            None,
            Some("wrong"),
            Some("t0ken-for-tests-and-more"),
            Some(""),
        ] {
            let answer = app.graphql_with_token(token, QUERY, Value::Null).await;
            assert_eq!(answer.status, 401, "{backend:?} {token:?}");
            assert_eq!(error_codes(&answer), ["UNAUTHENTICATED"]);
            assert!(answer.headers.contains_key("www-authenticate"));
        }
        let ok = app
            .graphql_with_token(Some(TOKEN), QUERY, Value::Null)
            .await;
        assert_eq!(data(&ok)["calls"]["totalCount"], 3);

        assert_eq!(get(&app, QUERY, &[]).await.status, 401);
        let with = get(&app, QUERY, &[("authorization", "Bearer t0ken-for-tests")]).await;
        assert_eq!(data(&with)["calls"]["totalCount"], 3);
        let scheme_case = get(&app, QUERY, &[("authorization", "bearer t0ken-for-tests")]).await;
        assert_eq!(scheme_case.status, 200);
        let basic = get(&app, QUERY, &[("authorization", "Basic t0ken-for-tests")]).await;
        assert_eq!(basic.status, 401);

        let graphiql = get(&app, "", &[("accept", "text/html,application/xhtml+xml")]).await;
        assert_eq!(graphiql.status, 200);
        assert!(graphiql.body.as_str().unwrap().contains("graphiql"));
        assert_eq!(app.get("/healthz").await.status, 200);
        assert_eq!(app.get("/readyz").await.status, 200);
    })
    .await;
}

#[tokio::test]
async fn without_a_token_configured_graphql_is_open() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let answer = app
            .graphql_with_token(Some("anything"), QUERY, Value::Null)
            .await;
        assert_eq!(data(&answer)["calls"]["totalCount"], 0, "{backend:?}");
        assert_eq!(
            data(&app.graphql(QUERY, Value::Null).await)["calls"]["totalCount"],
            0
        );
    })
    .await;
}

#[tokio::test]
async fn get_runs_queries_with_variables_and_refuses_mutations() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        seed_fixtures(&app).await;
        let answer = Answer::from(
            app.client
                .get(format!("{}/graphql", app.address))
                .query(&[
                    ("query", "query($id: ID!) { call(id: $id) { status } }"),
                    ("variables", r#"{"id": "c_44aa0e11-resched"}"#),
                ])
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            data(&answer)["call"]["status"],
            "VALIDATION_FAILED",
            "{backend:?}"
        );

        let mutation = r#"mutation { acknowledgeAction(id: "1", status: HANDLED) { id } }"#;
        let refused = get(&app, mutation, &[]).await;
        assert_eq!(refused.status, 405);
        assert_eq!(refused.headers["allow"], "POST");
        let pending = app
            .graphql(
                "{ actions(filter: {status: [PENDING]}) { totalCount } }",
                Value::Null,
            )
            .await;
        assert_eq!(
            data(&pending)["actions"]["totalCount"],
            2,
            "the GET changed nothing"
        );

        let empty = app.get("/graphql").await;
        assert_eq!(empty.status, 400);
        assert_eq!(error_codes(&empty), ["BAD_REQUEST"]);
    })
    .await;
}

#[tokio::test]
async fn malformed_bodies_and_queries_are_refused_with_codes() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let post = |body: &'static str| {
            app.client
                .post(format!("{}/graphql", app.address))
                .header("content-type", "application/json")
                .body(body)
                .send()
        };
        let not_json = Answer::from(post("{nope").await.unwrap()).await;
        assert_eq!(not_json.status, 400, "{backend:?}");
        assert_eq!(error_codes(&not_json), ["BAD_REQUEST"]);

        let syntax = app.graphql("{ calls { ", Value::Null).await;
        assert_eq!(error_codes(&syntax), ["GRAPHQL_PARSE_FAILED"]);
        let unknown_field = app
            .graphql("{ calls { nodes { colour } } }", Value::Null)
            .await;
        assert_eq!(error_codes(&unknown_field), ["GRAPHQL_VALIDATION_FAILED"]);
        let bad_date = app
            .graphql(
                "{ calls(filter: {createdAfter: \"yesterday\"}) { totalCount } }",
                Value::Null,
            )
            .await;
        assert_eq!(error_codes(&bad_date), ["GRAPHQL_VALIDATION_FAILED"]);
        let message = bad_date.body["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("createdAfter") && message.contains("DateTime"),
            "{message}"
        );

        for (args, why) in [
            ("first: -1", "negative"),
            ("first: 1, last: 1", "both directions"),
            ("after: \"garbage\"", "not a cursor"),
        ] {
            let answer = app
                .graphql(
                    &format!("{{ calls({args}) {{ totalCount }} }}"),
                    Value::Null,
                )
                .await;
            assert_eq!(error_codes(&answer), ["BAD_USER_INPUT"], "{why}");
        }
    })
    .await;
}

#[tokio::test]
async fn answers_list_fields_in_the_order_the_query_asks_for_them() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        seed_fixtures(&app).await;
        // totalCount (its own statement) finishes after the rest of the page.
        let query = "{ calls(first: 1) { totalCount pageInfo { endCursor } nodes { stale id actions { id } status } } }";
        let text = app
            .client
            .post(format!("{}/graphql", app.address))
            .json(&json!({"query": query}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let at = |key: &str| text.find(&format!("\"{key}\"")).unwrap_or_else(|| panic!("{key} in {text}"));
        assert!(at("totalCount") < at("pageInfo") && at("pageInfo") < at("nodes"), "{backend:?}: {text}");
        assert!(at("stale") < at("id") && at("id") < at("actions") && at("actions") < at("status"), "{text}");
    })
    .await;
}

#[tokio::test]
async fn a_cursor_of_one_order_is_refused_in_another() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        seed_fixtures(&app).await;
        let first = app.graphql("{ calls(first: 1) { pageInfo { endCursor } } }", Value::Null).await;
        let cursor = data(&first)["calls"]["pageInfo"]["endCursor"].clone();
        let query = "query($after: String) { calls(first: 1, after: $after, orderBy: {field: DURATION, direction: ASC}) { totalCount } }";
        let answer = app.graphql(query, json!({"after": cursor})).await;
        assert_eq!(error_codes(&answer), ["BAD_USER_INPUT"], "{backend:?}");

        // Cursors of the right shape whose key does not fit their order.
        use base64::Engine;
        let by_time = "query($after: String) { calls(first: 1, after: $after) { totalCount } }";
        for position in [
            json!({"order": "CREATED_AT", "key": 157.25, "id": "c_1"}),
            json!({"order": "CREATED_AT", "key": null, "id": "c_1"}),
        ] {
            let made = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&position).unwrap());
            let answer = app.graphql(by_time, json!({"after": made})).await;
            assert_eq!(error_codes(&answer), ["BAD_USER_INPUT"], "{backend:?} {position}");
        }
    })
    .await;
}

/// `{ calls { nodes { actions { call { … } } } } }`, exactly `depth` fields deep.
fn nested(depth: usize) -> String {
    // `calls` and `nodes` take two levels; each `actions { call { … } }`
    // two more; the leaf is `id` (one) or `analysis { id }` (two).
    let rest = depth - 2;
    let (pairs, leaf) = if rest % 2 == 1 {
        ((rest - 1) / 2, "id")
    } else {
        ((rest - 2) / 2, "analysis { id }")
    };
    let mut inner = leaf.to_owned();
    for _ in 0..pairs {
        inner = format!("actions {{ call {{ {inner} }} }}");
    }
    format!("{{ calls {{ nodes {{ {inner} }} }} }}")
}

#[tokio::test]
async fn queries_deeper_than_12_levels_or_too_complex_are_refused_before_running() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        for depth in [11, 12] {
            data(&app.graphql(&nested(depth), Value::Null).await);
        }
        let deep = app.graphql(&nested(13), Value::Null).await;
        assert_eq!(error_codes(&deep), ["QUERY_TOO_DEEP"], "{backend:?}");
        let message = deep.body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("13 levels") && message.contains("limit is 12"), "{message}");

        let heavy = "{ calls(first: 100) { nodes { events(first: 1000) { id type payload receivedAt } } } }";
        let refused = app.graphql(heavy, Value::Null).await;
        assert_eq!(error_codes(&refused), ["QUERY_TOO_COMPLEX"]);
        assert!(refused.body["errors"][0]["message"].as_str().unwrap().contains("limit is"));

        // GraphiQL's schema query is deeper than 12 and still answered.
        let introspection = app
            .graphql(
                "{ __schema { types { name fields { name type { name ofType { name ofType { name ofType { name ofType { name ofType { name ofType { name ofType { name ofType { name ofType { name } } } } } } } } } } } } } }",
                Value::Null,
            )
            .await;
        assert!(data(&introspection)["__schema"]["types"].as_array().unwrap().len() > 20);
    })
    .await;
}

/// POST a GraphQL operation naming `host` in its `Host` header.
async fn post_as(app: &TestApp, host: &str, query: &str, variables: Value) -> Answer {
    let request = app
        .client
        .post(format!("{}/graphql", app.address))
        .header("host", host)
        .json(&json!({"query": query, "variables": variables}));
    Answer::from(request.send().await.expect("the server answers")).await
}

/// A page whose own name it makes resolve to 127.0.0.1 (DNS rebinding) is
/// same-origin with a server on its visitor's machine: without a token,
/// GraphQL answers only requests naming an IP address, localhost, or a host
/// of `CALLTRAIL_ALLOWED_HOSTS`, and a refused mutation changes nothing.
#[tokio::test]
async fn without_a_token_graphql_answers_only_addresses_localhost_and_allowed_hosts() {
    const PENDING: &str = r#"{ actions(filter: {status: [PENDING]}) { totalCount nodes { id } } }"#;
    const ACK: &str =
        r#"mutation($id: ID!) { acknowledgeAction(id: $id, status: HANDLED) { id } }"#;
    on_each_backend(|backend| async move {
        let app = TestApp::spawn_with(backend, |c| {
            c.allowed_hosts = vec!["calltrail.internal".into()];
        })
        .await;
        seed_fixtures(&app).await;
        let port = app.address.rsplit(':').next().unwrap().to_owned();
        let pending = data(&app.graphql(PENDING, Value::Null).await)["actions"].clone();
        let before = pending["totalCount"].as_i64().unwrap();
        assert!(before > 0, "{backend:?}: the fixtures hold pending actions");
        let id = pending["nodes"][0]["id"].clone();

        let rebound = format!("evil.example:{port}");
        let refused = post_as(&app, &rebound, ACK, json!({"id": id})).await;
        assert_eq!(refused.status, 403, "{backend:?}: {}", refused.body);
        assert_eq!(error_codes(&refused), ["FORBIDDEN"]);
        assert!(
            refused.body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("CALLTRAIL_ALLOWED_HOSTS")
        );
        let query = get(&app, PENDING, &[("host", rebound.as_str())]).await;
        assert_eq!(query.status, 403);
        let after = data(&app.graphql(PENDING, Value::Null).await)["actions"]["totalCount"].clone();
        assert_eq!(after, before, "{backend:?}: the refused mutation ran");

        for host in [
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
            format!("calltrail.internal:{port}"),
            "CallTrail.Internal".to_owned(),
        ] {
            let answer = post_as(&app, &host, PENDING, Value::Null).await;
            assert_eq!(data(&answer)["actions"]["totalCount"], before, "{host}");
        }

        // With a token, the token is the check, whatever the host.
        let with_token =
            TestApp::spawn_with(backend, |c| c.api_token = Some(Secret(TOKEN.into()))).await;
        let answer = with_token
            .client
            .post(format!("{}/graphql", with_token.address))
            .header("host", "calltrail.example.com")
            .bearer_auth(TOKEN)
            .json(&json!({"query": QUERY}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    })
    .await;
}

#[tokio::test]
async fn browsers_from_configured_origins_may_call_graphql() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn_with(backend, |c| {
            c.cors_origins = vec!["https://app.example.com/".into()];
            c.api_token = Some(Secret(TOKEN.into()));
        })
        .await;
        let preflight = |origin: &'static str| {
            app.client
                .request(reqwest::Method::OPTIONS, format!("{}/graphql", app.address))
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization,content-type",
                )
                .send()
        };
        let allowed = preflight("https://app.example.com").await.unwrap();
        assert!(
            allowed.status().is_success(),
            "{backend:?}: preflight needs no token"
        );
        assert_eq!(
            allowed.headers()["access-control-allow-origin"],
            "https://app.example.com"
        );
        let other = preflight("https://evil.example").await.unwrap();
        assert!(!other.headers().contains_key("access-control-allow-origin"));

        let answer = app
            .client
            .post(format!("{}/graphql", app.address))
            .header("origin", "https://app.example.com")
            .bearer_auth(TOKEN)
            .json(&json!({"query": QUERY}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer.headers()["access-control-allow-origin"],
            "https://app.example.com"
        );
    })
    .await;
}

#[tokio::test]
async fn a_malformed_cors_origin_stops_the_start_with_a_clear_message() {
    let url = calltrail_tests::fresh_database(calltrail_tests::Backend::Sqlite).await;
    let mut config = calltrail::Config::for_database(&url);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.cors_origins = vec!["app.example.com".into()];
    let err = calltrail::Application::build(config)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("CALLTRAIL_CORS_ORIGINS"), "{err}");
}

#[tokio::test]
async fn an_allowed_host_that_could_never_match_stops_the_start_with_a_clear_message() {
    let url = calltrail_tests::fresh_database(calltrail_tests::Backend::Sqlite).await;
    let mut config = calltrail::Config::for_database(&url);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.allowed_hosts = vec![
        "calltrail.internal".into(),
        "https://calltrail.internal".into(),
    ];
    let err = calltrail::Application::build(config)
        .await
        .err()
        .expect("refused");
    let err = err.to_string();
    assert!(err.contains("CALLTRAIL_ALLOWED_HOSTS"), "{err}");
    assert!(err.contains("https://calltrail.internal"), "{err}");
}
