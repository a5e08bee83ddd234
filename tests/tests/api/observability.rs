//! What an operator sees: /metrics, request ids, `simulate`, startup failures.

use std::net::TcpListener;

use calltrail::simulate::{SimulateArgs, WireFormat, send};
use calltrail_tests::{
    PUBLIC_KEY, SECRET, TestApp, fixture, fixture_lines, fresh_database, on_each_backend, sample,
};
use serde_json::json;

#[tokio::test]
async fn metrics_count_deliveries_by_type_and_outcome_and_graphql_by_operation() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn_with(backend, |c| c.max_body_bytes = 16 * 1024).await;
        let lines = fixture_lines("v1/happy-path.jsonl");
        app.post_all(&lines).await;
        app.post_webhook(vec![b' '; 16 * 1024 + 1]).await; // refused: too large
        app.post_webhook(lines[0].clone()).await; // a duplicate
        app.post_webhook(fixture("bad/not-json.txt")).await; // refused: malformed
        app.post_with(lines[1].clone(), &[("content-type", "text/plain")])
            .await; // refused: content type
        app.post_webhook(fixture("edge/unknown-type.json")).await; // stored, type unknown
        app.graphql("{ calls { totalCount } }", json!({})).await;
        app.graphql(
            "mutation { acknowledgeAction(id: \"999999\", status: HANDLED) { id } }",
            json!({}),
        )
        .await;

        let text = app.metrics().await;
        let deliveries =
            |labels: &[(&str, &str)]| sample(&text, "calltrail_deliveries_total", labels);
        assert_eq!(
            deliveries(&[("type", "call.initiate"), ("outcome", "stored")]),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            deliveries(&[("type", "action"), ("outcome", "stored")]),
            Some(1.0)
        );
        assert_eq!(
            deliveries(&[("type", "call.initiate"), ("outcome", "duplicate")]),
            Some(1.0)
        );
        assert_eq!(
            deliveries(&[
                ("type", "unknown"),
                ("outcome", "refused"),
                ("reason", "malformed")
            ]),
            Some(1.0)
        );
        assert_eq!(
            deliveries(&[
                ("type", "unknown"),
                ("outcome", "refused"),
                ("reason", "content_type")
            ]),
            Some(1.0)
        );
        assert_eq!(
            deliveries(&[
                ("type", "unknown"),
                ("outcome", "refused"),
                ("reason", "too_large")
            ]),
            Some(1.0)
        );
        assert_eq!(
            deliveries(&[("type", "unknown"), ("outcome", "stored")]),
            Some(1.0),
            "call.transferred counts as unknown"
        );
        assert_eq!(
            sample(&text, "calltrail_webhook_duration_seconds_count", &[]),
            Some(12.0)
        );
        assert_eq!(
            sample(
                &text,
                "calltrail_graphql_requests_total",
                &[("operation", "query")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "calltrail_graphql_requests_total",
                &[("operation", "mutation")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "calltrail_graphql_duration_seconds_count",
                &[("operation", "query")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "calltrail_subscriptions_active", &[]),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "calltrail_ingest_queue_depth", &[]),
            Some(0.0)
        );
        // Sent one at a time, the nine deliveries that reached the writer
        // (all but the two refusals) were nine commits of one.
        for (name, value) in [
            ("calltrail_ingest_batch_size_count", 9.0),
            ("calltrail_ingest_batch_size_sum", 9.0),
            ("calltrail_ingest_commit_duration_seconds_count", 9.0),
            ("calltrail_ingest_batches_retried_total", 0.0),
        ] {
            assert_eq!(sample(&text, name, &[]), Some(value), "{name}: {text}");
        }
        assert_eq!(
            sample(&text, "calltrail_ingest_batch_size_bucket", &[("le", "1")]),
            Some(9.0)
        );
        assert!(
            sample(&text, "calltrail_db_pool_connections", &[("state", "idle")])
                .is_some_and(|n| n >= 1.0)
        );
        assert!(
            sample(
                &text,
                "calltrail_db_pool_connections",
                &[("state", "in_use")]
            )
            .is_some()
        );
        let last = sample(
            &text,
            "calltrail_last_stored_delivery_timestamp_seconds",
            &[],
        )
        .expect("set after a commit");
        assert!((last - chrono::Utc::now().timestamp() as f64).abs() < 60.0);
    })
    .await;
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_a_given_one_is_echoed() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let made = app.get("/healthz").await;
        let id = made.headers["x-request-id"].to_str().unwrap().to_owned();
        assert!(!id.is_empty());
        assert_ne!(
            app.get("/healthz").await.headers["x-request-id"]
                .to_str()
                .unwrap(),
            id,
            "one id per request"
        );
        let echoed = app
            .post_with(
                fixture_lines("v1/happy-path.jsonl").remove(0),
                &[
                    ("content-type", "application/json"),
                    ("x-request-id", "trace-42"),
                ],
            )
            .await;
        assert_eq!(echoed.headers["x-request-id"], "trace-42");
    })
    .await;
}

