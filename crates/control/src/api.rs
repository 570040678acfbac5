//! The HTTP API (`docs/openapi.yaml`), on axum.
//!
//! **Tokens.** Every change (any method but `GET`/`HEAD`) needs `Authorization: Bearer
//! <token>`; on an address that is not loopback every request does, but for the dashboard's
//! page and the OpenAPI file (static, no data). No or a wrong token: 401.
//!
//! **The dial loop is never held up.** Orders to a run go through its bounded control channel
//! without waiting (full: 503 with `Retry-After: 1`, nothing done); store and audit writes
//! run on tokio's blocking pool, at most [`WRITES`] at once (more: 503, nothing written); an
//! import reserves its slot in the control channel before it writes anything. The event
//! stream is a broadcast that skips what a slow subscriber lags behind (it is told how many).
//! The audit log is one, shared with the dial loop: an opt-out's record takes its lock only to
//! append and write (no fsync under the lock, on either side); the fsync that makes it
//! durable runs after, and one fsync covers every record written before it (group commit;
//! measured: `BENCHMARKS.md`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use crieur_audit::record::{ImportRecord, OptOutListChange};
use crieur_audit::Record;
use crieur_config::campaign::Campaign;
use crieur_config::{InputError, InputErrors};
use crieur_runner::{Control, Refused, RunHandle, SharedLog};
use crieur_scheduler::{ContactId, Evaluator, E164};
use crieur_store::{PendingOptOut, Progress, Store};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::feed::{counters_json, Feed};
use crate::now;

/// Store and audit writes in progress at most; more are refused with 503.
pub const WRITES: usize = 32;
/// The largest request body (a contacts CSV): 64 MiB.
pub const BODY_LIMIT: usize = 64 << 20;

/// A campaign this process runs.
pub struct Served {
    pub campaign: Arc<Campaign>,
    /// Its run; `None`: served with no run in progress (`crieur serve`).
    pub handle: Option<RunHandle>,
    pub feed: Arc<Feed>,
    /// What is counted over the whole campaign now and then ([`Ctx::refresh`]).
    pub snapshot: Mutex<Option<Snapshot>>,
}

/// Counts over every contact of a campaign (O(contacts): made in the background, off the
/// API's thread and the run's, and served as of `at`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
    /// When the count started: what it says is as of then.
    pub at: DateTime<Utc>,
    pub contacts: usize,
    /// Contacts no consent record, rule or schedule lets be called within the horizon, as
    /// of `at`.
    pub never_callable: usize,
    /// Contacts whose number is on the opt-out list.
    pub opted_out: usize,
    /// How long the count took.
    pub took_ms: u64,
}

/// Contacts read per batch by [`Ctx::refresh`]: its memory is O(this), whatever the
/// campaign's size.
pub const COUNT_BATCH: usize = 10_000;
/// [`refresh_loop`] waits at least this many times the last count's duration before the
/// next: a count over millions of contacts takes at most about a tenth of one core.
pub const COUNT_DUTY: u32 = 10;
/// The longest [`refresh_loop`]'s first count waits for a run to start.
pub const COUNT_START_WAIT: Duration = Duration::from_secs(10);

/// What the API serves.
pub struct Ctx {
    store: Arc<dyn Store + Send + Sync>,
    log: SharedLog,
    campaigns: BTreeMap<String, Served>,
    token_hash: [u8; 32],
    loopback: bool,
    metrics: Option<Arc<crate::metrics::Registry>>,
    writes: Semaphore,
    /// How the store names `log` in its pending opt-outs.
    log_id: String,
    /// The directory of `log`.
    log_dir: std::path::PathBuf,
    /// Told when a write through the API changed contacts or opt-outs: the counts over
    /// every contact are made again without waiting for their interval.
    recount: tokio::sync::Notify,
    /// Set when the API stops: each event stream sends what the run published before, then
    /// ends (see [`Ctx::end_event_streams`]).
    pub(crate) ending: tokio::sync::watch::Sender<bool>,
    /// The event streams open now.
    pub(crate) streams: std::sync::atomic::AtomicUsize,
}

