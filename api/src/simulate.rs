//! `calltrail simulate`: realistic, signed call lifecycles sent to a running
//! server — each call's deliveries in order, many calls in parallel. The demo
//! data for a first look, and the load tool of docs/PERFORMANCE.md.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::config::WebhookSecrets;
use crate::webhook::{V2_HEADER, sign, sign_v2};

#[derive(Clone, Debug, Args)]
pub struct SimulateArgs {
    /// Base URL of the calltrail server. Default: the address the server
    /// listens on (`--listen`, `CALLTRAIL_LISTEN`: http://127.0.0.1:8080 unless
    /// set), so one shell's settings serve both.
    #[arg(long, env = "CALLTRAIL_SIMULATE_URL")]
    pub url: Option<String>,
    /// Call lifecycles to send.
    #[arg(long, env = "CALLTRAIL_SIMULATE_CALLS", default_value_t = 50)]
    pub calls: usize,
    /// Calls in flight at once (each sends its deliveries in order).
    #[arg(long, env = "CALLTRAIL_SIMULATE_CONCURRENCY", default_value_t = 8, value_parser = crate::config::at_least_one)]
    pub concurrency: usize,
    /// Sign with this secret: `pk_…:sk_…` (v1 also sends x-public-key) or a bare secret (`whsec_…`).
    #[arg(long, env = "CALLTRAIL_SIMULATE_SECRET", hide_env_values = true, value_parser = crate::config::Hidden::<WebhookSecrets>::new())]
    pub secret: Option<WebhookSecrets>,
    /// The platform's webhook format to send: `v1` (signed with x-signature) or
    /// `v2` (signed with X-Mirai-Signature, timestamped now).
    #[arg(
        long,
        env = "CALLTRAIL_SIMULATE_FORMAT",
        value_enum,
        default_value = "v1"
    )]
    pub format: WireFormat,
    /// Seed of the generator: the same seed sends the same calls (default: random).
    #[arg(long, env = "CALLTRAIL_SIMULATE_SEED")]
    pub seed: Option<u64>,
    /// Send at most this many deliveries per second, over all calls (default: as fast as answered).
    #[arg(long, env = "CALLTRAIL_SIMULATE_RATE", value_parser = per_second)]
    pub rate: Option<f64>,
}

/// The wire format `simulate` sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum WireFormat {
    #[default]
    V1,
    V2,
}

impl WireFormat {
    /// The deliveries of call `index` of a run in this format.
    pub fn lifecycle(self, seed: u64, index: usize) -> Vec<Vec<u8>> {
        match self {
            Self::V1 => lifecycle(seed, index),
            Self::V2 => lifecycle_v2(seed, index),
        }
    }
}

/// What a run did, as the closing summary prints it.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub sent: usize,
    pub stored: usize,
    pub duplicates: usize,
    pub errors: usize,
    pub elapsed: Duration,
    /// Sorted request latencies.
    pub latencies: Vec<Duration>,
}

impl Summary {
    pub fn per_second(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }
}

/// The URL of a server listening on `listen` (an unspecified address, such
/// as 0.0.0.0, is reached on the loopback).
pub fn local_url(listen: SocketAddr) -> String {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}")
}

/// Send, then print the summary; fails when any delivery was not accepted.
/// Without `args.url`, sends to [`local_url`]`(listen)`.
pub async fn run(mut args: SimulateArgs, listen: SocketAddr) -> anyhow::Result<()> {
    let url = args.url.get_or_insert_with(|| local_url(listen)).clone();
    let seed = args.seed.unwrap_or_else(rand::random);
    eprintln!(
        "simulate: {} calls ({:?}), concurrency {}, seed {seed}, to {url}",
        args.calls, args.format, args.concurrency
    );
    let summary = send(&args, seed).await?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "sent {}  stored {}  duplicates {}  errors {}  in {:.2}s  ({:.0} deliveries/s)\nlatency p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms",
        summary.sent,
        summary.stored,
        summary.duplicates,
        summary.errors,
        summary.elapsed.as_secs_f64(),
        summary.per_second(),
        ms(summary.percentile(50.0)),
        ms(summary.percentile(90.0)),
        ms(summary.percentile(99.0)),
    );
    println!(
        "RESULT deliveries_per_s={:.1} p50_ms={:.3} p99_ms={:.3} errors={} sent={}",
        summary.per_second(),
        ms(summary.percentile(50.0)),
        ms(summary.percentile(99.0)),
        summary.errors,
        summary.sent
    );
    if summary.errors > 0 {
        anyhow::bail!("{} deliveries were not accepted", summary.errors);
    }
    Ok(())
}

