//! A plain patch (`git diff`'s output, [`crate::Worktree::diff_text`]) cut into its files and
//! hunks, for a reviewer's side-by-side view. Parsing is pure.
//!
//! The patch comes from files the agent and strangers wrote, so nothing in it is trusted:
//! files are cut only at lines that begin `diff --git ` (a content line always begins with
//! ` `, `+`, `-` or `\`, and git quotes a file name holding a newline), and a hunk takes
//! exactly as many lines as its header counts. Paths are not read from the patch at all: git
//! lists files in the same order for `--numstat -z`, whose paths are exact
//! ([`crate::DiffStat`]), so callers pair the two by position.

/// One file's part of a patch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FilePatch {
    /// The lines before the first hunk (`diff --git`, `index`, `new file mode`, `rename
    /// from`, `---`, `+++`, ...), as git wrote them.
    pub header: Vec<String>,
    pub hunks: Vec<Hunk>,
    /// git printed `Binary files ... differ` instead of hunks.
    pub binary: bool,
}

/// One `@@ -a,b +c,d @@` hunk.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hunk {
    /// First line of the hunk in the old file (1-based; 0 for an empty range).
    pub old_start: u64,
    pub old_lines: u64,
    pub new_start: u64,
    pub new_lines: u64,
    /// What git printed after the second `@@` (the enclosing function, often).
    pub section: String,
    pub lines: Vec<PatchLine>,
}

/// One line of a hunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchLine {
    pub kind: LineKind,
    /// The line without its one-character prefix.
    pub text: String,
    /// `\ No newline at end of file` followed it.
    pub no_newline: bool,
}

/// Where a hunk's line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// In both files.
    Context,
    /// Only in the old file.
    Removed,
    /// Only in the new file.
    Added,
}

/// Cuts a patch into its files, in the patch's order.
pub fn split_patch(text: &str) -> Vec<FilePatch> {
    let mut files: Vec<FilePatch> = Vec::new();
    let mut lines = text.split('\n').peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("diff --git ") {
            files.push(FilePatch {
                header: vec![line.to_owned()],
                ..FilePatch::default()
            });
            continue;
        }
        let Some(file) = files.last_mut() else {
            continue;
        };
        if let Some(mut hunk) = hunk_header(line) {
            let (mut old_left, mut new_left) = (hunk.old_lines, hunk.new_lines);
            while old_left > 0 || new_left > 0 {
                let Some(body) = lines.next() else {
                    break;
                };
                // The empty string after the patch's last newline is not a line.
                if body.is_empty() && lines.peek().is_none() {
                    break;
                }
                let (kind, rest) = match body.as_bytes().first() {
                    Some(b'+') => (LineKind::Added, &body[1..]),
                    Some(b'-') => (LineKind::Removed, &body[1..]),
                    Some(b' ') => (LineKind::Context, &body[1..]),
                    // A context line whose only content was its newline, trimmed by a tool.
                    None => (LineKind::Context, ""),
                    Some(_) => (LineKind::Context, body),
                };
                match kind {
                    LineKind::Context => {
                        old_left = old_left.saturating_sub(1);
                        new_left = new_left.saturating_sub(1);
                    }
                    LineKind::Removed => old_left = old_left.saturating_sub(1),
                    LineKind::Added => new_left = new_left.saturating_sub(1),
                }
                hunk.lines.push(PatchLine {
                    kind,
                    text: rest.to_owned(),
                    no_newline: false,
                });
                while lines.peek().is_some_and(|next| next.starts_with('\\')) {
                    lines.next();
                    if let Some(last) = hunk.lines.last_mut() {
                        last.no_newline = true;
                    }
                }
            }
            file.hunks.push(hunk);
            continue;
        }
        if file.hunks.is_empty() {
            if line.starts_with("Binary files ") && line.ends_with(" differ") {
                file.binary = true;
            }
            if line.starts_with("GIT binary patch") {
                file.binary = true;
            }
            if !line.is_empty() {
                file.header.push(line.to_owned());
            }
        }
    }
    files
}

