//! A configured secret (token, API key) that never reaches logs or `loop config show`.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Text shown wherever a secret would otherwise be printed.
pub const REDACTED: &str = "[REDACTED]";

/// A secret string. `Debug` and `Serialize` print [`REDACTED`]; only
/// [`Secret::expose`] gives the value, and only the code that hands it to a
/// client or a container calls it.
#[derive(Clone, Default)]
pub struct Secret(Option<SecretString>);

impl Secret {
    /// Wraps a value; an empty string counts as unset, as in the Go Loop.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        if value.is_empty() {
            Secret(None)
        } else {
            Secret(Some(SecretString::from(value)))
        }
    }

    /// Whether a non-empty value is configured.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// The value, for the one place that must pass it on.
    pub fn expose(&self) -> Option<&str> {
        self.0.as_ref().map(|s| s.expose_secret())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_set() {
            f.write_str(REDACTED)
        } else {
            f.write_str("\"\"")
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.is_set() { REDACTED } else { "" })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Secret::new(String::deserialize(deserializer)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_serialize_never_show_the_value() {
        let secret = Secret::new("xoxb-very-secret");
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(
            serde_json::to_string(&secret).expect("serialises"),
            format!("\"{REDACTED}\"")
        );
        assert_eq!(secret.expose(), Some("xoxb-very-secret"));
    }

    #[test]
    fn empty_is_unset() {
        assert!(!Secret::new("").is_set());
        assert_eq!(serde_json::to_string(&Secret::new("")).expect("ok"), "\"\"");
    }
}
