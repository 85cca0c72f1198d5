//! A real browser for the dashboard's end-to-end tests: Debian's headless Chromium driven over
//! WebDriver (`chromedriver`, through fantoccini). Screenshots go to the artifact folder:
//! `$LOOP_ARTIFACTS`, else `$CARGO_TARGET_DIR/artifacts` (`target/artifacts`).
//!
//! When Chromium or chromedriver is missing the tests fail, unless
//! `LOOP_TEST_SKIP_UNAVAILABLE=1` (then they skip with a message); `.ci/run` installs both.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use crate::support::skip_unavailable;

/// Where Debian puts them (`apt-get install chromium chromium-driver`).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless Chromium session; the driver process goes with it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    /// The server's log, shown when a wait fails ([`Browser::show_log_on_failure`]).
    server_log: std::sync::Mutex<Option<PathBuf>>,
}

/// How much of the server's log a failed wait shows.
const LOG_TAIL_LINES: usize = 200;

/// The artifact folder (created).
pub fn artifacts_dir() -> PathBuf {
    let dir = std::env::var_os("LOOP_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
                .join("artifacts")
        });
    std::fs::create_dir_all(&dir).expect("artifact folder");
    dir
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session, or `None` when the developer
    /// opted out of tests whose tools are missing.
    pub async fn start() -> Option<Browser> {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(tool).exists() {
                if skip_unavailable() {
                    eprintln!(
                        "skipping: {tool} is missing (apt-get install chromium chromium-driver)"
                    );
                    return None;
                }
                panic!(
                    "{tool} is missing: `apt-get install chromium chromium-driver` (.ci/run does), or set LOOP_TEST_SKIP_UNAVAILABLE=1"
                );
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        // Ready when its status endpoint answers.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{url}/status")).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,1000", "--hide-scrollbars",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a Chromium session");
        Some(Browser {
            client,
            driver,
            _profile: profile,
            server_log: std::sync::Mutex::new(None),
        })
    }

    /// Waits until the element at `css` contains `needle`; returns its text.
    pub async fn wait_for_text(&self, css: &str, needle: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = String::new();
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = element.text().await
            {
                if text.contains(needle) {
                    return text;
                }
                last = text;
            }
            if tokio::time::Instant::now() >= deadline {
                let url = self.client.current_url().await.map(|u| u.to_string());
                panic!(
                    "{css} never showed {needle:?} (at {url:?}); it shows:\n{last}{}",
                    self.server_log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Makes a failed wait also show the end of `log` (the daemon's): what a page waits for
    /// is mostly decided on the server.
    pub fn show_log_on_failure(&self, log: &Path) {
        *self.server_log.lock().unwrap_or_else(|p| p.into_inner()) = Some(log.to_path_buf());
    }

    fn server_log_tail(&self) -> String {
        let Some(path) = self
            .server_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return String::new();
        };
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        format!("\n--- the end of {} ---\n{tail}", path.display())
    }

    /// Saves a screenshot of the page as `name`.png in the artifact folder.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = artifacts_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// The value of a cookie the page has.
    pub async fn cookie(&self, name: &str) -> Option<String> {
        self.client
            .get_named_cookie(name)
            .await
            .ok()
            .map(|c| c.value().to_owned())
    }

    /// Ends the session (Chromium exits) and the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
