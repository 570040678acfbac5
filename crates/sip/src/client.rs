//! crieur's own client transactions (RFC 3261 §17.1, amended by RFC 6026), sans I/O.
//!
//! The INVITE client transaction (`Calling` → `Proceeding` → `Completed` or `Accepted`; timers
//! A, B, D and RFC 6026's M; the ACK of a non-2xx final built here, with the INVITE's branch)
//! and the non-INVITE one (`Trying` → `Proceeding` → `Completed`; timers E, F, K). Each call
//! ([`ClientLayer::send`], [`ClientLayer::receive`], [`ClientLayer::on_timer`],
//! [`ClientLayer::on_transport_error`]) returns a [`Step`]: what to send, which timers to
//! clear and set (as durations from the caller's `now`), what to tell the transaction user.
//!
//! Written for cost (issue 19, BENCHMARKS.md S1 step 18): sipx-sip's transaction layer keyed
//! every transaction by its `TransactionKey` — three heap vectors, built again for each
//! received response — and kept a parsed copy of each request. Here a transaction is named by
//! the branch we gave it ([`Endpoint`](crate::Endpoint) draws it: `z9hG4bK` and 16 hex
//! digits): a response's top-Via branch is decoded into a `u64` ([`TxId`]) in place, so
//! matching one allocates nothing; the transaction keeps the request's serialised bytes (to
//! retransmit) and its method and CSeq number, not a parsed copy.
//!
//! Matching (RFC 3261 §17.1.3): the top Via's branch and the CSeq method. A CANCEL carries
//! its INVITE's branch (§9.1) but is a transaction of its own, so the id's low bit is the
//! CANCEL's: branches are drawn with it clear.

use std::time::Duration;

use bytes::Bytes;
use sipx_sip::headers::via::first_hop_end;
use sipx_sip::transaction::Reliability;
use sipx_sip::{HeaderName, Limits, Message, Method, Request, Response, Timers};

/// The endpoint's maps: foldhash (see the endpoint's).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// RFC 3261's magic cookie, the start of every branch we draw (§8.1.1.7).
const COOKIE: &[u8] = b"z9hG4bK";

/// A client transaction: its branch's number, with the low bit set for a CANCEL (which
/// shares its INVITE's branch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(u64);

impl TxId {
    /// The transaction of `method` sent with the branch numbered `branch`.
    pub fn new(branch: u64, method: &Method) -> TxId {
        TxId((branch & !1) | u64::from(*method == Method::Cancel))
    }

    /// The branch's number.
    pub fn branch(self) -> u64 {
        self.0 & !1
    }
}

/// The branch parameter we write for the number `n`: `z9hG4bK` and 16 lowercase hex digits.
pub fn branch_param(n: u64) -> [u8; 23] {
    let mut out = [0u8; 23];
    let digits = b"0123456789abcdef";
    for (o, c) in out.iter_mut().zip(COOKIE) {
        *o = *c;
    }
    for (i, o) in out.iter_mut().skip(COOKIE.len()).enumerate() {
        let nibble = (n >> (60 - 4 * i)) & 0xf;
        *o = digits.get(nibble as usize).copied().unwrap_or(b'0');
    }
    out
}

/// The number of a branch of ours (`z9hG4bK` and 16 hex digits), or `None` for any other.
pub fn branch_number(branch: &[u8]) -> Option<u64> {
    let hex = branch.strip_prefix(COOKIE)?;
    if hex.len() != 16 {
        return None;
    }
    let mut n = 0u64;
    for &c in hex {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        n = (n << 4) | u64::from(d);
    }
    Some(n)
}

/// The `branch` parameter of the first hop of a Via value, borrowed.
pub fn via_branch(via: &[u8]) -> Option<&[u8]> {
    let hop = via.get(..first_hop_end(via)).unwrap_or(via);
    hop.split(|&b| b == b';').skip(1).find_map(|p| {
        let (name, value) = match p.iter().position(|&b| b == b'=') {
            Some(i) => (p.get(..i)?, p.get(i + 1..)?),
            None => return None,
        };
        name.trim_ascii()
            .eq_ignore_ascii_case(b"branch")
            .then(|| value.trim_ascii())
    })
}

/// A CSeq value's number and method token, borrowed (`None` if it is not `1*DIGIT LWS
/// token`).
pub fn cseq_parts(v: &[u8]) -> Option<(u32, &[u8])> {
    let v = v.trim_ascii();
    let digits = v.iter().take_while(|b| b.is_ascii_digit()).count();
    let n: u32 = std::str::from_utf8(v.get(..digits)?).ok()?.parse().ok()?;
    let method = v.get(digits..)?.trim_ascii();
    (!method.is_empty() && method.len() < v.len() - digits).then_some((n, method))
}

