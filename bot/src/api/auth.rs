//! Bearer tokens: one admin token for local clients (a 0600 file in the loop directory), and
//! per-container tokens for agents (minted by the runner wiring, scoped to one channel).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

/// Name of the admin token file in the loop directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read or write the admin token {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// 32 random bytes as hex.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// Reads the admin token, creating it (0600) on first start.
pub fn load_or_create_admin_token(loop_dir: &Path) -> Result<String, TokenError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = loop_dir.join(ADMIN_TOKEN_FILE);
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

/// Constant-time comparison, so response timing says nothing about a token's prefix.
pub fn tokens_match(given: &str, expected: &str) -> bool {
    given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// Who a container token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerIdentity {
    pub container: String,
    /// The channel key the container serves; it may only act on this channel.
    pub channel_key: String,
}

/// Live per-container tokens. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ContainerTokens {
    inner: Arc<RwLock<HashMap<String, ContainerIdentity>>>,
}

impl ContainerTokens {
    /// Mints a token for a container.
    pub fn issue(&self, identity: ContainerIdentity) -> String {
        let token = random_token();
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.clone(), identity);
        token
    }

    /// Forgets every token of a container (it went away).
    pub fn revoke_container(&self, container: &str) {
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, identity| identity.container != container);
    }

    /// The identity behind a token, compared in constant time against every live token.
    pub fn identify(&self, token: &str) -> Option<ContainerIdentity> {
        let map = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let mut found = None;
        for (candidate, identity) in map.iter() {
            if tokens_match(token, candidate) {
                found = Some(identity.clone());
            }
        }
        found
    }
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

    #[test]
    fn container_tokens_are_scoped_and_revocable() {
        let tokens = ContainerTokens::default();
        let id = ContainerIdentity {
            container: "c1".into(),
            channel_key: "slack:C1".into(),
        };
        let token = tokens.issue(id.clone());
        assert_eq!(tokens.identify(&token), Some(id));
        assert_eq!(tokens.identify("nope"), None);
        tokens.revoke_container("c1");
        assert_eq!(tokens.identify(&token), None);
        assert!(tokens_match("abc", "abc"));
        assert!(!tokens_match("abc", "abd"));
        assert!(!tokens_match("abc", "abcd"));
    }
}
