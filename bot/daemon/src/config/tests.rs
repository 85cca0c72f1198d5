//! Config loading and merging, field by field.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;

struct Fixture {
    dir: tempfile::TempDir,
    sources: ConfigSources,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".loop")).expect("mkdir");
        let sources = ConfigSources {
            loop_dir: home.join(".loop"),
            home,
            env: BTreeMap::new(),
        };
        Fixture { dir, sources }
    }

    fn global(&self, text: &str) -> &Self {
        std::fs::write(self.sources.global_file(), text).expect("write global");
        self
    }

    fn env(&mut self, var: &str, value: &str) -> &mut Self {
        self.sources.env.insert(var.to_owned(), value.to_owned());
        self
    }

    fn project(&self, text: &str) -> PathBuf {
        let work = self.dir.path().join("project");
        std::fs::create_dir_all(work.join(".loop")).expect("mkdir");
        std::fs::write(work.join(".loop/config.json"), text).expect("write project");
        work
    }

    fn load(&self) -> Loaded {
        Config::load(&self.sources).expect("config loads")
    }

    /// The global config over the project file in `work`, with that file's current version
    /// trusted.
    fn trusted_project(&self, work: &std::path::Path) -> Config {
        self.load()
            .config
            .for_project(work, Some(&trust(work)))
            .expect("loads")
            .config
    }

    fn load_err(&self) -> String {
        Config::load(&self.sources)
            .expect_err("config must be refused")
            .to_string()
    }
}

/// The project file of `work` as an owner would trust it.
fn trust(work: &std::path::Path) -> TrustedVersion {
    let file = project::read_project_file(work)
        .expect("readable")
        .expect("a project file");
    TrustedVersion::of(&file)
}

#[test]
fn missing_file_gives_the_documented_defaults() {
    let fx = Fixture::new();
    let config = fx.load().config;
    assert_eq!(config.platforms, vec![Platform::Local]);
    assert_eq!(config.container_memory_mb, 1024);
    assert_eq!(config.container_cpus, 1.0);
    assert_eq!(config.container_timeout_sec, 3600);
    assert_eq!(config.container_keep_alive_sec, 300);
    assert_eq!(config.copy_files, vec!["~/.claude.json"]);
    assert_eq!(config.container_image, "loop-agent:latest");
    assert_eq!(config.api_addr, ":8222");
    assert_eq!(config.claude_bin_path, "claude");
    assert!(config.gates.agentgate.enabled);
    assert_eq!(config.gates.agentgate.default_decision, GateDecision::Allow);
    assert_eq!(config.gates.rate_limits, RateLimits::default());
    assert_eq!(config.memory.paths, vec!["./memory"]);
    assert!(config.browser.enabled);
    assert_eq!(config.db_path, fx.sources.loop_dir.join("loop.db"));
}

#[test]
fn hjson_comments_and_trailing_commas_are_accepted() {
    let fx = Fixture::new();
    fx.global(
        r#"{
        // a line comment
        "platforms": ["local",],
        /* a block comment */
        "container_memory_mb": 2048,
    }"#,
    );
    let config = fx.load().config;
    assert_eq!(config.container_memory_mb, 2048);
}

#[test]
fn bad_json_names_file_line_and_column() {
    let fx = Fixture::new();
    fx.global("{\n  \"platforms\": [\"local\"]\n  \"x\": }\n");
    let err = fx.load_err();
    assert!(err.contains("config.json:3:"), "{err}");
    assert!(err.contains("invalid JSON"), "{err}");
}