/// The client transaction a received response belongs to (§17.1.3): the number of its top
/// Via's branch (one of ours) and its CSeq method, with the CSeq number, if `ours(id,
/// method)` (the transaction exists and is of that method). No allocation. An odd branch number is none of ours (we draw them
/// even, a CANCEL reusing its INVITE's): `None`, not our INVITE's transaction.
pub fn response_id(r: &Response, ours: impl Fn(TxId, &[u8]) -> bool) -> Option<(TxId, u32)> {
    let via = r.headers.get(&HeaderName::Via)?.value();
    let n = branch_number(via_branch(&via)?)?;
    if n & 1 == 1 {
        return None;
    }
    let cseq = r.headers.get(&HeaderName::CSeq)?.value();
    let (seq, m) = cseq_parts(&cseq)?;
    let id = TxId(n | u64::from(m == b"CANCEL"));
    // §17.1.3: the CSeq method too (the low bit told CANCEL from the rest only).
    ours(id, m).then_some((id, seq))
}

/// A client transaction's timers (RFC 3261 §17.1, RFC 6026 §8.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// INVITE retransmission (unreliable transports).
    A,
    /// INVITE timeout (64·T1, in `Calling`).
    B,
    /// `Completed` after a non-2xx to an INVITE: absorbs its retransmissions.
    D,
    /// Non-INVITE retransmission (unreliable transports).
    E,
    /// Non-INVITE timeout (64·T1).
    F,
    /// `Completed` of a non-INVITE: absorbs retransmissions of its final.
    K,
    /// RFC 6026's `Accepted`: 2xx retransmissions still reach the transaction user.
    M,
}

impl Timer {
    /// Every timer, each at its index (`Timer as usize`).
    pub const ALL: [Timer; 7] = [
        Timer::A,
        Timer::B,
        Timer::D,
        Timer::E,
        Timer::F,
        Timer::K,
        Timer::M,
    ];

    /// Whether it only ends its transaction (absorbing retransmissions until then).
    pub fn cleanup_only(self) -> bool {
        matches!(self, Timer::D | Timer::K | Timer::M)
    }
}

/// A client transaction's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Calling,
    Trying,
    Proceeding,
    Completed,
    Accepted,
    Terminated,
}

/// What the transaction user is told.
#[derive(Debug)]
pub enum Tu {
    /// A response: every provisional and the final one; in `Accepted`, every further 2xx.
    Response(Response),
    /// Timer B or F: no final response.
    Timeout,
    /// The transport could not deliver.
    TransportError,
}

/// What the caller does for one input, in this order: clear `clear`, send `send`, hand `tu`
/// to the transaction user, set `set` (durations from the input's `now`), and drop the
/// transaction ([`ClientLayer::remove`]) if `terminated`.
#[derive(Debug, Default)]
pub struct Step {
    pub clear: [Option<Timer>; 2],
    pub send: Option<Bytes>,
    pub tu: Option<Tu>,
    pub set: [Option<(Timer, Duration)>; 2],
    pub terminated: bool,
}

/// Where a received response went ([`ClientLayer::receive`]).
#[derive(Debug)]
pub enum Received {
    /// To this transaction, which asks this.
    Matched(TxId, Step),
    /// To none: given back.
    Stray(Response),
}

impl Received {
    /// The matched transaction and its step (tests).
    pub fn matched(self) -> Option<(TxId, Step)> {
        match self {
            Received::Matched(id, s) => Some((id, s)),
            Received::Stray(_) => None,
        }
    }
}

#[derive(Debug)]
struct Tx<U> {
    method: Method,
    seq: u32,
    /// The request's bytes while they may be retransmitted (or a 401/407 answered with
    /// them); dropped in `Accepted` and `Terminated`.
    request: Bytes,
    /// The ACK of a non-2xx final, re-sent to its retransmissions.
    ack: Option<Bytes>,
    state: State,
    interval: Duration,
    user: U,
}

impl<U> Tx<U> {
    fn invite(&self) -> bool {
        self.method == Method::Invite
    }
}

/// The client transactions in flight, each with the caller's data `U` (its owner, its armed
/// timers): one map, one lookup per response.
#[derive(Debug)]
pub struct ClientLayer<U> {
    txs: HashMap<TxId, Tx<U>>,
    timers: Timers,
    reliability: Reliability,
}

