//! `/ui/thread/{key}/diff`: what a thread changed, side by side, file by file. With git, its
//! branch against its base (`/loop diff`'s comparison: from the merge base to the branch's
//! head, or to its worktree when changes are still uncommitted there); without git, the edits
//! its latest turn made, from the agent's own tool calls (Edit, MultiEdit, Write).
//!
//! Every file's name and content is hostile (the agent and strangers wrote them): the page is
//! built with maud, which escapes each one, and nothing here is passed through as HTML. Binary
//! files are named, not shown; a file or a page past the line limits is summarised.

use std::path::Path as FsPath;

use axum::extract::{Path, State};
use axum::response::Response;
use loop_git::{FilePatch, Hunk, LineKind, PatchLine, split_patch};
use maud::{Markup, html};
use serde_json::Value;

use super::access::Access;
use super::assets::{ASSETS, Assets};
use super::page::{self, PageError, parse_key, thread_url};
use super::session::DashboardSession;
use crate::api::ApiState;
use crate::branches::diff::{BranchDiff, branch_diff};
use crate::orchestrator::activity::{Step, TurnActivity};

/// Rows of one file shown at most; a longer file is summarised.
pub const MAX_FILE_ROWS: usize = 2_000;
/// Rows of a page at most; files past it are summarised.
pub const MAX_PAGE_ROWS: usize = 20_000;
/// Characters of one line shown at most.
pub const MAX_LINE_CHARS: usize = 1_000;
/// Unchanged lines shown around an edit (without git).
const CONTEXT_LINES: usize = 3;

/// One file of the view.
#[derive(Debug, Clone, PartialEq)]
pub struct FileView {
    /// What the list and the heading call it (`Edit · src/app.rs` without git).
    pub title: String,
    pub renamed_from: Option<String>,
    pub added: Option<u64>,
    pub removed: Option<u64>,
    pub body: Body,
}

/// What is shown of a file.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Hunks(Vec<Hunk>),
    /// git sees binary content: named, not shown.
    Binary,
    /// No line changed (a mode change, an empty file, a rename alone).
    NoLines,
    /// Something to say instead of lines (an edit whose call is too long to read back, one
    /// that failed).
    Note(String),
}

/// One side of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell<'a> {
    Line {
        no: u64,
        text: &'a str,
        kind: LineKind,
        no_newline: bool,
    },
    Empty,
}

/// A row of the side-by-side table: the old file's line left, the new file's right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row<'a> {
    pub left: Cell<'a>,
    pub right: Cell<'a>,
}

/// A hunk's rows: unchanged lines on both sides; a run of removed and added lines paired
/// line by line, the longer side's rest against empty cells.
pub fn rows(hunk: &Hunk) -> Vec<Row<'_>> {
    let (mut old_no, mut new_no) = (hunk.old_start, hunk.new_start);
    let mut out = Vec::with_capacity(hunk.lines.len());
    let mut lines = hunk.lines.iter().peekable();
    while let Some(line) = lines.next() {
        if line.kind == LineKind::Context {
            out.push(Row {
                left: cell(line, &mut old_no),
                right: cell(line, &mut new_no),
            });
            continue;
        }
        let mut removed: Vec<&PatchLine> = Vec::new();
        let mut added: Vec<&PatchLine> = Vec::new();
        let mut next = Some(line);
        while let Some(changed) = next {
            match changed.kind {
                LineKind::Removed => removed.push(changed),
                LineKind::Added => added.push(changed),
                // A run stops before a context line (`next_if`).
                LineKind::Context => {}
            }
            next = lines.next_if(|l| l.kind != LineKind::Context);
        }
        for i in 0..removed.len().max(added.len()) {
            out.push(Row {
                left: removed.get(i).map_or(Cell::Empty, |l| cell(l, &mut old_no)),
                right: added.get(i).map_or(Cell::Empty, |l| cell(l, &mut new_no)),
            });
        }
    }
    out
}

fn cell<'a>(line: &'a PatchLine, no: &mut u64) -> Cell<'a> {
    let shown = Cell::Line {
        no: *no,
        text: &line.text,
        kind: line.kind,
        no_newline: line.no_newline,
    };
    *no += 1;
    shown
}

