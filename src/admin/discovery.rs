//! How the CLI finds the running service: `admin.json` beside the store, written at start
//! (pid and the admin API's address) and removed at a clean stop. A file left by a crash is
//! recognised by its pid no longer running.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use mxc::Secret;

const FILE: &str = "admin.json";

/// Why `admin.json` cannot be read: the CLI then cannot tell whether the service runs.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The file is there but cannot be read.
    #[error("{}: {error}", .path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file holds something other than what the service writes.
    #[error("{}: not what the service writes ({error})", .path.display())]
    Unreadable {
        path: PathBuf,
        error: serde_json::Error,
    },
}

#[derive(Serialize, Deserialize)]
pub struct Discovery {
    pub pid: u32,
    pub address: SocketAddr,
    /// Only when no token is configured (loopback): the one this run made up, readable by its
    /// user alone (the file is 0600). A configured token is never written anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    generated_token: Option<String>,
}

impl Discovery {
    pub fn new(address: SocketAddr, generated_token: Option<&Secret>) -> Discovery {
        Discovery {
            pid: std::process::id(),
            address,
            generated_token: generated_token.map(|t| t.expose().to_string()),
        }
    }

    pub fn path(store: &Path) -> PathBuf {
        store.join(FILE)
    }

    pub fn generated_token(&self) -> Option<Secret> {
        self.generated_token.clone().map(Secret::new)
    }

    /// Writes the file, readable by its owner only.
    pub fn write(&self, store: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let path = Discovery::path(store);
        let text = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path)?;
        file.write_all(&text)
    }

    pub fn remove(store: &Path) {
        let _ = std::fs::remove_file(Discovery::path(store));
    }

    /// The running service's file, if there is one and its process lives.
    pub fn find(store: &Path) -> Result<Option<Discovery>, DiscoveryError> {
        let path = Discovery::path(store);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(DiscoveryError::Read { path, error }),
        };
        let found: Discovery = match serde_json::from_slice(&text) {
            Ok(found) => found,
            Err(error) => return Err(DiscoveryError::Unreadable { path, error }),
        };
        Ok(alive(found.pid).then_some(found))
    }
}

/// Whether a process with this pid runs (on Linux, through /proc; elsewhere assumed).
fn alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    if !proc.is_dir() {
        return true;
    }
    proc.join(pid.to_string()).exists()
}
