//! A PostgreSQL database of its own for each test, on the server `.ci/run` and
//! `scripts/setup` install and start.
//!
//! The server is reached through `CRIEUR_TEST_POSTGRES` (a connection string to a database
//! the role may connect to, with `CREATEDB`), by default
//! `postgres://crieur:crieur@127.0.0.1:5432/postgres` (the role `scripts/setup` creates).
//! A test that needs PostgreSQL fails, loudly, when it cannot be reached — unless
//! `CRIEUR_SKIP_POSTGRES=1` says to skip it (for a developer's machine without it; CI never
//! sets it).

use std::sync::atomic::{AtomicUsize, Ordering};

use postgres::{Client, NoTls};

/// The default server: the role `scripts/setup` creates, on loopback.
pub const DEFAULT_URL: &str = "postgres://crieur:crieur@127.0.0.1:5432/postgres";

/// A fresh database, dropped (with its connections) when this is dropped.
pub struct PgDb {
    admin_url: String,
    name: String,
    /// The database's connection string.
    pub url: String,
}

/// Whether the tests that need PostgreSQL are told to skip (`CRIEUR_SKIP_POSTGRES=1`).
/// Never under CI (`CI=true`): there a missing server is a failure, not a skip.
pub fn skipped() -> bool {
    let asked = std::env::var("CRIEUR_SKIP_POSTGRES").is_ok_and(|v| v == "1");
    if asked && std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("CRIEUR_SKIP_POSTGRES=1 is refused under CI=true: the PostgreSQL tests must run");
    }
    asked
}

/// `url` with its database name replaced by `db`.
fn with_db(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let base = match base.rfind('/') {
        Some(i) if i > base.find("://").map_or(0, |s| s + 2) => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// Runs `f` off any tokio runtime (the `postgres` client runs one of its own).
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

impl PgDb {
    /// Creates a database for one test. `None` only when `CRIEUR_SKIP_POSTGRES=1`; panics,
    /// saying how to get a server, when none is reachable.
    pub fn new() -> Option<PgDb> {
        static N: AtomicUsize = AtomicUsize::new(0);
        if skipped() {
            eprintln!("CRIEUR_SKIP_POSTGRES=1: skipping a test that needs PostgreSQL");
            return None;
        }
        let admin_url =
            std::env::var("CRIEUR_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let name = format!(
            "crieur_test_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            rand_suffix()
        );
        off_runtime(|| {
            let mut c = Client::connect(&admin_url, NoTls).unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is needed by this test and cannot be reached at {admin_url:?}: {e}\n\
                     Install and start it with scripts/setup (or set CRIEUR_TEST_POSTGRES to a \
                     server where the role may create databases; CRIEUR_SKIP_POSTGRES=1 skips \
                     these tests locally)"
                )
            });
            c.batch_execute(&format!("CREATE DATABASE {name}"))
                .unwrap_or_else(|e| panic!("cannot create database {name}: {e:?}"));
        });
        Some(PgDb {
            url: with_db(&admin_url, &name),
            admin_url,
            name,
        })
    }
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish() as u32
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (url, name) = (&self.admin_url, &self.name);
        off_runtime(|| {
            if let Ok(mut c) = Client::connect(url, NoTls) {
                // FORCE: connections a killed process left are closed too.
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::with_db;

    #[test]
    fn the_database_name_is_replaced() {
        assert_eq!(
            with_db("postgres://u:p@127.0.0.1:5432/postgres", "t1"),
            "postgres://u:p@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_db("postgres://u@h/postgres?sslmode=disable", "t1"),
            "postgres://u@h/t1?sslmode=disable"
        );
        assert_eq!(with_db("postgres://u@h", "t1"), "postgres://u@h/t1");
    }
}
