//! Benchmark of live subscriptions (docs/PERFORMANCE.md, "Live subscriptions"):
//! N GraphQL subscribers on one release server (SQLite, default settings)
//! while deliveries arrive at a fixed rate, against the same run without
//! subscribers. Run through `docs/bench/subscribers.sh`, or:
//!
//! ```sh
//! cargo build --release -p calltrail
//! cargo run --release -p calltrail-tests --example subscribers -- --subscribers 1000
//! ```
//!
//! Per server (a fresh one for each side of the comparison):
//! 1. (with subscribers) open `--connections` WebSockets carrying
//!    `--subscribers` `callEvents` subscriptions in all (graphql-transport-ws),
//!    each from the cursor of a marker delivery, so none can miss a delivery
//!    posted later;
//! 2. post `--rate` × `--seconds` deliveries paced at `--rate` (realistic lifecycles from
//!    `calltrail::simulate::lifecycle`, each call's deliveries in order, 16
//!    calls in flight), noting when each `200` arrived and its `eventId`;
//!    every subscriber notes when each event reached it: latency is receipt
//!    minus the `200`, over all (subscriber, event) pairs;
//! 3. the server's VmHWM/VmRSS;
//! 4. post as fast as answered (`--concurrency` calls in flight) for
//!    `--max-seconds`: the maximum ingestion rate.
//!
//! The load generator and the subscribers run in this process, on the same
//! machine as the server.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, http::HeaderValue};

const QUERY: &str = "subscription($after: String) { callEvents(after: $after) { event { id cursor type callId receivedAt } call { id status } } }";

#[derive(Parser, Debug)]
struct Args {
    /// The calltrail binary (`cargo build --release -p calltrail`).
    #[arg(long, default_value = "target/release/calltrail")]
    server: PathBuf,
    /// Subscriptions in all.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// WebSockets carrying them (subscriptions spread evenly).
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Deliveries per second during the latency run.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// The latency run posts `rate` × `seconds` deliveries (longer if answers slow down).
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Calls in flight during the maximum-rate run.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Length of the maximum-rate run (0: skip it).
    #[arg(long, default_value_t = 10.0)]
    max_seconds: f64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let clock = Instant::now();
    println!(
        "== machine: {} cores; date: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        chrono::Utc::now().format("%Y-%m-%dT%H:%MZ")
    );

    println!("== without subscribers");
    let server = Server::start(&args.server, 0).await?;
    let cpu0 = server.cpu();
    let base = post(&server.url, 1, Some(args.rate), args.seconds, 16, clock).await;
    let base_cpu = server.cpu() - cpu0;
    let base_paced_mem = server.memory();
    let base_max = max_run(&server.url, &args, clock).await;
    let base_mem = server.memory();
    server.stop().await;
    println!("{}", base.line("paced"));
    println!("{}", base_max.line("max"));

