//! Prometheus metrics: the driver (`crieur-runner`) and the API record through the `metrics`
//! facade; this installs the process's recorder (once) and renders the text format for
//! `/metrics`.
//!
//! Everything is aggregated as it is recorded: a counter or a gauge is one atomic, a
//! histogram a fixed set of atomic bucket counts and a sum ([`BUCKETS`]) — recording is a few
//! relaxed atomic additions, with no queue of samples, and a scrape reads those atomics: its
//! cost is the number of series (a few dozen), whatever the number of calls in progress. The
//! series are found by a read lock that only a series' first use (registering it) writes;
//! the text is encoded into one buffer reused from scrape to scrape.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `crieur_calls_total` | counter | `outcome` |
//! | `crieur_calls_in_progress` | gauge | |
//! | `crieur_decisions_total` | counter | `verdict` (`dial`, `skip`, `refused`), `reason` |
//! | `crieur_answer_to_first_audio_seconds` | histogram | |
//! | `crieur_rtp_send_lateness_seconds` | histogram (each call's worst packet) | |
//! | `crieur_optout_durable_seconds` | histogram | `via` (`key`, `api`) |
//! | `crieur_optout_stage_seconds` | histogram: the API's opt-out, by stage | `stage` (`store`, `audit`) |
//! | `crieur_audit_commit_seconds` | histogram | |
//! | `crieur_store_seconds` | histogram | `op` (`recheck`, `lease`, `attempt`) |
//! | `crieur_trunk_faults_total` | counter | `fault` |
//! | `crieur_breaker_state` | gauge (0 closed, 1 half-open, 2 open, 3 stopped) | |
//! | `crieur_api_requests_total` | counter | `status` |
//! | `crieur_api_request_seconds` | histogram: a request, from its handler's start to its answer (the body of an event stream aside) | `route` (`metrics`, `optout`: the POSTs of opt-outs, `other`) |
//! | `crieur_api_rejected_total` | counter (503: a queue full) | `queue` |
//! | `crieur_webhook_deliveries_total` | counter | `result` (`ok`, `failed`, `dropped`) |

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use ::metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// Latency buckets, seconds: 50 µs to 10 s.
pub const BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// A histogram: how many values fell in each of [`BUCKETS`] (and above the last), and
/// their sum.
#[derive(Default)]
struct Buckets {
    counts: [AtomicU64; BUCKETS.len() + 1],
    /// An `f64`'s bits.
    sum: AtomicU64,
}

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        let i = BUCKETS
            .iter()
            .position(|le| value <= *le)
            .unwrap_or(BUCKETS.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }
}

/// The process's metrics: every series recorded so far, by name and labels.
#[derive(Default)]
pub struct Registry {
    counters: RwLock<BTreeMap<Key, Arc<AtomicU64>>>,
    /// An `f64`'s bits each.
    gauges: RwLock<BTreeMap<Key, Arc<AtomicU64>>>,
    histograms: RwLock<BTreeMap<Key, Arc<Buckets>>>,
    help: RwLock<BTreeMap<String, String>>,
    /// The last scrape's text: its allocation is reused.
    out: Mutex<String>,
}

/// The series of `key` in `map`, created on its first use.
fn series<T: Default>(map: &RwLock<BTreeMap<Key, Arc<T>>>, key: &Key) -> Arc<T> {
    if let Some(s) = map.read().unwrap_or_else(PoisonError::into_inner).get(key) {
        return s.clone();
    }
    map.write()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key.clone())
        .or_default()
        .clone()
}

struct Installed(Arc<Registry>);

