//! A newcomer's first `loop serve`: no config, no agent image. It writes the config, builds
//! the image (Docker's layer cache makes that quick here), starts, and its log is plain text
//! when it goes to a file.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use loop_e2e::daemon::loop_binary;
use loop_e2e::support::docker;

#[tokio::test(flavor = "multi_thread")]
async fn the_first_serve_writes_the_config_builds_the_image_and_logs_plain_text() {
    let Some(docker) = docker().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let tag = format!("loop-agent:first-run-{}", uuid::Uuid::new_v4().simple());
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut child = Command::new(loop_binary())
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("LOOP_CONTAINER_IMAGE", &tag)
        .env("LOOP_API_ADDR", "127.0.0.1:0")
        .env("LOOP_LOG_LEVEL", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("loop serve starts");

    // Ready once it wrote where its API listens.
    let addr_file = home.join(".loop/api.addr");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while !addr_file.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "loop serve exited ({status}) on its first run:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "loop serve never got ready:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let said = std::fs::read_to_string(&log_path).expect("log");
    let built = loop_runner::docker::image_exists(&docker, &tag).await;
    let _ = Command::new("docker")
        .args(["image", "rm", &tag])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();

    // The config a newcomer edits next: written, private, and pointed out.
    let config = home.join(".loop/config.json");
    assert!(config.is_file(), "{said}");
    assert_eq!(
        std::fs::metadata(&config)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(said.contains("first run: wrote"), "{said}");
    assert!(
        said.contains("no model credential") && said.contains("LOOP_ANTHROPIC_API_KEY"),
        "the missing key is said, with what to do: {said}"
    );
    // The image: built, with the host's CAs, and said so.
    assert!(matches!(built, Ok(true)), "{built:?}\n{said}");
    assert!(
        said.contains(&format!("the agent image {tag} is missing; building it")),
        "{said}"
    );
    // A log in a file carries no terminal colour codes.
    assert!(
        !said.contains('\u{1b}'),
        "ANSI escapes in a log file: {:?}",
        said.lines().find(|l| l.contains('\u{1b}'))
    );
    assert!(said.contains("INFO") || said.contains("DEBUG"), "{said}");
}
