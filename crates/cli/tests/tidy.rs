//! Tidy: the architecture's invariants, checked over the workspace's sources and manifests
//! (after rust-analyzer's `xtask/src/tidy.rs`). ARCHITECTURE.md says the core crates are
//! sans-IO — time is an input, no files, sockets, threads or async runtime — and that the
//! crates depend on each other one way only; this test fails when that stops being true.
//!
//! * Core crates: `scheduler`, `sip`, `engine`, `audit`, `store`, `media`, `dial`, `config`. Their
//!   library sources (`src/`, comments and `#[cfg(test)]` modules aside) must not read a clock (`now()`,
//!   `Instant::now`, `.elapsed()`, cron's `upcoming`), open files, open sockets, spawn
//!   threads or tasks, or use tokio — except the files listed in [`EDGES`], the I/O edges by
//!   design, each for what it is listed for (and an entry that is no longer needed fails too).
//! * Their manifests must not depend on an async runtime or socket crate (except media's SIP
//!   and RTP edges, [`IO_DEPS`]) nor turn on chrono's `clock` feature.
//! * Internal dependencies go one way ([`DEPENDS_ON`]); the test harness
//!   (`crieur-test-support`) is nobody's normal dependency.
//! * No crate has its own `clippy.toml` (it would hide the root one, with the clock lint).
//!
//! The checks are tested on synthetic sources and a synthetic workspace below: each
//! violation they must catch is planted and must be reported.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use regex::Regex;

/// What a core crate's code must not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Io {
    Clock,
    Files,
    Sockets,
    Threads,
    Tokio,
}

impl Io {
    const ALL: [Io; 5] = [Io::Clock, Io::Files, Io::Sockets, Io::Threads, Io::Tokio];