impl Ctx {
    /// The API of the process that holds `store` and `log` and runs `campaigns`, listening on
    /// `listen` with `token`.
    pub fn new(
        store: Arc<dyn Store + Send + Sync>,
        log: SharedLog,
        campaigns: Vec<Served>,
        token: &str,
        listen: SocketAddr,
    ) -> Ctx {
        let (log_id, log_dir) = log
            .lock()
            .map(|l| (crieur_runner::ops::log_id(&l), l.dir().to_path_buf()))
            .unwrap_or_default();
        Ctx {
            store,
            log,
            log_id,
            log_dir,
            campaigns: campaigns
                .into_iter()
                .map(|s| (s.campaign.id.clone(), s))
                .collect(),
            token_hash: Sha256::digest(token.as_bytes()).into(),
            loopback: listen.ip().is_loopback(),
            metrics: crate::metrics::install(),
            writes: Semaphore::new(WRITES),
            recount: tokio::sync::Notify::new(),
            ending: tokio::sync::watch::Sender::new(false),
            streams: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Tells every event stream to send what it holds and end, and waits (at most `limit`)
    /// until they have: a run's last events (its last calls' `ended`, its final `progress`)
    /// reach the clients before the API stops — they were published within the stream's
    /// [`crate::events::FLUSH`] of the run's end, and used to be cut off with the server.
    pub fn end_event_streams(&self, limit: std::time::Duration) {
        self.ending.send_replace(true);
        let step = std::time::Duration::from_millis(5);
        let mut waited = std::time::Duration::ZERO;
        while self.streams.load(std::sync::atomic::Ordering::Acquire) > 0 && waited < limit {
            std::thread::sleep(step);
            waited += step;
        }
    }

    /// At most `n` store and audit writes at once (default [`WRITES`]); more are refused with
    /// 503.
    pub fn with_write_slots(mut self, n: usize) -> Ctx {
        self.writes = Semaphore::new(n);
        self
    }

    /// Counts what needs every contact (never callable, opted out) for each campaign
    /// served, whatever its size: its contacts read [`COUNT_BATCH`] at a time from the
    /// store (no lock held between batches: the run's writes go on), each batch's numbers
    /// looked up in the opt-out list together. Returns how long it took. A campaign whose
    /// count fails keeps its last one (logged).
    pub fn refresh(&self) -> chrono::Duration {
        let start = now();
        for s in self.campaigns.values() {
            match self.count(&s.campaign) {
                Ok(snap) => {
                    if let Ok(mut g) = s.snapshot.lock() {
                        *g = Some(snap);
                    }
                }
                Err(e) => {
                    tracing::warn!(campaign = %s.campaign.id, error = %e, "counting the contacts");
                }
            }
        }
        now() - start
    }

    fn count(&self, campaign: &Campaign) -> Result<Snapshot, crieur_store::Error> {
        let at = now();
        let (mut contacts, mut never, mut opted_out) = (0, 0, 0);
        let mut failed = None;
        self.store
            .scan_contacts(&campaign.id, COUNT_BATCH, &mut |page| {
                contacts += page.len();
                never +=
                    crieur_config::check::never_callable_all(&campaign.policy, &page, at).len();
                let numbers: Vec<&E164> = page.iter().map(|c| c.phone()).collect();
                match self.store.opted_out_among(&numbers) {
                    Ok(v) => {
                        opted_out += v.into_iter().filter(|o| *o).count();
                        true
                    }
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                }
            })?;
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(Snapshot {
            at,
            contacts,
            never_callable: never,
            opted_out,
            took_ms: u64::try_from((now() - at).num_milliseconds()).unwrap_or(0),
        })
    }

    /// Every campaign served.
    pub(crate) fn served_all(&self) -> impl Iterator<Item = &Served> {
        self.campaigns.values()
    }

    pub(crate) fn served(&self, id: &str) -> Result<&Served, ApiError> {
        self.campaigns
            .get(id)
            .ok_or_else(|| ApiError::not_found(format!("no campaign `{id}` is running here")))
    }
}

/// Refreshes [`Ctx::refresh`]'s counts on the blocking pool until the task is dropped: the
/// next count starts `every` after the last ended, or [`COUNT_DUTY`] times its duration if
/// longer (a campaign of millions is counted less often, never more than about a tenth of a
/// core); after a write through the API (an opt-out, an import), as soon as that duty allows.
/// The first count waits until each run served has started (published its first counters,
/// at most [`COUNT_START_WAIT`]): it does not compete with a run's start (its recovery, its
/// first reads of the due index, the phone-number metadata it loads) for the CPU and the
/// store.
pub async fn refresh_loop(ctx: Arc<Ctx>, every: Duration) {
    for s in ctx.campaigns.values() {
        if let Some(h) = &s.handle {
            let mut w = h.watch_counters();
            // Ended, or never published: count anyway.
            let _ = tokio::time::timeout(COUNT_START_WAIT, w.changed()).await;
        }
    }
    loop {
        let c = ctx.clone();
        let took = tokio::task::spawn_blocking(move || c.refresh())
            .await
            .ok()
            .and_then(|d| d.to_std().ok())
            .unwrap_or_default();
        let rest = took * COUNT_DUTY;
        tokio::select! {
            () = tokio::time::sleep(every.max(rest)) => {}
            () = async {
                ctx.recount.notified().await;
                tokio::time::sleep(rest).await;
            } => {}
        }
    }
}

/// An error answer: a status and a JSON body `{"error": …, "errors": [located …]}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    fn new(status: StatusCode, msg: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({ "error": msg.into() }),
        }
    }
    fn not_found(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, msg)
    }
    pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, msg)
    }
    fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "control API");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
    fn busy(queue: &'static str) -> ApiError {
        ::metrics::counter!("crieur_api_rejected_total", "queue" => queue).increment(1);
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the {queue} queue is full: retry shortly"),
        )
    }
    fn refused(r: Refused) -> ApiError {
        match r {
            Refused::Full => ApiError::busy("control"),
            Refused::Ended(_) => ApiError::new(StatusCode::CONFLICT, "the run has ended"),
        }
    }
}