    println!(
        "== with {} subscribers on {} connections",
        args.subscribers, args.connections
    );
    let server = Server::start(&args.server, 1).await?;
    let subscribers = Subscribers::open(&server.url, &args, clock).await?;
    let idle_mem = server.memory();
    let cpu0 = server.cpu();
    let own0 = own_cpu();
    let t0 = Instant::now();
    let paced = post(&server.url, 1, Some(args.rate), args.seconds, 16, clock).await;
    let live = subscribers.collect(&paced).await;
    let paced_cpu = server.cpu() - cpu0;
    let own_paced = own_cpu() - own0;
    // Until the last subscriber had the last delivery.
    let busy = t0.elapsed().as_secs_f64();
    let paced_mem = server.memory();
    let max = max_run(&server.url, &args, clock).await;
    let max_live = subscribers.collect(&max).await;
    let max_mem = server.memory();
    println!("{}", paced.line("paced"));
    println!("{}", max.line("max"));
    println!(
        "RESULT subscribers={} pairs={} missed={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} ended={}",
        args.subscribers,
        live.received,
        live.missed,
        live.p(50.0),
        live.p(99.0),
        live.p(100.0),
        live.ended
    );
    println!(
        "RESULT during_max pairs={} missed={} p50_ms={:.2} p99_ms={:.2} ended={}",
        max_live.received,
        max_live.missed,
        max_live.p(50.0),
        max_live.p(99.0),
        max_live.ended
    );
    let active = server.active_subscriptions().await;
    server.stop().await;

    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    println!();
    println!(
        "| | without subscribers | with {} subscribers |",
        args.subscribers
    );
    println!("|---|---|---|");
    println!(
        "| deliveries/s, paced at {} ({} deliveries; seconds taken) | {:.0} ({:.0} s) | {:.0} ({:.0} s) |",
        args.rate,
        base.sent,
        base.per_second(),
        base.elapsed.as_secs_f64(),
        paced.per_second(),
        paced.elapsed.as_secs_f64()
    );
    println!(
        "| webhook p50 / p99 ms, paced | {:.2} / {:.2} | {:.2} / {:.2} |",
        base.p(50.0),
        base.p(99.0),
        paced.p(50.0),
        paced.p(99.0)
    );
    println!(
        "| 200 → subscriber ms: p50 / p99 (max) | | **{:.1} / {:.1}** ({:.0}) |",
        live.p(50.0),
        live.p(99.0),
        live.p(100.0)
    );
    println!(
        "| (subscriber, event) pairs received / missed | | {} / {} |",
        live.received, live.missed
    );
    println!(
        "| server CPU, paced (% of one core) | {:.0} | {:.0} |",
        100.0 * base_cpu / base.elapsed.as_secs_f64(),
        100.0 * paced_cpu / busy
    );
    println!(
        "| benchmark client CPU, paced (% of one core) | | {:.0} |",
        100.0 * own_paced / busy
    );
    println!(
        "| server VmRSS MB: subscribed, idle / after the paced run | | {:.0} / {:.0} |",
        idle_mem.rss, paced_mem.rss
    );
    println!(
        "| server VmRSS MB after the paced run / VmHWM (peak, whole run) | {:.0} / {:.0} | {:.0} / **{:.0}** |",
        base_paced_mem.rss, base_mem.hwm, paced_mem.rss, max_mem.hwm
    );
    if args.max_seconds > 0.0 {
        println!(
            "| max deliveries/s (C={}, {} s) | {:.0} | {:.0} (**{:.2}×**) |",
            args.concurrency,
            args.max_seconds,
            base_max.per_second(),
            max.per_second(),
            ratio(max.per_second(), base_max.per_second())
        );
        println!(
            "| webhook p50 / p99 ms, max | {:.2} / {:.2} | {:.2} / {:.2} |",
            base_max.p(50.0),
            base_max.p(99.0),
            max.p(50.0),
            max.p(99.0)
        );
        println!(
            "| during the max run: 200 → subscriber ms p50 / p99; missed pairs; subscriptions ended | | {:.1} / {:.1}; {}; {} |",
            max_live.p(50.0),
            max_live.p(99.0),
            max_live.missed,
            max_live.ended
        );
    }
    println!(
        "| errors (webhook) | {} | {} |",
        base.errors + base_max.errors,
        paced.errors + max.errors
    );
    println!("\nsubscriptions still active at the end (server gauge): {active}");
    Ok(())
}

async fn max_run(url: &str, args: &Args, clock: Instant) -> Posted {
    if args.max_seconds <= 0.0 {
        return Posted::default();
    }
    post(url, 2, None, args.max_seconds, args.concurrency, clock).await
}

/// A release server on a fresh SQLite database and a free port.
struct Server {
    child: Child,
    url: String,
    dir: PathBuf,
}

#[derive(Clone, Copy, Debug)]
struct Memory {
    rss: f64,
    hwm: f64,
}

