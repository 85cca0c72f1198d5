//! A project as a person's checkout looks, for the fake model's realistic session
//! ([`loop_fakes::model::Session`]): a git repository with a CLAUDE.md, a README the agent
//! edits and a test script that passes only once the edit is made. [`Project::check`] asserts
//! what a person would look at afterwards: the files on the host, who owns them, the agent's
//! report, and that CLAUDE.md reached the model.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use loop_fakes::model::{FakeModel, Session};

use crate::support::AGENT_UID;

/// Who owns the repository's `.git`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitOwner {
    /// Everything belongs to the agent's uid, like a user's own checkout.
    Agent,
    /// `.git` stays root's, as when loop (running as root) created or cloned the repository
    /// and handed the files to the agent: git calls that "dubious ownership".
    Root,
}

/// A realistic project directory.
#[derive(Debug, Clone)]
pub struct Project {
    pub dir: PathBuf,
    /// A line of the project's CLAUDE.md that appears nowhere else: the model's requests carry
    /// it only when the CLI loaded the file.
    pub claude_md_marker: String,
}

impl Project {
    /// Creates the project in `dir` (which may exist): CLAUDE.md, README.md (`Status: draft`),
    /// test.sh, one commit on `main`.
    pub fn create(dir: &Path, git_owner: GitOwner) -> Project {
        std::fs::create_dir_all(dir).expect("project dir");
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let claude_md_marker = format!("Project rule {}: keep notes in NOTES.md.", uuid_like(dir));
        let session = Session::default();
        std::fs::write(
            dir.join("CLAUDE.md"),
            format!(
                "# {name}\n\n{claude_md_marker}\nRun the tests with `{}` before reporting.\n",
                session.test_command
            ),
        )
        .expect("CLAUDE.md");
        std::fs::write(
            dir.join("README.md"),
            format!("# {name}\n\n{}\n", session.old),
        )
        .expect("README.md");
        std::fs::write(
            dir.join("test.sh"),
            format!(
                "if grep -q '{}' README.md; then echo 'tests pass'; else echo 'tests fail: README not reviewed'; exit 1; fi\n",
                session.new
            ),
        )
        .expect("test.sh");
        git(dir, &["init", "-q", "-b", "main"]);
        git(dir, &["add", "-A"]);
        commit_all(dir, "initial");
        chown_tree(dir, AGENT_UID);
        if git_owner == GitOwner::Root {
            chown_tree(&dir.join(".git"), 0);
        }
        Project {
            dir: dir.to_path_buf(),
            claude_md_marker,
        }
    }

    /// A copy of `tests/fixtures/projects/NAME` in `dir`, as a person's checkout: one commit
    /// on `main`, owned by the agent's uid.
    pub fn from_fixture(name: &str, dir: &Path) -> Project {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/projects")
            .join(name);
        std::fs::create_dir_all(dir).expect("project dir");
        let status = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", fixture.display()))
            .arg(dir)
            .status()
            .expect("cp");
        assert!(status.success(), "cannot copy the fixture {name}");
        git(dir, &["init", "-q", "-b", "main"]);
        git(dir, &["add", "-A"]);
        commit_all(dir, "initial");
        chown_tree(dir, AGENT_UID);
        Project {
            dir: dir.to_path_buf(),
            claude_md_marker: String::new(),
        }
    }

    /// Commits every change in the main checkout, as a person pushing to `main` would.
    pub fn commit(&self, message: &str) {
        git(&self.dir, &["add", "-A"]);
        commit_all(&self.dir, message);
        chown_tree(&self.dir, AGENT_UID);
    }

    /// Asserts that the realistic session ran in this project: the edit and the new file are
    /// on the host, owned by the agent's uid; the project's own test passed; `pwd` and
    /// `git status` in the report show the project and its branch; CLAUDE.md reached the model.
    pub fn check(&self, answer: &str, model: &FakeModel) {
        self.check_in(&self.dir, "main", answer, model);
    }

    /// Asserts that the realistic session ran in a thread of a daemon pointed at this project:
    /// as [`Project::check`], but in the thread's own worktree on a `loop/` branch, with the
    /// work committed on that branch and the main checkout untouched. Returns the worktree.
    pub fn check_thread(&self, answer: &str, model: &FakeModel) -> PathBuf {
        let session = Session::default();
        let worked = answer
            .split("Worked in ")
            .nth(1)
            .and_then(|rest| rest.split(".\n").next().or(Some(rest)))
            .map(|dir| PathBuf::from(dir.trim_end_matches('.')))
            .unwrap_or_else(|| panic!("the report does not say where the agent worked: {answer}"));
        let listed = git_output(&self.dir, &["worktree", "list", "--porcelain"]);
        assert!(
            listed.contains(&format!("worktree {}\n", worked.display())) && worked != self.dir,
            "the agent did not work in one of the project's linked worktrees but in {}:\n{listed}",
            worked.display()
        );
        let branch = git_output(&worked, &["branch", "--show-current"]);
        assert!(branch.starts_with("loop/"), "the thread's branch: {branch}");
        self.check_in(&worked, &branch, answer, model);
        // The work is a commit on the thread's branch, and the person's checkout is as it was.
        let committed = git_output(
            &self.dir,
            &["show", &format!("{branch}:{}", session.edit_file)],
        );
        assert!(
            committed.contains(&session.new),
            "not committed on {branch}: {committed}"
        );
        let main = std::fs::read_to_string(self.dir.join(&session.edit_file)).expect("README");
        assert!(
            main.contains(&session.old) && !self.dir.join(&session.new_file).exists(),
            "the main checkout changed: {main:?}"
        );
        assert_eq!(
            git_output(&self.dir, &["status", "--porcelain"]),
            "",
            "the main checkout is not clean"
        );
        worked
    }