/// A rate: a finite number of deliveries per second above 0.
fn per_second(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "{s:?} is not a number of deliveries per second above 0"
        )),
    }
}

/// Send `args.calls` generated lifecycles and measure every request.
pub async fn send(args: &SimulateArgs, seed: u64) -> anyhow::Result<Summary> {
    // `run` fills in the default; callers of `send` name the server.
    let url = args.url.as_deref().context("no URL to send to")?;
    let endpoint = Arc::new(Endpoint::new(url)?);
    let next = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(Mutex::new(Summary::default()));
    let progress = indicatif::ProgressBar::new(args.calls as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} calls  {per_sec}  eta {eta}")
            .expect("a valid template"),
    );
    let started = tokio::time::Instant::now();
    let paced = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let paced = paced.clone();
            let (endpoint, next, total, args, progress) = (
                endpoint.clone(),
                next.clone(),
                total.clone(),
                args.clone(),
                progress.clone(),
            );
            tokio::spawn(async move {
                let mut mine = Summary::default();
                // Each worker sends on a connection of its own, kept alive.
                let mut conn = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= args.calls {
                        break;
                    }
                    for body in args.format.lifecycle(seed, i) {
                        if let Some(rate) = args.rate {
                            // Global pacing: the n-th delivery leaves at n / rate seconds.
                            let n = paced.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep_until(
                                started + Duration::from_secs_f64(n as f64 / rate),
                            )
                            .await;
                        }
                        let signing = (args.format, args.secret.as_ref());
                        let request = endpoint.request(signing, body);
                        post(&endpoint, &mut conn, request, &mut mine).await;
                    }
                    progress.inc(1);
                }
                let mut total = total.lock().await;
                total.sent += mine.sent;
                total.stored += mine.stored;
                total.duplicates += mine.duplicates;
                total.errors += mine.errors;
                total.latencies.extend(mine.latencies);
            })
        })
        .collect();
    for worker in workers {
        worker.await.context("a simulate worker panicked")?;
    }
    progress.finish_and_clear();
    let mut summary = std::mem::take(&mut *total.lock().await);
    summary.elapsed = started.elapsed();
    summary.latencies.sort_unstable();
    Ok(summary)
}

/// Where deliveries go: the webhook's URL, parsed once. `simulate` speaks
/// plain HTTP/1.1 on one kept-alive connection per worker, as a platform's
/// sender would, with no client pool in between (a general-purpose client
/// parsed the URL and looked up its pool for every request: ~40 % of the
/// load generator's CPU, taken from the server it measures on a shared
/// machine, docs/PERFORMANCE.md).
struct Endpoint {
    /// `host:port`, to connect to.
    address: String,
    /// The `Host` header.
    host: HeaderValue,
    uri: Uri,
}

