//! Egress control end to end (`gates.egress`): a real `loop serve` puts the agent container on
//! the internal `loop-egress` network, the real Claude Code CLI reaches the fake model only
//! through the daemon's allowlisting proxy, and the agent's own Bash cannot reach anything
//! else: not a second server on the host that is not allowlisted (directly or through the
//! proxy), not an outside address.

use std::sync::atomic::Ordering;
use std::time::Duration;

use loop_e2e::daemon::{Daemon, test_config};
use loop_e2e::support::{bridge_ip, docker, other_server, start_model, workspace};
use loop_fakes::model::{Rule, Script, Step};

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
            loop_bot::egress::NETWORK,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .expect("the egress network exists");
    assert_eq!(network.internal, Some(true));
    // A daemon that stops takes its firewall holes (the API and proxy ports) with it.
    let api_port = daemon
        .addr()
        .and_then(|a| a.rsplit(':').next().map(str::to_owned))
        .expect("api addr");
    let rules = firewall_rules();
    let owner = rules
        .lines()
        .find(|l| l.contains(&format!("--dport {api_port} ")))
        .and_then(|l| l.split("--comment ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("the API's hole is tagged with the daemon: {rules}"));
    assert_eq!(rules.matches(owner.as_str()).count(), 2, "{rules}");
    // A daemon killed with -9 cannot remove its holes; its next start does, and opens its own.
    daemon.kill_9();
    assert_eq!(firewall_rules().matches(owner.as_str()).count(), 2);
    daemon.restart().await;
    let rules = firewall_rules();
    assert_eq!(
        rules.matches(owner.as_str()).count(),
        2,
        "no stale holes pile up: {rules}"
    );
    let api_port = daemon
        .addr()
        .and_then(|a| a.rsplit(':').next().map(str::to_owned))
        .expect("api addr");
    assert!(rules.contains(&format!("--dport {api_port} ")), "{rules}");
    assert!(daemon.terminate().success());
    let rules = firewall_rules();
    assert!(!rules.contains(&format!("--dport {api_port} ")), "{rules}");
}

fn firewall_rules() -> String {
    let output = std::process::Command::new("iptables")
        .args(["-w", "-S", loop_bot::egress::CHAIN])
        .output()
        .expect("iptables");
    String::from_utf8_lossy(&output.stdout).into_owned()
}
