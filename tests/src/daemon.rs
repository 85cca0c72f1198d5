//! A real `loop serve` process for end-to-end tests: its own LOOP_HOME, a config pointing the
//! agents at a fake model, and helpers to talk to it the way `loop run` does.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use loop_store::Store;

/// The `loop` binary under test: `$LOOP_BIN`, else the workspace's debug build.
pub fn loop_binary() -> PathBuf {
    if let Ok(path) = std::env::var("LOOP_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug/loop");
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build --workspace --bins`, as the README's test command does)",
        path.display()
    );
    path
}

/// A daemon process with its own home.
pub struct Daemon {
    pub home: PathBuf,
    pub loop_dir: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    daemon_id: Option<String>,
    /// A copy of `/etc/hosts` with extra names, bound over the original for this daemon.
    hosts_file: Option<PathBuf>,
    /// Extra environment of `loop serve` (e.g. `DOCKER_HOST` for a private engine).
    env: Vec<(String, String)>,
}

impl Daemon {
    /// Writes `config` (JSON text) and starts `loop serve`; returns once the API answers.
    pub async fn start(home: &Path, config: &str) -> Daemon {
        Daemon::start_with_hosts(home, config, &[]).await
    }

    /// [`Daemon::start`] with extra environment variables for `loop serve` (restarts too).
    pub async fn start_with_env(home: &Path, config: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_in(home, config, None, env).await
    }

    /// Like [`Daemon::start`], with `hosts` (address, name) added to what the daemon's
    /// resolver reads: it runs in a mount namespace of its own (`unshare`, needs root) where a
    /// copy of `/etc/hosts` with those lines is bound over the original. A name then resolves
    /// for the daemon alone as a DNS record would make it, without touching the machine.
    pub async fn start_with_hosts(home: &Path, config: &str, hosts: &[(&str, &str)]) -> Daemon {
        let hosts_file = (!hosts.is_empty()).then(|| {
            let mut text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            for (address, name) in hosts {
                text.push_str(&format!("\n{address} {name}\n"));
            }
            let path = home.join("hosts");
            std::fs::create_dir_all(home).expect("home");
            std::fs::write(&path, text).expect("hosts file");
            path
        });
        Daemon::start_in(home, config, hosts_file, &[]).await
    }

    async fn start_in(
        home: &Path,
        config: &str,
        hosts_file: Option<PathBuf>,
        env: &[(&str, &str)],
    ) -> Daemon {
        let loop_dir = home.join(".loop");
        std::fs::create_dir_all(&loop_dir).expect("loop dir");
        std::fs::write(loop_dir.join("config.json"), config).expect("config");
        let mut daemon = Daemon {
            home: home.to_path_buf(),
            loop_dir,
            child: None,
            log: home.join("serve.log"),
            daemon_id: None,
            hosts_file,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        daemon.spawn().await;
        daemon
    }

    async fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.loop_dir.join("api.addr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut command = match &self.hosts_file {
            None => Command::new(loop_binary()),
            Some(hosts) => {
                // `unshare` execs the shell, which execs loop: the child's pid stays loop's.
                let mut command = Command::new("unshare");
                command
                    .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                    .arg(r#"mount --bind "$0" /etc/hosts && exec "$@""#)
                    .arg(hosts)
                    .arg(loop_binary());
                command
            }
        };
        let child = command
            .arg("serve")
            .env("LOOP_HOME", &self.loop_dir)
            .env("HOME", &self.home)
            .env("RUST_LOG", "info,loop_daemon=debug,loop_store=debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn loop serve");
        self.child = Some(child);
        // Ready when the API answers /api/health.
        for _ in 0..200 {
            if let Some(addr) = self.addr()
                && reqwest::get(format!("http://{addr}/api/health"))
                    .await
                    .is_ok()
            {
                self.daemon_id = std::fs::read_to_string(self.loop_dir.join("daemon-id")).ok();
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("loop serve exited with {status}:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("loop serve did not become ready:\n{}", self.log_text());
    }

    /// The address the daemon wrote.
    pub fn addr(&self) -> Option<String> {
        std::fs::read_to_string(self.loop_dir.join("api.addr"))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// The process id of the running `loop serve`, e.g. to read its memory from `/proc`.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.loop_dir.join("admin.token"))
            .expect("admin token")
            .trim()
            .to_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr().expect("daemon address"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The file `loop serve` writes its log to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Runs the real `loop` CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(loop_binary())
            .args(args)
            .env("LOOP_HOME", &self.loop_dir)
            .env("HOME", &self.home)
            .output()
            .expect("run loop")
    }

    /// Logs in to the dashboard as `loop ui`'s link does; returns the session cookie's value
    /// (send it as `cookie: loop_ui=VALUE`).
    pub async fn log_in(&self) -> String {
        self.log_in_with(&["ui", "--no-open"]).await
    }

    /// Logs in as `loop ui --user ID`'s link does: with the chat rights of `id`.
    pub async fn log_in_as(&self, id: &str) -> String {
        self.log_in_with(&["ui", "--user", id, "--no-open"]).await
    }

    async fn log_in_with(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "{out:?}");
        let link = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let response = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
            .get(&link)
            .send()
            .await
            .expect("the login link");
        response
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .and_then(|v| v.strip_prefix("loop_ui="))
            .expect("the session cookie")
            .to_owned()
    }

    /// SIGKILL: no cleanup, no drain, exactly a crash.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running daemon");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        child.wait().expect("wait")
    }

    pub async fn restart(&mut self) {
        self.kill_9();
        self.spawn().await;
    }

    /// Posts a prompt to a local channel working in `project`, as `loop run --dir` does;
    /// returns its inbox id.
    pub async fn post_in(&self, channel: &str, project: &Path, text: &str) -> i64 {
        let response = reqwest::Client::new()
            .post(self.url("/api/local/messages"))
            .bearer_auth(self.token())
            .json(&serde_json::json!({"channel": channel, "text": text, "dir": project.display().to_string()}))
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 202);
        let accepted: loop_wire::api::MessageAccepted = response.json().await.expect("accepted");
        accepted.inbox_id.expect("a new message")
    }

    /// Waits for the run of a message to end; returns its answer (or its error).
    pub async fn answer(&self, inbox_id: i64, timeout: Duration) -> String {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            let state: loop_wire::api::MessageState = client
                .get(self.url(&format!("/api/local/messages/{inbox_id}")))
                .bearer_auth(self.token())
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("state");
            if let Some(status) = state.run_status.as_deref()
                && status != "running"
            {
                return state
                    .answer
                    .or(state.error)
                    .unwrap_or_else(|| format!("(run {status} without text)"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "message {inbox_id} got no answer in {timeout:?}\n--- daemon log ---\n{}",
            self.log_text()
        );
    }

    /// The daemon's status, as `loop status` reads it (`GET /api/status`).
    pub async fn status(&self) -> serde_json::Value {
        reqwest::Client::new()
            .get(self.url("/api/status"))
            .bearer_auth(self.token())
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json")
    }

    /// Waits for exactly one pending approval whose summary contains `needle`.
    pub async fn pending_approval(&self, needle: &str) -> loop_store::ApprovalRecord {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while tokio::time::Instant::now() < deadline {
            let pending: Vec<loop_store::ApprovalRecord> = client
                .get(self.url("/api/approvals"))
                .bearer_auth(self.token())
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("approvals");
            let mut matching: Vec<_> = pending
                .into_iter()
                .filter(|a| a.summary.contains(needle))
                .collect();
            if let Some(approval) = matching.pop() {
                assert!(matching.is_empty(), "one prompt per action");
                return approval;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "no approval for {needle:?} was asked\n--- daemon log ---\n{}",
            self.log_text()
        );
    }

    /// Answers approval `id` through the admin API (`allow_once`, `allow_session`, `deny`).
    pub async fn decide(&self, id: &str, decision: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.url(&format!("/api/approvals/{id}")))
            .bearer_auth(self.token())
            .json(&serde_json::json!({"decision": decision, "by": "e2e"}))
            .send()
            .await
            .expect("decide")
    }

    /// The daemon's id (`~/.loop/daemon-id`), which labels its containers.
    pub fn daemon_id(&self) -> Option<&str> {
        self.daemon_id.as_deref().map(str::trim)
    }

    /// The daemon's database, opened alongside it (SQLite WAL allows that).
    pub async fn store(&self) -> Store {
        let url = format!(
            "sqlite://{}?mode=rwc",
            self.loop_dir.join("loop.db").display()
        );
        Store::open(&url).await.expect("open the daemon's database")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill_9();
        if let Some(id) = &self.daemon_id {
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "docker ps -aq --filter label=loop-daemon={id} | xargs -r docker rm -f >/dev/null 2>&1"
                ))
                .status();
        }
    }
}

/// A config for a test daemon: loopback API on a free port, agents pointed at `model_port`.
pub fn test_config(model_port: u16, allowed_dir: &Path, extra: &str) -> String {
    format!(
        r#"{{
  "platforms": ["local"],
  "anthropic_api_key": "sk-test-not-a-real-key",
  "api_addr": "127.0.0.1:0",
  "container_image": "{image}",
  "container_keep_alive_sec": 0,
  "allowed_dirs": ["{allowed}"],
  "envs": {{"ANTHROPIC_BASE_URL": "http://host.docker.internal:{model_port}", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}},
  {extra}
}}"#,
        image = crate::support::test_image(),
        allowed = allowed_dir.display(),
    )
}

/// Polls until `check` passes or the deadline expires (then panics with the daemon log).
pub async fn eventually<F, Fut>(daemon: &Daemon, what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "timed out waiting for {what}\n--- daemon log ---\n{}",
        daemon.log_text()
    );
}
