//! Egress control (`gates.egress`): agent containers on an internal Docker network whose only
//! way out is an HTTP proxy run by the daemon, which lets through listed hosts only.
//!
//! The daemon creates the network [`NETWORK`] (`--internal`: Docker gives its containers no
//! default route and drops forwarding to other interfaces), binds the proxy and the host API
//! on that network's gateway address (the host side of its bridge, the one address such a
//! container can reach), and gives containers `HTTP(S)_PROXY=http://GATEWAY:PORT`, an API URL
//! of `http://GATEWAY:APIPORT` and `NO_PROXY` with that gateway.
//!
//! The proxy understands `CONNECT host:port` (HTTPS and any other tunnel) and plain-HTTP
//! requests in absolute form (`GET http://host[:port]/path`). Anything else, and any host:port
//! not in the allowlist, gets `403`. An allowlist entry is `host`, `host:port`, `*.domain`, an
//! address or a CIDR range (`[v6]:port` for IPv6); without a port it allows 80 and 443. Names
//! are compared as written by the client, case-insensitively, and resolved on the host, once:
//! the proxy connects to the addresses it checked. An address that is the host's, private,
//! link-local, multicast or otherwise not on the internet ([`address`]) is refused unless an
//! entry names it or its range; [`HOST_ALIAS`] leads to the host's bridge gateway when an
//! entry names it. Such a refusal is told to the thread of the container that asked
//! ([`notice`]).

mod address;
mod firewall;
pub mod notice;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use address::Restricted;
pub use firewall::{CHAIN, Firewall, FirewallError};

/// The internal Docker network agent containers join when egress control is on.
pub const NETWORK: &str = "loop-egress";
/// The host that is always allowed when `allowed_hosts` is empty: the model API.
pub const DEFAULT_HOST: &str = "api.anthropic.com";
/// The longest request head the proxy reads before refusing.
const MAX_HEAD: usize = 16 * 1024;
/// How long a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to an allowed upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("docker network {NETWORK}: {0}")]
    Network(#[from] bollard::errors::Error),
    #[error("docker network {NETWORK} exists but is not internal; remove it or rename it")]
    NotInternal,
    #[error("docker network {NETWORK} has no IPv4 gateway")]
    NoGateway,
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    #[error("cannot bind the egress proxy on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The Linux bridge loop asks Docker to name the network's interface.
pub const BRIDGE: &str = "loop-egress0";

/// Creates the internal network when missing; returns its gateway address and bridge name.
pub async fn ensure_network(docker: &Docker) -> Result<(Ipv4Addr, String), EgressError> {
    let existing = docker
        .inspect_network(
            NETWORK,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await;
    let network = match existing {
        Ok(network) => network,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            docker
                .create_network(NetworkCreateRequest {
                    name: NETWORK.to_owned(),
                    driver: Some("bridge".to_owned()),
                    internal: Some(true),
                    labels: Some([("loop.egress".to_owned(), "1".to_owned())].into()),
                    options: Some(
                        [(
                            "com.docker.network.bridge.name".to_owned(),
                            BRIDGE.to_owned(),
                        )]
                        .into(),
                    ),
                    ..Default::default()
                })
                .await?;
            docker
                .inspect_network(
                    NETWORK,
                    None::<bollard::query_parameters::InspectNetworkOptions>,
                )
                .await?
        }
        Err(err) => return Err(err.into()),
    };
    if network.internal != Some(true) {
        return Err(EgressError::NotInternal);
    }
    // Docker names a bridge `br-` and the network id's first 12 characters unless told.
    let bridge = network
        .options
        .as_ref()
        .and_then(|o| o.get("com.docker.network.bridge.name").cloned())
        .or_else(|| {
            network
                .id
                .as_ref()
                .and_then(|id| id.get(..12))
                .map(|id| format!("br-{id}"))
        })
        .ok_or(EgressError::NoGateway)?;
    let gateway = network
        .ipam
        .and_then(|ipam| ipam.config)
        .into_iter()
        .flatten()
        .find_map(|c| c.gateway.and_then(|g| g.parse::<Ipv4Addr>().ok()))
        .ok_or(EgressError::NoGateway)?;
    Ok((gateway, bridge))
}

/// The allowlist: `allowed_hosts` (or [`DEFAULT_HOST`] when empty) plus the host of
/// `ANTHROPIC_BASE_URL` when `envs` sets one, since the model must stay reachable.
pub fn allowlist(allowed_hosts: &[String], base_url: Option<&str>) -> Allowlist {
    let mut entries: Vec<Entry> = if allowed_hosts.is_empty() {
        vec![Entry::parse(DEFAULT_HOST)]
    } else {
        allowed_hosts.iter().map(|h| Entry::parse(h)).collect()
    };
    if let Some(url) = base_url.and_then(|u| reqwest::Url::parse(u).ok())
        && let Some(host) = url.host_str()
    {
        let mut entry = Entry::parse(host.trim_matches(['[', ']']));
        entry.port = url.port_or_known_default();
        entries.push(entry);
    }
    Allowlist {
        entries,
        host_gateway: None,
    }
}

/// Which host:port pairs the proxy lets through, and which restricted addresses
/// ([`address::classify`]) they may lead to.
#[derive(Debug, Clone)]
pub struct Allowlist {
    entries: Vec<Entry>,
    /// Where [`HOST_ALIAS`] leads: the address Docker's `host-gateway` gives containers on
    /// the default bridge, so a model gateway the config calls `host.docker.internal` is the
    /// same server with egress on or off.
    host_gateway: Option<IpAddr>,
}

/// The name containers use for the host (Docker's convention).
pub const HOST_ALIAS: &str = loop_runner::spec::HOST_ALIAS;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    pattern: Pattern,
    /// `None`: 80 and 443.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// A lower-case name, matched as the client wrote it.
    Name(String),
    /// `*.example.com`: subdomains of the (lower-case) domain, not the domain itself.
    Subdomains(String),
    /// An address or a CIDR range: requests for addresses in it, and names resolving into
    /// it even when it is restricted.
    Addresses(IpNet),
}

