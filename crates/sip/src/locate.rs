//! RFC 3263 server location, the pure part: the order in which a trunk's servers are tried
//! (RFC 2782: lowest priority first; within a priority, a weighted random order) and which
//! failures move an INVITE on to the next one (RFC 3263 §4.3). Resolving the names is the
//! I/O edge's (crieur-runner's `locate`); the randomness is an input here.

/// One SRV record's choice (RFC 2782): its priority, its weight and what it leads to (the
/// target's addresses, once resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv<T> {
    pub priority: u16,
    pub weight: u16,
    pub target: T,
}

/// The order to try `records` in (RFC 2782, "Usage rules"): by priority, lowest first;
/// within one priority, each next record picked at random with a probability proportional to
/// its weight (weight-0 records first in the running list, so they are picked only by a draw
/// of 0: rarely when others weigh something). `draw(n)` returns a number in `0..=n`, uniform
/// in use, scripted in tests.
pub fn order<T>(records: Vec<Srv<T>>, mut draw: impl FnMut(u32) -> u32) -> Vec<T> {
    let mut records = records;
    // Stable: records of equal priority keep their order, zero weights first among them.
    records.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut out = Vec::with_capacity(records.len());
    let mut rest = records.into_iter().peekable();
    while let Some(first) = rest.next() {
        let priority = first.priority;
        let mut group = vec![first];
        while let Some(r) = rest.next_if(|r| r.priority == priority) {
            group.push(r);
        }
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let pick = draw(total).min(total);
            // The first record whose running sum reaches the draw.
            let mut sum = 0u32;
            let i = group
                .iter()
                .position(|r| {
                    sum += u32::from(r.weight);
                    sum >= pick
                })
                .unwrap_or(0);
            out.push(group.remove(i).target);
        }
    }
    out
}

/// Whether a final response to an INVITE moves it on to the next server (RFC 3263 §4.3: a 503
/// — the server is unavailable — is treated as a failure to reach it). A timeout or a
/// transport error always does.
pub fn fails_over(status: u16) -> bool {
    status == 503
}

/// The port a transport uses when neither the URI nor an SRV record gives one (RFC 3261
/// §19.1.2): 5061 for TLS, 5060 otherwise.
pub fn default_port(tls: bool) -> u16 {
    if tls {
        5061
    } else {
        5060
    }
}

/// The SRV name to look up for `host` (RFC 3263 §4.2): `_sips._tcp` for TLS, `_sip._tcp` for
/// TCP, `_sip._udp` for UDP.
pub fn srv_name(host: &str, transport: crate::Transport) -> String {
    let service = match transport {
        crate::Transport::Udp => "_sip._udp",
        crate::Transport::Tcp => "_sip._tcp",
        crate::Transport::Tls => "_sips._tcp",
    };
    format!("{service}.{}", host.trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, target: &'static str) -> Srv<&'static str> {
        Srv {
            priority,
            weight,
            target,
        }
    }

    /// A scripted draw: the values in turn (each checked to be within `0..=n`).
    fn script(values: &[u32]) -> impl FnMut(u32) -> u32 + '_ {
        let mut it = values.iter();
        move |n| {
            let v = it.next().copied().unwrap_or(0);
            assert!(v <= n, "draw {v} out of 0..={n}");
            v
        }
    }

    #[test]
    fn lower_priorities_come_first_whatever_the_weights() {
        let got = order(
            vec![
                srv(20, 100, "c"),
                srv(10, 1, "a"),
                srv(30, 0, "d"),
                srv(10, 1, "b"),
            ],
            script(&[2, 1, 0, 0, 0]),
        );
        assert_eq!(got, ["b", "a", "c", "d"]);
    }

    #[test]
    fn within_a_priority_the_draw_picks_by_running_weight() {
        // Weights 60, 30, 10 (total 100): a draw of 0..=60 picks the first, 61..=90 the
        // second, 91..=100 the third; then the rest again.
        let recs = || vec![srv(1, 60, "a"), srv(1, 30, "b"), srv(1, 10, "c")];
        assert_eq!(order(recs(), script(&[60, 30, 10])), ["a", "b", "c"]);
        assert_eq!(order(recs(), script(&[61, 0, 0])), ["b", "a", "c"]);
        assert_eq!(order(recs(), script(&[90, 61, 0])), ["b", "c", "a"]);
        assert_eq!(order(recs(), script(&[91, 0, 0])), ["c", "a", "b"]);
        assert_eq!(order(recs(), script(&[100, 61, 0])), ["c", "b", "a"]);
    }

    #[test]
    fn a_zero_weight_is_picked_only_by_a_draw_of_zero() {
        let recs = || vec![srv(1, 5, "heavy"), srv(1, 0, "zero")];
        assert_eq!(order(recs(), script(&[0, 0])), ["zero", "heavy"]);
        assert_eq!(order(recs(), script(&[1, 0])), ["heavy", "zero"]);
        // All zero: the draw is always 0, the order as given.
        let zeros = vec![srv(1, 0, "x"), srv(1, 0, "y")];
        assert_eq!(order(zeros, script(&[0, 0])), ["x", "y"]);
    }

    #[test]
    fn the_weights_share_the_first_place_in_proportion() {
        // Every draw of 0..=100 once: the first place goes 61 / 30 / 10 times (the draw of 0
        // falls on the first record: RFC 2782's "greater than or equal to" the draw).
        let mut firsts = std::collections::BTreeMap::new();
        for d in 0..=100 {
            let got = order(
                vec![srv(1, 60, "a"), srv(1, 30, "b"), srv(1, 10, "c")],
                script(&[d, 0, 0]),
            );
            *firsts.entry(got[0]).or_insert(0) += 1;
        }
        assert_eq!(
            firsts,
            [("a", 61), ("b", 30), ("c", 10)].into_iter().collect()
        );
    }

    #[test]
    fn an_out_of_range_draw_is_clamped() {
        let got = order(vec![srv(1, 1, "a"), srv(1, 1, "b")], |_| u32::MAX);
        assert_eq!(got, ["b", "a"]);
    }

    #[test]
    fn only_503_fails_over_and_names_and_ports_follow_the_transport() {
        assert!(fails_over(503));
        for s in [400, 403, 404, 408, 480, 486, 500, 502, 504, 600, 603] {
            assert!(!fails_over(s), "{s}");
        }
        use crate::Transport;
        assert_eq!(
            srv_name("trunk.example", Transport::Udp),
            "_sip._udp.trunk.example"
        );
        assert_eq!(
            srv_name("trunk.example.", Transport::Tcp),
            "_sip._tcp.trunk.example"
        );
        assert_eq!(
            srv_name("trunk.example", Transport::Tls),
            "_sips._tcp.trunk.example"
        );
        assert_eq!((default_port(false), default_port(true)), (5060, 5061));
    }
}