/// The files of a branch's diff: the patch's files paired with `--numstat`'s (exact paths) by
/// position, as git lists both in one order.
pub fn branch_files(diff: &BranchDiff) -> Vec<FileView> {
    let patches = split_patch(&diff.patch);
    diff.stat
        .files
        .iter()
        .enumerate()
        .map(|(i, stat)| {
            let patch = patches.get(i).cloned().unwrap_or_default();
            FileView {
                title: stat.path.clone(),
                renamed_from: stat.renamed_from.clone(),
                added: stat.added,
                removed: stat.removed,
                body: body_of(&patch, stat.is_binary()),
            }
        })
        .collect()
}

fn body_of(patch: &FilePatch, binary: bool) -> Body {
    if binary || patch.binary {
        Body::Binary
    } else if patch.hunks.is_empty() {
        Body::NoLines
    } else {
        Body::Hunks(patch.hunks.clone())
    }
}

/// Without git: the files the latest turn's tool calls wrote, each call as the agent made it.
pub fn edit_files(entries: &[TurnActivity], work_dir: Option<&FsPath>) -> Vec<FileView> {
    entries
        .iter()
        .filter_map(|entry| match &entry.step {
            Step::Tool {
                name,
                input,
                output,
                ..
            } if matches!(name.as_str(), "Edit" | "MultiEdit" | "Write") => {
                let failed = output.as_ref().is_some_and(|o| o.is_error);
                Some(edit_file(name, input, failed, work_dir))
            }
            _ => None,
        })
        .collect()
}