    fn what(self) -> &'static str {
        match self {
            Io::Clock => "reads a clock (time is an input: take `now` as an argument)",
            Io::Files => "opens files",
            Io::Sockets => "opens sockets",
            Io::Threads => "spawns threads or tasks",
            Io::Tokio => "uses tokio",
        }
    }

    fn pattern(self) -> Regex {
        let p = match self {
            Io::Clock => {
                r"\bnow\s*\(\s*\)|\b(?:Instant|SystemTime)::now\b|\.elapsed\s*\(\s*\)|\.upcoming(?:_owned)?\s*\(|\bUNIX_EPOCH\.elapsed\b"
            }
            Io::Files => {
                r"\bstd::fs\b|\bfs::\w|\bFile::(?:open|create)\b|\bOpenOptions\b|\b\w+::open\s*\("
            }
            Io::Sockets => {
                r"\b(?:TcpStream|TcpListener|UdpSocket|UnixStream|UnixListener|UnixDatagram)\b|\bsocket2\b|\bstd::net::(?:Tcp|Udp)"
            }
            Io::Threads => {
                r"\bthread::(?:spawn|scope|Builder)\b|\btokio::(?:spawn|task)\b|\bspawn_blocking\b|\brayon\b"
            }
            Io::Tokio => r"\btokio\b",
        };
        Regex::new(p).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The core crates (directories under `crates/`).
const CORE: [&str; 9] = [
    "outcome",
    "scheduler",
    "sip",
    "engine",
    "audit",
    "store",
    "media",
    "dial",
    "config",
];

/// Files of core crates that are I/O edges by design, what each may do, and why.
const EDGES: &[(&str, &[Io], &str)] = &[
    (
        "crates/audit/src/lib.rs",
        &[Io::Files],
        "read_all: reads the log's segments",
    ),
    (
        "crates/audit/src/log.rs",
        &[Io::Files],
        "the log writer: segment files, fsync",
    ),
    (
        "crates/audit/src/verify.rs",
        &[Io::Files],
        "reads the segments it verifies",
    ),
    (
        "crates/store/src/lib.rs",
        &[Io::Files, Io::Threads],
        "the sled backend: the store's directory; imports on every core",
    ),
    (
        "crates/store/src/pg.rs",
        &[Io::Threads],
        "the PostgreSQL backend: each call on a thread of its own (the client runs its own runtime)",
    ),
    (
        "crates/config/src/input.rs",
        &[Io::Files],
        "read_text: reads a text input file (campaign, plan, opt-out list)",
    ),
    (
        "crates/config/src/campaign.rs",
        &[Io::Files],
        "the trunk password file (read when calling) and the audit signing key (checked at load)",
    ),
    (
        "crates/config/src/contacts.rs",
        &[Io::Files, Io::Threads],
        "reads the contacts file; validates its rows on every core",
    ),
    (
        "crates/config/src/split.rs",
        &[Io::Files, Io::Threads],
        "streams a contacts file too large for memory into parts on disk, reads them back and validates them on every core",
    ),
    (
        "crates/media/src/audio.rs",
        &[Io::Files],
        "loads the recordings (WAV files)",
    ),
    (
        "crates/media/src/uac.rs",
        &[Io::Clock, Io::Sockets, Io::Threads, Io::Tokio],
        "the SIP user agent (crieur-sip's endpoint driven on tokio): places calls, times them",
    ),
    (
        "crates/media/src/listen.rs",
        &[Io::Sockets, Io::Threads, Io::Tokio],
        "the TLS listener beside the UAC: accepts the connections a trunk opens, each handshake in a task",
    ),
    (
        "crates/media/src/session.rs",
        &[Io::Sockets],
        "sends RTCP reports on the sockets the UAC opened and passes in (it reads no clock)",
    ),
    (
        "crates/media/src/pacer.rs",
        &[Io::Clock, Io::Sockets, Io::Threads, Io::Tokio],
        "the RTP sender threads, paced by the monotonic clock",
    ),
    (
        "crates/media/src/mmsg.rs",
        &[Io::Sockets, Io::Tokio],
        "the SIP loop's batched reads and sends (recvmmsg/sendmmsg) on the UAC's tokio UDP socket",
    ),
];

/// Internal dependencies (normal, not dev) each crate may have; `cli` may have any.
const DEPENDS_ON: &[(&str, &[&str])] = &[
    // One outcome value shared by media, the store, the engine and the audit log.
    ("outcome", &[]),
    ("scheduler", &[]),
    ("sip", &[]),
    // The SIP edge drives crieur-sip's endpoint.
    ("media", &["sip", "outcome"]),
    ("store", &["scheduler", "outcome"]),
    ("engine", &["scheduler", "outcome"]),
    // Replay re-derives caps and retries with the engine's own code.
    ("audit", &["scheduler", "engine", "outcome"]),
    ("sim", &["media", "sip"]),
    // The dial protocol keeps the store and the audit log in step around each call.
    (
        "dial",
        &["scheduler", "engine", "audit", "store", "media", "outcome"],
    ),
    // Validation checks recordings (media), caps and retries (engine), signing keys (audit).
    ("config", &["scheduler", "engine", "media", "audit"]),
    // The live driver (tokio): the dial core against the store, the log and the SIP UAC,
    // the campaign as configured; the trunk located by RFC 3263 in crieur-sip's terms
    // (`locate::Srv`, `Transport`).
    (
        "runner",
        &[
            "scheduler",
            "engine",
            "audit",
            "store",
            "media",
            "dial",
            "config",
            "sip",
        ],
    ),
    // The control plane (axum): serves a run's handle, the store and the log.
    (
        "control",
        &["scheduler", "audit", "store", "dial", "config", "runner"],
    ),
];

/// Async runtimes and socket crates: no core crate depends on them …
const IO_CRATES: [&str; 6] = [
    "tokio",
    "tokio-util",
    "async-std",
    "mio",
    "socket2",
    "rsipstack",
];
/// … except media, for its SIP and RTP edges (`uac.rs`, `pacer.rs`).
const IO_DEPS: &[(&str, &str)] = &[
    ("media", "tokio"),
    ("media", "tokio-util"),
    ("media", "socket2"),
];

/// One violation, where it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Finding {
    file: String,
    line: usize,
    what: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.file, self.line, self.what)
        } else {
            write!(f, "{}: {}", self.file, self.what)
        }
    }
}

