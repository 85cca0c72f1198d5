//! Telling the person in the thread about a refused host. The proxy only knows the address
//! of the container that asked; the daemon finds that container on the internal network, its
//! channel label names the channel it serves (a container the agent started through its docker
//! proxy names its agent, whose label does), and the orchestrator posts one line per host
//! and turn.

use std::net::IpAddr;

use bollard::Docker;
use bollard::models::ContainerSummary;
use bollard::query_parameters::ListContainersOptions;
use loop_runner::naming::{LABEL_CHANNEL, LABEL_DAEMON, LABEL_PROXY_DAEMON, LABEL_PROXY_OWNER};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{NETWORK, Refusal};
use crate::orchestrator::Orchestrator;

/// Posts each refusal from the proxy in the thread of the container that asked, until `stop`.
pub async fn tell_channels(
    mut refusals: mpsc::Receiver<Refusal>,
    docker: Docker,
    daemon_id: String,
    orchestrator: Orchestrator,
    stop: CancellationToken,
) {
    loop {
        let refusal = tokio::select! {
            () = stop.cancelled() => return,
            refusal = refusals.recv() => match refusal {
                Some(refusal) => refusal,
                None => return,
            },
        };
        let containers = docker
            .list_containers(Some(ListContainersOptions {
                filters: Some([("network".to_owned(), vec![NETWORK.to_owned()])].into()),
                ..Default::default()
            }))
            .await;
        let containers = match containers {
            Ok(containers) => containers,
            Err(err) => {
                tracing::warn!(error = %err, "egress: cannot find the container of a refused request");
                continue;
            }
        };
        let Some(slug) = channel_of(&containers, &daemon_id, refusal.peer) else {
            tracing::debug!(peer = %refusal.peer, "egress: a refused request came from no container of this daemon");
            continue;
        };
        let host = format!("{}:{}", refusal.host, refusal.port);
        let text = format!("🌐 Egress refused `{host}`: {}.", refusal.reason());
        orchestrator.tell_egress_refusal(&slug, &host, &text).await;
    }
}

/// The channel label of the container at `peer` on the internal network, when it is one of
/// this daemon's agents or a container one of them started through its docker proxy.
fn channel_of(containers: &[ContainerSummary], daemon_id: &str, peer: IpAddr) -> Option<String> {
    let label = |container: &ContainerSummary, key: &str| {
        container
            .labels
            .as_ref()
            .and_then(|labels| labels.get(key))
            .cloned()
    };
    let agent_channel = |container: &ContainerSummary| {
        (label(container, LABEL_DAEMON).as_deref() == Some(daemon_id))
            .then(|| label(container, LABEL_CHANNEL))
            .flatten()
    };
    let asking = containers
        .iter()
        .find(|c| address_on_network(c) == Some(peer))?;
    if let Some(channel) = agent_channel(asking) {
        return Some(channel);
    }
    if label(asking, LABEL_PROXY_DAEMON).as_deref() != Some(daemon_id) {
        return None;
    }
    let owner = label(asking, LABEL_PROXY_OWNER)?;
    containers
        .iter()
        .find(|c| {
            c.names
                .iter()
                .flatten()
                .any(|name| name.trim_start_matches('/') == owner)
        })
        .and_then(agent_channel)
}

/// The container's IPv4 or IPv6 address on [`NETWORK`].
fn address_on_network(container: &ContainerSummary) -> Option<IpAddr> {
    let endpoint = container
        .network_settings
        .as_ref()?
        .networks
        .as_ref()?
        .get(NETWORK)?;
    [&endpoint.ip_address, &endpoint.global_ipv6_address]
        .into_iter()
        .flatten()
        .find_map(|address| address.parse::<IpAddr>().ok())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bollard::models::{ContainerSummaryNetworkSettings, EndpointSettings};

    use super::*;

    fn container(name: &str, ip: &str, labels: &[(&str, &str)]) -> ContainerSummary {
        ContainerSummary {
            names: Some(vec![format!("/{name}")]),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            network_settings: Some(ContainerSummaryNetworkSettings {
                networks: Some(HashMap::from([(
                    NETWORK.to_owned(),
                    EndpointSettings {
                        ip_address: Some(ip.to_owned()),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_asking_container_names_its_channel() {
        let containers = [
            container(
                "loop-slack-C1-1",
                "172.30.0.2",
                &[(LABEL_DAEMON, "d1"), (LABEL_CHANNEL, "slack-C1-1")],
            ),
            container(
                "loop-local-x",
                "172.30.0.3",
                &[(LABEL_DAEMON, "d2"), (LABEL_CHANNEL, "local-x")],
            ),
            container(
                "nested",
                "172.30.0.4",
                &[
                    (LABEL_PROXY_DAEMON, "d1"),
                    (LABEL_PROXY_OWNER, "loop-slack-C1-1"),
                ],
            ),
            container(
                "stray",
                "172.30.0.5",
                &[(LABEL_PROXY_DAEMON, "d1"), (LABEL_PROXY_OWNER, "gone")],
            ),
        ];
        let cases = [
            ("172.30.0.2", Some("slack-C1-1")),
            // Another daemon's agent on the shared network: not ours to tell.
            ("172.30.0.3", None),
            // A container the agent started is its agent's business.
            ("172.30.0.4", Some("slack-C1-1")),
            ("172.30.0.5", None),
            ("172.30.0.9", None),
        ];
        for (peer, want) in cases {
            let peer: IpAddr = peer.parse().expect("ip");
            assert_eq!(
                channel_of(&containers, "d1", peer).as_deref(),
                want,
                "{peer}"
            );
        }
    }
}
