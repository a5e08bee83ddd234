//! Test helpers: spawn the real calltrail app on a random port against a
//! fresh database (SQLite always; PostgreSQL too when TEST_DATABASE_URL is
//! set), and talk to it the way the platform and the frontends do.

pub mod pg_proxy;

use std::cell::RefCell;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Once;

use calltrail::{Application, Config};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::Value;

/// Secret used by tests that configure signatures (the fixtures' README signs with it).
pub const SECRET: &str = "sk_test_0123456789abcdef";
pub const PUBLIC_KEY: &str = "pk_test_0123456789abcdef";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// SQLite, and PostgreSQL when `TEST_DATABASE_URL` names a server to create
/// databases on. With `CALLTRAIL_REQUIRE_POSTGRES=1` (as `.ci/run` sets
/// it) a missing `TEST_DATABASE_URL` fails every test instead of leaving the
/// PostgreSQL-only ones passing without having run.
pub fn backends() -> Vec<Backend> {
    let mut all = vec![Backend::Sqlite];
    if std::env::var("TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        all.push(Backend::Postgres);
    } else if std::env::var("CALLTRAIL_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
        panic!("CALLTRAIL_REQUIRE_POSTGRES=1 but TEST_DATABASE_URL is not set");
    }
    all
}

tokio::task_local! {
    /// The databases [`fresh_database`] made for the running test body.
    static CREATED: RefCell<Vec<(Backend, String)>>;
}

/// Run `body`, then drop the databases it made if it passed (a failing
/// test's databases stay, to be looked at).
pub async fn cleaning_up(body: impl Future<Output = ()>) {
    CREATED
        .scope(RefCell::new(Vec::new()), async {
            body.await;
            let created = CREATED.with(|c| c.take());
            for (backend, url) in created {
                drop_database(backend, &url).await;
            }
        })
        .await;
}

/// Best effort: a database left behind is harmless (`.ci/run` drops them too).
async fn drop_database(backend: Backend, url: &str) {
    match backend {
        Backend::Sqlite => {
            let path = url
                .trim_start_matches("sqlite://")
                .split('?')
                .next()
                .unwrap_or_default();
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
        }
        Backend::Postgres => {
            let Some(name) = url.rsplit('/').next().and_then(|n| n.split('?').next()) else {
                return;
            };
            let Ok(server) = std::env::var("TEST_DATABASE_URL") else {
                return;
            };
            if let Ok(admin) = Database::connect(&server).await {
                // FORCE: the app under test still holds its pools.
                let _ = admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
                admin.close().await.ok();
            }
        }
    }
}

/// Run a test body once per backend.
pub async fn on_each_backend<F, Fut>(body: F)
where
    F: Fn(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    for backend in backends() {
        cleaning_up(body(backend)).await;
    }
}

/// Batch limits the ingestion tests run with: one delivery per commit, and
/// many (group commit).
pub const BATCH_LIMITS: [usize; 2] = [1, 256];

/// Run a test body once per backend and batch limit.
pub async fn on_each_backend_and_batch<F, Fut>(body: F)
where
    F: Fn(Backend, usize) -> Fut,
    Fut: Future<Output = ()>,
{
    for backend in backends() {
        for batch in BATCH_LIMITS {
            cleaning_up(body(backend, batch)).await;
        }
    }
}

/// A URL of a new, empty database; dropped after the test body passes when
/// made inside [`on_each_backend`].
pub async fn fresh_database(backend: Backend) -> String {
    let url = new_database(backend).await;
    let _ = CREATED.try_with(|c| c.borrow_mut().push((backend, url.clone())));
    url
}

async fn new_database(backend: Backend) -> String {
    let name = format!("calltrail_test_{:016x}", rand::random::<u64>());
    match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join("calltrail-tests");
            std::fs::create_dir_all(&dir).expect("temp dir");
            format!(
                "sqlite://{}?mode=rwc",
                dir.join(format!("{name}.db")).display()
            )
        }
        Backend::Postgres => {
            let server = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL");
            let admin = Database::connect(&server)
                .await
                .expect("connect to TEST_DATABASE_URL");
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create test database");
            admin.close().await.ok();
            with_database_name(&server, &name)
        }
    }
}

/// Replace the database name in a postgres:// URL.
fn with_database_name(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

pub fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            calltrail::telemetry::init("info,sqlx=warn", calltrail::config::LogFormat::Text)
                .expect("a valid log filter");
        }
    });
}

/// The app under test, served in this process.
pub struct TestApp {
    pub backend: Backend,
    pub address: String,
    pub database_url: String,
    /// A connection of the test's own, to look at the rows.
    pub db: DatabaseConnection,
    pub client: reqwest::Client,
    /// Statements the app ran on its read pool (GraphQL's queries).
    pub read_statements: calltrail::db::StatementCounter,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Spawn with settings changed by `configure`.
    pub async fn spawn_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> Self {
        init_logs();
        let database_url = fresh_database(backend).await;
        Self::spawn_on(backend, database_url, configure).await
    }

    /// A second server on this one's database, as a replica would run.
    pub async fn spawn_sharing(&self, configure: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_on(self.backend, self.database_url.clone(), configure).await
    }

    /// A server on the database at `database_url` (made with
    /// [`fresh_database`]), migrating it if need be.
    pub async fn spawn_at(
        backend: Backend,
        database_url: String,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        Self::spawn_on(backend, database_url, configure).await
    }