impl Entry {
    fn parse(text: &str) -> Entry {
        let text = text.trim();
        let (host, port) = split_host_port(text).unwrap_or((text, None));
        let host = host.to_ascii_lowercase();
        let pattern = if let Ok(net) = host.parse::<IpNet>() {
            Pattern::Addresses(net.trunc())
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            Pattern::Addresses(IpNet::from(ip))
        } else if let Some(domain) = host.strip_prefix("*.") {
            Pattern::Subdomains(domain.to_owned())
        } else {
            Pattern::Name(host)
        };
        Entry { pattern, port }
    }

    fn port_matches(&self, port: u16) -> bool {
        match self.port {
            Some(p) => p == port,
            None => port == 80 || port == 443,
        }
    }

    /// Whether a request for `host` (lower case, no brackets) matches.
    fn matches(&self, host: &str, port: u16) -> bool {
        let host_ok = match &self.pattern {
            Pattern::Name(name) => name == host,
            Pattern::Subdomains(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
            Pattern::Addresses(net) => host
                .parse::<IpAddr>()
                .is_ok_and(|ip| net.contains(&ip.to_canonical())),
        };
        host_ok && self.port_matches(port)
    }

    /// Whether this entry names `ip` (canonical) explicitly, as an address or a range.
    fn names_address(&self, ip: IpAddr, port: u16) -> bool {
        matches!(&self.pattern, Pattern::Addresses(net) if net.contains(&ip))
            && self.port_matches(port)
    }
}

fn normalize_host(host: &str) -> String {
    host.trim_matches(['[', ']']).to_ascii_lowercase()
}

impl Allowlist {
    /// Maps [`HOST_ALIAS`] to `gateway` (the default bridge's, what `host-gateway` means to
    /// Docker): the proxy runs on the host, where that name does not resolve.
    pub fn with_host_gateway(mut self, gateway: Option<IpAddr>) -> Allowlist {
        self.host_gateway = gateway;
        self
    }

    /// Whether a request for `host:port` is allowed by name (or by address for an address).
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = normalize_host(host);
        self.entries.iter().any(|e| e.matches(&host, port))
    }

