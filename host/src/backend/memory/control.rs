//! The control-plane store of a single node: the state in memory, and in
//! `server.data_dir/control-plane.json` when a data directory is configured (written to a
//! temporary file, synced and renamed over the old one, so a crash leaves either state).
//! Plugin bytes are files `server.data_dir/plugins/<sha256>.wasm`, written before the state
//! that names them and deleted after the state that stops naming them (in memory without a
//! data directory). The only node report is this node's.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::sync::{broadcast, watch};

use crate::backend::BoxFuture;
use crate::backend::control::{Blob, COMMAND_BACKLOG, ControlState, ControlStore, NodeReport, REPLY_TTL, StoreError};
use crate::plugin::{Hook, Source, TenantSlots, VersionState};
use crate::revocation::{Revocation, Revoked};

/// File name of the state under `server.data_dir`.
const FILE: &str = "control-plane.json";
/// Directory of the plugin bytes under `server.data_dir`.
const PLUGINS: &str = "plugins";
/// Where releases before the control plane kept uploaded plugin slots, under [`PLUGINS`].
const LEGACY_PLUGIN_STATE: &str = "state.json";

pub(crate) struct FileStore {
    /// `None`: memory only (no `server.data_dir`); the state is lost on restart.
    dir: Option<PathBuf>,
    /// Held for a compare, file writes and a swap; never across an await.
    state: Mutex<Current>,
    version: watch::Sender<u64>,
    /// Commands to this node (the only one).
    commands: broadcast::Sender<String>,
    /// Answers to requests by request id, with when the first came (dropped after
    /// `REPLY_TTL`); held only to add or copy them.
    replies: Mutex<HashMap<String, (std::time::Instant, Vec<String>)>>,
    /// Token revocations; held only to add, prune or copy them.
    revoked: Mutex<Vec<Revocation>>,
    /// This node's name and last report; held only to swap or read it.
    report: Mutex<Option<(String, BTreeMap<String, String>)>>,
}

#[derive(Default)]
struct Current {
    state: ControlState,
    /// Plugin bytes by hash, without a data directory.
    blobs: HashMap<String, bytes::Bytes>,
}

impl FileStore {
    /// Opens the store, reading the state a previous run left in `dir`.
    pub(crate) fn open(dir: Option<PathBuf>) -> Result<Self, StoreError> {
        let mut state = match &dir {
            Some(d) if d.join(FILE).exists() => {
                let path = d.join(FILE);
                serde_json::from_slice(&std::fs::read(&path).map_err(io_error("reading", &path))?)?
            }
            _ => ControlState::default(),
        };
        if let Some(d) = &dir {
            import_legacy_plugins(d, &mut state)?;
        }
        let (version, _) = watch::channel(state.version);
        let current = Current { state, blobs: HashMap::new() };
        let commands = broadcast::channel(COMMAND_BACKLOG).0;
        Ok(Self {
            dir,
            state: Mutex::new(current),
            version,
            commands,
            replies: Mutex::default(),
            revoked: Mutex::default(),
            report: Mutex::default(),
        })
    }

    fn blob_path(dir: &Path, hash: &str) -> PathBuf {
        dir.join(PLUGINS).join(format!("{hash}.wasm"))
    }

    fn swap(&self, expected: u64, mut state: ControlState, blobs: Vec<Blob>) -> Result<u64, StoreError> {
        let mut current = self.state.lock().expect("control store lock");
        if current.state.version != expected {
            return Err(StoreError::Conflict { current: current.state.version });
        }
        state.version = expected + 1;
        self.store(&mut current, state, blobs)?;
        Ok(current.state.version)
    }

    fn put_back(&self, state: ControlState, blobs: Vec<Blob>) -> Result<bool, StoreError> {
        let mut current = self.state.lock().expect("control store lock");
        if current.state.version >= state.version {
            return Ok(false);
        }
        self.store(&mut current, state, blobs)?;
        Ok(true)
    }

