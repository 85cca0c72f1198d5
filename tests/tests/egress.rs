//! Egress control end to end (`gates.egress`): a real `loop serve` puts the agent container on
//! the internal `loop-egress` network, the real Claude Code CLI reaches the fake model only
//! through the daemon's allowlisting proxy, and the agent's own Bash cannot reach anything
//! else: not a second server on the host that is not allowlisted (directly or through the
//! proxy), not an outside address. A name the allowlist allows but that resolves to the host,
//! a private network or the metadata address is refused too, and the thread says so; a model
//! gateway the config calls `host.docker.internal` stays reachable.

use std::sync::atomic::Ordering;
use std::time::Duration;

use loop_e2e::daemon::{Daemon, test_config};
use loop_e2e::slack::{connected, slack_config, thread_until};
use loop_e2e::support::{bridge_ip, docker, other_server, page_server, start_model, workspace};
use loop_fakes::model::{Rule, Script, Step};
use loop_fakes::slack::{FakeSlack, SlackMessage};

/// A turn in a fresh container, with the CLI going through the proxy.
const TURN: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread")]
async fn only_allowlisted_hosts_are_reachable_and_only_through_the_proxy() {
    let Some(docker) = docker().await else {
        return;
    };
    let bridge = bridge_ip(&docker).await;
    let (other_port, other_hits) = other_server(&bridge).await;
    // Everything the agent tries, one line each; `timeout` bounds the direct connects.
    let command = format!(
        r#"echo "net=$(cat /proc/net/route | wc -l)"
p=${{HTTPS_PROXY#http://}}; ph=${{p%:*}}; pp=${{p##*:}}
probe() {{ timeout 5 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null && echo "$3=open" || echo "$3=closed"; }}
probe {bridge} {other_port} direct_other
probe 1.1.1.1 80 direct_outside
probe {bridge} MODELPORT direct_model
via() {{ exec 3<>/dev/tcp/$ph/$pp; printf "$1" >&3; echo "$2=$(head -1 <&3 | tr -d '\r')"; exec 3<&-; }}
via "GET http://{bridge}:{other_port}/ HTTP/1.1\r\nHost: x\r\n\r\n" proxy_other
via "CONNECT 1.1.1.1:443 HTTP/1.1\r\nHost: x\r\n\r\n" proxy_outside
via "CONNECT {bridge}:MODELPORT HTTP/1.1\r\nHost: x\r\n\r\n" proxy_model
node -e "fetch('http://{bridge}:{other_port}/').then(r=>console.log('node_other='+r.status),e=>console.log('node_other=failed'))"
echo done"#
    );
    // The model's port is only known once it listens; the script is fixed before, so the
    // command reads it from the environment the daemon gives the agent.
    let command = command.replace("MODELPORT", "${ANTHROPIC_BASE_URL##*:}");
    let model = start_model(
        Script::new().rule(
            Rule::contains("check egress")
                .then(Step::bash(&command))
                .then(Step::text("RESULT {{last_tool_result}}")),
        ),
    )
    .await;
    let (dir, project) = workspace();
    let home = dir.path().join("home");
    // The model is addressed by the bridge IP, which the internal network cannot route to:
    // the CLI reaches it through the proxy, whose allowlist gets that host:port from
    // ANTHROPIC_BASE_URL; `allowed_hosts` itself lists only the real model API.
    let config = test_config(
        model.port(),
        dir.path(),
        "\"gates\": {\"egress\": {\"enabled\": true, \"allowed_hosts\": [\"api.anthropic.com\"]}}",
    )
    .replace(
        &format!("http://host.docker.internal:{}", model.port()),
        &format!("http://{bridge}:{}", model.port()),
    );
    let mut daemon = Daemon::start(&home, &config).await;

    let inbox = daemon
        .post_in("egress", &project, "please check egress")
        .await;
    let text = daemon.answer(inbox, Duration::from_secs(180)).await;
    let log = daemon.log_text();
    assert!(text.starts_with("RESULT "), "{text}\n{log}");
    assert!(text.contains("done"), "{text}");
    // No direct way out: not to the host's other server, not outside, not even to the model.
    assert!(text.contains("direct_other=closed"), "{text}");
    assert!(text.contains("direct_outside=closed"), "{text}");
    assert!(text.contains("direct_model=closed"), "{text}");
    // Through the proxy: only the allowlisted host:port.
    assert!(text.contains("proxy_other=HTTP/1.1 403"), "{text}");
    assert!(text.contains("proxy_outside=HTTP/1.1 403"), "{text}");
    assert!(text.contains("proxy_model=HTTP/1.1 200"), "{text}");
    assert!(!text.contains("node_other=200"), "{text}");
    assert!(!text.contains("other-secret"), "{text}");
    assert_eq!(other_hits.load(Ordering::SeqCst), 0, "{text}");
    // The control: the same server is reachable from a container on Docker's default bridge,
    // so "closed" above is the egress fence, not a server nobody could reach.
    let control = std::process::Command::new("docker")
        .args(["run", "--rm", "--entrypoint", "bash"])
        .arg(loop_e2e::support::test_image())
        .arg("-c")
        .arg(format!(
            "exec 3<>/dev/tcp/{bridge}/{other_port} && echo open"
        ))
        .output()
        .expect("docker run");
    assert!(
        String::from_utf8_lossy(&control.stdout).contains("open"),
        "{}",
        String::from_utf8_lossy(&control.stderr)
    );
    assert_eq!(other_hits.load(Ordering::SeqCst), 1);
    // The container really ran on the internal network.
    assert!(
        log.contains("egress control on"),
        "the daemon logs the egress setup:\n{log}"
    );
    let network = docker
        .inspect_network(
            loop_daemon::egress::NETWORK,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .expect("the egress network exists");
    assert_eq!(network.internal, Some(true));
    // A daemon that stops takes its firewall holes (the API and proxy ports) with it. Other
    // daemons' holes (other tests, runs killed before) may be in the chain too: count this
    // daemon's by the id its rules are tagged with.
    let api_port = |daemon: &Daemon| {
        daemon
            .addr()
            .and_then(|a| a.rsplit(':').next().map(str::to_owned))
            .expect("api addr")
    };
    let id = daemon.daemon_id().expect("daemon id").to_owned();
    let rules = firewall_rules();
    assert_eq!(holes_of(&rules, &id), 2, "{rules}");
    assert!(hole_at(&rules, &id, &api_port(&daemon)), "{rules}");
    // A daemon killed with -9 cannot remove its holes; its next start does, and opens its own.
    daemon.kill_9();
    assert_eq!(holes_of(&firewall_rules(), &id), 2);
    daemon.restart().await;
    let rules = firewall_rules();
    assert_eq!(holes_of(&rules, &id), 2, "no stale holes pile up: {rules}");
    assert!(hole_at(&rules, &id, &api_port(&daemon)), "{rules}");
    // Killed again, and never started again (its data directory deleted, say): the next
    // daemon that starts on this host, with a data directory of its own, closes the dead
    // one's holes, so whatever listens on those ports later stays out of the agents' reach.
    daemon.kill_9();
    assert_eq!(holes_of(&firewall_rules(), &id), 2);
    let mut other = Daemon::start(&dir.path().join("other-home"), &config).await;
    let other_id = other.daemon_id().expect("daemon id").to_owned();
    assert_ne!(other_id, id);
    let rules = firewall_rules();
    assert_eq!(holes_of(&rules, &id), 0, "the dead daemon's holes: {rules}");
    assert_eq!(holes_of(&rules, &other_id), 2, "{rules}");
    assert!(hole_at(&rules, &other_id, &api_port(&other)), "{rules}");
    assert!(other.terminate().success());
    let rules = firewall_rules();
    assert_eq!(holes_of(&rules, &other_id), 0, "{rules}");
}

/// How many holes in the egress chain the daemon `id` made.
fn holes_of(rules: &str, id: &str) -> usize {
    rules.matches(&format!("\"loop:{id}:")).count()
}

/// Whether the daemon `id` made a hole for `port`.
fn hole_at(rules: &str, id: &str, port: &str) -> bool {
    rules.lines().any(|line| {
        line.contains(&format!("--dport {port} ")) && line.contains(&format!("\"loop:{id}:"))
    })
}

fn firewall_rules() -> String {
    let output = std::process::Command::new("iptables")
        .args(["-w", "-S", loop_daemon::egress::CHAIN])
        .output()
        .expect("iptables");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The bot's messages in a thread that tell about `host:port` being refused.
fn refusal_notices<'a>(thread: &'a [SlackMessage], host_port: &str) -> Vec<&'a SlackMessage> {
    let needle = format!("Egress refused `{host_port}`");
    thread.iter().filter(|m| m.text.contains(&needle)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allowed_name_leading_to_the_host_or_metadata_is_refused_and_the_thread_says_why() {
    let Some(docker) = docker().await else {
        return;
    };
    let bridge = bridge_ip(&docker).await;
    // Two pages on the host's loopback: one no container may read, and the positive control
    // on 127.0.0.2, an address the allowlist names explicitly.
    let (secret_port, secret_hits) = page_server("127.0.0.1", "loopback-secret").await;
    let (control_port, control_hits) = page_server("127.0.0.2", "control-page").await;
    // What the names under the allowlist resolve to, for the daemon only: an attacker's DNS
    // record, or an internal name, would do the same.
    let hosts = [
        ("127.0.0.1", "x.allowed.test"),
        ("::ffff:127.0.0.1", "mapped.allowed.test"),
        ("127.0.0.2", "ok.allowed.test"),
        ("169.254.169.254", "meta.allowed.test"),
    ];
    // A plain HTTP client that honours HTTP_PROXY (the image has no curl); x.allowed.test is
    // asked twice, as an agent retrying would.
    let command = format!(
        r#"cat > /tmp/get.py <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=20) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode().strip())
except Exception as e:
    print("error", e)
PY
get() {{ echo "$1=$(python3 /tmp/get.py "$2")"; }}
get loop1 http://x.allowed.test:{secret_port}/
get loop2 http://x.allowed.test:{secret_port}/
get mapped http://mapped.allowed.test:{secret_port}/
get control http://ok.allowed.test:{control_port}/
get meta http://meta.allowed.test/latest/meta-data/
echo done"#
    );
    let model = start_model(
        Script::new().rule(
            Rule::contains("check the internal pages")
                .then(Step::bash(&command))
                .then(Step::text("RESULT {{last_tool_result}}")),
        ),
    )
    .await;
    let slack = FakeSlack::start().await.expect("fake slack");
    let (dir, _project) = workspace();
    let home = dir.path().join("home");
    let egress = format!(
        r#""gates": {{"egress": {{"enabled": true, "allowed_hosts": ["api.anthropic.com", "*.allowed.test", "*.allowed.test:{secret_port}", "*.allowed.test:{control_port}", "127.0.0.2:{control_port}"]}}}}"#
    );
    // The model by the bridge address, which the allowlist gets from ANTHROPIC_BASE_URL.
    let config = slack_config(&model, &slack, dir.path(), &egress).replace(
        &format!("http://host.docker.internal:{}", model.port()),
        &format!("http://{bridge}:{}", model.port()),
    );
    let daemon = Daemon::start_with_hosts(&home, &config, &hosts).await;
    connected(&slack, &daemon).await;

    let question = slack.post_as_user(
        "UALICE",
        "C1",
        &format!("{} please check the internal pages", FakeSlack::mention()),
        None,
    );
    let thread = thread_until(
        &slack,
        &daemon,
        "C1",
        &question.ts,
        "the answer",
        TURN,
        |m| m.iter().any(|m| m.text.contains("RESULT")),
    )
    .await;
    let answer = thread
        .iter()
        .find(|m| m.text.contains("RESULT"))
        .map(|m| m.text.clone())
        .unwrap_or_default();
    let log = daemon.log_text();
    assert!(answer.contains("done"), "{answer}\n{log}");
    // The agent got a 403 that says why, and never the page.
    assert!(!answer.contains("loopback-secret"), "{answer}");
    assert_eq!(secret_hits.load(Ordering::SeqCst), 0, "{answer}");
    assert!(
        answer.contains("loop1=403")
            && answer.contains("x.allowed.test resolves to 127.0.0.1, a loopback address"),
        "{answer}"
    );
    assert!(answer.contains("loop2=403"), "{answer}");
    assert!(
        answer.contains("mapped=403")
            && answer.contains("mapped.allowed.test resolves to 127.0.0.1"),
        "{answer}"
    );
    assert!(
        answer.contains("meta=403")
            && answer.contains("meta.allowed.test resolves to 169.254.169.254, a link-local"),
        "{answer}"
    );
    // The control: the address the allowlist names is served, through the same proxy.
    assert!(
        answer.contains("control=200 control-page"),
        "{answer}\n{log}"
    );
    assert_eq!(control_hits.load(Ordering::SeqCst), 1);
    let secret = format!("x.allowed.test:{secret_port}");
    let mapped = format!("mapped.allowed.test:{secret_port}");
    let thread = thread_until(
        &slack,
        &daemon,
        "C1",
        &question.ts,
        "the refusal notices",
        Duration::from_secs(30),
        |m| {
            !refusal_notices(m, &secret).is_empty()
                && !refusal_notices(m, &mapped).is_empty()
                && !refusal_notices(m, "meta.allowed.test:80").is_empty()
        },
    )
    .await;
    // The person in the thread reads which host was refused and why: one line per host,
    // though the agent asked twice, and none for the allowed control.
    let notices = refusal_notices(&thread, &secret);
    assert_eq!(notices.len(), 1, "{thread:#?}");
    assert!(
        notices[0].text.contains("127.0.0.1") && notices[0].text.contains("loopback"),
        "{thread:#?}"
    );
    assert_eq!(refusal_notices(&thread, &mapped).len(), 1, "{thread:#?}");
    let metadata = refusal_notices(&thread, "meta.allowed.test:80");
    assert_eq!(metadata.len(), 1, "{thread:#?}");
    assert!(
        metadata[0].text.contains("169.254.169.254") && metadata[0].text.contains("link-local"),
        "{thread:#?}"
    );
    assert!(
        !thread.iter().any(|m| m.text.contains("ok.allowed.test")),
        "{thread:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_gateway_on_host_docker_internal_is_reachable_through_the_proxy() {
    if docker().await.is_none() {
        return;
    }
    let model = start_model(
        Script::new().rule(Rule::contains("say hello").then(Step::text("hello from the gateway"))),
    )
    .await;
    let (dir, project) = workspace();
    let home = dir.path().join("home");
    // test_config points ANTHROPIC_BASE_URL at http://host.docker.internal:PORT, as a model
    // gateway on the host is usually configured; the allowlist itself names only the real API.
    let config = test_config(
        model.port(),
        dir.path(),
        r#""gates": {"egress": {"enabled": true, "allowed_hosts": ["api.anthropic.com"]}}"#,
    );
    assert!(config.contains("http://host.docker.internal:"), "{config}");
    let daemon = Daemon::start(&home, &config).await;
    let inbox = daemon
        .post_in("gateway", &project, "please say hello")
        .await;
    let text = daemon.answer(inbox, TURN).await;
    assert_eq!(text, "hello from the gateway", "{}", daemon.log_text());
}
