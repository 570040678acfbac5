//! The endpoint: one transaction layer, the call legs, and the timers — sans I/O.
//!
//! The driver feeds every datagram ([`Endpoint::handle_input`]) and the time
//! ([`Endpoint::handle_timeout`] when [`Endpoint::poll_timeout`] is due), sends what
//! [`Endpoint::poll_transmit`] gives, and reads [`Endpoint::poll_event`]. Calls are placed
//! ([`Endpoint::invite`]) and steered ([`Endpoint::cancel`], [`Endpoint::bye`],
//! [`Endpoint::request`], [`Endpoint::respond`]) by [`CallRef`].
//!
//! A call leg is registered under its Call-ID and local tag from the moment its INVITE leaves,
//! so a request in the dialog (a BYE right behind the 200) always finds it: there is no
//! re-keying on the 2xx.
//!
//! RFC 3261 rules implemented here, each with its unit test below: §8.1.1 (request headers),
//! §9.1 (CANCEL only after a provisional response; same Via, Request-URI, Call-ID, From, To,
//! CSeq number, Route as the INVITE), §12.1.2 / §12.2.1.1 (dialog from the 2xx: remote tag,
//! route set from Record-Route reversed, remote target from Contact; loose and strict
//! routing), §12.2.2 (in-dialog requests matched by Call-ID and both tags: a lower CSeq in
//! that dialog gets 500, an unknown dialog 481; target refresh by re-INVITE/UPDATE),
//! §13.2.2.4 (ACK for each 2xx, with its own branch, the INVITE's CSeq number and
//! credentials, sent again on each retransmitted 2xx; the first 2xx wins and a 2xx from
//! another fork — or one after the call is over — is ACKed then sent a BYE), §13.3.1.4 (the
//! UAS's 2xx retransmitted, T1 doubling to T2, until the ACK, on every transport, or given up
//! at 64·T1), §9.1 (the INVITE given up 64·T1 after our CANCEL), §9.2 (CANCEL received: 200,
//! and 487 to the INVITE), §8.2.2.3 (420 for a `Require` we do not support), §8.2.1 (405
//! with Allow for a method we do not implement; 501 for one we do not recognise, §21.5.2),
//! §18.3 (400 to a malformed request we can answer), §18.2.1 /
//! RFC 3581 (`received` and `rport` stamped on a request's Via; responses sent back to the
//! source port when `rport` was asked), RFC 3581 client side (`;rport` on our Via), and
//! digest authentication of our requests ([`crate::auth`]).

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sipx_sip::headers::via::first_hop_end;
use sipx_sip::transaction::{Dispatch, Output, Reliability, Timer, TuEvent};
use sipx_sip::{
    Header, HeaderName, Host, Message, Method, Request, Response, ResponseBuilder, StatusCode,
    Timers, TransactionKey, TransactionLayer, Uri,
};

use crate::auth::{self, Credentials};
use crate::body;
use crate::client::{self, ClientLayer, Received, Step, Tu, TxId};
use crate::{wire, Error};

/// The endpoint's maps: foldhash, seeded at random for each map (SipHash was ~3 % of S1's
/// profile; the keys — branches, Call-IDs, tags — come off the wire, so the seed is random).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The transport the endpoint's messages travel on (its Via says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    fn via(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    fn reliability(self) -> Reliability {
        match self {
            Transport::Udp => Reliability::Unreliable,
            Transport::Tcp | Transport::Tls => Reliability::Reliable,
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 5061,
            Transport::Udp | Transport::Tcp => 5060,
        }
    }
}

/// How the endpoint presents itself.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address in our Via and Contact (where the far end reaches us).
    pub local: SocketAddr,
    pub transport: Transport,
    pub user_agent: String,
    pub timers: Timers,
    /// The headers of a 200 to OPTIONS and of a 405 (`Allow`, `Accept`, `Supported`).
    pub capabilities: Vec<(String, String)>,
    /// Hand INVITEs from outside any dialog to the caller ([`Event::Incoming`]): a UAS (the
    /// simulator). Without it they get 603: we place calls, we do not take them.
    pub accept_incoming: bool,
}

/// One call to place.
#[derive(Debug, Clone)]
pub struct Invite {
    pub call_id: String,
    pub request_uri: String,
    /// The From URI (our identity).
    pub from: String,
    /// The To URI.
    pub to: String,
    /// Our Contact URI.
    pub contact: String,
    /// Where the INVITE goes (the trunk).
    pub destination: SocketAddr,
    /// The trunk's other servers, in the order to try them (RFC 3263 §4.3, `locate::order`):
    /// when `destination` answers 503, times out or cannot be reached, before anything rang
    /// and unless the call is being cancelled, the INVITE goes to the next (same Call-ID and
    /// From tag, next CSeq, new branch, no credentials).
    pub alternates: Vec<SocketAddr>,
    /// More headers (name, value): `Allow`, `Supported`, `P-Asserted-Identity` …
    pub headers: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    pub credentials: Option<Credentials>,
}

/// A datagram to send.
#[derive(Debug, Clone)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub payload: Bytes,
}

/// A call leg of this endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallRef(u64);

/// One of our requests in a dialog (re-INVITE, UPDATE, INFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestRef(u64);

impl RequestRef {
    /// A request that was never sent (for a driver reporting that it could not send one).
    pub fn none() -> RequestRef {
        RequestRef(0)
    }
}

/// A request received that waits for the caller's answer ([`Endpoint::respond`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerRef(u64);

/// How one of our in-dialog requests ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Response(Box<Response>),
    /// Timer F (or B): no final response.
    Timeout,
    TransportError,
}

/// What happened.
#[derive(Debug, Clone)]
pub enum Event {
    /// A provisional response to our INVITE (100 included).
    Provisional {
        call: CallRef,
        response: Box<Response>,
    },
    /// The first 2xx to our INVITE: the dialog is confirmed and its ACK sent. After a CANCEL
    /// (`after_cancel`: the 2xx crossed it) the endpoint has also sent the BYE.
    Answered {
        call: CallRef,
        response: Box<Response>,
        after_cancel: bool,
        /// The INVITE it answers carried our credentials.
        credentials_sent: bool,
    },
    /// A 2xx to our INVITE that could not be ACKed (a value it set for the dialog — route
    /// set, To tag, target — would break the ACK's header lines): the call was ended (a BYE
    /// sent if one could be) and is not answered; [`Event::Terminated`] follows. Also after
    /// the [`Event::Done`] of a re-INVITE of ours whose 2xx could not be ACKed: the answered
    /// call was ended the same way. Also a 2xx to our INVITE in a dialog we already ended (an
    /// earlier INVITE's 2xx from the same server, with the same To tag, ACKed and sent a
    /// BYE): ACKed, the call ended, not answered.
    AckFailed {
        call: CallRef,
        response: Box<Response>,
    },
    /// A final non-2xx response to our INVITE whose challenge, if any, was not answered.
    /// `credentials_sent`: the INVITE it answers carried our credentials.
    Rejected {
        call: CallRef,
        response: Box<Response>,
        credentials_sent: bool,
    },
    /// No final response to our INVITE: timer B (`timeout`) or a transport error.
    InviteFailed { call: CallRef, timeout: bool },
    /// An INVITE from outside any dialog ([`Config::accept_incoming`]): answer it.
    Incoming {
        call: CallRef,
        server: ServerRef,
        request: Box<Request>,
    },
    /// A re-INVITE or UPDATE in the dialog: answer it ([`Endpoint::respond`]).
    Request {
        call: CallRef,
        server: ServerRef,
        request: Box<Request>,
    },
    /// INFO in the dialog (answered 200).
    Info {
        call: CallRef,
        request: Box<Request>,
    },
    /// The far end's BYE (answered 200).
    Bye { call: CallRef },
    /// The caller cancelled our pending INVITE answer (200 to the CANCEL, 487 sent).
    Cancelled { call: CallRef },
    /// The ACK of our 2xx arrived.
    Acked {
        call: CallRef,
        request: Box<Request>,
    },
    /// Our 2xx was never ACKed (64·T1): RFC 3261 §13.3.1.4 says end the call.
    NoAck { call: CallRef },
    /// One of our in-dialog requests ended.
    Done {
        call: CallRef,
        request: RequestRef,
        outcome: Outcome,
    },
    /// The call's last transaction is over: the endpoint forgot it.
    Terminated { call: CallRef },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Uac,
    Uas,
}

/// What a client or server transaction is to its call.
#[derive(Debug, Clone)]
enum Kind {
    Invite,
    Cancel,
    Bye,
    /// The BYE to a fork's 2xx that lost.
    ForkBye,
    Request(RequestRef),
    /// A request we received (its ServerRef, if the caller answers it).
    Server(Option<ServerRef>),
}

/// A server transaction's owner (sipx-sip's server transactions).
#[derive(Debug)]
struct Owner {
    call: CallRef,
    kind: Kind,
    /// Where its messages go.
    dest: SocketAddr,
}

/// A client transaction's owner and armed timers: the data each of our own client
/// transactions ([`crate::client`]) carries, found with it in one lookup.
#[derive(Debug)]
struct Client {
    call: CallRef,
    kind: Kind,
    /// Where its request (and a non-2xx's ACK) goes.
    dest: SocketAddr,
    /// A BYE or CANCEL that got its final response (or failed): no longer counted among its
    /// call's running transactions, so the call is forgotten then, not when the transaction
    /// ends after timer K (T4, 5 s over UDP, RFC 3261 §17.1.2.2), which only absorbs the
    /// response's retransmissions and needs no call. Holding every hung-up call 5 s longer
    /// was most of S1's memory growth (BENCHMARKS.md).
    settled: bool,
    /// The slot of each armed timer, at `client::Timer as usize` (0: not armed).
    armed: [u64; CLIENT_TIMERS],
    /// A re-INVITE's Authorization / Proxy-Authorization headers, for the ACK of its 2xx
    /// (RFC 3261 §22.1): the transaction drops its request's bytes at the 2xx. Empty for
    /// every other request.
    ack_credentials: Vec<Header>,
    /// A request's outcome was given ([`Event::Done`]): a re-INVITE's 2xx retransmitted
    /// afterwards (RFC 6026's Accepted passes each up) is only ACKed again.
    done: bool,
    /// The digest state of this request and its retries with credentials (RFC 3261 §22.2,
    /// §22.3): a realm answered on *this* request and challenged again means refused; a
    /// later request (a BYE or refresh after a challenged INVITE) starts afresh and answers
    /// its own challenge.
    auth: auth::State,
}

/// A 2xx we (as the UAS) retransmit until its ACK (RFC 3261 §13.3.1.4).
#[derive(Debug)]
struct Pending2xx {
    key: TransactionKey,
    response: Response,
    interval: Duration,
    deadline: Instant,
    cseq: u32,
}

#[derive(Debug)]
struct Call {
    role: Role,
    call_id: String,
    local_tag: String,
    /// `<uri>;tag=…`: the From (UAC) or To (UAS) we send.
    local: Bytes,
    /// The far end's URI (without tag).
    remote_uri: String,
    remote_tag: Option<String>,
    local_cseq: u32,
    /// The far end's last CSeq number in each of its dialogs, by its tag (§12.2.2): one
    /// entry once the dialog is confirmed; a UAC's early dialogs (forks, RFC 3261 §12.1.2)
    /// each count their own.
    remote_cseq: Vec<(Option<String>, u32)>,
    route_set: Vec<String>,
    /// The remote target's URI, shared with [`TargetCache`] (one parse per distinct Contact).
    remote_target: Option<Arc<Uri>>,
    contact: String,
    /// `<contact>`: our Contact header's value in the dialog's requests.
    contact_header: Bytes,
    /// Where requests go when the next hop is not an address (the trunk, or the caller).
    destination: SocketAddr,
    credentials: Option<Credentials>,
    /// The count of each nonce our requests answered (RFC 7616 §3.4), all requests of the
    /// call together.
    nonce_counts: auth::Counts,
    /// UAC: the INVITE as last sent, as the parts it is written from (for CANCEL, ACK, a
    /// credentials retry and a fail-over).
    invite: Option<OutInvite>,
    /// UAC: that INVITE's client transaction.
    invite_tx: Option<TxId>,
    provisional: bool,
    cancel_wanted: bool,
    cancel_sent: bool,
    credentials_sent: bool,
    /// The 2xx's dialog is established (UAC: first 2xx; UAS: our 2xx).
    confirmed: bool,
    /// The final response to our INVITE came (or it failed).
    invite_done: bool,
    /// UAC: the ACK of each 2xx answered, by To tag and CSeq (resent on a retransmitted 2xx).
    acks: Vec<Ack>,
    /// UAC: the CSeq number, credentials and destination of each INVITE of the call sent
    /// before the one in `invite` (answered with credentials, or failed over): a 2xx to one of
    /// them is still ACKed, with its credentials (§13.2.2.4, §22.1), and its ACK and BYE go
    /// where that INVITE went when the 2xx names no address (not to the server failed over
    /// to). Empty unless the INVITE was re-sent.
    earlier: Vec<Earlier>,
    /// UAC: the dialogs of 2xx responses to earlier INVITEs that we ACKed and sent a BYE, by
    /// To tag and the server that INVITE went to: the current INVITE's 2xx in one of them is
    /// a dialog we ended, not the call's (bounded as `acks` is).
    byed: Vec<(String, SocketAddr)>,
    /// UAC: when the first 2xx came (RFC 6026's Accepted state lasts 64·T1 from it).
    answered_at: Option<Instant>,
    /// Requests we sent in the dialog, awaiting an answer: their CSeq numbers (re-INVITE's ACK).
    pending_2xx: Option<Pending2xx>,
    /// Our re-INVITE or UPDATE carrying an offer, until its final response (glare, §14.2).
    offer_out: Option<RequestRef>,
    /// The far end's re-INVITE or UPDATE handed to the caller and not answered yet.
    offer_in: bool,
    /// UAS: the INVITE's server transaction until its final response.
    uas_invite: Option<(TransactionKey, ServerRef)>,
    /// BYE sent or received, or the INVITE failed: nothing more is sent.
    closed: bool,
    /// Transactions still running for it.
    open: u32,
    /// UAC: the servers not tried yet ([`Invite::alternates`]).
    alternates: VecDeque<SocketAddr>,
    /// UAC: a provisional response other than 100 came (something rang: no failover).
    rang: bool,
    /// Of those, our INVITE transactions (kept after the final response only to absorb its
    /// retransmissions: timer D after a failure, RFC 6026's timer M after a 2xx).
    invites_open: u32,
}

impl Call {
    /// A call leg with its identity and where it sends, every piece of dialog and
    /// transaction state empty (the three places that make one set what differs).
    fn with_identity(
        role: Role,
        call_id: String,
        local_tag: String,
        local: Bytes,
        remote_uri: String,
        contact_header: Bytes,
        destination: SocketAddr,
    ) -> Call {
        Call {
            role,
            call_id,
            local_tag,
            local,
            remote_uri,
            remote_tag: None,
            local_cseq: 1,
            remote_cseq: Vec::new(),
            route_set: Vec::new(),
            remote_target: None,
            contact: String::new(),
            contact_header,
            destination,
            credentials: None,
            nonce_counts: auth::Counts::default(),
            invite: None,
            invite_tx: None,
            provisional: false,
            cancel_wanted: false,
            cancel_sent: false,
            credentials_sent: false,
            confirmed: false,
            invite_done: false,
            acks: Vec::new(),
            earlier: Vec::new(),
            byed: Vec::new(),
            answered_at: None,
            pending_2xx: None,
            offer_out: None,
            offer_in: false,
            uas_invite: None,
            closed: false,
            open: 0,
            alternates: VecDeque::new(),
            rang: false,
            invites_open: 0,
        }
    }
}

