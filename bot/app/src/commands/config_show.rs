//! `loop config show`: the merged effective config, secrets redacted.

use std::path::Path;

use loop_daemon::config::{Config, ConfigError, TrustedVersion};

/// The effective config (with the project's file applied when `dir` is given, its widening
/// keys from `trusted`) as JSON, and the warnings produced while loading it.
pub fn render(
    config: &Config,
    dir: Option<&Path>,
    trusted: Option<&TrustedVersion>,
) -> Result<(String, Vec<String>), ConfigError> {
    match dir {
        Some(dir) => {
            let loaded = config.for_project(dir, trusted)?;
            let mut warnings = loaded.warnings;
            if !loaded.held_back.is_empty() {
                warnings.push(format!(
                    "{} is not trusted in this version, so these keys were held back: {} (`loop config trust {}`)",
                    loop_daemon::config::project::project_file_path(dir).display(),
                    loaded.held_back.join(", "),
                    dir.display()
                ));
            }
            Ok((loaded.config.to_redacted_json(), warnings))
        }
        None => Ok((config.to_redacted_json(), Vec::new())),
    }
}
