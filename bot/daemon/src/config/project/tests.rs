//! What a project file contributes before and after an owner trusts it, case by case.

use serde_json::json;

use super::*;

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// The global config's limits of these tests: 1024 MB, 1 CPU, an hour, no budget.
fn in_force(gate_loosening: bool) -> InForce {
    InForce {
        limits: object(json!({
            "container_memory_mb": 1024,
            "container_cpus": 1.0,
            "container_timeout_sec": 3600,
        })),
        gate_loosening,
    }
}

/// `trusted`: `None` for a file never trusted, else the trusted version.
fn check(current: Value, trusted: Option<Value>, expected: Value, held_back: &[&str]) {
    check_with(in_force(true), current, trusted, expected, held_back);
}

fn check_with(
    in_force: InForce,
    current: Value,
    trusted: Option<Value>,
    expected: Value,
    held_back: &[&str],
) {
    let trusted = trusted.map(object);
    let trust = match &trusted {
        Some(trusted) => Trust::Earlier(trusted),
        None => Trust::Never,
    };
    let composition = compose(&object(current.clone()), trust, &in_force);
    assert_eq!(
        Value::Object(composition.layer),
        expected,
        "layer of {current}"
    );
    assert_eq!(composition.held_back, held_back, "held back of {current}");
}

#[test]
fn safe_keys_apply_untrusted() {
    let safe = json!({
        "claude_model": "opus",
        "task_templates": [{"name": "t", "schedule": "1h", "prompt": "p"}],
        "mcp": {"servers": {"x": {"command": "x"}}},
        "memory": {"inject_top_k": 3},
        "gates": {"agentgate": {"enabled": true, "command_rules": [{"commands": ["curl"], "decision": "deny"}]}},
        "scheduler": {"timezone": "Asia/Tokyo"},
        "desktop": {"theme": "dark"},
    });
    check(safe.clone(), None, safe, &[]);
}

#[test]
fn widening_keys_apply_only_as_trusted() {
    let mount = "~/.loop:/stolen";
    // Never trusted: none of them.
    check(
        json!({"mounts": [mount], "copy_files": ["~/.ssh/id_rsa"], "extra_dirs": ["/etc"],
               "container_image": "evil:latest", "container_runtime": "runc", "claude_model": "m"}),
        None,
        json!({"claude_model": "m"}),
        &[
            "mounts",
            "copy_files",
            "extra_dirs",
            "container_image",
            "container_runtime",
        ],
    );
    // The trusted version's value, not the file's, when they differ.
    check(
        json!({"mounts": [mount]}),
        Some(json!({"mounts": [mount]})),
        json!({"mounts": [mount]}),
        &[],
    );
    check(
        json!({"mounts": [mount, "/etc:/hostetc:ro"]}),
        Some(json!({"mounts": [mount]})),
        json!({"mounts": [mount]}),
        &["mounts"],
    );
    check(
        json!({"claude_model": "m"}),
        Some(json!({"mounts": [mount]})),
        json!({"claude_model": "m", "mounts": [mount]}),
        &["mounts"],
    );
}

#[test]
fn the_trusted_version_applies_as_written_but_never_reserved_envs() {
    let current = object(json!({
        "mounts": ["/data:/data"],
        "container_memory_mb": 8192,
        "envs": {"LOOP_GATE_ENABLED": "0", "LD_PRELOAD": "/work/x.so", "http_proxy": "x", "NODE_ENV": "test"},
    }));
    let composition = compose(&current, Trust::Current, &in_force(true));
    assert_eq!(
        Value::Object(composition.layer),
        json!({"mounts": ["/data:/data"], "container_memory_mb": 8192, "envs": {"NODE_ENV": "test"}})
    );
    assert!(composition.held_back.is_empty());
    assert_eq!(
        composition.refused_envs,
        ["LD_PRELOAD", "LOOP_GATE_ENABLED", "http_proxy"]
    );
}

#[test]
fn envs_are_held_back_by_name() {
    check(
        json!({"envs": {"NODE_ENV": "test"}}),
        None,
        json!({}),
        &["envs.NODE_ENV"],
    );
    check(
        json!({"envs": {"A": "1", "B": "2"}}),
        Some(json!({"envs": {"A": "1"}})),
        json!({"envs": {"A": "1"}}),
        &["envs.B"],
    );
    check(
        json!({"envs": {"A": "changed"}}),
        Some(json!({"envs": {"A": "1", "C": "3"}})),
        json!({"envs": {"A": "1", "C": "3"}}),
        &["envs.A", "envs.C"],
    );
    // Reserved names are dropped from both sides before comparing.
    check(
        json!({"envs": {"A": "1", "ANTHROPIC_BASE_URL": "http://evil"}}),
        Some(json!({"envs": {"A": "1"}})),
        json!({"envs": {"A": "1"}}),
        &[],
    );
}

