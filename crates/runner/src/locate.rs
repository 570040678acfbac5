//! RFC 3263 server location for the trunk, the I/O edge: the DNS lookups (hickory-resolver,
//! the system's resolver configuration or `[trunk] dns_server`). What to look up follows §4.2:
//! an IP address is used as it is; a host name with a port is looked up by A/AAAA; a host
//! name without one by SRV (`_sip._udp`, `_sip._tcp`, `_sips._tcp` by transport), each
//! target's addresses then looked up, falling back to A/AAAA at the transport's default port
//! when there is no SRV record. The order the servers are tried in (priorities, weights) and
//! the failover are crieur-sip's `locate`, pure.

use std::net::{IpAddr, SocketAddr};

use crieur_sip::locate::{self, Srv};
use crieur_sip::Transport;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::Resolver;

use crate::{Error, Result};

/// Where the trunk is: its servers, in SRV terms (one pseudo-record for a host without SRV
/// records, or with a port: its addresses in the order DNS gave them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub servers: Vec<Srv<Vec<SocketAddr>>>,
    /// Whether SRV records gave them.
    pub by_srv: bool,
}

impl Located {
    /// The first address by priority (what the local address that reaches the trunk is found
    /// from).
    pub fn first(&self) -> Option<SocketAddr> {
        self.servers
            .iter()
            .min_by_key(|s| s.priority)
            .and_then(|s| s.target.first().copied())
    }
}

/// Locates the trunk `host` (`port`: the URI's, if it gives one) for `transport`, asking
/// `dns` (or the system's resolvers). Runs the lookups on a thread of its own with a runtime
/// of its own, so it may be called from anywhere (a run prepares before its runtime starts;
/// a test may call it from inside one).
pub fn locate(
    host: &str,
    port: Option<u16>,
    transport: Transport,
    dns: Option<SocketAddr>,
) -> Result<Located> {
    let default = locate::default_port(transport == Transport::Tls);
    // An IP address: no lookup (RFC 3263 §4.2).
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(single(vec![SocketAddr::new(ip, port.unwrap_or(default))]));
    }
    let what = || format!("resolving the trunk host {host}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| Error::Io {
                    what: what(),
                    source,
                })?;
            rt.block_on(lookup(host, port, default, transport, dns))
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Io {
                what: what(),
                source: std::io::Error::other("the resolver thread panicked"),
            })
        })
    })
}

fn single(addrs: Vec<SocketAddr>) -> Located {
    Located {
        servers: vec![Srv {
            priority: 0,
            weight: 0,
            target: addrs,
        }],
        by_srv: false,
    }
}

fn resolver(dns: Option<SocketAddr>) -> Result<Resolver<TokioRuntimeProvider>> {
    let builder = match dns {
        Some(a) => {
            let mut ns = NameServerConfig::udp_and_tcp(a.ip());
            for c in &mut ns.connections {
                c.port = a.port();
            }
            Resolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), vec![ns]),
                TokioRuntimeProvider::default(),
            )
        }
        None => Resolver::builder_tokio().map_err(|e| Error::Io {
            what: "reading the system's DNS configuration".into(),
            source: std::io::Error::other(e),
        })?,
    };
    builder.build().map_err(|e| Error::Io {
        what: "starting the DNS resolver".into(),
        source: std::io::Error::other(e),
    })
}

/// A host name's addresses (A and AAAA), in the order DNS gave them, at `port`.
async fn addresses(
    r: &Resolver<TokioRuntimeProvider>,
    host: &str,
    port: u16,
) -> std::result::Result<Vec<SocketAddr>, String> {
    let ips = r
        .lookup_ip(fqdn(host))
        .await
        .map_err(|e| format!("{host}: {e}"))?;
    let addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(ip, port)).collect();
    if addrs.is_empty() {
        return Err(format!("{host}: no address"));
    }
    Ok(addrs)
}

/// `host` as an absolute name (no search domain appended).
fn fqdn(host: &str) -> String {
    if host.ends_with('.') {
        host.to_owned()
    } else {
        format!("{host}.")
    }
}

async fn lookup(
    host: &str,
    port: Option<u16>,
    default: u16,
    transport: Transport,
    dns: Option<SocketAddr>,
) -> Result<Located> {
    let r = resolver(dns)?;
    let fail = |why: String| Error::Io {
        what: format!("resolving the trunk host {host}"),
        source: std::io::Error::other(why),
    };
    // A port given: A/AAAA only.
    if let Some(port) = port {
        return addresses(&r, host, port).await.map(single).map_err(fail);
    }
    let name = locate::srv_name(host, transport);
    let records: Vec<(u16, u16, u16, String)> = match r.lookup(fqdn(&name), RecordType::SRV).await {
        Ok(l) => l
            .answers()
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::SRV(s) => Some((s.priority, s.weight, s.port, s.target.to_string())),
                _ => None,
            })
            .collect(),
        Err(e) => {
            tracing::debug!(%name, error = %e, "no SRV records: the host's own addresses");
            Vec::new()
        }
    };
    if records.is_empty() {
        return addresses(&r, host, default).await.map(single).map_err(fail);
    }
    // RFC 2782: a single record whose target is "." says the service is not offered.
    if records.len() == 1 && records.iter().all(|(_, _, _, t)| t == ".") {
        return Err(fail(format!(
            "{name}: the domain says it offers no such service"
        )));
    }
    let mut servers = Vec::new();
    let mut why = Vec::new();
    for (priority, weight, port, target) in records {
        match addresses(&r, &target, port).await {
            Ok(addrs) => servers.push(Srv {
                priority,
                weight,
                target: addrs,
            }),
            // A target that does not resolve is skipped; the others stand.
            Err(e) => {
                tracing::warn!(%name, error = %e, "an SRV target does not resolve");
                why.push(e);
            }
        }
    }
    if servers.is_empty() {
        return Err(fail(format!(
            "{name}: no SRV target resolves ({})",
            why.join("; ")
        )));
    }
    Ok(Located {
        servers,
        by_srv: true,
    })
}