impl<U> ClientLayer<U> {
    pub fn new(timers: Timers, reliability: Reliability) -> ClientLayer<U> {
        ClientLayer {
            txs: HashMap::default(),
            timers,
            reliability,
        }
    }

    /// Transactions held (terminated ones until removed).
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// Whether a branch number is in use (by a transaction or its CANCEL).
    pub fn branch_in_use(&self, n: u64) -> bool {
        self.txs.contains_key(&TxId(n & !1)) || self.txs.contains_key(&TxId(n | 1))
    }

    pub fn contains(&self, id: TxId) -> bool {
        self.txs.contains_key(&id)
    }

    pub fn user(&self, id: TxId) -> Option<&U> {
        self.txs.get(&id).map(|t| &t.user)
    }

    pub fn user_mut(&mut self, id: TxId) -> Option<&mut U> {
        self.txs.get_mut(&id).map(|t| &mut t.user)
    }

    /// Every transaction and its data.
    pub fn iter(&self) -> impl Iterator<Item = (TxId, &U)> {
        self.txs.iter().map(|(k, t)| (*k, &t.user))
    }

    pub fn state(&self, id: TxId) -> Option<State> {
        self.txs.get(&id).map(|t| t.state)
    }

    /// The request a transaction sent, parsed again from its bytes (for a challenge's retry;
    /// `None` once the transaction no longer keeps them).
    pub fn request(&self, id: TxId) -> Option<Request> {
        let t = self.txs.get(&id)?;
        match sipx_sip::parse_datagram(t.request.clone(), &Limits::datagram()) {
            Ok(Message::Request(r)) => Some(r),
            _ => None,
        }
    }

    /// Drops a transaction, giving its data back.
    pub fn remove(&mut self, id: TxId) -> Option<U> {
        self.txs.remove(&id).map(|t| t.user)
    }

    /// Starts a transaction for `request` (its bytes), sent with branch `id`: sends it, and
    /// arms A (INVITE) or E (other) on an unreliable transport, and B or F. An id in use is
    /// refused (`None`; nothing is sent).
    pub fn send(
        &mut self,
        id: TxId,
        method: Method,
        seq: u32,
        request: Bytes,
        user: U,
    ) -> Option<Step> {
        if self.txs.contains_key(&id) {
            return None;
        }
        let invite = method == Method::Invite;
        let t1 = self.timers.t1;
        let mut step = Step {
            send: Some(request.clone()),
            ..Step::default()
        };
        if self.reliability == Reliability::Unreliable {
            step.set[0] = Some((if invite { Timer::A } else { Timer::E }, t1));
        }
        step.set[1] = Some((
            if invite { Timer::B } else { Timer::F },
            self.timers.timeout(),
        ));
        self.txs.insert(
            id,
            Tx {
                method,
                seq,
                request,
                ack: None,
                state: if invite {
                    State::Calling
                } else {
                    State::Trying
                },
                interval: t1,
                user,
            },
        );
        Some(step)
    }

    /// A received response: its transaction and what to do, or the response back when it
    /// matches none (the caller's stray path).
    pub fn receive(&mut self, r: Response) -> Received {
        let txs = &self.txs;
        let ours = |id, m: &[u8]| txs.get(&id).is_some_and(|tx| m == tx.method.as_bytes());
        let Some((id, _)) = response_id(&r, ours) else {
            return Received::Stray(r);
        };
        let Some(tx) = self.txs.get_mut(&id) else {
            return Received::Stray(r);
        };
        if tx.invite() && tx.state == State::Completed && r.status.is_success() {
            // Another fork's 2xx after our non-2xx final: not this transaction's (its ACK
            // has the non-2xx's To tag): the caller's stray path ACKs it and ends that
            // dialog.
            return Received::Stray(r);
        }
        let step = if tx.invite() {
            invite_response(tx, r, self.timers, self.reliability)
        } else {
            non_invite_response(tx, r, self.timers, self.reliability)
        };
        Received::Matched(id, step)
    }

