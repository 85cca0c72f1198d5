//! The web dashboard's acceptance numbers (#20): how long an agent's tool call takes to show in
//! an open thread page, the daemon's memory with five dashboards open, and the overview's page
//! weight.
//!
//! ```text
//! cargo build --workspace --bins                # the `loop` binary the daemon fixture starts
//! cargo bench -p loop-e2e --bench dashboard     # (`--profile dev` reuses the debug build)
//! ```
//!
//! A real `loop serve` (the e2e `Daemon` fixture) with the real dockerd, the agent image and the
//! Claude Code CLI, and the scripted fake model; the pages are opened in headless Chromium
//! (Debian's `chromium` and `chromium-driver`, the `Browser` fixture) logged in with the link
//! `loop ui` prints.
//!
//! 1. Tool call to its line: each round posts to the local channel `local:dash`, whose live
//!    thread page stays open in the browser; the model answers with a Bash call whose command
//!    (`echo dashmark-NNN`) is unique to the round. The clock starts when that model request
//!    arrives at the fake model (it answers with the tool call at once; the time is read in this
//!    process) and stops when the command's text is first in the page: a MutationObserver
//!    records `Date.now()` at the DOM change, read back with a script (same machine, same wall
//!    clock). Alongside, a raw SSE client (reqwest, the browser's session cookie) reads the same
//!    page's event stream and stops its own clock at the chunk holding the text.
//! 2. RSS: `VmRSS` of `loop serve` idle (no page open), then with five Chromium tabs open (three
//!    on the overview, two on the thread page; each loaded its HTML and assets and holds its
//!    SSE stream), then its peak (sampled every 100 ms) while a turn streams 40 lines of output
//!    into them.
//! 3. Page weight: the overview's HTML (with the threads the runs made) and each asset it
//!    references, fetched as the browser would (uncompressed: the daemon does not compress).
//!
//! Knob: `LOOP_BENCH_ROUNDS` (default 20). Without `--bench` it only prints how to run it; when
//! Docker, the image or Chromium is missing it says why and exits non-zero.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use loop_e2e::browser::Browser;
use loop_e2e::daemon::{Daemon, loop_binary, test_config};
use loop_e2e::measure::{load_average, median};
use loop_e2e::support::{docker, start_model, test_image, workspace};
use loop_fakes::model::{FakeModel, Rule, Script, Step};

/// The local channel the rounds post to.
const CHANNEL: &str = "dash";
/// A turn's limit.
const TURN: Duration = Duration::from_secs(180);
/// How long a line may take to show before the bench gives up.
const SEEN: Duration = Duration::from_secs(30);
/// More local channels made before the page weight, so the overview lists several threads.
const EXTRA_THREADS: usize = 5;
/// The turn that streams while five dashboards are open.
const STREAM: &str = "for i in $(seq 1 40); do echo streamed line $i; sleep 0.1; done";

/// Records, in the page, when each wanted text first shows anywhere in the body.
const OBSERVE: &str = r#"
window.__dashWant = arguments[0];
window.__dashSeen = window.__dashSeen || {};
var check = function () {
  var now = Date.now();
  var text = document.body ? document.body.textContent : "";
  window.__dashWant.forEach(function (needle) {
    if (!(needle in window.__dashSeen) && text.indexOf(needle) >= 0) window.__dashSeen[needle] = now;
  });
};
if (!window.__dashObserver) {
  window.__dashObserver = new MutationObserver(check);
  window.__dashObserver.observe(document.documentElement, {childList: true, subtree: true, characterData: true});
}
check();
return true;
"#;

/// The prompt of round `i`; its rule answers with [`command`].
fn prompt(i: usize) -> String {
    format!("dash round {i:03}.")
}

