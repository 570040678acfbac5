//! Webhooks: each call's outcome POSTed as JSON to a configured URL, signed, retried.
//!
//! The body is the call's `ended` event (as on the event stream). Headers:
//! `X-Crieur-Signature: sha256=<hex HMAC-SHA-256(secret, body)>` when a secret is set,
//! `X-Crieur-Delivery: <unique id>` (the same on every retry of one delivery). A delivery
//! is retried on any answer but 2xx or no answer, up to [`TRIES`] times, waiting 1, 2, 4, 8 s
//! between tries. Deliveries wait in a bounded queue ([`QUEUE`]); one that finds it full is
//! dropped and counted (`crieur_webhook_deliveries_total{result="dropped"}`): a slow
//! receiver never holds the dial loop up. Deliveries are sent one at a time, in order, from
//! their own thread (plain HTTP: put a TLS-terminating proxy in front of an `https` receiver).

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Deliveries waiting at most.
pub const QUEUE: usize = 1024;
/// Tries per delivery.
pub const TRIES: u32 = 5;

/// Where outcomes go.
#[derive(Clone)]
pub struct Config {
    pub url: String,
    /// The HMAC key (`None`: unsigned).
    pub secret: Option<Vec<u8>>,
    /// The first retry's wait (doubled for each next one).
    pub backoff: Duration,
}

/// The queue into the delivery thread.
#[derive(Clone)]
pub struct Webhook {
    tx: SyncSender<(String, Vec<u8>)>,
}

/// The signature header's value for `body`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Webhook {
    /// Starts the delivery thread.
    pub fn start(config: Config) -> std::io::Result<Webhook> {
        let (tx, rx) = sync_channel::<(String, Vec<u8>)>(QUEUE);
        std::thread::Builder::new()
            .name("crieur-webhook".into())
            .spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(10)))
                    .http_status_as_error(false)
                    .build()
                    .into();
                while let Ok((id, body)) = rx.recv() {
                    let ok = deliver(&agent, &config, &id, &body);
                    ::metrics::counter!(
                        "crieur_webhook_deliveries_total",
                        "result" => if ok { "ok" } else { "failed" }
                    )
                    .increment(1);
                }
            })?;
        Ok(Webhook { tx })
    }

    /// Queues one delivery (`id`: its unique id); `false` when the queue is full (dropped).
    pub fn send(&self, id: String, body: Vec<u8>) -> bool {
        match self.tx.try_send((id, body)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                ::metrics::counter!("crieur_webhook_deliveries_total", "result" => "dropped")
                    .increment(1);
                false
            }
        }
    }
}

fn deliver(agent: &ureq::Agent, config: &Config, id: &str, body: &[u8]) -> bool {
    let mut wait = config.backoff;
    for attempt in 1..=TRIES {
        let mut req = agent
            .post(&config.url)
            .header("Content-Type", "application/json")
            .header("X-Crieur-Delivery", id);
        if let Some(s) = &config.secret {
            req = req.header("X-Crieur-Signature", signature(s, body));
        }
        match req.send(body) {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) => {
                tracing::warn!(url = %config.url, status = %r.status(), attempt, "webhook refused")
            }
            Err(e) => tracing::warn!(url = %config.url, error = %e, attempt, "webhook failed"),
        }
        if attempt < TRIES {
            std::thread::sleep(wait);
            wait *= 2;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};

    #[test]
    fn the_signature_is_rfc_4231_hmac_sha_256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// One HTTP request read from `s`: its headers (lower-cased names) and body.
    fn read_request(s: &std::net::TcpStream) -> (Vec<(String, String)>, Vec<u8>) {
        let mut r = BufReader::new(s);
        let mut headers = Vec::new();
        let mut line = String::new();
        r.read_line(&mut line).unwrap_or_else(|e| panic!("{e}"));
        loop {
            line.clear();
            r.read_line(&mut line).unwrap_or_else(|e| panic!("{e}"));
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap_or_else(|e| panic!("{e}"));
        (headers, body)
    }

    #[test]
    fn a_delivery_is_retried_until_accepted_and_signed_each_time() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let hook = Webhook::start(Config {
            url: format!("http://{addr}/hook"),
            secret: Some(b"k".to_vec()),
            backoff: Duration::from_millis(10),
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(hook.send("d1".into(), b"{\"a\":1}".to_vec()));
        let mut seen = Vec::new();
        // Refused twice (500), accepted the third time.
        for status in [
            "500 Internal Server Error",
            "500 Internal Server Error",
            "204 No Content",
        ] {
            let (mut s, _) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
            let (headers, body) = read_request(&s);
            write!(
                s,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            .unwrap_or_else(|e| panic!("{e}"));
            seen.push((headers, body));
        }
        for (headers, body) in &seen {
            assert_eq!(body, b"{\"a\":1}");
            let h = |k: &str| {
                headers
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            assert_eq!(h("x-crieur-delivery"), "d1");
            assert_eq!(h("x-crieur-signature"), signature(b"k", b"{\"a\":1}"));
        }
    }
}