    /// A timer of `id` fired.
    pub fn on_timer(&mut self, id: TxId, timer: Timer) -> Step {
        let Some(tx) = self.txs.get_mut(&id) else {
            return Step::default();
        };
        let mut step = Step::default();
        match (tx.state, timer) {
            (State::Calling, Timer::A) => {
                // §17.1.1.2: doubled each time, no cap (B ends it).
                tx.interval = tx.interval.saturating_mul(2);
                step.send = Some(tx.request.clone());
                step.set[0] = Some((Timer::A, tx.interval));
            }
            (State::Trying, Timer::E) => {
                // §17.1.2.2: doubled, capped at T2.
                tx.interval = tx.interval.saturating_mul(2).min(self.timers.t2);
                step.send = Some(tx.request.clone());
                step.set[0] = Some((Timer::E, tx.interval));
            }
            (State::Proceeding, Timer::E) => {
                // After a provisional: every T2.
                tx.interval = self.timers.t2;
                step.send = Some(tx.request.clone());
                step.set[0] = Some((Timer::E, tx.interval));
            }
            // B only from Calling (§17.1.1.2: a ringing phone has no timeout here); F from
            // Trying and Proceeding (§17.1.2.2).
            (State::Calling, Timer::B) | (State::Trying | State::Proceeding, Timer::F) => {
                end(tx);
                step.tu = Some(Tu::Timeout);
                step.terminated = true;
            }
            (State::Completed, Timer::D | Timer::K) | (State::Accepted, Timer::M) => {
                end(tx);
                step.terminated = true;
            }
            _ => {}
        }
        step
    }

    /// The transport could not deliver `id`'s request (§17.1.4): the transaction user is
    /// told and the transaction ends. After its final response (`Completed`: re-sending a
    /// non-2xx's ACK; `Accepted`) the TU already has its outcome: the transaction only ends.
    pub fn on_transport_error(&mut self, id: TxId) -> Step {
        let Some(tx) = self.txs.get_mut(&id) else {
            return Step::default();
        };
        let told = match tx.state {
            State::Terminated => return Step::default(),
            State::Completed | State::Accepted => true,
            State::Calling | State::Trying | State::Proceeding => false,
        };
        end(tx);
        Step {
            tu: (!told).then_some(Tu::TransportError),
            terminated: true,
            ..Step::default()
        }
    }
}

/// In `Completed` the request is kept only if the final is a challenge (401, 407), which
/// the transaction user may answer with it ([`ClientLayer::request`]); else it goes.
fn keep_for_challenge<U>(tx: &mut Tx<U>, r: &Response) {
    if !matches!(r.status.code(), 401 | 407) {
        tx.request = Bytes::new();
    }
}

fn end<U>(tx: &mut Tx<U>) {
    tx.state = State::Terminated;
    tx.request = Bytes::new();
    tx.ack = None;
}

/// §17.1.1.2 and RFC 6026 §8.4.
fn invite_response<U>(
    tx: &mut Tx<U>,
    r: Response,
    timers: Timers,
    reliability: Reliability,
) -> Step {
    let mut step = Step::default();
    let status = r.status;
    match tx.state {
        State::Calling | State::Proceeding => {
            if tx.state == State::Calling {
                step.clear = [Some(Timer::A), Some(Timer::B)];
            }
            if status.is_provisional() {
                tx.state = State::Proceeding;
            } else if status.is_success() {
                // The 2xx's ACK is the dialog's (the TU's), not this transaction's.
                tx.state = State::Accepted;
                tx.request = Bytes::new();
                step.set[0] = Some((Timer::M, timers.timeout()));
            } else {
                // §17.1.1.3: the ACK is this transaction's, with its branch.
                let ack = make_ack(&tx.request, tx.seq, &r);
                step.send.clone_from(&ack);
                tx.ack = ack;
                tx.state = State::Completed;
                keep_for_challenge(tx, &r);
                step.set[0] = Some((Timer::D, timers.timer_d(reliability)));
            }
            step.tu = Some(Tu::Response(r));
        }
        // A retransmitted final: the same ACK again, the TU not told. A late provisional
        // is absorbed (a 2xx never comes here: [`ClientLayer::receive`] gives it back).
        State::Completed if status.code() >= 300 => step.send.clone_from(&tx.ack),
        // RFC 6026: every 2xx reaches the TU (a retransmission, or another fork's).
        State::Accepted if status.is_success() => step.tu = Some(Tu::Response(r)),
        _ => {}
    }
    step
}

/// §17.1.2.2.
fn non_invite_response<U>(
    tx: &mut Tx<U>,
    r: Response,
    timers: Timers,
    reliability: Reliability,
) -> Step {
    let mut step = Step::default();
    if !matches!(tx.state, State::Trying | State::Proceeding) {
        // Completed: retransmissions absorbed.
        return step;
    }
    if r.status.is_provisional() {
        tx.state = State::Proceeding;
    } else {
        tx.state = State::Completed;
        keep_for_challenge(tx, &r);
        step.clear = [Some(Timer::E), Some(Timer::F)];
        step.set[0] = Some((Timer::K, timers.absorb(reliability)));
    }
    step.tu = Some(Tu::Response(r));
    step
}

