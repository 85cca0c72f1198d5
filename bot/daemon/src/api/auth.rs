//! The admin token of local clients (a 0600 file in the loop directory) and reading a
//! request's bearer token. Containers' tokens are the gate hub's (`crate::gate::tokens`).

use std::path::{Path, PathBuf};

use axum::http::HeaderMap;

use crate::gate::tokens::random_token;

/// Name of the admin token file in the loop directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// Name of the file holding the token a reverse proxy sends with its users' names
/// (`dashboard_proxy_header`).
pub const DASHBOARD_PROXY_TOKEN_FILE: &str = "dashboard-proxy.token";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read or write the token file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads the admin token, creating it (0600) on first start.
pub fn load_or_create_admin_token(loop_dir: &Path) -> Result<String, TokenError> {
    load_or_create_token(loop_dir, ADMIN_TOKEN_FILE)
}

/// Reads a token file of the loop directory, creating it (0600) with a fresh token when it is
/// missing or not a token.
pub fn load_or_create_token(loop_dir: &Path, file_name: &str) -> Result<String, TokenError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = loop_dir.join(file_name);
    let io = |source| TokenError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(token) if token.trim().len() == 64 => return Ok(token.trim().to_owned()),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(io(err)),
    }
    std::fs::create_dir_all(loop_dir).map_err(io)?;
    let token = random_token();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    file.write_all(token.as_bytes()).map_err(io)?;
    Ok(token)
}

/// Reads the admin token (clients).
pub fn read_admin_token(loop_dir: &Path) -> Result<String, TokenError> {
    let path = loop_dir.join(ADMIN_TOKEN_FILE);
    std::fs::read_to_string(&path)
        .map(|t| t.trim().to_owned())
        .map_err(|source| TokenError::Io { path, source })
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_token_is_created_once_with_private_permissions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create_admin_token(dir.path()).expect("create");
        assert_eq!(first.len(), 64);
        assert_eq!(load_or_create_admin_token(dir.path()).expect("read"), first);
        let mode = std::fs::metadata(dir.path().join(ADMIN_TOKEN_FILE))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .expect("meta");
        assert_eq!(mode, 0o600);
    }
}
