//! The container rules of the Go Loop, case by case.

use super::*;

struct Fixture {
    dir: tempfile::TempDir,
    settings: ContainerSettings,
    target: ChannelTarget,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home/alice");
        let work = dir.path().join("projects/my-project");
        std::fs::create_dir_all(&home).expect("home");
        std::fs::create_dir_all(&work).expect("work");
        let settings = ContainerSettings {
            image: "loop-agent:latest".into(),
            memory_mb: 1024,
            cpus: 1.0,
            timeout: Duration::from_secs(3600),
            runtime: None,
            mounts: Vec::new(),
            copy_files: vec!["~/.claude.json".into()],
            envs: BTreeMap::new(),
            extra_dirs: Vec::new(),
            mcp_servers: BTreeMap::new(),
            keep_mcp_configs: false,
            memory_enabled: false,
            api_url: "http://host.docker.internal:8222".into(),
            auth: Auth::ApiKey("sk-test".into()),
            claude_bin: "claude".into(),
            model: None,
            agent: AgentUser {
                name: "alice".into(),
                uid: 1234,
                gid: 1234,
                home: home.clone(),
            },
            timezone: "Europe/Bucharest".into(),
            host_proxy_env: BTreeMap::new(),
            git_excludes_file: None,
            network: None,
            daemon_id: "d1".into(),
            sessions_dir: None,
            gate: None,
            docker_proxy: None,
            protected_dirs: vec![home.join(".loop")],
            run_dir: dir.path().join("run"),
            api_token: None,
            setup: Vec::new(),
            project_env: BTreeMap::new(),
        };
        let target = ChannelTarget {
            channel_id: "C123".into(),
            work_dir: work,
            custom_dir: true,
            parent_dir: None,
            git_common_dir: None,
            author_id: Some("U1".into()),
        };
        Fixture {
            dir,
            settings,
            target,
        }
    }

    fn home(&self) -> PathBuf {
        self.settings.agent.home.clone()
    }

    fn plan(&self) -> ContainerPlan {
        plan_container(
            &self.settings,
            &self.target,
            ContainerKind::Agent,
            &ClaudeInvocation::default(),
        )
    }
}

fn env_of<'a>(plan: &'a ContainerPlan, key: &str) -> Option<&'a str> {
    plan.env
        .iter()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
}

#[test]
fn labels_and_name() {
    let fx = Fixture::new();
    let plan = fx.plan();
    assert!(plan.name.starts_with("loop-my-project-"), "{}", plan.name);
    assert_eq!(plan.labels["app"], "loop-agent");
    assert_eq!(plan.labels["loop-type"], "agent");
    assert_eq!(plan.labels["loop-channel"], "C123");
}

#[test]
fn base_env() {
    let fx = Fixture::new();
    let plan = fx.plan();
    let home = fx.home().display().to_string();
    assert_eq!(env_of(&plan, "CHANNEL_ID"), Some("C123"));
    assert_eq!(
        env_of(&plan, "API_URL"),
        Some("http://host.docker.internal:8222")
    );
    assert_eq!(env_of(&plan, "HOME"), Some(home.as_str()));
    assert_eq!(env_of(&plan, "HOST_USER"), Some("alice"));
    assert_eq!(env_of(&plan, "TZ"), Some("Europe/Bucharest"));
    assert!(
        env_of(&plan, "PATH")
            .expect("PATH")
            .starts_with(&format!("{home}/.local/bin:{home}/bin:{home}/go/bin:"))
    );
    assert_eq!(env_of(&plan, "ANTHROPIC_API_KEY"), Some("sk-test"));
    assert_eq!(env_of(&plan, "CLAUDE_CODE_OAUTH_TOKEN"), None);
    assert_eq!(env_of(&plan, "LOOP_GATE_ENABLED"), None);
}

#[test]
fn oauth_wins_and_exactly_one_credential_is_set() {
    assert_eq!(
        Auth::pick(Some("o"), Some("k")),
        Auth::OAuthToken("o".into())
    );
    assert_eq!(Auth::pick(Some(""), Some("k")), Auth::ApiKey("k".into()));
    assert_eq!(Auth::pick(None, None), Auth::None);
    let mut fx = Fixture::new();
    fx.settings.auth = Auth::pick(Some("oauth"), Some("key"));
    let plan = fx.plan();
    assert_eq!(env_of(&plan, "CLAUDE_CODE_OAUTH_TOKEN"), Some("oauth"));
    assert_eq!(env_of(&plan, "ANTHROPIC_API_KEY"), None);
    assert_eq!(format!("{:?}", fx.settings.auth), "OAuthToken([REDACTED])");
}

