//! The two rules every layer's merge uses: a key a layer names replaces the value below it,
//! and `~` in a path is the home directory.

use std::path::{Path, PathBuf};

/// Expands a leading `~` or `~/` against `home`; other paths are returned as given.
pub fn expand_home(path: &str, home: &Path) -> PathBuf {
    if path == "~" {
        home.to_path_buf()
    } else if let Some(rest) = path.strip_prefix("~/") {
        home.join(rest)
    } else {
        PathBuf::from(path)
    }
}

pub(super) fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}

/// An optional text a layer sets, or clears with a blank one.
pub(super) fn set_or_clear(target: &mut Option<String>, value: Option<&String>) {
    if let Some(value) = value {
        *target = Some(value.clone()).filter(|v| !v.trim().is_empty());
    }
}
