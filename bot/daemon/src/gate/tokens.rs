//! Per-container bearer tokens: minted for each container a turn starts, scoped to one
//! channel, revoked when the container goes. Every comparison is constant-time.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use subtle::ConstantTimeEq;

/// 32 random bytes as hex.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
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

    /// Every token of container `from` now belongs to `to`, acting on `to`'s channel (a spare
    /// agent adopted by a thread; see `GateHub::hand_over`).
    pub fn hand_over(&self, from: &str, to: &str) {
        let mut map = self.inner.write().unwrap_or_else(|p| p.into_inner());
        for identity in map.values_mut().filter(|i| i.container == from) {
            identity.container = to.to_owned();
            identity.channel_key = to.to_owned();
        }
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
