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
    /// What the command line says when it goes through the owner of `store`.
    pub fn note(&self, store: &Path) -> String {
        format!(
            "note: {} is held by a running crieur (pid {}, campaign {}): going through its control API at {}",
            store.display(),
            self.owner.pid,
            self.owner.campaigns.join(", "),
            self.owner.address
        )
    }

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

impl ApiError {
    /// The located input errors the API answered with (`errors`: file, line, column, field,
    /// value, message), as the command line prints its own; empty if none.
    pub fn located(&self) -> Vec<crieur_config::input::InputError> {
        use crieur_config::input::InputError;
        let Some(errors) = self.body.as_ref().and_then(|b| b["errors"].as_array()) else {
            return Vec::new();
        };
        errors
            .iter()
            .map(|e| {
                let s = |k: &str| e[k].as_str().map(str::to_owned);
                let n = |k: &str| e[k].as_u64().map(|n| n as usize);
                let mut ie = InputError::new(
                    Path::new(&s("file").unwrap_or_default()),
                    s("message").unwrap_or_default(),
                );
                if let Some(l) = n("line") {
                    ie = ie.at(l, n("column"));
                }
                if let Some(f) = s("field") {
                    ie = ie.field(f);
                }
                if let Some(v) = s("value") {
                    ie = ie.value(v);
                }
                ie
            })
            .collect()
    }
}

/// What an import into the running campaign did (`POST /api/campaigns/{id}/contacts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct Imported {
    pub created: u64,
    pub updated: u64,
    pub consents_added: u64,
    pub rows: u64,
}

/// An answer that does not have the shape the API documents.
fn shape(what: &str, v: &Value) -> crate::Error {
    ApiError {
        status: 200,
        message: format!("unexpected answer to {what}: {v}"),
        body: Some(v.clone()),
    }
    .into()
}

impl Client {
    /// Imports a contacts file (`name`, its `bytes`) into the running campaign `campaign`,
    /// validated there as `crieur import` validates it (all or nothing).
    pub fn import_contacts(
        &self,
        campaign: &str,
        name: &str,
        delimiter: u8,
        default_region: Option<&str>,
        bytes: &[u8],
    ) -> Result<Imported> {
        let mut q = format!(
            "?file={}&delimiter={}",
            encode(name),
            encode(&char::from(delimiter).to_string())
        );
        if let Some(r) = default_region {
            q.push_str(&format!("&default_region={}", encode(r)));
        }
        let v = self.post(
            &format!("/api/campaigns/{}/contacts{q}", encode(campaign)),
            "text/csv",
            bytes,
        )?;
        serde_json::from_value(v.clone()).map_err(|_| shape("an import", &v))
    }

    /// Records an opt-out (durable when it returns): whether it was new, and how many calls in
    /// progress to the number were hung up.
    pub fn add_opt_out(&self, number: &str, source: &str) -> Result<(bool, u64)> {
        let body = serde_json::json!({ "number": number, "source": source });
        let v = self.post(
            "/api/optouts",
            "application/json",
            body.to_string().as_bytes(),
        )?;
        Ok((v["new"] == true, v["hung_up"].as_u64().unwrap_or(0)))
    }

    /// Removes an opt-out: whether it was there.
    pub fn remove_opt_out(&self, number: &str) -> Result<bool> {
        let v = self.delete(&format!("/api/optouts/{}", encode(number)))?;
        Ok(v["removed"] == true)
    }

    /// Whether the number has opted out.
    pub fn is_opted_out(&self, number: &str) -> Result<bool> {
        let v = self.get(&format!("/api/optouts/{}", encode(number)))?;
        Ok(v["opted_out"] == true)
    }

    /// Imports an opt-out list (`name`, its `bytes`; all or nothing): how many numbers it
    /// held and how many were new.
    pub fn import_opt_outs(&self, name: &str, bytes: &[u8]) -> Result<(u64, u64)> {
        let v = self.post(
            &format!("/api/optouts/import?file={}", encode(name)),
            "text/plain",
            bytes,
        )?;
        match (v["numbers"].as_u64(), v["new"].as_u64()) {
            (Some(n), Some(new)) => Ok((n, new)),
            _ => Err(shape("an opt-out import", &v)),
        }
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