    /// The linked worktree of this project that has `branch` checked out, as
    /// `git worktree list` shows it.
    pub fn worktree_of(&self, branch: &str) -> PathBuf {
        let listed = git_output(&self.dir, &["worktree", "list", "--porcelain"]);
        let mut path = None;
        for line in listed.lines() {
            if let Some(p) = line.strip_prefix("worktree ") {
                path = Some(PathBuf::from(p));
            }
            if line == format!("branch refs/heads/{branch}") {
                return path.expect("a worktree line comes first");
            }
        }
        panic!(
            "no worktree of {} on {branch}:\n{listed}",
            self.dir.display()
        )
    }

    /// Whether `file` is in the worktree that has `branch` checked out, and whether it is in
    /// the branch's last commit: where a thread's command left its mark.
    pub fn made_on_branch(&self, branch: &str, file: &str) -> (bool, bool) {
        (
            self.worktree_of(branch).join(file).exists(),
            self.files_on(branch).iter().any(|f| f == file),
        )
    }

    /// The files of `branch`'s last commit, as `git ls-tree` lists them.
    pub fn files_on(&self, branch: &str) -> Vec<String> {
        git_output(&self.dir, &["ls-tree", "-r", "--name-only", branch])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn check_in(&self, dir: &Path, branch: &str, answer: &str, model: &FakeModel) {
        let session = Session::default();
        let readme = std::fs::read_to_string(dir.join(&session.edit_file)).expect("README");
        assert!(
            readme.contains(&session.new) && !readme.contains(&session.old),
            "the Edit by relative path did not reach the host's README: {readme:?}\nanswer: {answer}"
        );
        let notes = dir.join(&session.new_file);
        assert_eq!(
            std::fs::read_to_string(&notes).ok().as_deref(),
            Some(session.new_content.as_str()),
            "the Write by relative path did not create {} on the host\nanswer: {answer}",
            notes.display()
        );
        assert_eq!(
            std::fs::metadata(&notes).expect("notes").uid(),
            AGENT_UID,
            "files the agent writes belong to its uid"
        );
        let dir = dir.display().to_string();
        assert!(
            answer.contains(&format!("Worked in {dir}.")),
            "pwd is not the project: {answer}"
        );
        assert!(
            answer.contains("Tests: tests pass"),
            "the project's tests did not run in the project: {answer}"
        );
        assert!(
            answer.contains(&format!("Git: ## {branch}")),
            "git status did not find the repository on {branch}: {answer}"
        );
        let requests = model.requests();
        assert!(
            requests
                .iter()
                .any(|r| r.body_contains(&self.claude_md_marker)),
            "the project's CLAUDE.md never reached the model"
        );
        assert!(
            requests.iter().any(|r| r
                .conversation
                .as_ref()
                .is_some_and(|c| c.cwd.as_deref() == Some(dir.as_str()))),
            "the CLI's system prompt never named {dir} as the working directory"
        );
    }
}

/// The first thread branch (`` `loop/...` ``) a chat message names: the status message's
/// "working on" line or the answer's summary of changes.
pub fn branch_named_in(text: &str) -> Option<String> {
    let start = text.find("`loop/")? + 1;
    let end = text[start..].find('`')? + start;
    Some(text[start..end].to_owned())
}

/// A short unique tag from the directory's path and the clock.
fn uuid_like(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut hasher);
    std::time::SystemTime::now().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// What `git ARGS` prints in `dir`, trimmed.
pub fn git_output(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "safe.directory=*"])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        // The test (root) sets up a directory that already belongs to the agent's uid.
        .args(["-c", "safe.directory=*"])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?} in {}", dir.display());
}

fn commit_all(dir: &Path, message: &str) {
    git(
        dir,
        &[
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "commit",
            "-q",
            "-m",
            message,
        ],
    );
}

fn chown_tree(dir: &Path, uid: u32) {
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{uid}"))
        .arg(dir)
        .status()
        .expect("chown runs");
    assert!(status.success(), "chown -R {uid} {}", dir.display());
}
