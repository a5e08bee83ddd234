//! Prometheus metrics (CONTRACT §5). Each app owns its registry — no global
//! recorder — so several apps in one process (the tests) count apart.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

const METADATA: Metadata<'static> = Metadata::new("calltrail", Level::INFO, None);

/// Latency buckets in seconds: from a fast commit to a slow batch.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Deliveries per commit: group commit's batches, from one to the limit.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// What an ingest writer records about each commit (group commit).
#[derive(Clone)]
pub struct IngestMetrics {
    /// `calltrail_ingest_batch_size`: deliveries in a committed batch.
    pub batch_size: Histogram,
    /// `calltrail_ingest_commit_duration_seconds`: a committed batch as its
    /// writer sees it, from taking its connection to the commit.
    pub commit_duration: Histogram,
    /// `calltrail_ingest_batches_retried_total`: batches that failed and were
    /// committed again one delivery at a time.
    pub batches_retried: Counter,
    /// `calltrail_ingest_conflicts_total`: PostgreSQL batches run again from
    /// their load because they lost a race: a call changed after it was
    /// loaded (another replica, `calltrail reprocess`), a deadlock, or a
    /// delivery another replica stored first.
    pub conflicts: Counter,
}

/// Why the webhook refused a delivery (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Signature,
    Malformed,
    TooLarge,
    ContentType,
    Timeout,
    Unavailable,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Self::Signature => "signature",
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::ContentType => "content_type",
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
        }
    }
}

#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    /// Handles registered by the first delivery of each kind, so that the
    /// webhook's per-delivery counting allocates no labels and no key.
    deliveries: Arc<Deliveries>,
}

/// `calltrail_deliveries_total` by event type, then by (outcome, reason);
/// `calltrail_webhook_duration_seconds`.
#[derive(Default)]
struct Deliveries {
    counters: RwLock<HashMap<String, Vec<(Outcome, Counter)>>>,
    duration: OnceLock<Histogram>,
}

type Outcome = (&'static str, Option<&'static str>);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .expect("non-empty buckets")
            .set_buckets_for_metric(
                Matcher::Full("calltrail_ingest_batch_size".into()),
                &BATCH_BUCKETS,
            )
            .expect("non-empty buckets")
            .build_recorder();
        let handle = recorder.handle();
        Self {
            recorder: Arc::new(recorder),
            handle,
            deliveries: Arc::default(),
        }
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    fn histogram(&self, name: &'static str, labels: Vec<Label>) -> Histogram {
        self.recorder
            .register_histogram(&Key::from_parts(name, labels), &METADATA)
    }

    fn gauge(&self, name: &'static str, labels: Vec<Label>, value: f64) {
        self.recorder
            .register_gauge(&Key::from_parts(name, labels), &METADATA)
            .set(value);
    }

    /// A delivery answered: `event_type` is `unknown` for types calltrail does not know.
    pub fn delivery(&self, event_type: &str, outcome: Result<bool, Refusal>, took: Duration) {
        let outcome = match outcome {
            Ok(false) => ("stored", None),
            Ok(true) => ("duplicate", None),
            Err(refusal) => ("refused", Some(refusal.as_str())),
        };
        self.delivery_counter(event_type, outcome).increment(1);
        self.deliveries
            .duration
            .get_or_init(|| self.histogram("calltrail_webhook_duration_seconds", Vec::new()))
            .record(took.as_secs_f64());
    }

    /// The counter of one (type, outcome, reason), registered on first use.
    fn delivery_counter(&self, event_type: &str, outcome: Outcome) -> Counter {
        let find = |kinds: &Vec<(Outcome, Counter)>| {
            kinds
                .iter()
                .find(|(o, _)| *o == outcome)
                .map(|(_, c)| c.clone())
        };
        let counters = &self.deliveries.counters;
        if let Some(counter) = counters
            .read()
            .expect("not poisoned")
            .get(event_type)
            .and_then(find)
        {
            return counter;
        }
        let (name, reason) = outcome;
        let mut labels = vec![
            Label::new("type", event_type.to_owned()),
            Label::new("outcome", name),
        ];
        if let Some(reason) = reason {
            labels.push(Label::new("reason", reason));
        }
        let counter = self.counter("calltrail_deliveries_total", labels);
        let mut counters = counters.write().expect("not poisoned");
        let kinds = counters.entry(event_type.to_owned()).or_default();
        if find(kinds).is_none() {
            kinds.push((outcome, counter.clone()));
        }
        counter
    }

    /// The handles the ingest writers record their commits with.
    pub fn ingest(&self) -> IngestMetrics {
        IngestMetrics {
            batch_size: self.histogram("calltrail_ingest_batch_size", Vec::new()),
            commit_duration: self.histogram("calltrail_ingest_commit_duration_seconds", Vec::new()),
            batches_retried: self.counter("calltrail_ingest_batches_retried_total", Vec::new()),
            conflicts: self.counter("calltrail_ingest_conflicts_total", Vec::new()),
        }
    }

    /// A GraphQL operation (`query`, `mutation` or `subscription`) ran.
    pub fn graphql(&self, operation: &'static str, took: Option<Duration>) {
        self.counter(
            "calltrail_graphql_requests_total",
            vec![Label::new("operation", operation)],
        )
        .increment(1);
        if let Some(took) = took {
            self.histogram(
                "calltrail_graphql_duration_seconds",
                vec![Label::new("operation", operation)],
            )
            .record(took.as_secs_f64());
        }
    }

    /// Subscription messages: (rendered, sent). A message is rendered once
    /// for all the subscriptions that share its document ([`crate::graphql`]).
    pub fn subscription_messages(&self) -> (Counter, Counter) {
        (
            self.counter("calltrail_subscription_messages_rendered_total", Vec::new()),
            self.counter("calltrail_subscription_messages_sent_total", Vec::new()),
        )
    }

    /// The Prometheus text, with point-in-time gauges set just before.
    pub fn render(&self, gauges: &Gauges) -> String {
        self.gauge(
            "calltrail_subscriptions_active",
            Vec::new(),
            gauges.subscriptions as f64,
        );
        for (state, n) in [("idle", gauges.pool_idle), ("in_use", gauges.pool_in_use)] {
            self.gauge(
                "calltrail_db_pool_connections",
                vec![Label::new("state", state)],
                n as f64,
            );
        }
        self.gauge(
            "calltrail_ingest_queue_depth",
            Vec::new(),
            gauges.queue_depth as f64,
        );
        if let Some(at) = gauges.last_stored_at {
            self.gauge(
                "calltrail_last_stored_delivery_timestamp_seconds",
                Vec::new(),
                at,
            );
        }
        self.handle.render()
    }
}

/// Values read at scrape time.
#[derive(Clone, Debug, Default)]
pub struct Gauges {
    pub subscriptions: usize,
    pub pool_idle: usize,
    pub pool_in_use: usize,
    pub queue_depth: usize,
    /// Unix seconds of the latest committed delivery.
    pub last_stored_at: Option<f64>,
}