impl Endpoint {
    fn new(base: &str) -> anyhow::Result<Self> {
        let url = format!("{}/webhooks/call-events", base.trim_end_matches('/'));
        let uri: Uri = url
            .parse()
            .with_context(|| format!("{base:?} is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            anyhow::bail!("simulate sends over http:// only, not to {base:?}");
        }
        let authority = uri.authority().context("the URL names no host")?;
        if authority.as_str().contains('@') {
            anyhow::bail!("simulate sends no user name or password: {base:?}");
        }
        let address = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        let host = HeaderValue::from_str(authority.as_str())?;
        let path: Uri = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .expect("a URL's path is a URI");
        Ok(Self {
            address,
            host,
            uri: path,
        })
    }

    /// A signed delivery of `body`.
    fn request(
        &self,
        (format, secret): (WireFormat, Option<&WebhookSecrets>),
        body: Vec<u8>,
    ) -> Request<Full<Bytes>> {
        let mut request = Request::post(self.uri.clone())
            .header(header::HOST, self.host.clone())
            .header(header::CONTENT_TYPE, "application/json");
        match (format, secret.and_then(|s| s.entries.first())) {
            (_, None) => {}
            (WireFormat::V1, Some((pk, sk))) => {
                request = request.header("x-signature", sign(&sk.0, &body));
                if let Some(pk) = pk {
                    request = request.header("x-public-key", pk);
                }
            }
            (WireFormat::V2, Some((_, sk))) => {
                let now = Utc::now().timestamp();
                request = request.header(V2_HEADER, sign_v2(&sk.0, now, &body));
            }
        }
        request
            .body(Full::new(Bytes::from(body)))
            .expect("a request of valid parts")
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(&self.address)
            .await
            .with_context(|| format!("connecting to {}", self.address))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // Ends when the connection closes; its requests see why.
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// The part of the webhook's answer `simulate` counts.
#[derive(serde::Deserialize)]
struct Answer {
    duplicate: bool,
}

/// Send one delivery on the worker's connection `conn` (opened, or opened
/// again after the server closed it), and count its answer.
async fn post(
    endpoint: &Endpoint,
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    request: Request<Full<Bytes>>,
    into: &mut Summary,
) {
    let started = Instant::now();
    let answer = exchange(endpoint, conn, request).await;
    into.latencies.push(started.elapsed());
    into.sent += 1;
    match answer {
        Ok((status, body)) if status.is_success() => {
            match serde_json::from_slice::<Answer>(&body) {
                Ok(Answer { duplicate: true }) => into.duplicates += 1,
                Ok(_) => into.stored += 1,
                Err(_) => into.errors += 1,
            }
        }
        Ok((status, _)) => {
            into.errors += 1;
            tracing::warn!(%status, "delivery refused");
        }
        Err(e) => {
            // The connection is not trusted again.
            *conn = None;
            into.errors += 1;
            tracing::warn!(error = %format!("{e:#}"), "delivery failed");
        }
    }
}

/// The answer's status and body. A request the connection did not send
/// (the server had closed it while idle) goes out once more on a new one.
async fn exchange(
    endpoint: &Endpoint,
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    mut request: Request<Full<Bytes>>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    for _ in 0..2 {
        let usable = match conn {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            *conn = Some(endpoint.connect().await?);
        }
        let sender = conn.as_mut().expect("connected above");
        match sender.try_send_request(request).await {
            Ok(response) => {
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                return Ok((status, body));
            }
            Err(mut e) => match e.take_message() {
                Some(unsent) => {
                    *conn = None;
                    request = unsent;
                }
                None => return Err(e.into_error().into()),
            },
        }
    }
    anyhow::bail!("the server closed two connections before they sent the delivery")
}

/// The deliveries of call `index` of a run, in the order the platform sends
/// them. Deterministic in (seed, index). The mix follows the fixtures:
/// answered calls with actions, retries after no-answer and busy,
/// reschedules, validation failures, DND skips, aborts and timeouts.
pub fn lifecycle(seed: u64, index: usize) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let call_id = format!("c_sim-{seed:x}-{index}");
    let campaign = [
        "abandoned-cart-nov",
        "order-confirmation",
        "cod-verification",
    ][rng.random_range(0..3)];
    let metadata = json!({
        "customer_id": format!("cus_{}", rng.random_range(1000..99_999)),
        "order_ref": format!("ORD-{}", rng.random_range(100_000..999_999)),
        "campaign": campaign,
        "store": "kurta-house.example.invalid",
    });
    let mut b = Builder {
        call_id,
        metadata,
        out: Vec::new(),
        clock: DateTime::from_timestamp(1_795_000_000 + index as i64 * 7, 0).expect("valid time"),
    };
    let roll = rng.random_range(0..100);
    let mut failed_dials = 0;
    let mut rescheduled = 0;
    let final_status = match roll {
        0..=44 => b.answered(&mut rng),
        45..=64 => {
            failed_dials = rng.random_range(1..=2);
            for _ in 0..failed_dials {
                b.dial_fails(if rng.random_bool(0.5) {
                    "no-answer"
                } else {
                    "busy"
                });
            }
            b.answered(&mut rng)
        }
        65..=74 => {
            rescheduled = 1;
            b.event("call.initiate", json!({}));
            let started = b.at(3);
            b.event("call.in-progress", json!({"startedAt": started}));
            b.event("call.rescheduled", json!({}));
            if rng.random_bool(0.5) {
                b.answered(&mut rng)
            } else {
                b.dial_fails("validation-failed")
            }
        }
        75..=84 => {
            failed_dials = 2;
            for _ in 0..3 {
                b.dial_fails("no-answer");
            }
            "no-answer"
        }
        85..=89 => b.dial_fails("validation-failed"),
        90..=93 => b.dial_fails("skip"),
        94..=96 => {
            b.event("call.initiate", json!({}));
            b.event("call.aborted", json!({}))
        }
        _ => {
            b.event("call.initiate", json!({}));
            let started = b.at(2);
            b.event("call.in-progress", json!({"startedAt": started}));
            let ended = b.at(600);
            b.event(
                "call.timeout",
                json!({"startedAt": started, "endedAt": ended, "durationSeconds": 600}),
            )
        }
    };
    let report = json!({"reAttemptCount": failed_dials, "rescheduledCount": rescheduled, "finalStatus": final_status});
    b.event_with(
        "call.lifecycle-ended",
        json!({"status": final_status}),
        json!({"report": report}),
    );
    b.out
}

struct Builder {
    call_id: String,
    metadata: Value,
    out: Vec<Vec<u8>>,
    clock: DateTime<Utc>,
}

impl Builder {
    fn at(&mut self, seconds: i64) -> String {
        self.clock += chrono::Duration::seconds(seconds);
        self.clock
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    /// A lifecycle event; returns its status word.
    fn event(&mut self, event_type: &str, call: Value) -> &'static str {
        let status = status_word(event_type);
        self.event_with(
            event_type,
            json!({"status": status}).merged(call),
            json!({}),
        );
        status
    }

    fn event_with(&mut self, event_type: &str, call: Value, extra: Value) {
        let mut data = json!({"call": json!({"id": self.call_id}).merged(call)});
        data = data.merged(extra);
        let body = json!({"metadata": self.metadata, "event": {"type": event_type, "data": data}});
        self.out
            .push(serde_json::to_vec(&body).expect("JSON serializes"));
    }

    fn dial_fails(&mut self, outcome: &str) -> &'static str {
        self.event("call.initiate", json!({}));
        self.event(&format!("call.{outcome}"), json!({}))
    }

    fn answered(&mut self, rng: &mut StdRng) -> &'static str {
        self.event("call.initiate", json!({"startedAt": null}));
        let started = self.at(4);
        self.event("call.in-progress", json!({"startedAt": started}));
        let success = rng.random_bool(0.7);
        let kinds: &[&str] = if success {
            &["create_order", "mark_prepaid"]
        } else {
            &["send_whatsapp", "update_address", "confirmed_address"]
        };
        // Distinct kinds: two byte-identical actions would be one delivery sent twice.
        let first = rng.random_range(0..kinds.len());
        for n in 0..rng.random_range(0..=2usize) {
            let kind = kinds[(first + n) % kinds.len()];
            let payload = match kind {
                "create_order" => json!({
                    "phone": "+919812345678", "email": "asha@example.in",
                    "lineItems": [{"variantId": "gid://shopify/ProductVariant/4412", "quantity": rng.random_range(1..4)}],
                    "shippingAddress": {"firstName": "Asha", "lastName": "Verma", "address1": "14 Lake Road", "city": "Pune", "province": "MH", "zip": "411001", "country": "IN", "phone": "+919812345678"},
                    "paymentMode": "cod", "cartTotal": 1899.0, "codCharge": 49.0}),
                "send_whatsapp" => json!({"number": "+919900112233"}),
                _ => json!({}),
            };
            let reason = if success {
                Value::Null
            } else {
                json!("missing_address")
            };
            self.out.push(
                serde_json::to_vec(&json!({"metadata": self.metadata, "event": {"type": "action", "data": {"action": kind, "call": {"id": self.call_id}, "reason": reason, "payload": payload}}}))
                    .expect("JSON serializes"),
            );
        }
        let duration = rng.random_range(20..300);
        let ended = self.at(duration);
        self.event(
            "call.ended",
            json!({"startedAt": started, "endedAt": ended}),
        );
        let urls = json!({
            "startedAt": started, "endedAt": ended, "durationSeconds": duration,
            "recordingUrl": format!("https://recordings.example.invalid/{}.mp3", self.call_id),
            "detailUrl": format!("https://dashboard.example.invalid/calls/{}", self.call_id),
        });
        self.event("call.completed", urls);
        let used = f64::from(rng.random_range(5..40u32)) / 10.0;
        let analysis = json!({
            "success": success,
            "summary": if success { "Customer confirmed the order." } else { "Customer could not confirm the address." },
            "requiredActions": if success { json!(["create-order"]) } else { json!(["send-whatsapp"]) },
            "insights": {"sentiment": if success { "positive" } else { "neutral" }},
            "outcome": {"confirmed": success},
        });
        self.event_with(
            "end-of-call",
            json!({"status": "completed", "durationSeconds": duration}),
            json!({"analysis": analysis, "credits": {"used": used, "available": 100.0 - used}}),
        );
        "completed"
    }
}

