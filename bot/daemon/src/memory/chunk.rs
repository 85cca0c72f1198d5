//! Splits Markdown into chunks of at most `max_chars` characters along headings and paragraphs,
//! each prefixed with its heading so that it reads on its own, and hashes chunks so that a
//! re-index embeds only what changed.

use sha2::{Digest, Sha256};

/// One chunk of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The nearest heading above the chunk ("" before the first one).
    pub heading: String,
    pub text: String,
}

/// Hex SHA-256 of a text: the `content_hash` column.
pub fn content_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Markdown → chunks of at most `max_chars` characters (at least 200), empty ones dropped.
pub fn chunk_markdown(text: &str, max_chars: usize) -> Vec<Chunk> {
    let max_chars = max_chars.max(200);
    let mut chunks = Vec::new();
    let mut heading = String::new();
    let mut current = String::new();
    let mut in_fence = false;
    let mut paragraph = String::new();

    let flush_paragraph =
        |paragraph: &mut String, current: &mut String, heading: &str, chunks: &mut Vec<Chunk>| {
            let para = paragraph.trim();
            if !para.is_empty() {
                if !current.is_empty()
                    && current.chars().count() + para.chars().count() + 2 > max_chars
                {
                    push_chunk(chunks, heading, current, max_chars);
                }
                if !current.is_empty() {
                    current.push_str("\n\n");
                }
                current.push_str(para);
            }
            paragraph.clear();
        };

    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
        }
        if !in_fence && trimmed.starts_with('#') && trimmed.trim_start_matches('#').starts_with(' ')
        {
            flush_paragraph(&mut paragraph, &mut current, &heading, &mut chunks);
            push_chunk(&mut chunks, &heading, &mut current, max_chars);
            heading = trimmed.trim_start_matches('#').trim().to_owned();
            continue;
        }
        if !in_fence && trimmed.is_empty() {
            flush_paragraph(&mut paragraph, &mut current, &heading, &mut chunks);
            continue;
        }
        paragraph.push_str(line);
        paragraph.push('\n');
    }
    flush_paragraph(&mut paragraph, &mut current, &heading, &mut chunks);
    push_chunk(&mut chunks, &heading, &mut current, max_chars);
    chunks
}

/// Emits `current` (split at character boundaries when one paragraph alone is too long).
fn push_chunk(chunks: &mut Vec<Chunk>, heading: &str, current: &mut String, max_chars: usize) {
    let text = std::mem::take(current);
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(max_chars) {
        let piece: String = piece.iter().collect();
        let piece = piece.trim();
        if !piece.is_empty() {
            chunks.push(Chunk {
                heading: heading.to_owned(),
                text: piece.to_owned(),
            });
        }
    }
}

impl Chunk {
    /// What is embedded and stored: the heading, then the text.
    pub fn content(&self, file: &str) -> String {
        if self.heading.is_empty() {
            format!("{file}\n\n{}", self.text)
        } else {
            format!("{file} › {}\n\n{}", self.heading, self.text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_headings_and_size() {
        let doc = "intro line\n\n# Build\n\nrun cargo\n\n```\n# not a heading\n\n```\n\n## Test\n\n"
            .to_owned()
            + &"word ".repeat(100)
            + "\n\n" + &"more ".repeat(30);
        let chunks = chunk_markdown(&doc, 300);
        assert_eq!(chunks[0].heading, "");
        assert_eq!(chunks[0].text, "intro line");
        assert_eq!(chunks[1].heading, "Build");
        assert!(chunks[1].text.contains("# not a heading"));
        assert!(chunks.iter().skip(2).all(|c| c.heading == "Test"));
        assert!(chunks.iter().all(|c| c.text.chars().count() <= 300));
        assert!(chunks.len() >= 4);
    }

    #[test]
    fn hash_is_stable() {
        assert_eq!(content_hash("a"), content_hash("a"));
        assert_ne!(content_hash("a"), content_hash("b"));
        assert_eq!(content_hash("").len(), 64);
    }
}