impl Server {
    async fn start(bin: &PathBuf, n: usize) -> Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("calltrail-subscribers-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("server.log"))?;
        let child = Command::new(bin)
            .env_remove("CALLTRAIL_SUBSCRIPTION_BUFFER")
            .env_remove("CALLTRAIL_API_TOKEN")
            .env_remove("CALLTRAIL_WEBHOOK_SECRET")
            .env(
                "DATABASE_URL",
                format!("sqlite://{}?mode=rwc", dir.join("calltrail.db").display()),
            )
            .env("CALLTRAIL_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot run {}: {e} (cargo build --release -p calltrail)",
                    bin.display()
                )
            })?;
        let server = Self { child, url, dir };
        let http = reqwest::Client::new();
        for _ in 0..1200 {
            let ready = http.get(format!("{}/readyz", server.url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                println!("== server pid {} on {}", server.pid(), server.url);
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(server.dir.join("server.log")).unwrap_or_default();
        Err(format!("the server did not become ready:\n{log}").into())
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    fn memory(&self) -> Memory {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .map_or(0.0, |kb| kb / 1024.0)
        };
        Memory {
            rss: field("VmRSS:"),
            hwm: field("VmHWM:"),
        }
    }

    /// CPU seconds (user + system) the server has used.
    fn cpu(&self) -> f64 {
        cpu_of(&format!("/proc/{}/stat", self.pid()))
    }

    async fn active_subscriptions(&self) -> String {
        let text = match reqwest::get(format!("{}/metrics", self.url)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        text.lines()
            .find(|l| l.starts_with("calltrail_subscriptions_active"))
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or("?")
            .to_owned()
    }

    /// SIGTERM (the server drains and exits), SIGKILL after 30 s.
    async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn own_cpu() -> f64 {
    cpu_of("/proc/self/stat")
}

fn cpu_of(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the 14th field.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // 100 ticks per second on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// What one posting run did.
#[derive(Default)]
struct Posted {
    sent: usize,
    errors: usize,
    elapsed: Duration,
    /// Sorted webhook latencies, µs.
    latencies: Vec<u64>,
    /// eventId of each stored delivery → µs after `clock` when its 200 arrived.
    acks: HashMap<u64, u64>,
}

impl Posted {
    fn per_second(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn p(&self, p: f64) -> f64 {
        percentile(&self.latencies, p)
    }

    fn line(&self, name: &str) -> String {
        format!(
            "RESULT run={name} deliveries_per_s={:.1} p50_ms={:.3} p99_ms={:.3} errors={} sent={} stored={}",
            self.per_second(),
            self.p(50.0),
            self.p(99.0),
            self.errors,
            self.sent,
            self.acks.len()
        )
    }
}

/// Percentile `p` of sorted µs values, in ms.
fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1e3
}

/// Post lifecycles of `seed` (each call's deliveries in order, `workers`
/// calls in flight) for `seconds`, at most `rate` deliveries/s in all.
async fn post(
    url: &str,
    seed: u64,
    rate: Option<f64>,
    seconds: f64,
    workers: usize,
    clock: Instant,
) -> Posted {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(workers)
        .build()
        .expect("an HTTP client");
    let endpoint = format!("{url}/webhooks/call-events");
    let next_call = Arc::new(AtomicUsize::new(0));
    let next_slot = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(Mutex::new(Posted::default()));
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let slots = rate.map(|r| (r * seconds).round() as usize);
    let tasks: Vec<_> = (0..workers.max(1))
        .map(|_| {
            let (http, endpoint, next_call, next_slot, total) = (
                http.clone(),
                endpoint.clone(),
                next_call.clone(),
                next_slot.clone(),
                total.clone(),
            );
            tokio::spawn(async move {
                let mut mine = Posted::default();
                'calls: loop {
                    let i = next_call.fetch_add(1, Ordering::Relaxed);
                    for body in calltrail::simulate::lifecycle(seed, i) {
                        if let (Some(rate), Some(slots)) = (rate, slots) {
                            // Global pacing: the n-th delivery leaves at n / rate seconds.
                            let n = next_slot.fetch_add(1, Ordering::Relaxed);
                            if n >= slots {
                                break 'calls;
                            }
                            tokio::time::sleep_until(
                                started + Duration::from_secs_f64(n as f64 / rate),
                            )
                            .await;
                        } else if tokio::time::Instant::now() >= deadline {
                            break 'calls;
                        }
                        let sent_at = Instant::now();
                        let response = http
                            .post(&endpoint)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await;
                        let answered = Instant::now();
                        mine.sent += 1;
                        mine.latencies.push((answered - sent_at).as_micros() as u64);
                        let answer = match response {
                            Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                            _ => None,
                        };
                        let stored = answer.as_ref().and_then(|a| {
                            let id = a["eventId"].as_str()?.parse::<u64>().ok()?;
                            (a["duplicate"] == false).then_some(id)
                        });
                        match (answer.is_some(), stored) {
                            (true, Some(id)) => {
                                mine.acks.insert(id, (answered - clock).as_micros() as u64);
                            }
                            (true, None) => {}
                            (false, _) => mine.errors += 1,
                        }
                    }
                }
                let mut total = total.lock().expect("not poisoned");
                total.sent += mine.sent;
                total.errors += mine.errors;
                total.latencies.extend(mine.latencies);
                total.acks.extend(mine.acks);
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a posting task panicked");
    }
    let mut posted = std::mem::take(&mut *total.lock().expect("not poisoned"));
    posted.elapsed = started.elapsed();
    posted.latencies.sort_unstable();
    posted
}

/// (subscriber, eventId, µs after `clock` when it arrived)
type Receipt = (u32, u64, u64);

struct Subscribers {
    /// Receipts of each connection since the last `collect`.
    receipts: Vec<Arc<Mutex<Vec<Receipt>>>>,
    /// Subscriptions that ended (error or complete).
    ended: Arc<AtomicUsize>,
    subscribers: usize,
}

/// Latencies of one run over all (subscriber, event) pairs.
struct Live {
    received: usize,
    missed: usize,
    ended: usize,
    sorted: Vec<u64>,
}

impl Live {
    fn p(&self, p: f64) -> f64 {
        percentile(&self.sorted, p)
    }
}

impl Subscribers {
    async fn open(url: &str, args: &Args, clock: Instant) -> Result<Self> {
        let after = cursor_now(url).await?;
        let address = url.trim_start_matches("http://").to_owned();
        let ended = Arc::new(AtomicUsize::new(0));
        let mut receipts = Vec::new();
        let connections = args.connections.clamp(1, args.subscribers.max(1));
        for c in 0..connections {
            let mut request = format!("ws://{address}/graphql/ws").into_client_request()?;
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static("graphql-transport-ws"),
            );
            let stream = TcpStream::connect(&address).await?;
            stream.set_nodelay(true)?;
            let (mut ws, _) = tokio_tungstenite::client_async(request, stream).await?;
            ws.send(Message::text(
                json!({"type": "connection_init", "payload": {}}).to_string(),
            ))
            .await?;
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.contains("connection_ack") => {}
                other => return Err(format!("no connection_ack: {other:?}").into()),
            }
            // Subscribers c, c + connections, c + 2·connections, … ride on connection c.
            for s in (c..args.subscribers).step_by(connections) {
                let message = json!({"id": s.to_string(), "type": "subscribe",
                    "payload": {"query": QUERY, "variables": {"after": after}}});
                ws.send(Message::text(message.to_string())).await?;
            }
            let mine = Arc::new(Mutex::new(Vec::<Receipt>::new()));
            receipts.push(mine.clone());
            let ended = ended.clone();
            tokio::spawn(async move {
                while let Some(Ok(message)) = ws.next().await {
                    let at = (Instant::now() - clock).as_micros() as u64;
                    let Message::Text(text) = message else {
                        continue;
                    };
                    let text = text.as_str();
                    let ids = (
                        field_after(text, "\"id\":\""),
                        field_after(text, "\"event\":{\"id\":\""),
                    );
                    if let (Some(sub), Some(event), true, false) = (
                        ids.0,
                        ids.1,
                        text.contains("\"type\":\"next\""),
                        text.contains("\"errors\""),
                    ) {
                        mine.lock()
                            .expect("not poisoned")
                            .push((sub as u32, event, at));
                        continue;
                    }
                    if text.contains("\"type\":\"ping\"") {
                        let _ = ws.send(Message::text(r#"{"type":"pong"}"#)).await;
                    } else if text.contains("\"type\":\"error\"")
                        || text.contains("\"type\":\"complete\"")
                        || text.contains("\"errors\"")
                    {
                        ended.fetch_add(1, Ordering::Relaxed);
                        eprintln!("subscription message: {}", &text[..text.len().min(300)]);
                    }
                }
            });
        }
        // Let every subscription start (its replay after the marker is empty).
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(Self {
            receipts,
            ended,
            subscribers: args.subscribers,
        })
    }

    /// Wait until every subscriber has every delivery of `posted` (or nothing
    /// arrives for 5 s), then take the receipts and match them.
    async fn collect(&self, posted: &Posted) -> Live {
        let expected = posted.acks.len() * self.subscribers;
        let count = || {
            self.receipts
                .iter()
                .map(|r| r.lock().expect("not poisoned").len())
                .sum::<usize>()
        };
        let mut last = (count(), Instant::now());
        while last.0 < expected && last.1.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = count();
            if now != last.0 {
                last = (now, Instant::now());
            }
        }
        let mut keys = Vec::with_capacity(expected);
        let mut sorted = Vec::with_capacity(expected);
        for receipts in &self.receipts {
            for (sub, event, at) in std::mem::take(&mut *receipts.lock().expect("not poisoned")) {
                if let Some(acked) = posted.acks.get(&event) {
                    keys.push(((sub as u64) << 40) | event);
                    // A subscriber may see the event before the poster reads the 200.
                    sorted.push(at.saturating_sub(*acked));
                }
            }
        }
        keys.sort_unstable();
        keys.dedup();
        sorted.sort_unstable();
        Live {
            received: keys.len(),
            missed: expected - keys.len(),
            ended: self.ended.load(Ordering::Relaxed),
            sorted,
        }
    }
}

/// The digits right after the first `prefix` in `text`.
fn field_after(text: &str, prefix: &str) -> Option<u64> {
    let start = text.find(prefix)? + prefix.len();
    let digits = &text[start..];
    let end = digits.find('"')?;
    digits[..end].parse().ok()
}

/// The cursor of a fresh marker delivery: subscriptions from it receive
/// everything posted later, however long they take to start.
async fn cursor_now(url: &str) -> Result<String> {
    let http = reqwest::Client::new();
    let body = r#"{"event":{"type":"call.in-progress","data":{"call":{"id":"c_bench-marker"}}}}"#;
    http.post(format!("{url}/webhooks/call-events"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?
        .error_for_status()?;
    let answer: Value = http
        .post(format!("{url}/graphql"))
        .json(&json!({
            "query": "query($c: ID) { events(filter: {callId: $c}) { nodes { cursor } } }",
            "variables": {"c": "c_bench-marker"},
        }))
        .send()
        .await?
        .json()
        .await?;
    answer["data"]["events"]["nodes"][0]["cursor"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no cursor in {answer}").into())
}