/// Located input errors, as the command line prints them, one object each.
pub fn input_errors(e: &InputErrors) -> ApiError {
    let errors: Vec<Value> =
        e.0.iter()
            .map(|e| {
                json!({
                    "file": e.file.display().to_string(),
                    "line": e.line,
                    "column": e.column,
                    "field": e.field,
                    "value": e.value,
                    "message": e.message,
                    "text": e.to_string(),
                })
            })
            .collect();
    ApiError {
        status: StatusCode::BAD_REQUEST,
        body: json!({ "error": e.to_string(), "errors": errors }),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"crieur\""),
            );
        }
        r
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The routes, behind the token check.
pub fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/dashboard.js", get(dashboard_js))
        .route("/openapi.yaml", get(openapi))
        .route("/metrics", get(metrics))
        .route("/api/campaigns", get(campaigns))
        .route("/api/campaigns/{id}", get(campaign))
        .route("/api/campaigns/{id}/calls", get(calls))
        .route("/api/campaigns/{id}/contacts", post(import))
        .route("/api/campaigns/{id}/contacts/{contact}", get(contact))
        .route("/api/campaigns/{id}/pause", post(pause))
        .route("/api/campaigns/{id}/resume", post(resume))
        .route("/api/campaigns/{id}/stop", post(stop))
        .route("/api/events", get(crate::events::events))
        .route("/api/optouts", post(optout_add))
        .route("/api/optouts/import", post(optout_import))
        .route(
            "/api/optouts/{number}",
            get(optout_check).delete(optout_remove),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(ctx.clone(), auth))
        .with_state(ctx)
}

/// Serves the API on `listener` until the task is dropped. Each accepted connection has
/// TCP_NODELAY: an answer leaves as soon as it is written, not held by Nagle's algorithm
/// until the client's (delayed) ACK of what went before.
pub async fn serve(listener: tokio::net::TcpListener, ctx: Arc<Ctx>) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY on an API connection");
        }
    });
    axum::serve(listener, router(ctx)).await
}