#[test]
fn proxies_are_rewritten_and_no_proxy_includes_the_host() {
    let host: BTreeMap<String, String> = [
        ("HTTP_PROXY", "http://localhost:3128"),
        ("https_proxy", "http://127.0.0.1:3129"),
        ("HTTPS_PROXY", ":8080"),
        ("NO_PROXY", "example.com"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let env = proxy_env(&host, "http://host.docker.internal:8222");
    assert!(
        env.contains(&"HTTP_PROXY=http://host.docker.internal:3128".to_owned()),
        "{env:?}"
    );
    assert!(env.contains(&"https_proxy=http://host.docker.internal:3129".to_owned()));
    assert!(env.contains(&"HTTPS_PROXY=http://host.docker.internal:8080".to_owned()));
    assert!(env.contains(&"NO_PROXY=example.com,host.docker.internal".to_owned()));
    assert!(env.contains(&"no_proxy=host.docker.internal".to_owned()));
    assert!(
        proxy_env(&BTreeMap::new(), "http://host.docker.internal:8222").is_empty(),
        "no proxy, no NO_PROXY"
    );
    // With egress control the API is on the internal network's gateway, and the host alias
    // is reached through the daemon's proxy like any other host.
    let egress: BTreeMap<String, String> = [
        ("HTTPS_PROXY", "http://172.18.0.1:4100"),
        ("NO_PROXY", "172.18.0.1,localhost,127.0.0.1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let env = proxy_env(&egress, "http://172.18.0.1:8222");
    assert!(
        env.contains(&"NO_PROXY=172.18.0.1,localhost,127.0.0.1".to_owned()),
        "{env:?}"
    );
    assert!(!env.iter().any(|e| e.contains(HOST_ALIAS)), "{env:?}");
}

#[test]
fn custom_envs_expand_tilde_and_stringify() {
    let mut fx = Fixture::new();
    fx.settings.envs = [
        ("A".to_owned(), json!("~/x")),
        ("B".to_owned(), json!(42)),
        ("C".to_owned(), json!(true)),
        ("D".to_owned(), json!(1.5)),
        ("E".to_owned(), json!("plain")),
    ]
    .into_iter()
    .collect();
    let plan = fx.plan();
    let home = fx.home().display().to_string();
    assert_eq!(env_of(&plan, "A"), Some(format!("{home}/x").as_str()));
    assert_eq!(env_of(&plan, "B"), Some("42"));
    assert_eq!(env_of(&plan, "C"), Some("true"));
    assert_eq!(env_of(&plan, "D"), Some("1.5"));
    assert_eq!(env_of(&plan, "E"), Some("plain"));
}

#[test]
fn mounts_named_volumes_host_paths_and_missing_paths() {
    let mut fx = Fixture::new();
    let home = fx.home();
    std::fs::create_dir_all(home.join(".ssh")).expect("ssh");
    fx.settings.mounts = vec![
        "loop-npmcache:~/.npm".into(),
        "loop-gocache:/go".into(),
        "~/.ssh:~/.ssh:ro".into(),
        "~/.missing:~/.missing:ro".into(),
    ];
    let plan = fx.plan();
    let h = home.display().to_string();
    assert!(
        plan.binds.contains(&format!("loop-npmcache:{h}/.npm")),
        "{:?}",
        plan.binds
    );
    assert!(plan.binds.contains(&"loop-gocache:/go".to_owned()));
    assert!(plan.binds.contains(&format!("{h}/.ssh:{h}/.ssh:ro")));
    assert!(
        !plan.binds.iter().any(|b| b.contains(".missing")),
        "missing host path skipped"
    );
    let work = fx.target.work_dir.display().to_string();
    assert!(
        plan.binds.contains(&format!("{work}:{work}")),
        "work dir at its own path"
    );
    let chown = env_of(&plan, "CHOWN_PATHS").expect("CHOWN_PATHS");
    assert!(
        chown.split(':').any(|p| p == format!("{h}/.npm")),
        "{chown}"
    );
    assert!(chown.split(':').any(|p| p == "/go"), "{chown}");
}

#[test]
fn worktree_parent_is_mounted_instead_of_the_worktree() {
    let mut fx = Fixture::new();
    let parent = fx.target.work_dir.clone();
    let worktree = parent.join(".worktrees/wt1");
    std::fs::create_dir_all(&worktree).expect("worktree");
    fx.target.work_dir = worktree.clone();
    fx.target.parent_dir = Some(parent.clone());
    let plan = fx.plan();
    let p = parent.display().to_string();
    assert!(plan.binds.contains(&format!("{p}:{p}")), "{:?}", plan.binds);
    assert!(
        !plan
            .binds
            .iter()
            .any(|b| b.starts_with(&worktree.display().to_string()))
    );
}

#[test]
fn a_linked_worktree_gets_its_repository_git_dir_but_not_the_main_checkout() {
    let mut fx = Fixture::new();
    let repo = fx.dir.path().join("app");
    let common = repo.join(".git");
    let worktree = fx.dir.path().join("worktrees/app/loop-fix-a1b2");
    std::fs::create_dir_all(&common).expect("git dir");
    std::fs::create_dir_all(&worktree).expect("worktree");
    fx.target.work_dir = worktree.clone();
    fx.target.git_common_dir = Some(common.clone());
    let plan = fx.plan();
    let (w, g, r) = (
        worktree.display().to_string(),
        common.display().to_string(),
        repo.display().to_string(),
    );
    assert!(plan.binds.contains(&format!("{w}:{w}")), "{:?}", plan.binds);
    assert!(plan.binds.contains(&format!("{g}:{g}")), "{:?}", plan.binds);
    assert!(
        !plan.binds.iter().any(|b| b == &format!("{r}:{r}")),
        "the main checkout's files are not the thread's: {:?}",
        plan.binds
    );
    assert_eq!(plan.working_dir, worktree);

    // A git directory inside the mounted project is already there; one that would show loop's
    // own directory is not mounted.
    fx.target.git_common_dir = Some(worktree.join(".git"));
    let inside = fx.plan();
    assert_eq!(
        inside.binds.len(),
        plan.binds.len() - 1,
        "{:?}",
        inside.binds
    );
    let loop_git = fx.home().join(".loop/repo/.git");
    std::fs::create_dir_all(&loop_git).expect("loop dir");
    fx.target.git_common_dir = Some(loop_git.clone());
    let protected = fx.plan();
    assert!(
        !protected
            .binds
            .iter()
            .any(|b| b.starts_with(&loop_git.display().to_string())),
        "{:?}",
        protected.binds
    );
}

#[test]
fn git_excludes_and_extra_dirs_are_mounted_and_passed() {
    let mut fx = Fixture::new();
    let excludes = fx.dir.path().join("gitignore_global");
    std::fs::write(&excludes, "*.swp\n").expect("excludes");
    let extra = fx.dir.path().join("shared-lib");
    std::fs::create_dir_all(&extra).expect("extra");
    fx.settings.git_excludes_file = Some(excludes.clone());
    fx.settings.extra_dirs = vec![extra.display().to_string()];
    let plan = fx.plan();
    let e = excludes.display().to_string();
    assert!(plan.binds.contains(&format!("{e}:{e}:ro")));
    let x = extra.display().to_string();
    assert!(plan.binds.contains(&format!("{x}:{x}")));
    let pos = plan
        .cmd
        .iter()
        .position(|a| a == "--add-dir")
        .expect("--add-dir");
    assert_eq!(plan.cmd[pos + 1], x);
}

#[test]
fn copy_files_skip_missing_and_mounted_paths() {
    let mut fx = Fixture::new();
    let home = fx.home();
    std::fs::write(home.join(".claude.json"), "{}").expect("claude.json");
    std::fs::write(home.join(".gitconfig"), "[user]").expect("gitconfig");
    fx.settings.copy_files = vec![
        "~/.claude.json".into(),
        "~/.gitconfig".into(),
        "~/.absent".into(),
    ];
    fx.settings.mounts = vec!["~/.gitconfig:~/.gitconfig:ro".into()];
    let plan = fx.plan();
    assert_eq!(
        plan.copy_files,
        vec![CopyFile {
            host_path: home.join(".claude.json"),
            container_path: home.join(".claude.json"),
        }]
    );
    let chown = env_of(&plan, "CHOWN_PATHS").expect("CHOWN_PATHS");
    assert!(chown.contains(".claude.json"), "{chown}");
}

#[test]
fn mcp_config_has_the_builtin_server_unless_the_user_defines_loop() {
    let mut fx = Fixture::new();
    fx.settings.memory_enabled = true;
    fx.settings.mcp_servers.insert(
        "github".into(),
        McpServerSpec {
            command: "gh-mcp".into(),
            args: vec!["--x".into()],
            env: BTreeMap::new(),
        },
    );
    let plan = fx.plan();
    // loop's own run directory, mounted read-only; never a file in the project.
    assert_eq!(
        plan.mcp_config_path,
        fx.dir.path().join("run").join(&plan.name).join("mcp.json")
    );
    assert!(!plan.mcp_config_path.starts_with(&fx.target.work_dir));
    assert!(plan.binds.contains(&format!(
        "{}:{MCP_CONFIG_IN_CONTAINER}:ro",
        plan.mcp_config_path.display()
    )));
    let at = plan
        .cmd
        .iter()
        .position(|a| a == "--mcp-config")
        .expect("--mcp-config");
    assert_eq!(plan.cmd[at + 1], MCP_CONFIG_IN_CONTAINER);
    let loop_server = &plan.mcp_config["mcpServers"]["loop"];
    assert_eq!(loop_server["command"], LOOP_BIN_IN_IMAGE);
    let args: Vec<&str> = loop_server["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        &args[..3],
        &["mcp", "--api-url", "http://host.docker.internal:8222"]
    );
    // The channel and the author come from the daemon, by token (a spare agent's server
    // serves whichever thread claims it).
    assert!(!args.contains(&"C123") && !args.contains(&"U1") && args.contains(&"--memory"));
    assert_eq!(plan.mcp_config["mcpServers"]["github"]["command"], "gh-mcp");

    fx.settings.mcp_servers.insert(
        "loop".into(),
        McpServerSpec {
            command: "my-loop".into(),
            args: vec![],
            env: BTreeMap::new(),
        },
    );
    let plan = fx.plan();
    assert_eq!(plan.mcp_config["mcpServers"]["loop"]["command"], "my-loop");
}

#[test]
fn gate_wiring_mounts_the_policy_and_sets_the_env() {
    let mut fx = Fixture::new();
    let policy_dir = fx.dir.path().join("run");
    fx.settings.gate = Some(GateSpec {
        policy_json: "{}".into(),
        token: "ab".repeat(32),
        policy_dir: policy_dir.clone(),
    });
    let plan = fx.plan();
    let path = plan.gate_policy_path.clone().expect("policy path");
    assert_eq!(path, policy_dir.join(&plan.name).join("gate-policy.json"));
    assert!(
        plan.binds
            .contains(&format!("{}:/etc/loop/gate-policy.json:ro", path.display()))
    );
    assert_eq!(env_of(&plan, "LOOP_GATE_ENABLED"), Some("1"));
    assert_eq!(
        env_of(&plan, "LOOP_GATE_POLICY_FILE"),
        Some("/etc/loop/gate-policy.json")
    );
    assert_eq!(env_of(&plan, "LOOP_CHANNEL_ID"), Some("C123"));
    assert_eq!(env_of(&plan, "LOOP_GATE_TOKEN").map(str::len), Some(64));
}

#[test]
fn docker_proxy_wiring_mounts_the_host_socket_root_only_and_writes_the_context() {
    let mut fx = Fixture::new();
    let policy_dir = fx.dir.path().join("run");
    let extra = fx.dir.path().join("extra");
    std::fs::create_dir_all(&extra).expect("extra");
    fx.settings.extra_dirs = vec![extra.display().to_string()];
    // User mounts over the proxy's paths are dropped; others stay.
    let source = fx.dir.path().join("sock");
    std::fs::write(&source, "").expect("source");
    fx.settings.mounts = vec![
        format!("{}:/var/run/docker.sock", source.display()),
        format!("{}:/run", source.display()),
        format!("{}:/run/loop/x", source.display()),
        format!("{}:/srv/data", source.display()),
    ];
    fx.settings.docker_proxy = Some(DockerProxySpec {
        policy_json: r#"{"default_decision": "allow", "context": {"protected_images": ["loop-agent:latest"]}}"#.into(),
        host_socket: PathBuf::from("/var/run/docker.sock"),
        policy_dir: policy_dir.clone(),
        token: "cd".repeat(32),
    });
    let plan = fx.plan();
    let (path, json) = plan.proxy_policy.clone().expect("proxy policy");
    assert_eq!(path, policy_dir.join(&plan.name).join("proxy-policy.json"));
    assert!(plan.binds.contains(&format!(
        "{}:/etc/loop/proxy-policy.json:ro",
        path.display()
    )));
    assert!(
        plan.binds
            .contains(&"/var/run/docker.sock:/run/loop-docker-host/docker.sock".to_owned())
    );
    assert_eq!(
        plan.tmpfs.get("/run/loop-docker-host").map(String::as_str),
        Some("mode=0700,uid=0,gid=0,nosuid,nodev,noexec")
    );
    assert_eq!(plan.security_opt, ["no-new-privileges:true"]);
    let user_mounts: Vec<_> = plan
        .binds
        .iter()
        .filter(|b| b.starts_with(&source.display().to_string()))
        .collect();
    assert_eq!(user_mounts, [&format!("{}:/srv/data", source.display())]);
    assert_eq!(env_of(&plan, "LOOP_DOCKERPROXY_ENABLED"), Some("1"));
    assert_eq!(
        env_of(&plan, "LOOP_DOCKERPROXY_POLICY_FILE"),
        Some("/etc/loop/proxy-policy.json")
    );
    assert_eq!(
        env_of(&plan, "LOOP_DOCKERPROXY_UPSTREAM"),
        Some("/run/loop-docker-host/docker.sock")
    );
    assert_eq!(
        env_of(&plan, "DOCKER_HOST"),
        Some("unix:///run/loop/docker.sock")
    );
    // Without the gate, the proxy gets the token and channel itself.
    assert_eq!(env_of(&plan, "LOOP_GATE_TOKEN").map(str::len), Some(64));
    assert_eq!(env_of(&plan, "LOOP_CHANNEL_ID"), Some("C123"));
    assert_eq!(env_of(&plan, "LOOP_GATE_ENABLED"), None);
    let policy: Value = serde_json::from_str(&json).expect("json");
    assert_eq!(policy["context"]["owner"], json!(plan.name));
    assert_eq!(policy["context"]["channel"], json!("C123"));
    assert_eq!(policy["context"]["daemon"], json!("d1"));
    assert_eq!(
        policy["context"]["protected_images"],
        json!(["loop-agent:latest"])
    );
    assert_eq!(
        policy["context"]["allowed_paths"],
        json!([
            fx.target.work_dir.display().to_string(),
            extra.display().to_string()
        ])
    );

    // With the gate too, the token is set once (by the gate's wiring).
    fx.settings.gate = Some(GateSpec {
        policy_json: "{}".into(),
        token: "cd".repeat(32),
        policy_dir,
    });
    let plan = fx.plan();
    assert_eq!(
        plan.env
            .iter()
            .filter(|e| e.starts_with("LOOP_GATE_TOKEN="))
            .count(),
        1
    );
    assert_eq!(
        plan.env
            .iter()
            .filter(|e| e.starts_with("LOOP_CHANNEL_ID="))
            .count(),
        1
    );
    // Without the proxy, nothing of it.
    fx.settings.docker_proxy = None;
    let plan = fx.plan();
    assert!(plan.proxy_policy.is_none() && plan.tmpfs.is_empty() && plan.security_opt.is_empty());
    assert_eq!(env_of(&plan, "DOCKER_HOST"), None);
}

#[test]
fn claude_command_resumes_and_picks_the_model() {
    let mut fx = Fixture::new();
    fx.settings.model = Some("claude-x".into());
    let cmd = claude_command(
        &fx.settings,
        Path::new("/w/.loop/mcp-C.json"),
        &ClaudeInvocation {
            resume_session: Some("sess-1".into()),
        },
    );
    let line = cmd.join(" ");
    assert!(line.starts_with("claude --print --input-format stream-json --output-format stream-json --verbose --dangerously-skip-permissions --mcp-config /w/.loop/mcp-C.json"), "{line}");
    assert!(line.contains("--resume sess-1"));
    assert!(line.contains("--model claude-x"));
}

#[test]
fn session_transcripts_persist_per_channel() {
    let mut fx = Fixture::new();
    let store = fx.dir.path().join("sessions");
    fx.settings.sessions_dir = Some(store.clone());
    let plan = fx.plan();
    let host = store.join("c123");
    assert!(host.is_dir(), "created on the host");
    let dest = fx.home().join(".claude/projects");
    assert!(
        plan.binds
            .contains(&format!("{}:{}", host.display(), dest.display())),
        "{:?}",
        plan.binds
    );
    let chown = env_of(&plan, "CHOWN_PATHS").expect("CHOWN_PATHS");
    assert!(
        chown.split(':').any(|p| p == dest.display().to_string()),
        "{chown}"
    );
}

#[test]
fn setup_steps_run_by_loop_setup_in_front_of_the_agent() {
    let mut fx = Fixture::new();
    let direct = fx.plan();
    assert_eq!(direct.cmd[0], "claude");
    assert!(!direct.env.iter().any(|e| e.starts_with("LOOP_SETUP=")));

    let steps = vec![
        SetupStep {
            name: "onCreateCommand".into(),
            command: SetupCommand::Argv(vec!["make".into(), "deps".into()]),
        },
        SetupStep {
            name: "postCreateCommand".into(),
            command: SetupCommand::Parallel(
                [("a".to_owned(), SetupCommand::Shell("echo a".into()))].into(),
            ),
        },
    ];
    fx.settings.setup = steps.clone();
    let plan = fx.plan();
    assert_eq!(
        plan.cmd[..4],
        [LOOP_BIN_IN_IMAGE, "setup", "--", "claude"],
        "{:?}",
        plan.cmd
    );
    assert_eq!(
        plan.cmd[3..],
        direct.cmd[..],
        "the agent's command is unchanged"
    );
    let json = plan
        .env
        .iter()
        .find_map(|e| e.strip_prefix("LOOP_SETUP="))
        .expect("the steps travel in LOOP_SETUP");
    let read: Vec<SetupStep> = serde_json::from_str(json).expect("steps JSON");
    assert_eq!(read, steps);

    let shell = plan_container(
        &fx.settings,
        &fx.target,
        ContainerKind::Shell,
        &ClaudeInvocation::default(),
    );
    assert_eq!(shell.cmd, vec!["sleep", "infinity"], "setup is the agent's");
    assert!(!shell.env.iter().any(|e| e.starts_with("LOOP_SETUP=")));
}

#[test]
fn a_projects_variables_never_replace_loops_or_the_configs() {
    let mut fx = Fixture::new();
    fx.settings
        .envs
        .insert("RUST_LOG".into(), serde_json::json!("debug"));
    fx.settings.project_env = [
        ("RUST_LOG", "trace"),
        ("NODE_ENV", "development"),
        ("PATH", "/evil/bin"),
        ("LD_PRELOAD", "/evil.so"),
        ("http_proxy", "http://evil:1"),
        ("LOOP_SETUP", "[]"),
        ("HOME", "/evil-home"),
        ("A=B", "c"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let env = fx.plan().env;
    assert!(env.contains(&"NODE_ENV=development".to_owned()), "{env:?}");
    assert!(env.contains(&"RUST_LOG=debug".to_owned()), "{env:?}");
    for refused in [
        "RUST_LOG=trace",
        "PATH=/evil/bin",
        "LD_PRELOAD=",
        "http_proxy=",
        "LOOP_SETUP=",
        "HOME=/evil-home",
        "A=B",
    ] {
        assert!(
            !env.iter().any(|e| e.starts_with(refused)),
            "{refused} must not be set: {env:?}"
        );
    }
}

#[test]
fn shell_containers_sleep() {
    let fx = Fixture::new();
    let plan = plan_container(
        &fx.settings,
        &fx.target,
        ContainerKind::Shell,
        &ClaudeInvocation::default(),
    );
    assert_eq!(plan.cmd, vec!["sleep", "infinity"]);
    assert_eq!(plan.labels["loop-type"], "shell");
}

#[test]
fn root_host_user_maps_to_an_unprivileged_agent() {
    let fx = Fixture::new();
    let agent = AgentUser::for_host("root", 0, 0, Path::new("/root"), &fx.target.work_dir);
    assert_ne!(agent.uid, 0);
    assert_eq!(agent.home, PathBuf::from("/root"));
    let agent = AgentUser::for_host(
        "bob",
        1001,
        1001,
        Path::new("/home/bob"),
        &fx.target.work_dir,
    );
    assert_eq!((agent.name.as_str(), agent.uid), ("bob", 1001));
}

#[test]
fn timezone_detection_prefers_tz() {
    assert_eq!(
        detect_timezone(Some("Europe/Bucharest")),
        "Europe/Bucharest"
    );
    assert_eq!(detect_timezone(Some(":UTC")), "UTC");
    assert!(!detect_timezone(None).is_empty());
}

#[test]
fn the_api_token_reaches_the_env_and_the_builtin_mcp_server_only_when_issued() {
    let mut fx = Fixture::new();
    let plan = fx.plan();
    assert_eq!(env_of(&plan, API_TOKEN_ENV), None);
    assert!(plan.mcp_config["mcpServers"]["loop"].get("env").is_none());

    fx.settings.api_token = Some("t0k3n".into());
    let plan = fx.plan();
    assert_eq!(env_of(&plan, API_TOKEN_ENV), Some("t0k3n"));
    assert_eq!(
        plan.mcp_config["mcpServers"]["loop"]["env"][API_TOKEN_ENV],
        "t0k3n"
    );
    // A user's own `loop` server replaces the built-in one and gets no token.
    fx.settings.mcp_servers.insert(
        "loop".into(),
        McpServerSpec {
            command: "/opt/my-loop".into(),
            args: Vec::new(),
            env: BTreeMap::new(),
        },
    );
    let plan = fx.plan();
    assert!(plan.mcp_config["mcpServers"]["loop"].get("env").is_none());
}

#[test]
fn every_kind_of_container_starts_in_the_work_directory() {
    let fx = Fixture::new();
    for kind in [ContainerKind::Agent, ContainerKind::Shell] {
        let plan = plan_container(&fx.settings, &fx.target, kind, &ClaudeInvocation::default());
        assert_eq!(plan.working_dir, fx.target.work_dir, "{kind:?}");
    }
    // A worktree inside its main checkout: the checkout is mounted, the worktree is the cwd.
    let mut fx = Fixture::new();
    let parent = fx.target.work_dir.clone();
    fx.target.work_dir = parent.join("worktrees/feature");
    fx.target.parent_dir = Some(parent.clone());
    let plan = fx.plan();
    assert_eq!(plan.working_dir, parent.join("worktrees/feature"));
    assert!(plan.binds.contains(&format!("{0}:{0}", parent.display())));
}

#[test]
fn the_gate_gets_the_work_directory_as_its_workspace() {
    let mut fx = Fixture::new();
    assert_eq!(env_of(&fx.plan(), GATE_WORKSPACE_ENV), None);
    fx.settings.gate = Some(GateSpec {
        policy_json: "{}".into(),
        token: "t".into(),
        policy_dir: fx.dir.path().join("run"),
    });
    let work = fx.target.work_dir.display().to_string();
    assert_eq!(env_of(&fx.plan(), GATE_WORKSPACE_ENV), Some(work.as_str()));
}

#[test]
fn git_trusts_the_project_and_extra_dirs_whoever_owns_them() {
    let mut fx = Fixture::new();
    fx.settings.extra_dirs = vec!["~/shared".into()];
    let plan = fx.plan();
    let work = fx.target.work_dir.display().to_string();
    let shared = fx.home().join("shared").display().to_string();
    assert_eq!(env_of(&plan, "GIT_CONFIG_COUNT"), Some("2"));
    assert_eq!(env_of(&plan, "GIT_CONFIG_KEY_0"), Some("safe.directory"));
    assert_eq!(env_of(&plan, "GIT_CONFIG_VALUE_0"), Some(work.as_str()));
    assert_eq!(env_of(&plan, "GIT_CONFIG_KEY_1"), Some("safe.directory"));
    assert_eq!(env_of(&plan, "GIT_CONFIG_VALUE_1"), Some(shared.as_str()));
}

#[test]
fn parents_claude_md_files_are_mounted_read_only_but_never_through_a_symlink() {
    let fx = Fixture::new();
    let projects = fx.dir.path().join("projects");
    std::fs::write(projects.join("CLAUDE.md"), "team rules").expect("write");
    std::fs::write(fx.dir.path().join("CLAUDE.local.md"), "mine").expect("write");
    // A link in a parent would make Docker mount whatever it points to.
    std::os::unix::fs::symlink(fx.home().join("secret"), projects.join("CLAUDE.local.md"))
        .expect("symlink");
    std::fs::write(fx.home().join("secret"), "token").expect("write");
    // The project's own CLAUDE.md comes with the project mount.
    std::fs::write(fx.target.work_dir.join("CLAUDE.md"), "project").expect("write");
    let plan = fx.plan();
    let memory: Vec<&String> = plan.binds.iter().filter(|b| b.contains("CLAUDE")).collect();
    assert_eq!(
        memory,
        [
            &format!("{0}:{0}:ro", projects.join("CLAUDE.md").display()),
            &format!(
                "{0}:{0}:ro",
                fx.dir.path().join("CLAUDE.local.md").display()
            ),
        ]
    );
}

#[test]
fn nothing_a_config_names_can_show_loops_own_directory() {
    let mut fx = Fixture::new();
    let loop_dir = fx.home().join(".loop");
    std::fs::create_dir_all(loop_dir.join("sub")).expect("mkdir");
    std::fs::write(loop_dir.join("admin.token"), "secret").expect("write");
    std::os::unix::fs::symlink(&loop_dir, fx.home().join("innocent")).expect("symlink");
    std::fs::create_dir_all(fx.home().join("data")).expect("mkdir");
    fx.settings.mounts = vec![
        "~/.loop:/stolen".into(),
        "~:/home-copy:ro".into(),
        "~/.loop/sub:/sub".into(),
        "~/innocent:/via-link".into(),
        "~/data:/data".into(),
    ];
    fx.settings.extra_dirs = vec!["~".into(), "~/.loop/sub".into(), "~/data".into()];
    fx.settings.copy_files = vec![
        "~/.loop/admin.token".into(),
        "~/innocent/admin.token".into(),
    ];
    let plan = fx.plan();
    let home = fx.home().display().to_string();
    let shown: Vec<&String> = plan.binds.iter().filter(|b| b.starts_with(&home)).collect();
    assert_eq!(
        shown,
        [
            &format!("{home}/data:/data"),
            &format!("{home}/data:{home}/data")
        ],
        "{:#?}",
        plan.binds
    );
    assert!(plan.copy_files.is_empty(), "{:?}", plan.copy_files);
}

#[test]
fn every_variable_loop_sets_in_a_container_is_reserved() {
    let mut fx = Fixture::new();
    let dir = fx.dir.path().to_path_buf();
    fx.settings.api_token = Some("t0k3n".into());
    fx.settings.setup = vec![SetupStep {
        name: "postCreateCommand".into(),
        command: SetupCommand::Shell("make".into()),
    }];
    fx.settings.host_proxy_env = [("HTTP_PROXY", "http://proxy:3128"), ("no_proxy", "x")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    fx.settings.gate = Some(GateSpec {
        policy_json: "{}".into(),
        token: "ab".repeat(32),
        policy_dir: dir.join("run"),
    });
    fx.settings.docker_proxy = Some(DockerProxySpec {
        policy_json: "{}".into(),
        host_socket: PathBuf::from("/var/run/docker.sock"),
        policy_dir: dir.join("run"),
        token: "cd".repeat(32),
    });
    for auth in [Auth::ApiKey("k".into()), Auth::OAuthToken("t".into())] {
        fx.settings.auth = auth;
        for var in &fx.plan().env {
            let name = var.split_once('=').map_or(var.as_str(), |(name, _)| name);
            assert!(
                is_reserved_env(name),
                "{name} is set by loop but not reserved"
            );
        }
    }
    for name in [
        "LD_PRELOAD",
        "ld_library_path",
        "https_proxy",
        "ANTHROPIC_BASE_URL",
        "BASH_ENV",
    ] {
        assert!(is_reserved_env(name), "{name}");
    }
    for name in [
        "NODE_ENV",
        "RUST_LOG",
        "GOFLAGS",
        "MY_PATH",
        "HOMEBREW_NO_ANALYTICS",
    ] {
        assert!(!is_reserved_env(name), "{name}");
    }
}

#[test]
fn a_spare_started_for_a_project_fits_a_thread_of_it_and_nothing_else() {
    use crate::warm::fingerprint;
    let mut fx = Fixture::new();
    fx.settings.sessions_dir = Some(fx.dir.path().join("sessions"));
    fx.settings.gate = Some(GateSpec {
        policy_json: "{}".into(),
        token: "t".repeat(64),
        policy_dir: fx.dir.path().join("run"),
    });
    fx.settings.api_token = Some("a".repeat(64));
    let invocation = ClaudeInvocation::default();
    let print = |settings: &ContainerSettings, target: &ChannelTarget| {
        let plan = plan_container(settings, target, ContainerKind::Agent, &invocation);
        fingerprint(&plan, settings)
    };
    let spare = ChannelTarget {
        channel_id: "spare-1a2b3c4d".into(),
        author_id: None,
        ..fx.target.clone()
    };
    let thread = ChannelTarget {
        channel_id: "slack-C123-1700000000.000100".into(),
        author_id: Some("U1".into()),
        ..fx.target.clone()
    };
    // The thread's name is in its env, labels, container name and session store; none of it
    // is what the agent runs with.
    assert_eq!(
        print(&fx.settings, &spare),
        print(&fx.settings, &thread),
        "a spare fits a new thread of its project"
    );
    let elsewhere = ChannelTarget {
        work_dir: fx.dir.path().join("projects"),
        ..thread.clone()
    };
    assert_ne!(print(&fx.settings, &spare), print(&fx.settings, &elsewhere));
    let mut other_image = fx.settings.clone();
    other_image.image = "loop-project:0123".into();
    assert_ne!(print(&fx.settings, &spare), print(&other_image, &thread));
    let resumed = ClaudeInvocation {
        resume_session: Some("s1".into()),
    };
    let plan = plan_container(&fx.settings, &thread, ContainerKind::Agent, &resumed);
    assert_eq!(
        fingerprint(&plan, &fx.settings),
        print(&fx.settings, &spare),
        "the session is compared on its own, not in the fingerprint"
    );
}
