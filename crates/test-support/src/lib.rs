//! The test harness shared by crieur's test suites (a dev-dependency only): sipp, the
//! independent SIP implementation the tests call, started on 127.0.0.1 on free ports and
//! stopped on drop ([`Sipp`]); scratch directories with recordings and campaign files
//! ([`Scratch`], [`CampaignToml`], [`tone_wav`]); headless Chromium over the DevTools
//! protocol ([`cdp`]).
//!
//! Tests fail loudly here (a harness that cannot start sipp or write a file panics with why):
//! `unwrap`-style panics are the point of a test helper.

// A test harness bounds its waits with the wall clock.
#![allow(clippy::disallowed_methods)]

pub mod cdp;
pub mod dns;
pub mod kamailio;
pub mod pg;
pub mod scenario;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Output bytes as text (lossy).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A free SIP port `p` on loopback with `p + 1` (sipp's control port), `p + 2` and `p + 3`
/// (its RTP and RTCP ports) free too, as far as can be known: another process may take one
/// before sipp binds it ([`SippBuilder::start`] retries then).
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let Ok(s) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(p) = s.local_addr().map(|a| a.port()) else {
            continue;
        };
        if p < 60_000 && (1..=3).all(|k| UdpSocket::bind(("127.0.0.1", p + k)).is_ok()) {
            return p;
        }
    }
    panic!("no free ports on 127.0.0.1");
}

/// Writes a 16-bit 8 kHz mono WAV of a 440 Hz tone lasting `secs`.
pub fn tone_wav(path: &Path, secs: f32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap_or_else(|e| panic!("{e}"));
    for n in 0..(8000.0 * secs) as usize {
        let v = 8000.0 * (2.0 * std::f32::consts::PI * 440.0 * n as f32 / 8000.0).sin();
        w.write_sample(v as i16).unwrap_or_else(|e| panic!("{e}"));
    }
    w.finalize().unwrap_or_else(|e| panic!("{e}"));
}

/// The scenario of a sipp run: fixed, or written for the port sipp gets.
type ScenarioFn = Box<dyn Fn(u16) -> String>;

/// How to start sipp ([`Sipp::scenario`]).
pub struct SippBuilder {
    scenario: ScenarioFn,
    port: Option<u16>,
    dir: Option<(PathBuf, String)>,
    calls: usize,
    timeout_secs: u64,
    timeout_error: bool,
    args: Vec<String>,
}

impl SippBuilder {
    /// sipp on this port (when a campaign file already names it): not retried elsewhere.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }
    /// The scenario saved as `<name>-<port>.xml` in `dir`, sipp's logs there too (default:
    /// a temporary directory of its own).
    pub fn in_dir(mut self, dir: &Path, name: &str) -> Self {
        self.dir = Some((dir.to_owned(), name.to_owned()));
        self
    }
    /// Calls before sipp ends (`-m`, default 1).
    pub fn calls(mut self, calls: usize) -> Self {
        self.calls = calls;
        self
    }
    /// sipp's global timeout (`-timeout`, default 40 s).
    pub fn timeout_secs(mut self, secs: u64) -> Self {
        self.timeout_secs = secs;
        self
    }
    /// Reaching the timeout is a failure (`-timeout_error`).
    pub fn timeout_error(mut self) -> Self {
        self.timeout_error = true;
        self
    }
    /// More sipp arguments (`-rtp_echo`, `-trace_msg`, a UAC's target …).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Starts sipp on 127.0.0.1 and gives it 300 ms to bind. On a free port found for it, a
    /// port taken by another process in between (sipp exits at once) is retried on other
    /// ports; sipp that does not start panics with its stderr.
    pub fn start(self) -> Sipp {
        let mut why = String::new();
        for _ in 0..5 {
            let mut sipp = self.start_on(self.port.unwrap_or_else(free_port));
            if matches!(sipp.child.try_wait(), Ok(None)) {
                return sipp;
            }
            why = std::fs::read_to_string(&sipp.stderr).unwrap_or_default();
            if self.port.is_some() {
                break;
            }
        }
        panic!("sipp exited at start (port taken?): {why}");
    }

    /// Starts sipp once, without looking whether it is still running (a UAC scenario may be
    /// done before it is looked at): [`Sipp::succeeded`] reads how it ended.
    pub fn start_once(self) -> Sipp {
        self.start_on(self.port.unwrap_or_else(free_port))
    }

