//! What the control plane keeps of plugins: every uploaded version as its component's hash
//! and provenance, and every hook slot changed through the admin API as its active version
//! and history. Pure data and the slot changes the admin API makes; the bytes live in the
//! control-plane store beside the state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Hook, PluginError, Source};
use crate::config::FailurePolicy;

/// Versions kept for rollback per slot; older ones are forgotten (and their bytes removed
/// from the store once no slot names them).
pub(crate) const MAX_HISTORY: usize = 5;

/// How a plugin version was installed: everything about it but its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Provenance {
    pub config: BTreeMap<String, String>,
    pub on_failure: FailurePolicy,
    /// Unix seconds.
    pub installed_at: u64,
    pub source: Source,
}

/// One stored plugin version: its component's sha256 and how it was installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VersionState {
    pub hash: String,
    #[serde(flatten)]
    pub provenance: Provenance,
}

/// A hook slot changed through the admin API. It overrides the plugin config.toml names for
/// the hook: `active: None` turns the hook off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SlotSpec {
    pub active: Option<VersionState>,
    /// Earlier versions, newest last (rollback takes the last).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<VersionState>,
}

/// A tenant's changed slots.
pub(crate) type TenantSlots = BTreeMap<Hook, SlotSpec>;

impl SlotSpec {
    /// Every version the slot names.
    pub(crate) fn versions(&self) -> impl Iterator<Item = &VersionState> {
        self.active.iter().chain(&self.history)
    }
}

/// Makes `version` the active one of `hook`; the one it replaces goes to the history.
pub(crate) fn upload(slots: &mut TenantSlots, hook: Hook, version: VersionState) {
    let slot = slots.entry(hook).or_default();
    if let Some(old) = slot.active.replace(version) {
        slot.history.push(old);
    }
    let excess = slot.history.len().saturating_sub(MAX_HISTORY);
    slot.history.drain(..excess);
}

/// Makes the previous version active again: the newest of the history, or, when the history
/// is empty, the configured plugin (`configured`). Returns the version now active (`None`:
/// the configured one).
pub(crate) fn rollback(
    slots: &mut TenantSlots,
    hook: Hook,
    configured: bool,
) -> Result<Option<VersionState>, PluginError> {
    let slot = slots.get_mut(&hook).ok_or(PluginError::NoPrevious(hook.as_str()))?;
    if let Some(previous) = slot.history.pop() {
        slot.active = Some(previous.clone());
        return Ok(Some(previous));
    }
    if configured {
        slots.remove(&hook);
        return Ok(None);
    }
    Err(PluginError::NoPrevious(hook.as_str()))
}

/// Turns the hook off; its active version goes to the history (rollback restores it).
pub(crate) fn remove(slots: &mut TenantSlots, hook: Hook, configured: bool) -> Result<(), PluginError> {
    match slots.get_mut(&hook) {
        Some(slot) => {
            let old = slot.active.take().ok_or(PluginError::NotInstalled(hook.as_str()))?;
            slot.history.push(old);
        }
        None if configured => {
            slots.insert(hook, SlotSpec::default());
        }
        None => return Err(PluginError::NotInstalled(hook.as_str())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(n: u64) -> VersionState {
        let provenance = Provenance {
            config: BTreeMap::new(),
            on_failure: FailurePolicy::Skip,
            installed_at: n,
            source: Source::Upload,
        };
        VersionState { hash: format!("h{n}"), provenance }
    }

    #[test]
    fn uploads_keep_a_bounded_history_and_roll_back_in_order() {
        let mut slots = TenantSlots::new();
        for n in 0..8 {
            upload(&mut slots, Hook::Transform, version(n));
        }
        assert_eq!(slots[&Hook::Transform].history.len(), MAX_HISTORY);
        assert_eq!(rollback(&mut slots, Hook::Transform, false).unwrap(), Some(version(6)));
        assert_eq!(slots[&Hook::Transform].active, Some(version(6)));
        for _ in 0..4 {
            rollback(&mut slots, Hook::Transform, false).unwrap();
        }
        assert!(matches!(rollback(&mut slots, Hook::Transform, false), Err(PluginError::NoPrevious(_))));
    }

    #[test]
    fn the_configured_plugin_is_what_rollback_and_remove_fall_back_to() {
        let mut slots = TenantSlots::new();
        assert!(matches!(remove(&mut slots, Hook::Auth, false), Err(PluginError::NotInstalled(_))));
        remove(&mut slots, Hook::Auth, true).unwrap();
        assert_eq!(slots[&Hook::Auth], SlotSpec::default(), "the configured plugin is turned off");
        assert_eq!(rollback(&mut slots, Hook::Auth, true).unwrap(), None);
        assert!(slots.is_empty(), "the configured plugin is back");
        upload(&mut slots, Hook::Auth, version(1));
        remove(&mut slots, Hook::Auth, true).unwrap();
        assert!(matches!(remove(&mut slots, Hook::Auth, true), Err(PluginError::NotInstalled(_))));
        assert_eq!(rollback(&mut slots, Hook::Auth, true).unwrap(), Some(version(1)));
    }
}
