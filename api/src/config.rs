//! The command line and its environment variables (CONTRACT §4): one typed
//! struct per command, every flag with its variable, `--help` as reference.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "calltrail", version, about = "System of record for AI voice-agent calls: receives the platform's webhooks, keeps every delivery, serves calls over GraphQL.", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve (the default).
    Serve,
    /// Run database migrations by hand.
    Migrate {
        #[arg(value_enum, default_value = "up")]
        action: MigrateAction,
    },
    /// Send realistic, signed call lifecycles to a running server (demo and load tool).
    Simulate(crate::simulate::SimulateArgs),
    /// Print the GraphQL schema (SDL); `schema.graphql` is its output.
    Schema,
    /// Ingest captured deliveries (JSON lines, one raw delivery per line; `-` reads
    /// standard input) through the same path as the webhook: same dedupe, same rules.
    Import {
        /// Files to read, in order.
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// Rebuild calls, attempts, analyses and actions from the raw log with the
    /// current rules. Action statuses set by workers are kept.
    Reprocess {
        /// Only this call (default: every call).
        #[arg(long)]
        call: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Roll back the latest migration.
    Down,
    /// List migrations and whether each is applied.
    Status,
    /// Drop every table and apply all migrations again (destroys data).
    Fresh,
}

/// Settings of the server (and of the commands that open its database).
#[derive(Clone, Debug, Args)]
pub struct Config {
    /// Database: `sqlite://FILE?mode=rwc` (embedded default) or `postgres://…`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://calltrail.db?mode=rwc",
        global = true,
        hide_env_values = true
    )]
    pub database_url: String,

    /// Address to listen on.
    #[arg(
        long,
        env = "CALLTRAIL_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: SocketAddr,

    /// Webhook secrets, comma-separated: `pk_…:sk_…` pairs and/or bare secrets
    /// such as `whsec_…` (several = rotation). v1 deliveries pick theirs by
    /// `x-public-key`; v2 deliveries may be signed by any of them. None:
    /// unsigned deliveries are accepted (a warning is logged).
    #[arg(
        long,
        env = "CALLTRAIL_WEBHOOK_SECRETS",
        global = true,
        hide_env_values = true,
        value_parser = Hidden::<WebhookSecrets>::new()
    )]
    pub webhook_secrets: Option<WebhookSecrets>,

    /// How far a v2 signature's timestamp (`X-Mirai-Signature: t=…`) may be
    /// from now, either way, before the delivery is refused as a replay
    /// (`300`, `90s`, `5m`).
    #[arg(long, env = "CALLTRAIL_WEBHOOK_TOLERANCE", default_value = "300", value_parser = positive_duration, global = true)]
    pub webhook_tolerance: Duration,

    /// What "now" is for the signature window (tests fix it).
    #[arg(skip)]
    pub clock: Clock,

    /// When set, GraphQL requires `Authorization: Bearer <token>`.
    #[arg(
        long,
        env = "CALLTRAIL_API_TOKEN",
        global = true,
        hide_env_values = true,
        value_parser = Hidden::<Secret>::new()
    )]
    pub api_token: Option<Secret>,

    /// Largest webhook body accepted, in bytes (larger: 413).
    #[arg(
        long,
        env = "CALLTRAIL_MAX_BODY_BYTES",
        value_parser = at_least_one,
        default_value_t = 1_048_576,
        global = true
    )]
    pub max_body_bytes: usize,

    /// Origins allowed to call `/graphql` and open `/graphql/ws` from a browser, comma-separated.
    #[arg(
        long,
        env = "CALLTRAIL_CORS_ORIGINS",
        value_delimiter = ',',
        global = true
    )]
    pub cors_origins: Vec<String>,

    /// Host names GraphQL answers to on a server without an API token,
    /// besides IP addresses and `localhost`, comma-separated (`*`: any).
    #[arg(
        long,
        env = "CALLTRAIL_ALLOWED_HOSTS",
        value_delimiter = ',',
        global = true
    )]
    pub allowed_hosts: Vec<String>,

    /// How long an unfinished call may stay silent before it counts as stale (`90s`, `2m`, `1h`).
    #[arg(long, env = "CALLTRAIL_STALE_AFTER", default_value = "40m", value_parser = positive_duration, global = true)]
    pub stale_after: Duration,

    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long = "log", env = "RUST_LOG", default_value = "info", global = true)]
    pub log_filter: String,

    /// Log format.
    #[arg(
        long,
        env = "CALLTRAIL_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    /// SQLite durability: `full` fsyncs every commit, so a 2xx survives a power
    /// cut; `normal` is faster and may lose the last commits on power loss.
    #[arg(
        long,
        env = "CALLTRAIL_SQLITE_SYNCHRONOUS",
        value_enum,
        default_value = "full",
        global = true
    )]
    pub sqlite_synchronous: SqliteSynchronous,

    /// Ingest writers on PostgreSQL (each commits its own batches; a call always
    /// goes to the same writer). Default: half the CPU cores, at least 1; at
    /// most 64. SQLite always has exactly one.
    #[arg(long, env = "CALLTRAIL_INGEST_WRITERS", value_parser = at_least_one, global = true)]
    pub ingest_writers: Option<usize>,

    /// Most deliveries one writer commits in one transaction.
    #[arg(
        long,
        env = "CALLTRAIL_INGEST_BATCH",
        value_parser = at_least_one,
        default_value_t = 128,
        global = true
    )]
    pub ingest_batch: usize,

    /// Deliveries waiting for a writer, per writer, before the webhook answers 503.
    #[arg(
        long,
        env = "CALLTRAIL_INGEST_QUEUE",
        value_parser = at_least_one,
        default_value_t = 4096,
        global = true
    )]
    pub ingest_queue: usize,

    /// Connections for reads (GraphQL), besides one per writer.
    #[arg(
        long,
        env = "CALLTRAIL_DB_READ_CONNECTIONS",
        default_value_t = 8,
        value_parser = clap::value_parser!(u32).range(1..),
        global = true
    )]
    pub db_read_connections: u32,

    /// Deliveries a subscriber may fall behind before it is dropped (with the
    /// cursor to resume from); bounds the memory subscriptions hold.
    #[arg(
        long,
        env = "CALLTRAIL_SUBSCRIPTION_BUFFER",
        value_parser = at_least_one,
        default_value_t = 1024,
        global = true
    )]
    pub subscription_buffer: usize,

    /// How long a write to a WebSocket may wait for its client to read
    /// before the socket is closed (a client that stopped reading would
    /// otherwise hold its connection and subscriptions for good).
    #[arg(long, env = "CALLTRAIL_WS_WRITE_TIMEOUT", default_value = "60s", value_parser = positive_duration, global = true)]
    pub ws_write_timeout: Duration,

    /// How long a client may take to send a request's headers, and then its
    /// body (`408`); also the longest a kept-alive connection sits idle. A
    /// client trickling bytes would otherwise hold its connection for good.
    #[arg(long, env = "CALLTRAIL_CLIENT_TIMEOUT", default_value = "30s", value_parser = positive_duration, global = true)]
    pub client_timeout: Duration,

    /// Most connections served at once, open WebSockets included; more
    /// wait, unaccepted, until one closes. Keeps file descriptors for the
    /// database when many clients connect, or stall.
    #[arg(long, env = "CALLTRAIL_MAX_CONNECTIONS", default_value_t = 4096, value_parser = at_least_one, global = true)]
    pub max_connections: usize,

    /// How long a stopping server (SIGTERM, Ctrl-C) waits for requests in
    /// flight, each delivery answered after its commit, before it closes
    /// their connections. A second signal stops at once.
    #[arg(long, env = "CALLTRAIL_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = positive_duration, global = true)]
    pub shutdown_timeout: Duration,

    /// How long a write waits for a lock another connection holds (a
    /// `reprocess`, say) before its batch fails with 503: SQLite's busy
    /// timeout, PostgreSQL's `lock_timeout` (and the longest a writer's
    /// transaction may sit idle). Not a setting (tests shorten it).
    #[arg(skip = Duration::from_secs(10))]
    pub write_lock_timeout: Duration,
}

