//! dnsmasq (Debian `dnsmasq-base`), an independent DNS server, authoritative for `.test` on
//! 127.0.0.1 on a free port: the SRV and address records a test gives it, NXDOMAIN for any
//! other name under `.test`, nothing forwarded anywhere.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running dnsmasq (killed on drop).
pub struct Dns {
    child: Child,
    pub addr: SocketAddr,
}

/// An SRV record: `service` (e.g. `_sip._udp.trunk.test`) → `target`:`port`.
pub struct SrvRecord<'a> {
    pub service: &'a str,
    pub target: &'a str,
    pub port: u16,
    pub priority: u16,
    pub weight: u16,
}

impl Dns {
    /// dnsmasq serving `srv` records and `hosts` (name → IPv4 address).
    pub fn start(srv: &[SrvRecord<'_>], hosts: &[(&str, &str)]) -> Dns {
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut args = vec![
            "--keep-in-foreground".to_owned(),
            "--conf-file=/dev/null".into(),
            "--pid-file=".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--bind-interfaces".into(),
            "--listen-address=127.0.0.1".into(),
            format!("--port={port}"),
            "--local=/test/".into(),
            "--log-facility=-".into(),
        ];
        for r in srv {
            args.push(format!(
                "--srv-host={},{},{},{},{}",
                r.service, r.target, r.port, r.priority, r.weight
            ));
        }
        for (name, ip) in hosts {
            args.push(format!("--host-record={name},{ip}"));
        }
        let child = Command::new("dnsmasq")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("dnsmasq (apt-get install dnsmasq-base): {e}"));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Ready when it answers over TCP (it listens on both).
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Dns { child, addr }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