/// The Bash command of round `i`: the text the page must show.
fn command(i: usize) -> String {
    format!("echo dashmark-{i:03}")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("dashboard: a benchmark; run it with `cargo bench -p loop-e2e --bench dashboard`");
        return Ok(());
    }
    let rounds = loop_e2e::measure::rounds(20).context("LOOP_BENCH_ROUNDS")?;
    if docker().await.is_none() {
        bail!("Docker or the image {} is not available", test_image());
    }
    let Some(browser) = Browser::start().await else {
        bail!("Chromium or chromedriver is missing");
    };
    // Round 0 is the warm-up: it makes the channel (and its container) before a page watches.
    let mut script = Script::new();
    for i in 0..=rounds {
        script = script.rule(
            Rule::contains(&prompt(i))
                .then(Step::bash(&command(i)))
                .then(Step::text("done")),
        );
    }
    let script = script.rule(
        Rule::contains("stream some lines")
            .then(Step::bash(STREAM))
            .then(Step::text("streamed")),
    );
    let model = start_model(script).await;
    let (dir, project) = workspace();
    // Warm containers, as a real setup keeps them: a round measures the page, not a start.
    let config = test_config(model.port(), dir.path(), "\"max_concurrent_runs\": 8").replace(
        "\"container_keep_alive_sec\": 0",
        "\"container_keep_alive_sec\": 600",
    );
    let daemon = Daemon::start(&dir.path().join("home"), &config).await;
    let pid = daemon.pid().context("the daemon's pid")?;
    println!("the web dashboard, measured");
    println!(
        "  machine: {} cpus, load {}; image {}; daemon {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average(),
        test_image(),
        loop_binary().display()
    );

    // Log in with the link `loop ui` prints; the session cookie serves the raw clients too.
    let out = daemon.cli(&["ui", "--no-open"]);
    if !out.status.success() {
        bail!("loop ui: {out:?}");
    }
    let link = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    browser.client.goto(&link).await.context("open the link")?;
    browser
        .wait_for_text("main", "Channels and threads", SEEN)
        .await;
    let cookie = format!(
        "loop_ui={}",
        browser
            .cookie("loop_ui")
            .await
            .context("the session cookie")?
    );

    let warm = daemon.post_in(CHANNEL, &project, &prompt(0)).await;
    daemon.answer(warm, TURN).await;
    let key = format!("local:{CHANNEL}");
    let thread_page = daemon.url(&format!("/ui/thread/{key}"));

    // 1. Tool call to its line, in the browser and over a raw SSE client at once.
    browser
        .client
        .goto(&thread_page)
        .await
        .context("the thread page")?;
    browser
        .wait_for_text("#thread-activity", &command(0), SEEN)
        .await;
    live(&browser).await?;
    let needles: Vec<String> = (1..=rounds).map(command).collect();
    browser
        .client
        .execute(OBSERVE, vec![serde_json::json!(needles)])
        .await
        .context("install the observer")?;
    let sse = SseClient::start(
        daemon.url(&format!("/ui/events?view=thread&key={key}")),
        &cookie,
        needles.clone(),
    )
    .await?;
    // The model's clock (Instant) on the browser's (Unix milliseconds).
    let (epoch_instant, epoch_wall) = (Instant::now(), SystemTime::now());
    let unix_ms = |at: Instant| {
        let wall = if at >= epoch_instant {
            epoch_wall + (at - epoch_instant)
        } else {
            epoch_wall - (epoch_instant - at)
        };
        wall.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0
    };
    println!("  tool call → its line in the live thread page ({rounds} turns):");
    let mut in_browser = Vec::new();
    let mut over_sse = Vec::new();
    for i in 1..=rounds {
        let inbox = daemon.post_in(CHANNEL, &project, &prompt(i)).await;
        daemon.answer(inbox, TURN).await;
        let sent = tool_call_sent(&model, i)?;
        let needle = command(i);
        let shown = seen_in_page(&browser, &needle).await?;
        let streamed = sse.seen(&needle).await?;
        let page_ms = shown - unix_ms(sent);
        let sse_ms = streamed.saturating_duration_since(sent).as_secs_f64() * 1000.0;
        println!("    turn {i:>2}: browser {page_ms:6.1} ms, raw SSE {sse_ms:6.1} ms");
        in_browser.push(Duration::from_secs_f64(page_ms.max(0.0) / 1000.0));
        over_sse.push(Duration::from_secs_f64(sse_ms / 1000.0));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    report("browser (DOM change, MutationObserver)", &in_browser);
    report("raw SSE client (the chunk holding it)", &over_sse);
    sse.stop();

    // 2. RSS idle, with five dashboards open, and while a turn streams into them.
    browser
        .client
        .goto("about:blank")
        .await
        .context("close the page")?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = rss_kb(pid)?;
    let overview = daemon.url("/ui/");
    let tabs = [&overview, &thread_page, &overview, &thread_page, &overview];
    for (n, url) in tabs.iter().enumerate() {
        if n > 0 {
            let tab = browser.client.new_window(true).await.context("a new tab")?;
            browser
                .client
                .switch_to_window(tab.handle)
                .await
                .context("switch tabs")?;
        }
        browser.client.goto(url).await.context("open a dashboard")?;
        live(&browser).await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let open = rss_kb(pid)?;
    let inbox = daemon.post_in(CHANNEL, &project, "stream some lines").await;
    let peak = Arc::new(Mutex::new(open));
    let sampler = {
        let peak = Arc::clone(&peak);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                if let Ok(kb) = rss_kb(pid) {
                    let mut peak = peak.lock().unwrap_or_else(PoisonError::into_inner);
                    *peak = (*peak).max(kb);
                }
            }
        })
    };
    daemon.answer(inbox, TURN).await;
    sampler.abort();
    let streamed = *peak.lock().unwrap_or_else(PoisonError::into_inner);
    let mib = |kb: u64| kb as f64 / 1024.0;
    println!("  daemon RSS (VmRSS of loop serve; 5 Chromium tabs: 3 overview, 2 thread page):");
    println!("    idle, no page open:          {:6.1} MiB", mib(idle));
    println!(
        "    5 dashboards open:           {:6.1} MiB (+{:.1} MiB)",
        mib(open),
        mib(open.saturating_sub(idle))
    );
    println!(
        "    peak while a turn streams:   {:6.1} MiB (+{:.1} MiB over idle)",
        mib(streamed),
        mib(streamed.saturating_sub(idle))
    );

    // 3. Page weight of the overview, with a few more threads on it.
    let mut extra = Vec::new();
    for n in 1..=EXTRA_THREADS {
        extra.push(
            daemon
                .post_in(&format!("{CHANNEL}-{n}"), &project, "say ok")
                .await,
        );
    }
    for inbox in extra {
        daemon.answer(inbox, TURN).await;
    }
    page_weight(&daemon, &cookie).await?;

    println!("  load after: {}", load_average());
    browser.close().await;
    drop(daemon);
    model.shutdown().await;
    Ok(())
}

