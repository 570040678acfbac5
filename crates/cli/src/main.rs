//! `crieur`: the command-line front end.
//!
//! Exit codes: 0 success; 1 an unexpected failure (I/O on output, a bug); 2 bad input (a
//! campaign or contacts file, or an argument), with every problem located; `call` 3–6 and
//! `run` 6 (a trunk fault): see `call.rs` and docs/operations.md.

mod audit;
mod call;
mod demo;
use crieur_dial::fault;
mod output;
mod run;
mod status;
mod storecmd;
mod stores;

#[global_allocator]
// glibc malloc was a third of `crieur import` (sled clones and frees tree nodes on every
// insert); mimalloc cuts that cost. See BENCHMARKS.md.
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use crieur_config::{campaign, contacts, input};

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Datelike, Utc};
use clap::{Parser, Subcommand};
use crieur_scheduler::Evaluator;

use crate::input::{InputError, InputErrors};

#[derive(Parser)]
#[command(
    name = "crieur",
    version,
    about = "Consented automated voice calls, only inside consented hours"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--store`, on the commands that use the store (before or after their subcommand).
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct StoreArg {
    /// The store directory (contacts, consent history, opt-out list, attempts).
    #[arg(
        long,
        env = "CRIEUR_STORE",
        default_value = "crieur.store",
        global = true
    )]
    pub store: PathBuf,
}

/// `--audit` and `--audit-key`, on the commands that write the audit log.
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct AuditArgs {
    /// The audit log directory (default: next to the store, `<store>.audit`).
    #[arg(long, env = "CRIEUR_AUDIT", global = true)]
    pub audit: Option<PathBuf>,
    /// The audit checkpoint signing key file (64 hex characters; default: the campaign's
    /// `[audit] signing_key_file`). Without a key no checkpoints are written.
    #[arg(long, env = "CRIEUR_AUDIT_KEY", global = true)]
    pub audit_key: Option<PathBuf>,
}

impl AuditArgs {
    fn ctx(&self) -> audit::Ctx {
        audit::Ctx {
            dir: self.audit.clone(),
            key: self.audit_key.clone(),
        }
    }
}

/// How the contacts CSV is read.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct CsvArgs {
    /// The field separator of the contacts file: one ASCII character, or `tab`.
    #[arg(long, default_value = ",", value_parser = parse_delimiter)]
    delimiter: u8,
    /// Accept national numbers (without `+`) as numbers of this region, e.g. `FR`
    /// (ISO 3166 code); without it every number must be in E.164 (`+33…`).
    #[arg(long, value_parser = parse_region)]
    default_region: Option<phonenumber::country::Id>,
}

impl CsvArgs {
    fn options(&self) -> contacts::Options {
        contacts::Options {
            delimiter: self.delimiter,
            default_region: self.default_region,
        }
    }
}

fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        _ if s.len() == 1 && s.is_ascii() && s != "\"" => Ok(s.as_bytes()[0]),
        _ => Err("expected one ASCII character such as `;`, or `tab`".into()),
    }
}

fn parse_region(s: &str) -> Result<phonenumber::country::Id, String> {
    s.to_ascii_uppercase()
        .parse()
        .map_err(|_| "expected a region code such as FR, US, GB (ISO 3166-1 alpha-2)".to_owned())
}

#[derive(Subcommand)]
enum Command {
    /// Per contact, the intervals (UTC) in which a call may start.
    Windows {
        /// The campaign file (TOML).
        #[arg(long)]
        campaign: PathBuf,
        /// The contacts file (CSV).
        #[arg(long)]
        contacts: PathBuf,
        #[command(flatten)]
        csv: CsvArgs,
        /// Start of the range, RFC 3339.
        #[arg(long, value_parser = parse_instant)]
        from: DateTime<Utc>,
        /// End of the range (exclusive), RFC 3339.
        #[arg(long, value_parser = parse_instant)]
        until: DateTime<Utc>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The decision for one contact at one instant, with every reason.
    Explain {
        /// The campaign file (TOML).
        #[arg(long)]
        campaign: PathBuf,
        /// The contacts file (CSV).
        #[arg(long)]
        contacts: PathBuf,
        #[command(flatten)]
        csv: CsvArgs,
        /// The contact's id.
        #[arg(long)]
        contact: String,
        /// The instant, RFC 3339.
        #[arg(long, value_parser = parse_instant)]
        at: DateTime<Utc>,
    },
    /// Place one call the way the campaign would: the policy decides first (no bypass), then
    /// the call's timeline is printed. Exit 0 answered, 3 refused by policy, 4 not answered.
    Call {
        /// The campaign file (TOML).
        #[arg(long)]
        campaign: PathBuf,
        /// The contact's id in the store (as imported with `crieur import`: the decision uses
        /// every consent record the store holds for it).
        #[arg(long)]
        contact: String,
        /// The store: its opt-out list is checked before the call, and an opt-out made during
        /// the call is recorded there (durably) before the confirmation plays.
        #[command(flatten)]
        store: StoreArg,
        #[command(flatten)]
        audit: AuditArgs,
    },
    /// Import contacts into the store: all-or-nothing, or with --skip-invalid the valid rows,
    /// the others written with their reasons to a rejects file.
    Import {
        /// The campaign file (TOML).
        #[arg(long)]
        campaign: PathBuf,
        /// The contacts CSV.
        #[arg(long, required_unless_present = "file")]
        contacts: Option<PathBuf>,
        /// Deprecated: the contacts CSV as a positional argument; use --contacts.
        #[arg(hide = true, conflicts_with = "contacts")]
        file: Option<PathBuf>,
        #[command(flatten)]
        csv: CsvArgs,
        /// Import the valid rows; write the others to --rejects.
        #[arg(long)]
        skip_invalid: bool,
        /// Where --skip-invalid writes the rejected rows, with their reasons.
        #[arg(long, default_value = "rejects.csv")]
        rejects: PathBuf,
        #[command(flatten)]
        store: StoreArg,
        #[command(flatten)]
        audit: AuditArgs,
    },
    /// The campaigns of a store: id, contacts, remaining, done (the store's counters).
    Campaigns {
        #[command(flatten)]
        store: StoreArg,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Where a campaign stands: contacts, remaining, done and next due from the store's
    /// counters; with --contacts (or a format other than table), every contact evaluated
    /// now: done, due now, next due, never callable in the next 400 days and why.
    Status {
        /// The campaign file (TOML).
        #[arg(long)]
        campaign: PathBuf,
        /// Evaluate every contact (reads them all).
        #[arg(long)]
        contacts: bool,
        #[command(flatten)]
        store: StoreArg,
        /// The instant to evaluate at (default: now), RFC 3339.
        #[arg(long, value_parser = parse_instant)]
        at: Option<DateTime<Utc>>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The demo: 100 contacts in five zones whose windows are open now, dialled live against
    /// a simulated callee network on loopback; then the audit log is verified and replayed.
    /// Needs nothing else; about a minute.
    Demo {
        /// Where to keep the demo's files (default: a new directory under the temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// A simulated callee network on loopback, to try a campaign without a trunk: each number
    /// behaves as the plan says (see examples/sim-plan.toml). Point the campaign's
    /// `[trunk] uri` at the address it prints. Runs until Ctrl-C.
    Sim {
        /// The plan (TOML).
        #[arg(long)]
        plan: PathBuf,
        /// A loopback address to listen on.
        #[arg(long, default_value = "127.0.0.1:5070")]
        bind: std::net::SocketAddr,
    },
    /// Run the campaign live: every contact of the campaign in the store is dialled when its
    /// consent, the legal hours, the schedule, the caps and the retry rules allow, paced by
    /// the campaign; every decision and call event goes to the audit log. Ends when every
    /// contact is done, at --until, or on SIGINT/SIGTERM (calls in progress get --drain-secs;
    /// a second signal hangs up at once).
    Run {
        /// The campaign file (TOML).
        #[arg(long)]
        campaign: PathBuf,
        #[command(flatten)]
        store: StoreArg,
        #[command(flatten)]
        audit: AuditArgs,
        /// Seconds calls in progress get to finish after the first SIGINT/SIGTERM.
        #[arg(long, default_value_t = 30)]
        drain_secs: u64,
        /// Stop placing calls at this instant (RFC 3339), then drain and exit.
        #[arg(long, value_parser = parse_instant)]
        until: Option<DateTime<Utc>>,
        /// Stop when no call is in progress and the next contact is due more than this many
        /// seconds away (default: wait for it, however long).
        #[arg(long)]
        max_idle_secs: Option<u64>,
        /// With a store several nodes share (`--store postgres://…`): seconds after which a
        /// node unseen (no claim renewed, no heartbeat) is presumed dead — its due contacts go
        /// to the others, its leases interrupted attempts. Its heartbeat keeps long calls'.
        #[arg(long, env = "CRIEUR_NODE_TIMEOUT_SECS", default_value_t = 600)]
        node_timeout_secs: u64,
        #[command(flatten)]
        control: run::ControlArgs,
    },
    /// Serve the control API of a store no run is using: opt-outs, contact status and
    /// explain, imports into --campaign, metrics, the dashboard (campaigns idle), until
    /// SIGINT/SIGTERM; `crieur optout …` and `crieur import` go through it. `crieur run` on a
    /// served store is refused: stop `serve` first.
    Serve {
        #[command(flatten)]
        store: StoreArg,
        /// The campaigns shown and imported into (TOML; repeat the flag).
        #[arg(long)]
        campaign: Vec<PathBuf>,
        #[command(flatten)]
        audit: AuditArgs,
        #[command(flatten)]
        control: run::ControlArgs,
    },
    /// The audit log: verify, replay, export, report, checkpoints.
    Audit {
        #[command(subcommand)]
        cmd: audit::AuditCmd,
    },
    /// The global opt-out list (numbers kept only as keyed hashes).
    Optout {
        #[command(flatten)]
        store: StoreArg,
        #[command(subcommand)]
        action: OptOutAction,
    },
    /// Run the real scheduling loop on a simulated clock with simulated outcomes: the dial plan
    /// on stdout (JSON lines by default), a summary per day on stderr.
    Simulate {
        /// The campaign file (TOML).
        #[arg(long)]
        campaign: PathBuf,
        /// The contacts file (CSV).
        #[arg(long)]
        contacts: PathBuf,
        #[command(flatten)]
        csv: CsvArgs,
        /// Start, RFC 3339.
        #[arg(long, value_parser = parse_instant)]
        from: DateTime<Utc>,
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// Outcome probabilities; the rest is `answered`.
        #[arg(long, default_value = "busy=0.1,no-answer=0.3,optout=0.05")]
        outcomes: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
    },
    /// Validate a campaign (and optionally its contacts) and say what is wrong.
    Check {
        /// The campaign file (TOML).
        #[arg(long)]
        campaign: PathBuf,
        /// The contacts file (CSV).
        #[arg(long)]
        contacts: Option<PathBuf>,
        #[command(flatten)]
        csv: CsvArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum OptOutAction {
    /// Add a number (E.164).
    Add {
        number: String,
        #[command(flatten)]
        audit: AuditArgs,
    },
    /// Remove a number added by mistake.
    Remove {
        number: String,
        #[command(flatten)]
        audit: AuditArgs,
    },
    /// Whether a number is on the list: exit 0 if it is, 1 if it is not (2 on a bad number).
    Check { number: String },
    /// List the entries (hash, date, source).
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Import a file of E.164 numbers, one per line (# comments allowed), e.g. Bloctel's:
    /// all lines or none, or with --skip-invalid the valid ones, the others written with
    /// their reasons to --rejects.
    Import {
        file: PathBuf,
        /// Import the valid lines; write the others to --rejects.
        #[arg(long)]
        skip_invalid: bool,
        /// Where --skip-invalid writes the rejected lines, with their reasons.
        #[arg(long, default_value = "optout-rejects.csv")]
        rejects: PathBuf,
        #[command(flatten)]
        audit: AuditArgs,
    },
}

impl OptOutAction {
    /// The audit options of the actions that change the list (and so write the log).
    fn audit(&self) -> AuditArgs {
        match self {
            OptOutAction::Add { audit, .. }
            | OptOutAction::Remove { audit, .. }
            | OptOutAction::Import { audit, .. } => audit.clone(),
            OptOutAction::Check { .. } | OptOutAction::List { .. } => AuditArgs::default(),
        }
    }
}

use output::{rfc3339, Format};

fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    let t = DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| format!("expected an RFC 3339 instant such as 2027-03-29T08:00:00Z: {e}"))?;
    if t.year() > 2099 {
        // chrono-tz's tables end in 2099: later DST changes would be silently ignored.
        return Err("expected an instant before 2100 (the time-zone tables end in 2099)".into());
    }
    Ok(t)
}

