//! `<store>/owner.json`: which process owns a store and where its control API listens — its
//! address, its pid and the path of the file holding its token (never the token itself).
//! Written once the API listens, removed on a clean exit; a file whose pid is gone is stale
//! (the owner crashed) and is ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{io, Error, Result};

/// The owner file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Where the control API listens.
    pub address: SocketAddr,
    pub pid: u32,
    /// The file holding the API's token (`None`: the owner took it from `CRIEUR_TOKEN`; a
    /// client needs the same variable).
    pub token_file: Option<PathBuf>,
    pub started: DateTime<Utc>,
    /// The campaigns it runs.
    pub campaigns: Vec<String>,
}

/// What is found next to a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// No owner file: nobody serves this store.
    None,
    /// A live owner.
    Live(Owner),
    /// An owner file whose process is gone.
    Stale(Owner),
}

/// The owner file of the store at `store`.
pub fn path(store: &Path) -> PathBuf {
    store.join("owner.json")
}

/// Whether process `pid` exists (Linux: `/proc/<pid>`).
fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Reads the owner file next to `store`.
pub fn find(store: &Path) -> Result<Found> {
    let p = path(store);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::None),
        Err(e) => return Err(io(format!("reading {}", p.display()))(e)),
    };
    let owner: Owner = serde_json::from_str(&text).map_err(|e| Error::OwnerFile {
        path: p.display().to_string(),
        why: e.to_string(),
    })?;
    Ok(if alive(owner.pid) && owner.pid != std::process::id() {
        Found::Live(owner)
    } else {
        Found::Stale(owner)
    })
}

/// The owner file while it is written: removed when dropped (a clean exit).
#[derive(Debug)]
pub struct Guard {
    path: PathBuf,
    /// A token file this process made (removed with the owner file).
    made_token: Option<PathBuf>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(t) = &self.made_token {
            let _ = std::fs::remove_file(t);
        }
    }
}

/// Writes `owner` next to `store` (atomically: a temporary file renamed). `made_token`: a
/// token file this process generated, removed with it.
pub fn write(store: &Path, owner: &Owner, made_token: Option<PathBuf>) -> Result<Guard> {
    let p = path(store);
    let tmp = store.join(".owner.json.tmp");
    let text = serde_json::to_string_pretty(owner).map_err(|e| Error::OwnerFile {
        path: p.display().to_string(),
        why: e.to_string(),
    })?;
    std::fs::write(&tmp, text).map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, &p).map_err(io(format!("writing {}", p.display())))?;
    Ok(Guard {
        path: p,
        made_token,
    })
}

/// The API's token: from `token_file`, else `CRIEUR_TOKEN` (`env`), else a new random one
/// written to `<store>/control.token` (mode 0600). Returns the token, the file a client reads
/// it from, and whether that file was made here.
pub fn token(
    store: &Path,
    token_file: Option<&Path>,
    env: Option<String>,
) -> Result<(String, Option<PathBuf>, bool)> {
    if let Some(f) = token_file {
        let t = std::fs::read_to_string(f)
            .map_err(io(format!("reading the token file {}", f.display())))?;
        let t = t.trim().to_owned();
        if t.is_empty() {
            return Err(Error::OwnerFile {
                path: f.display().to_string(),
                why: "the token file is empty".into(),
            });
        }
        let abs = std::path::absolute(f).unwrap_or_else(|_| f.to_path_buf());
        return Ok((t, Some(abs), false));
    }
    if let Some(t) = env.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) {
        return Ok((t, None, false));
    }
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut bytes[..]);
    let t = hex::encode(bytes);
    let f = store.join("control.token");
    write_private(&f, &t)?;
    let abs = std::path::absolute(&f).unwrap_or(f);
    Ok((t, Some(abs), true))
}

/// Writes `text` to a file only its owner can read.
fn write_private(f: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(f);
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    o.mode(0o600);
    let mut file = o.open(f).map_err(io(format!("writing {}", f.display())))?;
    file.write_all(text.as_bytes())
        .map_err(io(format!("writing {}", f.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(pid: u32) -> Owner {
        Owner {
            address: SocketAddr::from(([127, 0, 0, 1], 8080)),
            pid,
            token_file: None,
            started: DateTime::<Utc>::UNIX_EPOCH,
            campaigns: vec!["c".into()],
        }
    }

    #[test]
    fn an_owner_file_is_found_live_stale_or_absent_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(find(dir.path()).ok(), Some(Found::None));
        // pid 1 exists (init); a pid beyond pid_max does not.
        let g = write(dir.path(), &owner(1), None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(find(dir.path()).ok(), Some(Found::Live(owner(1))));
        drop(g);
        assert_eq!(find(dir.path()).ok(), Some(Found::None));
        let _g = write(dir.path(), &owner(u32::MAX - 1), None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            find(dir.path()).ok(),
            Some(Found::Stale(owner(u32::MAX - 1)))
        );
        std::fs::write(path(dir.path()), "{").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(find(dir.path()), Err(Error::OwnerFile { .. })));
    }

    #[test]
    fn a_generated_token_is_private_and_removed_with_the_owner_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (t, f, made) = token(dir.path(), None, None).unwrap_or_else(|e| panic!("{e}"));
        assert!(made && t.len() == 64);
        let f = f.unwrap_or_else(|| panic!("no token file"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&f)
                .unwrap_or_else(|e| panic!("{e}"))
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
        let g = write(dir.path(), &owner(1), Some(f.clone())).unwrap_or_else(|e| panic!("{e}"));
        drop(g);
        assert!(!f.exists());
        // The environment's token wins over generating one; a file over both.
        let (t, f, made) =
            token(dir.path(), None, Some(" abc ".into())).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.as_str(), f, made), ("abc", None, false));
        std::fs::write(dir.path().join("tok"), "xyz\n").unwrap_or_else(|e| panic!("{e}"));
        let (t, _, made) = token(
            dir.path(),
            Some(&dir.path().join("tok")),
            Some("abc".into()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.as_str(), made), ("xyz", false));
    }
}
