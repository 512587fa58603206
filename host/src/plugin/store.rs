//! Durable storage of uploaded plugins under `server.data_dir`: component bytes by content
//! hash (`plugins/<sha256>.wasm`) and the state of every hook slot changed through the admin
//! API (`plugins/state.json`). Files are written to a temporary name and renamed, so a crash
//! never leaves a half-written file behind.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Hook, Source};
use crate::config::FailurePolicy;

/// How a plugin version was installed: everything about it but its bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Provenance {
    pub config: BTreeMap<String, String>,
    pub on_failure: FailurePolicy,
    /// Unix seconds.
    pub installed_at: u64,
    pub source: Source,
}

/// One stored plugin version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct VersionState {
    pub hash: String,
    #[serde(flatten)]
    pub provenance: Provenance,
}

/// One hook slot: its active version and history (newest last).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SlotState {
    pub tenant: String,
    pub hook: Hook,
    pub active: Option<VersionState>,
    pub history: Vec<VersionState>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    slots: Vec<SlotState>,
}

/// The plugin directory.
pub(crate) struct PluginStore {
    dir: PathBuf,
}

impl PluginStore {
    pub(crate) fn open(data_dir: &Path) -> io::Result<Self> {
        let dir = data_dir.join("plugins");
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn blob(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}.wasm"))
    }

    /// Stores component bytes under their hash (once).
    pub(crate) fn save_blob(&self, hash: &str, wasm: &[u8]) -> io::Result<()> {
        let path = self.blob(hash);
        if path.exists() {
            return Ok(());
        }
        write_atomic(&path, wasm)
    }

    pub(crate) fn load_blob(&self, hash: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.blob(hash))
    }

    /// Replaces the stored slot states.
    pub(crate) fn save_state(&self, slots: Vec<SlotState>) -> io::Result<()> {
        let text = serde_json::to_vec_pretty(&StateFile { slots }).map_err(io::Error::other)?;
        write_atomic(&self.dir.join("state.json"), &text)
    }

    /// The stored slot states (none before the first change).
    pub(crate) fn load_state(&self) -> io::Result<Vec<SlotState>> {
        match std::fs::read(self.dir.join("state.json")) {
            Ok(bytes) => Ok(serde_json::from_slice::<StateFile>(&bytes).map_err(io::Error::other)?.slots),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
