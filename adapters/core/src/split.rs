//! Splitting long answers at a platform's limit without breaking code blocks, and deciding
//! which platform messages ([`OutgoingPart`]s) a text becomes.

use crate::message::OutgoingPart;

/// The messages `text` is posted as: chunks of at most `chunk` characters, or, when that would
/// take more than `max_messages` messages, one attachment (a wall of messages is harder to
/// read than one file).
pub fn outgoing_parts(text: &str, chunk: usize, max_messages: usize) -> Vec<OutgoingPart> {
    if text.chars().count() > chunk.saturating_mul(max_messages) {
        return vec![OutgoingPart::Attachment(text.to_owned())];
    }
    split_message(text, chunk)
        .into_iter()
        .map(OutgoingPart::Text)
        .collect()
}

/// Splits `text` into chunks of at most `limit` characters. Prefers paragraph, then line, then
/// word boundaries. A chunk that ends inside a ``` fence closes it, and the next chunk reopens
/// it with the same language tag, so every chunk renders on its own.
pub fn split_message(text: &str, limit: usize) -> Vec<String> {
    // Room for a closing fence and a reopened one.
    const FENCE_RESERVE: usize = 8;
    let limit = limit.max(FENCE_RESERVE * 4);
    if text.chars().count() <= limit {
        return vec![text.to_owned()];
    }
    let mut chunks = Vec::new();
    let mut rest: String = text.to_owned();
    let mut open_fence: Option<String> = None;
    while !rest.is_empty() {
        let prefix = open_fence
            .as_ref()
            .map(|lang| format!("```{lang}\n"))
            .unwrap_or_default();
        let budget = limit - prefix.chars().count() - FENCE_RESERVE;
        if prefix.chars().count() + rest.chars().count() <= limit {
            chunks.push(format!("{prefix}{rest}"));
            break;
        }
        let cut = best_cut(&rest, budget);
        let (head, tail) = rest.split_at(cut);
        let mut chunk = format!("{prefix}{head}");
        let fence_after = fence_state(&chunk, None);
        if let Some(lang) = &fence_after {
            if !chunk.ends_with('\n') {
                chunk.push('\n');
            }
            chunk.push_str("```");
            let _ = lang;
        }
        chunks.push(chunk.trim_end_matches(' ').to_owned());
        open_fence = fence_after;
        rest = tail.trim_start_matches('\n').to_owned();
    }
    chunks
}

/// Byte index to cut at: the last paragraph, line or space boundary within `budget` chars.
fn best_cut(text: &str, budget: usize) -> usize {
    let hard = text
        .char_indices()
        .nth(budget)
        .map_or(text.len(), |(i, _)| i);
    let window = &text[..hard];
    for separator in ["\n\n", "\n", " "] {
        if let Some(pos) = window.rfind(separator)
            && pos > hard / 2
        {
            return pos + separator.len();
        }
    }
    hard
}

/// The language of the fence left open at the end of `text` (None when all are closed).
fn fence_state(text: &str, start: Option<String>) -> Option<String> {
    let mut open = start;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(after) = trimmed.strip_prefix("```") {
            open = match open {
                Some(_) => None,
                None => Some(after.trim().to_owned()),
            };
        }
    }
    open
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fences_balanced(chunk: &str) -> bool {
        chunk
            .lines()
            .filter(|l| l.trim_start().starts_with("```"))
            .count()
            % 2
            == 0
    }

    #[test]
    fn texts_become_messages_or_one_attachment() {
        let check = |text: &str, expected: &[OutgoingPart]| {
            assert_eq!(outgoing_parts(text, 100, 3), expected, "{text:?}");
        };
        let text = |s: &str| OutgoingPart::Text(s.to_owned());
        check("hello", &[text("hello")]);
        let a = "a".repeat(90);
        let b = "b".repeat(90);
        check(&format!("{a} {b}"), &[text(&a), text(&b)]);
        let long = "word ".repeat(61);
        check(&long, &[OutgoingPart::Attachment(long.clone())]);
        // Exactly at the limit: still messages (the splitter keeps room for code fences, so
        // possibly one more than `max_messages`), never an attachment.
        let full = "x".repeat(300);
        let parts = outgoing_parts(&full, 100, 3);
        assert!(
            parts.iter().all(|p| matches!(p, OutgoingPart::Text(_))),
            "{parts:?}"
        );
    }

    #[test]
    fn short_text_is_one_chunk() {
        assert_eq!(split_message("hello", 2000), vec!["hello"]);
    }

    #[test]
    fn long_prose_splits_at_boundaries_within_the_limit() {
        let text = (0..200)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let chunks = split_message(&text, 100);
        assert!(chunks.len() > 1);
        for chunk in &chunks {
            assert!(chunk.chars().count() <= 100, "{chunk}");
            assert!(!chunk.starts_with(' '));
        }
        assert_eq!(chunks.join(" ").split_whitespace().count(), 200);
    }

    #[test]
    fn code_blocks_are_closed_and_reopened() {
        let code: String = (0..60).map(|i| format!("let x{i} = {i};\n")).collect();
        let text = format!("Here:\n```rust\n{code}```\nDone.");
        let chunks = split_message(&text, 300);
        assert!(chunks.len() > 2);
        for chunk in &chunks {
            assert!(
                chunk.chars().count() <= 300,
                "{} > 300",
                chunk.chars().count()
            );
            assert!(fences_balanced(chunk), "unbalanced:\n{chunk}");
        }
        assert!(chunks[1].starts_with("```rust\n"), "{}", chunks[1]);
        let rejoined: String = chunks.concat();
        for i in 0..60 {
            assert!(rejoined.contains(&format!("let x{i} = {i};")));
        }
    }

    #[test]
    fn unicode_is_never_cut_mid_character() {
        let text = "é".repeat(5000);
        let chunks = split_message(&text, 2000);
        assert!(chunks.iter().all(|c| c.chars().count() <= 2000));
        assert_eq!(chunks.concat().chars().count(), 5000);
    }
}
