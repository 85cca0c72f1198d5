//! Branch names for a thread's work, from the first line of the prompt that started it. Pure.

/// The longest slug taken from the prompt: long enough to recognise, short enough for a
/// status line and a terminal prompt.
const MAX_SLUG_CHARS: usize = 32;
/// The slug of a prompt with nothing usable in it (all punctuation or non-ASCII).
const EMPTY_SLUG: &str = "work";

/// `prefix/slug-short_id`, e.g. `loop/fix-login-a1b2`: lower case ASCII letters, digits and
/// hyphens in each component, so git never refuses it (`git check-ref-format --branch`) and it
/// reads the same in every shell and URL. The short id keeps two threads asking for the same
/// thing apart.
pub fn branch_name(prefix: &str, prompt_first_line: &str, short_id: &str) -> String {
    let prefix: Vec<String> = prefix
        .split('/')
        .map(|part| slug(part, MAX_SLUG_CHARS))
        .filter(|part| !part.is_empty())
        .collect();
    let mut name = slug(prompt_first_line, MAX_SLUG_CHARS);
    if name.is_empty() {
        name = EMPTY_SLUG.to_owned();
    }
    let id = slug(short_id, 16);
    if !id.is_empty() {
        name = format!("{name}-{id}");
    }
    if prefix.is_empty() {
        name
    } else {
        format!("{}/{name}", prefix.join("/"))
    }
}

/// Lower case ASCII words of `text` joined by single hyphens, cut at a word boundary to at
/// most `max` characters (a single overlong word is cut inside).
fn slug(text: &str, max: usize) -> String {
    let mut out = String::new();
    for word in text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let word = word.to_ascii_lowercase();
        let needed = if out.is_empty() {
            word.len()
        } else {
            word.len() + 1
        };
        if out.len() + needed > max {
            if out.is_empty() {
                out.push_str(&word[..max]);
            }
            break;
        }
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(&word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(prefix: &str, prompt: &str, id: &str, expected: &str) {
        assert_eq!(branch_name(prefix, prompt, id), expected, "{prompt:?}");
    }

    #[test]
    fn branch_names() {
        check("loop", "Fix login", "a1b2", "loop/fix-login-a1b2");
        check(
            "loop",
            "  Fix the LOGIN page!!  ",
            "a1b2",
            "loop/fix-the-login-page-a1b2",
        );
        check(
            "loop",
            "fix: crash on ../../etc @{0}",
            "x",
            "loop/fix-crash-on-etc-0-x",
        );
        check("loop", "Ünïcödé ça va", "1", "loop/n-c-d-a-va-1");
        check("loop", "日本語", "abcd", "loop/work-abcd");
        check("loop", "", "abcd", "loop/work-abcd");
        check(
            "loop",
            "-- leading dashes",
            "abcd",
            "loop/leading-dashes-abcd",
        );
        check("loop", "branch.lock", "abcd", "loop/branch-lock-abcd");
        check(
            "loop",
            "please refactor the authentication middleware so that it retries",
            "a1b2",
            "loop/please-refactor-the-a1b2",
        );
        check(
            "loop",
            &"x".repeat(100),
            "a1b2",
            &format!("loop/{}-a1b2", "x".repeat(32)),
        );
        check("Loop/Team A", "fix", "A1B2", "loop/team-a/fix-a1b2");
        check("", "fix", "a1b2", "fix-a1b2");
        check("//", "fix", "", "fix");
        check("loop", "HEAD", "", "loop/head");
    }

    /// Every name above, and a few more, is one git accepts as a branch.
    #[test]
    fn git_accepts_every_branch_name() {
        let prompts = [
            "Fix login",
            "fix: crash on ../../etc @{0}",
            "..",
            "a.lock",
            "@",
            "-",
            "~^:?*[\\",
            "日本語",
            "",
            "   ",
        ];
        for prompt in prompts {
            for prefix in ["loop", "", "a/b", "-x-"] {
                let name = branch_name(prefix, prompt, "a1b2");
                let status = std::process::Command::new("git")
                    .args(["check-ref-format", "--branch", &name])
                    .stdout(std::process::Stdio::null())
                    .status()
                    .expect("git check-ref-format");
                assert!(status.success(), "git refuses {name:?}");
            }
        }
    }
}