/// Call `index` of a run in the v2 format: one attempt, one terminal event.
/// Event ids are deterministic in (seed, index), so a rerun with the same
/// seed is all duplicates, as with v1. The mix: answered calls, no answers,
/// busy lines, voicemail, carrier failures, ring timeouts and aborts.
pub fn lifecycle_v2(seed: u64, index: usize) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let agent =
        ["agt_order_confirm", "agt_cart_recovery", "agt_cod_verify"][rng.random_range(0..3)];
    let mut v2 = V2Builder {
        event_prefix: format!("evt_sim-{seed:x}-{index}"),
        call: json!({
            "id": format!("call_sim-{seed:x}-{index}"),
            "object": "call",
            "agent_id": agent,
            "to": format!("+9198{:08}", rng.random_range(0..100_000_000u32)),
            "status": "queued",
            "ended_reason": null,
            "started_at": null,
            "ended_at": null,
            "duration_secs": null,
            "cost": null,
        }),
        out: Vec::new(),
        clock: DateTime::from_timestamp(1_795_000_000 + index as i64 * 7, 0).expect("valid time"),
    };
    v2.event("call.queued", json!({}));
    let roll = rng.random_range(0..100);
    let failure = |status: &str, reason: &str| json!({"status": status, "ended_reason": reason, "cost": {"amount_inr": 0.0, "per_min_inr": PER_MIN_INR}});
    match roll {
        0..=54 => {
            let started = v2.at(5);
            v2.event(
                "call.started",
                json!({"status": "in_progress", "started_at": started}),
            );
            let duration = rng.random_range(20..300);
            let ended = v2.at(duration);
            let reason = ["customer_ended_call", "assistant_ended_call"][rng.random_range(0..2)];
            v2.event(
                "call.completed",
                json!({"status": "completed", "ended_reason": reason, "started_at": started,
                       "ended_at": ended, "duration_secs": duration, "cost": cost(duration)}),
            );
        }
        55..=69 => v2.event(
            "call.failed",
            failure("no_answer", "customer_did_not_answer"),
        ),
        70..=77 => v2.event("call.failed", failure("busy", "customer_busy")),
        78..=84 => {
            let started = v2.at(6);
            v2.event(
                "call.started",
                json!({"status": "in_progress", "started_at": started}),
            );
            let duration = rng.random_range(8..30);
            let ended = v2.at(duration);
            v2.event(
                "call.voicemail",
                json!({"status": "voicemail", "ended_reason": "voicemail_detected", "started_at": started,
                       "ended_at": ended, "duration_secs": duration, "cost": cost(duration)}),
            );
        }
        85..=89 => v2.event("call.failed", failure("failed", "carrier_error")),
        90..=94 => v2.event("call.failed", failure("timeout", "ring_timeout")),
        _ => v2.event(
            "call.aborted",
            json!({"status": "aborted", "ended_reason": "aborted_via_api"}),
        ),
    }
    v2.out
}