impl Config {
    /// Writer tasks to start. Each batch costs PostgreSQL a fixed number of
    /// statements and a commit, so fewer writers with bigger batches win on
    /// a small machine (docs/PERFORMANCE.md); SQLite has one writer at a time.
    pub fn writers(&self) -> usize {
        if self.database_url.starts_with("sqlite:") {
            return 1;
        }
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        self.ingest_writers.unwrap_or(cores / 2).clamp(1, 64)
    }

    /// Defaults everywhere but the database: for tests and embedding.
    pub fn for_database(database_url: &str) -> Self {
        let mut cli = Cli::parse_from(["calltrail"]);
        cli.config.database_url = database_url.to_owned();
        cli.config
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SqliteSynchronous {
    Full,
    Normal,
}

/// The clock v2 signature timestamps are checked against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Clock {
    #[default]
    System,
    /// Always this Unix time, in seconds.
    Fixed(i64),
}

impl Clock {
    /// Now, in Unix seconds.
    pub fn unix_now(self) -> i64 {
        match self {
            Self::System => chrono::Utc::now().timestamp(),
            Self::Fixed(t) => t,
        }
    }
}

/// A string that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl FromStr for Secret {
    type Err = String;
    /// Trimmed (a token read from a file often ends in a newline); empty is
    /// refused: a variable set to nothing (`${TOKEN}` with `TOKEN` unset)
    /// would otherwise stand for a token no client can send.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" => Err("it is empty (unset the variable instead)".into()),
            s => Ok(Self(s.to_owned())),
        }
    }
}

/// Parses a secret-bearing value without ever printing it: clap's own
/// error for a bad value quotes the whole value (every secret in it) to
/// stderr; this one names the option and what is wrong only.
#[derive(Clone)]
pub struct Hidden<T>(std::marker::PhantomData<T>);

