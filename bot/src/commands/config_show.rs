//! `loop config show`: the merged effective config, secrets redacted.

use std::path::Path;

use crate::config::{Config, ConfigError};

/// The effective config (with the project's file applied when `dir` is given) as JSON, and the
/// warnings produced while loading it.
pub fn render(config: &Config, dir: Option<&Path>) -> Result<(String, Vec<String>), ConfigError> {
    match dir {
        Some(dir) => {
            let loaded = config.for_project(dir)?;
            Ok((loaded.config.to_redacted_json(), loaded.warnings))
        }
        None => Ok((config.to_redacted_json(), Vec::new())),
    }
}
