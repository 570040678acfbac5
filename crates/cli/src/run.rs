//! `crieur run` at the terminal: the run itself is `crieur_runner` (the core, the store, the
//! audit log, the calls); this module opens what it works on, turns SIGINT/SIGTERM into its
//! stop orders, shows its events (a progress line on a terminal, log lines otherwise) and
//! picks the exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crieur_runner::{Counters, Event, RunOptions, Setup, Summary};

use crate::campaign::Campaign;

/// The control API of `crieur run` (`docs/operations.md`).
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ControlArgs {
    /// Where the control API, metrics and dashboard listen (port 0: any free port; the
    /// address is printed and written to <store>/owner.json — with a PostgreSQL store, to
    /// owner.json in this node's audit directory).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// The API's token, in a file (else CRIEUR_TOKEN, else a new one in
    /// <store>/control.token — with a PostgreSQL store, in this node's audit directory —
    /// readable by this user only).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// POST each call's outcome (JSON) to this http:// URL, retried, signed when
    /// --webhook-secret-file is given (header X-Crieur-Signature: sha256=HMAC).
    #[arg(long)]
    webhook_url: Option<String>,
    /// The webhooks' HMAC-SHA-256 key, in a file.
    #[arg(long, requires = "webhook_url")]
    webhook_secret_file: Option<PathBuf>,
    /// Serve no control API (no metrics, dashboard, webhooks; ops commands wait for the
    /// run to end).
    #[arg(long, conflicts_with_all = ["token_file", "webhook_url"])]
    no_control: bool,
}

impl Default for ControlArgs {
    /// Loopback, any free port, a generated token, no webhook.
    fn default() -> Self {
        ControlArgs {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            token_file: None,
            webhook_url: None,
            webhook_secret_file: None,
            no_control: false,
        }
    }
}

/// Runs the campaign until every contact is done, `until`, or a signal.
pub fn run(
    campaign: &Campaign,
    campaign_path: &Path,
    store_path: &Path,
    actx: &crate::audit::Ctx,
    control: &ControlArgs,
    opts: RunOptions,
) -> anyhow::Result<ExitCode> {
    // A store served (`crieur serve`) or run by another process: refused, saying by whom.
    crieur_control::live::refuse_if_owned(&crate::stores::home(store_path, actx))?;
    let store = crate::stores::open(store_path, false)?;
    let s = drive(
        campaign,
        campaign_path,
        store,
        store_path,
        actx,
        opts,
        (!control.no_control).then_some(control),
    )?;
    println!("stopped   {}", s.reason);
    println!("summary   {} calls placed", s.counters.dialled);
    for (o, n) in &s.counters.by_outcome {
        println!("  {o:<34} {n:>6}");
    }
    println!(
        "audit     {} (verify: crieur audit verify {0}; replay: crieur audit replay {0})",
        crate::audit::dir_for(store_path, actx.dir.as_deref()).display()
    );
    if let Some(why) = &s.trunk_end {
        eprintln!("trunk     {why}");
        if s.counters.trunk_refused > 0 {
            eprintln!(
                "          {} call(s) refused by the trunk before anything rang: no attempt used, dialled again on the next run",
                s.counters.trunk_refused
            );
        }
        return Ok(ExitCode::from(crate::call::EXIT_TRUNK_FAULT));
    }
    Ok(ExitCode::SUCCESS)
}

