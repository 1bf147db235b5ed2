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

/// Seconds from a call's arrival to its answer: ringing takes seconds, so the range is wide.
const SETUP_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

pub const HTTP_REQUESTS: &str = "admin_http_requests_total";
pub const HTTP_DURATION: &str = "admin_http_request_duration_seconds";
pub const DB_DURATION: &str = "db_query_duration_seconds";
pub const DB_ERRORS: &str = "db_query_errors_total";
pub const CALLS_STARTED: &str = "gateway_calls_started_total";
pub const CALLS_ENDED: &str = "gateway_calls_ended_total";
pub const CALLS_ACTIVE: &str = "gateway_calls_active";
pub const CALL_SETUP: &str = "gateway_call_setup_seconds";
pub const MEDIA_PACKETS: &str = "gateway_media_packets_total";
pub const MEDIA_LOST: &str = "gateway_media_packets_lost_total";
pub const CONFIG_OBJECTS: &str = "gateway_config_objects";
pub const CONFIG_RELOADS: &str = "gateway_config_reloads_total";
pub const SIP_MESSAGES: &str = "sip_messages_total";
pub const RIPT_REQUESTS: &str = "ript_requests_total";

/// SIP methods counted under their own name; any other counts as `other`.
const SIP_METHODS: &[&str] = &[
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "INFO",
    "PRACK",
    "UPDATE",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "PUBLISH",
];

/// SIP status codes counted exactly; others count as their class (`4xx`).
const SIP_COMMON_STATUS: &[u16] = &[
    100, 180, 181, 182, 183, 200, 202, 301, 302, 400, 401, 403, 404, 405, 407, 408, 410, 415, 420,
    480, 481, 483, 484, 486, 487, 488, 491, 500, 501, 502, 503, 504, 600, 603, 604, 606,
];

/// Which way a SIP message crossed the gateway's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    In,
    Out,
}

impl Flow {
    fn label(self) -> &'static str {
        match self {
            Flow::In => "in",
            Flow::Out => "out",
        }
    }
}

/// A bounded label for a SIP method (methods are case-sensitive, RFC 3261 §7.1).
fn sip_method_label(method: &str) -> &'static str {
    SIP_METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// The exact code for common SIP statuses, else the class; `other` outside 100..=699.
fn sip_status_label(status: u16) -> String {
    if SIP_COMMON_STATUS.contains(&status) {
        status.to_string()
    } else if (100..=699).contains(&status) {
        format!("{}xx", status / 100)
    } else {
        "other".to_owned()
    }
}

/// Which leg of a call media counters belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaLeg {
    Sip,
    Ript,
}