/// When the model request of round `i` that it answered with the Bash call arrived.
fn tool_call_sent(model: &FakeModel, round: usize) -> Result<Instant> {
    model
        .requests()
        .into_iter()
        .find(|r| {
            r.answer
                .as_ref()
                .is_some_and(|a| a.rule == Some(round) && a.step_index == 0)
        })
        .map(|r| r.at)
        .with_context(|| format!("no model request answered round {round}"))
}

/// When (Unix ms, the page's clock) `needle` first showed in the current page.
async fn seen_in_page(browser: &Browser, needle: &str) -> Result<f64> {
    let deadline = Instant::now() + SEEN;
    loop {
        let seen = browser
            .client
            .execute(
                "return (window.__dashSeen || {})[arguments[0]] || null;",
                vec![serde_json::json!(needle)],
            )
            .await
            .context("read the observer")?;
        if let Some(ms) = seen.as_f64() {
            return Ok(ms);
        }
        if Instant::now() > deadline {
            bail!("the page never showed {needle:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the current page's event stream is connected.
async fn live(browser: &Browser) -> Result<()> {
    let deadline = Instant::now() + SEEN;
    while browser
        .client
        .execute("return document.body.dataset.liveState || null;", vec![])
        .await
        .context("read the page's live state")?
        .as_str()
        != Some("on")
    {
        if Instant::now() > deadline {
            bail!("the page's event stream did not connect");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A raw Server-Sent Events client of one dashboard page's stream: when each wanted text first
/// arrived.
struct SseClient {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl SseClient {
    async fn start(url: String, cookie: &str, want: Vec<String>) -> Result<SseClient> {
        let mut response = reqwest::Client::new()
            .get(&url)
            .header("cookie", cookie)
            .header("accept", "text/event-stream")
            .send()
            .await
            .context("open the event stream")?;
        if !response.status().is_success() {
            bail!("the event stream answered {}", response.status());
        }
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let task = {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                // Only the tail is kept: a text may straddle two chunks.
                let mut tail: Vec<u8> = Vec::new();
                while let Some(chunk) = response.chunk().await? {
                    let now = Instant::now();
                    tail.extend_from_slice(&chunk);
                    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                    for needle in &want {
                        if !seen.contains_key(needle)
                            && tail.windows(needle.len()).any(|w| w == needle.as_bytes())
                        {
                            seen.insert(needle.clone(), now);
                        }
                    }
                    let keep = tail.len().saturating_sub(256);
                    tail.drain(..keep);
                }
                Ok(())
            })
        };
        Ok(SseClient { seen, task })
    }

    async fn seen(&self, needle: &str) -> Result<Instant> {
        let deadline = Instant::now() + SEEN;
        loop {
            if let Some(at) = self
                .seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(needle)
            {
                return Ok(*at);
            }
            if Instant::now() > deadline || self.task.is_finished() {
                bail!("the event stream never carried {needle:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// `VmRSS` of a process, in KiB.
fn rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// Prints the bytes of the overview's HTML and of each asset it references, as sent to a
/// client that takes no compression and (in brackets) to a browser that asks for gzip.
async fn page_weight(daemon: &Daemon, cookie: &str) -> Result<()> {
    let http = reqwest::Client::new();
    let get = |path: String| http.get(daemon.url(&path)).header("cookie", cookie).send();
    // reqwest here decompresses nothing: the body is the bytes on the wire.
    let gzipped = |path: String| {
        let request = http
            .get(daemon.url(&path))
            .header("cookie", cookie)
            .header("accept-encoding", "gzip")
            .send();
        async move {
            let response = request.await?.error_for_status()?;
            anyhow::ensure!(
                response
                    .headers()
                    .get("content-encoding")
                    .is_some_and(|e| e == "gzip"),
                "{path} was not gzipped"
            );
            Ok::<usize, anyhow::Error>(response.bytes().await?.len())
        }
    };
    let html = get("/ui/".to_owned())
        .await?
        .error_for_status()?
        .text()
        .await?;
    let threads = html.matches("<tr data-channel=").count();
    let warm = html.matches("data-label=\"Warm agent\"").count();
    println!(
        "  page weight of the overview ({threads} threads and {warm} warm agents listed; uncompressed):"
    );
    let html_gz = gzipped("/ui/".to_owned()).await?;
    println!("    HTML {:>8} bytes ({html_gz} gzipped)", html.len());
    let (mut css, mut js) = (0, 0);
    let mut total_gz = html_gz;
    let mut rest = html.as_str();
    while let Some(at) = rest.find("\"/ui/assets/") {
        let path = &rest[at + 1..];
        let end = path.find('"').context("an unterminated asset link")?;
        let path = &path[..end];
        let bytes = get(path.to_owned())
            .await?
            .error_for_status()?
            .bytes()
            .await?
            .len();
        if path.ends_with(".css") {
            css += bytes;
        } else {
            js += bytes;
        }
        let zipped = gzipped(path.to_owned()).await?;
        total_gz += zipped;
        println!("    {path}: {bytes} bytes ({zipped} gzipped)");
        rest = &rest[at + 1 + end..];
    }
    println!(
        "    total: HTML {} + CSS {css} + JS {js} = {} bytes; {total_gz} bytes gzipped",
        html.len(),
        html.len() + css + js
    );
    Ok(())
}

fn report(what: &str, samples: &[Duration]) {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "  {what}: median {:.1} ms, p95 {:.1} ms, range {:.1}–{:.1} ms ({} turns)",
        ms(median(samples)),
        ms(at(0.95)),
        ms(sorted[0]),
        ms(sorted[sorted.len() - 1]),
        sorted.len()
    );
}