impl<T> Hidden<T> {
    pub fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T> Default for Hidden<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> clap::builder::TypedValueParser for Hidden<T>
where
    T: FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let name = arg.map_or_else(
            || "a secret".to_owned(),
            |a| match a.get_env() {
                Some(env) => format!("{} ({})", env.to_string_lossy(), a.get_id()),
                None => a.get_id().to_string(),
            },
        );
        let refuse = |why: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for {name} (not shown): {why}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| refuse("it is not UTF-8".into()))?;
        T::from_str(text).map_err(refuse)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `CALLTRAIL_WEBHOOK_SECRETS`: `pk:sk` pairs (chosen by `x-public-key`) and bare secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WebhookSecrets {
    pub entries: Vec<(Option<String>, Secret)>,
}

impl FromStr for WebhookSecrets {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let entry = match item.split_once(':') {
                Some((pk, sk)) if !pk.trim().is_empty() && !sk.trim().is_empty() => {
                    (Some(pk.trim().to_owned()), Secret(sk.trim().to_owned()))
                }
                Some(_) => return Err("a `pk:sk` pair needs both a public key and a secret".into()),
                None => (None, Secret(item.to_owned())),
            };
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err(
                "no secret given (unset the variable to accept unsigned deliveries)".into(),
            );
        }
        Ok(Self { entries })
    }
}

impl fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<_> = self
            .entries
            .iter()
            .map(|(pk, _)| pk.as_deref().unwrap_or("(bare)"))
            .collect();
        write!(f, "WebhookSecrets({keys:?})")
    }
}

/// A count that must be at least 1 (a queue, batch or limit of 0 would
/// refuse everything).
pub(crate) fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}

/// [`parse_duration`], longer than zero.
fn positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        Duration::ZERO => Err("must be longer than 0".into()),
        d => Ok(d),
    }
}

/// `90s`, `2m`, `1h`, `1d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 2m or 1h"))?;
    let per = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m, h or d)")),
    };
    n.checked_mul(per)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_mix_pairs_and_bare_secrets_and_never_print() {
        let s: WebhookSecrets = "pk_a:sk_a, sk_b".parse().unwrap();
        assert_eq!(s.entries[0], (Some("pk_a".into()), Secret("sk_a".into())));
        assert_eq!(s.entries[1], (None, Secret("sk_b".into())));
        assert!(!format!("{s:?}").contains("sk_"));
        assert!("pk_a:".parse::<WebhookSecrets>().is_err());
        // Spaces around either half are not part of it.
        let s: WebhookSecrets = "pk_a: sk_a ,whsec_b\n".parse().unwrap();
        assert_eq!(s.entries[0], (Some("pk_a".into()), Secret("sk_a".into())));
        assert_eq!(s.entries[1], (None, Secret("whsec_b".into())));
    }

    #[test]
    fn a_bad_secret_value_is_refused_without_printing_it() {
        let err = Cli::try_parse_from([
            "calltrail",
            "--webhook-secrets",
            "pk_live:sk_live_very_secret,pk_x:",
        ])
        .unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("webhook_secrets"), "{shown}");
        assert!(
            shown.contains("needs both a public key and a secret"),
            "{shown}"
        );
        assert!(!shown.contains("sk_live_very_secret"), "{shown}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn the_api_token_is_trimmed_and_an_empty_one_refused() {
        let config = Cli::parse_from(["calltrail", "--api-token", "t0ken\n"]).config;
        assert_eq!(config.api_token, Some(Secret("t0ken".into())));
        for empty in ["", " \n"] {
            let err = Cli::try_parse_from(["calltrail", "--api-token", empty]).unwrap_err();
            assert!(err.to_string().contains("it is empty"), "{err}");
        }
    }

    #[test]
    fn the_signature_tolerance_defaults_to_300_seconds_and_reads_units() {
        let default = Cli::parse_from(["calltrail"]).config;
        assert_eq!(default.webhook_tolerance, Duration::from_secs(300));
        assert_eq!(default.clock, Clock::System);
        let set = Cli::parse_from(["calltrail", "--webhook-tolerance", "2m"]).config;
        assert_eq!(set.webhook_tolerance, Duration::from_secs(120));
        assert_eq!(Clock::Fixed(42).unix_now(), 42);
    }

    #[test]
    fn counts_and_durations_of_zero_or_out_of_range_are_refused() {
        for args in [
            ["--max-body-bytes", "0"],
            ["--ingest-batch", "0"],
            ["--ingest-queue", "0"],
            ["--ingest-writers", "0"],
            ["--subscription-buffer", "0"],
            ["--ws-write-timeout", "0s"],
            ["--stale-after", "0"],
            ["--webhook-tolerance", "0m"],
            ["--stale-after", "99999999999999999d"],
            ["--ingest-batch", "-3"],
        ] {
            let err = Cli::try_parse_from(std::iter::once("calltrail").chain(args)).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
        let ok = Cli::parse_from([
            "calltrail",
            "--ingest-batch",
            "1",
            "--ws-write-timeout",
            "1s",
        ]);
        assert_eq!(ok.config.ingest_batch, 1);
        assert_eq!(ok.config.ws_write_timeout, Duration::from_secs(1));
    }

    #[test]
    fn durations_read_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("40m"), Ok(Duration::from_secs(2400)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
    }
}