impl Recorder for Installed {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.0.describe(key, description);
    }
    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.0.describe(key, description);
    }
    fn describe_histogram(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.0.describe(key, description);
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(series(&self.0.counters, key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(series(&self.0.gauges, key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(series(&self.0.histograms, key))
    }
}

/// A metric or label name as Prometheus allows it (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
fn name(s: &str, out: &mut String) {
    for (i, c) in s.chars().enumerate() {
        let ok = c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit());
        out.push(if ok { c } else { '_' });
    }
}

/// `{a="x",b="y"}` (with `extra` last), or nothing without labels.
fn labels(key: &Key, extra: Option<(&str, &str)>, out: &mut String) {
    let mut first = true;
    let all = key.labels().map(|l| (l.key(), l.value())).chain(extra);
    for (k, v) in all {
        out.push(if first { '{' } else { ',' });
        first = false;
        name(k, out);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    if !first {
        out.push('}');
    }
}

impl Registry {
    fn describe(&self, key: KeyName, description: SharedString) {
        self.help
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.as_str().to_owned(), description.into_owned());
    }

    /// The `# HELP` and `# TYPE` lines of `metric`, once per name.
    fn header(&self, metric: &str, kind: &str, last: &mut Option<String>, out: &mut String) {
        if last.as_deref() == Some(metric) {
            return;
        }
        if last.is_some() {
            out.push('\n');
        }
        *last = Some(metric.to_owned());
        let help = self.help.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = help.get(metric) {
            out.push_str("# HELP ");
            name(metric, out);
            out.push(' ');
            out.push_str(&h.replace('\\', "\\\\").replace('\n', "\\n"));
            out.push('\n');
        }
        out.push_str("# TYPE ");
        name(metric, out);
        out.push(' ');
        out.push_str(kind);
        out.push('\n');
    }

    /// Every series in the Prometheus text format (0.0.4) into `out` (cleared first).
    pub fn render_into(&self, out: &mut String) {
        out.clear();
        let mut last = None;
        for (key, v) in self
            .counters
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            self.header(key.name(), "counter", &mut last, out);
            name(key.name(), out);
            labels(key, None, out);
            let _ = writeln!(out, " {}", v.load(Ordering::Relaxed));
        }
        for (key, v) in self
            .gauges
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            self.header(key.name(), "gauge", &mut last, out);
            name(key.name(), out);
            labels(key, None, out);
            let _ = writeln!(out, " {}", f64::from_bits(v.load(Ordering::Relaxed)));
        }
        for (key, h) in self
            .histograms
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            self.header(key.name(), "histogram", &mut last, out);
            let mut total = 0;
            let les = BUCKETS.iter().map(|b| b.to_string()).chain(["+Inf".into()]);
            for (c, le) in h.counts.iter().zip(les) {
                total += c.load(Ordering::Relaxed);
                name(key.name(), out);
                out.push_str("_bucket");
                labels(key, Some(("le", &le)), out);
                let _ = writeln!(out, " {total}");
            }
            name(key.name(), out);
            out.push_str("_sum");
            labels(key, None, out);
            let _ = writeln!(out, " {}", f64::from_bits(h.sum.load(Ordering::Relaxed)));
            name(key.name(), out);
            out.push_str("_count");
            labels(key, None, out);
            let _ = writeln!(out, " {total}");
        }
        if last.is_some() {
            out.push('\n');
        }
    }

    /// Every series in the Prometheus text format, encoded into the buffer kept from the
    /// last scrape, handed to `f`.
    pub fn render_with<T>(&self, f: impl FnOnce(&str) -> T) -> T {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        self.render_into(&mut out);
        f(&out)
    }
}

static REGISTRY: OnceLock<Option<Arc<Registry>>> = OnceLock::new();

/// The process's recorder, installed on first use; `None` if another recorder was installed
/// first (an embedder's own).
pub fn install() -> Option<Arc<Registry>> {
    REGISTRY
        .get_or_init(|| {
            let registry = Arc::new(Registry::default());
            ::metrics::set_global_recorder(Installed(registry.clone())).ok()?;
            describe();
            Some(registry)
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
        "crieur_optout_stage_seconds",
        Unit::Seconds,
        "An API opt-out's stages: durable in the store, then durable in the audit log"
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
    describe_histogram!(
        "crieur_api_request_seconds",
        Unit::Seconds,
        "API requests, in the server: from the handler's start to its answer"
    );
    describe_counter!(
        "crieur_api_rejected_total",
        "API requests refused with 503 because a bounded queue was full"
    );
    describe_counter!(
        "crieur_webhook_deliveries_total",
        "Webhook deliveries: ok, failed after every retry, dropped (queue full)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_recorded_in_the_text_format() {
        let registry = Arc::new(Registry::default());
        let recorder = Installed(registry.clone());
        ::metrics::with_local_recorder(&recorder, || {
            ::metrics::describe_counter!("crieur_calls_total", "Calls ended");
            ::metrics::counter!("crieur_calls_total", "outcome" => "answered").increment(2);
            ::metrics::counter!("crieur_calls_total", "outcome" => "say \"no\"").increment(1);
            ::metrics::gauge!("crieur_calls_in_progress").set(7.0);
            let h = ::metrics::histogram!("crieur_x_seconds", "via" => "api");
            h.record(0.003_906_25);
            h.record(0.003_906_25);
            h.record(20.0);
        });
        let text = registry.render_with(str::to_owned);
        for line in [
            "# HELP crieur_calls_total Calls ended",
            "# TYPE crieur_calls_total counter",
            "crieur_calls_total{outcome=\"answered\"} 2",
            "crieur_calls_total{outcome=\"say \\\"no\\\"\"} 1",
            "# TYPE crieur_calls_in_progress gauge",
            "crieur_calls_in_progress 7",
            "# TYPE crieur_x_seconds histogram",
            "crieur_x_seconds_bucket{via=\"api\",le=\"0.0025\"} 0",
            "crieur_x_seconds_bucket{via=\"api\",le=\"0.005\"} 2",
            "crieur_x_seconds_bucket{via=\"api\",le=\"10\"} 2",
            "crieur_x_seconds_bucket{via=\"api\",le=\"+Inf\"} 3",
            "crieur_x_seconds_sum{via=\"api\"} 20.0078125",
            "crieur_x_seconds_count{via=\"api\"} 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in:\n{text}"
            );
        }
        // The buffer is reused: a second scrape gives the same text, not twice it.
        assert_eq!(registry.render_with(str::to_owned), text);
    }
}