/// The run (`crieur run`, or `crieur call`: one contact) on its own runtime, with the
/// signals as stop orders and the events on the terminal.
pub fn drive(
    campaign: &Campaign,
    campaign_path: &Path,
    store: crate::stores::Shared,
    store_path: &Path,
    actx: &crate::audit::Ctx,
    opts: RunOptions,
    control: Option<&ControlArgs>,
) -> anyhow::Result<Summary> {
    let one = matches!(opts.scope, crieur_runner::Scope::One(_));
    let prepared = crieur_runner::prepare(campaign)?;
    let log = actx.open(store_path, Some(campaign))?;
    let log = Arc::new(std::sync::Mutex::new(log));
    let shared_store: Arc<dyn crieur_store::Store + Send + Sync> = store.clone();
    recover_opt_outs(&*shared_store, &log)?;
    let setup = Setup {
        campaign: Arc::new(campaign.clone()),
        header: crieur_runner::header::header(
            if one { "call" } else { "run" },
            Some((campaign, campaign_path)),
        )?,
        store,
        log: log.clone(),
        audit_dir: crate::audit::dir_for(store_path, actx.dir.as_deref()),
        prepared,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (handle, rx) = crieur_runner::control(CONTROL_QUEUE);
    let progress = Progress::new(one);
    let home = crate::stores::local_dir(store_path, &setup.audit_dir);
    let api = match control {
        Some(a) => Some(rt.block_on(crieur_control::live::start(
            &a.options(),
            &setup.campaign,
            shared_store,
            log,
            &home,
            &handle,
        ))?),
        None => None,
    };
    api.iter().for_each(|a| println!("{}", a.describe()));
    let feed = api.as_ref().and_then(|a| a.feed.clone());
    let mut observer = |e: &Event| {
        progress.event(e, one);
        if let Some(f) = &feed {
            f.observe(e);
        }
    };
    let r = rt.block_on(async {
        let signals = tokio::spawn(crieur_runner::control::forward_signals(handle));
        let r = crieur_runner::run(setup, opts, rx, &mut observer).await;
        signals.abort();
        r
    });
    // The owner file goes (a clean exit), then the API.
    drop(api);
    Ok(r?)
}

/// Closes the window a crash may have left between an API opt-out's two writes (see
/// [`crieur_runner::ops::recover_opt_outs`]), saying so when it did.
fn recover_opt_outs(
    store: &dyn crieur_store::Store,
    log: &std::sync::Mutex<crieur_audit::AuditLog>,
) -> anyhow::Result<()> {
    let r = crieur_runner::ops::recover_opt_outs(store, log, crieur_runner::now())?;
    if !r.is_empty() {
        println!(
            "recovered {} opt-out(s) into the audit log and {} into the store (a crash between their two writes)",
            r.audited.len(),
            r.stored.len()
        );
    }
    Ok(())
}

/// Orders waiting for the run at most (more: the API answers 503).
const CONTROL_QUEUE: usize = 64;

impl ControlArgs {
    fn options(&self) -> crieur_control::live::Options {
        crieur_control::live::Options {
            listen: self.listen,
            token_file: self.token_file.clone(),
            env_token: std::env::var("CRIEUR_TOKEN").ok(),
            webhook_url: self.webhook_url.clone(),
            webhook_secret_file: self.webhook_secret_file.clone(),
        }
    }
}

/// `crieur serve`: the control API of a store no run is using, until SIGINT or SIGTERM.
pub fn serve_store(
    store_path: &Path,
    campaigns: &[PathBuf],
    actx: &crate::audit::Ctx,
    control: &ControlArgs,
) -> anyhow::Result<ExitCode> {
    let campaigns = campaigns
        .iter()
        .map(|c| crate::campaign::load(c).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let home = crate::stores::home(store_path, actx);
    crieur_control::live::refuse_if_owned(&home)?;
    let store = crate::stores::open(store_path, false)?;
    let log = Arc::new(std::sync::Mutex::new(actx.open(store_path, None)?));
    recover_opt_outs(&*store, &log)?;
    let header = crieur_runner::header::header("serve", None)?;
    let api =
        crieur_control::live::serve(&control.options(), &campaigns, store, log, &home, &header)?;
    println!("{}", api.describe());
    println!("stopped   {}", api.serve_until_signal()?);
    Ok(ExitCode::SUCCESS)
}

/// A progress line on a terminal (indicatif), plain log lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_plain: std::sync::Mutex<Option<std::time::Instant>>,
    /// No progress line (a one-contact run reports its call itself).
    quiet: bool,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        let bar = (!quiet && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(Duration::from_millis(250));
            b
        });
        Progress {
            bar,
            last_plain: std::sync::Mutex::new(None),
            quiet,
        }
    }

    /// One of the run's events, on the terminal: an alert on stderr (a one-contact run
    /// reports its late opt-out itself), the others on stdout.
    fn event(&self, e: &Event, one: bool) {
        let line = crieur_runner::text::event_line(e, crate::audit::now());
        match (e, line) {
            (Event::Progress(c), _) => self.show(c),
            (Event::LateOptOut { .. }, _) if one => {}
            (Event::Breaker(_) | Event::LateOptOut { .. }, Some(l)) => self.warn(&l),
            (_, Some(l)) => self.println(&l),
            (_, None) => {}
        }
    }

    fn show(&self, c: &Counters) {
        if self.quiet {
            return;
        }
        let line = crieur_runner::text::counters_line(c);
        match &self.bar {
            Some(b) => b.set_message(line),
            None => {
                let Ok(mut last) = self.last_plain.lock() else {
                    return;
                };
                #[allow(clippy::disallowed_methods)]
                let t = std::time::Instant::now();
                if last.is_none_or(|l| t.duration_since(l) >= Duration::from_secs(10)) {
                    *last = Some(t);
                    println!("progress  {line}");
                }
            }
        }
    }

    fn println(&self, s: &str) {
        match &self.bar {
            Some(b) => b.println(s),
            None => println!("{s}"),
        }
    }

    /// A line the operator must see: on stderr (above the progress line on a terminal).
    fn warn(&self, s: &str) {
        match &self.bar {
            Some(b) => b.println(s),
            None => eprintln!("{s}"),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