/// `@@ -a[,b] +c[,d] @@ section`, or `None`.
fn hunk_header(line: &str) -> Option<Hunk> {
    let rest = line.strip_prefix("@@ -")?;
    let (ranges, section) = rest.split_once(" @@")?;
    let (old, new) = ranges.split_once(" +")?;
    let range = |text: &str| -> Option<(u64, u64)> {
        match text.split_once(',') {
            Some((start, count)) => Some((start.parse().ok()?, count.parse().ok()?)),
            None => Some((text.parse().ok()?, 1)),
        }
    };
    let (old_start, old_lines) = range(old)?;
    let (new_start, new_lines) = range(new)?;
    Some(Hunk {
        old_start,
        old_lines,
        new_start,
        new_lines,
        section: section.strip_prefix(' ').unwrap_or(section).to_owned(),
        lines: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(hunk: &Hunk) -> String {
        hunk.lines
            .iter()
            .map(|l| match l.kind {
                LineKind::Context => ' ',
                LineKind::Removed => '-',
                LineKind::Added => '+',
            })
            .collect()
    }

    #[test]
    fn files_and_hunks_are_cut_where_git_put_them() {
        let patch = "diff --git a/README.md b/README.md\n\
index 1111111..2222222 100644\n\
--- a/README.md\n\
+++ b/README.md\n\
@@ -1,3 +1,3 @@ # title\n\
 # app\n\
-Status: draft\n\
+Status: reviewed\n\
 end\n\
diff --git a/logo.png b/logo.png\n\
new file mode 100644\n\
index 0000000..3333333\n\
Binary files /dev/null and b/logo.png differ\n\
diff --git a/notes.txt b/notes.txt\n\
new file mode 100644\n\
--- /dev/null\n\
+++ b/notes.txt\n\
@@ -0,0 +1 @@\n\
+one line\n\
\\ No newline at end of file\n";
        let files = split_patch(patch);
        assert_eq!(files.len(), 3);
        let readme = &files[0];
        assert!(!readme.binary);
        assert_eq!(readme.header.len(), 4);
        assert_eq!(readme.hunks.len(), 1);
        let hunk = &readme.hunks[0];
        assert_eq!(
            (
                hunk.old_start,
                hunk.old_lines,
                hunk.new_start,
                hunk.new_lines
            ),
            (1, 3, 1, 3)
        );
        assert_eq!(hunk.section, "# title");
        assert_eq!(kinds(hunk), " -+ ");
        assert_eq!(hunk.lines[2].text, "Status: reviewed");
        assert!(files[1].binary && files[1].hunks.is_empty());
        let notes = &files[2].hunks[0];
        assert_eq!(
            (notes.old_start, notes.old_lines, notes.new_lines),
            (0, 0, 1)
        );
        assert_eq!(kinds(notes), "+");
        assert!(notes.lines[0].no_newline);
    }

    /// Content that looks like patch syntax stays content: a hunk takes the lines its header
    /// counts, whatever they say.
    #[test]
    fn hostile_content_cannot_start_a_file_or_a_hunk() {
        let patch = "diff --git a/x b/x\n\
--- a/x\n\
+++ b/x\n\
@@ -1,2 +1,4 @@\n\
 keep\n\
+diff --git a/evil b/evil\n\
+@@ -1 +1 @@\n\
-gone\n\
+<script>alert(1)</script>\n";
        let files = split_patch(patch);
        assert_eq!(files.len(), 1);
        let hunk = &files[0].hunks[0];
        assert_eq!(kinds(hunk), " ++-+");
        assert_eq!(hunk.lines[1].text, "diff --git a/evil b/evil");
        assert_eq!(hunk.lines[4].text, "<script>alert(1)</script>");
    }

    #[test]
    fn odd_hunk_headers_and_truncated_patches_do_not_panic() {
        assert!(split_patch("").is_empty());
        assert!(split_patch("garbage\n@@ -1 +1 @@\n+x\n").is_empty());
        let cut = split_patch("diff --git a/x b/x\n@@ -1,5 +1,5 @@\n context\n");
        assert_eq!(cut[0].hunks[0].lines.len(), 1);
        let bad = split_patch("diff --git a/x b/x\n@@ -a,b +c @@\n+x\n");
        assert!(bad[0].hunks.is_empty());
        assert_eq!(bad[0].header.len(), 3);
    }
}