/// Our INVITE as last sent, kept as what it is written from ([`write_invite`]) — the call's
/// From, To, Call-ID and Contact complete it — rather than as a parsed `Request`: the INVITE,
/// its CANCEL (§9.1), its re-sends with credentials (§22.2) or to another server (RFC 3263)
/// and the credentials of its 2xx's ACK (§22.1) are all serialised from these straight into
/// the endpoint's buffer.
#[derive(Debug)]
struct OutInvite {
    /// The Request-URI (checked once, when the call was placed).
    uri: Uri,
    /// The header lines after Contact (`User-Agent`, the caller's, `Content-Type`), each
    /// CRLF-terminated: checked and written once (and shared while the caller's headers do
    /// not change from one call to the next).
    extra: Bytes,
    /// The `Route` lines among them, which the CANCEL repeats (§9.1).
    routes: Bytes,
    body: Bytes,
    /// The branch number of its top Via (the client transaction's, [`crate::client`]).
    branch: u64,
    seq: u32,
    /// The `Authorization` / `Proxy-Authorization` it carries (one per realm of each name:
    /// an answer replaces the earlier one of its name and realm, §22.3).
    creds: Vec<Header>,
}

/// A request serialised for a client transaction of ours.
#[derive(Debug)]
struct Outgoing {
    id: TxId,
    method: Method,
    seq: u32,
    bytes: Bytes,
    dest: SocketAddr,
    /// A re-INVITE's credentials, for the ACK of its 2xx (see [`Client::ack_credentials`]).
    ack_credentials: Vec<Header>,
}

/// The header lines of our INVITEs after Contact, for one set of the caller's headers and
/// Content-Type ([`OutInvite::extra`], [`OutInvite::routes`], credentials the caller gave).
#[derive(Debug, Default)]
struct InviteHeaders {
    headers: Vec<(String, String)>,
    content_type: Option<String>,
    extra: Bytes,
    routes: Bytes,
    creds: Vec<Header>,
}

/// `Err(BadHeader)` if `value` holds a byte that would break its header line.
fn check_line(name: &str, value: &[u8]) -> Result<(), Error> {
    match value.iter().position(|&b| wire::breaks_line(b)) {
        None => Ok(()),
        Some(at) => Err(Error::BadHeader {
            name: name.to_owned(),
            why: format!("a line break or NUL at byte {at}"),
        }),
    }
}

/// Appends our top Via line for branch number `n`: `prefix` ([`Endpoint::via_prefix`]),
/// `z9hG4bK` and 16 hex digits, `;rport` (RFC 3581).
fn write_via(out: &mut Vec<u8>, prefix: &[u8], n: u64) {
    out.extend_from_slice(prefix);
    out.extend_from_slice(&client::branch_param(n));
    out.extend_from_slice(b";rport\r\n");
}

/// What the INVITE and its CANCEL share, into `out` (cleared first): the request line
/// (`method` with its trailing space) with the INVITE's Request-URI, our Via with the INVITE's
/// branch, Max-Forwards, From, To (no tag) and Call-ID (no line end after it).
fn write_invite_head(out: &mut Vec<u8>, method: &[u8], via: &[u8], c: &Call, inv: &OutInvite) {
    out.clear();
    out.extend_from_slice(method);
    inv.uri.write_to(out);
    out.extend_from_slice(b" SIP/2.0\r\n");
    write_via(out, via, inv.branch);
    out.extend_from_slice(b"Max-Forwards: 70\r\nFrom: ");
    out.extend_from_slice(&c.local);
    out.extend_from_slice(b"\r\nTo: <");
    out.extend_from_slice(c.remote_uri.as_bytes());
    out.extend_from_slice(b">\r\nCall-ID: ");
    out.extend_from_slice(c.call_id.as_bytes());
}

