//! The control API beside a running campaign: its token, the listener, the owner file, the
//! server and the background counts, started together and stopped together.
//!
//! The server runs on its own thread, on its own single-threaded tokio runtime (with its own
//! blocking pool for the store and audit writes): a request is never queued behind the dial
//! loop's work or the calls' SIP tasks on the run's runtime, and the operating system's
//! scheduler, not tokio's, shares the CPU between them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crieur_config::campaign::Campaign;
use crieur_runner::{RunHandle, SharedLog};

use crate::{api, feed::Feed, io, owner, webhook, Ctx, Error, Result, Served};

/// How the API of a run is served.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where it listens (port 0: any free port).
    pub listen: SocketAddr,
    /// The token, in a file; else `env_token` (`CRIEUR_TOKEN`); else a new one.
    pub token_file: Option<PathBuf>,
    pub env_token: Option<String>,
    /// Each call's outcome POSTed here, signed with the key in `webhook_secret_file`.
    pub webhook_url: Option<String>,
    pub webhook_secret_file: Option<PathBuf>,
}

/// The API while the run runs: its thread (stopped when dropped: the writes in progress are
/// finished, for at most [`SHUTDOWN`]) and the owner file (removed when dropped).
pub struct Live {
    /// What the run's observer feeds (recent calls, the event stream, webhooks); `None`
    /// when serving a store with no run ([`serve`]).
    pub feed: Option<Arc<Feed>>,
    /// Where it listens.
    pub address: SocketAddr,
    /// The file holding the token (`None`: taken from `CRIEUR_TOKEN`).
    pub token_file: Option<PathBuf>,
    /// The log of a store served with no run ([`serve`]): its stop record is [`Live::stop`]'s.
    served_log: Option<SharedLog>,
    _server: Server,
    _owner: owner::Guard,
}

/// How long a stopping API waits for the store and audit writes in progress.
pub const SHUTDOWN: Duration = Duration::from_secs(2);

/// The API's thread and what stops it.
struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    ctx: Arc<Ctx>,
}

