//! RFC 3263 server location against a real DNS server (dnsmasq on 127.0.0.1): SRV by
//! transport, each target's addresses, the A/AAAA fallback, a given port or an IP address
//! looked up by no SRV.

use std::net::SocketAddr;

use crieur_runner::locate::{locate, Located};
use crieur_sip::locate::Srv;
use crieur_sip::Transport;
use crieur_test_support::dns::{Dns, SrvRecord};

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn dns() -> Dns {
    let srv = |service, target, port, priority, weight| SrvRecord {
        service,
        target,
        port,
        priority,
        weight,
    };
    Dns::start(
        &[
            srv("_sip._udp.trunk.test", "b.trunk.test", 5071, 20, 10),
            srv("_sip._udp.trunk.test", "a.trunk.test", 5070, 10, 60),
            srv("_sip._udp.trunk.test", "c.trunk.test", 5072, 10, 40),
            srv("_sips._tcp.trunk.test", "a.trunk.test", 5061, 0, 0),
            // A target that does not resolve is skipped, the other stands.
            srv("_sip._udp.half.test", "nowhere.test", 5060, 1, 1),
            srv("_sip._udp.half.test", "a.trunk.test", 5090, 2, 1),
        ],
        &[
            ("a.trunk.test", "127.0.0.1"),
            ("c.trunk.test", "127.0.0.3"),
            ("b.trunk.test", "127.0.0.2"),
            ("trunk.test", "127.0.0.9"),
        ],
    )
}

fn by_priority(mut l: Located) -> Vec<Srv<Vec<SocketAddr>>> {
    l.servers.sort_by_key(|s| (s.priority, s.weight));
    l.servers
}

#[test]
fn a_host_without_a_port_is_located_by_srv_for_its_transport() {
    let d = dns();
    let l =
        locate("trunk.test", None, Transport::Udp, Some(d.addr)).unwrap_or_else(|e| panic!("{e}"));
    assert!(l.by_srv);
    // The first address is one of the lowest priority's.
    assert!(
        matches!(l.first(), Some(f) if f == a("127.0.0.1:5070") || f == a("127.0.0.3:5072")),
        "{l:?}"
    );
    assert_eq!(
        by_priority(l),
        vec![
            Srv {
                priority: 10,
                weight: 40,
                target: vec![a("127.0.0.3:5072")]
            },
            Srv {
                priority: 10,
                weight: 60,
                target: vec![a("127.0.0.1:5070")]
            },
            Srv {
                priority: 20,
                weight: 10,
                target: vec![a("127.0.0.2:5071")]
            },
        ]
    );
    // TLS: `_sips._tcp`, its own port.
    let l =
        locate("trunk.test", None, Transport::Tls, Some(d.addr)).unwrap_or_else(|e| panic!("{e}"));
    assert!(l.by_srv);
    assert_eq!(
        l.servers,
        vec![Srv {
            priority: 0,
            weight: 0,
            target: vec![a("127.0.0.1:5061")]
        }]
    );
    // TCP: no `_sip._tcp` record: the host's own address at the default port.
    let l =
        locate("trunk.test", None, Transport::Tcp, Some(d.addr)).unwrap_or_else(|e| panic!("{e}"));
    assert!(!l.by_srv);
    assert_eq!(l.first(), Some(a("127.0.0.9:5060")));
    // An unresolvable target is skipped.
    let l =
        locate("half.test", None, Transport::Udp, Some(d.addr)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        l.servers,
        vec![Srv {
            priority: 2,
            weight: 1,
            target: vec![a("127.0.0.1:5090")]
        }]
    );
}

#[test]
fn a_port_or_an_ip_address_means_no_srv() {
    let d = dns();
    let l = locate("trunk.test", Some(5080), Transport::Udp, Some(d.addr))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!l.by_srv);
    assert_eq!(l.first(), Some(a("127.0.0.9:5080")));
    // No DNS server is asked for an address (none is given, and none would answer).
    let l = locate("127.0.0.5", None, Transport::Tls, Some(a("127.0.0.1:9")))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.first(), Some(a("127.0.0.5:5061")));
    let l = locate("::1", Some(5070), Transport::Udp, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.first(), Some(a("[::1]:5070")));
}

#[test]
fn a_name_that_does_not_exist_is_an_error_that_names_it() {
    let d = dns();
    let e = locate("missing.test", None, Transport::Udp, Some(d.addr))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("missing.test"), "{e}");
}