/// `calltrail simulate` without `--url` sends to the address the server
/// settings name, so one shell's `CALLTRAIL_LISTEN` serves both.
#[tokio::test]
async fn simulate_without_a_url_sends_to_the_listen_address() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let listen = app.address.trim_start_matches("http://").to_owned();
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_calltrail-under-test"))
                .args(["simulate", "--calls", "3", "--seed", "5"])
                .env_clear()
                .env("CALLTRAIL_LISTEN", &listen)
                .output()
                .expect("runs")
        })
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{stderr}");
        assert!(stderr.contains(&app.address), "{stderr}");
        let answer = app.graphql("{ callStats { total } }", json!({})).await;
        assert_eq!(
            answer.body["data"]["callStats"]["total"], 3,
            "{}",
            answer.body
        );
    })
    .await;
}

#[tokio::test]
async fn simulate_sends_lifecycles_that_graphql_then_reports() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let args = SimulateArgs {
            url: Some(app.address.clone()),
            calls: 30,
            concurrency: 4,
            secret: None,
            seed: Some(7),
            rate: None,
            format: WireFormat::V1,
        };
        let summary = send(&args, 7).await.unwrap();
        assert_eq!(
            (summary.errors, summary.duplicates, summary.stored),
            (0, 0, summary.sent)
        );
        let answer = app
            .graphql("{ callStats { total } events { totalCount } }", json!({}))
            .await;
        assert_eq!(
            answer.body["data"]["callStats"]["total"], 30,
            "{}",
            answer.body
        );
        assert_eq!(answer.body["data"]["events"]["totalCount"], summary.sent);
        // The same seed again: every delivery is a duplicate.
        let again = send(&args, 7).await.unwrap();
        assert_eq!(again.duplicates, summary.sent);
    })
    .await;
}

#[tokio::test]
async fn simulate_signs_what_it_sends() {
    on_each_backend(|backend| async move {
        let secrets = format!("{PUBLIC_KEY}:{SECRET}");
        let app = TestApp::spawn_with(backend, |c| {
            c.webhook_secrets = Some(secrets.parse().unwrap())
        })
        .await;
        let signed = SimulateArgs {
            url: Some(app.address.clone()),
            calls: 5,
            concurrency: 2,
            secret: Some(secrets.parse().unwrap()),
            seed: Some(1),
            rate: None,
            format: WireFormat::V1,
        };
        let summary = send(&signed, 1).await.unwrap();
        assert_eq!((summary.errors, summary.stored), (0, summary.sent));
        let unsigned = SimulateArgs {
            secret: None,
            seed: Some(2),
            ..signed
        };
        assert_eq!(
            send(&unsigned, 2).await.unwrap().errors,
            send_count(&unsigned),
            "unsigned: every delivery refused"
        );
    })
    .await;
}

/// Deliveries a simulate run sends.
fn send_count(args: &SimulateArgs) -> usize {
    (0..args.calls)
        .map(|i| calltrail::simulate::lifecycle(args.seed.unwrap(), i).len())
        .sum()
}

#[tokio::test]
async fn each_request_is_one_log_line_with_method_route_status_latency_and_id() {
    let url = fresh_database(calltrail_tests::Backend::Sqlite).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_calltrail-under-test"))
        .env_clear()
        .env("DATABASE_URL", &url)
        .env("CALLTRAIL_LISTEN", "127.0.0.1:0")
        .env("CALLTRAIL_LOG_FORMAT", "json")
        .env(
            "CALLTRAIL_WEBHOOK_SECRETS",
            format!("{PUBLIC_KEY}:{SECRET}"),
        )
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stderr.take().unwrap()));
    // A server that stops logging fails the test instead of hanging it.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut next_json = async || -> serde_json::Value {
        loop {
            let line = tokio::time::timeout_at(deadline, lines.next_line())
                .await
                .expect("the awaited log line within 30 s")
                .unwrap()
                .expect("the server logs");
            if let Ok(v) = serde_json::from_str(&line) {
                return v;
            }
        }
    };
    let address = loop {
        if let Some(a) = next_json().await["address"].as_str() {
            break a.to_owned();
        }
    };
    let body = fixture_lines("v1/happy-path.jsonl").remove(0);
    let signature = calltrail::webhook::sign(SECRET, &body);
    reqwest::Client::new()
        .post(format!("http://{address}/webhooks/call-events"))
        .header("content-type", "application/json")
        .header("x-signature", &signature)
        .header("x-request-id", "req-77")
        .body(body)
        .send()
        .await
        .unwrap();
    let line = loop {
        let v = next_json().await;
        if v["message"] == "request" {
            break v;
        }
    };
    assert_eq!(
        (
            line["method"].as_str(),
            line["route"].as_str(),
            line["status"].as_u64()
        ),
        (Some("POST"), Some("/webhooks/call-events"), Some(200)),
        "{line}"
    );
    assert!(line["latency_ms"].as_f64().is_some(), "{line}");
    assert_eq!(line["span"]["request_id"], "req-77", "{line}");
    assert!(
        !line.to_string().contains(&signature) && !line.to_string().contains(SECRET),
        "no secrets in logs"
    );
    child.start_kill().ok();
}