/// A line without its `//` comment (a `//` inside a string literal is kept).
fn code_of(line: &str) -> &str {
    let (mut in_str, mut escaped) = (false, false);
    let b = line.as_bytes();
    for i in 0..b.len() {
        match b[i] {
            _ if escaped => escaped = false,
            b'\\' if in_str => escaped = true,
            b'"' => in_str = !in_str,
            b'/' if !in_str && b.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The I/O kinds used by a core source file, each with the lines it is used on. Stops at the
/// first `#[cfg(test)]` (test modules close the file by convention here).
fn io_used(text: &str) -> Vec<(Io, usize, String)> {
    let rules: Vec<(Io, Regex)> = Io::ALL.iter().map(|&io| (io, io.pattern())).collect();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim() == "#[cfg(test)]" {
            break;
        }
        let code = code_of(line);
        for (io, re) in &rules {
            if let Some(m) = re.find(code) {
                out.push((*io, i + 1, m.as_str().to_owned()));
            }
        }
    }
    out
}

/// The violations in one core source file, given what the file may do.
fn check_source(file: &str, text: &str, allowed: &[Io]) -> Vec<Finding> {
    io_used(text)
        .into_iter()
        .filter(|(io, _, _)| !allowed.contains(io))
        .map(|(io, line, found)| Finding {
            file: file.to_owned(),
            line,
            what: format!("core code {} (`{found}`)", io.what()),
        })
        .collect()
}

/// Exemptions for this file that its code no longer needs (keep the list honest).
fn stale_exemptions(file: &str, text: &str, allowed: &[Io]) -> Vec<Finding> {
    let used: BTreeSet<Io> = io_used(text).into_iter().map(|(io, _, _)| io).collect();
    allowed
        .iter()
        .filter(|io| !used.contains(io))
        .map(|io| Finding {
            file: file.to_owned(),
            line: 0,
            what: format!(
                "listed in EDGES as an I/O edge that {}, but it no longer does: remove the exemption",
                io.what()
            ),
        })
        .collect()
}

fn features_of(spec: &toml::Value) -> Vec<String> {
    spec.get("features")
        .and_then(toml::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The violations in a crate's manifest (`krate`: its directory under `crates/`).
fn check_manifest(file: &str, krate: &str, manifest: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut find = |what: String| {
        out.push(Finding {
            file: file.to_owned(),
            line: 0,
            what,
        })
    };
    let table: toml::Table = match manifest.parse() {
        Ok(t) => t,
        Err(e) => {
            find(format!("not TOML: {e}"));
            return out;
        }
    };
    let Some(deps) = table.get("dependencies").and_then(toml::Value::as_table) else {
        return out;
    };
    let core = CORE.contains(&krate);
    for (name, spec) in deps {
        if name == "crieur-test-support" {
            find(format!(
                "{krate} depends on test-support: the test harness is a dev-dependency only"
            ));
            continue;
        }
        if let Some(to) = name.strip_prefix("crieur-") {
            if krate != "cli" {
                let allowed = DEPENDS_ON
                    .iter()
                    .find(|(k, _)| *k == krate)
                    .map_or(&[][..], |(_, a)| *a);
                if !allowed.contains(&to) {
                    find(format!(
                        "{krate} depends on {to}: dependencies must point the other way (allowed for {krate}: {allowed:?})"
                    ));
                }
            }
        }
        if core && IO_CRATES.contains(&name.as_str()) && !IO_DEPS.contains(&(krate, name.as_str()))
        {
            find(format!(
                "core crate {krate} depends on `{name}` (an async runtime or socket crate)"
            ));
        }
        if core && name == "chrono" {
            if features_of(spec).iter().any(|f| f == "clock") {
                find(format!(
                    "core crate {krate} turns on chrono's `clock` feature"
                ));
            }
            let inherits = spec.get("workspace").and_then(toml::Value::as_bool) == Some(true);
            let no_defaults =
                spec.get("default-features").and_then(toml::Value::as_bool) == Some(false);
            if !inherits && !no_defaults {
                find(format!(
                    "core crate {krate} takes chrono with its default features (they include `clock`)"
                ));
            }
        }
    }
    out
}

/// The workspace's own chrono must not have `clock` (core crates inherit it).
fn check_workspace_manifest(file: &str, manifest: &str) -> Vec<Finding> {
    let table: toml::Table = manifest.parse().unwrap_or_default();
    let chrono = table
        .get("workspace")
        .and_then(|w| w.get("dependencies"))
        .and_then(|d| d.get("chrono"));
    match chrono {
        Some(c) if features_of(c).iter().any(|f| f == "clock") => vec![Finding {
            file: file.to_owned(),
            line: 0,
            what: "the workspace's chrono turns on `clock`, which every core crate inherits: only the binary may".into(),
        }],
        _ => Vec::new(),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every violation in the workspace at `root`.
fn tidy(root: &Path) -> Vec<Finding> {
    let rel = |p: &Path| {
        p.strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .replace('\\', "/")
    };
    let read =
        |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut out = Vec::new();
    out.extend(check_workspace_manifest(
        "Cargo.toml",
        &read(&root.join("Cargo.toml")),
    ));
    let Ok(crates) = std::fs::read_dir(root.join("crates")) else {
        panic!("no crates/ under {}", root.display());
    };
    let mut seen_edges = BTreeSet::new();
    for c in crates.flatten() {
        let dir = c.path();
        let krate = c.file_name().to_string_lossy().into_owned();
        if dir.join("clippy.toml").exists() {
            out.push(Finding {
                file: rel(&dir.join("clippy.toml")),
                line: 0,
                what: "a crate's own clippy.toml hides the root one (and its clock lint)".into(),
            });
        }
        let manifest = dir.join("Cargo.toml");
        if manifest.exists() {
            out.extend(check_manifest(&rel(&manifest), &krate, &read(&manifest)));
        }
        if !CORE.contains(&krate.as_str()) {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        files.sort();
        for f in files {
            let name = rel(&f);
            let text = read(&f);
            let allowed = EDGES
                .iter()
                .find(|(e, _, _)| *e == name)
                .map_or(&[][..], |(_, a, _)| *a);
            if !allowed.is_empty() {
                seen_edges.insert(name.clone());
                out.extend(stale_exemptions(&name, &text, allowed));
            }
            out.extend(check_source(&name, &text, allowed));
        }
    }
    for (e, _, _) in EDGES {
        if !seen_edges.contains(*e) {
            out.push(Finding {
                file: (*e).to_owned(),
                line: 0,
                what: "listed in EDGES but not found: remove the exemption".into(),
            });
        }
    }
    out.sort();
    out
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_workspace_is_tidy() {
    let found = tidy(&root());
    assert!(
        found.is_empty(),
        "{} tidy violation(s):\n{}",
        found.len(),
        found
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ---- The checks catch what they must (each violation planted) ------------------------------

fn whats(found: &[Finding]) -> Vec<&str> {
    found.iter().map(|f| f.what.as_str()).collect()
}

#[test]
fn every_kind_of_io_in_core_code_is_caught_with_its_line() {
    for (code, io) in [
        ("let t = Utc::now();", Io::Clock),
        ("let t = chrono::Local::now();", Io::Clock),
        ("let t = std::time::Instant::now();", Io::Clock),
        ("let t = tokio::time::Instant::now();", Io::Clock),
        ("let t = SystemTime::now();", Io::Clock),
        ("let d = started.elapsed();", Io::Clock),
        ("let t = crate::clock::now();", Io::Clock),
        ("let next = schedule.upcoming(Utc).next();", Io::Clock),
        ("let b = std::fs::read(p)?;", Io::Files),
        ("let f = File::open(p)?;", Io::Files),
        (
            "let f = OpenOptions::new().append(true).open(p)?;",
            Io::Files,
        ),
        ("let r = hound::WavReader::open(p)?;", Io::Files),
        ("let s = UdpSocket::bind(a)?;", Io::Sockets),
        ("let s = std::net::TcpStream::connect(a)?;", Io::Sockets),
        ("let s = socket2::Socket::new(d, t, None)?;", Io::Sockets),
        ("std::thread::spawn(move || work());", Io::Threads),
        ("std::thread::scope(|s| {});", Io::Threads),
        ("tokio::spawn(async move {});", Io::Threads),
        ("use tokio::sync::mpsc;", Io::Tokio),
    ] {
        let text = format!("use x;\n\nfn f() {{\n    {code}\n}}\n");
        let found = check_source("crates/scheduler/src/x.rs", &text, &[]);
        let hit = found
            .iter()
            .find(|f| f.what.contains(io.what()))
            .unwrap_or_else(|| panic!("`{code}` not caught as {io:?}: {found:?}"));
        assert_eq!(hit.line, 4, "{hit}");
        // An edge allowed to do that is not reported for it.
        assert!(
            check_source("crates/media/src/uac.rs", &text, &Io::ALL).is_empty(),
            "{code}"
        );
    }
}

#[test]
fn comments_strings_and_test_modules_are_not_code() {
    let text = r#"//! Uses tokio? No: the caller passes `now()`.
fn f(now: DateTime<Utc>) -> DateTime<Utc> {
    let url = "sip://example"; // not a comment start inside the string: Utc::now()
    now // an argument, not a clock read
}

#[cfg(test)]
mod tests {
    fn t() { let _ = std::time::Instant::now(); std::fs::read("x"); }
}
"#;
    assert_eq!(check_source("crates/engine/src/x.rs", text, &[]), vec![]);
    // The comment is cut at `//` only outside strings.
    assert_eq!(code_of(r#"let u = "a//b"; // c"#), r#"let u = "a//b"; "#);
    // A method or field named like one is not a read.
    assert_eq!(
        check_source(
            "crates/engine/src/x.rs",
            "let n = self.now_secs + now;\n",
            &[]
        ),
        vec![]
    );
}

#[test]
fn an_exemption_no_longer_needed_is_reported() {
    let found = stale_exemptions(
        "crates/media/src/pacer.rs",
        "fn f(now: Instant) {}\n",
        &[Io::Clock, Io::Sockets],
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found
        .iter()
        .all(|f| f.what.contains("remove the exemption")));
    let found = stale_exemptions(
        "crates/media/src/pacer.rs",
        "fn f() { let t = Instant::now(); }\n",
        &[Io::Clock],
    );
    assert_eq!(found, vec![]);
}

#[test]
fn dependencies_pointing_the_wrong_way_or_on_tokio_are_caught() {
    let m = |deps: &str| format!("[package]\nname = \"x\"\n\n[dependencies]\n{deps}\n");
    let found = check_manifest(
        "crates/scheduler/Cargo.toml",
        "scheduler",
        &m("crieur-store = { path = \"../store\" }\ntokio.workspace = true"),
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(whats(&found)[0].contains("scheduler depends on store"));
    assert!(whats(&found)[1].contains("depends on `tokio`"));
    let found = check_manifest(
        "crates/engine/Cargo.toml",
        "engine",
        &m("crieur-audit = { path = \"../audit\" }"),
    );
    assert!(
        whats(&found)[0].contains("engine depends on audit"),
        "{found:?}"
    );
    // The allowed edges and media's SIP/RTP edge pass; dev-dependencies are not edges.
    for (krate, deps) in [
        ("audit", "crieur-scheduler = { path = \"../scheduler\" }\ncrieur-engine = { path = \"../engine\" }"),
        ("media", "tokio.workspace = true\nsocket2 = \"0.6\""),
        ("cli", "crieur-store = { path = \"../store\" }\ntokio.workspace = true"),
    ] {
        assert_eq!(check_manifest("Cargo.toml", krate, &m(deps)), vec![], "{krate}");
    }
    let dev = "[package]\nname = \"x\"\n[dev-dependencies]\ntokio.workspace = true\n";
    assert_eq!(check_manifest("Cargo.toml", "store", dev), vec![]);
    // The test harness only as a dev-dependency, even for the binary.
    let dev = "[dev-dependencies]\ncrieur-test-support = { path = \"../test-support\" }\n";
    assert_eq!(check_manifest("Cargo.toml", "media", dev), vec![]);
    for krate in ["cli", "media"] {
        let found = check_manifest(
            "Cargo.toml",
            krate,
            &m("crieur-test-support = { path = \"../test-support\" }"),
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            whats(&found)[0].contains("dev-dependency only"),
            "{found:?}"
        );
    }
}

#[test]
fn chrono_s_clock_in_a_core_crate_or_the_workspace_is_caught() {
    let m = |chrono: &str| format!("[dependencies]\nchrono = {chrono}\n");
    for bad in [
        "{ workspace = true, features = [\"clock\"] }",
        "\"0.4\"",
        "{ version = \"0.4\", features = [\"std\"] }",
    ] {
        let found = check_manifest("crates/store/Cargo.toml", "store", &m(bad));
        assert_eq!(found.len(), 1, "{bad}: {found:?}");
        assert!(whats(&found)[0].contains("clock"), "{found:?}");
    }
    for good in [
        "{ workspace = true, features = [\"serde\"] }",
        "{ version = \"0.4\", default-features = false, features = [\"std\"] }",
    ] {
        assert_eq!(
            check_manifest("Cargo.toml", "audit", &m(good)),
            vec![],
            "{good}"
        );
    }
    // The binary may.
    assert_eq!(
        check_manifest(
            "Cargo.toml",
            "cli",
            &m(r#"{ workspace = true, features = ["clock"] }"#)
        ),
        vec![]
    );
    let ws = "[workspace.dependencies]\nchrono = { version = \"0.4\", default-features = false, features = [\"std\", \"clock\"] }\n";
    assert_eq!(check_workspace_manifest("Cargo.toml", ws).len(), 1);
}

/// The whole walk over a small workspace with one of each violation planted.
#[test]
fn a_synthetic_workspace_with_violations_fails_tidy() {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let w = |p: &str, text: &str| {
        let p = d.path().join(p);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(p, text).unwrap_or_else(|e| panic!("{e}"));
    };
    w(
        "Cargo.toml",
        "[workspace]\nmembers = [\"crates/scheduler\"]\n[workspace.dependencies]\nchrono = { version = \"0.4\", default-features = false, features = [\"std\"] }\n",
    );
    w(
        "crates/scheduler/Cargo.toml",
        "[package]\nname = \"crieur-scheduler\"\n[dependencies]\ncrieur-engine = { path = \"../engine\" }\n",
    );
    w("crates/scheduler/clippy.toml", "");
    w(
        "crates/scheduler/src/lib.rs",
        "pub mod deep;\npub fn f() -> i64 { chrono::Utc::now().timestamp() }\n",
    );
    w(
        "crates/scheduler/src/deep/mod.rs",
        "pub fn g() { std::thread::spawn(|| ()); }\n",
    );
    let found = tidy(d.path());
    let show: Vec<String> = found.iter().map(ToString::to_string).collect();
    let has = |s: &str| show.iter().any(|f| f.contains(s));
    assert!(
        has("crates/scheduler/src/lib.rs:2: core code reads a clock"),
        "{show:#?}"
    );
    assert!(
        has("crates/scheduler/src/deep/mod.rs:1: core code spawns threads"),
        "{show:#?}"
    );
    assert!(has("scheduler depends on engine"), "{show:#?}");
    assert!(
        has("crates/scheduler/clippy.toml: a crate's own clippy.toml hides"),
        "{show:#?}"
    );
    // Every EDGES entry is missing here, and said so.
    assert!(
        has("crates/media/src/uac.rs: listed in EDGES but not found"),
        "{show:#?}"
    );
}