    fn start_on(&self, port: u16) -> Sipp {
        let (dir, tmp, name) = match &self.dir {
            Some((d, n)) => (d.clone(), None, format!("{n}-{port}")),
            None => {
                let t = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
                (t.path().to_owned(), Some(t), "scenario".to_owned())
            }
        };
        let scenario = dir.join(format!("{name}.xml"));
        std::fs::write(&scenario, (self.scenario)(port))
            .unwrap_or_else(|e| panic!("write {}: {e}", scenario.display()));
        let stderr = dir.join(format!("{name}.stderr"));
        let mut args: Vec<String> = [
            "-sf",
            &scenario.display().to_string(),
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            // sipp's control port (default 8888) would collide between tests run in parallel.
            "-cp",
            &(port + 1).to_string(),
            "-mp",
            &(port + 2).to_string(),
            "-m",
            &self.calls.to_string(),
            "-timeout",
            &format!("{}s", self.timeout_secs),
            "-nostdin",
            "-trace_err",
            // sipp's own default socket buffers are 64 KB: a burst of a few hundred calls on
            // a loaded machine overflows them and the kernel drops datagrams (an ACK lost
            // there makes the BYE behind it "unexpected" to sipp). 4 MB, capped by the
            // kernel's `rmem_max`/`wmem_max`.
            "-buff_size",
            "4194304",
        ]
        .map(str::to_owned)
        .into();
        if self.timeout_error {
            args.push("-timeout_error".into());
        }
        args.extend(self.args.iter().cloned());
        let child = Command::new("sipp")
            .args(&args)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).map_or_else(|_| Stdio::null(), Stdio::from))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sipp (apt-get install sip-tester): {e}"));
        // Let sipp bind before the INVITE (SIP retransmission would cover a miss anyway).
        std::thread::sleep(Duration::from_millis(300));
        Sipp {
            child,
            port,
            dir,
            stderr,
            timeout: Duration::from_secs(self.timeout_secs),
            _tmp: tmp,
        }
    }
}

/// A running sipp; killed on drop.
pub struct Sipp {
    child: Child,
    port: u16,
    dir: PathBuf,
    stderr: PathBuf,
    timeout: Duration,
    _tmp: Option<tempfile::TempDir>,
}

impl Sipp {
    /// sipp playing `scenario` for one call on free ports, reaching its 40 s timeout a
    /// failure, with `extra` arguments: the common case of [`Sipp::scenario`].
    pub fn start(scenario: &str, extra: &[&str]) -> Sipp {
        Self::scenario(scenario).timeout_error().args(extra).start()
    }

    /// sipp playing `scenario` (XML; a UAS or a UAC); see [`SippBuilder`] for the options, then `start()`.
    pub fn scenario(scenario: &str) -> SippBuilder {
        let scenario = scenario.to_owned();
        Self::scenario_for(move |_| scenario.clone())
    }

    /// As [`Sipp::scenario`], the scenario written for the port sipp gets (a scenario that names
    /// its own address).
    pub fn scenario_for(scenario: impl Fn(u16) -> String + 'static) -> SippBuilder {
        SippBuilder {
            scenario: Box::new(scenario),
            port: None,
            dir: None,
            calls: 1,
            timeout_secs: 40,
            timeout_error: false,
            args: Vec::new(),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Waits for sipp to end (at most its timeout and 5 s); true if it counted every call
    /// successful. On failure, its error log is printed.
    pub fn succeeded(&mut self) -> bool {
        let deadline = Instant::now() + self.timeout + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                if !status.success() {
                    eprintln!("sipp failed ({status}):\n{}", self.logs("errors.log"));
                }
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Waits for sipp to end, however long that takes (its `-timeout` bounds it).
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait()
    }

    /// Whether sipp is still running (it ends after its calls, or at its timeout).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// sipp's message trace (with `-trace_msg`): every message sent and received.
    pub fn messages(&self) -> String {
        self.logs("_messages.log")
    }

    /// Stops sipp now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The contents of sipp's log files whose names end with `suffix`.
    fn logs(&self, suffix: &str) -> String {
        let pid = self.child.id().to_string();
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.ends_with(suffix) && n.contains(&pid)
            })
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect()
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A scratch directory (removed on drop) for campaign, contacts and recording files.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
        }
    }
    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// The path of `name` in the directory, as a string (for a command line).
    pub fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
    pub fn write(&self, name: &str, data: impl AsRef<[u8]>) {
        std::fs::write(self.dir.path().join(name), data)
            .unwrap_or_else(|e| panic!("write {name}: {e}"));
    }
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name))
            .unwrap_or_else(|e| panic!("read {name}: {e}"))
    }
    pub fn exists(&self, name: &str) -> bool {
        self.dir.path().join(name).exists()
    }
    /// The recordings a campaign that places calls needs: `msg.wav` (`message_secs` long)
    /// and `confirm.wav` (0.5 s).
    pub fn recordings(&self, message_secs: f32) {
        tone_wav(&self.dir.path().join("msg.wav"), message_secs);
        tone_wav(&self.dir.path().join("confirm.wav"), 0.5);
    }
}