impl Server {
    /// Serves `ctx` on `listener` (a bound, non-blocking std listener) and refreshes its
    /// counts every `refresh`, on a thread of its own.
    fn start(
        listener: std::net::TcpListener,
        ctx: Arc<Ctx>,
        refresh: Duration,
    ) -> std::io::Result<Server> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("crieur-api-blocking")
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let kept = ctx.clone();
        let thread = std::thread::Builder::new()
            .name("crieur-api".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "control API stopped");
                            return;
                        }
                    };
                    let counts = tokio::spawn(api::refresh_loop(ctx.clone(), refresh));
                    tokio::select! {
                        r = api::serve(listener, ctx) => {
                            if let Err(e) = r {
                                tracing::error!(error = %e, "control API stopped");
                            }
                        }
                        _ = stopped => {}
                    }
                    counts.abort();
                });
                rt.shutdown_timeout(SHUTDOWN);
            })?;
        Ok(Server {
            stop: Some(stop),
            thread: Some(thread),
            ctx: kept,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The event streams first: what the run published before it ended reaches them.
        self.ctx.end_event_streams(SHUTDOWN);
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the control API of the run of `campaign` (steered through `handle`) on `store` and
/// its shared `log`; the owner file and a generated token go in `home` (the store's
/// directory, or the node's own directory when the store is shared). On a tokio runtime.
pub async fn start(
    opts: &Options,
    campaign: &Arc<Campaign>,
    store: Arc<dyn crieur_store::Store + Send + Sync>,
    log: SharedLog,
    home: &Path,
    handle: &RunHandle,
) -> Result<Live> {
    let hook = match &opts.webhook_url {
        Some(url) => {
            let secret = match &opts.webhook_secret_file {
                Some(f) => Some(std::fs::read(f).map_err(io(format!("reading {}", f.display())))?),
                None => None,
            };
            Some(
                webhook::Webhook::start(webhook::Config {
                    url: url.clone(),
                    secret,
                    backoff: Duration::from_secs(1),
                })
                .map_err(io("starting the webhook thread"))?,
            )
        }
        None => None,
    };
    let feed = Arc::new(Feed::new(&campaign.id, hook));
    let served = Served {
        campaign: campaign.clone(),
        handle: Some(handle.clone()),
        feed: feed.clone(),
        snapshot: std::sync::Mutex::new(None),
    };
    launch(opts, vec![served], store, log, home, Some(feed))
}

/// The control API of a store no run is using (`crieur serve`): opt-outs (added, removed,
/// checked, imported), each contact's status and `explain`, imports into `campaigns`, their
/// counts, `/metrics` and the dashboard — the campaigns shown idle (`running: false`; pause,
/// resume and stop answer 409). The owner file and a generated token go in `home`, as for a
/// run: `crieur optout …` and `crieur import` go through it while it serves.
/// `header` (the `serve` command's `run-start`) is appended to `log` first, durably;
/// [`Live::stop`] appends its `run-stop`. Needs no runtime: the API has its own thread.
pub fn serve(
    opts: &Options,
    campaigns: &[Arc<Campaign>],
    store: Arc<dyn crieur_store::Store + Send + Sync>,
    log: SharedLog,
    home: &Path,
    header: &crieur_audit::Record,
) -> Result<Live> {
    refuse_if_owned(home)?;
    crieur_dial::session::append_durable_shared(&log, crate::now(), header)
        .map_err(Error::Audit)?;
    let served = campaigns
        .iter()
        .map(|c| Served {
            campaign: c.clone(),
            handle: None,
            feed: Arc::new(Feed::new(&c.id, None)),
            snapshot: std::sync::Mutex::new(None),
        })
        .collect();
    let mut live = launch(opts, served, store, log.clone(), home, None)?;
    live.served_log = Some(log);
    Ok(live)
}

fn launch(
    opts: &Options,
    served: Vec<Served>,
    store: Arc<dyn crieur_store::Store + Send + Sync>,
    log: SharedLog,
    home: &Path,
    feed: Option<Arc<Feed>>,
) -> Result<Live> {
    let (token, token_file, made) =
        owner::token(home, opts.token_file.as_deref(), opts.env_token.clone())?;
    let listener = std::net::TcpListener::bind(opts.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(io(format!(
            "the control API cannot listen on {}",
            opts.listen
        )))?;
    let address = listener
        .local_addr()
        .map_err(io("reading the control API's address"))?;
    let campaigns = served.iter().map(|s| s.campaign.id.clone()).collect();
    let ctx = Arc::new(Ctx::new(store, log, served, &token, address));
    let guard = owner::write(
        home,
        &owner::Owner {
            address,
            pid: std::process::id(),
            token_file: token_file.clone(),
            started: crate::now(),
            campaigns,
        },
        made.then(|| token_file.clone()).flatten(),
    )?;
    let server = Server::start(listener, ctx, Duration::from_secs(60))
        .map_err(io("starting the control API's thread"))?;
    Ok(Live {
        feed,
        address,
        token_file,
        served_log: None,
        _server: server,
        _owner: guard,
    })
}

impl Live {
    /// Stops serving (the writes in progress finished, the owner file removed) and, for a
    /// store served with no run, appends the stop record (`reason`), durably.
    pub fn stop(mut self, reason: &str) -> Result<()> {
        let log = self.served_log.take();
        drop(self);
        if let Some(log) = log {
            let mut log = log
                .lock()
                .map_err(|_| Error::Audit(crieur_dial::Error::Poisoned("audit log")))?;
            crieur_dial::session::record_stop(&mut log, reason, crate::now())
                .map_err(Error::Audit)?;
        }
        Ok(())
    }

    /// Serves until SIGINT or SIGTERM, then [`Live::stop`]s: the signal's name.
    pub fn serve_until_signal(self) -> Result<&'static str> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("starting a runtime for the signals"))?;
        let signal = rt
            .block_on(signalled())
            .map_err(io("listening for SIGINT and SIGTERM"))?;
        self.stop(&format!("{signal}: no longer served"))?;
        Ok(signal)
    }

    /// Where it listens and where its token is, for the terminal.
    pub fn describe(&self) -> String {
        format!(
            "control   http://{}/ (dashboard, API: /openapi.yaml, metrics: /metrics); token {}",
            self.address,
            self.token_file.as_ref().map_or_else(
                || "from CRIEUR_TOKEN".to_owned(),
                |f| format!("in {}", f.display())
            )
        )
    }
}

/// Refuses to take a store another live process owns (a `crieur serve` or a `crieur run`,
/// by the owner file in `home`): two processes must not write one audit log, and the
/// embedded store admits one process.
pub fn refuse_if_owned(home: &Path) -> Result<()> {
    match owner::find(home)? {
        owner::Found::Live(o) => Err(Error::Owned {
            home: home.display().to_string(),
            pid: o.pid,
            address: o.address,
        }),
        _ => Ok(()),
    }
}

/// The first SIGINT or SIGTERM: its name.
async fn signalled() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    })
}