/// Whether `headers` carry the token (compared by digest, in constant time).
fn authorised(ctx: &Ctx, headers: &HeaderMap) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let d: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
    d.iter()
        .zip(ctx.token_hash.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

async fn auth(State(ctx): State<Arc<Ctx>>, req: Request, next: Next) -> Response {
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    let static_page = matches!(req.uri().path(), "/" | "/dashboard.js" | "/openapi.yaml");
    // A token given must be right, even where none is needed.
    let given = req.headers().contains_key(header::AUTHORIZATION);
    let open = read && (ctx.loopback || static_page) && !given;
    let route = match (req.method(), req.uri().path()) {
        (_, "/metrics") => "metrics",
        (&Method::POST, p) if p.starts_with("/api/optouts") => "optout",
        _ => "other",
    };
    #[allow(clippy::disallowed_methods)]
    let t0 = std::time::Instant::now();
    let r = if open || authorised(&ctx, req.headers()) {
        let r = next.run(req).await;
        #[allow(clippy::disallowed_methods)]
        let took = t0.elapsed();
        ::metrics::histogram!("crieur_api_request_seconds", "route" => route)
            .record(took.as_secs_f64());
        r
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a valid token is needed: Authorization: Bearer <token>",
        )
        .into_response()
    };
    ::metrics::counter!("crieur_api_requests_total", "status" => r.status().as_str().to_owned())
        .increment(1);
    r
}

const DASHBOARD: &str = include_str!("dashboard.html");
const OPENAPI: &str = include_str!("../../../docs/openapi.yaml");

async fn dashboard() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'",
            ),
        ],
        DASHBOARD,
    )
}

const DASHBOARD_JS: &str = include_str!("dashboard.js");

async fn dashboard_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        DASHBOARD_JS,
    )
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI)
}