/// The INVITE of `c` as [`OutInvite`] says (RFC 3261 §8.1.1): Request-URI, our Via,
/// Max-Forwards, From (our tag), To (no tag), Call-ID, CSeq, Contact, credentials, the
/// other headers, Content-Length and the body — into `out` (cleared first).
fn write_invite(out: &mut Vec<u8>, via: &[u8], c: &Call, inv: &OutInvite) {
    write_invite_head(out, b"INVITE ", via, c, inv);
    // Writing into a vector cannot fail.
    let _ = write!(out, "\r\nCSeq: {} INVITE\r\nContact: ", inv.seq);
    out.extend_from_slice(&c.contact_header);
    out.extend_from_slice(b"\r\n");
    for h in &inv.creds {
        h.write_to(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&inv.extra);
    let _ = write!(out, "Content-Length: {}\r\n\r\n", inv.body.len());
    out.extend_from_slice(&inv.body);
}

/// The CANCEL of that INVITE (§9.1): its Request-URI, top Via (same branch), From, To,
/// Call-ID, CSeq number and Route headers, and its credentials as they are (the CANCEL is of
/// its transaction, not a new request with a nonce count of its own: a proxy that checks
/// credentials on every request cannot challenge a CANCEL, which is never sent again).
fn write_cancel(out: &mut Vec<u8>, via: &[u8], c: &Call, inv: &OutInvite) {
    write_invite_head(out, b"CANCEL ", via, c, inv);
    let _ = write!(out, "\r\nCSeq: {} CANCEL\r\n", inv.seq);
    out.extend_from_slice(&inv.routes);
    for h in &inv.creds {
        h.write_to(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
}

#[derive(Debug, Clone)]
enum Target {
    /// A server transaction's timer; the key is the one [`Endpoint::armed`] holds (shared,
    /// not copied).
    Tx(Arc<TransactionKey>, Timer),
    /// One of our client transactions' timers.
    Client(TxId, client::Timer),
    Retransmit2xx(CallRef),
    /// 64·T1 after our CANCEL (RFC 3261 §9.1): the INVITE without a final response by then
    /// is given up.
    CancelGiveUp(CallRef),
}

/// The sans-IO SIP endpoint.
#[derive(Debug)]
pub struct Endpoint {
    cfg: Config,
    /// sipx-sip's transaction layer, for the requests we receive (server transactions).
    layer: TransactionLayer,
    /// Our client transactions ([`crate::client`]): responses go there.
    clients: ClientLayer<Client>,
    calls: HashMap<CallRef, Call>,
    /// (Call-ID, local tag) → call.
    dialogs: HashMap<(String, String), CallRef>,
    /// Each transaction's owner. The key is shared (not copied) with the transaction's timers
    /// ([`Target::Tx`], `armed`): a key is three heap vectors.
    owners: HashMap<Arc<TransactionKey>, Owner>,
    servers: HashMap<ServerRef, (TransactionKey, CallRef)>,
    /// Timers: due instant and slot, the slot's target; a cleared timer's slot is gone.
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The timers that only end a transaction kept to absorb retransmissions (D, I, J, K, L):
    /// reported due on a [`CLEANUP_GRID`] grid ([`Endpoint::poll_timeout`]).
    cleanup: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The grid's origin: the first timer armed.
    grid_origin: Option<Instant>,
    slots: HashMap<u64, Target>,
    /// Each transaction's armed timers: the slot of each, at `Timer as usize` (0: not armed).
    /// Its key is shared with the slots' [`Target::Tx`], so arming, clearing and ending a
    /// transaction's timers copies no key — a key is three heap vectors, and a key cloned for
    /// every timer set, cleared, fired and for each of the 13 timers of an ended transaction
    /// was some 40 key copies (120 allocations) per S1 call (BENCHMARKS.md).
    armed: HashMap<Arc<TransactionKey>, [u64; TIMERS]>,
    next_id: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// BYE and CANCEL transactions in flight, until their final response (or failure).
    background: usize,
    /// Calls forgotten within 64·T1 of their 2xx, by (Call-ID, local tag): the ACK of each
    /// 2xx, re-sent if the 2xx comes again (RFC 6026's Accepted state, see
    /// [`Endpoint::accepted`]), and when to forget them, oldest first.
    ended: HashMap<(String, String), Ended>,
    ended_order: VecDeque<(Instant, (String, String))>,
    /// Where each message we send is serialised before its bytes are copied out once
    /// ([`wire::encode`]): grown once, reused for every datagram.
    scratch: Vec<u8>,
    /// The latest `now` the caller gave (for what is dated where no `now` is passed).
    last_now: Option<Instant>,
    /// The last Contact URI [`Endpoint::invite`] found valid, and its header value
    /// (`<uri>`): a loop's calls share one Contact, so its parse and its header are made
    /// once per distinct value rather than per call (BENCHMARKS.md S1 step 37).
    contact_checked: (String, Bytes),
    /// The last Contact read from a message and its URI (the remote target of a dialog).
    targets: TargetCache,
    /// `Config::user_agent` as the value of our User-Agent and Server headers, shared by
    /// every message rather than copied into each.
    ua: Bytes,
    /// The option tags we support: the `Supported` of [`Config::capabilities`], lowercase
    /// (a received request's `Require` is checked against them, RFC 3261 §8.2.2.3).
    supported: Vec<String>,
    /// `Via: SIP/2.0/<transport> <local>;branch=`: the start of our Via line ([`write_via`]).
    via_prefix: Vec<u8>,
    /// The last INVITE header lines written (a loop's calls share them).
    invite_headers: InviteHeaders,
}

/// Server transaction timers (sipx-sip's: RFC 3261 §17 and RFC 6026's).
const TIMERS: usize = Timer::ALL.len();

/// The far end's early dialogs whose CSeq a UAC call tracks (one per fork that sent a
/// request in its early dialog).
const MAX_EARLY_DIALOGS: usize = 8;

/// Our client transactions' timers.
const CLIENT_TIMERS: usize = client::Timer::ALL.len();

const _: () = {
    let mut i = 0;
    while i < CLIENT_TIMERS {
        assert!((client::Timer::ALL[i] as usize) < CLIENT_TIMERS);
        i += 1;
    }
};

/// The grid on which the timers that only end a transaction — D, I, J, K (RFC 3261
/// §17.1.1.2, §17.2.1, §17.2.2, §17.1.2.2) and L (RFC 6026) — and the expiry of a forgotten
/// call's ACKs are reported due: each is served at the first multiple of this (from the
/// first timer armed) at or after its time. They keep a transaction to absorb
/// retransmissions for *at least* their time, sending nothing when they fire; served one by
/// one, each was a wake-up of the caller's loop per call at a low rate (timer K 5 s after a
/// BYE's 200, the ACK's 64·T1 after the 2xx: two of S1's ~5 per call at 200 calls/s,
/// BENCHMARKS.md); on the grid, all those of one second share a wake-up. A transaction lives
/// at most this much longer.
pub const CLEANUP_GRID: Duration = Duration::from_secs(1);

/// Whether a timer only ends its transaction (see [`CLEANUP_GRID`]).
fn cleanup_only(t: Timer) -> bool {
    matches!(t, Timer::D | Timer::I | Timer::J | Timer::K | Timer::L)
}

// `armed` holds a timer at `Timer as usize`: every timer must have its slot (checked at
// compile time; a sipx-sip release adding a timer out of order fails the build here rather
// than arming a timer that can never be cleared).
const _: () = {
    let mut i = 0;
    while i < TIMERS {
        assert!((Timer::ALL[i] as usize) < TIMERS);
        i += 1;
    }
};

/// The ACK of one 2xx to our INVITE: the 2xx's To tag and CSeq number (a 2xx to an earlier
/// INVITE of the call may bear the same To tag), the ACK's bytes, where it went.
type Ack = (String, u32, Bytes, SocketAddr);

/// The ACK kept for the 2xx with `to_tag` to our INVITE `seq`, to send again to its
/// retransmission.
fn kept_ack(acks: &[Ack], to_tag: &str, seq: u32) -> Option<Transmit> {
    acks.iter()
        .find(|(t, s, ..)| t == to_tag && *s == seq)
        .map(|(.., ack, dest)| Transmit {
            destination: *dest,
            payload: ack.clone(),
        })
}

/// What is kept of a UAC call once forgotten, for 64·T1 ([`Endpoint::stray_response`]): the
/// ACK of each 2xx it had (sent again to a retransmission), and what a request in a new
/// dialog from a late 2xx needs (RFC 3261 §13.2.2.4: ACK it, then BYE it).
#[derive(Debug)]
struct Ended {
    acks: Vec<Ack>,
    /// Our From (with our tag), shared with the call's.
    local: Bytes,
    remote_uri: String,
    contact_header: Bytes,
    destination: SocketAddr,
    /// The CSeq number of our last INVITE: a 2xx to it, or an earlier one of the call's.
    invite_seq: u32,
    /// That INVITE's `Authorization`/`Proxy-Authorization` headers: the ACK of a late 2xx
    /// carries them (§13.2.2.4: the same credentials as the INVITE).
    creds: Vec<Header>,
    /// The call's earlier INVITEs' CSeq numbers, credentials, destinations ([`Call::earlier`]).
    earlier: Vec<Earlier>,
}

/// An INVITE of a call sent before its last one ([`Call::earlier`]): its CSeq number, its
/// `Authorization`/`Proxy-Authorization` headers, where it went.
type Earlier = (u32, Vec<Header>, SocketAddr);

/// The body types of an INVITE or UPDATE we take ([`Endpoint::refuse_body`]).
const SDP_BODIES: &[&str] = &["application/sdp"];

/// What `Accept` names for an INVITE or UPDATE (a 415, and the call's 200 to OPTIONS): SDP,
/// alone or in a multipart body.
pub const SDP_ACCEPT: &str = "application/sdp, multipart/mixed, multipart/alternative";

/// The body types of an INFO we take: a key pressed, as carriers send it
/// (`application/dtmf-relay`, `Signal=`/`Duration=` lines) or as `application/dtmf` (the
/// key alone) — what `crieur-media` reads.
const INFO_BODIES: &[&str] = &["application/dtmf-relay", "application/dtmf"];

/// At most this many forgotten calls are remembered ([`Ended`]); past it the oldest go.
const MAX_ENDED: usize = 1 << 16;

/// At most this many 2xx (forks, by To tag) of one INVITE are ACKed and kept: past it a
/// further fork's 2xx is dropped (logged), so a misbehaving forking proxy or a forged 2xx per
/// To tag cannot grow a call's memory without bound. Real forking stays far below it.
const MAX_FORK_ACKS: usize = 8;

/// 16 lowercase hex digits of a random number (a tag): written into a string of that size,
/// without `format!`'s machinery (one per call, BENCHMARKS.md S1 step 37).
fn hex_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = rand::random::<u64>();
    (0..16)
        .rev()
        .map(|i| char::from(HEX[((n >> (i * 4)) & 0xf) as usize]))
        .collect()
}

fn status(code: u16) -> StatusCode {
    StatusCode::new(code).unwrap_or_else(|| StatusCode::new(500).unwrap_or_else(|| unreachable!()))
}

/// The standard reason phrase of the codes the endpoint sends itself.
fn reason_of(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        481 => "Call/Transaction Does Not Exist",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        603 => "Decline",
        _ => "",
    }
}

/// The last Contact value read from a message and its URI, parsed once: a trunk's (or
/// sipp's) 2xx carry the same Contact call after call, and each `Uri::parse` is some four
/// allocations (BENCHMARKS.md S1 step 41). The value compared is the first Contact's, the
/// one [`wire::contact_uri`] reads, so a hit gives the URI a parse would.
#[derive(Debug, Default)]
struct TargetCache(Option<(Vec<u8>, Arc<Uri>)>);

impl TargetCache {
    /// The URI of the first Contact of `h` ([`wire::contact_uri`]), shared.
    fn contact(&mut self, h: &sipx_sip::Headers) -> Option<Arc<Uri>> {
        let v = h.value(&HeaderName::Contact)?;
        if let Some((raw, uri)) = &self.0 {
            if raw[..] == v[..] {
                return Some(Arc::clone(uri));
            }
        }
        let uri = Arc::new(wire::contact_uri(h)?);
        self.0 = Some((v.into_owned(), Arc::clone(&uri)));
        Some(uri)
    }
}

/// Where an address-literal URI points (its port, or the transport's default).
fn uri_addr(u: &Uri, default_port: u16) -> Option<SocketAddr> {
    let ip: IpAddr = match u.host()? {
        Host::Ip(ip) => *ip,
        Host::Name(n) => std::str::from_utf8(n.as_bytes()).ok()?.parse().ok()?,
    };
    Some(SocketAddr::new(ip, u.port().unwrap_or(default_port)))
}

/// A request in the dialog's Request-URI, next hop and, behind a strict router, the last
/// Route (RFC 3261 §12.2.1.1): the remote target (its URI, or the far end's URI before a
/// Contact came) as Request-URI unless the route set's first entry is a strict router, which
/// then becomes the Request-URI and the target the last Route. The next hop's address is read
/// where the URI is, or it is the call's destination.
///
/// The Request-URI is borrowed from the call when it is its remote target (the usual case):
/// a `Uri`'s clone allocates (its parts are boxed), and every ACK and BYE wanted one
/// (BENCHMARKS.md S1 step 37).
fn next_hop(
    c: &Call,
    default_port: u16,
) -> Result<(Cow<'_, Uri>, SocketAddr, Option<String>), Error> {
    let target = match &c.remote_target {
        Some(t) => Cow::Borrowed(&**t),
        None => Cow::Owned(wire::uri(&c.remote_uri)?),
    };
    let first = c.route_set.first().and_then(|r| wire::route_uri(r));
    let (ruri, dest, strict) = match first {
        None => {
            let dest = uri_addr(&target, default_port);
            (target, dest, None)
        }
        Some(f) if wire::is_loose(&f) => (target, uri_addr(&f, default_port), None),
        Some(f) => {
            let dest = uri_addr(&f, default_port);
            (Cow::Owned(f), dest, Some(format!("<{target}>")))
        }
    };
    Ok((ruri, dest.unwrap_or(c.destination), strict))
}

/// The Route headers' values of a request in the dialog ([`next_hop`]'s `strict`: the last
/// one behind a strict router, the router itself then not among them).
fn routes<'a>(c: &'a Call, strict: Option<&'a str>) -> impl Iterator<Item = &'a str> {
    let set = match strict {
        None => &c.route_set[..],
        Some(_) => c.route_set.get(1..).unwrap_or_default(),
    };
    set.iter().map(String::as_str).chain(strict)
}

impl Endpoint {
    pub fn new(cfg: Config) -> Endpoint {
        let supported = cfg
            .capabilities
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Supported") || n.eq_ignore_ascii_case("k"))
            .flat_map(|(_, v)| option_tags(v.as_bytes()))
            .collect();
        Endpoint {
            supported,
            layer: TransactionLayer::new(cfg.timers),
            clients: ClientLayer::new(cfg.timers, cfg.transport.reliability()),
            ua: Bytes::copy_from_slice(cfg.user_agent.as_bytes()),
            via_prefix: format!("Via: SIP/2.0/{} {};branch=", cfg.transport.via(), cfg.local)
                .into_bytes(),
            invite_headers: InviteHeaders::default(),
            cfg,
            calls: HashMap::default(),
            dialogs: HashMap::default(),
            owners: HashMap::default(),
            servers: HashMap::default(),
            heap: BinaryHeap::new(),
            cleanup: BinaryHeap::new(),
            grid_origin: None,
            slots: HashMap::default(),
            armed: HashMap::default(),
            next_id: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            background: 0,
            ended: HashMap::default(),
            ended_order: VecDeque::new(),
            scratch: Vec::new(),
            contact_checked: (String::new(), Bytes::new()),
            targets: TargetCache::default(),
            last_now: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Calls the endpoint still holds.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// Transactions in flight, as (client, server).
    pub fn transactions(&self) -> (usize, usize) {
        (self.clients.len(), self.layer.len().1)
    }

    /// BYE and CANCEL transactions not yet answered with a final response, nor failed (a
    /// process about to exit waits for them; not for timer K, which after the response only
    /// absorbs its retransmissions).
    pub fn background(&self) -> usize {
        self.background
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Our Via for a new request: a fresh branch (RFC 3261 §8.1.1.7) — `z9hG4bK` and 16 hex
    /// digits, even, drawn at random and in use by no transaction of ours: its number names
    /// the client transaction ([`crate::client`]) —, `rport` asked (RFC 3581).
    fn fresh_branch(&self) -> u64 {
        loop {
            let n = rand::random::<u64>() & !1;
            if !self.clients.branch_in_use(n) {
                break n;
            }
        }
    }

    /// [`Endpoint::fresh_branch`]'s Via as a header value (a request re-sent from its
    /// parsed copy: a non-INVITE's credentials retry).
    fn via(&self) -> String {
        format!(
            "SIP/2.0/{} {};branch=z9hG4bK{:016x};rport",
            self.cfg.transport.via(),
            self.cfg.local,
            self.fresh_branch(),
        )
    }

    /// The header lines of an INVITE after its Contact ([`OutInvite::extra`]): our
    /// User-Agent, the caller's headers (each checked as `Header::build` does; a
    /// Content-Length of theirs dropped: ours is the body's), Content-Type. Written once for
    /// a set of headers and shared while the next calls bring the same.
    fn invite_headers(
        &mut self,
        headers: &[(String, String)],
        content_type: Option<&str>,
    ) -> Result<&InviteHeaders, Error> {
        let cached = &self.invite_headers;
        if cached.headers.as_slice() != headers || cached.content_type.as_deref() != content_type {
            check_line("User-Agent", &self.ua)?;
            let mut extra = Vec::with_capacity(128);
            let mut routes = Vec::new();
            let mut creds = Vec::new();
            extra.extend_from_slice(b"User-Agent: ");
            extra.extend_from_slice(&self.ua);
            extra.extend_from_slice(b"\r\n");
            for (n, v) in headers {
                let name = wire::name(n);
                let h = wire::header(&name, Bytes::copy_from_slice(v.as_bytes()))?;
                match name {
                    HeaderName::ContentLength => continue,
                    HeaderName::Authorization | HeaderName::ProxyAuthorization => {
                        creds.push(h);
                        continue;
                    }
                    HeaderName::Route => {
                        h.write_to(&mut routes);
                        routes.extend_from_slice(b"\r\n");
                    }
                    _ => {}
                }
                h.write_to(&mut extra);
                extra.extend_from_slice(b"\r\n");
            }
            if let Some(ct) = content_type {
                check_line("Content-Type", ct.as_bytes())?;
                extra.extend_from_slice(b"Content-Type: ");
                extra.extend_from_slice(ct.as_bytes());
                extra.extend_from_slice(b"\r\n");
            }
            self.invite_headers = InviteHeaders {
                headers: headers.to_vec(),
                content_type: content_type.map(str::to_owned),
                extra: Bytes::from(extra),
                routes: Bytes::from(routes),
                creds,
            };
        }
        Ok(&self.invite_headers)
    }

    // ---- placing calls -------------------------------------------------------------------

    /// Sends an INVITE: a new call leg, registered at once under its Call-ID and From tag.
    pub fn invite(&mut self, now: Instant, inv: Invite) -> Result<CallRef, Error> {
        self.last_now = Some(now);
        let local_tag = hex_id();
        // `<from>;tag=…` written into one vector of its size (no `format!`).
        let mut local = Vec::with_capacity(inv.from.len() + local_tag.len() + 7);
        local.push(b'<');
        local.extend_from_slice(inv.from.as_bytes());
        local.extend_from_slice(b">;tag=");
        local.extend_from_slice(local_tag.as_bytes());
        let local = Bytes::from(local);
        let ruri = wire::uri(&inv.request_uri)?;
        // The To URI is checked unless it is the Request-URI just parsed (a UAC's usual
        // case); the Contact once per distinct value (a loop's calls share it). Each parse
        // is some four allocations (BENCHMARKS.md S1 step 18).
        if inv.to != inv.request_uri {
            wire::uri(&inv.to)?;
        }
        if self.contact_checked.0 != inv.contact || self.contact_checked.1.is_empty() {
            wire::uri(&inv.contact)?;
            let header = Bytes::from(format!("<{}>", inv.contact));
            check_line("Contact", &header)?;
            self.contact_checked = (inv.contact.clone(), header);
        }
        let contact_header = self.contact_checked.1.clone();
        check_line("From", &local)?;
        check_line("To", inv.to.as_bytes())?;
        check_line("Call-ID", inv.call_id.as_bytes())?;
        let hs = self.invite_headers(&inv.headers, inv.content_type.as_deref())?;
        let (extra, routes, creds) = (hs.extra.clone(), hs.routes.clone(), hs.creds.clone());
        let branch = self.fresh_branch();
        let out_invite = OutInvite {
            uri: ruri,
            extra,
            routes,
            body: Bytes::from(inv.body),
            branch,
            seq: 1,
            creds,
        };
        let call = CallRef(self.id());
        let c = Call {
            contact: inv.contact,
            credentials: inv.credentials,
            alternates: inv.alternates.into(),
            ..Call::with_identity(
                Role::Uac,
                inv.call_id.clone(),
                local_tag.clone(),
                local,
                inv.to,
                contact_header,
                inv.destination,
            )
        };
        write_invite(&mut self.scratch, &self.via_prefix, &c, &out_invite);
        let out = Outgoing {
            id: TxId::new(branch, &Method::Invite),
            method: Method::Invite,
            seq: 1,
            bytes: Bytes::copy_from_slice(&self.scratch),
            dest: inv.destination,
            ack_credentials: Vec::new(),
        };
        self.calls.insert(
            call,
            Call {
                invite: Some(out_invite),
                ..c
            },
        );
        self.dialogs.insert((inv.call_id, local_tag), call);
        self.send(now, call, Kind::Invite, out);
        Ok(call)
    }

    /// Starts our client transaction for `req`, built as a `Request` (the retry of an
    /// in-dialog request with credentials), carrying on `auth`: the digest state of the
    /// request it retries.
    fn send_request_auth(
        &mut self,
        now: Instant,
        call: CallRef,
        req: &Request,
        kind: Kind,
        dest: SocketAddr,
        auth: auth::State,
    ) {
        let branch = req
            .headers
            .get(&HeaderName::Via)
            .and_then(|v| client::via_branch(&v.value()).and_then(client::branch_number));
        let seq = req
            .headers
            .get(&HeaderName::CSeq)
            .and_then(|h| client::cseq_parts(&h.value()).map(|(n, _)| n));
        let (Some(branch), Some(seq)) = (branch, seq) else {
            tracing::warn!("a request we built has no branch of ours or no CSeq");
            return;
        };
        let ack_credentials = if matches!(kind, Kind::Request(_)) && req.method == Method::Invite {
            credentials_of(Some(req))
        } else {
            Vec::new()
        };
        let out = Outgoing {
            id: TxId::new(branch, &req.method),
            method: req.method.clone(),
            seq,
            bytes: {
                self.scratch.clear();
                req.write_to(&mut self.scratch);
                Bytes::copy_from_slice(&self.scratch)
            },
            dest,
            ack_credentials,
        };
        let id = out.id;
        self.send(now, call, kind, out);
        if let Some(o) = self.clients.user_mut(id) {
            o.auth = auth;
        }
    }

    /// Starts our client transaction for a request serialised (its branch names the
    /// transaction): the transaction keeps its bytes.
    fn send(&mut self, now: Instant, call: CallRef, kind: Kind, out: Outgoing) {
        let Outgoing {
            id,
            method,
            seq,
            bytes,
            dest,
            ack_credentials,
        } = out;
        let is_invite = matches!(kind, Kind::Invite);
        let background = matches!(kind, Kind::Bye | Kind::Cancel | Kind::ForkBye);
        let owner = Client {
            call,
            kind,
            dest,
            settled: false,
            done: false,
            armed: [0; CLIENT_TIMERS],
            ack_credentials,
            auth: auth::State::default(),
        };
        let Some(step) = self.clients.send(id, method, seq, bytes, owner) else {
            tracing::warn!("a request's branch is in use: not sent");
            return;
        };
        if background {
            self.background += 1;
        }
        if let Some(c) = self.calls.get_mut(&call) {
            c.open += 1;
            if is_invite {
                c.invites_open += 1;
                c.invite_tx = Some(id);
            }
        }
        self.apply_client(now, id, step);
    }

    /// Cancels a call not answered yet: a CANCEL now if a provisional response came, else as
    /// soon as one does (RFC 3261 §9.1); a 2xx that crosses it is ACKed and sent a BYE.
    pub fn cancel(&mut self, now: Instant, call: CallRef) {
        self.last_now = Some(now);
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.role != Role::Uac || c.invite_done || c.cancel_wanted {
            return;
        }
        c.cancel_wanted = true;
        if c.provisional {
            self.send_cancel(now, call);
        }
    }

    fn send_cancel(&mut self, now: Instant, call: CallRef) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.cancel_sent || c.invite.is_none() {
            return;
        }
        c.cancel_sent = true;
        let Some(inv) = c.invite.as_ref() else { return };
        write_cancel(&mut self.scratch, &self.via_prefix, c, inv);
        let out = Outgoing {
            id: TxId::new(inv.branch, &Method::Cancel),
            method: Method::Cancel,
            seq: inv.seq,
            bytes: Bytes::copy_from_slice(&self.scratch),
            dest: c.destination,
            ack_credentials: Vec::new(),
        };
        self.send(now, call, Kind::Cancel, out);
        // §9.1: no final response to the INVITE 64·T1 after the CANCEL: the INVITE's
        // transaction (timer B is off since the provisional) is destroyed then.
        self.arm(now + self.cfg.timers.timeout(), Target::CancelGiveUp(call));
    }

    /// §9.1: 64·T1 after our CANCEL and still no final response to the INVITE: it is
    /// considered cancelled — its client transaction destroyed, the caller told (as for
    /// timer B) and the call forgotten. A 2xx that comes later finds no call
    /// ([`Endpoint::stray_response`]).
    fn cancel_give_up(&mut self, call: CallRef) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.invite_done {
            return;
        }
        tracing::info!(
            ?call,
            "no final response 64·T1 after our CANCEL: the INVITE is given up (RFC 3261 §9.1)"
        );
        c.invite_done = true;
        c.closed = true;
        let tx = c.invite_tx;
        self.events.push_back(Event::InviteFailed {
            call,
            timeout: true,
        });
        if let Some(id) = tx {
            self.client_terminated(id);
        }
        self.reap(call);
    }

    /// Ends an established call with a BYE (with more headers, e.g. `Reason`).
    pub fn bye(
        &mut self,
        now: Instant,
        call: CallRef,
        headers: &[(String, String)],
    ) -> Result<(), Error> {
        self.last_now = Some(now);
        let c = self.calls.get_mut(&call).ok_or(Error::NoCall)?;
        if !c.confirmed {
            return Err(Error::NotNow {
                what: "BYE",
                why: "the call is not established",
            });
        }
        if c.closed {
            return Ok(());
        }
        c.closed = true;
        self.stop_2xx(call);
        let out = self.in_dialog(call, Method::Bye, headers, None, Vec::new())?;
        self.send(now, call, Kind::Bye, out);
        Ok(())
    }

    /// Ends the call whatever its state: BYE if established, CANCEL if ringing, and forgets
    /// it once its transactions end.
    pub fn hang_up(&mut self, now: Instant, call: CallRef) {
        self.last_now = Some(now);
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if c.closed {
            return;
        }
        if c.confirmed {
            let _ = self.bye(now, call, &[]);
        } else if c.role == Role::Uac && !c.invite_done {
            self.cancel(now, call);
        } else if let Some(c) = self.calls.get_mut(&call) {
            c.closed = true;
            self.reap(call);
        }
    }

    /// Sends a request in the established dialog (re-INVITE, UPDATE, INFO); its outcome comes
    /// as [`Event::Done`].
    pub fn request(
        &mut self,
        now: Instant,
        call: CallRef,
        method: Method,
        headers: &[(String, String)],
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<RequestRef, Error> {
        self.last_now = Some(now);
        let c = self.calls.get(&call).ok_or(Error::NoCall)?;
        if !c.confirmed || c.closed {
            return Err(Error::NotNow {
                what: "a request in the dialog",
                why: "the dialog is not established, or it ended",
            });
        }
        let offer = method == Method::Invite || (method == Method::Update && !body.is_empty());
        if offer && (c.offer_out.is_some() || c.offer_in) {
            return Err(Error::NotNow {
                what: "an offer",
                why: "another offer is pending in the dialog (RFC 3261 §14.1, RFC 3311 §5.1)",
            });
        }
        let out = self.in_dialog(call, method, headers, content_type, body)?;
        let r = RequestRef(self.id());
        if offer {
            if let Some(c) = self.calls.get_mut(&call) {
                c.offer_out = Some(r);
            }
        }
        self.send(now, call, Kind::Request(r), out);
        Ok(r)
    }

    /// A request in the dialog (RFC 3261 §12.2.1.1): the next CSeq, the remote target and
    /// route set (loose or strict routing), and the next hop — serialised straight into the
    /// endpoint's buffer (no `Request` built): request line, our Via (a fresh branch),
    /// Max-Forwards, From, To (the remote tag), Call-ID, CSeq, Route set, Contact,
    /// User-Agent, Content-Type, the caller's headers, Content-Length, body. A value that
    /// would break its header line (line break, NUL) is refused, nothing sent.
    fn in_dialog(
        &mut self,
        call: CallRef,
        method: Method,
        headers: &[(String, String)],
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Outgoing, Error> {
        let branch = self.fresh_branch();
        let default_port = self.cfg.transport.default_port();
        let c = self.calls.get_mut(&call).ok_or(Error::NoCall)?;
        c.local_cseq += 1;
        let (ruri, dest, strict) = next_hop(c, default_port)?;
        let mut caller = Vec::with_capacity(headers.len());
        let mut ack_credentials = Vec::new();
        for (n, v) in headers {
            let name = wire::name(n);
            let h = wire::header(&name, Bytes::copy_from_slice(v.as_bytes()))?;
            match name {
                HeaderName::ContentLength => continue,
                HeaderName::Authorization | HeaderName::ProxyAuthorization
                    if method == Method::Invite =>
                {
                    ack_credentials.push(h.clone());
                }
                _ => {}
            }
            caller.push(h);
        }
        check_line("method", method.as_bytes())?;
        check_line("From", &c.local)?;
        check_line("To", c.remote_uri.as_bytes())?;
        check_line("To", c.remote_tag.as_deref().unwrap_or_default().as_bytes())?;
        check_line("Call-ID", c.call_id.as_bytes())?;
        for r in routes(c, strict.as_deref()) {
            check_line("Route", r.as_bytes())?;
        }
        check_line("Contact", &c.contact_header)?;
        check_line("User-Agent", &self.ua)?;
        check_line("Content-Type", content_type.unwrap_or_default().as_bytes())?;
        let out = &mut self.scratch;
        out.clear();
        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        ruri.write_to(out);
        out.extend_from_slice(b" SIP/2.0\r\n");
        write_via(out, &self.via_prefix, branch);
        out.extend_from_slice(b"Max-Forwards: 70\r\nFrom: ");
        out.extend_from_slice(&c.local);
        out.extend_from_slice(b"\r\nTo: <");
        out.extend_from_slice(c.remote_uri.as_bytes());
        out.push(b'>');
        if let Some(t) = &c.remote_tag {
            out.extend_from_slice(b";tag=");
            out.extend_from_slice(t.as_bytes());
        }
        out.extend_from_slice(b"\r\nCall-ID: ");
        out.extend_from_slice(c.call_id.as_bytes());
        // Writing into a vector cannot fail.
        let _ = write!(out, "\r\nCSeq: {} ", c.local_cseq);
        out.extend_from_slice(method.as_bytes());
        out.extend_from_slice(b"\r\n");
        for r in routes(c, strict.as_deref()) {
            out.extend_from_slice(b"Route: ");
            out.extend_from_slice(r.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Contact: ");
        out.extend_from_slice(&c.contact_header);
        out.extend_from_slice(b"\r\nUser-Agent: ");
        out.extend_from_slice(&self.ua);
        out.extend_from_slice(b"\r\n");
        if let Some(ct) = content_type {
            out.extend_from_slice(b"Content-Type: ");
            out.extend_from_slice(ct.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        for h in &caller {
            h.write_to(out);
            out.extend_from_slice(b"\r\n");
        }
        let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
        out.extend_from_slice(&body);
        Ok(Outgoing {
            id: TxId::new(branch, &method),
            seq: c.local_cseq,
            method,
            bytes: Bytes::copy_from_slice(out),
            dest,
            ack_credentials,
        })
    }

    // ---- answering -----------------------------------------------------------------------

    /// Answers a request handed out as [`Event::Incoming`] or [`Event::Request`]. A 2xx to
    /// an INVITE is retransmitted until its ACK.
    pub fn respond(
        &mut self,
        now: Instant,
        server: ServerRef,
        code: u16,
        headers: &[(String, String)],
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(), Error> {
        self.last_now = Some(now);
        let Some((key, call)) = self.servers.get(&server).cloned() else {
            return Err(Error::NoCall);
        };
        let Some(req) = self.layer.server_request(&key).cloned() else {
            self.servers.remove(&server);
            return Err(Error::NoCall);
        };
        let mut extra: Vec<(HeaderName, String)> = headers
            .iter()
            .map(|(n, v)| (wire::name(n), v.clone()))
            .collect();
        if let Some(ct) = content_type {
            extra.push((HeaderName::ContentType, ct.to_owned()));
        }
        let is_invite = req.method == Method::Invite;
        let refresh = matches!(req.method, Method::Invite | Method::Update);
        if refresh && (200..300).contains(&code) {
            // §12.2.2, RFC 3311 §5.2: a target refresh accepted moves the remote target to
            // its Contact (on the 2xx, RFC 6141 §3.4: a refused one changes nothing).
            self.refresh_target(call, &req.headers);
        }
        // A 2xx to an UPDATE carries our Contact as one to an INVITE does (RFC 3311 §5.2).
        if (is_invite && code > 100 && code < 300) || (refresh && (200..300).contains(&code)) {
            if let Some(c) = self.calls.get(&call) {
                extra.push((HeaderName::Contact, format!("<{}>", c.contact)));
                if is_invite && c.role == Role::Uas && !c.confirmed {
                    // §12.1.1: the dialog's Record-Route goes back in the response.
                    for h in req.headers.get_all(&HeaderName::RecordRoute) {
                        extra.push((
                            HeaderName::RecordRoute,
                            String::from_utf8_lossy(&h.value()).into_owned(),
                        ));
                    }
                }
            }
        }
        let resp = self.response(call, &req, code, extra, body)?;
        if code >= 200 {
            self.servers.remove(&server);
            if matches!(req.method, Method::Invite | Method::Update) {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.offer_in = false;
                }
            }
        }
        if is_invite {
            let uas_initial = self
                .calls
                .get(&call)
                .is_some_and(|c| c.uas_invite.as_ref().is_some_and(|(k, _)| *k == key));
            if let Some(c) = self.calls.get_mut(&call) {
                if uas_initial && code >= 200 {
                    c.uas_invite = None;
                    if code < 300 {
                        c.confirmed = true;
                    } else {
                        c.closed = true;
                    }
                }
                if (200..300).contains(&code) {
                    let cseq = wire::cseq(&req.headers).map_or(0, |(n, _)| n);
                    let t1 = self.cfg.timers.t1;
                    c.pending_2xx = Some(Pending2xx {
                        key: key.clone(),
                        response: resp.clone(),
                        interval: t1,
                        deadline: now + self.cfg.timers.timeout(),
                        cseq,
                    });
                    // §13.3.1.4: "even if the transport at the UAS is reliable" — a hop
                    // behind the far end may be UDP, and its retransmitted INVITE is
                    // absorbed by our server transaction: only our 2xx again reaches it.
                    self.arm(now + t1, Target::Retransmit2xx(call));
                }
            }
        }
        let outputs = self.layer.send_response(&key, resp);
        self.apply(now, &key, outputs);
        self.reap(call);
        Ok(())
    }

    /// A target refresh (RFC 3261 §12.2.1.2, §12.2.2; RFC 3311): the remote target becomes
    /// the Contact of `headers` (a 2xx to our refresh, or the far end's refresh we accept),
    /// if it has one. Not in a UAC's early dialogs: its 2xx sets the confirmed dialog's.
    fn refresh_target(&mut self, call: CallRef, headers: &sipx_sip::Headers) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.role == Role::Uac && !c.confirmed {
            return;
        }
        if let Some(target) = self.targets.contact(headers) {
            c.remote_target = Some(target);
        }
    }

    /// A response to `req` from this endpoint: the To tag of the dialog (ours), `extra`.
    fn response(
        &self,
        call: CallRef,
        req: &Request,
        code: u16,
        extra: Vec<(HeaderName, String)>,
        body: Vec<u8>,
    ) -> Result<Response, Error> {
        let bad = |e: sipx_sip::BuildError| Error::BadHeader {
            name: "response".into(),
            why: e.to_string(),
        };
        let mut b = ResponseBuilder::to_request(req, status(code), reason_of(code)).map_err(bad)?;
        let to_tag = wire::tag(&req.headers, &HeaderName::To);
        if to_tag.is_none() && code > 100 {
            let tag = self
                .calls
                .get(&call)
                .map_or_else(hex_id, |c| c.local_tag.clone());
            let to = wire::value(&req.headers, &HeaderName::To).unwrap_or_default();
            // A To the builder refuses to re-emit (control characters in its display name,
            // RFC 4475 §3.1.1.2) goes back as it came, without our tag: an answer without a
            // tag beats none.
            if let Ok(tagged) = wire::header(&HeaderName::To, format!("{to};tag={tag}")) {
                b = b
                    .set_header(&HeaderName::To, tagged.value().into_owned())
                    .map_err(bad)?;
            }
        }
        b = b.header(HeaderName::Server, self.ua.clone()).map_err(bad)?;
        for (n, v) in extra {
            b = b.header(n, v).map_err(bad)?;
        }
        Ok(b.body(Bytes::from(body)).build())
    }

    /// Answers statelessly-created server transactions the caller never sees.
    fn auto_respond(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        call: Option<CallRef>,
        code: u16,
        extra: Vec<(HeaderName, String)>,
    ) {
        let Some(req) = self.layer.server_request(key).cloned() else {
            return;
        };
        let c = call.unwrap_or(CallRef(0));
        match self.response(c, &req, code, extra, Vec::new()) {
            Ok(resp) => {
                let outputs = self.layer.send_response(key, resp);
                self.apply(now, key, outputs);
            }
            Err(e) => tracing::debug!(error = %e, "cannot answer a request"),
        }
    }

    fn capabilities(&self) -> Vec<(HeaderName, String)> {
        self.cfg
            .capabilities
            .iter()
            .map(|(n, v)| (wire::name(n), v.clone()))
            .collect()
    }

    // ---- input ---------------------------------------------------------------------------

    /// One datagram from `from`. Malformed input is dropped (logged at debug), never a panic.
    pub fn handle_input(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        // RFC 5626 §3.5.1 keep-alives (CRLF) carry nothing.
        if datagram.iter().all(|b| b.is_ascii_whitespace()) {
            return;
        }
        let msg = match wire::parse(datagram) {
            Ok(m) => m,
            Err(e) => {
                // §18.3, RFC 4475 §3.1.2: a malformed request whose request line and the
                // headers a response needs can be read is answered 400; anything else
                // (a response, unreadable headers) is dropped.
                match salvage(datagram) {
                    Some(mut req) => {
                        tracing::debug!(%from, error = %e, "a malformed SIP request: 400");
                        stamp_via(&mut req, from);
                        self.stateless(from, &req, 400);
                    }
                    None => tracing::debug!(%from, error = %e, "dropped a malformed SIP datagram"),
                }
                return;
            }
        };
        self.handle_message(now, from, msg);
    }

    /// One parsed message from `from` (a stream transport's framer calls this).
    pub fn handle_message(&mut self, now: Instant, from: SocketAddr, msg: Message) {
        self.last_now = Some(now);
        match msg {
            Message::Request(mut req) => {
                // Stamped first: a refusal goes where any response would (RFC 3581 §4).
                stamp_via(&mut req, from);
                if let Some(code) = refusal(&req) {
                    tracing::debug!(%from, code, "refused a malformed request");
                    self.stateless(from, &req, code);
                    return;
                }
                self.on_request(now, from, req);
            }
            // Responses go to our client transactions, matched by their top Via's branch
            // and CSeq method (no allocation); only one that matched nothing is checked
            // further here, not every response twice.
            // §8.1.3.3: a response with more than one Via value was meant for a proxy
            // (misrouted, or forged): the UAC discards it.
            Message::Response(resp) if wire::via_count(&resp.headers) > 1 => {
                // debug!: a flood of them (misrouted or forged) must not flood the log.
                tracing::debug!(%from, status = resp.status.code(), "dropped a response with more than one Via (RFC 3261 §8.1.3.3)");
            }
            Message::Response(resp) => match self.clients.receive(resp) {
                Received::Matched(id, step) => self.apply_client(now, id, step),
                Received::Stray(r) => {
                    if wire::cseq(&r.headers).is_none() || wire::top_via(&r.headers).is_none() {
                        tracing::debug!(%from, "dropped a response without CSeq or Via");
                        return;
                    }
                    self.stray_response(now, r);
                }
            },
        }
    }

    /// Answers a request without a transaction (it cannot have one: it is malformed); an ACK
    /// or a request whose response cannot be built (no Via, From, To, Call-ID, CSeq) is only
    /// dropped.
    /// Its To gets a tag (§8.2.6.2), its Via is the one [`stamp_via`] stamped (`received`,
    /// `rport`).
    fn stateless(&mut self, from: SocketAddr, req: &Request, code: u16) {
        if req.method == Method::Ack {
            return;
        }
        let Ok(resp) = self.response(CallRef(0), req, code, Vec::new(), Vec::new()) else {
            return;
        };
        // On a connection, back on it (§18.2.2).
        let dest = if self.cfg.transport.reliability() == Reliability::Reliable {
            from
        } else {
            response_destination(req, from, self.cfg.transport.default_port())
        };
        self.transmits.push_back(Transmit {
            destination: dest,
            payload: wire::encode(&mut self.scratch, &Message::Response(resp)),
        });
    }

    fn on_request(&mut self, now: Instant, from: SocketAddr, req: Request) {
        // §18.2.2: on a connection, responses go back on it (the source address names it).
        let dest = if self.cfg.transport.reliability() == Reliability::Reliable {
            from
        } else {
            response_destination(&req, from, self.cfg.transport.default_port())
        };
        let method = req.method.clone();
        match self
            .layer
            .receive(Message::Request(req), self.cfg.transport.reliability())
        {
            Dispatch::Matched { key, outputs } => self.apply(now, &key, outputs),
            Dispatch::Created { key, outputs } => {
                let call = self.match_dialog_of(&key);
                let key = Arc::new(key);
                self.owners.insert(
                    Arc::clone(&key),
                    Owner {
                        call: call.unwrap_or(CallRef(0)),
                        kind: Kind::Server(None),
                        dest,
                    },
                );
                if let Some(c) = call.and_then(|c| self.calls.get_mut(&c)) {
                    c.open += 1;
                }
                self.apply(now, &key, outputs);
            }
            Dispatch::Unmatched(m) => {
                if let Message::Request(r) = *m {
                    if method == Method::Ack {
                        self.on_ack(now, r);
                    }
                }
            }
        }
    }

    fn match_dialog_of(&self, key: &TransactionKey) -> Option<CallRef> {
        let req = self.layer.server_request(key)?;
        self.dialog_of(&req.headers)
    }

    /// The call whose dialog a request from the far end is in (RFC 3261 §12, §12.2.2): its
    /// Call-ID, its To tag ours, and its From tag the far end's — a request from another
    /// tag (a fork that lost, a stale or forged one) is in no dialog of ours (481), never
    /// the confirmed call's. A UAC's early dialogs take any From tag (each fork's).
    fn dialog_of(&self, headers: &sipx_sip::Headers) -> Option<CallRef> {
        let call_id = wire::call_id(headers)?;
        let tag = wire::tag(headers, &HeaderName::To)?;
        let call = *self.dialogs.get(&(call_id, tag))?;
        let c = self.calls.get(&call)?;
        let early = c.role == Role::Uac && !c.confirmed;
        (early || wire::tag(headers, &HeaderName::From) == c.remote_tag).then_some(call)
    }

    /// An ACK outside any transaction: the ACK of a 2xx (ours as the UAS).
    fn on_ack(&mut self, _now: Instant, ack: Request) {
        let Some(call) = self.dialog_of(&ack.headers) else {
            return;
        };
        let seq = wire::cseq(&ack.headers).map(|(n, _)| n);
        let acked = self
            .calls
            .get(&call)
            .and_then(|c| c.pending_2xx.as_ref())
            .is_some_and(|p| Some(p.cseq) == seq);
        if acked {
            self.stop_2xx(call);
            self.events.push_back(Event::Acked {
                call,
                request: Box::new(ack),
            });
            self.reap(call);
        }
    }

    fn stop_2xx(&mut self, call: CallRef) {
        if let Some(c) = self.calls.get_mut(&call) {
            c.pending_2xx = None;
        }
    }

    /// A response no transaction took: a 2xx to our INVITE after its transaction ended
    /// (see [`Endpoint::accepted`]): while the call lives, handled as its transaction would
    /// have passed it on — the same 2xx ACKed again, another fork's ACKed and sent a BYE —;
    /// after, ACKed again until 64·T1 after the first 2xx. Also another fork's 2xx after our
    /// INVITE's non-2xx final (which its transaction took and ACKed): the transaction gives
    /// it back (its ACK is not the non-2xx's), and the call, kept while that transaction
    /// absorbs retransmissions (timer D), ACKs it and sends that dialog a BYE (RFC 3261
    /// §13.2.2.4: every 2xx is ACKed; the call failed, so the dialog is ended). After the
    /// call is forgotten, for 64·T1 ([`Ended`]): the same 2xx ACKed again, and a 2xx from a
    /// dialog the call never had (another fork's, one after timer B or the CANCEL given up)
    /// ACKed then sent a BYE.
    fn stray_response(&mut self, now: Instant, r: Response) {
        let Some((seq, method)) = wire::cseq(&r.headers) else {
            return;
        };
        if !r.status.is_success() || method != Method::Invite {
            return;
        }
        let Some(call_id) = wire::call_id(&r.headers) else {
            return;
        };
        let Some(tag) = wire::tag(&r.headers, &HeaderName::From) else {
            return;
        };
        let Some(to_tag) = wire::tag(&r.headers, &HeaderName::To) else {
            return;
        };
        let key = (call_id, tag);
        if let Some(&call) = self.dialogs.get(&key) {
            let Some(c) = self.calls.get(&call).filter(|c| c.role == Role::Uac) else {
                return;
            };
            // A 2xx to the INVITE that set the dialog up, or that failed (not to a
            // re-INVITE of ours, whose own transaction takes its 2xx).
            if c.invite.as_ref().map(|i| i.seq) == Some(seq) {
                if c.confirmed || c.invite_done {
                    self.invite_2xx(now, call, r);
                }
                return;
            }
            // A 2xx to an earlier INVITE of the call (re-sent with credentials or to another
            // server): ACKed now with that INVITE's credentials, and its dialog — unless it
            // is the call's own — sent a BYE (§13.2.2.4, §17.1.1.3, RFC 6026), not left to
            // the far end's retransmissions until the call is forgotten.
            if let Some((_, creds, dest)) = c.earlier.iter().find(|(s, ..)| *s == seq).cloned() {
                self.earlier_2xx(now, call, seq, &r, &creds, dest);
            }
            return;
        }
        self.forget_ended(now);
        let Some(e) = self.ended.get(&key) else {
            return;
        };
        if let Some(t) = kept_ack(&e.acks, &to_tag, seq) {
            self.transmits.push_back(t);
            return;
        }
        // Only a 2xx to one of the call's INVITEs (not a re-INVITE's, whose transaction is
        // over): ACKed with that INVITE's credentials.
        let (creds, destination) = if seq == e.invite_seq {
            (e.creds.clone(), e.destination)
        } else {
            match e.earlier.iter().find(|(s, ..)| *s == seq) {
                Some((_, h, d)) => (h.clone(), *d),
                None => return,
            }
        };
        if e.acks.len() >= MAX_FORK_ACKS {
            tracing::info!(call_id = %key.0, "a late 2xx past the forks kept for a call: dropped");
            return;
        }
        // A dialog the call never had: rebuilt for the time of its ACK and BYE (the BYE's
        // transaction belongs to no call), its ACK kept for the 2xx's retransmissions.
        self.next_id += 1;
        let tmp = CallRef(self.next_id);
        let c = Call {
            local_cseq: e.invite_seq,
            invite_done: true,
            closed: true,
            ..Call::with_identity(
                Role::Uac,
                key.0.clone(),
                key.1.clone(),
                e.local.clone(),
                e.remote_uri.clone(),
                e.contact_header.clone(),
                destination,
            )
        };
        tracing::info!(
            call_id = %key.0,
            "a 2xx to an INVITE whose call is over: ACKed and sent a BYE (RFC 3261 §13.2.2.4)"
        );
        self.calls.insert(tmp, c);
        self.fork_bye(now, tmp, seq, &r, Some(&creds), true);
        if let Some(c) = self.calls.remove(&tmp) {
            if let Some(e) = self.ended.get_mut(&key) {
                e.acks.extend(c.acks);
            }
        }
    }

    /// A 2xx to an earlier INVITE of the live `call` (sent `creds`): the same 2xx again gets
    /// its ACK again; one from the call's confirmed dialog (the same To tag) is ACKed; any
    /// other — another dialog, or one while the call still waits on its current INVITE — is
    /// ACKed and sent a BYE: the call goes on with the INVITE it sent last. `dest` is where
    /// that INVITE went: the ACK and BYE go there unless the 2xx names an address.
    fn earlier_2xx(
        &mut self,
        now: Instant,
        call: CallRef,
        seq: u32,
        r: &Response,
        creds: &[Header],
        dest: SocketAddr,
    ) {
        let Some(to_tag) = wire::tag(&r.headers, &HeaderName::To) else {
            return;
        };
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if let Some(t) = kept_ack(&c.acks, &to_tag, seq) {
            self.transmits.push_back(t);
            return;
        }
        if c.acks.len() >= MAX_FORK_ACKS {
            tracing::info!("a 2xx to an earlier INVITE past the forks kept for a call: dropped");
            return;
        }
        tracing::info!(
            call_id = %c.call_id,
            seq,
            "a 2xx to an earlier INVITE of a live call: ACKed (RFC 3261 §13.2.2.4)"
        );
        // The call's own dialog: its To tag, from the server the call's INVITE went to (a
        // server failed over from that picked the same tag is another dialog).
        if c.confirmed && c.remote_tag.as_deref() == Some(to_tag.as_str()) && c.destination == dest
        {
            self.send_ack(now, call, seq, Some(to_tag), Some(creds));
        } else {
            // The call's destination is the server failed over to, not this INVITE's.
            let current = self.calls.get_mut(&call).map(|c| {
                c.byed.push((to_tag.clone(), dest));
                std::mem::replace(&mut c.destination, dest)
            });
            self.fork_bye(now, call, seq, r, Some(creds), true);
            if let (Some(c), Some(d)) = (self.calls.get_mut(&call), current) {
                c.destination = d;
            }
        }
    }

    /// Whether `key` is our INVITE's client transaction (not a re-INVITE's): once its 2xx
    /// came, the endpoint ends it at once instead of keeping it (and the INVITE it holds,
    /// ~8 KB with its call) 64·T1 in RFC 6026's Accepted state, and does that state's work
    /// itself from the dialog: a later 2xx matches no transaction and comes to
    /// [`Endpoint::stray_response`], which ACKs it again or, from another fork, ACKs it and
    /// sends a BYE — what the transaction would have passed on for. After the call is
    /// forgotten, its ACKs alone are kept until 64·T1 after the first 2xx.
    fn accepted(&self, id: TxId) -> bool {
        self.clients
            .user(id)
            .is_some_and(|o| matches!(o.kind, Kind::Invite))
    }

    /// Drops the ACKs of forgotten calls whose 64·T1 is over.
    fn forget_ended(&mut self, now: Instant) {
        while let Some((until, _)) = self.ended_order.front() {
            if *until > now {
                break;
            }
            if let Some((_, key)) = self.ended_order.pop_front() {
                self.ended.remove(&key);
            }
        }
    }

    // ---- transaction outputs -------------------------------------------------------------

    fn apply(&mut self, now: Instant, key: &TransactionKey, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Send(m) => {
                    let Some(dest) = self.owners.get(key).map(|o| o.dest) else {
                        continue;
                    };
                    self.transmits.push_back(Transmit {
                        destination: dest,
                        payload: wire::encode(&mut self.scratch, &m),
                    });
                }
                Output::SetTimer { timer, after } => {
                    let shared = match self.owners.get_key_value(key) {
                        Some((k, _)) => Arc::clone(k),
                        None => match self.armed.get_key_value(key) {
                            Some((k, _)) => Arc::clone(k),
                            None => Arc::new(key.clone()),
                        },
                    };
                    self.arm(now + after, Target::Tx(shared, timer));
                }
                Output::ClearTimer(timer) => {
                    let armed = self.armed.get_mut(key);
                    if let Some(s) = armed.and_then(|a| a.get_mut(timer as usize)) {
                        let old = std::mem::take(s);
                        self.slots.remove(&old);
                    }
                }
                Output::ToTu(ev) => self.on_tu(now, key, *ev),
                Output::Terminated(_) => self.terminated(key),
                _ => {}
            }
        }
    }

    /// Does what one of our client transactions asks ([`Step`]), in its order: timers
    /// cleared, the datagram sent, the transaction user told, timers set, the transaction
    /// dropped.
    fn apply_client(&mut self, now: Instant, id: TxId, step: Step) {
        let Step {
            clear,
            send,
            tu,
            set,
            terminated,
        } = step;
        for t in clear.into_iter().flatten() {
            let armed = self.clients.user_mut(id).map(|c| &mut c.armed);
            if let Some(s) = armed.and_then(|a| a.get_mut(t as usize)) {
                let old = std::mem::take(s);
                self.slots.remove(&old);
            }
        }
        if let Some(payload) = send {
            if let Some(dest) = self.clients.user(id).map(|c| c.dest) {
                self.transmits.push_back(Transmit {
                    destination: dest,
                    payload,
                });
            }
        }
        if let Some(tu) = tu {
            self.on_client_tu(now, id, tu);
        }
        for (timer, after) in set.into_iter().flatten() {
            if !self.clients.contains(id) {
                break;
            }
            if timer == client::Timer::M && self.accepted(id) {
                // Our INVITE's Accepted state is the dialog's ([`Endpoint::accepted`]).
                let step = self.clients.on_timer(id, client::Timer::M);
                self.apply_client(now, id, step);
                continue;
            }
            self.arm(now + after, Target::Client(id, timer));
        }
        if terminated {
            self.client_terminated(id);
        }
    }

    /// One of our client transactions ended: its timers go, its call counts it no more.
    fn client_terminated(&mut self, id: TxId) {
        let Some(o) = self.clients.remove(id) else {
            return;
        };
        for slot in o.armed {
            self.slots.remove(&slot);
        }
        // Uncounted at its final response ([`Endpoint::settle`]) if it got one.
        if !o.settled && matches!(o.kind, Kind::Bye | Kind::Cancel | Kind::ForkBye) {
            self.background = self.background.saturating_sub(1);
        }
        if let Some(c) = self.calls.get_mut(&o.call).filter(|_| !o.settled) {
            c.open = c.open.saturating_sub(1);
            if matches!(o.kind, Kind::Invite) {
                c.invites_open = c.invites_open.saturating_sub(1);
            }
        }
        self.reap(o.call);
    }

    fn arm(&mut self, at: Instant, target: Target) {
        let slot = self.id();
        self.grid_origin.get_or_insert(at);
        let mut cleanup = false;
        if let Target::Tx(k, t) = &target {
            let armed = self.armed.entry(Arc::clone(k)).or_insert([0; TIMERS]);
            if let Some(s) = armed.get_mut(*t as usize) {
                let old = std::mem::replace(s, slot);
                self.slots.remove(&old);
            }
            cleanup = cleanup_only(*t);
        }
        if let Target::Client(id, t) = &target {
            let armed = self.clients.user_mut(*id).map(|c| &mut c.armed);
            if let Some(s) = armed.and_then(|a| a.get_mut(*t as usize)) {
                let old = std::mem::replace(s, slot);
                self.slots.remove(&old);
            }
            cleanup = t.cleanup_only();
        }
        // Usually moot (the INVITE's 487 came long before): on the grid, not a wake-up of
        // its own per cancelled call.
        cleanup |= matches!(target, Target::CancelGiveUp(_));
        self.slots.insert(slot, target);
        let heap = if cleanup {
            &mut self.cleanup
        } else {
            &mut self.heap
        };
        heap.push(Reverse((at, slot)));
    }

    /// `t` moved up to the [`CLEANUP_GRID`] (itself if on it): the first grid step at or
    /// after it, the grid running both ways from its origin.
    fn on_grid(&self, t: Instant) -> Instant {
        let Some(origin) = self.grid_origin else {
            return t;
        };
        let grid = CLEANUP_GRID.as_nanos();
        let step = |n: u128| Duration::from_nanos(u64::try_from(n * grid).unwrap_or(u64::MAX));
        let on = if t >= origin {
            origin.checked_add(step((t - origin).as_nanos().div_ceil(grid)))
        } else {
            origin.checked_sub(step((origin - t).as_nanos() / grid))
        };
        on.unwrap_or(t).max(t)
    }

    fn terminated(&mut self, key: &TransactionKey) {
        for slot in self.armed.remove(key).into_iter().flatten() {
            self.slots.remove(&slot);
        }
        let Some(owner) = self.owners.remove(key) else {
            return;
        };
        if let Kind::Server(Some(s)) = owner.kind {
            self.servers.remove(&s);
        }
        if let Some(c) = self.calls.get_mut(&owner.call) {
            c.open = c.open.saturating_sub(1);
        }
        self.reap(owner.call);
    }

    /// Forgets a call that is over and has nothing left running but INVITE transactions
    /// absorbing retransmissions of their final response (they need no call: the one of a
    /// failure re-sends its own ACK; a 2xx retransmitted after the dialog ended — impossible
    /// once the far end answered our BYE or sent its own — is not ACKed again).
    fn reap(&mut self, call: CallRef) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let over = c.closed || (c.role == Role::Uac && c.invite_done && !c.confirmed);
        let running = c.open - c.invites_open.min(c.open) * u32::from(c.invite_done);
        if over && running == 0 && c.pending_2xx.is_none() && c.uas_invite.is_none() {
            if let Some(c) = self.calls.remove(&call) {
                let key = (c.call_id, c.local_tag);
                self.dialogs.remove(&key);
                // Its 2xx may still come again until 64·T1 after the first (RFC 6026); a
                // call never answered (non-2xx final, timer B, given up after the CANCEL) may
                // still get a fork's 2xx, within 64·T1 of its end (§13.2.2.4).
                let timeout = self.cfg.timers.timeout();
                let until = c
                    .answered_at
                    .map_or_else(|| self.last_now.map(|n| n + timeout), |t| Some(t + timeout));
                let invite_seq = c.invite.as_ref().map(|i| i.seq);
                if let (Some(until), Some(invite_seq), Role::Uac) = (until, invite_seq, c.role) {
                    if self.ended.len() >= MAX_ENDED {
                        if let Some((_, old)) = self.ended_order.pop_front() {
                            self.ended.remove(&old);
                        }
                    }
                    let e = Ended {
                        acks: c.acks,
                        local: c.local,
                        remote_uri: c.remote_uri,
                        contact_header: c.contact_header,
                        destination: c.destination,
                        invite_seq,
                        creds: c.invite.map(|i| i.creds).unwrap_or_default(),
                        earlier: c.earlier,
                    };
                    self.ended.insert(key.clone(), e);
                    self.ended_order.push_back((until, key));
                }
            }
            self.events.push_back(Event::Terminated { call });
        }
    }

    /// A server transaction's event (sipx-sip's).
    fn on_tu(&mut self, now: Instant, key: &TransactionKey, ev: TuEvent) {
        if !self.owners.contains_key(key) {
            return;
        }
        match ev {
            TuEvent::Request(r) => self.server_request(now, key, *r),
            TuEvent::Ack(a) => self.on_ack(now, *a),
            // Timer H: our non-2xx final to an INVITE never ACKed; nothing to do.
            _ => {}
        }
    }

    /// What one of our client transactions tells its user.
    fn on_client_tu(&mut self, now: Instant, id: TxId, tu: Tu) {
        let Some((call, kind)) = self.clients.user(id).map(|o| (o.call, o.kind.clone())) else {
            return;
        };
        // A BYE or CANCEL is over for its call at its final response (after a retry with
        // credentials, if any, has been sent: that one counts on its own).
        let settles = matches!(kind, Kind::Bye | Kind::Cancel | Kind::ForkBye)
            && match &tu {
                Tu::Response(r) => r.status.is_final(),
                Tu::Timeout | Tu::TransportError => true,
            };
        self.on_client_event(now, id, call, kind, tu);
        if settles {
            self.settle(id);
        }
    }

    /// A BYE or CANCEL's call stops counting it (see [`Client::settled`]), and is forgotten
    /// if nothing else runs for it.
    fn settle(&mut self, id: TxId) {
        let Some(o) = self.clients.user_mut(id).filter(|o| !o.settled) else {
            return;
        };
        o.settled = true;
        // What is left of it (absorbing its response's retransmissions until timer K) is
        // nothing an exiting process must wait for.
        self.background = self.background.saturating_sub(1);
        let call = o.call;
        if let Some(c) = self.calls.get_mut(&call) {
            c.open = c.open.saturating_sub(1);
        }
        self.reap(call);
    }

    fn on_client_event(&mut self, now: Instant, id: TxId, call: CallRef, kind: Kind, tu: Tu) {
        match (kind, tu) {
            (Kind::Invite, Tu::Response(r)) => self.invite_response(now, call, id, r),
            (Kind::Invite, tu @ (Tu::Timeout | Tu::TransportError)) => {
                // An earlier server's transaction ending (after a failover) fails nothing.
                let current = self.calls.get(&call).and_then(|c| c.invite_tx);
                if current != Some(id) || self.fail_over(now, call, id) {
                    return;
                }
                if let Some(c) = self.calls.get_mut(&call) {
                    if !c.invite_done {
                        c.invite_done = true;
                        c.closed = true;
                        let timeout = matches!(tu, Tu::Timeout);
                        self.events.push_back(Event::InviteFailed { call, timeout });
                    }
                }
            }
            // A challenge answered: the request goes again in a new transaction.
            (Kind::Bye | Kind::Request(_), Tu::Response(r))
                if matches!(r.status.code(), 401 | 407)
                    && self.retry_with_credentials(now, call, id, &r) => {}
            (Kind::Request(_), Tu::Response(r)) if r.status.is_final() => {
                self.request_done(now, call, id, Outcome::Response(Box::new(r)));
            }
            (Kind::Request(_), Tu::Timeout) => self.request_done(now, call, id, Outcome::Timeout),
            (Kind::Request(_), Tu::TransportError) => {
                self.request_done(now, call, id, Outcome::TransportError)
            }
            _ => {}
        }
    }

    fn request_done(&mut self, now: Instant, call: CallRef, id: TxId, outcome: Outcome) {
        let Some((Kind::Request(r), done)) =
            self.clients.user(id).map(|o| (o.kind.clone(), o.done))
        else {
            return;
        };
        // A 2xx to our re-INVITE is ACKed (§14.1: as for the initial INVITE), with the
        // credentials of the re-INVITE it acknowledges (§22.1: the ACK for a 2xx carries the
        // same credentials as its INVITE) — not the initial INVITE's, which may differ or
        // be absent from it. Its retransmissions are ACKed again (§13.2.2.4).
        let ack_seq = match &outcome {
            Outcome::Response(resp) if resp.status.is_success() => {
                match wire::cseq(&resp.headers) {
                    Some((seq, Method::Invite)) => Some(seq),
                    _ => None,
                }
            }
            _ => None,
        };
        // §12.2.1.2, RFC 3311 §5.1: the 2xx to our target refresh (re-INVITE, UPDATE) moves
        // the remote target to its Contact — the ACK below already goes there.
        if let Outcome::Response(resp) = &outcome {
            let refresh = matches!(
                wire::cseq(&resp.headers),
                Some((_, Method::Invite | Method::Update))
            );
            if resp.status.is_success() && refresh {
                self.refresh_target(call, &resp.headers);
            }
        }
        let acked = ack_seq.map(|seq| {
            let creds = self
                .clients
                .user(id)
                .map(|o| o.ack_credentials.clone())
                .unwrap_or_default();
            self.send_ack(now, call, seq, None, Some(&creds))
        });
        if done {
            // A retransmission of the 2xx already reported: the caller is not told twice.
            return;
        }
        if let Some(o) = self.clients.user_mut(id) {
            o.done = true;
        }
        if let Some(c) = self.calls.get_mut(&call) {
            if c.offer_out == Some(r) {
                c.offer_out = None;
            }
        }
        let unacked = match &outcome {
            Outcome::Response(resp) if acked == Some(false) && self.calls.contains_key(&call) => {
                Some(resp.clone())
            }
            _ => None,
        };
        self.events.push_back(Event::Done {
            call,
            request: r,
            outcome,
        });
        if let Some(response) = unacked {
            // The dialog cannot be ACKed (a header value would break the message): it is
            // ended, not left with an un-ACKed 2xx, and the caller told why — after the
            // request's own outcome, before the call's end.
            self.end_unacked(now, call, response);
        }
    }

    /// A 2xx that cannot be ACKed: the call is ended (BYE, if that one can be sent; else it
    /// is given up here, the far end giving up its 2xx at 64·T1 and sending its own BYE,
    /// §13.3.1.4), [`Event::AckFailed`] says why, and the call is forgotten once its last
    /// transaction is over.
    fn end_unacked(&mut self, now: Instant, call: CallRef, response: Box<Response>) {
        tracing::info!(?call, "a 2xx cannot be ACKed: the call is ended");
        if let Err(e) = self.bye(now, call, &[]) {
            tracing::info!(?call, error = %e, "nor can it be sent a BYE");
            if let Some(c) = self.calls.get_mut(&call) {
                c.closed = true;
            }
        }
        self.events.push_back(Event::AckFailed { call, response });
        self.reap(call);
    }

    /// RFC 3263 §4.3: the INVITE failed at its server (503, timeout, transport error) before
    /// anything rang: the same request again to the next server — next CSeq (a server behind
    /// both must not take it for a merged request, RFC 3261 §8.2.2.2), new branch, without the
    /// credentials answered to the last server's challenge. False (the failure stands) when no
    /// server is left, the call is being cancelled, something rang, it is over, or `key` is
    /// not the call's current INVITE (an earlier server's transaction ending late).
    fn fail_over(&mut self, now: Instant, call: CallRef, id: TxId) -> bool {
        let branch = self.fresh_branch();
        let Some(c) = self.calls.get_mut(&call) else {
            return false;
        };
        if c.role != Role::Uac || c.invite_done || c.cancel_wanted || c.rang {
            return false;
        }
        if c.invite_tx != Some(id) || c.invite.is_none() {
            return false;
        }
        let Some(next) = c.alternates.pop_front() else {
            return false;
        };
        c.local_cseq += 1;
        tracing::info!(from = %c.destination, to = %next, "INVITE: trying the trunk's next server (RFC 3263)");
        let prev = std::mem::replace(&mut c.destination, next);
        c.provisional = false;
        c.credentials_sent = false;
        let seq = c.local_cseq;
        let Some(inv) = c.invite.as_mut() else {
            return false;
        };
        c.earlier
            .push((inv.seq, std::mem::take(&mut inv.creds), prev));
        inv.branch = branch;
        inv.seq = seq;
        let Some(inv) = c.invite.as_ref() else {
            return false;
        };
        write_invite(&mut self.scratch, &self.via_prefix, c, inv);
        let out = Outgoing {
            id: TxId::new(branch, &Method::Invite),
            method: Method::Invite,
            seq,
            bytes: Bytes::copy_from_slice(&self.scratch),
            dest: next,
            ack_credentials: Vec::new(),
        };
        self.send(now, call, Kind::Invite, out);
        true
    }

    /// Our INVITE sent again with the challenge of `resp` answered (§22.2): next CSeq, new
    /// branch, the answer replacing an earlier one of its header name, written from the
    /// call's [`OutInvite`]. False when it cannot or must not be answered.
    fn retry_invite(&mut self, now: Instant, call: CallRef, id: TxId, resp: &Response) -> bool {
        let branch = self.fresh_branch();
        let (dest, mut state) = match self.clients.user(id) {
            Some(o) => (Some(o.dest), o.auth.clone()),
            None => (None, auth::State::default()),
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return false;
        };
        let Some(creds) = c.credentials.clone() else {
            return false;
        };
        if c.cancel_wanted {
            return false;
        }
        let Some(inv) = c.invite.as_mut() else {
            return false;
        };
        let uri = inv.uri.to_string();
        let hs = match state.answer_to(
            &mut c.nonce_counts,
            b"INVITE",
            &uri,
            resp,
            &creds,
            &hex_id(),
        ) {
            Ok(hs) => hs,
            Err(why) => {
                tracing::debug!(?why, "challenge not answered");
                return false;
            }
        };
        c.earlier
            .push((inv.seq, inv.creds.clone(), dest.unwrap_or(c.destination)));
        inv.creds
            .retain(|x| !hs.iter().any(|h| auth::replaces(h, x)));
        inv.creds.extend(hs);
        c.local_cseq += 1;
        inv.seq = c.local_cseq;
        inv.branch = branch;
        c.provisional = false;
        c.credentials_sent = true;
        let dest = dest.unwrap_or(c.destination);
        let Some(inv) = c.invite.as_ref() else {
            return false;
        };
        write_invite(&mut self.scratch, &self.via_prefix, c, inv);
        let out = Outgoing {
            id: TxId::new(branch, &Method::Invite),
            method: Method::Invite,
            seq: inv.seq,
            bytes: Bytes::copy_from_slice(&self.scratch),
            dest,
            ack_credentials: Vec::new(),
        };
        self.send(now, call, Kind::Invite, out);
        // The retry carries on this request's digest state (a second challenge of the
        // realm on it is a refusal).
        if let Some(o) = self.clients.user_mut(TxId::new(branch, &Method::Invite)) {
            o.auth = state;
        }
        true
    }

    /// Sends the request of a 401/407'd transaction again with the challenge answered: same
    /// request, next CSeq, new branch. False when it cannot or must not be answered.
    fn retry_with_credentials(
        &mut self,
        now: Instant,
        call: CallRef,
        id: TxId,
        resp: &Response,
    ) -> bool {
        let Some((kind, mut state)) = self
            .clients
            .user(id)
            .map(|o| (o.kind.clone(), o.auth.clone()))
        else {
            return false;
        };
        if matches!(kind, Kind::Invite) {
            return self.retry_invite(now, call, id, resp);
        }
        let Some(orig) = self.clients.request(id) else {
            return false;
        };
        let via = self.via();
        let Some(c) = self.calls.get_mut(&call) else {
            return false;
        };
        let Some(creds) = c.credentials.clone() else {
            return false;
        };
        let hs = match state.answer(&mut c.nonce_counts, &orig, resp, &creds, &hex_id()) {
            Ok(hs) => hs,
            Err(why) => {
                tracing::debug!(?why, "challenge not answered");
                return false;
            }
        };
        let mut req = orig;
        req.headers
            .retain(|x| !hs.iter().any(|h| auth::replaces(h, x)));
        for h in hs {
            req.headers.push(h);
        }
        let method = req.method.clone();
        let seq = if method == Method::Invite
            || method == Method::Bye
            || matches!(kind, Kind::Request(_))
        {
            c.local_cseq += 1;
            c.local_cseq
        } else {
            wire::cseq(&req.headers).map_or(1, |(n, _)| n)
        };
        req.headers.remove_all(&HeaderName::Via);
        req.headers.remove_all(&HeaderName::CSeq);
        for (n, v) in [
            (HeaderName::Via, via),
            (
                HeaderName::CSeq,
                format!("{seq} {}", String::from_utf8_lossy(method.as_bytes())),
            ),
        ] {
            match wire::header(&n, v) {
                Ok(h) if n == HeaderName::Via => req.headers.push_front(h),
                Ok(h) => req.headers.push(h),
                Err(_) => return false,
            }
        }
        let dest = self.clients.user(id).map_or(c.destination, |o| o.dest);
        self.send_request_auth(now, call, &req, kind, dest, state);
        true
    }

    fn invite_response(&mut self, now: Instant, call: CallRef, id: TxId, r: Response) {
        let code = r.status.code();
        if r.status.is_provisional() {
            let cancel = match self.calls.get_mut(&call) {
                Some(c) if !c.invite_done => {
                    c.provisional = true;
                    c.rang |= code > 100;
                    c.cancel_wanted && !c.cancel_sent
                }
                _ => return,
            };
            if cancel {
                self.send_cancel(now, call);
            }
            self.events.push_back(Event::Provisional {
                call,
                response: Box::new(r),
            });
            return;
        }
        if r.status.is_success() {
            self.invite_2xx(now, call, r);
            return;
        }
        // A final failure: the transaction ACKed it.
        if matches!(code, 401 | 407) {
            let current = self.calls.get(&call).and_then(|c| c.invite_tx);
            if let Some(current) = current {
                if self.retry_with_credentials(now, call, current, &r) {
                    return;
                }
            }
        }
        if crate::locate::fails_over(code) && self.fail_over(now, call, id) {
            return;
        }
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.invite_done {
            return;
        }
        c.invite_done = true;
        c.closed = true;
        let credentials_sent = c.credentials_sent;
        self.events.push_back(Event::Rejected {
            call,
            response: Box::new(r),
            credentials_sent,
        });
    }

    /// A 2xx to our INVITE (§13.2.2.4, RFC 6026): the first sets up the dialog; the same
    /// one again is ACKed again; another fork's is ACKed and sent a BYE.
    fn invite_2xx(&mut self, now: Instant, call: CallRef, r: Response) {
        let Some(to_tag) = wire::tag(&r.headers, &HeaderName::To) else {
            tracing::debug!("a 2xx without a To tag: ignored");
            return;
        };
        let Some(seq) = wire::cseq(&r.headers).map(|(n, _)| n) else {
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if let Some(t) = kept_ack(&c.acks, &to_tag, seq) {
            // A retransmission: the same ACK again.
            self.transmits.push_back(t);
            return;
        }
        if c.confirmed && c.remote_tag.as_deref() == Some(to_tag.as_str()) {
            // A retransmission of the 2xx whose ACK could not be built: nothing to re-send.
            return;
        }
        if c.confirmed || c.closed {
            // Another fork answered too (or we gave the call up): ACK it, then BYE it.
            if c.acks.len() >= MAX_FORK_ACKS {
                tracing::info!("a 2xx past the forks kept for a call: dropped");
                return;
            }
            self.fork_bye(now, call, seq, &r, None, true);
            return;
        }
        if c.byed
            .iter()
            .any(|(t, d)| *t == to_tag && *d == c.destination)
        {
            // The dialog of an earlier INVITE's 2xx from this server, which we ACKed and sent
            // a BYE: a dialog we ended, not the call. ACKed (§13.2.2.4), no second BYE; the
            // call is over, not answered.
            tracing::info!(call_id = %c.call_id, "the INVITE's 2xx is in a dialog we already ended: ACKed, the call ended");
            c.invite_done = true;
            c.closed = true;
            self.fork_bye(now, call, seq, &r, None, false);
            self.events.push_back(Event::AckFailed {
                call,
                response: Box::new(r),
            });
            self.reap(call);
            return;
        }
        c.confirmed = true;
        c.invite_done = true;
        c.answered_at = Some(now);
        c.remote_tag = Some(to_tag.clone());
        // The dialog is the winner's: the other forks' early dialogs are over.
        c.remote_cseq
            .retain(|(t, _)| t.as_deref() == Some(to_tag.as_str()));
        let mut rr = wire::record_routes(&r.headers);
        rr.reverse();
        c.route_set = rr;
        c.remote_target = self.targets.contact(&r.headers);
        let after_cancel = c.cancel_wanted;
        let credentials_sent = c.credentials_sent;
        if !self.send_ack(now, call, seq, Some(to_tag), None) {
            // §13.2.2.4 wants every 2xx ACKed; one that cannot be (a value from the 2xx —
            // its route set, tag or target — would break the message) must not leave the
            // call answered and un-ACKed: the call is ended and the caller told it failed,
            // not that it answered.
            self.end_unacked(now, call, Box::new(r));
            return;
        }
        if after_cancel {
            let _ = self.bye(now, call, &[]);
        }
        self.events.push_back(Event::Answered {
            call,
            response: Box::new(r),
            after_cancel,
            credentials_sent,
        });
    }

    /// The ACK of a 2xx (§13.2.2.4): a request of the dialog with its own branch, the
    /// INVITE's CSeq number and credentials, no body (our offer was in the INVITE).
    /// `remember`: the 2xx's To tag, under which the ACK is kept to be re-sent to a
    /// retransmission of it (the initial INVITE's 2xx).
    ///
    /// Serialised straight into the endpoint's buffer: the ACK is no transaction's, so no
    /// `Request` is built for it (its header strings, URI copies and header vector were ~20
    /// allocations per call).
    ///
    /// `creds`: the `Authorization`/`Proxy-Authorization` headers of the INVITE it
    /// acknowledges; `None`: the initial INVITE's (as last sent). False, with nothing sent,
    /// when the ACK cannot be built.
    fn send_ack(
        &mut self,
        _now: Instant,
        call: CallRef,
        seq: u32,
        remember: Option<String>,
        creds: Option<&[Header]>,
    ) -> bool {
        let default_port = self.cfg.transport.default_port();
        let Some(c) = self.calls.get_mut(&call) else {
            return false;
        };
        let (ruri, dest, strict) = match next_hop(c, default_port) {
            Ok(hop) => hop,
            Err(e) => {
                tracing::debug!(error = %e, "cannot build the ACK");
                return false;
            }
        };
        let out = &mut self.scratch;
        out.clear();
        out.extend_from_slice(b"ACK ");
        ruri.write_to(out);
        out.extend_from_slice(b" SIP/2.0\r\n");
        // Writing into a vector cannot fail.
        write_via(out, &self.via_prefix, rand::random::<u64>());
        out.extend_from_slice(b"Max-Forwards: 70\r\n");
        let mut clean = wire::field(out, "From", &c.local);
        out.extend_from_slice(b"To: <");
        out.extend_from_slice(c.remote_uri.as_bytes());
        out.push(b'>');
        if let Some(t) = &c.remote_tag {
            out.extend_from_slice(b";tag=");
            out.extend_from_slice(t.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        clean &= wire::field(out, "Call-ID", c.call_id.as_bytes());
        let _ = write!(out, "CSeq: {seq} ACK\r\n");
        for r in routes(c, strict.as_deref()) {
            clean &= wire::field(out, "Route", r.as_bytes());
        }
        clean &= wire::field(out, "Contact", &c.contact_header);
        clean &= wire::field(out, "User-Agent", &self.ua);
        let creds = match creds {
            Some(hs) => hs,
            None => c.invite.as_ref().map_or(&[][..], |i| &i.creds[..]),
        };
        for h in creds {
            h.write_to(out);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        // The values are ours or parsed ones (a remote tag, Record-Route): one with a line
        // break or NUL (a message the parser should not have let through) sends nothing.
        clean &= !c
            .remote_uri
            .bytes()
            .chain(c.remote_tag.iter().flat_map(|t| t.bytes()))
            .any(wire::breaks_line);
        if !clean {
            tracing::info!("an ACK header value would break the message: not sent");
            return false;
        }
        let payload = Bytes::copy_from_slice(out);
        if let Some(to_tag) = remember {
            c.acks.push((to_tag, seq, payload.clone(), dest));
        }
        self.transmits.push_back(Transmit {
            destination: dest,
            payload,
        });
        true
    }

    /// A 2xx from a fork that lost: a short-lived dialog from that response, ACKed and (if
    /// `bye`) sent a BYE.
    ///
    /// `creds`: the ACK's credentials when the call no longer holds its INVITE (see
    /// [`Endpoint::send_ack`]).
    fn fork_bye(
        &mut self,
        now: Instant,
        call: CallRef,
        seq: u32,
        r: &Response,
        creds: Option<&[Header]>,
        bye: bool,
    ) {
        let Some(to_tag) = wire::tag(&r.headers, &HeaderName::To) else {
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        // Borrow the call's dialog fields for this fork, then put them back.
        let saved = (
            c.remote_tag.replace(to_tag.clone()),
            std::mem::take(&mut c.route_set),
            c.remote_target.take(),
            c.local_cseq,
            c.closed,
        );
        let mut rr = wire::record_routes(&r.headers);
        rr.reverse();
        c.route_set = rr;
        c.remote_target = self.targets.contact(&r.headers);
        c.local_cseq = seq;
        self.send_ack(now, call, seq, Some(to_tag), creds);
        let bye = if bye {
            Some(self.in_dialog(call, Method::Bye, &[], None, Vec::new()))
        } else {
            None
        };
        if let Some(c) = self.calls.get_mut(&call) {
            c.remote_tag = saved.0;
            c.route_set = saved.1;
            c.remote_target = saved.2;
            c.local_cseq = saved.3;
            c.closed = saved.4;
        }
        if let Some(Ok(out)) = bye {
            self.send(now, call, Kind::ForkBye, out);
        }
    }

    /// A new request for us (its server transaction just made).
    fn server_request(&mut self, now: Instant, key: &TransactionKey, req: Request) {
        let call = self
            .owners
            .get(key)
            .map(|o| o.call)
            .filter(|c| self.calls.contains_key(c));
        let method = req.method.clone();
        let has_to_tag = wire::tag(&req.headers, &HeaderName::To).is_some();
        if method == Method::Cancel {
            self.on_cancel(now, key, &req);
            return;
        }
        // §8.2.2.3: an extension the request requires that we do not support: 420 naming
        // it in `Unsupported` (ACK and CANCEL never come here: they may not be refused).
        let unsupported: Vec<String> = req
            .headers
            .get_all(&HeaderName::Require)
            .flat_map(|h| option_tags(&h.value()))
            .filter(|t| !self.supported.contains(t))
            .collect();
        if !unsupported.is_empty() {
            let named = (HeaderName::Unsupported, unsupported.join(", "));
            self.auto_respond(now, key, call, 420, vec![named]);
            return;
        }
        let Some(call) = call else {
            // Outside any dialog we know.
            match method {
                Method::Invite if !has_to_tag && self.cfg.accept_incoming => {
                    if !self.refuse_body(now, key, None, &req) {
                        self.incoming(now, key, req)
                    }
                }
                Method::Invite if !has_to_tag => self.auto_respond(now, key, None, 603, vec![]),
                Method::Options => {
                    let caps = self.capabilities();
                    self.auto_respond(now, key, None, 200, caps)
                }
                Method::Bye
                | Method::Info
                | Method::Update
                | Method::Invite
                | Method::Prack
                | Method::Notify
                | Method::Refer => self.auto_respond(now, key, None, 481, vec![]),
                // §21.5.2: a method we do not even recognise: 501 (405 is for a known one
                // we do not implement, §8.2.1).
                Method::Other(_) => self.auto_respond(now, key, None, 501, vec![]),
                _ => {
                    let caps = self.capabilities();
                    self.auto_respond(now, key, None, 405, caps)
                }
            }
            return;
        };
        // §12.2.2: a CSeq lower than the dialog's last one is out of order (an equal one is
        // not: only a lower one MUST get 500).
        let seq = wire::cseq(&req.headers).map_or(0, |(n, _)| n);
        let from_tag = wire::tag(&req.headers, &HeaderName::From);
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        match c.remote_cseq.iter_mut().find(|(t, _)| *t == from_tag) {
            Some((_, last)) if seq < *last => {
                self.auto_respond(now, key, Some(call), 500, vec![]);
                return;
            }
            Some((_, last)) => *last = seq,
            None => {
                // Early dialogs are few (one per fork); a flood of tags keeps the latest.
                if c.remote_cseq.len() >= MAX_EARLY_DIALOGS {
                    c.remote_cseq.remove(0);
                }
                c.remote_cseq.push((from_tag, seq));
            }
        }
        let closed = c.closed;
        match method {
            Method::Bye => {
                self.auto_respond(now, key, Some(call), 200, vec![]);
                let first = !closed;
                if let Some(c) = self.calls.get_mut(&call) {
                    c.closed = true;
                    c.pending_2xx = None;
                    if let Some((k, s)) = c.uas_invite.take() {
                        // BYE before our final answer: the INVITE gets 487 (§15.1.2).
                        self.servers.remove(&s);
                        self.auto_respond(now, &k, Some(call), 487, vec![]);
                    }
                }
                if first {
                    self.events.push_back(Event::Bye { call });
                }
                self.reap(call);
            }
            Method::Info if self.refuse_body(now, key, Some(call), &req) => {}
            Method::Info => {
                self.auto_respond(now, key, Some(call), 200, vec![]);
                self.events.push_back(Event::Info {
                    call,
                    request: Box::new(req),
                });
            }
            Method::Options => {
                let caps = self.capabilities();
                self.auto_respond(now, key, Some(call), 200, caps);
            }
            Method::Invite | Method::Update
                if !closed && self.refuse_body(now, key, Some(call), &req) => {}
            Method::Invite | Method::Update if !closed => {
                // An UPDATE's offer is its SDP (an optional body we ignore is none).
                let offer =
                    method == Method::Invite || body::sdp(&req.headers, req.body()).is_some();
                let (theirs, ours) = self
                    .calls
                    .get(&call)
                    .map_or((false, false), |c| (c.offer_in, c.offer_out.is_some()));
                if offer && ours {
                    // Glare: both sides offered (RFC 3261 §14.2, RFC 3311 §5.2).
                    self.auto_respond(now, key, Some(call), 491, vec![]);
                    return;
                }
                if offer && theirs {
                    // A second offer before we answered the first: 500 with a random
                    // Retry-After of 0–10 s (RFC 3261 §14.2, RFC 3311 §5.2).
                    let after = (
                        HeaderName::RetryAfter,
                        rand::random_range(0..=10u8).to_string(),
                    );
                    self.auto_respond(now, key, Some(call), 500, vec![after]);
                    return;
                }
                if offer {
                    if let Some(c) = self.calls.get_mut(&call) {
                        c.offer_in = true;
                    }
                }
                let server = ServerRef(self.id());
                self.servers.insert(server, (key.clone(), call));
                if let Some(o) = self.owners.get_mut(key) {
                    o.kind = Kind::Server(Some(server));
                }
                self.events.push_back(Event::Request {
                    call,
                    server,
                    request: Box::new(req),
                });
            }
            Method::Invite | Method::Update => self.auto_respond(now, key, Some(call), 481, vec![]),
            Method::Other(_) => self.auto_respond(now, key, Some(call), 501, vec![]),
            _ => {
                let caps = self.capabilities();
                self.auto_respond(now, key, Some(call), 405, caps)
            }
        }
    }

    /// §8.2.3: a body we cannot take is answered 415 naming what we take — `Accept` for its
    /// type, `Accept-Encoding` for a content coding other than `identity` — and true
    /// returned. What the endpoint's user takes: SDP in an INVITE or UPDATE (offers and
    /// answers, [`SDP_BODIES`]; alone or as a part of `multipart/mixed` or
    /// `multipart/alternative`, RFC 5621), the key of a SIP INFO ([`INFO_BODIES`]); an empty
    /// body always, and one marked `handling=optional` (§20.11: ignored). A body's language is never a reason (nothing here reads language), so no
    /// `Accept-Language` is sent.
    fn refuse_body(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        call: Option<CallRef>,
        req: &Request,
    ) -> bool {
        let (accepted, accept) = match req.method {
            Method::Invite | Method::Update => (SDP_BODIES, SDP_ACCEPT.to_owned()),
            Method::Info => (INFO_BODIES, INFO_BODIES.join(", ")),
            _ => return false,
        };
        // A body we cannot read marked `handling=optional` is ignored (§20.11); an SDP part
        // of a multipart body is read ([`crate::body`]).
        let Some((typed, coded)) = body::refused(&req.headers, req.body(), accepted) else {
            return false;
        };
        // Both named when both are wrong: the far end's retry must fix both.
        let mut extra = Vec::with_capacity(2);
        if !typed {
            extra.push((HeaderName::Accept, accept));
        }
        if coded {
            extra.push((HeaderName::AcceptEncoding, "identity".to_owned()));
        }
        tracing::debug!(method = %String::from_utf8_lossy(req.method.as_bytes()), "a body we cannot take: 415");
        self.auto_respond(now, key, call, 415, extra);
        true
    }

    /// A UAS call from an INVITE outside any dialog (§12.1.1: route set from Record-Route in
    /// order, remote target from Contact).
    fn incoming(&mut self, _now: Instant, key: &TransactionKey, req: Request) {
        let Some(call_id) = wire::call_id(&req.headers) else {
            return;
        };
        // An RFC 2543 caller's From has no tag (§12.1.1: the remote tag is then null).
        let remote_tag = wire::tag(&req.headers, &HeaderName::From);
        let Some(dest) = self.owners.get(key).map(|o| o.dest) else {
            return;
        };
        let from = req
            .headers
            .typed::<sipx_sip::headers::From>()
            .and_then(Result::ok)
            .map(|f| f.0.uri.to_string())
            .unwrap_or_default();
        let to = req
            .headers
            .typed::<sipx_sip::headers::To>()
            .and_then(Result::ok)
            .map(|t| t.0.uri.to_string())
            .unwrap_or_default();
        let local_tag = hex_id();
        let call = CallRef(self.id());
        let server = ServerRef(self.id());
        let contact = format!("sip:{}", self.cfg.local);
        let contact_header = Bytes::from(format!("<{contact}>"));
        self.calls.insert(
            call,
            Call {
                contact,
                remote_cseq: wire::cseq(&req.headers)
                    .map(|(n, _)| (remote_tag.clone(), n))
                    .into_iter()
                    .collect(),
                remote_tag,
                local_cseq: rand::random::<u16>().into(),
                route_set: wire::record_routes(&req.headers),
                remote_target: self.targets.contact(&req.headers),
                invite_done: true,
                uas_invite: Some((key.clone(), server)),
                open: 1,
                ..Call::with_identity(
                    Role::Uas,
                    call_id.clone(),
                    local_tag.clone(),
                    Bytes::from(format!("<{to}>;tag={local_tag}")),
                    from,
                    contact_header,
                    dest,
                )
            },
        );
        self.dialogs.insert((call_id, local_tag), call);
        self.servers.insert(server, (key.clone(), call));
        if let Some(o) = self.owners.get_mut(key) {
            o.call = call;
            o.kind = Kind::Server(Some(server));
        }
        self.events.push_back(Event::Incoming {
            call,
            server,
            request: Box::new(req),
        });
    }

    /// CANCEL (§9.2): 200 if it matches an INVITE we are answering, then 487 to that INVITE
    /// if not answered yet; 481 if it matches nothing.
    fn on_cancel(&mut self, now: Instant, key: &TransactionKey, req: &Request) {
        let invite_key = TransactionKey::for_cancelled_invite(req);
        let target = invite_key.as_ref().and_then(|k| {
            self.layer.server_request(k)?;
            Some((k.clone(), self.owners.get(k)?.call))
        });
        let Some((ik, call)) = target else {
            self.auto_respond(now, key, None, 481, vec![]);
            return;
        };
        self.auto_respond(now, key, Some(call), 200, vec![]);
        let pending = self
            .calls
            .get(&call)
            .and_then(|c| c.uas_invite.as_ref())
            .is_some_and(|(k, _)| *k == ik);
        if pending {
            if let Some(c) = self.calls.get_mut(&call) {
                if let Some((_, s)) = c.uas_invite.take() {
                    self.servers.remove(&s);
                }
                c.closed = true;
            }
            self.auto_respond(now, &ik, Some(call), 487, vec![]);
            self.events.push_back(Event::Cancelled { call });
            self.reap(call);
        }
    }

    /// The driver could not deliver to `destination` (no connection, a failed TLS
    /// handshake, ICMP): every client transaction sending there fails now (RFC 3261 §8.1.3.1,
    /// §17.1.4: a transport error is treated as a 503), instead of at its timeout.
    pub fn transport_error(&mut self, now: Instant, destination: SocketAddr) {
        self.last_now = Some(now);
        let ids: Vec<TxId> = self
            .clients
            .iter()
            .filter(|(_, o)| o.dest == destination)
            .map(|(id, _)| id)
            .collect();
        for id in ids {
            if let Some(call) = self.clients.user(id).map(|o| o.call) {
                let invite = self.accepted(id);
                if invite && self.fail_over(now, call, id) {
                    let step = self.clients.on_transport_error(id);
                    self.apply_client(now, id, step);
                    continue;
                }
                if let Some(c) = self.calls.get_mut(&call) {
                    // Timer B's path reports a timeout; this is the transport's.
                    if !c.invite_done && invite {
                        c.invite_done = true;
                        c.closed = true;
                        self.events.push_back(Event::InviteFailed {
                            call,
                            timeout: false,
                        });
                    }
                }
            }
            let step = self.clients.on_transport_error(id);
            self.apply_client(now, id, step);
        }
    }

    // ---- time and output -----------------------------------------------------------------

    /// When [`Endpoint::handle_timeout`] is next due: the earliest timer still armed. A
    /// cleared timer (timer A at the first response, E and F at a BYE's 200, B at the final
    /// response …) leaves its entry in the heap; those on top are dropped here, so the caller
    /// is not woken for them — they were most of the SIP loop's wake-ups per call at a low
    /// rate (S1, BENCHMARKS.md).
    ///
    /// The timers that only end a transaction (D, I, J, K, L) and the expiry of a forgotten
    /// call's ACKs are named at the first [`CLEANUP_GRID`] step at or after their time, so
    /// that those of one step share a wake-up.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        for heap in [&mut self.heap, &mut self.cleanup] {
            while let Some(Reverse((_, slot))) = heap.peek() {
                if self.slots.contains_key(slot) {
                    break;
                }
                heap.pop();
            }
        }
        let timer = self.heap.peek().map(|Reverse((t, _))| *t);
        let cleanup = self.cleanup.peek().map(|Reverse((t, _))| *t);
        let ended = self.ended_order.front().map(|(t, _)| *t);
        let later = [cleanup, ended].into_iter().flatten().min();
        [timer, later.map(|t| self.on_grid(t))]
            .into_iter()
            .flatten()
            .min()
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = Some(now);
        self.forget_ended(now);
        loop {
            // The earlier of the two heaps' tops, if due.
            let eager = self.heap.peek().map(|r| r.0).filter(|(t, _)| *t <= now);
            let cleanup = self.cleanup.peek().map(|r| r.0).filter(|(t, _)| *t <= now);
            let slot = match (eager, cleanup) {
                (Some(e), Some(c)) if c < e => self.cleanup.pop(),
                (Some(_), _) => self.heap.pop(),
                (None, Some(_)) => self.cleanup.pop(),
                (None, None) => break,
            };
            let Some(Reverse((_, slot))) = slot else {
                break;
            };
            let Some(target) = self.slots.remove(&slot) else {
                continue;
            };
            match target {
                Target::Tx(key, timer) => {
                    let armed = self.armed.get_mut(&*key);
                    if let Some(s) = armed.and_then(|a| a.get_mut(timer as usize)) {
                        if *s == slot {
                            *s = 0;
                        }
                    }
                    let outputs = self.layer.on_timer(&key, timer);
                    self.apply(now, &key, outputs);
                }
                Target::Client(id, timer) => {
                    let armed = self.clients.user_mut(id).map(|c| &mut c.armed);
                    if let Some(s) = armed.and_then(|a| a.get_mut(timer as usize)) {
                        if *s == slot {
                            *s = 0;
                        }
                    }
                    let step = self.clients.on_timer(id, timer);
                    self.apply_client(now, id, step);
                }
                Target::Retransmit2xx(call) => self.retransmit_2xx(now, call),
                Target::CancelGiveUp(call) => self.cancel_give_up(call),
            }
        }
    }

    fn retransmit_2xx(&mut self, now: Instant, call: CallRef) {
        let t2 = self.cfg.timers.t2;
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(p) = c.pending_2xx.as_mut() else {
            return;
        };
        if now >= p.deadline {
            c.pending_2xx = None;
            self.events.push_back(Event::NoAck { call });
            self.reap(call);
            return;
        }
        p.interval = (p.interval * 2).min(t2);
        // Given up at 64·T1 itself, not at the first retransmission past it.
        let next = (now + p.interval).min(p.deadline);
        let (key, resp) = (p.key.clone(), p.response.clone());
        let outputs = self.layer.send_response(&key, resp);
        self.apply(now, &key, outputs);
        self.arm(next, Target::Retransmit2xx(call));
    }

    /// Whether a datagram waits to be sent.
    pub fn has_transmit(&self) -> bool {
        !self.transmits.is_empty()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

/// The request a malformed datagram would be, as far as answering it goes (§8.2.6.2: its
/// Via, From, To, Call-ID and CSeq), if its start line is a request line (`<method> … SIP/2.0`,
/// whatever lies between: a Request-URI in `<>`, with whitespace, extra spaces — RFC 4475
/// §3.1.2.7–10) and those headers parse; `None` for anything else (a response, a Via or
/// CSeq that cannot be read: nowhere to answer, or nothing to answer with).
fn salvage(datagram: &[u8]) -> Option<Request> {
    let head_end = datagram
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(datagram.len());
    let head = datagram.get(..head_end)?;
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let start = lines.next()?;
    let words: Vec<&[u8]> = start
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|w| !w.is_empty())
        .collect();
    let (method, last) = (words.first()?, words.last()?);
    if words.len() < 3 || !last.eq_ignore_ascii_case(b"SIP/2.0") || method.starts_with(b"SIP/") {
        return None;
    }
    let mut out = Vec::with_capacity(head.len());
    out.extend_from_slice(method);
    out.extend_from_slice(b" sip:invalid SIP/2.0\r\n");
    const KEPT: [&[u8]; 9] = [
        b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq",
    ];
    let mut kept = false;
    for line in lines {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            // A folded line continues the header before it (§7.3.1).
            if kept {
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n");
            }
            continue;
        }
        let name = line
            .split(|&b| b == b':')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        kept = line.contains(&b':') && KEPT.iter().any(|k| name.eq_ignore_ascii_case(k));
        if kept {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    match wire::parse(&out) {
        Ok(Message::Request(r)) if wire::top_via(&r.headers).is_some() => Some(r),
        _ => None,
    }
}

/// The option tags of a `Require` or `Supported` value (RFC 3261 §20.32, §20.37),
/// lowercase (option tags compare case-insensitively, §19.2); an empty or unreadable one is
/// skipped.
fn option_tags(v: &[u8]) -> Vec<String> {
    v.split(|&b| b == b',')
        .filter_map(|t| std::str::from_utf8(t.trim_ascii()).ok())
        .filter(|t| !t.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// The credentials a request carries (`Authorization`, `Proxy-Authorization`), for the ACK
/// of a 2xx to it (RFC 3261 §22.1).
fn credentials_of(req: Option<&Request>) -> Vec<Header> {
    let Some(req) = req else {
        return Vec::new();
    };
    [HeaderName::Authorization, HeaderName::ProxyAuthorization]
        .iter()
        .flat_map(|n| req.headers.get_all(n).cloned())
        .collect()
}

/// Why a request cannot be acted on, as the status to answer: §8.1.1's headers missing or
/// malformed, repeated single-value headers, a CSeq method that is not the request line's
/// (RFC 4475 §3.1.2.17–18), headers in the Request-URI (§3.1.2.11): 400; a version other than
/// SIP/2.0: 505 (§3.1.2.16); a Request-URI scheme we do not serve: 416 (RFC 3261 §8.2.2.1,
/// RFC 4475 §3.3.2). A missing Max-Forwards is tolerated (RFC 2543 peers, §3.4).
fn refusal(req: &Request) -> Option<u16> {
    if let Some(f) = sipx_sip::validate_request(req)
        .into_iter()
        .find(|f| !f.is_repairable())
    {
        return Some(f.status());
    }
    if !matches!(
        req.uri.scheme(),
        sipx_sip::Scheme::Sip | sipx_sip::Scheme::Sips | sipx_sip::Scheme::Tel
    ) {
        return Some(416);
    }
    None
}

/// §18.2.1 and RFC 3581 §4: the top Via gets `received` (the source address) when its
/// sent-by differs, and `rport=<source port>` when the client asked with `rport`.
fn stamp_via(req: &mut Request, from: SocketAddr) {
    let Some(via) = wire::top_via(&req.headers) else {
        return;
    };
    let wants_rport = matches!(via.rport(), Some(None));
    let sent_by_ip: Option<IpAddr> = match &via.host {
        Host::Ip(ip) => Some(*ip),
        Host::Name(_) => None,
    };
    let add_received = sent_by_ip != Some(from.ip());
    if !wants_rport && !add_received {
        return;
    }
    let Some(h) = req.headers.get(&HeaderName::Via) else {
        return;
    };
    let raw = h.value().into_owned();
    let end = first_hop_end(&raw);
    let (first, rest) = raw.split_at(end);
    let mut first = String::from_utf8_lossy(first).trim().to_owned();
    if wants_rport {
        // `;rport` (no value) becomes `;rport=<port>`.
        let mut parts: Vec<String> = first.split(';').map(str::to_owned).collect();
        for p in parts.iter_mut().skip(1) {
            if p.trim().eq_ignore_ascii_case("rport") {
                *p = format!("rport={}", from.port());
            }
        }
        first = parts.join(";");
    }
    if add_received || wants_rport {
        first.push_str(&format!(";received={}", from.ip()));
    }
    let mut value = first.into_bytes();
    value.extend_from_slice(rest);
    if let Ok(new) = wire::header(&HeaderName::Via, value) {
        let mut done = false;
        req.headers.retain(|_| true);
        let mut headers = sipx_sip::Headers::new();
        for h in req.headers.iter() {
            if !done && h.name() == &HeaderName::Via {
                headers.push(new.clone());
                done = true;
            } else {
                headers.push(h.clone());
            }
        }
        req.headers = headers;
    }
}

/// Where the responses to a request go (§18.2.2, RFC 3581 §4): the source address and
/// port when the Via has `rport`; else its `received` address (or sent-by host) and sent-by
/// port.
fn response_destination(req: &Request, from: SocketAddr, default_port: u16) -> SocketAddr {
    let Some(via) = wire::top_via(&req.headers) else {
        return from;
    };
    if via.rport().is_some() {
        return from;
    }
    let ip = via
        .received()
        .and_then(|r| std::str::from_utf8(r).ok()?.parse().ok())
        .or(match &via.host {
            Host::Ip(ip) => Some(*ip),
            Host::Name(_) => None,
        })
        .unwrap_or(from.ip());
    SocketAddr::new(ip, via.port.unwrap_or(default_port))
}

#[allow(dead_code)]
fn _header_is_used(_: Header) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_with_contact(contact: &str) -> sipx_sip::Headers {
        let text = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n\
             From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
             {contact}Content-Length: 0\r\n\r\n"
        );
        match wire::parse(text.as_bytes()) {
            Ok(Message::Response(r)) => r.headers,
            other => panic!("not a response: {other:?}"),
        }
    }

    /// The cache gives what `wire::contact_uri` reads, shared while the value repeats and
    /// parsed again when it changes (a stale target would send the ACK and BYE elsewhere).
    #[test]
    fn the_target_cache_gives_each_contact_its_own_uri() {
        let text = |u: Option<&Uri>| u.map(ToString::to_string);
        let mut cache = TargetCache::default();
        let a = response_with_contact("Contact: <sip:uas@127.0.0.1:5070>\r\n");
        let b = response_with_contact("Contact: <sip:uas@127.0.0.2:5080;transport=udp>\r\n");
        let none = response_with_contact("");
        let first = cache.contact(&a);
        let again = cache.contact(&a);
        match (&first, &again) {
            (Some(x), Some(y)) => assert!(Arc::ptr_eq(x, y), "the same value is parsed once"),
            _ => panic!("no Contact read"),
        }
        assert_eq!(
            text(first.as_deref()),
            Some("sip:uas@127.0.0.1:5070".to_owned())
        );
        assert_eq!(text(first.as_deref()), text(wire::contact_uri(&a).as_ref()));
        let other = cache.contact(&b);
        assert_eq!(
            text(other.as_deref()),
            Some("sip:uas@127.0.0.2:5080;transport=udp".to_owned())
        );
        assert!(cache.contact(&none).is_none());
        assert_eq!(text(cache.contact(&a).as_deref()), text(first.as_deref()));
    }
}
