//! Commit messages for a turn's auto-commit: the prompt's first line as subject, the agent's
//! summary as body, the person who asked as co-author. Pure.

/// Git's conventional subject length; longer subjects are cut at a word with an ellipsis.
pub const MAX_SUBJECT_CHARS: usize = 72;
/// Body lines are wrapped to this width, as `git log` readers expect.
pub const BODY_WIDTH: usize = 72;
/// The subject of a turn whose prompt has no text (an attachment, a scheduled run).
const EMPTY_SUBJECT: &str = "Changes by loop";

/// A person as git records them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub name: String,
    pub email: String,
}

/// The message of a turn's commit: subject from `prompt_first_line` (whitespace collapsed, at
/// most [`MAX_SUBJECT_CHARS`]), then the agent's `summary` wrapped to [`BODY_WIDTH`].
pub fn commit_message(prompt_first_line: &str, summary: &str) -> String {
    let subject = subject(prompt_first_line);
    let body = wrap(summary, BODY_WIDTH);
    if body.is_empty() {
        subject
    } else {
        format!("{subject}\n\n{body}")
    }
}

/// `message` with a `Co-authored-by:` trailer for `co_author`, written by loop rather than
/// `git commit --trailer`, which would run the repository's `trailer.*.cmd` commands.
pub fn with_co_author(message: &str, co_author: Option<&Signature>) -> String {
    let message = message.trim_end();
    match co_author {
        None => format!("{message}\n"),
        Some(person) => format!(
            "{message}\n\nCo-authored-by: {} <{}>\n",
            one_line(&person.name),
            one_line(&person.email)
        ),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(['<', '>'], "")
}

fn subject(line: &str) -> String {
    let line = line.lines().next().unwrap_or("");
    let words: Vec<&str> = line.split_whitespace().collect();
    if words.is_empty() {
        return EMPTY_SUBJECT.to_owned();
    }
    let full = words.join(" ");
    if full.chars().count() <= MAX_SUBJECT_CHARS {
        return full;
    }
    // Room for the ellipsis.
    let limit = MAX_SUBJECT_CHARS - 1;
    let mut out = String::new();
    for word in words {
        let needed = word.chars().count() + usize::from(!out.is_empty());
        if out.chars().count() + needed > limit {
            if out.is_empty() {
                out = word.chars().take(limit).collect();
            }
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out.push('…');
    out
}

/// Greedy word wrap, paragraph by paragraph. Lines that start a list item (`- `, `* `, `1. `)
/// or are indented (code) start a new line; indented lines are kept as they are.
fn wrap(text: &str, width: usize) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    let flush = |current: &mut String, lines: &mut Vec<String>| {
        if !current.is_empty() {
            lines.push(std::mem::take(current));
        }
    };
    for raw in text.trim().lines() {
        let raw = raw.trim_end();
        if raw.is_empty() {
            flush(&mut current, &mut lines);
            if lines.last().is_some_and(|l| !l.is_empty()) {
                lines.push(String::new());
            }
            continue;
        }
        if raw.starts_with(' ') || raw.starts_with('\t') {
            flush(&mut current, &mut lines);
            lines.push(raw.to_owned());
            continue;
        }
        if starts_item(raw) {
            flush(&mut current, &mut lines);
        }
        for word in raw.split_whitespace() {
            let len = current.chars().count();
            if len > 0 && len + 1 + word.chars().count() > width {
                flush(&mut current, &mut lines);
            }
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(word);
        }
    }
    flush(&mut current, &mut lines);
    lines.join("\n")
}

fn starts_item(line: &str) -> bool {
    line.starts_with("- ")
        || line.starts_with("* ")
        || line
            .split_once(". ")
            .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(prompt: &str, summary: &str, expected: &str) {
        assert_eq!(commit_message(prompt, summary), expected, "{prompt:?}");
    }

    #[test]
    fn commit_messages() {
        check("Fix the login page", "", "Fix the login page");
        check("  fix   the\tlogin  ", "  ", "fix the login");
        check("", "Did things.", "Changes by loop\n\nDid things.");
        check(
            "Fix login",
            "Changed the form.\nAdded a test.",
            "Fix login\n\nChanged the form. Added a test.",
        );
        check(
            "Fix login",
            "First paragraph.\n\n\n\nSecond.",
            "Fix login\n\nFirst paragraph.\n\nSecond.",
        );
        check(
            "Fix login",
            "Changes:\n- the form\n- the test\n1. one\n    code line  ",
            "Fix login\n\nChanges:\n- the form\n- the test\n1. one\n    code line",
        );
    }

    #[test]
    fn long_subjects_are_cut_at_a_word() {
        let prompt = "Please refactor the authentication middleware so that it retries on \
                      transient failures and logs each attempt";
        let message = commit_message(prompt, "");
        assert_eq!(
            message,
            "Please refactor the authentication middleware so that it retries on…"
        );
        assert!(message.chars().count() <= MAX_SUBJECT_CHARS);
        let word = "x".repeat(100);
        let message = commit_message(&word, "");
        assert_eq!(message.chars().count(), MAX_SUBJECT_CHARS);
        assert!(message.ends_with('…'));
        let accents = "é".repeat(80);
        assert_eq!(
            commit_message(&accents, "").chars().count(),
            MAX_SUBJECT_CHARS
        );
    }

    #[test]
    fn bodies_are_wrapped() {
        let summary = "word ".repeat(40);
        let message = commit_message("Subject", &summary);
        let body: Vec<&str> = message.lines().skip(2).collect();
        assert!(body.len() > 1);
        assert!(
            body.iter().all(|l| l.chars().count() <= BODY_WIDTH),
            "{body:?}"
        );
        let long_word = "y".repeat(100);
        assert_eq!(
            commit_message("S", &format!("a {long_word} b")),
            format!("S\n\na\n{long_word}\nb")
        );
    }

    #[test]
    fn co_author_trailers() {
        let ada = Signature {
            name: "Ada\nLovelace".into(),
            email: "<ada@example.com>".into(),
        };
        assert_eq!(
            with_co_author("Fix login\n\nBody.\n", Some(&ada)),
            "Fix login\n\nBody.\n\nCo-authored-by: Ada Lovelace <ada@example.com>\n"
        );
        assert_eq!(with_co_author("Fix login", None), "Fix login\n");
    }
}