    /// Writes the plugin bytes, then the state, then drops bytes it no longer names.
    fn store(&self, current: &mut Current, state: ControlState, blobs: Vec<Blob>) -> Result<(), StoreError> {
        match &self.dir {
            Some(dir) => {
                for blob in &blobs {
                    let path = Self::blob_path(dir, &blob.hash);
                    if !path.exists() {
                        write_atomic(&path, &blob.bytes)?;
                    }
                }
                write_atomic(&dir.join(FILE), &serde_json::to_vec_pretty(&state)?)?;
                remove_unnamed_blobs(dir, &state);
            }
            None => {
                current.blobs.extend(blobs.into_iter().map(|b| (b.hash, b.bytes)));
                let named = state.plugin_hashes();
                current.blobs.retain(|hash, _| named.contains(hash.as_str()));
            }
        }
        current.state = state;
        Ok(())
    }

    fn read_blob(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let current = self.state.lock().expect("control store lock");
        if !current.state.plugin_hashes().contains(hash) {
            return Ok(None);
        }
        match &self.dir {
            None => Ok(current.blobs.get(hash).map(|b| b.to_vec())),
            Some(dir) => match std::fs::read(Self::blob_path(dir, hash)) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_error("reading", &Self::blob_path(dir, hash))(e)),
            },
        }
    }
}

impl ControlStore for FileStore {
    fn load(&self) -> BoxFuture<'_, Result<ControlState, StoreError>> {
        let state = self.state.lock().expect("control store lock").state.clone();
        Box::pin(async move { Ok(state) })
    }

    fn replace(&self, expected: u64, state: ControlState, blobs: Vec<Blob>) -> BoxFuture<'_, Result<u64, StoreError>> {
        let result = self.swap(expected, state, blobs);
        if let Ok(version) = &result {
            self.version.send_replace(*version);
        }
        Box::pin(async move { result })
    }

    fn blob(&self, hash: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        let result = self.read_blob(hash);
        Box::pin(async move { result })
    }

    fn version(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        let version = self.state.lock().expect("control store lock").state.version;
        Box::pin(async move { Ok(version) })
    }

    fn restore(&self, state: ControlState, blobs: Vec<Blob>) -> BoxFuture<'_, Result<bool, StoreError>> {
        let version = state.version;
        let result = self.put_back(state, blobs);
        if let Ok(true) = result {
            self.version.send_replace(version);
        }
        Box::pin(async move { result })
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn report(&self, node: &str, report: Option<BTreeMap<String, String>>) -> BoxFuture<'_, Result<(), StoreError>> {
        *self.report.lock().expect("report lock") = report.map(|r| (node.to_owned(), r));
        Box::pin(async { Ok(()) })
    }

    fn command(&self, command: String) -> BoxFuture<'_, Result<(), StoreError>> {
        let _ = self.commands.send(command);
        Box::pin(async { Ok(()) })
    }

    fn commands(&self) -> broadcast::Receiver<String> {
        self.commands.subscribe()
    }

    fn reply(&self, to: &str, answer: String) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut replies = self.replies.lock().expect("replies lock");
        let now = std::time::Instant::now();
        replies.retain(|_, (since, _)| now.duration_since(*since) < REPLY_TTL);
        replies.entry(to.to_owned()).or_insert_with(|| (now, Vec::new())).1.push(answer);
        Box::pin(async { Ok(()) })
    }

    fn replies(&self, to: &str) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        let replies = self.replies.lock().expect("replies lock");
        let answers = replies.get(to).map(|(_, answers)| answers.clone()).unwrap_or_default();
        Box::pin(async { Ok(answers) })
    }

    fn revoke(&self, tenant: &str, user: &str, revoked: Revoked) -> BoxFuture<'_, Result<(), StoreError>> {
        let now = crate::clock::now_millis() / 1000;
        let mut all = self.revoked.lock().expect("revocations lock");
        all.retain(|r| now < r.revoked.until);
        match all.iter_mut().find(|r| r.tenant == tenant && r.user == user) {
            Some(r) => r.revoked.merge(revoked),
            None => all.push(Revocation { tenant: tenant.to_owned(), user: user.to_owned(), revoked }),
        }
        Box::pin(async { Ok(()) })
    }

    fn revocations(&self) -> BoxFuture<'_, Result<Vec<Revocation>, StoreError>> {
        let all = self.revoked.lock().expect("revocations lock").clone();
        Box::pin(async { Ok(all) })
    }

    fn reports(&self, tenants: Vec<String>) -> BoxFuture<'_, Result<Vec<NodeReport>, StoreError>> {
        let report = self.report.lock().expect("report lock");
        let of = |r: &BTreeMap<String, String>| tenants.iter().map(|t| r.get(t).cloned()).collect();
        let reports = report.iter().map(|(node, r)| NodeReport { node: node.clone(), reports: of(r) }).collect();
        Box::pin(async { Ok(reports) })
    }
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let what = format!("{what} {}", path.display());
    move |source| StoreError::Io { what, source }
}

