//! The control-plane store of a single node: the state in memory, and in
//! `server.data_dir/control-plane.json` when a data directory is configured (written to a
//! temporary file, synced and renamed over the old one, so a crash leaves either state).

use std::path::PathBuf;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::backend::BoxFuture;
use crate::backend::control::{ControlState, ControlStore, StoreError};

/// File name of the state under `server.data_dir`.
const FILE: &str = "control-plane.json";

pub(crate) struct FileStore {
    /// `None`: memory only (no `server.data_dir`); the state is lost on restart.
    path: Option<PathBuf>,
    /// Held for a compare, a file write and a swap; never across an await.
    state: Mutex<ControlState>,
    version: watch::Sender<u64>,
}

impl FileStore {
    /// Opens the store, reading the state a previous run left in `dir`.
    pub(crate) fn open(dir: Option<PathBuf>) -> Result<Self, StoreError> {
        let path = dir.map(|d| d.join(FILE));
        let state = match &path {
            Some(p) if p.exists() => {
                let text = std::fs::read(p)
                    .map_err(|source| StoreError::Io { what: format!("reading {}", p.display()), source })?;
                serde_json::from_slice(&text)?
            }
            _ => ControlState::default(),
        };
        let (version, _) = watch::channel(state.version);
        Ok(Self { path, state: Mutex::new(state), version })
    }

    fn write(&self, state: &ControlState) -> Result<(), StoreError> {
        let Some(path) = &self.path else { return Ok(()) };
        let io = |what: &str| {
            let what = format!("{what} {}", path.display());
            move |source| StoreError::Io { what, source }
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io("creating the directory of"))?;
        }
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(state)?;
        {
            use std::io::Write as _;
            let mut file = std::fs::File::create(&tmp).map_err(io("creating"))?;
            file.write_all(&bytes).map_err(io("writing"))?;
            file.sync_all().map_err(io("syncing"))?;
        }
        std::fs::rename(&tmp, path).map_err(io("replacing"))
    }
}

impl ControlStore for FileStore {
    fn load(&self) -> BoxFuture<'_, Result<ControlState, StoreError>> {
        let state = self.state.lock().expect("control store lock").clone();
        Box::pin(async move { Ok(state) })
    }

    fn replace(&self, expected: u64, mut state: ControlState) -> BoxFuture<'_, Result<u64, StoreError>> {
        let result = (|| {
            let mut current = self.state.lock().expect("control store lock");
            if current.version != expected {
                return Err(StoreError::Conflict { current: current.version });
            }
            state.version = expected + 1;
            self.write(&state)?;
            *current = state;
            Ok(current.version)
        })();
        if let Ok(version) = &result {
            self.version.send_replace(*version);
        }
        Box::pin(async move { result })
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "notify-control-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[tokio::test]
    async fn versions_advance_and_conflicts_are_refused() {
        let store = FileStore::open(None).unwrap();
        let mut watch = store.watch();
        let state = store.load().await.unwrap();
        assert_eq!(state.version, 0);
        assert_eq!(store.replace(0, state.clone()).await.unwrap(), 1);
        assert!(matches!(store.replace(0, state).await, Err(StoreError::Conflict { current: 1 })));
        assert!(watch.has_changed().unwrap());
        assert_eq!(*watch.borrow_and_update(), 1);
    }

    #[tokio::test]
    async fn the_state_survives_a_reopen() {
        let d = dir();
        let store = FileStore::open(Some(d.clone())).unwrap();
        store.replace(0, ControlState::default()).await.unwrap();
        store.replace(1, ControlState::default()).await.unwrap();
        drop(store);
        let again = FileStore::open(Some(d.clone())).unwrap();
        assert_eq!(again.load().await.unwrap().version, 2);
        assert!(!d.join("control-plane.json.tmp").exists());
        std::fs::remove_dir_all(d).unwrap();
    }
}
