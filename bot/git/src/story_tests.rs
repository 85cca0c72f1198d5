//! Stories on real repositories in temp dirs: two threads' worktrees side by side, and a
//! hostile repository whose hooks, drivers and config must never run on the host.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;

/// Git for setting repositories up, with the test's own hardening (never the crate's, which
/// is what is under test): no global or system config, hooks off.
fn setup_git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .args(["-c", "core.hooksPath=/dev/null", "-c", "user.name=Setup"])
        .args([
            "-c",
            "user.email=setup@example.com",
            "-c",
            "commit.gpgSign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A repository at `root/work` on branch `main` with `files` committed.
fn new_repo(root: &Path, files: &[(&str, &[u8])]) -> PathBuf {
    let work = root.join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    setup_git(&work, &["init", "--quiet", "-b", "main"]);
    for (name, content) in files {
        std::fs::write(work.join(name), content).expect("write");
    }
    setup_git(&work, &["add", "-A"]);
    setup_git(&work, &["commit", "--quiet", "-m", "initial"]);
    work
}

fn ada() -> Signature {
    Signature {
        name: "loop".into(),
        email: "loop@example.com".into(),
    }
}

fn grace() -> Signature {
    Signature {
        name: "Grace Hopper".into(),
        email: "grace@example.com".into(),
    }
}

fn paths(stat: &DiffStat) -> Vec<(&str, Option<u64>, Option<u64>)> {
    stat.files
        .iter()
        .map(|f| (f.path.as_str(), f.added, f.removed))
        .collect()
}

#[tokio::test]
async fn two_threads_work_on_two_branches_from_one_base() {
    let root = tempfile::tempdir().expect("tempdir");
    let work = new_repo(root.path(), &[("file.txt", b"one\ntwo\n")]);
    std::fs::create_dir(work.join("sub")).expect("mkdir");

    let repo = Repo::open(&work.join("sub"))
        .await
        .expect("open")
        .expect("a repo");
    assert_eq!(
        repo.path(),
        std::fs::canonicalize(&work).expect("canonical")
    );
    assert_eq!(
        repo.current_branch().await.expect("branch").as_deref(),
        Some("main")
    );
    let base = repo.head_commit().await.expect("head").expect("a commit");
    assert_eq!(repo.resolve("main").await.expect("resolve"), base);

    let (a, b) = (root.path().join("trees/a"), root.path().join("trees/b"));
    let tree_a = repo
        .add_worktree(&a, "loop/a", "main")
        .await
        .expect("add a");
    let tree_b = repo
        .add_worktree(&b, "loop/b", "main")
        .await
        .expect("add b");
    assert_eq!(
        tree_a.current_branch().await.expect("branch").as_deref(),
        Some("loop/a")
    );
    assert!(!tree_a.status_changed().await.expect("status"));

    std::fs::write(a.join("file.txt"), "one changed\ntwo\n").expect("write");
    std::fs::write(a.join("new.txt"), "new\n").expect("write");
    assert!(tree_a.status_changed().await.expect("status"));
    let message = commit_message("Change line one", "Changed the first line.");
    let commit_a = tree_a
        .commit_all(&message, &ada(), Some(&grace()))
        .await
        .expect("commit")
        .expect("something to commit");
    assert_eq!(commit_a.subject, "Change line one");
    assert!(!tree_a.status_changed().await.expect("status"));
    assert_eq!(
        tree_a
            .commit_all(&message, &ada(), None)
            .await
            .expect("commit"),
        None
    );

    std::fs::write(b.join("file.txt"), "one\ntwo\nthree\n").expect("write");
    std::fs::write(b.join("blob.bin"), [0u8, 1, 2, 0, 255]).expect("write");
    let commit_b = tree_b
        .commit_all("Add line three", &ada(), None)
        .await
        .expect("commit")
        .expect("something to commit");

    // The main checkout is untouched.
    assert_eq!(
        std::fs::read_to_string(work.join("file.txt")).expect("read"),
        "one\ntwo\n"
    );
    assert!(!repo.checkout().status_changed().await.expect("status"));
    assert_eq!(repo.head_commit().await.expect("head"), Some(base.clone()));

    let stat_a = repo
        .diff_stat("main", commit_a.id.as_str())
        .await
        .expect("stat a");
    assert_eq!(
        paths(&stat_a),
        vec![
            ("file.txt", Some(1), Some(1)),
            ("new.txt", Some(1), Some(0))
        ]
    );
    let stat_b = repo.diff_stat("main", "loop/b").await.expect("stat b");
    assert_eq!(
        paths(&stat_b),
        vec![("blob.bin", None, None), ("file.txt", Some(1), Some(0))]
    );
    assert_eq!((stat_b.added(), stat_b.removed()), (1, 0));
    let patch = tree_b.diff_text("main", "HEAD").await.expect("patch");
    assert!(patch.contains("+three"), "{patch}");
    assert!(patch.contains("Binary files"), "{patch}");
    assert_eq!(
        repo.commits_ahead("main", "loop/a").await.expect("ahead"),
        1
    );
    assert_eq!(
        repo.commits_ahead("loop/b", "main").await.expect("ahead"),
        0
    );
    assert_eq!(
        tree_b.head_commit().await.expect("head"),
        Some(commit_b.id.clone())
    );

    // The person who asked is the co-author; loop is the author.
    let raw = setup_git(&work, &["cat-file", "commit", commit_a.id.as_str()]);
    assert!(raw.contains("\nauthor loop <loop@example.com>"), "{raw}");
    assert!(
        raw.ends_with(
            "Changed the first line.\n\nCo-authored-by: Grace Hopper <grace@example.com>\n"
        ),
        "{raw}"
    );

    let listed = repo.worktrees().await.expect("list");
    let branches: Vec<_> = listed.iter().map(|w| w.branch.as_deref()).collect();
    assert_eq!(branches, vec![Some("main"), Some("loop/a"), Some("loop/b")]);
    let found = repo.worktree(&a).await.expect("find").expect("listed");
    assert_eq!(found.path(), tree_a.path());
    assert!(repo.worktree(&work).await.expect("find").is_none());

    // A work tree with changes is not removed; a clean one is.
    std::fs::write(b.join("file.txt"), "dirty\n").expect("write");
    assert!(matches!(
        repo.remove_worktree(&b).await,
        Err(GitError::Failed { .. })
    ));
    repo.remove_worktree(&a).await.expect("remove");
    assert!(!a.exists());
    assert_eq!(repo.worktrees().await.expect("list").len(), 2);
}

/// What `/loop diff` and the idle sweep read: where a branch left its base, the work tree
/// with its uncommitted and untracked changes (the index untouched), and which commits exist
/// nowhere else.
#[tokio::test]
async fn a_branch_against_its_base_with_its_uncommitted_work() {
    let root = tempfile::tempdir().expect("tempdir");
    let work = new_repo(root.path(), &[("file.txt", b"one\n"), ("gone.txt", b"x\n")]);
    let repo = Repo::open(&work).await.expect("open").expect("a repo");
    let forked = repo.head_commit().await.expect("head").expect("a commit");
    let wt = root.path().join("trees/t");
    let tree = repo.add_worktree(&wt, "loop/t", "main").await.expect("add");
    std::fs::write(wt.join("file.txt"), "one\ntwo\n").expect("write");
    tree.commit_all("Two", &ada(), None)
        .await
        .expect("commit")
        .expect("a change");
    // The base moves on: the branch still compares with where it left.
    std::fs::write(work.join("other.txt"), "main\n").expect("write");
    setup_git(&work, &["add", "-A"]);
    setup_git(&work, &["commit", "--quiet", "-m", "main moves"]);
    let base = repo
        .merge_base("main", "loop/t")
        .await
        .expect("merge-base")
        .expect("shared history");
    assert_eq!(base, forked);
    assert_eq!(
        paths(&repo.diff_stat(base.as_str(), "loop/t").await.expect("stat")),
        vec![("file.txt", Some(1), Some(0))]
    );

    // Uncommitted work: a change, a deletion, a new file; an ignored file is left out.
    std::fs::write(wt.join("file.txt"), "one\ntwo\nthree\n").expect("write");
    std::fs::remove_file(wt.join("gone.txt")).expect("rm");
    std::fs::write(wt.join("new.txt"), "new\n").expect("write");
    std::fs::write(wt.join(".gitignore"), "*.log\n").expect("write");
    std::fs::write(wt.join("debug.log"), "noise\n").expect("write");
    let status_before = setup_git(&wt, &["status", "--porcelain"]);
    let snapshot = tree.snapshot().await.expect("snapshot");
    let stat = tree
        .diff_stat(base.as_str(), snapshot.as_str())
        .await
        .expect("stat");
    assert_eq!(
        paths(&stat),
        vec![
            (".gitignore", Some(1), Some(0)),
            ("file.txt", Some(2), Some(0)),
            ("gone.txt", Some(0), Some(1)),
            ("new.txt", Some(1), Some(0)),
        ]
    );
    let patch = tree
        .diff_text(base.as_str(), snapshot.as_str())
        .await
        .expect("patch");
    assert!(
        patch.contains("+three") && patch.contains("+new"),
        "{patch}"
    );
    assert_eq!(
        setup_git(&wt, &["status", "--porcelain"]),
        status_before,
        "the index is untouched"
    );
    let admin: Vec<_> = std::fs::read_dir(work.join(".git/worktrees/t"))
        .expect("admin dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("loop-"))
        .collect();
    assert!(admin.is_empty(), "left behind: {admin:?}");

    // Without a remote, what the base lacks is unpushed; merged into the base, nothing is.
    assert_eq!(
        repo.unpushed_commits("loop/t", &["main"])
            .await
            .expect("count"),
        1
    );
    let unrelated = repo.resolve("main").await.expect("main");
    setup_git(&work, &["merge", "--quiet", "--no-edit", "loop/t"]);
    assert_eq!(
        repo.unpushed_commits("loop/t", &["main"])
            .await
            .expect("count"),
        0
    );
    // With a remote: what a remote-tracking branch has is pushed, whatever the base lacks.
    setup_git(&work, &["reset", "--quiet", "--hard", unrelated.as_str()]);
    let bare = root.path().join("remote.git");
    setup_git(root.path(), &["init", "--quiet", "--bare", "remote.git"]);
    setup_git(
        &work,
        &["remote", "add", "origin", &bare.display().to_string()],
    );
    assert_eq!(
        repo.unpushed_commits("loop/t", &["main"])
            .await
            .expect("count"),
        1
    );
    // A commit known to be on the remote (loop's own push records it) counts as pushed.
    let pushed = repo.resolve("loop/t").await.expect("head");
    assert_eq!(
        repo.unpushed_commits("loop/t", &["main", pushed.as_str()])
            .await
            .expect("count"),
        0
    );
    setup_git(&work, &["push", "--quiet", "origin", "loop/t"]);
    assert_eq!(
        repo.unpushed_commits("loop/t", &["main"])
            .await
            .expect("count"),
        0
    );

    // Histories that never met have no merge base.
    setup_git(&work, &["checkout", "--quiet", "--orphan", "island"]);
    setup_git(&work, &["commit", "--quiet", "-m", "alone"]);
    assert_eq!(
        repo.merge_base("island", "loop/t")
            .await
            .expect("merge-base"),
        None
    );
}

#[tokio::test]
async fn open_finds_no_repository_outside_a_work_tree() {
    let root = tempfile::tempdir().expect("tempdir");
    assert!(Repo::open(root.path()).await.expect("open").is_none());
    let work = new_repo(root.path(), &[("f", b"x")]);
    assert!(
        Repo::open(&work.join(".git"))
            .await
            .expect("open")
            .is_none()
    );
    assert!(matches!(
        Repo::open(&root.path().join("missing")).await,
        Err(GitError::Io { .. })
    ));
}

#[tokio::test]
async fn options_never_reach_git_as_revisions_or_branches() {
    let root = tempfile::tempdir().expect("tempdir");
    let work = new_repo(root.path(), &[("f", b"x")]);
    let repo = Repo::open(&work).await.expect("open").expect("a repo");
    let out = root.path().join("out");
    let rev = format!("--output={}", out.display());
    assert!(matches!(
        repo.resolve(&rev).await,
        Err(GitError::InvalidArgument { .. })
    ));
    assert!(matches!(
        repo.add_worktree(&root.path().join("t"), "-f", "main")
            .await,
        Err(GitError::InvalidArgument { .. })
    ));
    assert!(matches!(
        repo.resolve("no-such-branch").await,
        Err(GitError::Failed { .. })
    ));
    assert!(!out.exists());
}

/// Opened from inside a linked worktree, the repository is that work tree.
#[tokio::test]
async fn open_inside_a_linked_worktree() {
    let root = tempfile::tempdir().expect("tempdir");
    let work = new_repo(root.path(), &[("f", b"x")]);
    let repo = Repo::open(&work).await.expect("open").expect("a repo");
    let wt = root.path().join("wt");
    repo.add_worktree(&wt, "loop/x-1", "HEAD")
        .await
        .expect("add");
    std::fs::create_dir(wt.join("deep")).expect("mkdir");
    let linked = Repo::open(&wt.join("deep"))
        .await
        .expect("open")
        .expect("a repo");
    assert_eq!(
        linked.path(),
        std::fs::canonicalize(&wt).expect("canonical")
    );
    assert_eq!(
        linked.current_branch().await.expect("branch").as_deref(),
        Some("loop/x-1")
    );
    assert_eq!(linked.worktrees().await.expect("list").len(), 2);
}

/// A repository owned by someone else (the agent's uid) is one git refuses without
/// `safe.directory`; loop names exactly the repository it opened. Needs root to chown.
#[tokio::test]
async fn a_repository_owned_by_another_user_is_opened_as_the_one_in_hand() {
    use std::os::unix::fs::MetadataExt;
    let root = tempfile::tempdir().expect("tempdir");
    if std::fs::metadata(root.path()).expect("stat").uid() != 0 {
        eprintln!("skipped: needs root to give the repository another owner");
        return;
    }
    let work = new_repo(root.path(), &[("f", b"x")]);
    std::fs::create_dir(work.join("sub")).expect("mkdir");
    let chowned = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&work)
        .status()
        .expect("chown");
    assert!(chowned.success());
    let plain = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(work.join("sub"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git");
    assert!(
        String::from_utf8_lossy(&plain.stderr).contains("dubious ownership"),
        "premise: git refuses the repository on its own"
    );

    let repo = Repo::open(&work.join("sub"))
        .await
        .expect("open")
        .expect("a repo");
    let tree = repo
        .add_worktree(&root.path().join("wt"), "loop/owned-1", "main")
        .await
        .expect("add");
    std::fs::write(tree.path().join("g"), "y").expect("write");
    assert!(
        tree.commit_all("Add g", &ada(), None)
            .await
            .expect("commit")
            .is_some()
    );
    std::fs::write(work.join("h"), "z").expect("write");
    assert!(repo.checkout().status_changed().await.expect("status"));
    // Git ran as the repository's owner (loop is root here): what it wrote is theirs, so the
    // agent, running as that owner, can go on writing it.
    for written in [
        tree.path().join("f"),
        work.join(".git/refs/heads/loop/owned-1"),
        work.join(".git/worktrees/wt/HEAD"),
    ] {
        assert_eq!(
            std::fs::metadata(&written).expect("written").uid(),
            65534,
            "{}",
            written.display()
        );
    }
    // A worktree root the owner cannot reach is refused with what to do about it.
    let closed = root.path().join("closed");
    std::fs::create_dir(&closed).expect("mkdir");
    std::fs::set_permissions(&closed, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod");
    let refused = repo
        .add_worktree(&closed.join("repo/wt"), "loop/owned-2", "main")
        .await
        .expect_err("unreachable");
    assert!(
        refused.to_string().contains("git.worktrees_dir"),
        "{refused}"
    );
}

/// Git echoes what it was given; a URL with a token in it never reaches the error.
#[tokio::test]
async fn errors_never_carry_url_credentials() {
    let root = tempfile::tempdir().expect("tempdir");
    let work = new_repo(root.path(), &[("f", b"x")]);
    let repo = Repo::open(&work).await.expect("open").expect("a repo");
    let err = repo
        .resolve("https://user:s3cret@example.com/r.git")
        .await
        .expect_err("not a revision");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("https://***@example.com"), "{text}");
}

/// The agent sets `core.worktree` to `/` (here: the temp dir above the repository): `add -A`
/// would then stage the host's files. Pointed beside the repository instead, the directory is
/// no longer in a work tree at all.
#[tokio::test]
async fn a_work_tree_moved_by_config_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let work = new_repo(root.path(), &[("f", b"x")]);
    setup_git(
        &work,
        &[
            "config",
            "core.worktree",
            &root.path().display().to_string(),
        ],
    );
    assert!(matches!(
        Repo::open(&work).await,
        Err(GitError::Layout { .. })
    ));
    let beside = root.path().join("beside");
    std::fs::create_dir(&beside).expect("mkdir");
    setup_git(
        &work,
        &["config", "core.worktree", &beside.display().to_string()],
    );
    assert!(Repo::open(&work).await.expect("open").is_none());
}

// --- The hostile repository --------------------------------------------------------------------

/// Writes an executable script at `path` that records `role` in `markers` when it runs, and
/// passes stdin through (so a filter that runs still "works").
fn marker_script(path: &Path, markers: &Path, role: &str, pass_through: bool) {
    let body = if pass_through { "cat\n" } else { "exit 0\n" };
    let script = format!(
        "#!/bin/sh\necho \"$0 $*\" > '{}/{role}'\n{body}",
        markers.display()
    );
    std::fs::write(path, script).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Hooks git runs during the operations the crate performs.
const HOOKS: &[&str] = &[
    "pre-commit",
    "prepare-commit-msg",
    "commit-msg",
    "post-commit",
    "post-checkout",
    "reference-transaction",
    "post-index-change",
    "pre-auto-gc",
];

/// Turns `work` hostile: every way a repository can make git run a program, each one
/// leaving a marker in `markers` when it runs.
fn make_hostile(work: &Path, evil: &Path, markers: &Path) {
    std::fs::create_dir_all(markers).expect("mkdir");
    let git_dir = work.join(".git");
    let script = |role: &str, pass_through: bool| {
        let path = evil.join(role);
        marker_script(&path, markers, role, pass_through);
        path.display().to_string()
    };
    let hooks_dir = evil.join("hooks");
    std::fs::create_dir_all(&hooks_dir).expect("mkdir");
    std::fs::create_dir_all(git_dir.join("hooks")).expect("mkdir");
    for hook in HOOKS {
        marker_script(
            &hooks_dir.join(hook),
            markers,
            &format!("hookspath-{hook}"),
            false,
        );
        marker_script(
            &git_dir.join("hooks").join(hook),
            markers,
            &format!("hooks-{hook}"),
            false,
        );
    }

    let config = format!(
        "[core]\n\
         \thooksPath = {hooks}\n\
         \tfsmonitor = {fsmonitor}\n\
         \tpager = {pager}\n\
         \tsshCommand = {ssh}\n\
         \teditor = {editor}\n\
         \taskPass = {askpass}\n\
         [filter \"evil\"]\n\
         \tclean = {clean}\n\
         \tsmudge = {smudge}\n\
         \trequired = true\n\
         [diff \"evil\"]\n\
         \ttextconv = {textconv}\n\
         \tcommand = {diffcmd}\n\
         [diff]\n\
         \texternal = {external}\n\
         [credential]\n\
         \thelper = !{credential}\n\
         [gpg]\n\
         \tprogram = {gpg}\n\
         [commit]\n\
         \tgpgSign = true\n\
         [pager]\n\
         \tdiff = {pager}\n\
         [trailer \"co\"]\n\
         \tcmd = {trailer}\n\
         [include]\n\
         \tpath = evil.inc\n\
         [includeIf \"onbranch:loop/**\"]\n\
         \tpath = {branch_inc}\n",
        hooks = hooks_dir.display(),
        fsmonitor = script("fsmonitor", false),
        pager = script("pager", true),
        ssh = script("ssh", false),
        editor = script("editor", false),
        askpass = script("askpass", false),
        clean = script("filter-evil-clean", true),
        smudge = script("filter-evil-smudge", true),
        textconv = script("textconv", true),
        diffcmd = script("diff-command", false),
        external = script("diff-external", false),
        credential = script("credential", false),
        gpg = script("gpg", false),
        trailer = script("trailer", false),
        branch_inc = evil.join("branch.inc").display(),
    );
    let mut existing = std::fs::read_to_string(git_dir.join("config")).expect("read config");
    existing.push_str(&config);
    std::fs::write(git_dir.join("config"), existing).expect("write config");

    // An include that adds a second filter, and a conditional one that adds a third only on
    // loop's branches (so it is not active where the repository is opened).
    std::fs::write(
        git_dir.join("evil.inc"),
        format!(
            "[filter \"inc\"]\n\tclean = {}\n\tsmudge = {}\n\trequired = true\n\
             [core]\n\tfsmonitor = {}\n",
            script("filter-inc-clean", true),
            script("filter-inc-smudge", true),
            script("fsmonitor-inc", false),
        ),
    )
    .expect("write include");
    std::fs::write(
        evil.join("branch.inc"),
        format!(
            "[filter \"Branch=y\"]\n\tclean = {}\n\tsmudge = {}\n\tprocess = {}\n\trequired = true\n",
            script("filter-branch-clean", true),
            script("filter-branch-smudge", true),
            script("filter-branch-process", false),
        ),
    )
    .expect("write branch include");

    std::fs::write(
        work.join(".gitattributes"),
        "* filter=evil diff=evil\n*.txt filter=inc diff=evil\n",
    )
    .expect("write attributes");
    std::fs::create_dir_all(git_dir.join("info")).expect("mkdir");
    std::fs::write(
        git_dir.join("info/attributes"),
        "*.md filter=Branch=y diff=evil\n",
    )
    .expect("write info attributes");
}

fn markers_in(markers: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(markers)
        .expect("read markers")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    found
}

/// Every call of the API, on a repository that tries every way to run a program on the host:
/// none of them runs. The markers are checked before the calls' results, so a hardening gap
/// shows as the list of programs that ran, even when one of them then broke a call.
#[tokio::test]
async fn a_hostile_repository_runs_nothing_on_the_host() {
    let root = tempfile::tempdir().expect("tempdir");
    let work = new_repo(
        root.path(),
        &[("a.txt", b"a\n"), ("b.md", b"b\n"), ("c.rs", b"c\n")],
    );
    let evil = root.path().join("evil");
    let markers = root.path().join("markers");
    std::fs::create_dir_all(&evil).expect("mkdir");
    make_hostile(&work, &evil, &markers);
    // The attributes themselves are part of the agent's work in the main checkout.
    std::fs::write(work.join("c.rs"), "c changed\n").expect("write");

    let outcome = use_every_call(&work, &root.path().join("wt")).await;
    assert_eq!(markers_in(&markers), Vec::<String>::new(), "{outcome:?}");
    outcome.expect("every call succeeds");
}

async fn use_every_call(work: &Path, wt: &Path) -> Result<(), GitError> {
    let missing = |what: &str| GitError::Output {
        command: "test".into(),
        detail: format!("no {what}"),
    };
    let repo = Repo::open(work).await?.ok_or_else(|| missing("repo"))?;
    assert_eq!(repo.current_branch().await?.as_deref(), Some("main"));
    let main_commit = repo
        .checkout()
        .commit_all("Main checkout change", &ada(), Some(&grace()))
        .await?
        .ok_or_else(|| missing("commit in main"))?;

    let tree = repo.add_worktree(wt, "loop/evil-a1b2", "main").await?;
    assert_eq!(
        std::fs::read_to_string(wt.join("a.txt")).expect("read"),
        "a\n"
    );
    for (name, content) in [
        ("a.txt", "a2\n"),
        ("b.md", "b2\n"),
        ("c.rs", "c2\n"),
        ("d.txt", "d\n"),
    ] {
        std::fs::write(wt.join(name), content).expect("write");
    }
    assert!(tree.status_changed().await?);
    let commit = tree
        .commit_all("Change everything", &ada(), Some(&grace()))
        .await?
        .ok_or_else(|| missing("commit in worktree"))?;
    let stat = repo
        .diff_stat(main_commit.id.as_str(), commit.id.as_str())
        .await?;
    assert_eq!(stat.files.len(), 4, "{stat:?}");
    let patch = tree.diff_text("main", "HEAD").await?;
    assert!(patch.contains("+a2"), "{patch}");
    assert_eq!(tree.commits_ahead("main", "HEAD").await?, 1);
    let base = tree
        .merge_base("main", "HEAD")
        .await?
        .ok_or_else(|| missing("merge base"))?;
    assert_eq!(repo.unpushed_commits("loop/evil-a1b2", &["main"]).await?, 1);
    // Staging into a copy of the index runs the clean filters, if anything does.
    std::fs::write(wt.join("c.rs"), "c3\n").expect("write");
    std::fs::write(wt.join("e.md"), "e\n").expect("write");
    let snapshot = tree.snapshot().await?;
    let stat = tree.diff_stat(base.as_str(), snapshot.as_str()).await?;
    assert_eq!(stat.files.len(), 5, "{stat:?}");
    assert!(
        tree.diff_text(base.as_str(), snapshot.as_str())
            .await?
            .contains("+c3")
    );
    std::fs::remove_file(wt.join("e.md")).expect("rm");
    std::fs::write(wt.join("c.rs"), "c2\n").expect("write");
    assert_eq!(repo.worktrees().await?.len(), 2);
    repo.remove_worktree(wt).await?;
    Ok(())
}

/// The repository turns hostile after loop has used it (the agent edits `.git/config`
/// between two turns): the config listings loop keeps between calls are taken again, and the
/// new drivers are as inert as the first ones.
#[tokio::test]
async fn a_repository_turned_hostile_after_use_runs_nothing_either() {
    let root = tempfile::tempdir().expect("tempdir");
    let work = new_repo(root.path(), &[("a.txt", b"a\n"), ("b.md", b"b\n")]);
    let repo = Repo::open(&work).await.expect("open").expect("repo");
    let tree = repo
        .add_worktree(&root.path().join("wt"), "loop/later-a1b2", "main")
        .await
        .expect("worktree");
    std::fs::write(tree.path().join("a.txt"), "a2\n").expect("write");
    tree.commit_all("Before", &ada(), None)
        .await
        .expect("commit")
        .expect("a commit");

    let evil = root.path().join("evil");
    let markers = root.path().join("markers");
    std::fs::create_dir_all(&evil).expect("mkdir");
    make_hostile(&work, &evil, &markers);
    std::fs::write(
        tree.path().join(".gitattributes"),
        "* filter=evil diff=evil\n",
    )
    .expect("attributes");
    std::fs::write(tree.path().join("b.md"), "b2\n").expect("write");
    let outcome = tree.commit_all("After", &ada(), None).await;
    let stat = tree.diff_stat("main", "HEAD").await;
    assert_eq!(
        markers_in(&markers),
        Vec::<String>::new(),
        "{outcome:?} {stat:?}"
    );
    outcome.expect("commit").expect("a commit");
}

/// The side-by-side view pairs `--numstat -z` (exact paths) with the patch's files by
/// position: they line up for renames, binaries, deletions and names git must quote.
#[tokio::test]
async fn the_patch_and_its_numstat_list_files_in_one_order() {
    let root = tempfile::tempdir().expect("tempdir");
    let long: String = (0..40).map(|i| format!("line {i}\n")).collect();
    let work = new_repo(
        root.path(),
        &[
            ("a.txt", b"a\n"),
            ("moved-from.txt", long.as_bytes()),
            ("gone.txt", b"bye\n"),
        ],
    );
    let repo = Repo::open(&work).await.expect("open").expect("a repo");
    let base = repo.head_commit().await.expect("head").expect("a commit");
    std::fs::write(work.join("a.txt"), "a\nb\n").expect("write");
    std::fs::rename(work.join("moved-from.txt"), work.join("moved-to.txt")).expect("mv");
    std::fs::remove_file(work.join("gone.txt")).expect("rm");
    std::fs::write(work.join("logo.png"), b"\x89PNG\r\n\x1a\n\0\0\0binary").expect("write");
    std::fs::write(work.join("new\nline\"é.txt"), "hostile name\n").expect("write");
    std::fs::write(work.join("diff --git a"), "+++ b/x\n").expect("write");
    let snapshot = repo.checkout().snapshot().await.expect("snapshot");
    let stat = repo
        .checkout()
        .diff_stat(base.as_str(), snapshot.as_str())
        .await
        .expect("stat");
    let patch = repo
        .checkout()
        .diff_text(base.as_str(), snapshot.as_str())
        .await
        .expect("patch");
    let files = split_patch(&patch);
    assert_eq!(files.len(), stat.files.len(), "{patch}");
    for (file, patch) in stat.files.iter().zip(&files) {
        assert_eq!(file.is_binary(), patch.binary, "{file:?}");
        let added = patch
            .hunks
            .iter()
            .flat_map(|h| &h.lines)
            .filter(|l| l.kind == LineKind::Added)
            .count() as u64;
        if let Some(expected) = file.added {
            assert_eq!(added, expected, "{file:?}");
        }
    }
    let names: Vec<&str> = stat.files.iter().map(|f| f.path.as_str()).collect();
    assert!(names.contains(&"new\nline\"é.txt"), "{names:?}");
    assert!(names.contains(&"diff --git a"), "{names:?}");
    let renamed = stat
        .files
        .iter()
        .find(|f| f.path == "moved-to.txt")
        .expect("the rename");
    assert_eq!(renamed.renamed_from.as_deref(), Some("moved-from.txt"));
}
