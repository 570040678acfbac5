//! `crieur run` at the terminal: the run itself is `crieur_runner` (the core, the store, the
//! audit log, the calls); this module opens what it works on, turns SIGINT/SIGTERM into its
//! stop orders, shows its events (a progress line on a terminal, log lines otherwise) and
//! picks the exit code.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use crieur_engine::{BreakerState, Cause};
use crieur_runner::{Counters, Event, RunHandle, RunOptions, Setup, Summary};

use crate::campaign::Campaign;

/// Runs the campaign until every contact is done, `until`, or a signal.
pub fn run(
    campaign: &Campaign,
    campaign_path: &Path,
    store_path: &Path,
    actx: &crate::audit::Ctx,
    opts: RunOptions,
) -> anyhow::Result<ExitCode> {
    let store = crate::stores::open(store_path, false)?;
    let s = drive(campaign, campaign_path, store, store_path, actx, opts)?;
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
) -> anyhow::Result<Summary> {
    let one = matches!(opts.scope, crieur_runner::Scope::One(_));
    let prepared = crieur_runner::prepare(campaign)?;
    let log = actx.open(store_path, Some(campaign))?;
    let setup = Setup {
        campaign: Arc::new(campaign.clone()),
        header: crieur_runner::header::header(
            if one { "call" } else { "run" },
            Some((campaign, campaign_path)),
        )?,
        store,
        log,
        audit_dir: crate::audit::dir_for(store_path, actx.dir.as_deref()),
        prepared,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (handle, control) = crieur_runner::control(16);
    let progress = Progress::new(one);
    let mut observer = |e: &Event| progress.event(e, one);
    Ok(rt.block_on(async {
        let signals = tokio::spawn(forward_signals(handle));
        let r = crieur_runner::run(setup, opts, control, &mut observer).await;
        signals.abort();
        r
    })?)
}

/// SIGINT and SIGTERM as stop orders: the first drains the calls in progress, the next hangs
/// them up. Each is one stream registered for the whole run: a signal that arrives while the
/// run is busy is kept, never missed.
async fn forward_signals(handle: RunHandle) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    loop {
        let s = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        if handle.stop(s).await.is_err() {
            return Ok(());
        }
    }
}

/// The breaker's transition, for the operator.
fn breaker_line(t: &crieur_engine::Transition) -> String {
    let why = match &t.cause {
        Cause::Fault(f) => crate::fault::describe(f),
        c => c.code().to_owned(),
    };
    match t.to {
        BreakerState::Open { until } => format!(
            "breaker   OPEN: dialling paused until {} after {} trunk fault(s) in a row; last: {why}",
            until.to_rfc3339(),
            t.consecutive_faults
        ),
        BreakerState::HalfOpen => format!("breaker   half-open: one probe call ({why})"),
        BreakerState::Closed => format!("breaker   closed: dialling resumes ({why})"),
        BreakerState::Stopped => format!(
            "breaker   STOPPED: {why}. Dialling stops until an operator fixes the trunk settings and runs again; no contact's attempt was used by this fault"
        ),
    }
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

    /// One of the run's events, on the terminal.
    fn event(&self, e: &Event, one: bool) {
        match e {
            Event::Recovered(r) => println!("recovered {r}"),
            Event::Breaker(t) => self.warn(&breaker_line(t)),
            Event::Idle { next_due } => self.println(&format!(
                "idle      no contact is dialable now; the next becomes due at {} (in {})",
                crate::output::rfc3339(*next_due),
                crate::output::human_duration(*next_due - crate::audit::now())
            )),
            Event::Stopping {
                reason,
                in_flight,
                drain,
                ordered: true,
            } => self.println(&format!(
                "stopping  {reason}: no new calls; {in_flight} in progress get up to {} s (again to hang up now)",
                drain.as_secs()
            )),
            Event::HangingUp { ordered: true } => {
                self.println("stopping  now: hanging up every call");
            }
            Event::LateOptOut { number, recorded } if !one => eprintln!(
                "ALERT: {number} pressed the opt-out key but it could not be recorded during the call; {}",
                if *recorded { "it is now recorded" } else { "it is STILL NOT recorded: add it with `crieur optout add`" }
            ),
            Event::Progress(c) => self.show(c),
            _ => {}
        }
    }

    fn line(c: &Counters, idle_until: Option<DateTime<Utc>>) -> String {
        let mut s = format!(
            "dialled {} · answered {} · opted out {} · failed {} · remaining {} · {:.1} calls/s · {} in progress",
            c.dialled, c.answered, c.opted_out, c.failed, c.remaining, c.calls_per_second, c.in_flight
        );
        if c.trunk_refused > 0 {
            s.push_str(&format!(" · {} refused by the trunk", c.trunk_refused));
        }
        if c.paused {
            s.push_str(" · paused");
        }
        if let Some(n) = idle_until {
            s.push_str(&format!(" · idle until {}", crate::output::rfc3339(n)));
        }
        if let Some(t) = &c.trunk {
            s.push_str(&format!(" · {t}"));
        }
        s
    }

    fn show(&self, c: &Counters) {
        if self.quiet {
            return;
        }
        let line = Self::line(c, c.idle_until);
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