#[test]
fn wrong_type_names_the_json_path_and_expected_type() {
    let fx = Fixture::new();
    fx.global(r#"{"container_memory_mb": "lots"}"#);
    let err = fx.load_err();
    assert!(err.contains("config.json"), "{err}");
    assert!(err.contains("`container_memory_mb`"), "{err}");
    assert!(err.contains("expected u64"), "{err}");

    fx.global(r#"{"mcp": {"servers": {"x": {"command": 5}}}}"#);
    let err = fx.load_err();
    assert!(err.contains("`mcp.servers.x.command`"), "{err}");
    assert!(err.contains("expected a string"), "{err}");
}

#[test]
fn unknown_platform_is_a_type_error() {
    let fx = Fixture::new();
    fx.global(r#"{"platforms": ["irc"]}"#);
    let err = fx.load_err();
    assert!(err.contains("platforms[0]"), "{err}");
    assert!(err.contains("irc"), "{err}");
}

#[test]
fn unknown_keys_are_warned_by_name_and_ignored() {
    let fx = Fixture::new();
    fx.global(r#"{"desktop": {"theme": "dark"}, "quality": 1, "memory": {"colour": 1}}"#);
    let loaded = fx.load();
    let joined = loaded.warnings.join("\n");
    assert!(joined.contains("`desktop`"), "{joined}");
    assert!(joined.contains("`quality`"), "{joined}");
    assert!(joined.contains("`memory.colour`"), "{joined}");
}

#[test]
fn a_key_given_twice_is_warned_with_both_lines_and_the_later_wins() {
    let fx = Fixture::new();
    fx.global(
        "{\n  \"claude_model\": \"sonnet\",\n  // pasted from the docs:\n  \"slack\": {\"allowed_users\": [\"U1\"],\n    \"allowed_users\": [\"U2\"]},\n  \"claude_model\": \"opus\",\n}",
    );
    let loaded = fx.load();
    assert_eq!(loaded.config.claude_model.as_deref(), Some("opus"));
    let joined = loaded.warnings.join("\n");
    assert!(
        joined.contains(
            "key `claude_model` is given twice (lines 2 and 6); the later one, line 6, is used"
        ),
        "{joined}"
    );
    assert!(
        joined.contains("key `slack.allowed_users` is given twice (lines 4 and 5)"),
        "{joined}"
    );
    // Distinct keys and the same key in different objects are not duplicates.
    fx.global(r#"{"a": {"x": 1}, "b": {"x": 2}, "task_templates": [{"name": "x", "schedule": "1h"}, {"name": "y", "schedule": "2h"}]}"#);
    assert!(
        !fx.load().warnings.iter().any(|w| w.contains("twice")),
        "{:?}",
        fx.load().warnings
    );
}

#[test]
fn tilde_is_expanded_against_home() {
    let fx = Fixture::new();
    fx.global(r#"{"db_path": "~/data/loop.db", "log_file": "~/loop.log"}"#);
    let config = fx.load().config;
    assert_eq!(config.db_path, fx.sources.home.join("data/loop.db"));
    assert_eq!(config.log_file, Some(fx.sources.home.join("loop.log")));
    assert_eq!(config.expand("~/.ssh"), fx.sources.home.join(".ssh"));
    assert_eq!(config.expand("/abs"), PathBuf::from("/abs"));
    assert_eq!(config.expand("rel/~"), PathBuf::from("rel/~"));
}

#[test]
fn env_overrides_win_over_the_file() {
    let mut fx = Fixture::new();
    fx.global(r#"{"container_memory_mb": 2048, "anthropic_api_key": "from-file"}"#);
    fx.env("LOOP_CONTAINER_MEMORY_MB", "4096")
        .env("LOOP_ANTHROPIC_API_KEY", "from-env")
        .env("LOOP_PLATFORMS", "local, slack")
        .env("LOOP_SLACK_BOT_TOKEN", "xoxb-1")
        .env("LOOP_SLACK_APP_TOKEN", "xapp-1");
    let config = fx.load().config;
    assert_eq!(config.container_memory_mb, 4096);
    assert_eq!(config.anthropic_api_key.expose(), Some("from-env"));
    assert_eq!(config.platforms, vec![Platform::Local, Platform::Slack]);
}

#[test]
fn env_with_a_bad_value_names_the_variable() {
    let mut fx = Fixture::new();
    fx.env("LOOP_CONTAINER_CPUS", "two");
    let err = fx.load_err();
    assert!(err.contains("LOOP_CONTAINER_CPUS"), "{err}");
}

#[test]
fn standard_credential_variables_are_a_fallback() {
    let mut fx = Fixture::new();
    fx.env("ANTHROPIC_API_KEY", "sk-standard");
    assert_eq!(
        fx.load().config.anthropic_api_key.expose(),
        Some("sk-standard")
    );
    fx.global(r#"{"claude_code_oauth_token": "oauth"}"#);
    let config = fx.load().config;
    assert_eq!(config.claude_code_oauth_token.expose(), Some("oauth"));
    assert!(!config.anthropic_api_key.is_set());
}

#[test]
fn slack_without_tokens_is_refused_with_the_key() {
    let fx = Fixture::new();
    fx.global(r#"{"platforms": ["slack"]}"#);
    let err = fx.load_err();
    assert!(err.contains("slack_bot_token"), "{err}");
}

#[test]
fn the_slack_section_is_read_and_checked() {
    let fx = Fixture::new();
    fx.global(
        r#"{"platforms": ["slack"], "slack_bot_token": "xoxb-1", "slack_app_token": "xapp-1",
            "slack": {"require_mention_in_threads": true, "allowed_users": ["U1"],
                      "allowed_channels": ["C1"], "api_url": "http://127.0.0.1:9/api",
                      "events_api": {"listen": "127.0.0.1:3000", "signing_secret": "s3cret"}}}"#,
    );
    let config = fx.load().config;
    assert!(config.slack.require_mention_in_threads);
    assert_eq!(config.slack.allowed_users, vec!["U1"]);
    assert_eq!(config.slack.allowed_channels, vec!["C1"]);
    assert_eq!(
        config.slack.api_url.as_deref(),
        Some("http://127.0.0.1:9/api")
    );
    let events = config.slack.events_api.as_ref().expect("events api");
    assert_eq!(events.listen, "127.0.0.1:3000");
    assert!(
        !config.to_redacted_json().contains("s3cret"),
        "the secret is redacted"
    );
    fx.global(
        r#"{"platforms": ["slack"], "slack_bot_token": "xoxb-1", "slack_app_token": "xapp-1",
            "slack": {"events_api": {"listen": "nowhere"}}}"#,
    );
    assert!(fx.load_err().contains("slack.events_api"));
}

#[test]
fn the_discord_section_is_read() {
    let fx = Fixture::new();
    fx.global(
        r#"{"platforms": ["discord"], "discord_token": "t0ken", "discord_guild_id": "5",
            "discord": {"require_mention_in_threads": true, "allowed_guilds": ["5"],
                        "allowed_channels": ["10"], "allowed_users": ["7"],
                        "api_url": "http://127.0.0.1:9"}}"#,
    );
    let config = fx.load().config;
    assert!(config.discord.require_mention_in_threads);
    assert_eq!(config.discord.allowed_guilds, vec!["5"]);
    assert_eq!(config.discord.allowed_channels, vec!["10"]);
    assert_eq!(config.discord.allowed_users, vec!["7"]);
    assert_eq!(
        config.discord.api_url.as_deref(),
        Some("http://127.0.0.1:9")
    );
    assert!(!config.to_redacted_json().contains("t0ken"));
}

#[test]
fn invalid_values_are_refused() {
    let fx = Fixture::new();
    for (text, needle) in [
        (r#"{"platforms": []}"#, "platforms"),
        (r#"{"container_cpus": 0}"#, "container_cpus"),
        (r#"{"log_level": "loud"}"#, "log_level"),
        (r#"{"mounts": ["/only-one"]}"#, "mounts"),
        (r#"[1, 2]"#, "top level"),
    ] {
        fx.global(text);
        let err = fx.load_err();
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn secrets_are_redacted_in_config_show() {
    let fx = Fixture::new();
    fx.global(r#"{"anthropic_api_key": "sk-ant-secret", "database_url": "postgres://u:pw@h/db"}"#);
    let shown = fx.load().config.to_redacted_json();
    assert!(!shown.contains("sk-ant-secret"), "{shown}");
    assert!(!shown.contains("pw@h"), "{shown}");
    assert!(shown.contains(REDACTED));
}

#[test]
fn project_scalars_win_and_lists_replace() {
    let fx = Fixture::new();
    fx.global(
        r#"{"claude_model": "global-model", "container_memory_mb": 512,
            "mounts": ["~/.ssh:~/.ssh:ro"], "copy_files": ["~/.a"], "extra_dirs": ["/g"],
            "permissions": {"owners": {"users": ["U1"]}}}"#,
    );
    let work = fx.project(
        r#"{"claude_model": "project-model", "mounts": ["vol:/data"], "extra_dirs": [],
            "permissions": {"owners": {"users": ["U2"]}}}"#,
    );
    let base = fx.load().config;
    let config = base
        .for_project(&work, Some(&trust(&work)))
        .expect("project loads")
        .config;
    assert_eq!(config.claude_model.as_deref(), Some("project-model"));
    assert_eq!(
        config.container_memory_mb, 512,
        "unset in project keeps global"
    );
    assert_eq!(config.mounts, vec!["vol:/data"]);
    assert_eq!(config.copy_files, vec!["~/.a"]);
    assert!(config.extra_dirs.is_empty());
    assert_eq!(config.permissions.owners.users, vec!["U2"]);
}

#[test]
fn project_maps_merge_by_key_and_project_wins() {
    let fx = Fixture::new();
    fx.global(
        r#"{"envs": {"A": "1", "B": "2"},
            "mcp": {"servers": {"shared": {"command": "global"}, "g": {"command": "g"}}}}"#,
    );
    let work = fx.project(
        r#"{"envs": {"B": "project", "C": 3},
            "mcp": {"servers": {"shared": {"command": "project"}, "p": {"command": "p"}}}}"#,
    );
    let config = fx.trusted_project(&work);
    assert_eq!(config.envs["A"], Value::from("1"));
    assert_eq!(config.envs["B"], Value::from("project"));
    assert_eq!(config.envs["C"], Value::from(3));
    let names: Vec<_> = config.mcp.servers.keys().cloned().collect();
    assert_eq!(names, vec!["g", "p", "shared"]);
    assert_eq!(config.mcp.servers["shared"].command, "project");
}

#[test]
fn project_memory_paths_append_and_templates_merge_by_name() {
    let fx = Fixture::new();
    fx.global(
        r#"{"memory": {"paths": ["./memory"]},
            "task_templates": [{"name": "daily", "schedule": "0 9 * * *", "prompt": "g"}]}"#,
    );
    let work = fx.project(
        r#"{"memory": {"paths": ["./docs", "!./docs/private"]},
            "task_templates": [{"name": "daily", "schedule": "0 10 * * *", "prompt": "p"},
                               {"name": "weekly", "schedule": "0 9 * * 1", "prompt": "w"}]}"#,
    );
    let config = fx
        .load()
        .config
        .for_project(&work, None)
        .expect("loads")
        .config;
    assert_eq!(
        config.memory.paths,
        vec!["./memory", "./docs", "!./docs/private"]
    );
    assert_eq!(config.task_templates.len(), 2);
    assert_eq!(config.task_templates[0].schedule, "0 10 * * *");
}

#[test]
fn the_model_is_downloaded_into_the_loop_home_unless_a_directory_is_given() {
    let fx = Fixture::new();
    let config = fx.load().config;
    assert_eq!(config.memory.model_dir, None);
    assert_eq!(config.model_cache_dir(), fx.sources.loop_dir.join("models"));

    fx.global(r#"{"memory": {"model_dir": "~/models/minilm", "cache_dir": "~/cache"}}"#);
    let config = fx.load().config;
    assert_eq!(config.memory.model_dir.as_deref(), Some("~/models/minilm"));
    assert_eq!(config.model_cache_dir(), fx.sources.home.join("cache"));

    // A project may set them too; an empty string goes back to the default.
    let work = fx.project(r#"{"memory": {"model_dir": "", "cache_dir": "/var/cache/models"}}"#);
    let config = fx
        .load()
        .config
        .for_project(&work, None)
        .expect("loads")
        .config;
    assert_eq!(config.memory.model_dir, None);
    assert_eq!(config.model_cache_dir(), PathBuf::from("/var/cache/models"));
}

#[test]
fn project_auth_replaces_global_auth_as_a_whole() {
    let fx = Fixture::new();
    fx.global(r#"{"claude_code_oauth_token": "global-oauth"}"#);
    let work = fx.project(r#"{"anthropic_api_key": "project-key"}"#);
    let config = fx
        .load()
        .config
        .for_project(&work, None)
        .expect("loads")
        .config;
    assert!(!config.claude_code_oauth_token.is_set());
    assert_eq!(config.anthropic_api_key.expose(), Some("project-key"));
}

#[test]
fn env_still_wins_over_the_project() {
    let mut fx = Fixture::new();
    fx.env("LOOP_CONTAINER_MEMORY_MB", "64");
    let work = fx.project(r#"{"container_memory_mb": 4096}"#);
    let config = fx
        .load()
        .config
        .for_project(&work, None)
        .expect("loads")
        .config;
    assert_eq!(config.container_memory_mb, 64);
}

#[test]
fn project_gates_may_only_tighten() {
    let fx = Fixture::new();
    fx.global(
        r#"{"gates": {"agentgate": {"default_decision": "deny",
            "command_rules": [{"commands": ["git"], "decision": "approve"}]}}}"#,
    );
    let work = fx.project(
        r#"{"gates": {"agentgate": {"enabled": false, "default_decision": "allow",
            "command_rules": [{"commands": ["curl"], "decision": "deny"},
                              {"commands": ["rm"], "decision": "allow"}]},
            "rate_limits": {"pending": 1000, "per_minute": 1000, "total": 100000}}}"#,
    );
    let loaded = fx.load().config.for_project(&work, None).expect("loads");
    let gate = &loaded.config.gates.agentgate;
    assert!(gate.enabled, "a project cannot switch the gate off");
    assert_eq!(gate.default_decision, GateDecision::Deny);
    let commands: Vec<_> = gate
        .command_rules
        .iter()
        .map(|r| r["commands"][0].as_str().expect("string").to_owned())
        .collect();
    assert_eq!(
        commands,
        vec!["curl", "git"],
        "project deny first, allow dropped"
    );
    assert_eq!(loaded.config.gates.rate_limits, RateLimits::default());
    let warnings = loaded.warnings.join("\n");
    assert!(warnings.contains("enabled=false"), "{warnings}");
    assert!(warnings.contains("`allow` rule"), "{warnings}");
}

#[test]
fn trusted_projects_may_loosen_gates() {
    // Both are needed: the global `gates.trust_project_config` and the owner's trust of the file.
    let fx = Fixture::new();
    fx.global(r#"{"gates": {"trust_project_config": true}}"#);
    let work = fx.project(
        r#"{"gates": {"agentgate": {"enabled": false,
            "command_rules": [{"commands": ["rm"], "decision": "allow"}]}}}"#,
    );
    let config = fx.trusted_project(&work);
    assert!(!config.gates.agentgate.enabled);
    assert_eq!(config.gates.agentgate.command_rules.len(), 1);
}

#[test]
fn a_project_may_not_switch_the_docker_proxy_on_but_may_tighten_it() {
    let fx = Fixture::new();
    fx.global(
        r#"{"gates": {"docker_proxy": {"default_decision": "approve",
            "http_rules": [{"paths": ["/images/**"], "decision": "allow"}]}}}"#,
    );
    let work = fx.project(
        r#"{"gates": {"docker_proxy": {"enabled": true, "default_decision": "allow",
            "http_rules": [{"paths": ["/build"], "decision": "deny"},
                           {"paths": ["/containers/**"], "decision": "allow"}],
            "body_rules": [{"field": "Image", "patterns": ["*"], "decision": "approve"}]}}}"#,
    );
    let loaded = fx.load().config.for_project(&work, None).expect("loads");
    let proxy = &loaded.config.gates.docker_proxy;
    assert!(
        !proxy.enabled,
        "switching the proxy on gives the agent Docker: global only"
    );
    assert_eq!(proxy.default_decision, Some(GateDecision::Approve));
    let paths: Vec<_> = proxy
        .http_rules
        .iter()
        .map(|r| r["paths"][0].as_str().expect("string").to_owned())
        .collect();
    assert_eq!(
        paths,
        ["/build", "/images/**"],
        "project deny first, its allow dropped"
    );
    assert_eq!(proxy.body_rules.len(), 1);
    let warnings = loaded.warnings.join("\n");
    assert!(
        warnings.contains("gates.docker_proxy.enabled=true"),
        "{warnings}"
    );
    assert!(
        warnings.contains("docker_proxy.default_decision"),
        "{warnings}"
    );

    // Switching it off tightens; a trusted project (with the global trust) may switch it on.
    fx.global(r#"{"gates": {"docker_proxy": {"enabled": true}}}"#);
    let work = fx.project(r#"{"gates": {"docker_proxy": {"enabled": false}}}"#);
    let config = fx
        .load()
        .config
        .for_project(&work, None)
        .expect("loads")
        .config;
    assert!(!config.gates.docker_proxy.enabled);
    fx.global(r#"{"gates": {"trust_project_config": true}}"#);
    let work = fx.project(r#"{"gates": {"docker_proxy": {"enabled": true}}}"#);
    let config = fx.trusted_project(&work);
    assert!(config.gates.docker_proxy.enabled);
}

#[test]
fn ask_is_accepted_as_approve() {
    let fx = Fixture::new();
    fx.global(r#"{"gates": {"agentgate": {"default_decision": "ask"}}}"#);
    assert_eq!(
        fx.load().config.gates.agentgate.default_decision,
        GateDecision::Approve
    );
}

#[test]
fn a_broken_project_file_is_an_error_naming_that_file() {
    let fx = Fixture::new();
    let work = fx.project("{ nope");
    let err = fx
        .load()
        .config
        .for_project(&work, None)
        .expect_err("broken project file")
        .to_string();
    assert!(err.contains("project/.loop/config.json"), "{err}");
}

#[test]
fn scheduler_settings_default_layer_and_only_the_zone_is_per_project() {
    let fx = Fixture::new();
    let defaults = fx.load().config.scheduler;
    assert_eq!(defaults.missed_runs, MissedRuns::Once);
    assert_eq!(defaults.min_interval_sec, 60);
    assert_eq!(defaults.timezone, None);

    fx.global(
        r#"{"scheduler": {"missed_runs": "skip", "min_interval_sec": 300, "timezone": "Europe/Bucharest"}}"#,
    );
    let base = fx.load().config;
    assert_eq!(base.scheduler.missed_runs, MissedRuns::Skip);
    assert_eq!(base.scheduler.min_interval_sec, 300);
    assert_eq!(base.scheduler.timezone.as_deref(), Some("Europe/Bucharest"));

    let work = fx.project(
        r#"{"scheduler": {"missed_runs": "once", "min_interval_sec": 1, "timezone": "Asia/Tokyo"}}"#,
    );
    let project = base.for_project(&work, None).expect("project loads").config;
    assert_eq!(project.scheduler.timezone.as_deref(), Some("Asia/Tokyo"));
    assert_eq!(
        project.scheduler.missed_runs,
        MissedRuns::Skip,
        "global only"
    );
    assert_eq!(project.scheduler.min_interval_sec, 300, "global only");

    fx.global(r#"{"scheduler": {"timezone": "Mars/Olympus"}}"#);
    let err = fx.load_err();
    assert!(err.contains("scheduler.timezone"), "{err}");
    fx.global(r#"{"scheduler": {"missed_runs": "sometimes"}}"#);
    let err = fx.load_err();
    assert!(err.contains("scheduler.missed_runs"), "{err}");
}

#[test]
fn egress_is_off_by_default_and_global_only() {
    let fx = Fixture::new();
    let defaults = fx.load().config;
    assert!(!defaults.gates.egress.enabled);
    assert!(defaults.gates.egress.allowed_hosts.is_empty());
    fx.global(
        r#"{"gates": {"egress": {"enabled": true, "allowed_hosts": ["api.anthropic.com", "*.github.com"]}}}"#,
    );
    let work = fx.project(r#"{"gates": {"egress": {"enabled": false, "allowed_hosts": ["*"]}}}"#);
    let loaded = fx.load().config.for_project(&work, None).expect("loads");
    let egress = &loaded.config.gates.egress;
    assert!(egress.enabled, "a project cannot switch egress control off");
    assert_eq!(
        egress.allowed_hosts,
        vec!["api.anthropic.com", "*.github.com"]
    );
    assert!(
        loaded.warnings.join("\n").contains("gates.egress"),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn an_untrusted_project_file_cannot_widen_the_container() {
    let fx = Fixture::new();
    fx.global(r#"{"mounts": ["/srv/shared:/shared:ro"], "container_memory_mb": 1024}"#);
    let work = fx.project(
        r#"{"claude_model": "project-model",
            "mounts": ["~/.loop:/stolen", "/etc:/hostetc:ro", "/var/run/docker.sock:/tmp/d.sock"],
            "envs": {"LOOP_GATE_ENABLED": "0", "NODE_ENV": "test"},
            "container_memory_mb": 65536, "container_cpus": 0.5}"#,
    );
    let base = fx.load().config;
    let loaded = base.for_project(&work, None).expect("loads");
    let config = &loaded.config;
    assert_eq!(
        config.claude_model.as_deref(),
        Some("project-model"),
        "safe keys apply"
    );
    assert_eq!(
        config.mounts,
        ["/srv/shared:/shared:ro"],
        "the global mounts stay"
    );
    assert!(config.envs.is_empty(), "{:?}", config.envs);
    assert_eq!(config.container_memory_mb, 1024, "limits do not go up");
    assert_eq!(config.container_cpus, 0.5, "limits go down");
    assert_eq!(
        loaded.held_back,
        ["mounts", "envs.NODE_ENV", "container_memory_mb"]
    );
    let file = loaded.file.as_ref().expect("the file as read");
    assert_eq!(file.hash, project::hash_text(&file.text));

    // Trusted, the same bytes apply, but loop's own variables never do.
    let loaded = base.for_project(&work, Some(&trust(&work))).expect("loads");
    assert_eq!(loaded.config.mounts.len(), 3);
    assert_eq!(loaded.config.container_memory_mb, 65536);
    assert_eq!(loaded.config.envs.keys().collect::<Vec<_>>(), ["NODE_ENV"]);
    assert!(loaded.held_back.is_empty());
    assert!(
        loaded
            .warnings
            .join("\n")
            .contains("`envs.LOOP_GATE_ENABLED` is a variable loop sets itself"),
        "{:?}",
        loaded.warnings
    );

    // Changed after the trust: the trusted mounts apply, the new one is held back.
    let trusted = trust(&work);
    std::fs::write(
        work.join(".loop/config.json"),
        r#"{"mounts": ["~/.loop:/stolen2"], "envs": {"NODE_ENV": "test"}}"#,
    )
    .expect("rewrite");
    let loaded = base.for_project(&work, Some(&trusted)).expect("loads");
    assert_eq!(loaded.config.mounts.len(), 3, "{:?}", loaded.config.mounts);
    assert!(!loaded.config.mounts.iter().any(|m| m.contains("stolen2")));
    assert_eq!(loaded.held_back, ["mounts"]);
}

#[test]
fn a_project_file_that_is_a_link_a_fifo_or_too_large_is_refused() {
    let fx = Fixture::new();
    let work = fx.project("{}");
    let file = work.join(".loop/config.json");
    let base = fx.load().config;
    let refused = |what: &str| {
        let err = base.for_project(&work, None).expect_err(what).to_string();
        assert!(
            err.contains("project/.loop/config.json was refused"),
            "{what}: {err}"
        );
        err
    };

    std::fs::remove_file(&file).expect("rm");
    std::os::unix::fs::symlink(fx.sources.global_file(), &file).expect("symlink");
    assert!(refused("a symlink").contains("symbolic link"));

    std::fs::remove_file(&file).expect("rm");
    nix::unistd::mkfifo(&file, nix::sys::stat::Mode::S_IRWXU).expect("fifo");
    assert!(refused("a fifo").contains("not a regular file"));

    std::fs::remove_file(&file).expect("rm");
    let big = format!("{{\"claude_model\": \"{}\"}}", "x".repeat(300 * 1024));
    std::fs::write(&file, big).expect("write");
    assert!(refused("too large").contains("larger than"));

    // The directory itself may not be a link either (to `~/.loop`, whose config has tokens).
    std::fs::remove_dir_all(work.join(".loop")).expect("rm dir");
    std::os::unix::fs::symlink(&fx.sources.loop_dir, work.join(".loop")).expect("symlink");
    std::fs::write(fx.sources.global_file(), "{}").expect("global");
    assert!(refused("a linked directory").contains("symbolic link"));

    // No directory, no file: nothing to apply.
    std::fs::remove_file(work.join(".loop")).expect("rm link");
    let loaded = base.for_project(&work, None).expect("no file");
    assert!(loaded.file.is_none());
}

/// Every key a global config file may set is in the file `loop onboard` writes (whose header
/// says it has every value) and in docs/configuration.md, so a newcomer finds each setting
/// where the README sends them.
#[test]
fn every_global_key_is_in_the_default_file_and_the_docs() {
    let default_file = include_str!("../../../../docs/config.default.json");
    let docs = include_str!("../../../../docs/configuration.md");
    let keys = serde_aux::serde_introspection::serde_introspect::<layer::ConfigLayer>();
    assert!(keys.len() > 40, "{keys:?}");
    let missing_default: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|key| !default_file.contains(&format!("\"{key}\":")))
        .collect();
    assert!(
        missing_default.is_empty(),
        "not in docs/config.default.json: {missing_default:?}"
    );
    let missing_docs: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|key| {
            !docs.contains(&format!("`{key}`"))
                && !docs.contains(&format!("`{key}."))
                && !docs.contains(&format!("`{key}["))
                && !docs.contains(&format!("(or `{key}`)"))
        })
        .collect();
    assert!(
        missing_docs.is_empty(),
        "not in docs/configuration.md: {missing_docs:?}"
    );
}