    /// The address the proxy connects to for `host` without asking the resolver:
    /// [`HOST_ALIAS`], when an entry names it exactly, leads to the host's bridge gateway.
    pub fn fixed_address(&self, host: &str, port: u16) -> Option<IpAddr> {
        let gateway = self.host_gateway?;
        let host = normalize_host(host);
        let named = self
            .entries
            .iter()
            .any(|e| e.pattern == Pattern::Name(HOST_ALIAS.to_owned()) && e.port_matches(port));
        (host == HOST_ALIAS && named).then_some(gateway)
    }

    /// The decision about one address an allowed `host` resolved to (or is): an address on
    /// the internet is fine; a restricted one ([`address::classify`]) only when an entry
    /// names it or its range for this port, or when it is where the allowlisted
    /// [`HOST_ALIAS`] leads.
    pub fn permits_address(&self, host: &str, ip: IpAddr, port: u16) -> Result<(), Restricted> {
        let ip = ip.to_canonical();
        let Some(restricted) = address::classify(ip) else {
            return Ok(());
        };
        let named = self.entries.iter().any(|e| e.names_address(ip, port));
        let is_host_alias = self.fixed_address(host, port) == Some(ip);
        if named || is_host_alias {
            Ok(())
        } else {
            Err(restricted)
        }
    }

    /// The entries as configured, for the start-up log.
    pub fn describe(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| {
                let host = match &e.pattern {
                    Pattern::Name(name) => name.clone(),
                    Pattern::Subdomains(domain) => format!("*.{domain}"),
                    Pattern::Addresses(net) if net.prefix_len() == net.max_prefix_len() => {
                        match net.addr() {
                            IpAddr::V6(v6) if e.port.is_some() => format!("[{v6}]"),
                            ip => ip.to_string(),
                        }
                    }
                    Pattern::Addresses(IpNet::V6(net)) if e.port.is_some() => format!("[{net}]"),
                    Pattern::Addresses(net) => net.to_string(),
                };
                match e.port {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                }
            })
            .collect()
    }
}

/// Splits `host:port`, `[v6]:port`, `host` or `[v6]`; `None` for an invalid port.
fn split_host_port(text: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, Some(port.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match text.rsplit_once(':') {
        // A bare IPv6 address has several colons and no port.
        Some((host, _)) if host.contains(':') => Some((text, None)),
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((text, None)),
    }
}

/// Binds the proxy on `gateway` (an ephemeral port).
pub async fn bind(gateway: Ipv4Addr) -> Result<TcpListener, EgressError> {
    let addr = SocketAddr::new(IpAddr::V4(gateway), 0);
    TcpListener::bind(addr)
        .await
        .map_err(|source| EgressError::Bind { addr, source })
}

/// How many refusals may wait for the daemon to tell their channels; more are dropped (the
/// log still has them), so a flood never slows the proxy.
pub const REFUSAL_BUFFER: usize = 64;

/// A request the proxy refused because the allowed host led to a restricted address: the
/// daemon tells the channel of the container that asked ([`notice`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The container that asked: its address on the internal network.
    pub peer: IpAddr,
    /// The host as the client wrote it (lower case) and the port.
    pub host: String,
    pub port: u16,
    /// The address the host resolved to (or is), and why it is off limits.
    pub address: IpAddr,
    pub restricted: Restricted,
}

impl Refusal {
    /// Why, in the words the agent (the proxy's `403`) and the thread read.
    pub fn reason(&self) -> String {
        format!(
            "{} resolves to {}, {}; gates.egress.allowed_hosts must list that address or its range",
            self.host,
            self.address,
            self.restricted.describe()
        )
    }
}

/// Serves the proxy until `stop` is cancelled; each connection on its own task.
/// `firewall` is dropped (its rules removed) when serving stops. Refusals of restricted
/// addresses go to `refusals` without waiting.
pub async fn serve(
    listener: TcpListener,
    allow: Allowlist,
    firewall: Firewall,
    refusals: mpsc::Sender<Refusal>,
    stop: CancellationToken,
) {
    let _firewall = firewall;
    let allow = std::sync::Arc::new(allow);
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, peer)) => {
                let (allow, refusals, stop) = (allow.clone(), refusals.clone(), stop.clone());
                connections.spawn(async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = handle(client, peer, &allow, &refusals) => {}
                    }
                });
            }
            Err(err) => {
                tracing::warn!(error = %err, "egress proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    connections.close();
    connections.wait().await;
}

/// What the client asked for.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// `CONNECT host:port`.
    Tunnel { host: String, port: u16 },
    /// An absolute-form plain-HTTP request; `head` is rewritten to origin form.
    Forward {
        host: String,
        port: u16,
        head: Vec<u8>,
    },
}

