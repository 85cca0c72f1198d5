//! The agent writes CommonMark; Slack renders its own "mrkdwn". This converts the parts that
//! differ (bold, italics, strike-through, links, headings, bullets, fenced code languages) and
//! escapes `&`, `<`, `>` as Slack requires, leaving code untouched apart from that escaping.

/// Converts the agent's Markdown to Slack mrkdwn.
pub fn to_mrkdwn(markdown: &str) -> String {
    let mut out = Vec::new();
    let mut in_fence = false;
    for line in markdown.split('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            // Slack shows a fence's language as text: drop it.
            out.push(if in_fence {
                line.to_owned()
            } else {
                line[..line.len() - trimmed.len()].to_owned() + "```"
            });
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            out.push(escape(line));
            continue;
        }
        out.push(convert_line(line));
    }
    out.join("\n")
}

fn convert_line(line: &str) -> String {
    let indent_len = line.len() - line.trim_start().len();
    let (indent, body) = line.split_at(indent_len);
    // Headings become a bold line: mrkdwn has no headings.
    if let Some(rest) = heading_text(body) {
        return format!(
            "{indent}*{}*",
            convert_inline(rest.trim_end_matches('#').trim())
        );
    }
    // Bullets: `-`, `*`, `+` become `•` (mrkdwn has no list syntax of its own).
    for bullet in ["- ", "* ", "+ "] {
        if let Some(rest) = body.strip_prefix(bullet) {
            let rest = task_box(rest);
            return format!("{indent}• {}", convert_inline(&rest));
        }
    }
    // A quote keeps its `>`: it is mrkdwn syntax too, so it must not be escaped.
    if let Some(rest) = body.strip_prefix('>') {
        return format!("{indent}>{}", convert_inline(rest));
    }
    // A horizontal rule has no mrkdwn form.
    if body.len() >= 3 && body.chars().all(|c| c == '-' || c == '*' || c == '_') {
        return format!("{indent}──────────");
    }
    format!("{indent}{}", convert_inline(body))
}

fn heading_text(body: &str) -> Option<&str> {
    let hashes = body.chars().take_while(|c| *c == '#').count();
    if (1..=6).contains(&hashes) {
        body[hashes..].strip_prefix(' ')
    } else {
        None
    }
}

fn task_box(rest: &str) -> String {
    if let Some(done) = rest
        .strip_prefix("[x] ")
        .or_else(|| rest.strip_prefix("[X] "))
    {
        format!("☑ {done}")
    } else if let Some(open) = rest.strip_prefix("[ ] ") {
        format!("☐ {open}")
    } else {
        rest.to_owned()
    }
}

/// Converts one line outside code fences: inline code spans are kept (escaped only), the rest
/// gets links and emphasis converted.
fn convert_inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('`') {
        let ticks = rest[start..].chars().take_while(|c| *c == '`').count();
        let fence = &rest[start..start + ticks];
        match rest[start + ticks..].find(fence) {
            Some(end) => {
                out.push_str(&convert_prose(&rest[..start]));
                let code = &rest[start + ticks..start + ticks + end];
                out.push('`');
                out.push_str(&escape(code));
                out.push('`');
                rest = &rest[start + ticks + end + ticks..];
            }
            None => break,
        }
    }
    out.push_str(&convert_prose(rest));
    out
}

/// Links first (their text is converted, their URL only escaped), then emphasis.
fn convert_prose(text: &str) -> String {
    let mut out = String::new();
    let mut plain = String::new();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if rest.starts_with('[')
            && let Some((label, url, used)) = markdown_link(rest)
        {
            out.push_str(&emphasis(&escape(&plain)));
            plain.clear();
            out.push_str(&format!("<{}|{}>", escape(url), emphasis(&escape(label))));
            i += used;
            continue;
        }
        if rest.starts_with('<')
            && let Some(end) = rest.find('>')
            && is_slack_reference(&rest[1..end])
        {
            // `<@U123>`, `<#C123>`, `<!here>`: Slack's own references stay as they are.
            out.push_str(&emphasis(&escape(&plain)));
            plain.clear();
            out.push_str(&rest[..=end]);
            i += end + 1;
            continue;
        }
        if rest.starts_with('<')
            && let Some(end) = rest.find('>')
            && is_url(&rest[1..end])
        {
            out.push_str(&emphasis(&escape(&plain)));
            plain.clear();
            out.push_str(&format!("<{}>", escape(&rest[1..end])));
            i += end + 1;
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        plain.push(c);
        i += c.len_utf8();
    }
    out.push_str(&emphasis(&escape(&plain)));
    out
}