async fn metrics(State(ctx): State<Arc<Ctx>>) -> impl IntoResponse {
    let text = ctx
        .metrics
        .as_ref()
        .map(|m| m.render_with(|t| Bytes::copy_from_slice(t.as_bytes())))
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// The store's counters of the served campaigns that have no run here (with a run, its own
/// counters say the same, as of its last refill), read on the blocking pool.
async fn stored_counts(ctx: &Arc<Ctx>) -> BTreeMap<String, Progress> {
    // During a run, nothing to read: no hop to the blocking pool for each poll of the state.
    if ctx.campaigns.values().all(|s| s.handle.is_some()) {
        return BTreeMap::new();
    }
    let c = ctx.clone();
    tokio::task::spawn_blocking(move || {
        c.campaigns
            .values()
            .filter(|s| s.handle.is_none())
            .filter_map(|s| {
                Some((
                    s.campaign.id.clone(),
                    c.store.progress(&s.campaign.id).ok()?,
                ))
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

fn state_json(stored: &BTreeMap<String, Progress>, s: &Served) -> Value {
    let mut c = s
        .handle
        .as_ref()
        .map(RunHandle::counters)
        .unwrap_or_default();
    let snap = s.snapshot.lock().ok().and_then(|g| g.clone());
    if s.handle.is_none() {
        // No run: what the store holds, from its counters (O(1), whatever the campaign's
        // size: the ones `crieur status` prints).
        if let Some(p) = stored.get(&s.campaign.id) {
            c.contacts = p.remaining + p.done;
            c.remaining = p.remaining;
        }
    }
    let mut v = counters_json(&c);
    let t = now();
    // Naive: what remains at the rate of the last 10 s.
    let estimated_end = (c.calls_per_second > 0.0 && c.remaining > 0).then(|| {
        let secs = (c.remaining as f64 / c.calls_per_second).min(1e9) as i64;
        (t + chrono::Duration::seconds(secs)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    });
    if let Some(o) = v.as_object_mut() {
        o.insert("id".into(), json!(s.campaign.id));
        o.insert("name".into(), json!(s.campaign.name));
        o.insert(
            "running".into(),
            json!(s.handle.as_ref().is_some_and(|h| !h.is_ended())),
        );
        o.insert("estimated_end".into(), json!(estimated_end));
        o.insert(
            "never_callable".into(),
            json!(snap.as_ref().map(|s| s.never_callable)),
        );
        o.insert(
            "opted_out_contacts".into(),
            json!(snap.as_ref().map(|s| s.opted_out)),
        );
        o.insert(
            "counted_at".into(),
            json!(snap.map(|s| s.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))),
        );
    }
    v
}

async fn campaigns(State(ctx): State<Arc<Ctx>>) -> ApiResult<Json<Value>> {
    let stored = stored_counts(&ctx).await;
    let list: Vec<Value> = ctx
        .campaigns
        .values()
        .map(|s| state_json(&stored, s))
        .collect();
    Ok(Json(json!({ "campaigns": list })))
}

async fn campaign(
    State(ctx): State<Arc<Ctx>>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    let served = ctx.served(&id)?;
    Ok(Json(state_json(&stored_counts(&ctx).await, served)))
}

#[derive(serde::Deserialize)]
struct CallsQuery {
    since: Option<u64>,
    limit: Option<usize>,
}

async fn calls(
    State(ctx): State<Arc<Ctx>>,
    UrlPath(id): UrlPath<String>,
    q: Result<Query<CallsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<crate::feed::Page>> {
    let s = ctx.served(&id)?;
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(s.feed.since(q.since, limit)))
}

/// Runs `f` on the blocking pool, holding one of the [`WRITES`] slots (none free: 503).
async fn write<T: Send + 'static>(
    ctx: &Arc<Ctx>,
    f: impl FnOnce(&Ctx) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let permit = ctx
        .writes
        .try_acquire()
        .map_err(|_| ApiError::busy("write"))?;
    let c = ctx.clone();
    let r = tokio::task::spawn_blocking(move || f(&c))
        .await
        .map_err(ApiError::internal)?;
    drop(permit);
    if r.is_ok() {
        // Contacts or opt-outs changed: counted again soon (see `refresh_loop`).
        ctx.recount.notify_one();
    }
    r
}

async fn contact(
    State(ctx): State<Arc<Ctx>>,
    UrlPath((id, contact)): UrlPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    let campaign = ctx.served(&id)?.campaign.clone();
    let cid = ContactId::new(contact.clone()).map_err(|e| ApiError::bad(e.to_string()))?;
    let c = ctx.clone();
    tokio::task::spawn_blocking(move || -> ApiResult<Json<Value>> {
        let store = &*c.store;
        let Some(k) = store.contact(&id, &cid).map_err(ApiError::internal)? else {
            return Err(ApiError::not_found(format!(
                "no contact `{contact}` in campaign `{id}`"
            )));
        };
        let t = now();
        let rules = crieur_runner::rules(&campaign);
        let gate =
            crieur_dial::protocol::gate(&rules, store, &k, t).map_err(ApiError::internal)?;
        let decision = Evaluator::new(&campaign.policy).decide(&k, t);
        let next_eligible = match (&gate.refused, &decision) {
            (Some((_, until)), _) => *until,
            (None, crieur_scheduler::Decision::Dial(_)) => Some(t),
            (None, crieur_scheduler::Decision::Skip(s)) => s.next_eligible,
        };
        let attempt = crieur_dial::protocol::attempt_number(&gate.history, &id);
        let explain = crieur_audit::build::decision_record(
            &k,
            &decision,
            crieur_audit::build::DecisionInputs {
                campaign: &id,
                now: t,
                history: gate.history.clone(),
                opted_out: gate.opted_out,
                refused: gate.refused.as_ref().map(|(why, _)| why.clone()),
                attempt,
            },
        );
        Ok(Json(json!({
            "campaign": id,
            "contact": k.id().to_string(),
            "number": k.phone().to_string(),
            "opted_out": gate.opted_out,
            "dialable_now": gate.refused.is_none() && matches!(decision, crieur_scheduler::Decision::Dial(_)),
            "next_eligible": next_eligible.map(|n| n.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            "attempts": gate.history.iter().map(|a| json!({
                "campaign": a.campaign, "at": a.at, "ended": a.ended, "outcome": a.outcome,
            })).collect::<Vec<_>>(),
            "explain": serde_json::to_value(&explain).map_err(ApiError::internal)?,
        })))
    })
    .await
    .map_err(ApiError::internal)?
}

/// The run of `s`, or 409 when it is served with no run.
fn running(s: &Served) -> ApiResult<&RunHandle> {
    s.handle.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "no run of `{}` is in progress here (the store is served by `crieur serve`)",
                s.campaign.id
            ),
        )
    })
}

fn order(ctx: &Ctx, id: &str, c: Control, what: &str) -> ApiResult<(StatusCode, Json<Value>)> {
    running(ctx.served(id)?)?
        .offer(c)
        .map_err(ApiError::refused)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "campaign": id, "order": what })),
    ))
}

