//! RFC 4475's torture messages (tests/data/rfc4475.txt) through the endpoint: none panics;
//! each valid one parses and is served; each invalid one is refused (a parse error, a
//! 4xx/5xx answer or dropped) and never handed to the caller; the application-layer cases a
//! UA may take either way get well-formed answers.

// Any instant serves as the origin: time is an input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::time::Instant;

use crieur_sip::{wire, Config, Endpoint, Event, Message, Timers, Transport};

struct Case {
    section: String,
    name: String,
    expect: String,
    bytes: Vec<u8>,
}

/// Expands the RFC's conventions on one logical line: `<hex>…</hex>`, `<repeat count=N>…</repeat>`.
fn expand(line: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("<hex>") {
            let end = r.find("</hex>").expect("closed <hex>");
            let hex = &r[..end];
            out.extend(
                (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")),
            );
            rest = &r[end + 6..];
        } else if let Some(r) = rest.strip_prefix("<repeat count=") {
            let gt = r.find('>').expect("repeat count");
            let n: usize = r[..gt].parse().expect("count");
            let r = &r[gt + 1..];
            let end = r.find("</repeat>").expect("closed <repeat>");
            out.extend(expand(&r[..end]).repeat(n));
            rest = &r[end + 9..];
        } else {
            let next = rest
                .char_indices()
                .skip(1)
                .find(|(i, _)| {
                    rest[*i..].starts_with("<hex>") || rest[*i..].starts_with("<repeat count=")
                })
                .map_or(rest.len(), |(i, _)| i);
            out.extend_from_slice(&rest.as_bytes()[..next]);
            rest = &rest[next..];
        }
    }
    out
}

fn cases() -> Vec<Case> {
    let text = include_str!("data/rfc4475.txt");
    let mut cases: Vec<(String, Vec<&str>)> = Vec::new();
    for line in text.lines() {
        if let Some(head) = line.strip_prefix("%% ") {
            cases.push((head.to_owned(), Vec::new()));
        } else if let Some((_, lines)) = cases.last_mut() {
            lines.push(line);
        }
    }
    cases
        .into_iter()
        .map(|(head, lines)| {
            let mut parts = head.split_whitespace();
            let section = parts.next().unwrap().to_owned();
            let name = parts.next().unwrap().to_owned();
            let expect = parts.next().unwrap().to_owned();
            // Logical lines: <allOneLine> blocks joined.
            let mut logical: Vec<Vec<u8>> = Vec::new();
            let mut joining: Option<Vec<u8>> = None;
            for l in lines {
                match (l, joining.as_mut()) {
                    ("<allOneLine>", _) => joining = Some(Vec::new()),
                    ("</allOneLine>", Some(_)) => logical.push(joining.take().unwrap()),
                    (l, Some(j)) => j.extend(expand(l)),
                    (l, None) => logical.push(expand(l)),
                }
            }
            while logical.last().is_some_and(Vec::is_empty) {
                logical.pop();
            }
            let blank = logical.iter().position(Vec::is_empty);
            let (head, body): (&[Vec<u8>], &[Vec<u8>]) = match blank {
                Some(b) => (&logical[..b], &logical[b + 1..]),
                None => (&logical[..], &[]),
            };
            let mut body_bytes = Vec::new();
            for l in body {
                body_bytes.extend_from_slice(l);
                body_bytes.extend_from_slice(b"\r\n");
            }
            // `<len>`: the body's length (see the data file's header).
            let len = body_bytes.len().to_string();
            let mut bytes = Vec::new();
            for l in head {
                match std::str::from_utf8(l) {
                    Ok(t) if t.contains("<len>") => {
                        bytes.extend_from_slice(t.replace("<len>", &len).as_bytes())
                    }
                    _ => bytes.extend_from_slice(l),
                }
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend_from_slice(b"\r\n");
            bytes.extend_from_slice(&body_bytes);
            Case {
                section,
                name,
                expect,
                bytes,
            }
        })
        .collect()
}

fn endpoint() -> Endpoint {
    Endpoint::new(Config {
        local: "192.0.2.200:5060".parse().unwrap(),
        transport: Transport::Udp,
        user_agent: "crieur-torture".into(),
        timers: Timers::default(),
        capabilities: vec![(
            "Allow".into(),
            "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE".into(),
        )],
        accept_incoming: true,
    })
}

#[test]
fn every_rfc4475_message_is_handled_as_the_rfc_says() {
    let cases = cases();
    assert_eq!(cases.len(), 49, "RFC 4475 has 49 messages");
    let mut report = Vec::new();
    for c in &cases {
        let parsed = wire::parse(&c.bytes);
        let mut ep = endpoint();
        ep.handle_input(Instant::now(), "192.0.2.1:5060".parse().unwrap(), &c.bytes);
        let answers: Vec<u16> = std::iter::from_fn(|| ep.poll_transmit())
            .map(|t| match wire::parse(&t.payload) {
                Ok(Message::Response(r)) => r.status.code(),
                other => panic!(
                    "{} {}: we sent something that is not a response: {other:?}",
                    c.section, c.name
                ),
            })
            .collect();
        let handed = std::iter::from_fn(|| ep.poll_event())
            .any(|e| matches!(e, Event::Incoming { .. } | Event::Request { .. }));
        let refused = answers.iter().any(|&a| a >= 400) || (answers.is_empty() && !handed);
        let is_request = parsed.as_ref().is_ok_and(|m| m.as_request().is_some());
        let ok = match c.expect.as_str() {
            // A valid request is answered (not as malformed) or handed to the caller.
            "valid" => {
                parsed.is_ok()
                    && (!is_request
                        || (handed || !answers.is_empty())
                            && !answers.iter().any(|a| [400, 416, 505].contains(a)))
            }
            "invalid" => parsed.is_err() || (refused && !handed),
            _ => true,
        };
        report.push(format!(
            "{:<8} {:<11} {:<8} parsed={:<5} answers={answers:?} handed={handed} {}",
            c.section,
            c.name,
            c.expect,
            parsed.is_ok(),
            if ok { "ok" } else { "WRONG" }
        ));
    }
    let report = report.join("\n");
    println!("{report}");
    assert!(!report.contains("WRONG"), "{report}");
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes: dropped or answered, never a panic.
        #[test]
        fn on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut ep = endpoint();
            ep.handle_input(Instant::now(), "192.0.2.1:5060".parse().unwrap(), &bytes);
            while ep.poll_transmit().is_some() {}
        }

        /// Each torture message with bytes flipped, cut or repeated.
        #[test]
        fn on_mutated_torture_messages(
            which in 0usize..49,
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let cases = cases();
            let mut bytes = cases[which % cases.len()].bytes.clone();
            for (at, b) in flips {
                if !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    bytes[i] = b;
                }
            }
            let len = cut.index(bytes.len() + 1);
            bytes.truncate(len.max(bytes.len() / 2));
            let mut ep = endpoint();
            let now = Instant::now();
            ep.handle_input(now, "192.0.2.1:5060".parse().unwrap(), &bytes);
            ep.handle_input(now, "192.0.2.1:5060".parse().unwrap(), &bytes);
            ep.handle_timeout(now + std::time::Duration::from_secs(40));
            while ep.poll_transmit().is_some() {}
        }
    }
}