/// A campaign file that calls through sipp: rule set `none` (any hour, consent decides),
/// zone Europe/Paris, the recordings of [`Scratch::recordings`], a trunk on
/// `127.0.0.1:<port>`; `[trunk]` is the last section (a test may append trunk keys).
#[derive(Debug, Clone)]
pub struct CampaignToml {
    name: String,
    port: u16,
    ring_timeout_secs: Option<u64>,
    extra: String,
    pacing: Option<(u32, u32)>,
}

impl CampaignToml {
    pub fn new(name: &str, port: u16) -> CampaignToml {
        CampaignToml {
            name: name.to_owned(),
            port,
            ring_timeout_secs: None,
            extra: String::new(),
            pacing: None,
        }
    }
    pub fn ring_timeout_secs(mut self, secs: u64) -> Self {
        self.ring_timeout_secs = Some(secs);
        self
    }
    /// TOML put before `[pacing]` and `[trunk]` (top-level keys, `[retry]` …).
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self
    }
    /// `[pacing]`: calls per second and at once.
    pub fn pacing(mut self, calls_per_second: u32, max_concurrent_calls: u32) -> Self {
        self.pacing = Some((calls_per_second, max_concurrent_calls));
        self
    }
    pub fn build(&self) -> String {
        let mut s = format!(
            "name = \"{}\"\nruleset = \"none\"\nzone = \"Europe/Paris\"\n",
            self.name
        );
        if let Some(r) = self.ring_timeout_secs {
            s.push_str(&format!("ring_timeout_secs = {r}\n"));
        }
        s.push_str("message = \"msg.wav\"\nconfirmation = \"confirm.wav\"\n");
        s.push_str(&self.extra);
        if let Some((cps, max)) = self.pacing {
            s.push_str(&format!(
                "\n[pacing]\ncalls_per_second = {cps}\nmax_concurrent_calls = {max}\n"
            ));
        }
        s.push_str(&format!(
            "[trunk]\nuri = \"sip:127.0.0.1:{}\"\nfrom = \"sip:+33100000000@crieur.test\"\nmax_call_secs = 60\n",
            self.port
        ));
        s
    }
}

/// The contacts file header.
pub const CONTACTS_HEADER: &str =
    "id,phone,zone,windows,granted_at,expires_at,revoked_at,source,proof\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_campaign_texts_are_those_the_suites_wrote() {
        assert_eq!(
            CampaignToml::new("t", 5060).extra("[retry]\nmax_attempts = 1\n").build(),
            "name = \"t\"\nruleset = \"none\"\nzone = \"Europe/Paris\"\nmessage = \"msg.wav\"\nconfirmation = \"confirm.wav\"\n[retry]\nmax_attempts = 1\n\
             [trunk]\nuri = \"sip:127.0.0.1:5060\"\nfrom = \"sip:+33100000000@crieur.test\"\nmax_call_secs = 60\n"
        );
        assert_eq!(
            CampaignToml::new("first", 7).ring_timeout_secs(15).extra("x = 1\n").pacing(20, 60).build(),
            "name = \"first\"\nruleset = \"none\"\nzone = \"Europe/Paris\"\nring_timeout_secs = 15\n\
             message = \"msg.wav\"\nconfirmation = \"confirm.wav\"\nx = 1\n\n\
             [pacing]\ncalls_per_second = 20\nmax_concurrent_calls = 60\n\
             [trunk]\nuri = \"sip:127.0.0.1:7\"\nfrom = \"sip:+33100000000@crieur.test\"\nmax_call_secs = 60\n"
        );
    }

    #[test]
    fn free_port_leaves_the_next_three_free() {
        let p = free_port();
        for k in 0..=3 {
            assert!(UdpSocket::bind(("127.0.0.1", p + k)).is_ok(), "{p} + {k}");
        }
    }
}
