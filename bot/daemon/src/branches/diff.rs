//! A thread's branch against its base, as `/loop diff` shows it: from where the branch left
//! its base (the merge base, so commits the base gained since do not show as removed) to the
//! branch's head, or to its worktree when changes are still uncommitted there. Short diffs go
//! in the message; long ones as a file, with the summary as its comment. `/loop base` in a
//! thread that has a branch moves the base it is compared with ([`retarget`]).

use std::path::Path;

use loop_adapter::ChannelKey;
use loop_git::{CommitId, DiffStat, GitError, Repo};
use loop_store::{BranchState, Store, ThreadBranch};

use super::{BranchError, file_lines};

/// A diff longer than this (characters of the patch) is sent as a file.
pub const INLINE_MAX_CHARS: usize = 3_500;
/// A diff with more lines than this is sent as a file.
pub const INLINE_MAX_LINES: usize = 80;
/// A diff file is cut here: every platform takes a file this size (Discord's limit is the
/// smallest), and a reviewer wants the branch itself beyond it.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;

/// What a thread's branch changed against its base.
#[derive(Debug, Clone)]
pub struct BranchDiff {
    pub branch: String,
    pub base_ref: String,
    /// Where the branch left its base (the recorded base commit when the base is gone).
    pub base: CommitId,
    /// Commits on the branch since `base`.
    pub commits: u64,
    pub stat: DiffStat,
    /// The patch, as `git diff` prints it.
    pub patch: String,
    /// The worktree had changes no commit holds; they are part of the diff.
    pub uncommitted: bool,
}

/// How a diff is posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffReply {
    /// One message, the patch in a `diff` code block.
    Inline(String),
    /// The patch as a file, the summary as its comment.
    File {
        name: String,
        comment: String,
        bytes: Vec<u8>,
    },
}

/// The diff of `record`'s branch against its base, with what its worktree holds uncommitted.
pub async fn branch_diff(record: &ThreadBranch) -> Result<BranchDiff, BranchError> {
    let repo = open(record).await?;
    let worktree = match record.state {
        BranchState::Active => repo.worktree(Path::new(&record.worktree)).await?,
        BranchState::Removed => None,
    };
    // The worktree's HEAD is the thread's work, even if the agent switched branches there.
    let head = match &worktree {
        Some(worktree) => worktree.head_commit().await?,
        None => None,
    };
    let head = match head {
        Some(head) => head,
        None => repo.resolve(&record.branch).await?,
    };
    let base = merge_base(&repo, record, &head).await?;
    let git = worktree.as_ref().unwrap_or(repo.checkout());
    let uncommitted = match &worktree {
        Some(worktree) => worktree.status_changed().await?,
        None => false,
    };
    let target = if uncommitted {
        git.snapshot().await?.as_str().to_owned()
    } else {
        head.as_str().to_owned()
    };
    Ok(BranchDiff {
        branch: record.branch.clone(),
        base_ref: record.base_ref.clone(),
        commits: git.commits_ahead(base.as_str(), head.as_str()).await?,
        stat: git.diff_stat(base.as_str(), &target).await?,
        patch: git.diff_text(base.as_str(), &target).await?,
        base,
        uncommitted,
    })
}

/// Where `head` left the record's base: the merge base with the base as it is now, else (the
/// base is gone, or shares no history any more) the commit the branch was cut from.
pub(super) async fn merge_base(
    repo: &Repo,
    record: &ThreadBranch,
    head: &CommitId,
) -> Result<CommitId, BranchError> {
    if let Ok(base) = repo.resolve(&record.base_ref).await
        && let Some(found) = repo.merge_base(base.as_str(), head.as_str()).await?
    {
        return Ok(found);
    }
    Ok(repo.resolve(&record.base_commit).await?)
}

/// Points `thread`'s branch (`record`) at another base: its diff and pull request compare
/// with `base_ref` from the merge base on. The branch's commits stay as they are (no rebase).
pub async fn retarget(
    store: &Store,
    thread: &ChannelKey,
    record: &ThreadBranch,
    base_ref: &str,
) -> Result<ThreadBranch, BranchError> {
    let repo = open(record).await?;
    let base = repo.resolve(base_ref).await?;
    let head = repo.resolve(&record.branch).await?;
    let Some(merge_base) = repo.merge_base(base.as_str(), head.as_str()).await? else {
        return Err(BranchError::UnrelatedBase {
            base: base_ref.to_owned(),
            branch: record.branch.clone(),
        });
    };
    Ok(store
        .set_thread_branch_base(thread, base_ref, merge_base.as_str())
        .await?)
}

/// The repository a thread's branch is in.
pub async fn open(record: &ThreadBranch) -> Result<Repo, BranchError> {
    let gone = || BranchError::NoRepository {
        repo: record.repo_root.clone(),
    };
    match Repo::open(Path::new(&record.repo_root)).await {
        Ok(Some(repo)) => Ok(repo),
        Ok(None) => Err(gone()),
        Err(GitError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Err(gone())
        }
        Err(err) => Err(err.into()),
    }
}