impl MediaLeg {
    fn label(self) -> &'static str {
        match self {
            MediaLeg::Sip => "sip",
            MediaLeg::Ript => "ript",
        }
    }
}

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
        // The duration metrics and call setup become real histograms (bucketed) instead of the
        // exporter's default summaries, so they aggregate across instances. (The calls only
        // fail for empty buckets, which the constants are not.)
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_duration_seconds".to_owned()),
                LATENCY_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(CALL_SETUP.to_owned()), SETUP_BUCKETS)
            })
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
            SIP_MESSAGES.into(),
            None,
            "SIP messages sent and received (retransmissions included), by direction, kind, \
             method (the CSeq method for responses) and status"
                .into(),
        );
        r.describe_counter(
            RIPT_REQUESTS.into(),
            None,
            "RIPT requests answered, by route template and response status".into(),
        );
        r.describe_histogram(
            CALL_SETUP.into(),
            Some(Unit::Seconds),
            "Call setup time, from the call's arrival to its answer, by direction".into(),
        );
        r.describe_counter(
            MEDIA_PACKETS.into(),
            None,
            "Media packets (RTP packets or RIPT chunks) relayed, by leg and direction".into(),
        );
        r.describe_counter(
            MEDIA_LOST.into(),
            None,
            "Media packets lost, by leg and direction (inbound: sequence gaps; outbound: \
             chunks the peer never acknowledged)"
                .into(),
        );
        r.describe_gauge(
            CONFIG_OBJECTS.into(),
            None,
            "Configuration objects in the routing snapshot in use, by kind".into(),
        );
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
        for leg in [MediaLeg::Sip, MediaLeg::Ript] {
            for flow in [Flow::In, Flow::Out] {
                self.media(leg, flow, 0, 0);
            }
        }
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

    /// One answered call's setup time.
    pub fn call_setup(&self, direction: Direction, seconds: f64) {
        self.histogram(CALL_SETUP, vec![Label::new("direction", direction.label())])
            .record(seconds);
    }

    /// Media counters of one call, added when it ends (or periodically). `leg` is `sip` or
    /// `ript`; packets lost are counted apart.
    pub fn media(&self, leg: MediaLeg, flow: Flow, packets: u64, lost: u64) {
        let labels = || {
            vec![
                Label::new("leg", leg.label()),
                Label::new("direction", flow.label()),
            ]
        };
        self.counter(MEDIA_PACKETS, labels()).increment(packets);
        self.counter(MEDIA_LOST, labels()).increment(lost);
    }

    pub fn config_reloaded(&self) {
        self.counter(CONFIG_RELOADS, vec![]).increment(1);
    }

    /// Objects of one kind (`sip_peers`, `routes`, …) in the routing snapshot in use.
    pub fn config_objects(&self, kind: &'static str, n: usize) {
        self.gauge(CONFIG_OBJECTS, vec![Label::new("kind", kind)])
            .set(n as f64);
    }

    /// One SIP request in or out; `method` as on the wire (unknown ones count as `other`).
    pub fn sip_request(&self, flow: Flow, method: &str) {
        self.counter(
            SIP_MESSAGES,
            vec![
                Label::new("direction", flow.label()),
                Label::new("kind", "request"),
                Label::new("method", sip_method_label(method)),
                Label::new("status", ""),
            ],
        )
        .increment(1);
    }

    /// One SIP response in or out; `method` is its CSeq method.
    pub fn sip_response(&self, flow: Flow, method: &str, status: u16) {
        self.counter(
            SIP_MESSAGES,
            vec![
                Label::new("direction", flow.label()),
                Label::new("kind", "response"),
                Label::new("method", sip_method_label(method)),
                Label::new("status", sip_status_label(status)),
            ],
        )
        .increment(1);
    }

    /// One RIPT request: `resource` is its route template (`/providertgs/{tg}/calls`, never
    /// a raw path), `status` that of the response head, `None` when none was sent.
    pub fn ript_request(&self, resource: &'static str, status: Option<u16>) {
        let status = match status {
            Some(s) if (100..=599).contains(&s) => s.to_string(),
            Some(_) => "other".to_owned(),
            None => "none".to_owned(),
        };
        self.counter(
            RIPT_REQUESTS,
            vec![
                Label::new("resource", resource),
                Label::new("status", status),
            ],
        )
        .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_and_ript_labels_are_bounded() {
        let m = Metrics::new();
        m.sip_request(Flow::In, "OPTIONS");
        m.sip_request(Flow::In, "FOO123");
        m.sip_response(Flow::Out, "OPTIONS", 200);
        m.sip_response(Flow::Out, "INVITE", 499);
        m.ript_request("/providertgs/{tg}/calls", Some(201));
        m.ript_request("other", None);
        let text = m.render();
        for line in [
            r#"sip_messages_total{direction="in",kind="request",method="OPTIONS",status=""} 1"#,
            r#"sip_messages_total{direction="in",kind="request",method="other",status=""} 1"#,
            r#"sip_messages_total{direction="out",kind="response",method="OPTIONS",status="200"} 1"#,
            r#"sip_messages_total{direction="out",kind="response",method="INVITE",status="4xx"} 1"#,
            r#"ript_requests_total{resource="/providertgs/{tg}/calls",status="201"} 1"#,
            r#"ript_requests_total{resource="other",status="none"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