/// Why the proxy could not open the upstream connection of an allowed host.
#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error("cannot resolve the host: {0}")]
    Unresolved(std::io::Error),
    #[error("the host resolves to {address}, {}", restricted.describe())]
    Restricted {
        address: IpAddr,
        restricted: Restricted,
    },
    #[error("upstream unreachable: {0}")]
    Unreachable(std::io::Error),
    #[error("upstream timed out")]
    TimedOut,
}

/// Resolves `host` once, drops the addresses [`Allowlist::permits_address`] refuses and
/// connects to the first of the others that answers: the addresses checked are the ones
/// connected to, so a record that changes between a check and a connect cannot slip through.
async fn open_upstream(
    allow: &Allowlist,
    host: &str,
    port: u16,
) -> Result<TcpStream, UpstreamError> {
    let host = host.trim_matches(['[', ']']);
    let resolved: Vec<SocketAddr> = match allow.fixed_address(host, port) {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => tokio::net::lookup_host((host, port))
            .await
            .map_err(UpstreamError::Unresolved)?
            .collect(),
    };
    let mut permitted = Vec::with_capacity(resolved.len());
    let mut refused = None;
    for addr in resolved {
        match allow.permits_address(host, addr.ip(), port) {
            Ok(()) => permitted.push(addr),
            Err(restricted) => {
                tracing::debug!(host, address = %addr.ip(), ?restricted, "egress proxy: skipping a restricted address");
                refused.get_or_insert(UpstreamError::Restricted {
                    address: addr.ip().to_canonical(),
                    restricted,
                });
            }
        }
    }
    let mut last_error = None;
    for addr in permitted {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(err) => last_error = Some(err),
        }
    }
    Err(match (refused, last_error) {
        (_, Some(err)) => UpstreamError::Unreachable(err),
        (Some(refused), None) => refused,
        (None, None) => UpstreamError::Unresolved(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no addresses",
        )),
    })
}

async fn handle(
    mut client: TcpStream,
    peer: SocketAddr,
    allow: &Allowlist,
    refusals: &mpsc::Sender<Refusal>,
) {
    let (head, rest) = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await {
        Ok(Ok(read)) => read,
        Ok(Err(())) | Err(_) => {
            let _ = refuse(&mut client, 400, "bad request").await;
            return;
        }
    };
    let target = match parse_request(&head) {
        Ok(target) => target,
        Err(why) => {
            tracing::info!(%peer, why, "egress proxy: refused a request");
            let _ = refuse(&mut client, 403, why).await;
            return;
        }
    };
    let (host, port) = match &target {
        Target::Tunnel { host, port } | Target::Forward { host, port, .. } => (host.clone(), *port),
    };
    if !allow.allows(&host, port) {
        tracing::info!(%peer, host, port, "egress proxy: host not allowed");
        let _ = refuse(&mut client, 403, "host not allowed by gates.egress").await;
        return;
    }
    let upstream = tokio::time::timeout(CONNECT_TIMEOUT, open_upstream(allow, &host, port))
        .await
        .unwrap_or(Err(UpstreamError::TimedOut));
    let mut upstream = match upstream {
        Ok(stream) => stream,
        Err(UpstreamError::Restricted {
            address,
            restricted,
        }) => {
            let refusal = Refusal {
                peer: peer.ip().to_canonical(),
                host: normalize_host(&host),
                port,
                address,
                restricted,
            };
            let reason = refusal.reason();
            tracing::info!(%peer, host, port, %address, ?restricted, "egress proxy: refused a restricted address");
            let _ = refuse(&mut client, 403, &reason).await;
            if let Err(err) = refusals.try_send(refusal) {
                tracing::debug!(error = %err, "egress proxy: refusal not passed on to the channel");
            }
            return;
        }
        Err(err) => {
            tracing::info!(%peer, host, port, error = %err, "egress proxy: upstream failed");
            let status = if matches!(err, UpstreamError::TimedOut) {
                504
            } else {
                502
            };
            let _ = refuse(&mut client, status, &err.to_string()).await;
            return;
        }
    };
    tracing::debug!(%peer, host, port, "egress proxy: allowed");
    let started = match target {
        Target::Tunnel { .. } => client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_ok(),
        Target::Forward { head, .. } => upstream.write_all(&head).await.is_ok(),
    };
    if !started || (!rest.is_empty() && upstream.write_all(&rest).await.is_err()) {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// Reads up to the end of the request head; returns the head and any bytes after it.
async fn read_head(client: &mut TcpStream) -> Result<(Vec<u8>, Vec<u8>), ()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = client.read(&mut chunk).await.map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(());
        }
    }
}

