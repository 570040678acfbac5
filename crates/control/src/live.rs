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

use crate::{api, feed::Feed, io, owner, webhook, Ctx, Result, Served};

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
    /// What the run's observer feeds (recent calls, the event stream, webhooks).
    pub feed: Arc<Feed>,
    /// Where it listens.
    pub address: SocketAddr,
    /// The file holding the token (`None`: taken from `CRIEUR_TOKEN`).
    pub token_file: Option<PathBuf>,
    _server: Server,
    _owner: owner::Guard,
}

/// How long a stopping API waits for the store and audit writes in progress.
pub const SHUTDOWN: Duration = Duration::from_secs(2);

/// The API's thread and what stops it.
struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
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
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
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
    let (token, token_file, made) =
        owner::token(home, opts.token_file.as_deref(), opts.env_token.clone())?;
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
    let listener = std::net::TcpListener::bind(opts.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(io(format!(
            "the control API cannot listen on {}",
            opts.listen
        )))?;
    let address = listener
        .local_addr()
        .map_err(io("reading the control API's address"))?;
    let feed = Arc::new(Feed::new(&campaign.id, hook));
    let ctx = Arc::new(Ctx::new(
        store,
        log,
        vec![Served {
            campaign: campaign.clone(),
            handle: handle.clone(),
            feed: feed.clone(),
            snapshot: std::sync::Mutex::new(None),
        }],
        &token,
        address,
    ));
    let guard = owner::write(
        home,
        &owner::Owner {
            address,
            pid: std::process::id(),
            token_file: token_file.clone(),
            started: crate::now(),
            campaigns: vec![campaign.id.clone()],
        },
        made.then(|| token_file.clone()).flatten(),
    )?;
    let server = Server::start(listener, ctx, Duration::from_secs(60))
        .map_err(io("starting the control API's thread"))?;
    Ok(Live {
        feed,
        address,
        token_file,
        _server: server,
        _owner: guard,
    })
}