impl BranchDiff {
    /// The summary: branch, base, files and +/- lines, commits, each file.
    pub fn summary(&self) -> String {
        let base = format!("`{}` (from `{}`)", self.base_ref, self.base.short());
        if self.stat.is_empty() {
            return format!("🌿 `{}` has no changes against {base}.", self.branch);
        }
        let files = self.stat.files.len();
        let mut text = format!(
            "🌿 `{}` against {base}: {files} file{} changed, +{} −{}",
            self.branch,
            if files == 1 { "" } else { "s" },
            self.stat.added(),
            self.stat.removed()
        );
        if self.commits > 0 {
            text.push_str(&format!(
                " in {} commit{}",
                self.commits,
                if self.commits == 1 { "" } else { "s" }
            ));
        }
        if self.uncommitted {
            text.push_str(if self.commits > 0 {
                " and uncommitted changes"
            } else {
                " in uncommitted changes"
            });
        }
        text.push_str(&file_lines(&self.stat));
        text
    }

    /// The message, or the file and its comment, that show this diff in chat.
    pub fn reply(&self) -> DiffReply {
        let summary = self.summary();
        let patch = self.patch.trim_end_matches('\n');
        if patch.is_empty() {
            return DiffReply::Inline(summary);
        }
        // A fence inside the patch would end the code block early.
        let fits = patch.chars().count() <= INLINE_MAX_CHARS
            && patch.lines().count() <= INLINE_MAX_LINES
            && !patch.contains("```");
        if fits {
            return DiffReply::Inline(format!("{summary}\n```diff\n{patch}\n```"));
        }
        let name = diff_file_name(&self.branch);
        let mut bytes = self.patch.as_bytes().to_vec();
        let mut comment = format!("{summary}\nThe whole diff is attached as `{name}`.");
        if bytes.len() > MAX_FILE_BYTES {
            let cut = bytes[..MAX_FILE_BYTES]
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(MAX_FILE_BYTES, |i| i + 1);
            bytes.truncate(cut);
            bytes.extend_from_slice(b"... (cut here: the diff goes on; see the branch)\n");
            comment = format!(
                "{summary}\nThe diff is attached as `{name}`, cut at {} MiB.",
                MAX_FILE_BYTES / (1024 * 1024)
            );
        }
        DiffReply::File {
            name,
            comment,
            bytes,
        }
    }
}