/// Writes a temporary file, syncs it and renames it over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_error("creating the directory of", path))?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io_error("creating", &tmp))?;
    file.write_all(bytes).map_err(io_error("writing", &tmp))?;
    file.sync_all().map_err(io_error("syncing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error("replacing", path))
}

/// Deletes plugin files `state` does not name; a failure only leaves a file behind.
fn remove_unnamed_blobs(dir: &Path, state: &ControlState) {
    let named = state.plugin_hashes();
    let Ok(entries) = std::fs::read_dir(dir.join(PLUGINS)) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(hash) = name.to_str().and_then(|n| n.strip_suffix(".wasm")) else { continue };
        if !named.contains(hash)
            && let Err(e) = std::fs::remove_file(entry.path())
        {
            tracing::warn!(error = %e, hash, "unused plugin file not removed");
        }
    }
}

/// A hook slot as releases before the control plane stored it.
#[derive(serde::Deserialize)]
struct LegacySlot {
    tenant: String,
    hook: Hook,
    active: Option<VersionState>,
    history: Vec<VersionState>,
}

#[derive(serde::Deserialize)]
struct LegacyFile {
    slots: Vec<LegacySlot>,
}

/// Moves the uploaded plugin slots an earlier release kept in `plugins/state.json` into the
/// state (their bytes are already where the store keeps them), once: the file is renamed.
/// Versions that came from config.toml are left to config.toml.
fn import_legacy_plugins(dir: &Path, state: &mut ControlState) -> Result<(), StoreError> {
    let legacy = dir.join(PLUGINS).join(LEGACY_PLUGIN_STATE);
    let Ok(bytes) = std::fs::read(&legacy) else { return Ok(()) };
    let file: LegacyFile = serde_json::from_slice(&bytes)?;
    for slot in file.slots {
        let uploaded = |v: &VersionState| v.provenance.source == Source::Upload;
        if slot.active.as_ref().is_some_and(|v| !uploaded(v)) {
            continue;
        }
        let slots: &mut TenantSlots = state.plugins.entry(slot.tenant).or_default();
        let history = slot.history.into_iter().filter(|v| uploaded(v)).collect();
        slots.insert(slot.hook, crate::plugin::SlotSpec { active: slot.active, history });
    }
    state.version += 1;
    write_atomic(&dir.join(FILE), &serde_json::to_vec_pretty(&state)?)?;
    std::fs::rename(&legacy, legacy.with_extension("json.imported")).map_err(io_error("renaming", &legacy))?;
    tracing::info!(slots = state.plugins.len(), "uploaded plugins moved into the control-plane state");
    Ok(())
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
        assert_eq!(store.replace(0, state.clone(), Vec::new()).await.unwrap(), 1);
        assert!(matches!(store.replace(0, state, Vec::new()).await, Err(StoreError::Conflict { current: 1 })));
        assert!(watch.has_changed().unwrap());
        assert_eq!(*watch.borrow_and_update(), 1);
    }

    #[tokio::test]
    async fn the_state_survives_a_reopen() {
        let d = dir();
        let store = FileStore::open(Some(d.clone())).unwrap();
        store.replace(0, ControlState::default(), Vec::new()).await.unwrap();
        store.replace(1, ControlState::default(), Vec::new()).await.unwrap();
        drop(store);
        let again = FileStore::open(Some(d.clone())).unwrap();
        assert_eq!(again.load().await.unwrap().version, 2);
        assert!(!d.join("control-plane.tmp").exists());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[tokio::test]
    async fn only_a_newer_state_is_restored_and_plugin_bytes_follow_the_state() {
        let store = FileStore::open(None).unwrap();
        let blob = Blob { hash: "ab".into(), bytes: bytes::Bytes::from_static(b"wasm") };
        store.replace(0, ControlState::default(), vec![blob.clone()]).await.unwrap();
        assert_eq!(store.blob("ab").await.unwrap(), None, "bytes no state names are dropped");
        let mut state = ControlState { version: 1, ..Default::default() };
        assert!(!store.restore(state.clone(), Vec::new()).await.unwrap(), "not newer than the stored version");
        let version = |n| VersionState {
            hash: "ab".into(),
            provenance: crate::plugin::Provenance {
                config: Default::default(),
                on_failure: Default::default(),
                installed_at: n,
                source: Source::Upload,
            },
        };
        let slot = crate::plugin::SlotSpec { active: Some(version(1)), history: Vec::new() };
        state.plugins.entry("t".into()).or_default().insert(Hook::Transform, slot);
        state.version = 7;
        let mut watch = store.watch();
        assert!(store.restore(state, vec![blob]).await.unwrap());
        assert_eq!((store.version().await.unwrap(), *watch.borrow_and_update()), (7, 7));
        assert_eq!(store.blob("ab").await.unwrap().as_deref(), Some(&b"wasm"[..]));
    }

    #[tokio::test]
    async fn uploads_kept_by_earlier_releases_move_into_the_state_once() {
        let d = dir();
        std::fs::create_dir_all(d.join(PLUGINS)).unwrap();
        let legacy = r#"{"slots":[
            {"tenant":"shop","hook":"transform",
             "active":{"hash":"h2","config":{},"on_failure":"skip","installed_at":2,"source":"upload"},
             "history":[{"hash":"h0","config":{},"on_failure":"skip","installed_at":0,"source":"config"},
                        {"hash":"h1","config":{},"on_failure":"drop","installed_at":1,"source":"upload"}]},
            {"tenant":"shop","hook":"route",
             "active":{"hash":"h3","config":{},"on_failure":"skip","installed_at":3,"source":"config"},
             "history":[]}]}"#;
        std::fs::write(d.join(PLUGINS).join(LEGACY_PLUGIN_STATE), legacy).unwrap();
        let store = FileStore::open(Some(d.clone())).unwrap();
        let state = store.load().await.unwrap();
        assert_eq!(state.version, 1);
        let slots = &state.plugins["shop"];
        let transform = &slots[&Hook::Transform];
        assert_eq!(transform.active.as_ref().unwrap().hash, "h2");
        assert_eq!(transform.history.iter().map(|v| v.hash.as_str()).collect::<Vec<_>>(), ["h1"]);
        assert!(!slots.contains_key(&Hook::Route), "a configured plugin stays with config.toml");
        drop(store);
        assert!(d.join(PLUGINS).join("state.json.imported").exists());
        assert_eq!(FileStore::open(Some(d.clone())).unwrap().load().await.unwrap().version, 1, "imported once");
        std::fs::remove_dir_all(d).unwrap();
    }
}
