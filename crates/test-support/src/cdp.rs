//! Headless Chromium driven over the Chrome DevTools Protocol, on a pipe
//! (`--remote-debugging-pipe`: commands on the child's fd 3, answers and events on its fd 4,
//! each message JSON ended by a NUL) — no WebDriver, no websocket, nothing to install beyond
//! Debian's `chromium`. Chromium is `$CHROMIUM`, else `chromium` or `chromium-browser` on the
//! PATH; none installed is a failure that says how to install it, never a skip.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// Chromium's path.
pub fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .flat_map(|d| [d.join("chromium"), d.join("chromium-browser")])
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "this test drives headless Chromium, which is not installed: \
                 `apt-get install chromium` (Debian), or set CHROMIUM to its path"
            )
        })
}

/// A headless Chromium; killed on drop.
pub struct Browser {
    child: Child,
    commands: std::fs::File,
    answers: Receiver<serde_json::Value>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

/// A page (a target) of the browser, attached.
pub struct Page {
    session: String,
}

/// A pipe whose two ends are closed on exec (the child gets its copies through `dup2`).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds: [RawFd; 2] = [-1; 2];
    // SAFETY: `fds` is a valid array of two descriptors for pipe2 to fill.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: pipe2 succeeded: both descriptors are open and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    /// Starts headless Chromium with its debugging pipe.
    pub fn start() -> Browser {
        use std::os::fd::AsRawFd;
        let profile = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (cmd_read, cmd_write) = pipe();
        let (ans_read, ans_write) = pipe();
        let (child_in, child_out) = (cmd_read.as_raw_fd(), ans_write.as_raw_fd());
        let mut cmd = Command::new(chromium());
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-quic",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: between fork and exec only async-signal-safe calls (fcntl, dup2) are made.
        unsafe {
            cmd.pre_exec(move || {
                // Copied high first: a pipe end may itself be fd 3 or 4.
                let a = libc::fcntl(child_in, libc::F_DUPFD, 10);
                let b = libc::fcntl(child_out, libc::F_DUPFD, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting chromium: {e}"));
        drop((cmd_read, ans_write));
        let (tx, answers) = channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(std::fs::File::from(ans_read));
            let mut buf = Vec::new();
            while r.read_until(0, &mut buf).is_ok_and(|n| n > 0) {
                if buf.last() == Some(&0) {
                    buf.pop();
                }
                if let Ok(v) = serde_json::from_slice(&buf) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
                buf.clear();
            }
        });
        Browser {
            child,
            commands: std::fs::File::from(cmd_write),
            answers,
            next_id: 1,
            _profile: profile,
        }
    }

    /// Sends `method` (to `session`, if given) and waits (30 s at most) for its result.
    pub fn send(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: serde_json::Value,
    ) -> serde_json::Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = serde_json::json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = s.into();
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap_or_else(|e| panic!("{e}"));
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("writing to chromium: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .answers
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no answer from chromium to {method}: {e}"));
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Opens `url` in a new page.
    pub fn open(&mut self, url: &str) -> Page {
        let t = self.send(
            None,
            "Target.createTarget",
            serde_json::json!({ "url": url }),
        );
        let target = t["targetId"].as_str().unwrap_or_default().to_owned();
        let a = self.send(
            None,
            "Target.attachToTarget",
            serde_json::json!({ "targetId": target, "flatten": true }),
        );
        Page {
            session: a["sessionId"].as_str().unwrap_or_default().to_owned(),
        }
    }

    /// Evaluates `expression` in `page`; its value (JSON).
    pub fn eval(&mut self, page: &Page, expression: &str) -> serde_json::Value {
        let r = self.send(
            Some(&page.session),
            "Runtime.evaluate",
            serde_json::json!({ "expression": expression, "returnByValue": true }),
        );
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expression}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Evaluates `expression` every 100 ms until `done` accepts its value (`within` at most).
    pub fn wait_for(
        &mut self,
        page: &Page,
        expression: &str,
        within: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.eval(page, expression);
            if done(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{expression} is still {v} after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
