//! What placing calls needs from a campaign: its dial rules, the trunk, the local address
//! that reaches it, and the recordings loaded.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;

use crieur_config::campaign::Campaign;
use crieur_config::input::{InputError, InputErrors};
use crieur_dial::DialRules;
use crieur_media::audio::Message;
use crieur_media::uac::{AmdRequest, Credentials, Trunk};

use crate::{Error, Result};

/// The dial protocol's rules of `campaign`, as plain values.
pub fn rules(campaign: &Campaign) -> DialRules {
    DialRules {
        campaign: campaign.id.clone(),
        caps: campaign.caps.clone(),
        retry: campaign.retry.policy(),
    }
}

/// What placing calls needs from a campaign: the trunk, the local address that reaches it,
/// and both recordings loaded (G.711, 8 kHz).
pub struct Prepared {
    pub trunk: Trunk,
    pub local: SocketAddr,
    /// `[trunk] transport`: UDP, TCP or TLS.
    pub transport: crieur_config::campaign::TrunkTransport,
    /// TLS: the name the trunk's certificate must carry (the URI's host) and the extra CA.
    pub tls: crieur_media::uac::TlsTrunk,
    pub message: Arc<Message>,
    pub confirmation: Arc<Message>,
    /// Answering-machine detection (`[amd]`), the voicemail message loaded.
    pub amd: Option<AmdRequest>,
}

/// The local address that routes to `trunk` (so Via/Contact/SDP carry a reachable address).
fn local_ip_towards(trunk: SocketAddr) -> std::io::Result<std::net::IpAddr> {
    let s = UdpSocket::bind(if trunk.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    s.connect(trunk)?;
    Ok(s.local_addr()?.ip())
}

fn config(field: &str, msg: String) -> Error {
    InputErrors(vec![
        InputError::new(Path::new("campaign"), msg).field(field)
    ])
    .into()
}

/// The campaign's trunk resolved, its password read, its recordings loaded. A campaign that
/// cannot place calls (no `[trunk]`, no confirmation recording, no password) is an input
/// error, located.
pub fn prepare(campaign: &Campaign) -> Result<Prepared> {
    let Some(t) = &campaign.trunk else {
        return Err(config(
            "trunk",
            "a [trunk] section is needed to place calls".into(),
        ));
    };
    let Some(confirmation) = &campaign.confirmation else {
        return Err(config(
            "confirmation",
            "an opt-out confirmation recording is needed to place calls".into(),
        ));
    };
    // RFC 3263: SRV for a host name without a port, else its addresses.
    use crieur_config::campaign::TrunkTransport;
    let located = crate::locate::locate(
        &t.host,
        t.port_given.then_some(t.port),
        match t.transport {
            TrunkTransport::Udp => crieur_sip::Transport::Udp,
            TrunkTransport::Tcp => crieur_sip::Transport::Tcp,
            TrunkTransport::Tls => crieur_sip::Transport::Tls,
        },
        t.dns_server,
    )?;
    let address = located
        .first()
        .ok_or_else(|| Error::NoAddress { uri: t.uri.clone() })?;
    let password = t.read_password().map_err(|e| {
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            why.push_str(&format!(": {s}"));
            source = s.source();
        }
        config("trunk.password", why)
    })?;
    let trunk = Trunk {
        address,
        // The Request-URI's host is the URI's: with its port if it gave one (an IPv6
        // address bracketed), never one SRV chose (RFC 3263 §4.2).
        domain: Some(match (t.port_given, t.host.contains(':')) {
            (true, true) => format!("[{}]:{}", t.host, t.port),
            (true, false) => format!("{}:{}", t.host, t.port),
            (false, true) => format!("[{}]", t.host),
            (false, false) => t.host.clone(),
        }),
        from_user: t.from_user.clone(),
        from_domain: t.from_domain.clone(),
        credentials: match (&t.username, password) {
            (Some(u), Some(p)) => Some(Credentials {
                username: u.clone(),
                password: p,
            }),
            _ => None,
        },
        ring_timeout: campaign.ring_timeout,
        max_call_length: t.max_call_length,
        symmetric_rtp: t.symmetric_rtp,
        p_asserted_identity: t.p_asserted_identity.clone(),
        min_session_expires: std::time::Duration::from_secs(crieur_media::uac::MIN_SESSION_EXPIRES),
        servers: if located.by_srv || located.servers.iter().any(|s| s.target.len() > 1) {
            located.servers
        } else {
            Vec::new()
        },
    };
    let message = Arc::new(Message::load(&campaign.message)?);
    let confirmation = Arc::new(Message::load(confirmation)?);
    // The configured SIP address (trunks whitelist IP:port), else the address that routes to
    // the trunk on a port the system picks.
    let local = match t.local_address {
        Some(a) => a,
        None => SocketAddr::new(
            local_ip_towards(address).map_err(|source| Error::Io {
                what: format!("finding the local address that reaches {address}"),
                source,
            })?,
            0,
        ),
    };
    let amd = match &campaign.amd {
        Some(a) => Some(AmdRequest {
            mode: a.mode,
            params: a.params,
            voicemail: match &a.voicemail {
                Some(v) => Some(Arc::new(Message::load(v)?)),
                None => None,
            },
            voicemail_sha256: a.voicemail_sha256.clone(),
        }),
        None => None,
    };
    Ok(Prepared {
        transport: t.transport,
        tls: crieur_media::uac::TlsTrunk {
            server_name: t.host.clone(),
            ca_file: t.tls_ca_file.clone(),
            identity: t.tls_identity.clone().map(|(cert_file, key_file)| {
                crieur_media::listen::TlsIdentity {
                    cert_file,
                    key_file,
                }
            }),
        },
        trunk,
        local,
        message,
        confirmation,
        amd,
    })
}
