//! An agent's answer as HTML. The answer is hostile input (the agent read strangers' files and
//! web pages), so no HTML passes through: raw HTML blocks and inline HTML become escaped text,
//! links keep only `http`, `https` and `mailto` targets (anything else, `javascript:` first,
//! becomes `#`), and images are shown as links to their address, never loaded. pulldown-cmark
//! escapes every text and attribute it writes; the page's CSP forbids inline script on top.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag, TagEnd, html};

/// Markdown → safe HTML.
pub fn render(markdown: &str) -> String {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_GFM;
    let mut in_image = false;
    let events = Parser::new_ext(markdown, options).filter_map(|event| {
        Some(match event {
            Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
            Event::Start(Tag::Link {
                link_type,
                dest_url,
                title,
                id,
            }) => Event::Start(Tag::Link {
                link_type,
                dest_url: safe_url(dest_url),
                title,
                id,
            }),
            // An image becomes a link to it: nothing is fetched from where an agent points.
            Event::Start(Tag::Image {
                link_type,
                dest_url,
                title,
                id,
            }) => {
                in_image = true;
                Event::Start(Tag::Link {
                    link_type,
                    dest_url: safe_url(dest_url),
                    title,
                    id,
                })
            }
            Event::End(TagEnd::Image) => {
                in_image = false;
                Event::End(TagEnd::Link)
            }
            Event::Text(text) if in_image && text.is_empty() => return None,
            other => other,
        })
    });
    let mut out = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut out, events);
    out
}

/// Links to the web and mail only; relative links stay (they point into the dashboard).
fn safe_url(url: CowStr<'_>) -> CowStr<'_> {
    let lower = url.trim_start().to_ascii_lowercase();
    let scheme = lower
        .split_once(':')
        .map(|(scheme, _)| scheme)
        .filter(|s| !s.contains('/') && !s.contains('?') && !s.contains('#'));
    match scheme {
        None => url,
        Some("http" | "https" | "mailto") => url,
        Some(_) => CowStr::Borrowed("#"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(markdown: &str, must: &[&str], must_not: &[&str]) {
        let html = render(markdown);
        for needle in must {
            assert!(html.contains(needle), "{needle:?} missing in {html}");
        }
        for needle in must_not {
            assert!(!html.contains(needle), "{needle:?} present in {html}");
        }
    }

    #[test]
    fn markdown_renders() {
        check(
            "It is **42**.\n\n- `cargo test`\n- done\n\n```rust\nfn main() {}\n```",
            &[
                "<strong>42</strong>",
                "<code>cargo test</code>",
                "<li>done</li>",
                "fn main() {}",
            ],
            &[],
        );
        check(
            "| a | b |\n|---|---|\n| 1 | 2 |",
            &["<table>", "<td>1</td>"],
            &[],
        );
        check(
            "[docs](https://example.com/x) and [here](/ui/)",
            &[r#"href="https://example.com/x""#, r#"href="/ui/""#],
            &[],
        );
    }

    #[test]
    fn hostile_answers_stay_text() {
        check(
            "<script>alert(1)</script>",
            &["&lt;script&gt;"],
            &["<script"],
        );
        check(
            "hi <img src=x onerror=alert(1)> there",
            &["&lt;img"],
            &["<img"],
        );
        check("<div onclick=\"x()\">block</div>", &["&lt;div"], &["<div"]);
        check(
            "[click](javascript:alert(1)) [c2](JaVaScRiPt:alert(1)) [d](data:text/html,x)",
            &[r##"href="#""##],
            &["javascript:", "JaVaScRiPt", "data:text"],
        );
        check(
            "![tracker](https://evil.example/p.png)",
            &[r#"href="https://evil.example/p.png""#, "tracker"],
            &["<img"],
        );
        check(
            "[x](https://e.example/\"onmouseover=\"alert(1))",
            &[],
            &["\"onmouseover"],
        );
        check("`<b>code</b>`", &["&lt;b&gt;"], &["<b>"]);
    }
}
