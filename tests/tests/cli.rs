//! The `loop` CLI's setup commands as a newcomer runs them: `onboard`, `doctor`,
//! `config show`.

use std::process::{Command, Output};

use loop_e2e::daemon::loop_binary;
use loop_e2e::support::docker;

fn run(home: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(loop_binary());
    command
        .args(args)
        .env("HOME", home)
        .env("LOOP_HOME", home.join(".loop"))
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("CLAUDE_CODE_OAUTH_TOKEN")
        .env_remove("LOOP_ANTHROPIC_API_KEY");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run loop")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn onboard_then_doctor_says_what_is_missing_and_passes_when_nothing_is() {
    if docker().await.is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path();

    let onboard = run(home, &["onboard"], &[]);
    assert!(onboard.status.success(), "{}", text(&onboard));
    assert!(home.join(".loop/config.json").exists());
    let again = run(home, &["onboard"], &[]);
    assert!(text(&again).contains("already exists"), "{}", text(&again));

    // No credentials and no Docker: both named, non-zero exit.
    let doctor = run(
        home,
        &["doctor"],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    let out = text(&doctor);
    assert!(!doctor.status.success(), "{out}");
    assert!(out.contains("[FAIL] credentials"), "{out}");
    assert!(out.contains("[FAIL] docker"), "{out}");
    assert!(out.contains("fix:"), "{out}");

    // A broken config names the line.
    std::fs::write(
        home.join(".loop/config.json"),
        "{\n  \"platforms\": [\"local\"],\n  \"x\": }\n",
    )
    .expect("write");
    let doctor = run(home, &["doctor"], &[]);
    let out = text(&doctor);
    assert!(!doctor.status.success());
    assert!(out.contains("config.json:3:"), "{out}");

    // Everything present: exit 0.
    let image = loop_e2e::support::test_image();
    std::fs::write(
        home.join(".loop/config.json"),
        format!("{{\"platforms\": [\"local\"], \"container_image\": \"{image}\"}}"),
    )
    .expect("write");
    let doctor = run(
        home,
        &["doctor"],
        &[("LOOP_ANTHROPIC_API_KEY", "sk-test-secret-value")],
    );
    let out = text(&doctor);
    assert!(doctor.status.success(), "{out}");
    assert!(out.contains("[ok  ] image"), "{out}");
    assert!(
        !out.contains("sk-test-secret-value"),
        "secrets never printed"
    );

    // With the docker proxy on, a policy with a typo fails, naming the field; a good one passes.
    let with_proxy = |rules: &str| {
        format!(
            "{{\"platforms\": [\"local\"], \"container_image\": \"{image}\",
              \"gates\": {{\"docker_proxy\": {{\"enabled\": true, \"http_rules\": {rules}}}}}}}"
        )
    };
    std::fs::write(
        home.join(".loop/config.json"),
        with_proxy(r#"[{"methods": ["DELETE"], "paths": ["/images/**"], "decison": "deny"}]"#),
    )
    .expect("write");
    let key = [("LOOP_ANTHROPIC_API_KEY", "sk-test-secret-value")];
    let doctor = run(home, &["doctor"], &key);
    let out = text(&doctor);
    assert!(!doctor.status.success(), "{out}");
    assert!(
        out.contains("[FAIL] docker proxy") && out.contains("http_rules[0]"),
        "{out}"
    );
    std::fs::write(
        home.join(".loop/config.json"),
        with_proxy(r#"[{"methods": ["DELETE"], "paths": ["/images/**"], "decision": "deny"}]"#),
    )
    .expect("write");
    let doctor = run(home, &["doctor"], &key);
    let out = text(&doctor);
    assert!(doctor.status.success(), "{out}");
    assert!(out.contains("[ok  ] docker proxy"), "{out}");

    // With memory on: ONNX Runtime and the model files are checked (nothing is loaded).
    let with_memory = |memory: &str| {
        format!(
            "{{\"platforms\": [\"local\"], \"container_image\": \"{image}\", \"memory\": {memory}}}"
        )
    };
    let missing_dir = home.join("no-model-here");
    std::fs::write(
        home.join(".loop/config.json"),
        with_memory(&format!(
            "{{\"enabled\": true, \"model_dir\": \"{}\"}}",
            missing_dir.display()
        )),
    )
    .expect("write");
    let doctor = run(home, &["doctor"], &[key[0], ("ORT_DYLIB_PATH", "")]);
    let out = text(&doctor);
    assert!(!doctor.status.success(), "{out}");
    assert!(
        out.contains("[FAIL] memory") && out.contains("ORT_DYLIB_PATH"),
        "{out}"
    );
    if let (Ok(ort), Ok(model)) = (
        std::env::var("ORT_DYLIB_PATH"),
        std::env::var("LOOP_TEST_MODEL_DIR"),
    ) {
        let doctor = run(home, &["doctor"], &[key[0], ("ORT_DYLIB_PATH", &ort)]);
        let out = text(&doctor);
        assert!(
            out.contains("[FAIL] memory") && out.contains("lacks"),
            "{out}"
        );
        std::fs::write(
            home.join(".loop/config.json"),
            with_memory(&format!(
                "{{\"enabled\": true, \"model_dir\": \"{model}\"}}"
            )),
        )
        .expect("write");
        let doctor = run(home, &["doctor"], &[key[0], ("ORT_DYLIB_PATH", &ort)]);
        let out = text(&doctor);
        assert!(doctor.status.success(), "{out}");
        assert!(out.contains("[ok  ] memory"), "{out}");
    }

    // config show redacts secrets.
    let show = run(
        home,
        &["config", "show"],
        &[("LOOP_ANTHROPIC_API_KEY", "sk-test-secret-value")],
    );
    let out = text(&show);
    assert!(show.status.success(), "{out}");
    assert!(
        out.contains("[REDACTED]") && !out.contains("sk-test-secret-value"),
        "{out}"
    );
}

/// `loop doctor --dir PROJECT` says which environment description of the project applies, what
/// loop leaves out of it, and why a broken one cannot be used (file, line, field).
#[test]
fn doctor_reads_a_projects_environment_description() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path();
    assert!(run(home, &["onboard"], &[]).status.success());
    let fixtures = std::fs::canonicalize(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/projects"))
        .expect("fixtures");
    let doctor = |project: &str| {
        let project = fixtures.join(project).display().to_string();
        text(&run(
            home,
            &["doctor", "--dir", &project],
            &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
        ))
    };
    let out = doctor("devcontainer-invalid");
    assert!(
        out.contains("[FAIL] environment")
            && out.contains(".devcontainer.json:4: `containerEnv.DEBUG`"),
        "{out}"
    );
    let out = doctor("devcontainer-image");
    assert!(
        out.contains("[ok  ] environment")
            && out.contains("image debian:bookworm-slim; setup: postCreateCommand"),
        "{out}"
    );
    let out = doctor("python-dockerfile");
    assert!(out.contains(".loop/container/Dockerfile"), "{out}");
    // Nobody trusted it on this host: said, with how to trust and build it.
    assert!(
        out.contains("is not trusted: turns run without it")
            && out.contains("`loop image build --dir"),
        "{out}"
    );
    let out = doctor("plain");
    assert!(out.contains("has no environment description"), "{out}");
}
