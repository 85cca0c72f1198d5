//! Container names and labels, exactly as the Go Loop spells them, so tooling that looks for
//! `app=loop-agent` finds loop's containers too.

/// Label on every container loop creates.
pub use loop_wire::container::labels::APP as LABEL_APP;
/// Value of [`LABEL_APP`].
pub use loop_wire::container::labels::APP_AGENT;
/// The channel a container serves.
pub use loop_wire::container::labels::CHANNEL as LABEL_CHANNEL;
/// Which loop daemon instance created it (loop's addition), so a restarted daemon can tell its
/// own orphans from another daemon's live containers.
pub use loop_wire::container::labels::DAEMON as LABEL_DAEMON;
/// Container type label: `agent`, `shell` or `chrome`.
pub use loop_wire::container::labels::TYPE as LABEL_TYPE;

/// Set by `loop dockerproxy` on what an agent creates: the daemon id, for orphan cleanup.
pub use loop_wire::container::labels::PROXY_DAEMON as LABEL_PROXY_DAEMON;
/// Set by `loop dockerproxy` (loop-gate's `dockerproxy::OWNER_LABEL`) on what an agent
/// creates: the agent container's name. Removed with the agent; never one of loop's own.
pub use loop_wire::container::labels::PROXY_OWNER as LABEL_PROXY_OWNER;

/// Longest sanitised base kept in a name.
const MAX_BASE_LEN: usize = 40;

/// Lowercases, turns every non-alphanumeric run into one hyphen, trims hyphens and truncates
/// to 40 characters (then trims a hyphen the cut may have exposed).
pub fn sanitize(base: &str) -> String {
    let mut out = String::with_capacity(base.len());
    let mut last_hyphen = false;
    for c in base.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
            last_hyphen = false;
        } else if !last_hyphen {
            out.push('-');
            last_hyphen = true;
        }
    }
    let trimmed = out.trim_matches('-');
    let cut: String = trimmed.chars().take(MAX_BASE_LEN).collect();
    cut.trim_end_matches('-').to_owned()
}

/// The base of a name: the work directory's basename when the channel has a custom directory,
/// else the channel id.
pub fn name_base(channel_id: &str, custom_dir: Option<&std::path::Path>) -> String {
    let raw = custom_dir
        .and_then(|dir| dir.file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| channel_id.to_owned());
    let base = sanitize(&raw);
    if base.is_empty() {
        "agent".to_owned()
    } else {
        base
    }
}

/// `loop-{base}-{6 hex}` with a random suffix.
pub fn container_name(channel_id: &str, custom_dir: Option<&std::path::Path>) -> String {
    let suffix: [u8; 3] = rand::random();
    format!(
        "loop-{}-{}",
        name_base(channel_id, custom_dir),
        hex::encode(suffix)
    )
}

/// `loop-chrome-{sanitised channel}`.
pub fn chrome_name(channel_id: &str) -> String {
    format!("loop-chrome-{}", sanitize(channel_id))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn sanitises_like_the_go_loop() {
        for (input, expected) in [
            ("abc123", "abc123"),
            ("my-project", "my-project"),
            ("My Project!!", "my-project"),
            ("--a__b--", "a-b"),
            ("UPPER.case.Dots", "upper-case-dots"),
            ("ünïcode", "n-code"),
            ("", ""),
            ("----", ""),
            (&"x".repeat(50), &"x".repeat(40)),
            (&format!("{}-{}", "a".repeat(39), "bbb"), &"a".repeat(39)),
        ] {
            assert_eq!(sanitize(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn names_follow_the_pattern() {
        let name = container_name("abc123", None);
        assert!(name.starts_with("loop-abc123-"), "{name}");
        let suffix = name.rsplit('-').next().expect("suffix");
        assert_eq!(suffix.len(), 6);
        assert!(suffix.chars().all(|c| c.is_ascii_hexdigit()));
        let name = container_name("C1", Some(Path::new("/home/user/my-project")));
        assert!(name.starts_with("loop-my-project-"), "{name}");
        assert_ne!(container_name("a", None), container_name("a", None));
        assert_eq!(chrome_name("C 1"), "loop-chrome-c-1");
    }
}
