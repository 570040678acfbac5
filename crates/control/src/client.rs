//! The command line's side: find a store's running owner ([`crate::owner`]) and send it the
//! request, blocking (plain HTTP on the owner's address, its token as a bearer token).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::owner::{self, Found, Owner};
use crate::{io, Result};

/// A refused or failed request: its status and the API's answer.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The HTTP status (0: no answer).
    pub status: u16,
    pub message: String,
    /// The API's JSON answer (`errors`: located input errors), when there was one.
    pub body: Option<Value>,
}

/// A client of one owner.
pub struct Client {
    pub owner: Owner,
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// The client of the process that owns `store`, if one is running (a stale owner file is
/// removed and `None` returned: the store is free).
pub fn for_store(store: &Path) -> Result<Option<Client>> {
    match owner::find(store)? {
        Found::None => Ok(None),
        Found::Stale(_) => {
            let _ = std::fs::remove_file(owner::path(store));
            Ok(None)
        }
        Found::Live(o) => Client::new(o).map(Some),
    }
}

impl Client {
    pub fn new(owner: Owner) -> Result<Client> {
        let token = match &owner.token_file {
            Some(f) => std::fs::read_to_string(f)
                .map_err(io(format!(
                    "reading the token file {} named by the store's owner file",
                    f.display()
                )))?
                .trim()
                .to_owned(),
            None => std::env::var("CRIEUR_TOKEN").unwrap_or_default(),
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(120)))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Client {
            base: format!("http://{}", owner.address),
            owner,
            token,
            agent,
        })
    }

    fn answer(
        r: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value> {
        let mut r = r.map_err(|e| ApiError {
            status: 0,
            message: format!("the store's owner did not answer: {e}"),
            body: None,
        })?;
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        let body: Option<Value> = serde_json::from_str(&text).ok();
        if (200..300).contains(&status) {
            return Ok(body.unwrap_or(Value::Null));
        }
        let message = body
            .as_ref()
            .and_then(|b| b["error"].as_str())
            .map_or_else(|| format!("HTTP {status}: {text}"), str::to_owned);
        Err(ApiError {
            status,
            message,
            body,
        }
        .into())
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Value> {
        Self::answer(
            self.agent
                .get(format!("{}{path}", self.base))
                .header("Authorization", format!("Bearer {}", self.token))
                .call(),
        )
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Result<Value> {
        Self::answer(
            self.agent
                .delete(format!("{}{path}", self.base))
                .header("Authorization", format!("Bearer {}", self.token))
                .call(),
        )
    }

    /// `POST path` with `body` of `content_type`.
    pub fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Result<Value> {
        Self::answer(
            self.agent
                .post(format!("{}{path}", self.base))
                .header("Authorization", format!("Bearer {}", self.token))
                .header("Content-Type", content_type)
                .send(body),
        )
    }
}

/// Percent-encodes a query or path value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
