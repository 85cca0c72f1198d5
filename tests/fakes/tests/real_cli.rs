//! Drives the real Claude Code CLI against the fake model: a Bash tool call, a Write, a
//! `--resume`, and the API errors whose wording loop relies on.
//!
//! Needs `LOOP_TEST_CLAUDE_BIN` (the `claude` binary, e.g.
//! `/var/cache/loop-ci/claude-host/node_modules/.bin/claude`). Without it the tests fail,
//! unless `LOOP_TEST_SKIP_UNAVAILABLE=1`, when they print a note and pass.
//!
//! The CLI refuses `--dangerously-skip-permissions` as root. When the tests run as root they
//! run the CLI as the unprivileged user `loop-test` (created with `useradd` if missing) through
//! `runuser`, with a throwaway HOME and work directory owned by that user; the binary must then
//! be readable and executable by that user (true for an npm install under /var/cache).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use loop_fakes::model::{FakeModel, Rule, Script, Step};
use serde_json::Value;
use tempfile::TempDir;

/// One CLI run takes 1-5 s here; the limit only stops a wedged CLI from stalling CI.
const RUN_LIMIT: Duration = Duration::from_secs(120);
const TEST_USER: &str = "loop-test";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Serialises `useradd` between tests running in parallel.
static USER_SETUP: Mutex<()> = Mutex::new(());

fn claude_bin() -> Option<PathBuf> {
    match std::env::var_os("LOOP_TEST_CLAUDE_BIN") {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ if std::env::var("LOOP_TEST_SKIP_UNAVAILABLE").as_deref() == Ok("1") => {
            eprintln!("skipped: LOOP_TEST_CLAUDE_BIN is not set (LOOP_TEST_SKIP_UNAVAILABLE=1)");
            None
        }
        _ => panic!(
            "LOOP_TEST_CLAUDE_BIN is not set: point it at the claude binary \
             (npm install --prefix DIR @anthropic-ai/claude-code; DIR/node_modules/.bin/claude), \
             or set LOOP_TEST_SKIP_UNAVAILABLE=1 to skip"
        ),
    }
}

/// Asks id(1) rather than calling geteuid, to keep unsafe code and libc out of this crate.
fn is_root() -> bool {
    lookup_id(&["-u"]) == Some(0)
}

/// The uid and gid of the unprivileged test user, creating it if needed.
fn test_user() -> (u32, u32) {
    let _guard = USER_SETUP.lock().unwrap_or_else(|e| e.into_inner());
    if lookup_id(&["-u", TEST_USER]).is_none() {
        let status = std::process::Command::new("useradd")
            .args([
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                TEST_USER,
            ])
            .env("PATH", PATH)
            .status()
            .expect("run useradd");
        assert!(status.success(), "useradd {TEST_USER} failed: {status}");
    }
    let uid = lookup_id(&["-u", TEST_USER]).expect("uid of the test user");
    let gid = lookup_id(&["-g", TEST_USER]).expect("gid of the test user");
    (uid, gid)
}