fn run_server(env: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_calltrail-under-test"));
    command.env_clear();
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("runs")
}

#[tokio::test]
async fn startup_failures_say_what_and_how_to_fix_in_one_line() {
    let sqlite = fresh_database(calltrail_tests::Backend::Sqlite).await;
    let unreachable = run_server(&[("DATABASE_URL", "postgres://calltrail@127.0.0.1:1/nowhere")]);
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().to_string();
    let in_use = run_server(&[("DATABASE_URL", &sqlite), ("CALLTRAIL_LISTEN", &port)]);
    let bad_secrets = run_server(&[
        ("DATABASE_URL", &sqlite),
        ("CALLTRAIL_WEBHOOK_SECRETS", "pk_live:"),
    ]);
    let bad_log_filter = run_server(&[("DATABASE_URL", &sqlite), ("RUST_LOG", "calltrail=loud")]);
    let no_read_connections = run_server(&[
        ("DATABASE_URL", &sqlite),
        ("CALLTRAIL_DB_READ_CONNECTIONS", "0"),
    ]);
    for (output, code, words) in [
        (&no_read_connections, 2, "--db-read-connections"),
        (
            &bad_log_filter,
            2,
            "the log filter `calltrail=loud` (RUST_LOG or --log) is not valid: ",
        ),
        (
            &unreachable,
            1,
            "cannot open the database postgres://calltrail@127.0.0.1:1/nowhere: ",
        ),
        (
            &in_use,
            1,
            "is another server using it? Choose another with --listen or CALLTRAIL_LISTEN",
        ),
        (
            &bad_secrets,
            2,
            "a `pk:sk` pair needs both a public key and a secret",
        ),
    ] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{stderr}");
        assert!(stderr.contains(words), "{stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
    }
}

/// Every setting of CONTRACT §4 is read from its environment variable: each
/// given a value it refuses, `calltrail schema` (which reads the settings
/// like any command, then exits) stops with exit 2 naming the setting; a
/// renamed variable would be ignored and exit 0.
#[test]
fn each_environment_variable_reaches_its_setting() {
    for (variable, value, named) in [
        ("CALLTRAIL_LISTEN", "nowhere", "--listen"),
        (
            "CALLTRAIL_WEBHOOK_SECRETS",
            "pk_live:",
            "CALLTRAIL_WEBHOOK_SECRETS",
        ),
        ("CALLTRAIL_WEBHOOK_TOLERANCE", "0", "--webhook-tolerance"),
        ("CALLTRAIL_API_TOKEN", " ", "CALLTRAIL_API_TOKEN"),
        ("CALLTRAIL_MAX_BODY_BYTES", "0", "--max-body-bytes"),
        ("CALLTRAIL_STALE_AFTER", "soon", "--stale-after"),
        ("RUST_LOG", "calltrail=loud", "RUST_LOG or --log"),
        ("CALLTRAIL_LOG_FORMAT", "xml", "--log-format"),
        (
            "CALLTRAIL_SQLITE_SYNCHRONOUS",
            "off",
            "--sqlite-synchronous",
        ),
        ("CALLTRAIL_INGEST_WRITERS", "0", "--ingest-writers"),
        ("CALLTRAIL_INGEST_BATCH", "0", "--ingest-batch"),
        ("CALLTRAIL_INGEST_QUEUE", "0", "--ingest-queue"),
        (
            "CALLTRAIL_DB_READ_CONNECTIONS",
            "0",
            "--db-read-connections",
        ),
        (
            "CALLTRAIL_SUBSCRIPTION_BUFFER",
            "0",
            "--subscription-buffer",
        ),
        ("CALLTRAIL_WS_WRITE_TIMEOUT", "0s", "--ws-write-timeout"),
        ("CALLTRAIL_CLIENT_TIMEOUT", "0s", "--client-timeout"),
        ("CALLTRAIL_MAX_CONNECTIONS", "0", "--max-connections"),
        ("CALLTRAIL_SHUTDOWN_TIMEOUT", "later", "--shutdown-timeout"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_calltrail-under-test"))
            .arg("schema")
            .env_clear()
            .env(variable, value)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{variable}={value:?}: {stderr}"
        );
        assert!(stderr.contains(named), "{variable}: {stderr}");
    }
    // And what they accept takes effect: the schema is printed.
    let fine = std::process::Command::new(env!("CARGO_BIN_EXE_calltrail-under-test"))
        .arg("schema")
        .env_clear()
        .env("CALLTRAIL_INGEST_BATCH", "64")
        .env("CALLTRAIL_STALE_AFTER", "15m")
        .output()
        .expect("runs");
    assert_eq!(fine.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&fine.stdout).contains("type Query"));
}
