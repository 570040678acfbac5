//! The control API beside a running campaign: its token, the listener, the owner file, the
//! server and the background counts, started together and stopped together.

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

/// The API while the run runs: its tasks (aborted when dropped) and the owner file (removed
/// when dropped).
pub struct Live {
    /// What the run's observer feeds (recent calls, the event stream, webhooks).
    pub feed: Arc<Feed>,
    /// Where it listens.
    pub address: SocketAddr,
    /// The file holding the token (`None`: taken from `CRIEUR_TOKEN`).
    pub token_file: Option<PathBuf>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _owner: owner::Guard,
}

impl Drop for Live {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
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
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
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
    let server = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            if let Err(e) = api::serve(listener, ctx).await {
                tracing::error!(error = %e, "control API stopped");
            }
        }
    });
    let counts = tokio::spawn(api::refresh_loop(ctx, Duration::from_secs(60)));
    Ok(Live {
        feed,
        address,
        token_file,
        tasks: vec![server, counts],
        _owner: guard,
    })
}