/// Parses the request line; `Err` says why the request is refused.
fn parse_request(head: &[u8]) -> Result<Target, &'static str> {
    let text = std::str::from_utf8(head).map_err(|_| "request head is not UTF-8")?;
    let (line, headers) = text.split_once("\r\n").ok_or("no request line")?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed request line");
    };
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = split_host_port(target).ok_or("bad CONNECT target")?;
        let port = port.ok_or("CONNECT needs a port")?;
        return Ok(Target::Tunnel {
            host: host.to_owned(),
            port,
        });
    }
    let rest = target
        .strip_prefix("http://")
        .ok_or("only CONNECT and absolute http:// requests are proxied")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = split_host_port(authority).ok_or("bad request host")?;
    if host.is_empty() {
        return Err("bad request host");
    }
    let head = format!("{method} {path} {version}\r\n{headers}").into_bytes();
    Ok(Target::Forward {
        host: host.to_owned(),
        port: port.unwrap_or(80),
        head,
    })
}

async fn refuse(client: &mut TcpStream, status: u16, why: &str) -> std::io::Result<()> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        502 => "Bad Gateway",
        _ => "Gateway Timeout",
    };
    let body = format!("loop egress proxy: {why}\n");
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(response.as_bytes()).await?;
    client.shutdown().await
}

/// What the daemon set up for egress control at start.
#[derive(Debug)]
pub struct EgressSetup {
    /// The internal network's gateway: the proxy and the host API listen there.
    pub gateway: Ipv4Addr,
    /// The proxy's listener, served by [`serve`].
    pub proxy: TcpListener,
    pub allow: Allowlist,
    /// The network's bridge interface, for [`Firewall::install`].
    pub bridge: String,
}

impl EgressSetup {
    /// Creates the network and binds the proxy; the daemon binds the API on `gateway`.
    pub async fn start(docker: &Docker, allow: Allowlist) -> Result<EgressSetup, EgressError> {
        let (gateway, bridge) = ensure_network(docker).await?;
        let proxy = bind(gateway).await?;
        Ok(EgressSetup {
            gateway,
            proxy,
            allow,
            bridge,
        })
    }

    /// Lets the network reach the proxy and `api_port` on the gateway, nothing else on the
    /// host.
    pub fn firewall(&self, api_port: u16, daemon_id: &str) -> Result<Firewall, EgressError> {
        let proxy_port = self
            .proxy
            .local_addr()
            .map_err(|source| EgressError::Bind {
                addr: SocketAddr::new(IpAddr::V4(self.gateway), 0),
                source,
            })?
            .port();
        Ok(Firewall::install(
            &self.bridge,
            self.gateway,
            &[proxy_port, api_port],
            daemon_id,
        )?)
    }