fn is_slack_reference(text: &str) -> bool {
    let mut chars = text.chars();
    matches!(chars.next(), Some('@' | '#' | '!'))
        && text.len() > 1
        && text[1..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '^' | '|' | '_' | '-' | '.'))
}

fn is_url(text: &str) -> bool {
    (text.starts_with("http://") || text.starts_with("https://") || text.starts_with("mailto:"))
        && !text.contains(char::is_whitespace)
}

/// `[label](url)` at the start of `text`: the label, the URL and the bytes consumed.
fn markdown_link(text: &str) -> Option<(&str, &str, usize)> {
    let close = text.find("](")?;
    let label = &text[1..close];
    if label.contains('[') {
        return None;
    }
    let after = &text[close + 2..];
    let end = after.find(')')?;
    let url = after[..end].split_whitespace().next()?;
    Some((label, url, close + 2 + end + 1))
}

/// Bold (`**x**`, `__x__`) → `*x*`, italics (`*x*`, `_x_`) → `_x_`, `~~x~~` → `~x~`.
fn emphasis(text: &str) -> String {
    // Placeholders keep converted bold from being read as italics in the next pass.
    const BOLD: char = '\u{1}';
    let text = pairs(text, "**", &BOLD.to_string());
    let text = pairs(&text, "__", &BOLD.to_string());
    let text = pairs(&text, "*", "_");
    let text = pairs(&text, "~~", "~");
    text.replace(BOLD, "*")
}

/// Replaces `delim x delim` with `with x with` where the span hugs its text (no space just
/// inside the delimiters), so `2 * 3 * 4` stays as it is.
fn pairs(text: &str, delim: &str, with: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    loop {
        let Some(open) = rest.find(delim) else {
            out.push_str(rest);
            return out;
        };
        let inner_start = open + delim.len();
        let after_open = &rest[inner_start..];
        let hugs_open = after_open
            .chars()
            .next()
            .is_some_and(|c| !c.is_whitespace());
        let close = after_open.find(delim).filter(|&close| {
            close > 0
                && after_open[..close]
                    .chars()
                    .last()
                    .is_some_and(|c| !c.is_whitespace())
        });
        match (hugs_open, close) {
            (true, Some(close)) => {
                out.push_str(&rest[..open]);
                out.push_str(with);
                out.push_str(&after_open[..close]);
                out.push_str(with);
                rest = &after_open[close + delim.len()..];
            }
            _ => {
                out.push_str(&rest[..inner_start]);
                rest = after_open;
            }
        }
    }
}

/// Slack's three control characters.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(markdown: &str, expected: &str) {
        assert_eq!(to_mrkdwn(markdown), expected, "{markdown:?}");
    }

    #[test]
    fn converts_markdown_to_mrkdwn() {
        check("**bold** and __bold__", "*bold* and *bold*");
        check("*italic* and _italic_", "_italic_ and _italic_");
        check("~~gone~~", "~gone~");
        check("2 * 3 * 4", "2 * 3 * 4");
        check(
            "see [the docs](https://example.com/a?b=1&c=2)",
            "see <https://example.com/a?b=1&amp;c=2|the docs>",
        );
        check(
            "[**bold link**](https://x.io)",
            "<https://x.io|*bold link*>",
        );
        check("<https://x.io>", "<https://x.io>");
        check("# Title", "*Title*");
        check("### Sub ###", "*Sub*");
        check("- one\n  * two\n+ three", "• one\n  • two\n• three");
        check("- [x] done\n- [ ] open", "• ☑ done\n• ☐ open");
        check("1. first\n2. second", "1. first\n2. second");
        check("> quoted **text**", "> quoted *text*");
        check("a < b && c > d", "a &lt; b &amp;&amp; c &gt; d");
        check("use `**not bold**` here", "use `**not bold**` here");
        check("`a<b`", "`a&lt;b`");
        check(
            "```rust\nlet x = **y**;\nif a < b {}\n```\n**after**",
            "```\nlet x = **y**;\nif a &lt; b {}\n```\n*after*",
        );
        check("---", "──────────");
        check("by <@U123> in <#C9> <!here>", "by <@U123> in <#C9> <!here>");
        check("x <@ not a ref>", "x &lt;@ not a ref&gt;");
        check("snake_case_name", "snake_case_name");
    }
}
