//! The dashboard in a real browser: `tests/e2e/dashboard.mjs` drives Debian's
//! headless Chromium (playwright-core) against the real binary while
//! `calltrail simulate` sends calls (v1 and v2), and the page must show them
//! live. SQLite only: the dashboard reads GraphQL, which every other test
//! covers on both.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use calltrail_tests::{Backend, fresh_database};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

use crate::process::start_server_with;

/// One browser at a time: each is a few hundred MB and the machine is small.
static BROWSER: Mutex<()> = Mutex::const_new(());

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e")
}

/// `target/e2e-screenshots/` of the workspace.
fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .join("target/e2e-screenshots")
}

/// `tests/e2e/setup.sh`, once per test run: installs what is missing or says what to install.
fn setup() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let outcome = DONE.get_or_init(|| {
        let output = std::process::Command::new("bash")
            .arg(e2e_dir().join("setup.sh"))
            .output()
            .map_err(|e| format!("cannot run bash tests/e2e/setup.sh: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    });
    if let Err(why) = outcome {
        panic!("the browser test cannot run:\n{why}");
    }
}

/// The webhook secret of the first test's server: a bare one signs both formats.
const SECRET: &str = "whsec_e2e_dashboard_5b9d";

/// What to simulate: `calls` lifecycles of `format` from `seed`, at most
/// `rate` deliveries a second, signed with `secret`.
struct Run<'a> {
    calls: usize,
    seed: u64,
    rate: Option<u32>,
    format: &'a str,
    secret: Option<&'a str>,
}

impl Run<'_> {
    const fn v1(calls: usize, seed: u64, rate: Option<u32>) -> Self {
        Run {
            calls,
            seed,
            rate,
            format: "v1",
            secret: None,
        }
    }
}

/// `calltrail simulate` (the binary under test) against `base`.
async fn simulate(base: &str, run: Run<'_>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_calltrail-under-test"));
    command.env_clear().args([
        "simulate",
        "--url",
        base,
        "--format",
        run.format,
        "--calls",
        &run.calls.to_string(),
        "--seed",
        &run.seed.to_string(),
        "--concurrency",
        "4",
    ]);
    if let Some(rate) = run.rate {
        command.args(["--rate", &rate.to_string()]);
    }
    if let Some(secret) = run.secret {
        command.args(["--secret", secret]);
    }
    let output = command.output().await.expect("simulate runs");
    assert!(
        output.status.success(),
        "simulate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The Node script and the lines it prints.
struct Script {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Script {
    fn start(base: &str, token: Option<&str>) -> Self {
        let mut command = Command::new("node");
        command
            .current_dir(e2e_dir())
            .arg("dashboard.mjs")
            .arg(base)
            .arg(screenshot_dir());
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (tests/e2e/setup.sh checked it is installed)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// The script's next line, which must start with `prefix`; returns the rest.
    async fn expect(&mut self, prefix: &str) -> String {
        let line = tokio::time::timeout(Duration::from_secs(120), self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("the browser script did not say {prefix} within 2 minutes"))
            .expect("read the script's output");
        match line {
            Some(line) if line.starts_with(prefix) => line[prefix.len()..].trim().to_owned(),
            other => panic!(
                "expected {prefix} from the browser script, got {other:?}\n{}",
                self.failure().await
            ),
        }
    }

    async fn say(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to the script");
    }

    /// Why the script failed: its exit status and what it printed on stderr.
    async fn failure(&mut self) -> String {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr).await;
        }
        format!("the browser script ended ({status:?}):\n{stderr}")
    }

    async fn finish(mut self) {
        self.expect("PASS").await;
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the script exits after PASS")
            .expect("wait for node");
        assert!(status.success(), "{}", self.failure().await);
    }
}

async fn graphql(base: &str, token: Option<&str>, query: &str) -> serde_json::Value {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": query }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let body: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
    assert!(body["errors"].is_null(), "{body}");
    body["data"].clone()
}

/// A VOICEMAIL call for the page to show and filter: simulate's v2 mix
/// usually makes one; when it did not, the fixture's `call.voicemail`
/// lifecycle is posted (signed now), live like the rest.
async fn ensure_a_voicemail(base: &str) {
    let query = "{ calls(filter: {status: [VOICEMAIL]}) { totalCount } }";
    if graphql(base, None, query).await["calls"]["totalCount"] != 0 {
        return;
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/v2/voicemail.jsonl");
    let client = reqwest::Client::new();
    for line in std::fs::read_to_string(fixture).unwrap().lines() {
        let signature =
            calltrail::webhook::sign_v2(SECRET, chrono::Utc::now().timestamp(), line.as_bytes());
        let answer = client
            .post(format!("{base}/webhooks/call-events"))
            .header("content-type", "application/json")
            .header(calltrail::webhook::V2_HEADER, signature)
            .body(line.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    }
    assert_eq!(graphql(base, None, query).await["calls"]["totalCount"], 1);
}

/// A port nothing listens on now, so that a restarted server keeps its address.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[tokio::test]
async fn the_dashboard_shows_calls_arriving_live_and_acknowledges_an_action() {
    setup();
    let _one_browser = BROWSER.lock().await;
    let database_url = fresh_database(Backend::Sqlite).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let settings = [
        ("CALLTRAIL_LISTEN", listen.as_str()),
        ("CALLTRAIL_WEBHOOK_SECRETS", SECRET),
    ];
    let (mut server, base) = start_server_with(&database_url, &settings).await;
    let signed = |run: Run<'static>| Run {
        secret: Some(SECRET),
        ..run
    };

    let mut page = Script::start(&base, None);
    page.expect("READY").await;
    // Paced, so that the page sees calls go from INITIATE to their outcome;
    // v1 and v2 calls at once, as during the platform's migration.
    tokio::join!(
        simulate(&base, signed(Run::v1(30, 8, Some(50)))),
        simulate(
            &base,
            signed(Run {
                format: "v2",
                ..Run::v1(12, 8, Some(10))
            })
        ),
    );
    ensure_a_voicemail(&base).await;
    page.say("SIMULATED").await;

    // The server dies; calls arrive at its successor before the page is back.
    page.expect("RESTART").await;
    server.start_kill().expect("SIGKILL");
    server.wait().await.expect("the server ends");
    let (_server, again) = start_server_with(&database_url, &settings).await;
    assert_eq!(again, base);
    simulate(&base, signed(Run::v1(3, 9, None))).await;
    page.say("RESTARTED").await;

    let acknowledged = page.expect("ACKED ").await;
    page.finish().await;

    // The page marked it handled (checked there through GraphQL); then a
    // colleague marked it failed, and the page's "Reopen" from its stale
    // HANDLED changed nothing.
    let data = graphql(
        &base,
        None,
        "{ actions(filter: {status: [HANDLED, FAILED]}) { nodes { id status note handledAt } } }",
    )
    .await;
    let acted = data["actions"]["nodes"].as_array().unwrap();
    assert_eq!(acted.len(), 1, "{data}");
    assert_eq!(acted[0]["id"], acknowledged.as_str());
    assert_eq!(
        (&acted[0]["status"], &acted[0]["note"]),
        (
            &serde_json::json!("FAILED"),
            &serde_json::json!("by a colleague")
        )
    );
    assert!(acted[0]["handledAt"].is_string());
}

#[tokio::test]
async fn with_an_api_token_the_dashboard_asks_for_it_and_then_works() {
    setup();
    let _one_browser = BROWSER.lock().await;
    let token = "e2e-token-7c1f";
    let (_server, base) = start_server_with(
        &fresh_database(Backend::Sqlite).await,
        &[("CALLTRAIL_API_TOKEN", token)],
    )
    .await;
    simulate(&base, Run::v1(3, 21, None)).await;
    // The page and its assets need no token.
    let client = reqwest::Client::new();
    for path in ["/", "/assets/app.js", "/assets/vendor/graphql-ws.js"] {
        let answer = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{path}");
    }

    let mut page = Script::start(&base, Some(token));
    page.expect("READY").await;
    simulate(&base, Run::v1(3, 22, Some(40))).await;
    page.say("SIMULATED").await;
    page.finish().await;

    let data = graphql(&base, Some(token), "{ calls { totalCount } }").await;
    assert_eq!(data["calls"]["totalCount"], 6);
}