    /// Points containers at the network, the proxy and the API on the gateway. The host's
    /// own proxy variables are replaced: the daemon's proxy is the only way out.
    pub fn apply(
        &self,
        facts: &mut crate::orchestrator::workspace::HostFacts,
        api_port: u16,
    ) -> Result<(), EgressError> {
        let proxy_addr = self
            .proxy
            .local_addr()
            .map_err(|source| EgressError::Bind {
                addr: SocketAddr::new(IpAddr::V4(self.gateway), 0),
                source,
            })?;
        let gateway = self.gateway;
        facts.network = Some(NETWORK.to_owned());
        facts.api_url = format!("http://{gateway}:{api_port}");
        let proxy = format!("http://{proxy_addr}");
        // Not `host.docker.internal`: the firewall keeps the network away from the host, so
        // the way to a server there (a model gateway) is the proxy, which maps the name.
        let no_proxy = format!("{gateway},localhost,127.0.0.1");
        facts.proxy_env = loop_runner::spec::PROXY_VARS
            .iter()
            .map(|var| ((*var).to_owned(), proxy.clone()))
            .chain(
                ["NO_PROXY", "no_proxy"]
                    .iter()
                    .map(|var| ((*var).to_owned(), no_proxy.clone())),
            )
            .collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_table() {
        let allow = allowlist(
            &[
                "api.anthropic.com".into(),
                "example.org:8443".into(),
                "*.github.com".into(),
                "[::1]:9".into(),
            ],
            Some("http://172.17.0.1:4000"),
        );
        let cases = [
            ("api.anthropic.com", 443, true),
            ("API.Anthropic.com", 80, true),
            ("api.anthropic.com", 22, false),
            ("example.org", 8443, true),
            ("example.org", 443, false),
            ("codeload.github.com", 443, true),
            ("github.com", 443, false),
            ("evilgithub.com", 443, false),
            ("[::1]", 9, true),
            ("172.17.0.1", 4000, true),
            ("172.17.0.1", 4001, false),
            ("1.1.1.1", 80, false),
        ];
        for (host, port, want) in cases {
            assert_eq!(allow.allows(host, port), want, "{host}:{port}");
        }
        let default = allowlist(&[], None);
        assert!(default.allows("api.anthropic.com", 443));
        assert!(!default.allows("example.org", 443));
    }

    #[test]
    fn allowlist_entries_for_addresses_and_ranges() {
        let allow = allowlist(
            &[
                "10.1.0.0/16".into(),
                "[fd00::/8]:8443".into(),
                "192.168.5.7:9000".into(),
            ],
            None,
        );
        let cases = [
            ("10.1.2.3", 443, true),
            ("10.1.2.3", 8443, false),
            ("10.2.0.1", 443, false),
            ("[fd12::1]", 8443, true),
            ("fd12::1", 8443, true),
            ("[fe80::1]", 8443, false),
            ("192.168.5.7", 9000, true),
            ("[::ffff:192.168.5.7]", 9000, true),
            ("192.168.5.8", 9000, false),
            ("example.org", 443, false),
        ];
        for (host, port, want) in cases {
            assert_eq!(allow.allows(host, port), want, "{host}:{port}");
        }
        assert_eq!(
            allow.describe(),
            ["10.1.0.0/16", "[fd00::/8]:8443", "192.168.5.7:9000"]
        );
    }

    /// The proxy's decision about an address an allowed host resolved to.
    #[test]
    fn address_decision_table() {
        use Restricted::*;
        let gateway: IpAddr = "172.17.0.1".parse().expect("ip");
        let allow = allowlist(
            &[
                "*.allowed.test".into(),
                "*.allowed.test:8080".into(),
                "127.0.0.2".into(),
                "10.20.0.0/16".into(),
                "[fd00:1::/32]:8080".into(),
                "198.51.100.0/24".into(),
            ],
            Some("http://host.docker.internal:4000"),
        )
        .with_host_gateway(Some(gateway));
        let cases: &[(&str, &str, u16, Result<(), Restricted>)] = &[
            // On the internet: fine, whatever name led there.
            ("a.allowed.test", "93.184.216.34", 443, Ok(())),
            ("a.allowed.test", "2606:4700::1111", 443, Ok(())),
            ("a.allowed.test", "::ffff:93.184.216.34", 443, Ok(())),
            // The host, private networks, metadata: refused, however spelled.
            ("a.allowed.test", "127.0.0.1", 80, Err(Loopback)),
            ("a.allowed.test", "::1", 443, Err(Loopback)),
            ("a.allowed.test", "::ffff:127.0.0.1", 80, Err(Loopback)),
            ("a.allowed.test", "0.0.0.0", 80, Err(Unspecified)),
            ("a.allowed.test", "::", 80, Err(Unspecified)),
            ("a.allowed.test", "10.0.0.5", 443, Err(Private)),
            ("a.allowed.test", "192.168.1.1", 443, Err(Private)),
            ("a.allowed.test", "fc00::5", 443, Err(Private)),
            ("a.allowed.test", "fd00:ec2::254", 80, Err(Private)),
            ("a.allowed.test", "fe80::1", 443, Err(LinkLocal)),
            ("a.allowed.test", "169.254.169.254", 80, Err(LinkLocal)),
            (
                "a.allowed.test",
                "::ffff:169.254.169.254",
                80,
                Err(LinkLocal),
            ),
            ("a.allowed.test", "100.64.0.1", 443, Err(SharedAddressSpace)),
            ("a.allowed.test", "224.0.0.251", 443, Err(Multicast)),
            ("a.allowed.test", "ff02::1", 443, Err(Multicast)),
            // An address or range the allowlist names is permitted, on the entry's ports.
            ("a.allowed.test", "127.0.0.2", 443, Ok(())),
            ("a.allowed.test", "::ffff:127.0.0.2", 443, Ok(())),
            ("a.allowed.test", "127.0.0.2", 8080, Err(Loopback)),
            ("a.allowed.test", "10.20.3.4", 80, Ok(())),
            ("a.allowed.test", "10.21.3.4", 80, Err(Private)),
            ("a.allowed.test", "fd00:1:2::3", 8080, Ok(())),
            ("a.allowed.test", "fd00:1:2::3", 443, Err(Private)),
            ("198.51.100.7", "198.51.100.7", 443, Ok(())),
            // host.docker.internal leads to the bridge gateway, for that name only.
            ("host.docker.internal", "172.17.0.1", 4000, Ok(())),
            ("HOST.docker.internal", "172.17.0.1", 4000, Ok(())),
            ("host.docker.internal", "172.17.0.1", 4001, Err(Private)),
            ("a.allowed.test", "172.17.0.1", 443, Err(Private)),
        ];
        for (host, address, port, want) in cases {
            let ip: IpAddr = address.parse().expect(address);
            assert_eq!(
                allow.permits_address(host, ip, *port),
                *want,
                "{host} -> {address}:{port}"
            );
        }
    }

    #[test]
    fn host_docker_internal_is_the_bridge_gateway_when_named() {
        let gateway: IpAddr = "172.17.0.1".parse().expect("ip");
        let named = allowlist(&[], Some("http://host.docker.internal:4000"))
            .with_host_gateway(Some(gateway));
        assert_eq!(
            named.fixed_address("host.docker.internal", 4000),
            Some(gateway)
        );
        assert_eq!(named.fixed_address("host.docker.internal", 4001), None);
        assert_eq!(named.fixed_address("api.anthropic.com", 443), None);
        let wildcard =
            allowlist(&["*.docker.internal:4000".into()], None).with_host_gateway(Some(gateway));
        assert!(wildcard.allows("host.docker.internal", 4000));
        assert_eq!(wildcard.fixed_address("host.docker.internal", 4000), None);
        let unknown = allowlist(&[], Some("http://host.docker.internal:4000"));
        assert_eq!(unknown.fixed_address("host.docker.internal", 4000), None);
    }

    #[test]
    fn request_lines() {
        assert_eq!(
            parse_request(b"CONNECT api.anthropic.com:443 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(Target::Tunnel {
                host: "api.anthropic.com".into(),
                port: 443
            })
        );
        assert_eq!(
            parse_request(b"GET http://h:81/a?b HTTP/1.1\r\nHost: h\r\n\r\n"),
            Ok(Target::Forward {
                host: "h".into(),
                port: 81,
                head: b"GET /a?b HTTP/1.1\r\nHost: h\r\n\r\n".to_vec()
            })
        );
        assert!(matches!(
            parse_request(b"GET http://u@h HTTP/1.1\r\n\r\n"),
            Ok(Target::Forward { port: 80, .. })
        ));
        assert!(parse_request(b"GET /local HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request(b"GET https://h/ HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request(b"CONNECT h HTTP/1.1\r\n\r\n").is_err());
    }
}
