//! Prometheus metrics: the driver (`crieur-runner`) and the API record through the `metrics`
//! facade; this installs the process's recorder (once) and renders the text format for
//! `/metrics`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `crieur_calls_total` | counter | `outcome` |
//! | `crieur_calls_in_progress` | gauge | |
//! | `crieur_decisions_total` | counter | `verdict` (`dial`, `skip`, `refused`), `reason` |
//! | `crieur_answer_to_first_audio_seconds` | histogram | |
//! | `crieur_rtp_send_lateness_seconds` | histogram (each call's worst packet) | |
//! | `crieur_optout_durable_seconds` | histogram | `via` (`key`, `api`) |
//! | `crieur_audit_commit_seconds` | histogram | |
//! | `crieur_store_seconds` | histogram | `op` (`recheck`, `lease`, `attempt`) |
//! | `crieur_trunk_faults_total` | counter | `fault` |
//! | `crieur_breaker_state` | gauge (0 closed, 1 half-open, 2 open, 3 stopped) | |
//! | `crieur_api_requests_total` | counter | `status` |
//! | `crieur_api_rejected_total` | counter (503: a queue full) | `queue` |
//! | `crieur_webhook_deliveries_total` | counter | `result` (`ok`, `failed`, `dropped`) |

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Latency buckets, seconds: 50 µs to 10 s.
const BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's recorder, installed on first use; `None` if another recorder was installed
/// first (an embedder's own).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            ::metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("crieur_calls_total", "Calls ended, by recorded outcome");
    describe_gauge!("crieur_calls_in_progress", "Calls in progress");
    describe_counter!(
        "crieur_decisions_total",
        "Dial decisions recorded, by verdict and first reason"
    );
    describe_histogram!(
        "crieur_answer_to_first_audio_seconds",
        Unit::Seconds,
        "From the 200 OK to the message's first RTP packet"
    );
    describe_histogram!(
        "crieur_rtp_send_lateness_seconds",
        Unit::Seconds,
        "Each call's latest RTP packet against its 20 ms slot"
    );
    describe_histogram!(
        "crieur_optout_durable_seconds",
        Unit::Seconds,
        "From an opt-out (key pressed or API request) to it being durable in the store and the audit log"
    );
    describe_histogram!(
        "crieur_audit_commit_seconds",
        Unit::Seconds,
        "An audit log commit (fsync) of the dial loop"
    );
    describe_histogram!(
        "crieur_store_seconds",
        Unit::Seconds,
        "Store work of the dial loop: re-check and lease before an INVITE, recording a call's end"
    );
    describe_counter!(
        "crieur_trunk_faults_total",
        "Calls the trunk refused before anything rang"
    );
    describe_gauge!(
        "crieur_breaker_state",
        "The trunk's breaker: 0 closed, 1 half-open, 2 open, 3 stopped"
    );
    describe_counter!("crieur_api_requests_total", "API requests, by status");
    describe_counter!(
        "crieur_api_rejected_total",
        "API requests refused with 503 because a bounded queue was full"
    );
    describe_counter!(
        "crieur_webhook_deliveries_total",
        "Webhook deliveries: ok, failed after every retry, dropped (queue full)"
    );
}