/// The simulated v2 price of a minute, in rupees.
const PER_MIN_INR: f64 = 2.4;

/// The v2 cost of a call of `seconds`, to the paisa.
fn cost(seconds: i64) -> Value {
    let amount = (seconds as f64 / 60.0 * PER_MIN_INR * 100.0).round() / 100.0;
    json!({"amount_inr": amount, "per_min_inr": PER_MIN_INR})
}

struct V2Builder {
    event_prefix: String,
    /// The call object as it stands; each event sends it whole.
    call: Value,
    out: Vec<Vec<u8>>,
    clock: DateTime<Utc>,
}

impl V2Builder {
    fn at(&mut self, seconds: i64) -> String {
        self.clock += chrono::Duration::seconds(seconds);
        self.clock
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    fn event(&mut self, event_type: &str, changes: Value) {
        self.call = std::mem::take(&mut self.call).merged(changes);
        let created_at = self.at(1);
        let body = json!({
            "id": format!("{}-{}", self.event_prefix, self.out.len()),
            "type": event_type,
            "created_at": created_at,
            "data": {"call": self.call},
        });
        self.out
            .push(serde_json::to_vec(&body).expect("JSON serializes"));
    }
}

fn status_word(event_type: &str) -> &'static str {
    match event_type {
        "call.initiate" => "initiate",
        "call.in-progress" => "in-progress",
        "call.ended" => "ended",
        "call.completed" => "completed",
        "call.timeout" => "timeout",
        "call.failed" => "failed",
        "call.busy" => "busy",
        "call.no-answer" => "no-answer",
        "call.validation-failed" => "validation-failed",
        "call.skip" => "skip",
        "call.rescheduled" => "rescheduled",
        "call.aborted" => "aborted",
        _ => "completed",
    }
}