/// The ACK of a non-2xx final (§17.1.1.3): the INVITE's Request-URI, its top Via alone (same
/// branch), From, Call-ID, CSeq number and Route headers, and its `Authorization` /
/// `Proxy-Authorization` as they are (part of that INVITE's transaction, like its CANCEL: no
/// nonce count of its own); To from the response. `None` if the INVITE's bytes do not parse
/// (they are ours: they do).
fn make_ack(invite: &Bytes, seq: u32, r: &Response) -> Option<Bytes> {
    let Ok(Message::Request(req)) = sipx_sip::parse_datagram(invite.clone(), &Limits::datagram())
    else {
        tracing::warn!("our INVITE's bytes do not parse: no ACK for its non-2xx");
        return None;
    };
    let mut out = Vec::with_capacity(invite.len().min(1024));
    out.extend_from_slice(b"ACK ");
    req.uri.write_to(&mut out);
    out.extend_from_slice(b" SIP/2.0\r\n");
    let via = req.headers.get(&HeaderName::Via)?.value();
    out.extend_from_slice(b"Via: ");
    out.extend_from_slice(via.get(..first_hop_end(&via)).unwrap_or(&via).trim_ascii());
    out.extend_from_slice(b"\r\n");
    for h in [
        req.headers.get(&HeaderName::From),
        r.headers.get(&HeaderName::To),
        req.headers.get(&HeaderName::CallId),
    ]
    .into_iter()
    .flatten()
    .chain(req.headers.get_all(&HeaderName::Route))
    .chain(req.headers.get_all(&HeaderName::Authorization))
    .chain(req.headers.get_all(&HeaderName::ProxyAuthorization))
    {
        h.write_to(&mut out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Max-Forwards: 70\r\nCSeq: ");
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(b" ACK\r\nContent-Length: 0\r\n\r\n");
    Some(Bytes::from(out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const T1: Duration = Duration::from_millis(500);

    fn layer(rel: Reliability) -> ClientLayer<u32> {
        ClientLayer::new(Timers::default(), rel)
    }

    fn request(method: &str, n: u64, seq: u32) -> Bytes {
        let b = String::from_utf8(branch_param(n).to_vec()).unwrap();
        Bytes::from(format!(
            "{method} sip:bob@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch={b};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:a@x>;tag=ft\r\nTo: <sip:bob@10.0.0.2>\r\n\
             Call-ID: cid\r\nCSeq: {seq} {method}\r\nRoute: <sip:p1;lr>\r\nRoute: <sip:p2;lr>\r\n\
             Content-Length: 0\r\n\r\n"
        ))
    }

    fn response(code: u16, n: u64, seq: u32, method: &str) -> Response {
        let b = String::from_utf8(branch_param(n).to_vec()).unwrap();
        let raw = format!(
            "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch={b};rport=5060\r\n\
             From: <sip:a@x>;tag=ft\r\nTo: <sip:bob@10.0.0.2>;tag=tt\r\nCall-ID: cid\r\n\
             CSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n"
        );
        match sipx_sip::parse_datagram(Bytes::from(raw), &Limits::datagram()).unwrap() {
            Message::Response(r) => r,
            Message::Request(_) => unreachable!(),
        }
    }

    fn set(s: &Step, t: Timer) -> Option<Duration> {
        s.set
            .iter()
            .flatten()
            .find(|(x, _)| *x == t)
            .map(|(_, d)| *d)
    }

    fn start(l: &mut ClientLayer<u32>, method: Method, n: u64) -> (TxId, Step) {
        let name = String::from_utf8(method.as_bytes().to_vec()).unwrap();
        let id = TxId::new(n, &method);
        let step = l.send(id, method, 1, request(&name, n, 1), 7).unwrap();
        (id, step)
    }

    #[test]
    fn branches_round_trip_and_others_are_not_ours() {
        for n in [0u64, 2, 0xdead_beef_0000_0010, !1] {
            assert_eq!(branch_number(&branch_param(n)), Some(n));
        }
        assert_eq!(branch_number(b"z9hG4bK123"), None);
        assert_eq!(branch_number(b"z9hG4bK00000000000000zz"), None);
        assert_eq!(branch_number(b"abcdefg0000000000000000"), None);
        assert_eq!(
            via_branch(b"SIP/2.0/UDP h;rport=1; BRANCH = z9hG4bKx ;received=1.2.3.4, SIP/2.0/UDP g;branch=y"),
            Some(&b"z9hG4bKx"[..])
        );
        assert_eq!(via_branch(b"SIP/2.0/UDP h, SIP/2.0/UDP g;branch=y"), None);
        assert_eq!(cseq_parts(b" 12  INVITE "), Some((12, &b"INVITE"[..])));
        assert_eq!(cseq_parts(b"12INVITE"), None);
        assert_eq!(cseq_parts(b"INVITE"), None);
    }

    /// Timer A doubles without a cap (B ends it at 64·T1); the request goes again each time.
    #[test]
    fn timer_a_doubles_and_b_times_out_to_the_tu() {
        let mut l = layer(Reliability::Unreliable);
        let (id, s) = start(&mut l, Method::Invite, 40);
        assert!(s.send.is_some());
        assert_eq!(set(&s, Timer::A), Some(T1));
        assert_eq!(set(&s, Timer::B), Some(T1 * 64));
        let mut expect = T1;
        for _ in 0..6 {
            let s = l.on_timer(id, Timer::A);
            expect *= 2;
            assert_eq!(s.send.as_deref(), Some(&request("INVITE", 40, 1)[..]));
            assert_eq!(set(&s, Timer::A), Some(expect));
        }
        assert_eq!(expect, Duration::from_secs(32));
        let s = l.on_timer(id, Timer::B);
        assert!(matches!(s.tu, Some(Tu::Timeout)));
        assert!(s.terminated && s.send.is_none());
        assert_eq!(l.remove(id), Some(7));
        assert!(l.is_empty());
    }

    /// Timer E doubles up to T2, then stays there; after a provisional it is T2; F times out
    /// to the TU from Proceeding too.
    #[test]
    fn timer_e_doubles_capped_at_t2_and_f_times_out() {
        let mut l = layer(Reliability::Unreliable);
        let (id, s) = start(&mut l, Method::Bye, 80);
        assert_eq!(set(&s, Timer::E), Some(T1));
        assert_eq!(set(&s, Timer::F), Some(T1 * 64));
        let got: Vec<Duration> = (0..5)
            .map(|_| set(&l.on_timer(id, Timer::E), Timer::E).unwrap())
            .collect();
        let ms = |m| Duration::from_millis(m);
        assert_eq!(got, [ms(1000), ms(2000), ms(4000), ms(4000), ms(4000)]);
        let (_, s) = l.receive(response(100, 80, 1, "BYE")).matched().unwrap();
        assert!(matches!(s.tu, Some(Tu::Response(_))));
        let s = l.on_timer(id, Timer::E);
        assert!(s.send.is_some());
        assert_eq!(set(&s, Timer::E), Some(ms(4000)));
        let s = l.on_timer(id, Timer::F);
        assert!(matches!(s.tu, Some(Tu::Timeout)) && s.terminated);
    }

    /// Over TCP/TLS no retransmission timer (A, E) is armed, and D and K are zero.
    #[test]
    fn reliable_transports_arm_no_retransmission_and_zero_d_and_k() {
        let mut l = layer(Reliability::Reliable);
        let (inv, s) = start(&mut l, Method::Invite, 10);
        assert_eq!(set(&s, Timer::A), None);
        assert_eq!(set(&s, Timer::B), Some(T1 * 64));
        let (_, s) = l.receive(response(486, 10, 1, "INVITE")).matched().unwrap();
        assert_eq!(set(&s, Timer::D), Some(Duration::ZERO));
        assert!(l.on_timer(inv, Timer::D).terminated);
        let (_, s) = start(&mut l, Method::Bye, 20);
        assert_eq!(set(&s, Timer::E), None);
        let (_, s) = l.receive(response(200, 20, 1, "BYE")).matched().unwrap();
        assert_eq!(set(&s, Timer::K), Some(Duration::ZERO));
    }

    /// A non-2xx final is ACKed by the transaction (its branch, To from the response, the
    /// INVITE's routes), told once; a retransmission of it gets the same ACK and is absorbed
    /// until timer D.
    #[test]
    fn a_non_2xx_is_acked_with_the_branch_and_d_absorbs_its_retransmission() {
        let mut l = layer(Reliability::Unreliable);
        let (id, _) = start(&mut l, Method::Invite, 64);
        let (got, s) = l.receive(response(486, 64, 1, "INVITE")).matched().unwrap();
        assert_eq!(got, id);
        assert_eq!(s.clear, [Some(Timer::A), Some(Timer::B)]);
        assert!(matches!(&s.tu, Some(Tu::Response(r)) if r.status.code() == 486));
        assert_eq!(set(&s, Timer::D), Some(Duration::from_secs(32)));
        let ack = s.send.unwrap();
        let text = std::str::from_utf8(&ack).unwrap();
        let b = std::str::from_utf8(&branch_param(64)).unwrap().to_owned();
        assert!(
            text.starts_with("ACK sip:bob@10.0.0.2 SIP/2.0\r\n"),
            "{text}"
        );
        assert!(text.contains(&format!("branch={b}")), "{text}");
        assert!(text.contains("To: <sip:bob@10.0.0.2>;tag=tt\r\n"), "{text}");
        assert!(text.contains("CSeq: 1 ACK\r\n"), "{text}");
        assert!(
            text.contains("Route: <sip:p1;lr>\r\nRoute: <sip:p2;lr>\r\n"),
            "{text}"
        );
        assert_eq!(text.matches("Via:").count(), 1);
        // The same final again: the same ACK, nothing to the TU.
        let (_, s) = l.receive(response(486, 64, 1, "INVITE")).matched().unwrap();
        assert_eq!(s.send.as_ref(), Some(&ack));
        assert!(s.tu.is_none() && !s.terminated);
        let s = l.on_timer(id, Timer::D);
        assert!(s.terminated && s.tu.is_none());
        l.remove(id);
        assert!(l
            .receive(response(486, 64, 1, "INVITE"))
            .matched()
            .is_none());
    }

    /// RFC 6026: in Accepted every 2xx (retransmitted, or another fork's) reaches the TU, a
    /// non-2xx does not; timer M ends it.
    #[test]
    fn accepted_passes_every_2xx_up_until_timer_m() {
        let mut l = layer(Reliability::Unreliable);
        let (id, _) = start(&mut l, Method::Invite, 100);
        let (_, s) = l
            .receive(response(180, 100, 1, "INVITE"))
            .matched()
            .unwrap();
        assert!(matches!(&s.tu, Some(Tu::Response(r)) if r.status.code() == 180));
        assert_eq!(l.state(id), Some(State::Proceeding));
        // Timer B does nothing once ringing (§17.1.1.2).
        assert!(!l.on_timer(id, Timer::B).terminated);
        let (_, s) = l
            .receive(response(200, 100, 1, "INVITE"))
            .matched()
            .unwrap();
        assert!(matches!(&s.tu, Some(Tu::Response(r)) if r.status.code() == 200));
        assert!(s.send.is_none(), "a 2xx's ACK is not the transaction's");
        assert_eq!(set(&s, Timer::M), Some(T1 * 64));
        for _ in 0..2 {
            let (_, s) = l
                .receive(response(200, 100, 1, "INVITE"))
                .matched()
                .unwrap();
            assert!(matches!(&s.tu, Some(Tu::Response(r)) if r.status.code() == 200));
        }
        let (_, s) = l
            .receive(response(500, 100, 1, "INVITE"))
            .matched()
            .unwrap();
        assert!(s.tu.is_none() && s.send.is_none());
        assert!(l.on_timer(id, Timer::M).terminated);
    }

    /// A CANCEL carries its INVITE's branch and is a transaction of its own: each response
    /// goes to the transaction of its CSeq method.
    #[test]
    fn a_cancel_is_matched_to_its_own_transaction() {
        let mut l = layer(Reliability::Unreliable);
        let (inv, _) = start(&mut l, Method::Invite, 200);
        let (cancel, _) = start(&mut l, Method::Cancel, 200);
        assert_ne!(inv, cancel);
        assert_eq!(inv.branch(), cancel.branch());
        let (got, s) = l
            .receive(response(200, 200, 1, "CANCEL"))
            .matched()
            .unwrap();
        assert_eq!(got, cancel);
        assert_eq!(set(&s, Timer::K), Some(Duration::from_secs(5)));
        assert_eq!(l.state(inv), Some(State::Calling));
        let (got, _) = l
            .receive(response(487, 200, 1, "INVITE"))
            .matched()
            .unwrap();
        assert_eq!(got, inv);
        assert_eq!(l.state(inv), Some(State::Completed));
    }

    /// A response whose branch is unknown, not ours, or whose CSeq method is not the
    /// transaction's matches nothing and is given back.
    #[test]
    fn unknown_branch_or_method_is_not_matched() {
        let mut l = layer(Reliability::Unreliable);
        let (id, _) = start(&mut l, Method::Invite, 300);
        assert!(l
            .receive(response(200, 302, 1, "INVITE"))
            .matched()
            .is_none());
        assert!(l.receive(response(200, 300, 1, "BYE")).matched().is_none());
        let mut r = response(200, 300, 1, "INVITE");
        r.headers.remove_all(&HeaderName::Via);
        assert!(l.receive(r).matched().is_none());
        assert_eq!(l.state(id), Some(State::Calling));
        assert!(l
            .receive(response(200, 300, 1, "INVITE"))
            .matched()
            .is_some());
    }

    #[test]
    fn a_transport_error_reaches_the_tu_and_ends_the_transaction() {
        let mut l = layer(Reliability::Unreliable);
        let (id, _) = start(&mut l, Method::Info, 400);
        let s = l.on_transport_error(id);
        assert!(matches!(s.tu, Some(Tu::TransportError)) && s.terminated);
        assert!(l.on_transport_error(id).tu.is_none());
    }

    /// After its final response the TU has the outcome: a transport error (re-sending the
    /// non-2xx's ACK in Completed, or in Accepted) ends the transaction without a second one.
    #[test]
    fn a_transport_error_after_the_final_is_not_told_to_the_tu() {
        let mut l = layer(Reliability::Unreliable);
        let (inv, _) = start(&mut l, Method::Invite, 500);
        l.receive(response(486, 500, 1, "INVITE"))
            .matched()
            .unwrap();
        assert_eq!(l.state(inv), Some(State::Completed));
        let s = l.on_transport_error(inv);
        assert!(s.tu.is_none() && s.terminated, "{s:?}");
        let (inv, _) = start(&mut l, Method::Invite, 502);
        l.receive(response(200, 502, 1, "INVITE"))
            .matched()
            .unwrap();
        assert_eq!(l.state(inv), Some(State::Accepted));
        let s = l.on_transport_error(inv);
        assert!(s.tu.is_none() && s.terminated, "{s:?}");
        let (info, _) = start(&mut l, Method::Info, 504);
        l.receive(response(200, 504, 1, "INFO")).matched().unwrap();
        let s = l.on_transport_error(info);
        assert!(s.tu.is_none() && s.terminated, "{s:?}");
    }

    /// In Completed only a retransmitted non-2xx final gets the ACK again: a late
    /// provisional is absorbed, and a 2xx (another fork's) is given back as stray, not
    /// answered with the non-2xx's ACK (whose To tag is not its).
    #[test]
    fn completed_re_acks_only_a_non_2xx_and_gives_a_2xx_back() {
        let mut l = layer(Reliability::Unreliable);
        let (id, _) = start(&mut l, Method::Invite, 600);
        let (_, s) = l
            .receive(response(486, 600, 1, "INVITE"))
            .matched()
            .unwrap();
        let ack = s.send.unwrap();
        let (_, s) = l
            .receive(response(180, 600, 1, "INVITE"))
            .matched()
            .unwrap();
        assert!(s.send.is_none() && s.tu.is_none(), "{s:?}");
        match l.receive(response(200, 600, 1, "INVITE")) {
            Received::Stray(r) => assert_eq!(r.status.code(), 200),
            Received::Matched(_, s) => panic!("a 2xx matched Completed: {s:?}"),
        }
        let (_, s) = l
            .receive(response(486, 600, 1, "INVITE"))
            .matched()
            .unwrap();
        assert_eq!(s.send.as_ref(), Some(&ack));
        assert_eq!(l.state(id), Some(State::Completed));
    }

    /// Branches are drawn even (a CANCEL's low bit is the id's, not the wire's): a response
    /// whose branch number is odd is none of ours, for the INVITE or its CANCEL.
    #[test]
    fn an_odd_branch_matches_no_transaction() {
        let mut l = layer(Reliability::Unreliable);
        let (inv, _) = start(&mut l, Method::Invite, 700);
        let (cancel, _) = start(&mut l, Method::Cancel, 700);
        assert!(l
            .receive(response(200, 701, 1, "INVITE"))
            .matched()
            .is_none());
        assert!(l
            .receive(response(200, 701, 1, "CANCEL"))
            .matched()
            .is_none());
        assert_eq!(l.state(inv), Some(State::Calling));
        assert_eq!(l.state(cancel), Some(State::Trying));
        let (got, _) = l
            .receive(response(200, 700, 1, "CANCEL"))
            .matched()
            .unwrap();
        assert_eq!(got, cancel);
        let (got, _) = l
            .receive(response(200, 700, 1, "INVITE"))
            .matched()
            .unwrap();
        assert_eq!(got, inv);
    }
}
