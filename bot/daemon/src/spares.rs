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

#[derive(Debug, Default)]
struct Table {
    slots: HashMap<PathBuf, Slot>,
    /// The daemon is stopping: no new spare, and one that finishes starting is given back.
    closed: bool,
}

/// The spares, by project directory.
#[derive(Debug, Default)]
pub struct Spares {
    table: Mutex<Table>,
}

/// A spare that finished starting after [`Spares::take_all`]: its starter discards it.
#[derive(Debug)]
pub struct TooLate(pub Box<Spare>);

impl Spares {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves the project's slot for a start; false when it has a spare or one is starting,
    /// or the daemon is stopping.
    pub fn reserve(&self, project: &Path) -> bool {
        let mut table = self.lock();
        if table.closed || table.slots.contains_key(project) {
            return false;
        }
        table.slots.insert(project.to_path_buf(), Slot::Starting);
        true
    }

    /// Takes the project's ready spare out (whoever takes it adopts or retires it).
    pub fn take(&self, project: &Path) -> Option<Spare> {
        let slots = &mut self.lock().slots;
        match slots.get(project) {
            Some(Slot::Ready(_)) => match slots.remove(project) {
                Some(Slot::Ready(spare)) => Some(spare),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn has_ready(&self, project: &Path) -> bool {
        matches!(self.lock().slots.get(project), Some(Slot::Ready(_)))
    }

    /// Every ready spare, for discarding at stop; from now on nothing is reserved, and a
    /// spare still starting is given back to its starter ([`TooLate`]).
    pub fn take_all(&self) -> Vec<Spare> {
        let mut table = self.lock();
        table.closed = true;
        table
            .slots
            .drain()
            .filter_map(|(_, slot)| match slot {
                Slot::Ready(spare) => Some(spare),
                Slot::Starting => None,
            })
            .collect()
    }

    /// The spare started for `project` is ready for a new thread, unless the daemon began
    /// stopping meanwhile (then it is the caller's to discard).
    pub fn ready(&self, project: &Path, spare: Spare) -> Result<(), TooLate> {
        let mut table = self.lock();
        if table.closed {
            return Err(TooLate(Box::new(spare)));
        }
        table
            .slots
            .insert(project.to_path_buf(), Slot::Ready(spare));
        Ok(())
    }

    /// Frees `project`'s slot (its spare could not start).
    pub fn release(&self, project: &Path) {
        self.lock().slots.remove(project);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spare(id: &str) -> Spare {
        Spare {
            id: id.into(),
            worktree: None,
        }
    }

    #[test]
    fn a_spare_that_finishes_starting_after_the_stop_goes_back_to_its_starter() {
        let spares = Spares::default();
        let (early, late) = (Path::new("/p/early"), Path::new("/p/late"));
        assert!(spares.reserve(early) && spares.reserve(late));
        assert!(!spares.reserve(early), "one start per project");
        spares.ready(early, spare("spare-1")).expect("ready");
        // The stop takes what is ready; the one still starting is not lost in between.
        let taken = spares.take_all();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].id, "spare-1");
        let TooLate(back) = spares.ready(late, spare("spare-2")).expect_err("too late");
        assert_eq!(back.id, "spare-2");
        assert!(!spares.has_ready(late));
        assert!(
            !spares.reserve(Path::new("/p/new")),
            "nothing new after the stop"
        );
    }
}