async fn pause(
    State(ctx): State<Arc<Ctx>>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    order(&ctx, &id, Control::Pause, "pause")
}

async fn resume(
    State(ctx): State<Arc<Ctx>>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    order(&ctx, &id, Control::Resume, "resume")
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StopBody {
    /// Seconds the calls in progress get (default: the run's `--drain-secs`).
    drain_secs: Option<u64>,
    reason: Option<String>,
}

/// A JSON body, or 400 saying where it is malformed (an empty body: `T::default()`).
fn json_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad(format!(
            "malformed JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        ))
    })
}

async fn stop(
    State(ctx): State<Arc<Ctx>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    ctx.served(&id)?;
    let b: StopBody = json_body(&body)?;
    let reason = b
        .reason
        .map(|r| format!("stopped through the API: {}", cap(&r)))
        .unwrap_or_else(|| "stopped through the API".into());
    order(
        &ctx,
        &id,
        Control::Stop {
            reason,
            drain: b.drain_secs.map(Duration::from_secs),
        },
        "stop",
    )
}

/// A free-text field, capped (it goes into the audit log).
fn cap(s: &str) -> String {
    s.chars().take(200).collect()
}

#[derive(serde::Deserialize)]
struct ImportQuery {
    /// The name the errors are located in (default `<request body>`).
    file: Option<String>,
    delimiter: Option<char>,
    default_region: Option<String>,
}

async fn import(
    State(ctx): State<Arc<Ctx>>,
    UrlPath(id): UrlPath<String>,
    q: Result<Query<ImportQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let served = ctx.served(&id)?;
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let file = q.file.unwrap_or_else(|| "<request body>".into());
    let mut opts = crieur_config::contacts::Options::default();
    if let Some(d) = q.delimiter {
        opts.delimiter = u8::try_from(d)
            .ok()
            .filter(|d| d.is_ascii() && *d != b'"')
            .ok_or_else(|| ApiError::bad("delimiter: expected one ASCII character"))?;
    }
    if let Some(r) = &q.default_region {
        opts.default_region = Some(r.to_ascii_uppercase().parse().map_err(|_| {
            ApiError::bad("default_region: expected a region code such as FR (ISO 3166-1 alpha-2)")
        })?);
    }
    // The run's slot first: once written, the contacts must reach its planner.
    let permit = match served.handle.as_ref().map(RunHandle::reserve) {
        Some(Ok(p)) => Some(p),
        None | Some(Err(Refused::Ended(_))) => None,
        Some(Err(Refused::Full)) => return Err(ApiError::busy("control")),
    };
    let campaign = served.campaign.clone();
    let (contacts, v) = write(&ctx, move |c| {
        let loaded = crieur_config::contacts::parse(Path::new(&file), &opts, &body)
            .map_err(|e| input_errors(&e))?;
        let stats = c
            .store
            .upsert_contacts(&campaign.id, &loaded.contacts)
            .map_err(ApiError::internal)?;
        let at = now();
        crieur_dial::session::append_durable_shared(
            &c.log,
            at,
            &Record::Import(ImportRecord {
                campaign: campaign.id.clone(),
                file: file.clone(),
                sha256: hex::encode(loaded.sha256),
                rows: loaded.rows,
                created: stats.created,
                updated: stats.updated,
                consents_added: stats.consents_added,
                rejected: 0,
            }),
        )
        .map_err(ApiError::internal)?;
        let v = json!({
            "campaign": campaign.id,
            "rows": loaded.rows,
            "created": stats.created,
            "updated": stats.updated,
            "consents_added": stats.consents_added,
        });
        Ok((loaded.contacts, v))
    })
    .await?;
    if let Some(p) = permit {
        p.send(Control::AddContacts(contacts));
    }
    Ok(Json(v))
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct OptOutBody {
    number: Option<String>,
    source: Option<String>,
}

fn source_of(s: Option<&str>) -> String {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => format!("api: {}", cap(s)),
        None => "api".into(),
    }
}