/// `loop-<branch>.diff`, the branch's `/` as `-` and any character a file name should not
/// carry as `-` too (`loop/fix-login-a1b2` → `loop-fix-login-a1b2.diff`).
pub fn diff_file_name(branch: &str) -> String {
    let slug: String = branch
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if slug.starts_with("loop-") {
        format!("{slug}.diff")
    } else {
        format!("loop-{slug}.diff")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loop_git::parse_numstat;

    fn diff(numstat: &[u8], patch: &str, commits: u64, uncommitted: bool) -> BranchDiff {
        BranchDiff {
            branch: "loop/fix-login-a1b2".into(),
            base_ref: "main".into(),
            base: commit(),
            commits,
            stat: parse_numstat(numstat).expect("numstat"),
            patch: patch.into(),
            uncommitted,
        }
    }

    fn commit() -> CommitId {
        "3f2c1d04b5a6978812345678901234567890abcd"
            .parse()
            .expect("an object name")
    }

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// `/loop base develop` in a thread whose branch was cut from `main`: the branch is
    /// compared with develop from their merge base on, its commits untouched; a base with no
    /// shared history is refused and changes nothing.
    #[tokio::test]
    async fn a_threads_branch_moves_to_another_base() {
        use crate::branches::{BranchSettings, prepare_thread_worktree};
        use loop_adapter::PlatformKind;
        use loop_store::test_support::TestDb;

        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("app");
        std::fs::create_dir_all(&repo).expect("mkdir");
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("README.md"), "draft\n").expect("write");
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "initial"]);
        let forked = git(&repo, &["rev-parse", "HEAD"]);
        git(&repo, &["checkout", "-q", "-b", "develop"]);
        std::fs::write(repo.join("DEVELOP.md"), "d\n").expect("write");
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "develop"]);
        git(&repo, &["checkout", "-q", "--orphan", "island"]);
        git(&repo, &["commit", "-q", "-m", "alone"]);
        git(&repo, &["checkout", "-q", "-f", "main"]);

        let db = TestDb::sqlite().await;
        let store = db.store();
        let thread = ChannelKey::thread(PlatformKind::Slack, "C1", "1.0");
        let settings = BranchSettings {
            worktrees_root: dir.path().join("worktrees"),
            prefix: "loop".to_owned(),
        };
        let prepared = prepare_thread_worktree(store, &thread, &repo, &settings, "fix", "a1")
            .await
            .expect("prepare")
            .expect("a repository");
        std::fs::write(prepared.worktree.join("README.md"), "reviewed\n").expect("write");
        git(&prepared.worktree, &["commit", "-q", "-am", "review"]);
        let head = git(&prepared.worktree, &["rev-parse", "HEAD"]);

        let moved = retarget(store, &thread, &prepared.record, "develop")
            .await
            .expect("retarget");
        assert_eq!(moved.base_ref, "develop");
        assert_eq!(moved.base_commit, forked, "the merge base with develop");
        assert_eq!(git(&prepared.worktree, &["rev-parse", "HEAD"]), head);
        let diff = branch_diff(&moved).await.expect("diff");
        assert_eq!(diff.base_ref, "develop");
        assert_eq!(diff.base.as_str(), forked);
        assert_eq!(diff.commits, 1);
        assert_eq!(
            diff.stat
                .files
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>(),
            ["README.md"],
            "develop's own commit is not the thread's change"
        );

        let refused = retarget(store, &thread, &moved, "island").await;
        assert!(
            matches!(refused, Err(BranchError::UnrelatedBase { .. })),
            "{refused:?}"
        );
        let kept = store
            .thread_branch(&thread)
            .await
            .expect("read")
            .expect("a branch");
        assert_eq!(kept.base_ref, "develop");
    }

    #[test]
    fn short_diffs_go_inline_long_ones_as_a_file() {
        let patch = "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-draft\n+reviewed\n";
        let short = diff(b"1\t1\tREADME.md\0", patch, 1, false);
        let DiffReply::Inline(text) = short.reply() else {
            panic!("inline expected");
        };
        let base = short.base.short().to_owned();
        assert_eq!(
            text,
            format!(
                "🌿 `loop/fix-login-a1b2` against `main` (from `{base}`): 1 file changed, +1 −1 in 1 commit\n• `README.md` +1 −1\n```diff\n{}\n```",
                patch.trim_end()
            )
        );

        let many_lines: String = (0..=INLINE_MAX_LINES).map(|i| format!("+{i}\n")).collect();
        let wide = format!("+{}\n", "x".repeat(INLINE_MAX_CHARS));
        let fenced = "+```rust\n+fn main() {}\n+```\n".to_owned();
        for patch in [many_lines, wide, fenced] {
            let long = diff(b"3\t0\tnotes.md\0", &patch, 2, true);
            match long.reply() {
                DiffReply::File {
                    name,
                    comment,
                    bytes,
                } => {
                    assert_eq!(name, "loop-fix-login-a1b2.diff");
                    assert!(
                        comment.starts_with(&format!(
                            "🌿 `loop/fix-login-a1b2` against `main` (from `{base}`): 1 file changed, +3 −0 in 2 commits and uncommitted changes\n• `notes.md` +3 −0\n"
                        )),
                        "{comment}"
                    );
                    assert!(comment.ends_with("attached as `loop-fix-login-a1b2.diff`."));
                    assert_eq!(bytes, patch.as_bytes());
                }
                other => panic!("a file expected for {patch:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn nothing_changed_says_so() {
        let empty = diff(b"", "", 0, false);
        assert_eq!(
            empty.reply(),
            DiffReply::Inline(format!(
                "🌿 `loop/fix-login-a1b2` has no changes against `main` (from `{}`).",
                empty.base.short()
            ))
        );
        let uncommitted = diff(b"1\t0\tnew.txt\0", "+new\n", 0, true);
        let DiffReply::Inline(text) = uncommitted.reply() else {
            panic!("inline expected");
        };
        assert!(text.contains("+1 −0 in uncommitted changes\n"), "{text}");
    }

    #[test]
    fn huge_diffs_are_cut_at_a_line() {
        let line = format!("+{}\n", "y".repeat(99));
        let patch = line.repeat(MAX_FILE_BYTES / line.len() + 10);
        let DiffReply::File { bytes, comment, .. } = diff(b"1\t0\tbig\0", &patch, 1, false).reply()
        else {
            panic!("a file expected");
        };
        assert!(bytes.len() <= MAX_FILE_BYTES + 64, "{}", bytes.len());
        let text = String::from_utf8(bytes).expect("utf-8");
        assert!(text.ends_with("... (cut here: the diff goes on; see the branch)\n"));
        assert!(
            text.split('\n')
                .rev()
                .nth(1)
                .is_some_and(|l| l.starts_with("... (cut"))
        );
        assert!(comment.contains("cut at 4 MiB"), "{comment}");
    }

    #[test]
    fn file_names_come_from_the_branch() {
        for (branch, name) in [
            ("loop/fix-login-a1b2", "loop-fix-login-a1b2.diff"),
            ("bot/add-notes-c3d4", "loop-bot-add-notes-c3d4.diff"),
            ("feature/ümlaut x", "loop-feature--mlaut-x.diff"),
        ] {
            assert_eq!(diff_file_name(branch), name, "{branch}");
        }
    }
}
