//! Which project has a spare agent (see `orchestrator/spares.rs`): one slot per project
//! directory, reserved while its spare starts, then ready until a new thread takes it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::branches::spare::SpareWorktree;

/// A project's spare, as the orchestrator knows it.
#[derive(Debug, Clone)]
pub struct Spare {
    /// The runner's name for it (its channel id until a thread adopts it); also the key of
    /// its tokens.
    pub id: String,
    pub worktree: Option<SpareWorktree>,
}

#[derive(Debug, Clone)]
enum Slot {
    /// Being started (one start per project at a time).
    Starting,
    Ready(Spare),
}

/// The spares, by project directory.
#[derive(Debug, Default)]
pub struct Spares {
    slots: Mutex<HashMap<PathBuf, Slot>>,
}

impl Spares {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves the project's slot for a start; false when it has a spare or one is starting.
    pub fn reserve(&self, project: &Path) -> bool {
        let mut slots = self.lock();
        if slots.contains_key(project) {
            return false;
        }
        slots.insert(project.to_path_buf(), Slot::Starting);
        true
    }

    /// Takes the project's ready spare out (whoever takes it adopts or retires it).
    pub fn take(&self, project: &Path) -> Option<Spare> {
        let mut slots = self.lock();
        match slots.get(project) {
            Some(Slot::Ready(_)) => match slots.remove(project) {
                Some(Slot::Ready(spare)) => Some(spare),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn has_ready(&self, project: &Path) -> bool {
        matches!(self.lock().get(project), Some(Slot::Ready(_)))
    }

    pub fn take_all(&self) -> Vec<Spare> {
        self.lock()
            .drain()
            .filter_map(|(_, slot)| match slot {
                Slot::Ready(spare) => Some(spare),
                Slot::Starting => None,
            })
            .collect()
    }

    /// The spare started for `project` is ready for a new thread.
    pub fn ready(&self, project: &Path, spare: Spare) {
        self.lock()
            .insert(project.to_path_buf(), Slot::Ready(spare));
    }

    /// Frees `project`'s slot (its spare could not start).
    pub fn release(&self, project: &Path) {
        self.lock().remove(project);
    }
}