    async fn spawn_on(
        backend: Backend,
        database_url: String,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = Config::for_database(&database_url);
        config.listen = "127.0.0.1:0".parse().expect("address");
        // Several writers on PostgreSQL, whatever this machine's default.
        config.ingest_writers = Some(3);
        configure(&mut config);
        let app = Application::build(config).await.expect("the app builds");
        let address = format!("http://{}", app.local_addr());
        let read_statements = app.state.db.read_statements.clone();
        tokio::spawn(app.run_until_stopped());
        let db = Database::connect(&database_url)
            .await
            .expect("test connection");
        Self {
            backend,
            address,
            database_url,
            db,
            // A request the server never answers fails the test instead of
            // hanging the run (every answer here takes well under a second).
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .expect("an HTTP client"),
            read_statements,
        }
    }

    /// POST a GraphQL request without a token.
    pub async fn graphql(&self, query: &str, variables: Value) -> Answer {
        self.graphql_with_token(None, query, variables).await
    }

    /// POST a GraphQL request, with `Authorization: Bearer <token>` when given.
    pub async fn graphql_with_token(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> Answer {
        let mut request = self
            .client
            .post(format!("{}/graphql", self.address))
            .json(&serde_json::json!({"query": query, "variables": variables}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Answer::from(request.send().await.expect("the server answers")).await
    }

    /// POST an unsigned delivery as `application/json`.
    pub async fn post_webhook(&self, body: impl Into<Vec<u8>>) -> Answer {
        self.post_with(body.into(), &[("content-type", "application/json")])
            .await
    }

    /// POST a delivery signed with `secret` (and `x-public-key: public_key` if given).
    pub async fn post_signed(
        &self,
        body: impl Into<Vec<u8>>,
        secret: &str,
        public_key: Option<&str>,
    ) -> Answer {
        let body = body.into();
        let signature = calltrail::webhook::sign(secret, &body);
        let mut headers = vec![
            ("content-type", "application/json"),
            ("x-signature", signature.as_str()),
        ];
        if let Some(pk) = public_key {
            headers.push(("x-public-key", pk));
        }
        self.post_with(body, &headers).await
    }

    /// POST a v2 delivery with `X-Mirai-Signature` made with `secret` at `t` (Unix seconds).
    pub async fn post_signed_v2(&self, body: impl Into<Vec<u8>>, secret: &str, t: i64) -> Answer {
        let body = body.into();
        let signature = calltrail::webhook::sign_v2(secret, t, &body);
        self.post_with(
            body,
            &[
                ("content-type", "application/json"),
                (calltrail::webhook::V2_HEADER, signature.as_str()),
            ],
        )
        .await
    }

    pub async fn post_with(&self, body: Vec<u8>, headers: &[(&str, &str)]) -> Answer {
        let mut request = self
            .client
            .post(format!("{}/webhooks/call-events", self.address))
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Answer::from(request.send().await.expect("the server answers")).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        Answer::from(
            self.client
                .get(format!("{}{path}", self.address))
                .send()
                .await
                .expect("the server answers"),
        )
        .await
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .await
            .body
            .as_str()
            .expect("Prometheus text")
            .to_owned()
    }

    /// Post every delivery in order, asserting each is stored.
    pub async fn post_all(&self, bodies: &[Vec<u8>]) {
        for body in bodies {
            let answer = self.post_webhook(body.clone()).await;
            assert_eq!(answer.status, 200, "{:?}: {}", self.backend, answer.body);
            assert_eq!(answer.body["duplicate"], false, "{:?}", self.backend);
        }
    }

    /// Rows in a table.
    pub async fn count(&self, table: &str) -> i64 {
        let row = self
            .db
            .query_one_raw(sea_orm::Statement::from_string(
                self.db.get_database_backend(),
                format!("SELECT COUNT(*) AS n FROM \"{table}\""),
            ))
            .await
            .expect("count query")
            .expect("a row");
        row.try_get::<i64>("", "n").expect("a count")
    }
}

/// An HTTP answer: status, JSON body (Null when not JSON) and headers.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    pub async fn from(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap_or_default();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Self {
            status,
            body,
            headers,
        }
    }

    /// The stored event's id, asserting a 200.
    pub fn event_id(&self) -> String {
        assert_eq!(
            self.status, 200,
            "expected 200, got {} {}",
            self.status, self.body
        );
        self.body["eventId"]
            .as_str()
            .expect("eventId is a string")
            .to_owned()
    }
}

/// The fixtures that must be refused with 400, and the code each gets.
pub const BAD_FIXTURES: [(&str, &str); 5] = [
    ("bad/array.json", "not_an_object"),
    ("bad/no-event.json", "missing_event"),
    ("bad/no-type.json", "missing_event_type"),
    ("bad/not-json.txt", "malformed_json"),
    ("bad/type-not-string.json", "invalid_event_type"),
];

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A fixture file's bytes.
pub fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(path)).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

/// The deliveries of a `.jsonl` fixture, one per line, exactly as written.
pub fn fixture_lines(path: &str) -> Vec<Vec<u8>> {
    fixture(path)
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The value of the sample `name{labels}` in Prometheus text (labels in any
/// order, and no others).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
        if metric != name {
            return None;
        }
        let mut found: Vec<String> = rest
            .trim_end_matches('}')
            .split(',')
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        found.sort();
        wanted.sort();
        (found == wanted).then(|| value.parse().ok())?
    })
}