fn edit_file(tool: &str, input: &str, failed: bool, work_dir: Option<&FsPath>) -> FileView {
    let parsed: Option<Value> = serde_json::from_str(input).ok();
    let path = parsed
        .as_ref()
        .and_then(|v| v["file_path"].as_str())
        .map(|p| relative(p, work_dir))
        .unwrap_or_else(|| "(a file)".to_owned());
    let title = format!("{tool} · {path}");
    let note = |text: &str| FileView {
        title: title.clone(),
        renamed_from: None,
        added: None,
        removed: None,
        body: Body::Note(text.to_owned()),
    };
    if failed {
        return note("This call failed: the file was not changed by it.");
    }
    let Some(input) = parsed else {
        return note("This call is too long to show from the tool call.");
    };
    let pairs: Vec<(&str, &str)> = match tool {
        "Write" => vec![("", input["content"].as_str().unwrap_or_default())],
        "Edit" => vec![(
            input["old_string"].as_str().unwrap_or_default(),
            input["new_string"].as_str().unwrap_or_default(),
        )],
        _ => input["edits"]
            .as_array()
            .map(|edits| {
                edits
                    .iter()
                    .map(|e| {
                        (
                            e["old_string"].as_str().unwrap_or_default(),
                            e["new_string"].as_str().unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    let hunks: Vec<Hunk> = pairs
        .iter()
        .flat_map(|(old, new)| text_hunks(old, new))
        .collect();
    let count = |kind: LineKind| {
        hunks
            .iter()
            .flat_map(|h| &h.lines)
            .filter(|l| l.kind == kind)
            .count() as u64
    };
    FileView {
        title,
        renamed_from: None,
        added: Some(count(LineKind::Added)),
        removed: Some(count(LineKind::Removed)),
        body: if hunks.is_empty() {
            Body::NoLines
        } else {
            Body::Hunks(hunks)
        },
    }
}

/// A path under the work directory as the project names it.
fn relative(path: &str, work_dir: Option<&FsPath>) -> String {
    work_dir
        .and_then(|dir| FsPath::new(path).strip_prefix(dir).ok())
        .map_or_else(|| path.to_owned(), |p| p.display().to_string())
}

/// The hunks from `old` to `new` (line numbers count from the edited text's first line).
fn text_hunks(old: &str, new: &str) -> Vec<Hunk> {
    let diff = similar::TextDiff::from_lines(old, new);
    diff.grouped_ops(CONTEXT_LINES)
        .iter()
        .map(|group| {
            let (Some(first), Some(last)) = (group.first(), group.last()) else {
                return Hunk::default();
            };
            let old_range = first.old_range().start..last.old_range().end;
            let new_range = first.new_range().start..last.new_range().end;
            let lines = group
                .iter()
                .flat_map(|op| diff.iter_changes(op))
                .map(|change| PatchLine {
                    kind: match change.tag() {
                        similar::ChangeTag::Equal => LineKind::Context,
                        similar::ChangeTag::Delete => LineKind::Removed,
                        similar::ChangeTag::Insert => LineKind::Added,
                    },
                    text: change.value().trim_end_matches(['\n', '\r']).to_owned(),
                    no_newline: change.missing_newline(),
                })
                .collect();
            Hunk {
                old_start: old_range.start as u64 + 1,
                old_lines: old_range.len() as u64,
                new_start: new_range.start as u64 + 1,
                new_lines: new_range.len() as u64,
                section: String::new(),
                lines,
            }
        })
        .collect()
}

/// `GET /ui/thread/{key}/diff`.
pub async fn page(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    session: DashboardSession,
) -> Result<Response, PageError> {
    let key = parse_key(&raw)?;
    Access::of(&state, &session).require_read(&key).await?;
    let name = key.to_string();
    let (intro, files) = match state.store.thread_branch(&key).await? {
        Some(record) => match branch_diff(&record).await {
            Ok(diff) => (branch_intro(&diff), branch_files(&diff)),
            Err(err) => (
                html! { p.flash { "The branch cannot be compared: " (err.to_string()) } },
                Vec::new(),
            ),
        },
        None => {
            let work_dir = state.store.channel_work_dir(&key).await?;
            let entries = state
                .orchestrator
                .activity()
                .latest(&name)
                .map(|(_, entries)| entries)
                .unwrap_or_default();
            let files = edit_files(&entries, work_dir.as_deref().map(FsPath::new));
            (
                html! {
                    p.muted {
                        "This thread has no git branch, so what is shown is what its latest turn "
                        "wrote with the Edit, MultiEdit and Write tools, call by call (line numbers "
                        "count within each edit)."
                    }
                },
                files,
            )
        }
    };
    let title = format!("Changes · {name}");
    Ok(page::render_with(
        page::Shell {
            title: &title,
            nav: page::Nav::Thread,
            session: &session,
            live: None,
        },
        html! { link rel="stylesheet" href=(Assets::url(&ASSETS.views_css)); },
        html! {
            h1 {
                span.platform { (key.platform.as_str()) } " "
                a href=(thread_url(&name)) { (name) }
                " › changes"
            }
            (intro)
            (view(&files))
        },
    ))
}

fn branch_intro(diff: &BranchDiff) -> Markup {
    html! {
        p {
            "Branch " code { (diff.branch) } " against " code { (diff.base_ref) }
            " from " code { (diff.base.short()) }
            @if diff.commits > 0 {
                ", " (diff.commits) " commit" @if diff.commits != 1 { "s" }
            }
            @if diff.uncommitted { ", with uncommitted changes" }
            "."
        }
    }
}

/// The file list and every file, within the page's limits.
pub fn view(files: &[FileView]) -> Markup {
    let mut budget = MAX_PAGE_ROWS;
    html! {
        @if files.is_empty() {
            p.empty { "No changes." }
        } @else {
            section.panel {
                h2 { (files.len()) " file" @if files.len() != 1 { "s" } " changed" }
                ol.diff-files {
                    @for (i, file) in files.iter().enumerate() {
                        li {
                            a href=(format!("#file-{i}")) { (file.title) }
                            " " (counts(file))
                        }
                    }
                }
            }
            @for (i, file) in files.iter().enumerate() {
                (file_view(i, file, &mut budget))
            }
        }
    }
}

fn counts(file: &FileView) -> Markup {
    html! {
        span.counts {
            @match (&file.body, file.added, file.removed) {
                (Body::Binary, _, _) => span.muted { "binary" },
                (_, Some(added), Some(removed)) => {
                    span.add { "+" (added) } " " span.del { "−" (removed) }
                }
                _ => {}
            }
        }
    }
}

fn file_view(index: usize, file: &FileView, budget: &mut usize) -> Markup {
    let total: usize = match &file.body {
        Body::Hunks(hunks) => hunks.iter().map(|h| rows(h).len()).sum(),
        _ => 0,
    };
    let note = match &file.body {
        Body::Binary => Some("Binary file: not shown.".to_owned()),
        Body::NoLines => Some("No lines changed.".to_owned()),
        Body::Note(text) => Some(text.clone()),
        Body::Hunks(_) if total > MAX_FILE_ROWS => Some(format!(
            "{total} lines: too long to show here; see the branch."
        )),
        Body::Hunks(_) if total > *budget => Some(format!(
            "{total} lines not shown: the page shows at most {MAX_PAGE_ROWS}; see the branch."
        )),
        Body::Hunks(_) => None,
    };
    if note.is_none() {
        *budget -= total;
    }
    let hunks: &[Hunk] = match &file.body {
        Body::Hunks(hunks) => hunks,
        _ => &[],
    };
    html! {
        details.diff-file id=(format!("file-{index}")) open {
            summary {
                (file.title)
                @if let Some(from) = &file.renamed_from { span.muted { " (renamed from " (from) ")" } }
                " " (counts(file))
            }
            @match note {
                Some(text) => p.note { (text) },
                None => div.diff-scroll {
                    table.sbs {
                        colgroup { col.n; col.code; col.n; col.code; }
                        @for hunk in hunks {
                            tr.hunk {
                                td colspan="4" {
                                    "@@ −" (hunk.old_start) "," (hunk.old_lines)
                                    " +" (hunk.new_start) "," (hunk.new_lines) " @@"
                                    @if !hunk.section.is_empty() { " " (hunk.section) }
                                }
                            }
                            @for row in rows(hunk) {
                                tr { (side(&row.left, true)) (side(&row.right, false)) }
                            }
                        }
                    }
                },
            }
        }
    }
}

fn side(cell: &Cell<'_>, old: bool) -> Markup {
    match cell {
        Cell::Empty => html! { td.n {} td.code.empty {} },
        Cell::Line {
            no,
            text,
            kind,
            no_newline,
        } => {
            let class = match kind {
                LineKind::Context => "code",
                LineKind::Removed => "code removed",
                LineKind::Added => "code added",
            };
            let (text, cut) = clip_line(text);
            html! {
                td.n { (no) }
                td class=(class) data-side=(if old { "old" } else { "new" }) {
                    (text)
                    @if cut { span.eol { "…" } }
                    @if *no_newline { span.eol { " ⏎̸ no newline at end of file" } }
                }
            }
        }
    }
}

fn clip_line(text: &str) -> (&str, bool) {
    match text.char_indices().nth(MAX_LINE_CHARS) {
        Some((at, _)) => (&text[..at], true),
        None => (text, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hunk(text: &str) -> Hunk {
        let patch = format!("diff --git a/f b/f\n--- a/f\n+++ b/f\n{text}");
        split_patch(&patch).remove(0).hunks.remove(0)
    }

    fn show(row: &Row<'_>) -> String {
        let one = |c: &Cell<'_>| match c {
            Cell::Empty => "_".to_owned(),
            Cell::Line { no, text, kind, .. } => {
                let mark = match kind {
                    LineKind::Context => ' ',
                    LineKind::Removed => '-',
                    LineKind::Added => '+',
                };
                format!("{no}{mark}{text}")
            }
        };
        format!("{} | {}", one(&row.left), one(&row.right))
    }

    #[test]
    fn changes_pair_up_side_by_side() {
        let h = hunk(
            "@@ -10,4 +10,5 @@\n keep\n-old one\n-old two\n+new one\n+new two\n+new three\n end\n",
        );
        let shown: Vec<String> = rows(&h).iter().map(show).collect();
        assert_eq!(
            shown,
            [
                "10 keep | 10 keep",
                "11-old one | 11+new one",
                "12-old two | 12+new two",
                "_ | 13+new three",
                "13 end | 14 end",
            ]
        );
        let only_removed = hunk("@@ -1,2 +1 @@\n-gone\n kept\n");
        let shown: Vec<String> = rows(&only_removed).iter().map(show).collect();
        assert_eq!(shown, ["1-gone | _", "2 kept | 1 kept"]);
    }

    /// A hostile file: its name and lines are text in the page, never markup.
    #[test]
    fn names_and_lines_are_escaped() {
        let file = FileView {
            title: "<img src=x onerror=alert(1)>.md".to_owned(),
            renamed_from: Some("\"><script>alert(2)</script>".to_owned()),
            added: Some(1),
            removed: Some(0),
            body: Body::Hunks(vec![hunk(
                "@@ -0,0 +1 @@\n+<script>alert(3)</script>&amp;\n",
            )]),
        };
        let html = view(&[file]).into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(3)&lt;/script&gt;&amp;amp;"),
            "{html}"
        );
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;.md"),
            "{html}"
        );
    }

    #[test]
    fn binary_long_and_over_budget_files_are_summarised() {
        let many: String = (0..MAX_FILE_ROWS + 1).map(|i| format!("+{i}\n")).collect();
        let long = hunk(&format!("@@ -0,0 +1,{} @@\n{many}", MAX_FILE_ROWS + 1));
        let files = [
            FileView {
                title: "logo.png".into(),
                renamed_from: None,
                added: None,
                removed: None,
                body: Body::Binary,
            },
            FileView {
                title: "big.txt".into(),
                renamed_from: None,
                added: Some(MAX_FILE_ROWS as u64 + 1),
                removed: Some(0),
                body: Body::Hunks(vec![long]),
            },
        ];
        let html = view(&files).into_string();
        assert!(html.contains("Binary file: not shown."), "{html}");
        assert!(html.contains("too long to show here"), "{html}");
        assert!(
            !html.contains("<table"),
            "nothing of either is drawn: {html}"
        );

        let wide = "x".repeat(MAX_LINE_CHARS + 50);
        assert_eq!(clip_line(&wide).0.len(), MAX_LINE_CHARS);
        assert!(clip_line(&wide).1);
        assert!(!clip_line("short").1);

        let mut budget = 3;
        let small = FileView {
            title: "a".into(),
            renamed_from: None,
            added: Some(4),
            removed: Some(0),
            body: Body::Hunks(vec![hunk("@@ -0,0 +1,4 @@\n+1\n+2\n+3\n+4\n")]),
        };
        let html = file_view(0, &small, &mut budget).into_string();
        assert!(html.contains("the page shows at most"), "{html}");
        assert_eq!(budget, 3);
    }

    #[test]
    fn without_git_the_turns_edits_are_shown_from_its_tool_calls() {
        let tool = |name: &str, input: Value, failed: bool| TurnActivity {
            seq: 1,
            run_id: "r".into(),
            channel: "local:c".into(),
            at_ms: 0,
            step: Step::Tool {
                id: "t".into(),
                name: name.into(),
                summary: String::new(),
                input: serde_json::to_string_pretty(&input).expect("json"),
                output: Some(crate::orchestrator::activity::ToolOutput {
                    is_error: failed,
                    text: String::new(),
                }),
            },
        };
        let entries = [
            tool(
                "Edit",
                serde_json::json!({"file_path": "/p/README.md", "old_string": "# app\nStatus: draft\n", "new_string": "# app\nStatus: reviewed\n"}),
                false,
            ),
            tool("Bash", serde_json::json!({"command": "ls"}), false),
            tool(
                "Write",
                serde_json::json!({"file_path": "/p/NOTES.md", "content": "one\ntwo\n"}),
                false,
            ),
            tool(
                "Edit",
                serde_json::json!({"file_path": "/p/x", "old_string": "a", "new_string": "b"}),
                true,
            ),
        ];
        let files = edit_files(&entries, Some(FsPath::new("/p")));
        let titles: Vec<&str> = files.iter().map(|f| f.title.as_str()).collect();
        assert_eq!(titles, ["Edit · README.md", "Write · NOTES.md", "Edit · x"]);
        let Body::Hunks(hunks) = &files[0].body else {
            panic!("hunks: {:?}", files[0].body);
        };
        let shown: Vec<String> = rows(&hunks[0]).iter().map(show).collect();
        assert_eq!(
            shown,
            ["1 # app | 1 # app", "2-Status: draft | 2+Status: reviewed"]
        );
        assert_eq!((files[1].added, files[1].removed), (Some(2), Some(0)));
        assert!(matches!(&files[2].body, Body::Note(n) if n.contains("failed")));
    }
}