/// Adds `numbers` to the opt-out list, durable in the store and the audit log before it
/// returns; then hangs up any call in progress to one of them. (new, hung up).
///
/// The two fsyncs overlap: once the store's commit shows the opt-out to its readers (and
/// before it is durable), the audit record is written to the log's file (the page cache);
/// its fsync then runs beside the store's, and the answer waits for both. In that order the
/// log never records an opt-out before a dial decision that read the list without it (each
/// decision reads the list under the log's lock). The store's commit keeps a pending entry
/// with the record's ticket, forgotten once both are durable; a crash between the two is
/// closed at the owner's next start ([`crieur_runner::ops::recover_opt_outs`]).
fn add_opt_outs(c: &Ctx, numbers: &[E164], source: &str) -> ApiResult<(usize, usize)> {
    #[allow(clippy::disallowed_methods)]
    let t0 = std::time::Instant::now();
    let at = now();
    let pending = PendingOptOut {
        ticket: ticket(at),
        log: c.log_id.clone(),
        numbers: numbers.iter().map(ToString::to_string).collect(),
        at,
        source: source.into(),
    };
    let record = Record::OptOutListChange(OptOutListChange {
        action: "add".into(),
        numbers: pending.numbers.clone(),
        source: source.into(),
        at,
        ticket: Some(pending.ticket.clone()),
        recovered: None,
    });
    // The record is written once the store shows the opt-out to every reader, never before:
    // a dial decision that reads the list as it was (under the log's lock) is then always
    // recorded before it. Its fsync runs beside the store's.
    let ((stored, stored_at), audit) = std::thread::scope(|s| {
        let mut audit = None;
        let r = c.store.add_opt_outs_pending(numbers, &pending, &mut || {
            audit = Some(write_record(c, at, &record).map(|synced| {
                s.spawn(move || {
                    let r = synced.wait();
                    #[allow(clippy::disallowed_methods)]
                    (r, std::time::Instant::now())
                })
            }));
        });
        #[allow(clippy::disallowed_methods)]
        let t = std::time::Instant::now();
        let audit =
            audit.map(|a| a.map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))));
        ((r, t), audit)
    });
    let (audited, audited_at) = match audit {
        Some(a) => a?,
        // Nothing written, in the store or the log.
        None => {
            return Err(ApiError::internal(stored.err().map_or_else(
                || "the store wrote no opt-out".to_owned(),
                |e| e.to_string(),
            )))
        }
    };
    // A record that failed after the store took the opt-out: its pending entry stays, and
    // the next start writes the record.
    audited.map_err(ApiError::internal)?;
    let new = match stored {
        Ok(new) => new,
        // The log holds the opt-out: the store follows it (one more try, without the pending
        // entry: the record is durable already). Failed again: noted next to the log before
        // the 500, so that the owner's next start rolls it forward, even after a clean stop.
        Err(e) => {
            tracing::warn!(error = %e, "the store failed an opt-out the audit log holds; trying again");
            match c.store.add_opt_outs(numbers, at, source) {
                Ok(new) => new,
                Err(e) => {
                    if let Err(n) =
                        crieur_runner::ops::note_unapplied(&c.log_dir, &pending.ticket, at)
                    {
                        tracing::error!(error = %n, ticket = %pending.ticket, "noting an opt-out the store lacks");
                    }
                    return Err(ApiError::internal(e));
                }
            }
        }
    };
    // Both are durable: the pending entry is no longer needed (if this is lost in a crash,
    // the next start finds the record and forgets the entry then).
    if let Err(e) = c
        .store
        .clear_pending_opt_outs(std::slice::from_ref(&pending.ticket))
    {
        tracing::warn!(error = %e, "forgetting a pending opt-out (the next start will)");
    }
    let done = stored_at.max(audited_at);
    ::metrics::histogram!("crieur_optout_durable_seconds", "via" => "api")
        .record((done - t0).as_secs_f64());
    ::metrics::histogram!("crieur_optout_stage_seconds", "stage" => "store")
        .record((stored_at - t0).as_secs_f64());
    ::metrics::histogram!("crieur_optout_stage_seconds", "stage" => "audit")
        .record((audited_at - t0).as_secs_f64());
    let mut hung_up = 0;
    for n in numbers {
        let n = n.to_string();
        for h in c.campaigns.values().filter_map(|s| s.handle.as_ref()) {
            hung_up += usize::from(h.in_progress().hang_up(&n));
        }
    }
    Ok((new, hung_up))
}