#[test]
fn limits_go_down_freely_and_up_only_when_trusted() {
    let cases: &[(Value, Option<Value>, Value, &[&str])] = &[
        (
            json!({"container_memory_mb": 512}),
            None,
            json!({"container_memory_mb": 512}),
            &[],
        ),
        (
            json!({"container_memory_mb": 1024}),
            None,
            json!({"container_memory_mb": 1024}),
            &[],
        ),
        (
            json!({"container_memory_mb": 4096}),
            None,
            json!({}),
            &["container_memory_mb"],
        ),
        // 0 is no cap at all: the highest limit there is.
        (
            json!({"container_memory_mb": 0}),
            None,
            json!({}),
            &["container_memory_mb"],
        ),
        (
            json!({"container_cpus": 0.5}),
            None,
            json!({"container_cpus": 0.5}),
            &[],
        ),
        (
            json!({"container_cpus": 4}),
            None,
            json!({}),
            &["container_cpus"],
        ),
        (
            json!({"container_timeout_sec": 60}),
            None,
            json!({"container_timeout_sec": 60}),
            &[],
        ),
        (
            json!({"container_timeout_sec": 7200}),
            None,
            json!({}),
            &["container_timeout_sec"],
        ),
        // No global budget: any budget is lower.
        (
            json!({"channel_budget_usd": 100}),
            None,
            json!({"channel_budget_usd": 100}),
            &[],
        ),
        // Up to what the trusted version allowed, and no further.
        (
            json!({"container_memory_mb": 4096}),
            Some(json!({"container_memory_mb": 4096})),
            json!({"container_memory_mb": 4096}),
            &[],
        ),
        (
            json!({"container_memory_mb": 8192}),
            Some(json!({"container_memory_mb": 4096})),
            json!({"container_memory_mb": 4096}),
            &["container_memory_mb"],
        ),
        (
            json!({"container_memory_mb": 2048}),
            Some(json!({"container_memory_mb": 4096})),
            json!({"container_memory_mb": 2048}),
            &[],
        ),
        // Not a number: left for the type check, which refuses the file.
        (
            json!({"container_cpus": "lots"}),
            None,
            json!({"container_cpus": "lots"}),
            &[],
        ),
    ];
    for (current, trusted, expected, held_back) in cases {
        check(
            current.clone(),
            trusted.clone(),
            expected.clone(),
            held_back,
        );
    }
    let mut budget = in_force(true);
    budget
        .limits
        .insert("channel_budget_usd".to_owned(), json!(10.0));
    check_with(
        budget.clone(),
        json!({"channel_budget_usd": 100}),
        None,
        json!({}),
        &["channel_budget_usd"],
    );
    check_with(
        budget,
        json!({"channel_budget_usd": 5}),
        None,
        json!({"channel_budget_usd": 5}),
        &[],
    );
}

#[test]
fn gate_loosenings_need_the_trusted_version() {
    let deny = json!({"commands": ["curl"], "decision": "deny"});
    let allow_rm = json!({"commands": ["rm"], "decision": "allow"});
    let allow_sh = json!({"commands": ["sh"], "decision": "allow"});
    // Never trusted: the file's tightenings only.
    check(
        json!({"gates": {"agentgate": {"enabled": false, "command_rules": [allow_rm, deny]},
                         "docker_proxy": {"enabled": true}}}),
        None,
        json!({"gates": {"agentgate": {"command_rules": [deny]}, "docker_proxy": {}}}),
        &[
            "gates.agentgate.enabled",
            "gates.docker_proxy.enabled",
            "gates.agentgate.command_rules (allow rules)",
        ],
    );
    // The same loosenings as the trusted version: the file applies as written.
    let same = json!({"gates": {"agentgate": {"command_rules": [allow_rm, deny]}}});
    check(
        same.clone(),
        Some(json!({"gates": {"agentgate": {"command_rules": [allow_rm]}}})),
        same,
        &[],
    );
    // A new `allow` rule is dropped; the trusted one stays where the file has it.
    check(
        json!({"gates": {"agentgate": {"command_rules": [allow_sh, allow_rm, deny]}}}),
        Some(json!({"gates": {"agentgate": {"command_rules": [allow_rm]}}})),
        json!({"gates": {"agentgate": {"command_rules": [allow_rm, deny]}}}),
        &["gates.agentgate.command_rules (allow rules)"],
    );
    // Tightening against the trusted version applies: the gate back on, fewer `allow` rules.
    check(
        json!({"gates": {"agentgate": {"enabled": true, "command_rules": [deny]}}}),
        Some(json!({"gates": {"agentgate": {"enabled": false, "command_rules": [allow_rm]}}})),
        json!({"gates": {"agentgate": {"enabled": true, "command_rules": [deny]}}}),
        &[],
    );
    // Without the global `gates.trust_project_config`, loosenings are the merge's to drop
    // (with its own warning): trust cannot help, so nothing is reported held back.
    let loosening =
        json!({"gates": {"agentgate": {"enabled": false, "command_rules": [allow_rm]}}});
    check_with(in_force(false), loosening.clone(), None, loosening, &[]);
}

#[test]
fn chat_diffs_redact_secrets_and_are_bounded() {
    let diff = diff_for_chat(
        Some("{\n  \"claude_model\": \"a\"\n}\n"),
        "{\n  \"claude_model\": \"b\",\n  \"anthropic_api_key\": \"sk-ant-secret\"\n}\n",
        60,
    );
    assert!(diff.contains("-  \"claude_model\": \"a\""), "{diff}");
    assert!(diff.contains("+  \"claude_model\": \"b\","), "{diff}");
    assert!(!diff.contains("sk-ant-secret"), "{diff}");
    assert!(
        diff.contains("\"anthropic_api_key\": \"[REDACTED]\""),
        "{diff}"
    );
    let long: String = (0..200).map(|i| format!("line {i}\n")).collect();
    let diff = diff_for_chat(None, &long, 20);
    assert_eq!(diff.lines().count(), 21, "{diff}");
    assert!(diff.ends_with("(`loop config trust` on the host shows them all)"));
}
