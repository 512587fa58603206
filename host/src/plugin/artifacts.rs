//! Compiled plugins kept on disk, so that a version no longer active leaves memory and comes
//! back (a rollback) in milliseconds instead of a compile: per component sha256, its bytes
//! (`<hash>.wasm`) and wasmtime's serialization of what this node compiled from them
//! (`<hash>.cwasm`).
//!
//! A serialized component is native code, loaded without checks of its own, so only what
//! this process wrote is ever loaded: the directory is created fresh and private (mode 0700)
//! for the node, under `plugins.artifacts_dir` (default: the system's temporary directory),
//! removed when the node stops, and a file is loaded only if its SHA-256 matches the one
//! recorded when it was written. A tenant's upload is always compiled, never read as native
//! code.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::tenant::hex;

pub(crate) struct Artifacts {
    dir: PathBuf,
    /// The SHA-256 of each serialized component written, by component hash. Held only to
    /// look up, insert or remove, never across file I/O.
    written: Mutex<HashMap<String, [u8; 32]>>,
}

impl Artifacts {
    /// Creates the node's private directory under `parent`.
    pub(crate) fn create(parent: &Path) -> io::Result<Self> {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(io::Error::other)?;
        let dir = parent.join(format!("notify-plugins-{}-{}", std::process::id(), hex(&random)));
        private_dir(&dir)?;
        Ok(Self { dir, written: Mutex::default() })
    }

    /// Keeps `component`, compiled from `wasm` (whose sha256 is `hash`).
    pub(crate) fn keep(&self, hash: &str, wasm: &[u8], component: &Component) -> Result<(), wasmtime::Error> {
        let native = component.serialize()?;
        write(&self.path(hash, "wasm"), wasm)?;
        write(&self.path(hash, "cwasm"), &native)?;
        self.written.lock().expect("artifacts lock").insert(hash.to_owned(), Sha256::digest(&native).into());
        Ok(())
    }

    /// The component with sha256 `hash`, as this node compiled it, if kept.
    pub(crate) fn component(&self, engine: &Engine, hash: &str) -> Option<Component> {
        let digest = *self.written.lock().expect("artifacts lock").get(hash)?;
        let native = std::fs::read(self.path(hash, "cwasm")).ok()?;
        if <[u8; 32]>::from(Sha256::digest(&native)) != digest {
            tracing::error!(hash, dir = %self.dir.display(), "a kept compiled plugin was changed on disk; not loaded");
            return None;
        }
        // SAFETY: these bytes are what `Component::serialize` produced in this process for
        // this engine (their digest was recorded then and matches now); wasmtime checks
        // that they were made by the same version and configuration.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, &native) };
        component.inspect_err(|e| tracing::warn!(hash, "a kept compiled plugin did not load: {e:#}")).ok()
    }

    /// The bytes of the component with sha256 `hash`, if kept.
    pub(crate) fn wasm(&self, hash: &str) -> Option<bytes::Bytes> {
        self.written.lock().expect("artifacts lock").contains_key(hash).then_some(())?;
        std::fs::read(self.path(hash, "wasm")).ok().map(bytes::Bytes::from)
    }

    /// Whether the component with sha256 `hash` is kept.
    pub(crate) fn has(&self, hash: &str) -> bool {
        self.written.lock().expect("artifacts lock").contains_key(hash)
    }

    pub(crate) fn len(&self) -> usize {
        self.written.lock().expect("artifacts lock").len()
    }

    /// Removes every kept component but those in `keep`.
    pub(crate) fn retain(&self, keep: &HashSet<&str>) {
        let gone: Vec<String> = {
            let mut written = self.written.lock().expect("artifacts lock");
            let gone = written.keys().filter(|h| !keep.contains(h.as_str())).cloned().collect();
            written.retain(|h, _| keep.contains(h.as_str()));
            gone
        };
        for hash in gone {
            let _ = std::fs::remove_file(self.path(&hash, "cwasm"));
            let _ = std::fs::remove_file(self.path(&hash, "wasm"));
        }
    }

    /// `hash` is a sha256 in hex (checked by the caller's lookup in `written`, which holds
    /// only hashes this process computed).
    fn path(&self, hash: &str, extension: &str) -> PathBuf {
        self.dir.join(format!("{hash}.{extension}"))
    }
}

impl Drop for Artifacts {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), "compiled plugins not removed: {e}");
        }
    }
}

fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(dir)
}

/// Writes `bytes` to `path` whole or not at all.
fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: a preamble with the component layer and nothing in it.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn kept() -> (Artifacts, Engine, String) {
        let engine = Engine::default();
        let component = Component::new(&engine, EMPTY_COMPONENT).expect("an empty component compiles");
        let artifacts = Artifacts::create(&std::env::temp_dir()).expect("a private directory");
        let hash = hex(&Sha256::digest(EMPTY_COMPONENT));
        artifacts.keep(&hash, EMPTY_COMPONENT, &component).expect("kept");
        (artifacts, engine, hash)
    }

    #[test]
    fn a_kept_component_comes_back_with_its_bytes_from_a_private_directory() {
        use std::os::unix::fs::PermissionsExt;
        let (artifacts, engine, hash) = kept();
        let mode = std::fs::metadata(&artifacts.dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(artifacts.has(&hash));
        assert!(artifacts.component(&engine, &hash).is_some());
        assert_eq!(artifacts.wasm(&hash).as_deref(), Some(EMPTY_COMPONENT));
        assert!(artifacts.component(&engine, "0".repeat(64).as_str()).is_none(), "never written");
    }

    #[test]
    fn a_changed_file_is_never_loaded_and_what_is_not_retained_is_removed() {
        let (artifacts, engine, hash) = kept();
        let native = artifacts.path(&hash, "cwasm");
        let mut bytes = std::fs::read(&native).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&native, bytes).unwrap();
        assert!(artifacts.component(&engine, &hash).is_none());

        artifacts.retain(&HashSet::new());
        assert!(!artifacts.has(&hash) && !native.exists() && !artifacts.path(&hash, "wasm").exists());
        let dir = artifacts.dir.clone();
        drop(artifacts);
        assert!(!dir.exists(), "the directory goes with the node");
    }
}