/// `record` appended to the shared log and written to its file (the page cache), under the
/// log's lock; the returned handle makes it durable, outside the lock.
fn write_record(c: &Ctx, at: DateTime<Utc>, record: &Record) -> ApiResult<crieur_audit::Pending> {
    let mut log = c
        .log
        .lock()
        .map_err(|_| ApiError::internal("the audit log's lock is poisoned"))?;
    log.append(at, record).map_err(ApiError::internal)?;
    log.write_out().map_err(ApiError::internal)
}

/// A ticket no other opt-out of any process has: the instant, the process, a counter.
fn ticket(at: DateTime<Utc>) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        at.timestamp_micros(),
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

fn audit_change(
    c: &Ctx,
    action: &str,
    numbers: &[E164],
    source: &str,
    at: DateTime<Utc>,
) -> ApiResult<()> {
    crieur_dial::session::append_durable_shared(
        &c.log,
        at,
        &Record::OptOutListChange(OptOutListChange {
            action: action.into(),
            numbers: numbers.iter().map(ToString::to_string).collect(),
            source: source.into(),
            at,
            ticket: None,
            recovered: None,
        }),
    )
    .map_err(ApiError::internal)?;
    Ok(())
}

fn number(s: &str, file: &str) -> ApiResult<E164> {
    crieur_config::optouts::number(s, Path::new(file), None).map_err(|e| input_errors(&e))
}

async fn optout_add(State(ctx): State<Arc<Ctx>>, body: Bytes) -> ApiResult<Json<Value>> {
    let b: OptOutBody = json_body(&body)?;
    let raw = b
        .number
        .ok_or_else(|| ApiError::bad("malformed JSON: `number` is missing"))?;
    let n = number(&raw, "<request body: number>")?;
    let source = source_of(b.source.as_deref());
    let shown = n.to_string();
    let (new, hung_up) = write(&ctx, move |c| add_opt_outs(c, &[n], &source)).await?;
    Ok(Json(json!({
        "number": shown,
        "new": new > 0,
        "durable": true,
        "hung_up": hung_up,
    })))
}

async fn optout_check(
    State(ctx): State<Arc<Ctx>>,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    let n = number(&raw, "<request path: number>")?;
    let c = ctx.clone();
    let listed = tokio::task::spawn_blocking(move || c.store.is_opted_out(&n))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "number": raw.trim(), "opted_out": listed })))
}

async fn optout_remove(
    State(ctx): State<Arc<Ctx>>,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    let n = number(&raw, "<request path: number>")?;
    let shown = n.to_string();
    let removed = write(&ctx, move |c| {
        let removed = c.store.remove_opt_out(&n).map_err(ApiError::internal)?;
        if removed {
            audit_change(c, "remove", &[n], "api", now())?;
        }
        Ok(removed)
    })
    .await?;
    Ok(Json(json!({ "number": shown, "removed": removed })))
}

#[derive(serde::Deserialize)]
struct ListQuery {
    file: Option<String>,
}

async fn optout_import(
    State(ctx): State<Arc<Ctx>>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let file = q.file.unwrap_or_else(|| "<request body>".into());
    let path = Path::new(&file);
    let text = crieur_config::input::text_of(path, body.to_vec())
        .map_err(|e| input_errors(&InputErrors(vec![*e])))?;
    let (numbers, errors): (Vec<E164>, Vec<InputError>) =
        crieur_config::optouts::parse(path, &text);
    if !errors.is_empty() {
        return Err(input_errors(&InputErrors(errors)));
    }
    let source = format!("api: import {}", cap(&file));
    let count = numbers.len();
    let (new, hung_up) = write(&ctx, move |c| add_opt_outs(c, &numbers, &source)).await?;
    Ok(Json(json!({
        "numbers": count,
        "new": new,
        "durable": true,
        "hung_up": hung_up,
    })))
}
