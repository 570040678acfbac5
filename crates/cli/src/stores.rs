//! `--store`: a directory (the embedded sled store, the default) or a PostgreSQL connection
//! string (`postgres://…`, shared by several nodes).

use std::path::Path;
use std::sync::Arc;

use crieur_store::{PgStore, SledStore, Store};

/// A store any thread of the process may use.
pub type Shared = Arc<dyn Store + Send + Sync>;

/// Opens the store `--store` names (with `create`: creates it, or its schema, if needed).
/// `node` is written on the leases a PostgreSQL store takes.
pub fn open(spec: &Path, create: bool) -> Result<Shared, crieur_store::Error> {
    match spec.to_str() {
        Some(url) if PgStore::is_url(url) => Ok(Arc::new(
            PgStore::open(url, create)?.with_node(&crieur_runner::header::node_id()),
        )),
        _ => Ok(Arc::new(SledStore::open(spec, create)?)),
    }
}

/// How the store is named in messages (a connection string without its password).
pub fn shown(spec: &Path) -> String {
    match spec.to_str() {
        Some(url) if PgStore::is_url(url) => crieur_store::redact(url),
        _ => spec.display().to_string(),
    }
}

/// Where this process keeps the files of its control API (owner file, generated token): the
/// store's directory, or — a PostgreSQL store being shared by nodes — this node's audit
/// directory.
pub fn local_dir(spec: &Path, audit_dir: &Path) -> std::path::PathBuf {
    match spec.to_str() {
        Some(url) if PgStore::is_url(url) => audit_dir.to_path_buf(),
        _ => spec.to_path_buf(),
    }
}

/// [`local_dir`] of the store `spec` and its audit log.
pub fn home(spec: &Path, actx: &crate::audit::Ctx) -> std::path::PathBuf {
    local_dir(spec, &crate::audit::dir_for(spec, actx.dir.as_deref()))
}
