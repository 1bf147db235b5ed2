//! The Prometheus registry behind `/metrics`.
//!
//! The recorder is owned here rather than installed as the process-global `metrics` recorder,
//! so several routers (tests, two "instances" in one process) keep separate registries; the
//! gateway feeds its counters through the methods below (or installs [`Metrics::recorder`]
//! globally if it prefers the `metrics::counter!` macros).

use metrics::{Key, Label, Metadata, Recorder as _, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use std::sync::Arc;
use std::time::Instant;

const META: Metadata<'static> = Metadata::new("admin_api", metrics::Level::INFO, None);

/// Seconds; request and query latencies of an admin API sit well under a second.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

pub const HTTP_REQUESTS: &str = "admin_http_requests_total";
pub const HTTP_DURATION: &str = "admin_http_request_duration_seconds";
pub const DB_DURATION: &str = "db_query_duration_seconds";
pub const DB_ERRORS: &str = "db_query_errors_total";
pub const CALLS_STARTED: &str = "gateway_calls_started_total";
pub const CALLS_ENDED: &str = "gateway_calls_ended_total";
pub const CALLS_ACTIVE: &str = "gateway_calls_active";
pub const CONFIG_RELOADS: &str = "gateway_config_reloads_total";

/// Direction of a call relative to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// SIP in, RIPT out.
    SipToRipt,
    /// RIPT in, SIP out.
    RiptToSip,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::SipToRipt => "sip_to_ript",
            Direction::RiptToSip => "ript_to_sip",
        }
    }
}

/// A cheap-to-clone handle on one Prometheus registry.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics(..)")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        // Both duration metrics become real histograms (bucketed) instead of the exporter's
        // default summaries, so they aggregate across instances. (The call only fails for
        // empty buckets, which the constant is not.)
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_duration_seconds".to_owned()),
                LATENCY_BUCKETS,
            )
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let m = Metrics {
            recorder: Arc::new(recorder),
            handle,
        };
        m.describe();
        m
    }

    fn describe(&self) {
        let r = &self.recorder;
        r.describe_counter(
            HTTP_REQUESTS.into(),
            None,
            "Admin API requests by matched route, method and status".into(),
        );
        r.describe_histogram(
            HTTP_DURATION.into(),
            Some(Unit::Seconds),
            "Admin API request latency by matched route".into(),
        );
        r.describe_histogram(
            DB_DURATION.into(),
            Some(Unit::Seconds),
            "Database operation latency by operation".into(),
        );
        r.describe_counter(
            DB_ERRORS.into(),
            None,
            "Database operations that failed because the database was unavailable".into(),
        );
        r.describe_counter(
            CALLS_STARTED.into(),
            None,
            "Calls started, by direction".into(),
        );
        r.describe_counter(
            CALLS_ENDED.into(),
            None,
            "Calls ended, by direction and outcome bucket".into(),
        );
        r.describe_gauge(CALLS_ACTIVE.into(), None, "Calls in progress".into());
        r.describe_counter(
            CONFIG_RELOADS.into(),
            None,
            "Routing snapshot rebuilds after a configuration version change".into(),
        );
        // Registered at zero so dashboards see the series before the first call.
        for d in [Direction::SipToRipt, Direction::RiptToSip] {
            self.counter(CALLS_STARTED, vec![Label::new("direction", d.label())])
                .increment(0);
        }
        self.gauge(CALLS_ACTIVE, vec![]).set(0.0);
        self.counter(CONFIG_RELOADS, vec![]).increment(0);
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> metrics::Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &META)
    }

    fn gauge(&self, name: &'static str, labels: Vec<Label>) -> metrics::Gauge {
        self.recorder
            .register_gauge(&Key::from_parts(name, labels), &META)
    }

    fn histogram(&self, name: &'static str, labels: Vec<Label>) -> metrics::Histogram {
        self.recorder
            .register_histogram(&Key::from_parts(name, labels), &META)
    }

    /// The recorder, for a gateway that wants to install it globally.
    pub fn recorder(&self) -> Arc<PrometheusRecorder> {
        Arc::clone(&self.recorder)
    }

    /// The text exposition format (Prometheus 0.0.4). Runs the exporter's upkeep first, which
    /// drains histogram samples; a scrape interval is a fine cadence for it.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }

    pub(crate) fn http_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.counter(
            HTTP_REQUESTS,
            vec![
                Label::new("route", route.to_owned()),
                Label::new("method", method.to_owned()),
                Label::new("status", status.to_string()),
            ],
        )
        .increment(1);
        self.histogram(HTTP_DURATION, vec![Label::new("route", route.to_owned())])
            .record(seconds);
    }

    /// Runs one database operation, recording its latency under `op` and counting outages.
    pub(crate) async fn time_db<T, E, F>(&self, op: &'static str, f: F) -> Result<T, crate::Error>
    where
        F: Future<Output = Result<T, E>>,
        E: Into<crate::Error>,
    {
        let start = Instant::now();
        let result = f.await.map_err(Into::into);
        self.histogram(DB_DURATION, vec![Label::new("op", op)])
            .record(start.elapsed().as_secs_f64());
        if let Err(crate::Error::Unavailable { .. }) = &result {
            self.counter(DB_ERRORS, vec![Label::new("op", op)])
                .increment(1);
        }
        result
    }

    pub fn call_started(&self, direction: Direction) {
        self.counter(
            CALLS_STARTED,
            vec![Label::new("direction", direction.label())],
        )
        .increment(1);
        self.gauge(CALLS_ACTIVE, vec![]).increment(1.0);
    }

    /// `bucket` is the call verdict's CDR/metrics bucket (a small fixed set, e.g. `answered`,
    /// `busy`, `no_route`), never caller data.
    pub fn call_ended(&self, direction: Direction, bucket: &'static str) {
        self.counter(
            CALLS_ENDED,
            vec![
                Label::new("direction", direction.label()),
                Label::new("bucket", bucket),
            ],
        )
        .increment(1);
        self.gauge(CALLS_ACTIVE, vec![]).decrement(1.0);
    }

    pub fn config_reloaded(&self) {
        self.counter(CONFIG_RELOADS, vec![]).increment(1);
    }
}
