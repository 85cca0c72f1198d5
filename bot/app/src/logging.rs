//! tracing setup: an env filter (`RUST_LOG` wins over `log_level`), text or JSON, stderr or a
//! file. Secrets never reach logs because config values are `Secret`s whose `Debug` redacts.

use std::fs::OpenOptions;
use std::path::Path;

use tracing_subscriber::EnvFilter;

use loop_daemon::config::LogFormat;

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("cannot open log file {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid log filter: {0}")]
    Filter(String),
}

/// Installs the global subscriber. Call once, at the binary's edge.
pub fn init(level: &str, format: LogFormat, file: Option<&Path>) -> Result<(), LoggingError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives),
        _ => EnvFilter::try_new(format!("warn,loop_daemon={level},loop_store={level},loop_guest={level},loop_app={level},loop_runner={level},loop_gate={level},loop_adapter={level},loop={level}")),
    }
    .map_err(|err| LoggingError::Filter(err.to_string()))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match (format, file) {
        (LogFormat::Json, Some(path)) => builder.json().with_writer(open(path)?).try_init(),
        (LogFormat::Text, Some(path)) => {
            builder.with_ansi(false).with_writer(open(path)?).try_init()
        }
        (LogFormat::Json, None) => builder.json().with_writer(std::io::stderr).try_init(),
        (LogFormat::Text, None) => builder
            .with_ansi(colour_on_stderr())
            .with_writer(std::io::stderr)
            .try_init(),
    };
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = result;
    Ok(())
}

/// Colour codes only for a person at a terminal: a file or journald would keep them as
/// `\x1b[2m` noise. `NO_COLOR` (no-color.org) turns them off everywhere.
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

fn open(path: &Path) -> Result<std::sync::Mutex<std::fs::File>, LoggingError> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(std::sync::Mutex::new)
        .map_err(|source| LoggingError::Open {
            path: path.display().to_string(),
            source,
        })
}