trait Merge {
    fn merged(self, other: Value) -> Value;
}

impl Merge for Value {
    fn merged(mut self, other: Value) -> Value {
        if let (Value::Object(a), Value::Object(b)) = (&mut self, other) {
            a.extend(b);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EventKind, Projection, parse};

    #[test]
    fn the_url_names_where_to_connect_and_what_to_ask_for() {
        let e = Endpoint::new("http://127.0.0.1:8080").unwrap();
        assert_eq!(e.address, "127.0.0.1:8080");
        assert_eq!(e.host, "127.0.0.1:8080");
        assert_eq!(e.uri, "/webhooks/call-events");
        let e = Endpoint::new("http://calltrail.internal/behind/a/proxy/").unwrap();
        assert_eq!(e.address, "calltrail.internal:80");
        assert_eq!(e.host, "calltrail.internal");
        assert_eq!(e.uri, "/behind/a/proxy/webhooks/call-events");
        let e = Endpoint::new("http://[::1]:9000").unwrap();
        assert_eq!(e.address, "[::1]:9000");
        for url in [
            "https://calltrail.example.com",
            "127.0.0.1:8080",
            "not a url",
            "http://user:password@proxy.example",
        ] {
            assert!(Endpoint::new(url).is_err(), "{url}");
        }
    }

    #[test]
    fn without_a_url_the_server_is_reached_where_it_listens() {
        let url = |listen: &str| local_url(listen.parse().unwrap());
        assert_eq!(url("127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(url("0.0.0.0:9000"), "http://127.0.0.1:9000");
        assert_eq!(url("[::]:9000"), "http://[::1]:9000");
        assert_eq!(url("10.0.0.7:80"), "http://10.0.0.7:80");
    }

    #[test]
    fn a_rate_must_be_a_positive_number() {
        assert_eq!(per_second("250"), Ok(250.0));
        assert_eq!(per_second("0.5"), Ok(0.5));
        for bad in ["0", "-1", "NaN", "inf", "fast"] {
            assert!(per_second(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_lifecycles_parse_and_end_their_lifecycle() {
        for i in 0..200 {
            let bodies = lifecycle(7, i);
            let mut p = Projection::default();
            for body in &bodies {
                let d = parse(body).unwrap();
                assert_ne!(d.kind, EventKind::Unknown);
                p.accept(d, Utc::now(), true);
            }
            let id = parse(&bodies[0]).unwrap().call_id.unwrap();
            assert!(p.call(&id).unwrap().lifecycle_ended, "call {i}");
        }
        assert_eq!(
            lifecycle(7, 3),
            lifecycle(7, 3),
            "deterministic per seed and index"
        );
    }

    #[test]
    fn generated_v2_lifecycles_parse_as_v2_and_end_in_one_attempt() {
        use crate::domain::{CallStatus, Format};
        let mut statuses = std::collections::HashSet::new();
        for i in 0..300 {
            let bodies = lifecycle_v2(7, i);
            let mut p = Projection::default();
            for body in &bodies {
                let d = parse(body).unwrap();
                assert_eq!(
                    (d.format, d.kind == EventKind::Unknown),
                    (Format::V2, false)
                );
                p.accept(d, Utc::now(), true);
            }
            let id = parse(&bodies[0]).unwrap().call_id.unwrap();
            let call = p.call(&id).unwrap();
            assert!(call.lifecycle_ended, "call {i}");
            assert_eq!(call.current.number, 1);
            assert!(call.to.as_deref().is_some_and(|to| to.starts_with("+91")));
            statuses.insert(call.status());
        }
        assert_eq!(
            statuses.len(),
            7,
            "every terminal status is simulated: {statuses:?}"
        );
        assert!(statuses.contains(&CallStatus::Voicemail));
        assert_eq!(lifecycle_v2(7, 3), lifecycle_v2(7, 3));
    }
}