fn lookup_id(args: &[&str]) -> Option<u32> {
    let output = std::process::Command::new("id")
        .args(args)
        .env("PATH", PATH)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

/// A HOME and a work directory for CLI runs, owned by whoever runs the CLI. Sessions live in
/// HOME/.claude, so `--resume` works across runs of one `Sandbox`.
struct Sandbox {
    claude: PathBuf,
    /// Keeps the directories alive; removed on drop (root can remove the test user's files).
    root: TempDir,
    run_as: Option<(u32, u32)>,
}

/// What one CLI run printed.
struct Run {
    events: Vec<Value>,
    stderr: String,
}

impl Run {
    fn result(&self) -> &Value {
        self.events
            .iter()
            .find(|e| e["type"] == "result")
            .unwrap_or_else(|| panic!("no result event; stderr: {}", self.stderr))
    }

    fn session_id(&self) -> String {
        self.result()["session_id"]
            .as_str()
            .expect("session_id")
            .to_owned()
    }
}

impl Sandbox {
    fn new(claude: PathBuf) -> Sandbox {
        let root = tempfile::Builder::new()
            .prefix("loop-fakes-cli-")
            .tempdir()
            .expect("temp dir");
        let run_as = is_root().then(test_user);
        for dir in [
            root.path().to_owned(),
            root.path().join("home"),
            root.path().join("work"),
        ] {
            std::fs::create_dir_all(&dir).expect("create dir");
            if let Some((uid, gid)) = run_as {
                std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown");
            }
        }
        Sandbox {
            claude,
            root,
            run_as,
        }
    }

    fn work(&self) -> PathBuf {
        self.root.path().join("work")
    }

    async fn run(&self, model: &FakeModel, args: &[&str]) -> Run {
        let home = self.root.path().join("home");
        let env = [
            ("PATH", PATH.to_owned()),
            ("HOME", home.display().to_string()),
            ("ANTHROPIC_BASE_URL", model.url()),
            ("ANTHROPIC_API_KEY", "test-key".to_owned()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_owned()),
            ("DISABLE_AUTOUPDATER", "1".to_owned()),
            // Errors are the point of some tests: do not spend time retrying them.
            ("CLAUDE_CODE_MAX_RETRIES", "0".to_owned()),
        ];
        let cli_args = [
            "--print",
            "--output-format",
            "stream-json",
            "--verbose",
            "--dangerously-skip-permissions",
        ];
        let mut command = if self.run_as.is_some() {
            // runuser resets HOME and friends, so the environment is passed through env(1).
            let mut command = tokio::process::Command::new("runuser");
            command.args(["-u", TEST_USER, "--", "env"]);
            command.args(env.iter().map(|(k, v)| format!("{k}={v}")));
            command.arg(&self.claude);
            command
        } else {
            let mut command = tokio::process::Command::new(&self.claude);
            command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
            command
        };
        command
            .args(cli_args)
            .args(args)
            .current_dir(self.work())
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(RUN_LIMIT, command.output())
            .await
            .expect("the CLI finishes in time")
            .expect("the CLI starts");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let events = stdout
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).expect("stream-json line"))
            .collect();
        Run {
            events,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

#[tokio::test]
async fn bash_write_and_resume_through_the_real_cli() {
    let Some(claude) = claude_bin() else { return };
    let sandbox = Sandbox::new(claude);
    let note: PathBuf = sandbox.work().join("note.txt");
    let script = Script::new()
        .rule(
            Rule::contains("run the probe")
                .then(Step::bash("echo PROBE-$((6*7))"))
                .then(Step::text("bash said: {{last_tool_result}}")),
        )
        .rule(
            Rule::contains("write the file")
                .then(Step::write(
                    &note.display().to_string(),
                    "written for: {{prompt}}\n",
                ))
                .then(Step::text("wrote it")),
        )
        .with_usage(1000, 50);
    let model = FakeModel::start(script).await.expect("start fake model");

    let first = sandbox.run(&model, &["please run the probe"]).await;
    let result = first.result();
    assert_eq!(result["is_error"], false, "{result}");
    assert_eq!(text(&result["result"]), "bash said: PROBE-42");
    assert_eq!(result["num_turns"], 2);
    assert_eq!(
        result["usage"]["input_tokens"], 2000,
        "usage is summed over both requests"
    );
    assert!(
        first
            .events
            .iter()
            .any(|e| e["type"] == "system" && e["subtype"] == "init")
    );

    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    let second = requests[1].conversation.as_ref().expect("conversation");
    assert_eq!(second.step, 1);
    assert_eq!(second.last_tool_result.as_deref(), Some("PROBE-42"));
    assert_eq!(
        requests[0].headers.get("x-api-key").map(String::as_str),
        Some("test-key")
    );

    let session = first.session_id();
    let resumed = sandbox
        .run(&model, &["--resume", &session, "now write the file"])
        .await;
    let result = resumed.result();
    assert_eq!(result["is_error"], false, "{result}");
    assert_eq!(text(&result["result"]), "wrote it");
    assert_eq!(resumed.session_id(), session);
    assert_eq!(
        std::fs::read_to_string(&note).expect("the Write tool created the file"),
        "written for: now write the file\n"
    );

    let requests = model.requests();
    assert_eq!(requests.len(), 4);
    assert!(
        requests[2].body_contains("PROBE-42"),
        "the resumed request replays the earlier tool result"
    );
    assert_eq!(requests[2].conversation.as_ref().map(|c| c.step), Some(0));
    model.shutdown().await;
}

#[tokio::test]
async fn api_errors_as_the_cli_reports_them() {
    let Some(claude) = claude_bin() else { return };
    let sandbox = Sandbox::new(claude);
    let model = FakeModel::start(
        Script::new()
            .rule(Rule::contains("too long").then(Step::prompt_too_long()))
            .rule(Rule::contains("busy").then(Step::overloaded())),
    )
    .await
    .expect("start fake model");

    // loop detects an over-long context from this result; pin the CLI's wording.
    let too_long = sandbox.run(&model, &["this is too long"]).await;
    let result = too_long.result();
    assert_eq!(result["is_error"], true, "{result}");
    assert_eq!(result["api_error_status"], 400);
    assert_eq!(result["terminal_reason"], "prompt_too_long");
    assert!(
        text(&result["result"]).starts_with("Prompt is too long"),
        "{result}"
    );

    let busy = sandbox.run(&model, &["busy now"]).await;
    let result = busy.result();
    assert_eq!(result["is_error"], true, "{result}");
    assert_eq!(result["api_error_status"], 529);
    assert!(
        text(&result["result"]).starts_with("API Error: 529 Overloaded"),
        "{result}"
    );
    model.shutdown().await;
}
