//! Kamailio, an independent SIP proxy, with its TLS module on 127.0.0.1: listeners for TLS,
//! TCP and UDP, a certificate for `127.0.0.1` and `localhost` signed by a test CA, every new
//! call relayed to a sipp UAS over UDP with Record-Route (so the dialog's requests, both
//! ways, come back through it). The test CA also signs a certificate crieur can serve with
//! ([`Kamailio::our_cert`], [`Kamailio::our_key`]) when Kamailio opens a connection to us.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Scratch;

/// Kamailio running (SIGTERM to its main process, which ends its children, on drop).
pub struct Kamailio {
    child: std::process::Child,
    /// Its TLS listener.
    pub tls: SocketAddr,
    /// Its TCP listener.
    pub tcp: SocketAddr,
    /// The test CA (PEM) that signed its certificate and ours.
    pub ca: PathBuf,
    dir: Scratch,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("openssl (apt-get install openssl): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A free TCP port on loopback.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

impl Kamailio {
    /// Kamailio relaying every new call to sipp at `127.0.0.1:<sipp_port>` over UDP.
    pub fn start(sipp_port: u16) -> Kamailio {
        let dir = Scratch::new();
        let p = |f: &str| dir.file(f);
        let (ca_key, ca) = (p("ca.key"), p("ca.pem"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
            "-days",
            "2",
            "-subj",
            "/CN=crieur test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ]);
        dir.write(
            "ext.cnf",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n",
        );
        // One certificate for Kamailio, one for crieur's own listener.
        for who in ["kam", "ours"] {
            let (key, csr, cert) = (
                p(&format!("{who}.key")),
                p(&format!("{who}.csr")),
                p(&format!("{who}.pem")),
            );
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                "/CN=localhost",
            ]);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &p("ext.cnf"),
            ]);
        }
        dir.write(
            "tls.cfg",
            format!(
                "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\nprivate_key = {}\ncertificate = {}\n\n\
                 [client:default]\nmethod = TLSv1.2+\nverify_certificate = yes\nrequire_certificate = yes\nca_list = {ca}\n",
                p("kam.key"),
                p("kam.pem")
            ),
        );
        let udp = crate::free_port();
        let (tls, tcp) = (free_tcp_port(), free_tcp_port());
        dir.write(
            "kamailio.cfg",
            format!(
                r#"#!KAMAILIO
debug=2
log_stderror=yes
children=1
tcp_children=1
listen=udp:127.0.0.1:{udp}
listen=tcp:127.0.0.1:{tcp}
listen=tls:127.0.0.1:{tls}
enable_tls=yes
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "siputils.so"
loadmodule "tls.so"
modparam("tls", "config", "{}")
request_route {{
  if (has_totag()) {{
    if (loose_route()) {{ t_relay(); exit; }}
    sl_send_reply("404", "Not here");
    exit;
  }}
  if (method=="CANCEL") {{
    if (t_check_trans()) {{ t_relay(); }}
    exit;
  }}
  record_route();
  $du = "sip:127.0.0.1:{sipp_port};transport=udp";
  t_relay();
  exit;
}}
"#,
                p("tls.cfg")
            ),
        );
        let child = Command::new("kamailio")
            .args([
                "-f",
                &p("kamailio.cfg"),
                "-DD",
                "-E",
                "-P",
                &p("kamailio.pid"),
                "-w",
                &p(""),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(p("kamailio.log")).unwrap_or_else(|e| panic!("{e}")))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("kamailio (apt-get install kamailio kamailio-tls-modules): {e}")
            });
        let tls = SocketAddr::from(([127, 0, 0, 1], tls));
        let tcp = SocketAddr::from(([127, 0, 0, 1], tcp));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(tls).is_err()
            || std::net::TcpStream::connect(tcp).is_err()
        {
            assert!(
                Instant::now() < deadline,
                "kamailio did not listen:\n{}",
                dir.read("kamailio.log")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Kamailio {
            child,
            tls,
            tcp,
            ca: ca.into(),
            dir,
        }
    }

    /// A certificate (PEM) for `127.0.0.1` and `localhost`, signed by [`Kamailio::ca`], for
    /// crieur's TLS listener (Kamailio checks it when it connects to us).
    pub fn our_cert(&self) -> PathBuf {
        self.dir.path().join("ours.pem")
    }

    /// The private key (PEM) of [`Kamailio::our_cert`].
    pub fn our_key(&self) -> PathBuf {
        self.dir.path().join("ours.key")
    }

    /// What Kamailio logged.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(
            &std::fs::read(self.dir.path().join("kamailio.log")).unwrap_or_default(),
        )
        .into_owned()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // SIGTERM to its main process (by PID): it ends its children.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = self.child.wait();
    }
}