fn main() -> ExitCode {
    raise_open_file_limit();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let input = e.downcast_ref::<InputErrors>().or(match e.downcast_ref() {
                Some(crieur_runner::Error::Input(i)) => Some(i),
                _ => None,
            });
            if let Some(input) = input {
                eprintln!("{input}");
                eprintln!("{} problem(s); nothing was done.", input.0.len());
                ExitCode::from(2)
            } else {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        }
    }
}

/// Raises the soft open-file limit to the hard one, as many servers do at start: each call
/// in progress holds an RTP and an RTCP socket from its INVITE on (RFC 3264: the offerer
/// listens on its port at once), and the UAC's pool of ended calls' pairs keeps up to half
/// the soft limit — a distribution's default soft limit (1,024) would cap the call rate far
/// below what the process can carry. Failing leaves the limit as it was, with a warning
/// (on stderr: logging is not set up yet).
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` and `setrlimit` read or write one `rlimit` through a valid pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
            return;
        }
        let soft = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            eprintln!(
                "warning: the open-file limit stays at {soft} (raising it to {} failed: {})",
                lim.rlim_max,
                std::io::Error::last_os_error()
            );
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Audit { cmd } => audit::run(&cmd),
        Command::Serve {
            store,
            campaign,
            audit,
            control,
        } => run::serve_store(&store.store, &campaign, &audit.ctx(), &control),
        Command::Demo { dir } => demo::run(dir),
        Command::Sim { plan, bind } => sim(&plan, bind),
        Command::Run {
            campaign,
            store,
            audit,
            drain_secs,
            until,
            max_idle_secs,
            node_timeout_secs,
            control,
        } => {
            let c = campaign::load(&campaign)?;
            run::run(
                &c,
                &campaign,
                &store.store,
                &audit.ctx(),
                &control,
                crieur_runner::RunOptions {
                    drain: std::time::Duration::from_secs(drain_secs),
                    until,
                    max_idle: max_idle_secs.map(std::time::Duration::from_secs),
                    scope: crieur_runner::Scope::Campaign,
                    node_timeout: std::time::Duration::from_secs(node_timeout_secs),
                },
            )
        }
        Command::Windows {
            campaign,
            contacts,
            csv,
            from,
            until,
            format,
        } => windows(&campaign, &contacts, &csv.options(), from, until, format),
        Command::Explain {
            campaign,
            contacts,
            csv,
            contact,
            at,
        } => explain(&campaign, &contacts, &csv.options(), &contact, at),
        Command::Check {
            campaign,
            contacts,
            csv,
        } => check(&campaign, contacts.as_deref(), &csv.options()),
        Command::Import {
            campaign,
            contacts,
            file,
            csv,
            skip_invalid,
            rejects,
            store,
            audit,
        } => {
            if file.is_some() {
                eprintln!("warning: the contacts file as a positional argument is deprecated; use --contacts");
            }
            let contacts = contacts.or(file).unwrap_or_default();
            storecmd::import(
                &campaign,
                &contacts,
                &csv.options(),
                &store.store,
                skip_invalid,
                &rejects,
                &audit.ctx(),
            )
        }
        Command::Campaigns { store, format } => status::campaigns(&store.store, format),
        Command::Status {
            campaign,
            store,
            at,
            format,
            contacts,
        } => {
            let c = campaign::load(&campaign)?;
            let at = at.unwrap_or_else(audit::now);
            status::status(&c, &store.store, at, format, contacts)
        }
        Command::Optout { store, action } => {
            storecmd::optout(&store.store, &action, &action.audit().ctx())
        }
        Command::Simulate {
            campaign,
            contacts,
            csv,
            from,
            days,
            outcomes,
            seed,
            format,
        } => simulate(
            &campaign,
            &contacts,
            &csv.options(),
            from,
            days,
            &outcomes,
            seed,
            format,
        ),
        Command::Call {
            campaign,
            contact,
            store,
            audit,
        } => {
            let campaign_path = campaign;
            let campaign = campaign::load(&campaign_path)?;
            call::run(
                &campaign,
                &campaign_path,
                &contact,
                &store.store,
                &audit.ctx(),
            )
        }
    }
}

/// `crieur sim`: the simulated callee network, until Ctrl-C.
fn sim(plan: &Path, bind: std::net::SocketAddr) -> anyhow::Result<ExitCode> {
    if !bind.ip().is_loopback() {
        return Err(InputErrors(vec![InputError::new(
            Path::new("--bind"),
            "the simulator listens on loopback only (127.0.0.1 or ::1)",
        )
        .value(bind.to_string())])
        .into());
    }
    let text = input::read_text(plan, "plan")?;
    let plan_v = crieur_sim::Plan::from_toml(&text).map_err(|e| {
        // With its source (the TOML parser's own message).
        let why = format!("{:#}", anyhow::Error::from(e));
        InputErrors(vec![InputError::new(plan, why)])
    })?;
    let listed = plan_v.numbers.len();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let net = crieur_sim::Network::start(bind, plan_v).await?;
        println!(
            "simulated callees on sip:{} ({} numbers with their own behaviour); Ctrl-C to stop",
            net.addr(),
            listed
        );
        tokio::signal::ctrl_c().await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn windows(
    campaign: &Path,
    contacts: &Path,
    opts: &contacts::Options,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    format: Format,
) -> anyhow::Result<ExitCode> {
    if until <= from {
        return Err(InputErrors(vec![InputError::new(
            Path::new("--until"),
            "expected an instant after --from",
        )
        .value(rfc3339(until))])
        .into());
    }
    let (campaign, loaded) = crieur_config::load_both(campaign, contacts, opts)?;
    let mut ev = Evaluator::batch(&campaign.policy);
    let stdout = std::io::stdout();
    let out = BufWriter::with_capacity(1 << 16, stdout.lock());
    // The length is for people; machines have start and end.
    let columns: &[(&str, usize)] = &[("contact", 20), ("start", 21), ("end", 21), ("length", 9)];
    let columns = match format {
        Format::Table => columns,
        _ => &columns[..3],
    };
    let mut rows = output::Rows::new(out, format, columns)?;
    for c in &loaded.contacts {
        for w in ev.windows(c, from, until) {
            let len = (w.end - w.start).num_seconds();
            rows.row(&[
                c.id().as_str().into(),
                rfc3339(w.start).into(),
                rfc3339(w.end).into(),
                format!("{:>3}h{:02}m{:02}s", len / 3600, len % 3600 / 60, len % 60).into(),
            ])?;
        }
    }
    rows.finish().context("writing the windows")?;
    Ok(ExitCode::SUCCESS)
}

fn explain(
    campaign: &Path,
    contacts: &Path,
    opts: &contacts::Options,
    id: &str,
    at: DateTime<Utc>,
) -> anyhow::Result<ExitCode> {
    let (campaign, loaded) = crieur_config::load_both(campaign, contacts, opts)?;
    let Some(c) = loaded.contacts.iter().find(|c| c.id().as_str() == id) else {
        return Err(
            InputErrors(vec![InputError::new(contacts, "no contact with this id")
                .field("id")
                .value(id)])
            .into(),
        );
    };
    print!("{}", crieur_config::text::explain(&campaign, c, at)?);
    Ok(ExitCode::SUCCESS)
}

fn check(
    campaign_path: &Path,
    contacts_path: Option<&Path>,
    opts: &contacts::Options,
) -> anyhow::Result<ExitCode> {
    let campaign = campaign::load(campaign_path);
    let loaded = contacts_path.map(|p| contacts::load(p, opts));
    let mut errors = Vec::new();
    if let Ok(c) = &campaign {
        println!(
            "{}: ok: {}",
            campaign_path.display(),
            crieur_config::text::campaign_summary(c)
        );
        for w in c.warnings() {
            println!("warning: {}: {w}", campaign_path.display());
        }
    }
    let campaign = match campaign {
        Ok(c) => Some(c),
        Err(e) => {
            errors.extend(e.0);
            None
        }
    };
    if let (Some(path), Some(loaded)) = (contacts_path, loaded) {
        match loaded {
            Ok(l) => {
                print!("{}", crieur_config::text::contacts_summary(path, &l));
                if let Some(campaign) = &campaign {
                    let mut never = crieur_config::text::NeverWarnings::default();
                    never.add(campaign, &l.contacts, audit::now());
                    print!("{}", never.text());
                }
                print!("{}", crieur_config::text::zone_warnings(&l.contacts));
            }
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(InputErrors(errors).into())
    }
}

#[allow(clippy::too_many_arguments)]
fn simulate(
    campaign: &Path,
    contacts: &Path,
    opts: &contacts::Options,
    from: DateTime<Utc>,
    days: u32,
    outcomes: &str,
    seed: u64,
    format: Format,
) -> anyhow::Result<ExitCode> {
    use crieur_dial::{OutcomeMix, SimConfig};
    let mix = OutcomeMix::parse(outcomes).map_err(|e| {
        InputErrors(vec![InputError::new(
            Path::new("--outcomes"),
            e.to_string(),
        )
        .value(outcomes)])
    })?;
    let (c, loaded) = crieur_config::load_both(campaign, contacts, opts)?;
    let retry = c.retry.policy();
    let cfg = SimConfig {
        from,
        days,
        mix,
        seed,
        caps: c.caps.clone(),
        retry,
        pacing: c.effective_pacing(),
        ring_timeout: c.ring_timeout,
        message_length: c.message_length,
    };
    let ids: Vec<String> = loaded.contacts.iter().map(|c| c.id().to_string()).collect();
    let events = crieur_dial::simulate(loaded.contacts, &c.policy, &cfg);
    let stdout = std::io::stdout();
    let mut rows = output::Rows::new(
        BufWriter::new(stdout.lock()),
        format,
        &[
            ("contact", 20),
            ("instant", 21),
            ("attempt", 7),
            ("outcome", 0),
        ],
    )?;
    for e in &events {
        rows.row(&[
            ids[e.contact].as_str().into(),
            rfc3339(e.at).into(),
            e.attempt.into(),
            e.outcome.as_str().into(),
        ])?;
    }
    rows.finish()?;
    eprint!("{}", crieur_dial::sim::per_day_table(&events));
    eprintln!(
        "{} attempts to {} contacts over {} days (seed {seed})",
        events.len(),
        ids.len(),
        days
    );
    Ok(ExitCode::SUCCESS)
}
