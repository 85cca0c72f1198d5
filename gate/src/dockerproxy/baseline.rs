//! The proxy's baseline: what no rule can allow, checked before the user rules, and the
//! rewrites that keep nested containers tied to the agent.
//!
//! Pure: [`ProxyPolicy::plan`] and [`ProxyPolicy::check_body`] say which objects the server
//! must look up on the daemon ([`Lookup`]: is this container the agent's own?) and
//! [`ProxyPolicy::apply`] rewrites names to the full ids those lookups returned, so that a name
//! the agent could re-point between the check and the call (a prefix, a reused name) is never
//! what reaches the daemon.
//!
//! # What the baseline refuses
//!
//! - Containers: `Privileged`, `CapAdd`, `Capabilities`, `Devices`, `DeviceRequests`,
//!   `DeviceCgroupRules`, `Sysctls`, `CgroupParent`, `SecurityOpt` other than
//!   `no-new-privileges`, `MaskedPaths`/`ReadonlyPaths` (unmasking `/proc`), `Annotations`,
//!   `VolumeDriver`, `Links`, host `PidMode`/`IpcMode`/`NetworkMode`/`UsernsMode`/`UTSMode`/
//!   `CgroupnsMode`, `container:X` modes and `VolumesFrom` of containers that are not the
//!   agent's, runtimes other than runc/runsc, log drivers that send elsewhere (the daemon would
//!   connect from the host), restart policies that outlive the agent, a negative
//!   `OomScoreAdj`, `OomKillDisable`, ports published on other than loopback,
//!   `PublishAllPorts`; bind mounts (`Binds`, `Mounts` of type bind) of anything but an allowed
//!   directory itself; named volumes of another channel; volume mounts with driver options.
//! - Exec: `Privileged`. Start: a body (old APIs took a `HostConfig` there).
//! - Objects: every `/containers/{id}`, `/exec/{id}`, `/networks/{id}` call on something the
//!   agent did not create through this proxy; `/volumes/{name}` of another channel.
//! - Images: tagging, building (`t=`), pulling, importing or removing the protected images;
//!   `/images/load` (its tags cannot be checked before they land); import from a URL and
//!   `/build?remote=` (the daemon would fetch it from the host's network); BuildKit
//!   (`version=2`, `/session`, `/grpc`); `pull=1` on builds; host network for builds.
//! - Swarm, services, nodes, tasks, secrets, configs, plugins, `/system/df`, every `prune`,
//!   unknown endpoints, API versions before 1.24, form-encoded bodies.
//! - With egress control: another network than the internal one, network create, connect and
//!   disconnect, pushes, registry search and login.
//!
//! # What it rewrites
//!
//! Created containers get the owner (and daemon) label, `MKNOD` dropped (no device nodes in
//! the host directories they mount) and a pids limit when they have none; with egress control
//! their network becomes the internal one. Lists and events are filtered to the agent's own
//! objects.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::endpoint::{ContainerOp, Endpoint, ExecOp, ForbiddenArea, ImageOp, NetworkOp, VolumeOp};
pub use super::names::{normalize_host_path, repository_of};
use super::policy::{ProxyContext, ProxyPolicyError, ProxyPolicyFile, RuleDecision, Rules};
pub use super::refusal::Refusal;
use super::request::{ApiPath, Query, Span, get_ci, get_ci_mut, key_ci};
use loop_wire::container::labels::{
    PROXY_CHANNEL as CHANNEL_LABEL, PROXY_DAEMON as DAEMON_LABEL, PROXY_OWNER as OWNER_LABEL,
    PROXY_PREFIX as LABEL_PREFIX,
};

/// Pids limit given to a created container that has none (a fork bomb would hit the host).
pub const DEFAULT_PIDS_LIMIT: i64 = 4096;

/// Runtimes a nested container may ask for: runc (the default) and gVisor.
const RUNTIMES: &[&str] = &["", "runc", "io.containerd.runc.v2", "runsc"];
/// Log drivers that keep logs on the host; the others make the daemon connect somewhere.
const LOG_DRIVERS: &[&str] = &["", "json-file", "local", "none"];

/// One request, read the way the daemon reads it.
#[derive(Debug, Clone)]
pub struct Call {
    /// Upper case.
    pub method: String,
    /// The path.
    pub path: ApiPath,
    /// The query.
    pub query: Query,
    /// Which endpoint.
    pub endpoint: Endpoint,
}

impl Call {
    /// Reads a request line. `content_types` are the values of every `Content-Type` header.
    pub fn parse(
        method: &str,
        raw_path: &str,
        raw_query: Option<&str>,
        content_types: &[&str],
    ) -> Result<Call, Refusal> {
        let path = ApiPath::parse(raw_path).map_err(|e| Refusal::bad_request(e.0))?;
        let query = Query::parse(raw_query).map_err(|e| Refusal::bad_request(e.0))?;
        // The daemon reads form parameters from the body of a form-encoded POST before the
        // query (Go's `r.Form`), so the query the proxy checked would not be what counts. Go
        // looks at the first Content-Type; the proxy at every one.
        for ct in content_types {
            let media = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if media == "application/x-www-form-urlencoded" {
                return Err(Refusal::deny(
                    "form_body",
                    "form-encoded request bodies are not accepted (the Docker API uses the query string)",
                ));
            }
        }
        let method = method.to_ascii_uppercase();
        let endpoint = Endpoint::classify(&method, &path);
        Ok(Call {
            method,
            path,
            query,
            endpoint,
        })
    }

    /// The version-stripped path rules see.
    pub fn route(&self) -> String {
        self.path.route()
    }
}

/// What happens to a request's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyHandling {
    /// Forwarded as it streams (tar archives, build contexts, stdin).
    Stream,
    /// Read whole (with a size cap), checked and possibly rewritten.
    Json,
    /// Must be empty.
    Empty,
    /// A build context: streamed through [`super::build::ContextScanner`], its last bytes held
    /// back until the Dockerfile and its base images passed.
    BuildContext,
}

/// Something the server must ask the daemon before the request may go on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lookup {
    /// The container in the path must be the agent's; the path gets its full id.
    PathContainer(Span),
    /// The exec instance in the path must belong to one of the agent's containers.
    PathExec(Span),
    /// The network in the path must be the agent's; the path gets its full id.
    PathNetwork(Span),
    /// The volume in the path must be the channel's.
    PathVolume(Span),
    /// The container named by this query parameter must be the agent's (`/commit?container=`).
    QueryContainer(&'static str),
    /// A container named in the body must be the agent's.
    Container(String),
    /// A network named in the body must be the agent's.
    Network(String),
    /// A named volume a container mounts: the channel's, or created for it now.
    UseVolume(String),
    /// An image about to be removed must not carry a protected tag.
    ImageRemoval(String),
}

/// What a request needs before it can be forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Body handling.
    pub body: BodyHandling,
    /// Lookups, in order, without repeats.
    pub lookups: Vec<Lookup>,
    /// The query to forward instead of the original.
    pub query: Option<Query>,
}

impl Plan {
    fn new(body: BodyHandling) -> Plan {
        Plan {
            body,
            lookups: Vec::new(),
            query: None,
        }
    }

    fn with(mut self, lookup: Lookup) -> Plan {
        self.add(lookup);
        self
    }

    fn add(&mut self, lookup: Lookup) {
        if !self.lookups.contains(&lookup) {
            self.lookups.push(lookup);
        }
    }
}

/// What the lookups found: full ids by the name the request used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Container name (as written) → full id.
    pub containers: HashMap<String, String>,
    /// Network name (as written) → full id.
    pub networks: HashMap<String, String>,
    /// The full id of the object in the path, when a path lookup ran.
    pub path_id: Option<String>,
    /// Named volumes to create for the channel once the request is allowed.
    pub new_volumes: Vec<String>,
}

/// A compiled policy: the baseline with its context, and the user rules.
#[derive(Debug, Clone)]
pub struct ProxyPolicy {
    rules: Rules,
    context: ProxyContext,
    /// Normalised repositories of `context.protected_images`.
    protected: Vec<String>,
}

impl ProxyPolicy {
    /// Compiles a policy file; the context must be complete.
    pub fn compile(file: &ProxyPolicyFile) -> Result<ProxyPolicy, ProxyPolicyError> {
        file.validate_context()?;
        let rules = Rules::compile(file)?;
        let protected = file
            .context
            .protected_images
            .iter()
            .filter_map(|image| repository_of(image))
            .collect();
        Ok(ProxyPolicy {
            rules,
            context: file.context.clone(),
            protected,
        })
    }

    /// The context (owner, channel, allowed paths, ...).
    pub fn context(&self) -> &ProxyContext {
        &self.context
    }

    /// The label value that marks a container as the agent's.
    pub fn owner_label(&self) -> String {
        format!("{OWNER_LABEL}={}", self.context.owner)
    }

    /// The label value that marks a volume as the channel's.
    pub fn channel_label(&self) -> String {
        format!("{CHANNEL_LABEL}={}", self.context.channel)
    }

    /// The user rules' decision, for a request the baseline let through. `body` is the body as
    /// it will be forwarded.
    pub fn decide(&self, call: &Call, body: Option<&Value>) -> RuleDecision {
        self.rules.decide(&call.method, &call.route(), body)
    }

    fn egress(&self) -> Option<&str> {
        self.context.network.as_deref()
    }

    fn refuse_under_egress(&self, what: &str) -> Result<(), Refusal> {
        match self.egress() {
            Some(network) => Err(Refusal::deny(
                "egress",
                format!(
                    "{what} is not allowed with egress control on (nested containers stay on {network})"
                ),
            )),
            None => Ok(()),
        }
    }

    /// Whether `reference` names a protected repository (any tag).
    pub fn is_protected(&self, reference: &str) -> bool {
        repository_of(reference).is_some_and(|repo| self.protected.contains(&repo))
    }

    fn check_not_protected(&self, reference: &str, what: &str) -> Result<(), Refusal> {
        if let Some(repo) = repository_of(reference)
            && self.protected.contains(&repo)
        {
            return Err(Refusal::deny(
                "protected_image",
                format!(
                    "{what} `{reference}` would change a protected image ({repo}: the agent image cannot be replaced from inside an agent)"
                ),
            ));
        }
        Ok(())
    }

    /// The baseline's verdict on the request line, and what the server must do next.
    pub fn plan(&self, call: &Call) -> Result<Plan, Refusal> {
        use BodyHandling::{Empty, Json, Stream};
        let q = &call.query;
        let plan = match call.endpoint {
            Endpoint::Ping | Endpoint::Version | Endpoint::Info => Plan::new(Stream),
            Endpoint::Events | Endpoint::ContainerList | Endpoint::NetworkList => {
                let mut plan = Plan::new(Stream);
                plan.query = Some(with_label_filter(q, &self.owner_label())?);
                plan
            }
            Endpoint::VolumeList => {
                let mut plan = Plan::new(Stream);
                plan.query = Some(with_label_filter(q, &self.channel_label())?);
                plan
            }
            Endpoint::SystemDf => {
                return Err(Refusal::deny(
                    "system_df",
                    "/system/df lists every container, image and volume of the host",
                ));
            }
            Endpoint::Auth => {
                self.refuse_under_egress("registry login")?;
                Plan::new(Json)
            }
            Endpoint::ContainerCreate | Endpoint::NetworkCreate | Endpoint::VolumeCreate => {
                if call.endpoint == Endpoint::NetworkCreate {
                    self.refuse_under_egress("creating networks")?;
                }
                Plan::new(Json)
            }
            Endpoint::ContainerPrune
            | Endpoint::ImagePrune
            | Endpoint::NetworkPrune
            | Endpoint::VolumePrune
            | Endpoint::BuildPrune => {
                return Err(Refusal::deny(
                    "prune",
                    "prune would remove objects that are not the agent's",
                ));
            }
            Endpoint::Container(span, op) => {
                let body = match op {
                    ContainerOp::Checkpoints => {
                        return Err(Refusal::deny(
                            "checkpoints",
                            "container checkpoints (CRIU) are not available",
                        ));
                    }
                    ContainerOp::Start => Empty,
                    ContainerOp::Update | ContainerOp::ExecCreate => Json,
                    _ => Stream,
                };
                Plan::new(body).with(Lookup::PathContainer(span))
            }
            Endpoint::Exec(span, op) => {
                let body = if op == ExecOp::Start { Json } else { Stream };
                Plan::new(body).with(Lookup::PathExec(span))
            }
            Endpoint::ImageList | Endpoint::ImageSaveMany => Plan::new(Stream),
            Endpoint::Image(span, op) => {
                let name = span.text(&call.path);
                match op {
                    ImageOp::Inspect | ImageOp::History | ImageOp::Save => Plan::new(Stream),
                    ImageOp::Push => {
                        self.refuse_under_egress("pushing images")?;
                        Plan::new(Stream)
                    }
                    ImageOp::Tag => {
                        for repo in q.all("repo") {
                            self.check_not_protected(repo, "tagging as")?;
                        }
                        Plan::new(Stream)
                    }
                    ImageOp::Remove => {
                        self.check_not_protected(&name, "removing")?;
                        Plan::new(Stream).with(Lookup::ImageRemoval(name))
                    }
                }
            }
            Endpoint::ImageCreate => {
                for source in q.all("fromSrc") {
                    if source != "-" {
                        return Err(Refusal::deny(
                            "import_url",
                            "importing an image from a URL is not allowed (the daemon would fetch it from the host's network)",
                        ));
                    }
                }
                for image in q.all("fromImage") {
                    self.check_not_protected(image, "pulling")?;
                }
                for repo in q.all("repo") {
                    self.check_not_protected(repo, "importing as")?;
                }
                Plan::new(Stream)
            }
            Endpoint::ImageLoad => {
                return Err(Refusal::deny(
                    "image_load",
                    "/images/load is not allowed: the tags inside the archive could replace any image, the agent image included",
                ));
            }
            Endpoint::ImageSearch => {
                self.refuse_under_egress("registry search")?;
                Plan::new(Stream)
            }
            Endpoint::Distribution(_) => {
                self.refuse_under_egress("registry queries")?;
                Plan::new(Stream)
            }
            Endpoint::Build => self.plan_build(q)?,
            Endpoint::BuildCancel => {
                return Err(Refusal::deny(
                    "buildkit",
                    "BuildKit is not available through the proxy; build with DOCKER_BUILDKIT=0",
                ));
            }
            Endpoint::Commit => {
                for repo in q.all("repo") {
                    self.check_not_protected(repo, "committing as")?;
                }
                if q.first("container").unwrap_or("").is_empty() {
                    return Err(Refusal::bad_request("/commit needs ?container="));
                }
                Plan::new(Json).with(Lookup::QueryContainer("container"))
            }
            Endpoint::Network(span, op) => {
                let body = match op {
                    NetworkOp::Connect | NetworkOp::Disconnect => {
                        self.refuse_under_egress("connecting containers to networks")?;
                        Json
                    }
                    NetworkOp::Inspect | NetworkOp::Remove => Stream,
                };
                Plan::new(body).with(Lookup::PathNetwork(span))
            }
            Endpoint::Volume(span, op) => match op {
                VolumeOp::Inspect | VolumeOp::Remove => {
                    Plan::new(Stream).with(Lookup::PathVolume(span))
                }
                VolumeOp::Update => {
                    return Err(Refusal::deny("swarm", "cluster volumes are not available"));
                }
            },
            Endpoint::Forbidden(area) => {
                let what = match area {
                    ForbiddenArea::Swarm => {
                        "swarm (services, nodes, tasks, secrets, configs) is not available"
                    }
                    ForbiddenArea::Plugins => "plugins are not available",
                    ForbiddenArea::BuildKit => {
                        "BuildKit sessions are not available through the proxy; build with DOCKER_BUILDKIT=0"
                    }
                };
                return Err(Refusal::deny(
                    match area {
                        ForbiddenArea::Swarm => "swarm",
                        ForbiddenArea::Plugins => "plugins",
                        ForbiddenArea::BuildKit => "buildkit",
                    },
                    what,
                ));
            }
            Endpoint::Unknown => {
                return Err(Refusal::deny(
                    "unknown_endpoint",
                    format!(
                        "{} {} is not a Docker API call the proxy knows",
                        call.method,
                        call.route()
                    ),
                ));
            }
        };
        Ok(plan)
    }

    fn plan_build(&self, q: &Query) -> Result<Plan, Refusal> {
        if q.all("remote").any(|r| !r.is_empty()) {
            return Err(Refusal::deny(
                "build_remote",
                "builds from a remote context are not allowed (the daemon would fetch it from the host's network); send the context",
            ));
        }
        if q.all("version").any(|v| v == "2") || q.first("session").is_some() {
            return Err(Refusal::deny(
                "buildkit",
                "BuildKit builds need a session the proxy does not forward; build with DOCKER_BUILDKIT=0",
            ));
        }
        if q.is_true("pull") {
            return Err(Refusal::deny(
                "build_pull",
                "build --pull is not allowed (its pulls cannot be checked against the protected images); docker pull the base image first",
            ));
        }
        for tag in q.all("t") {
            self.check_not_protected(tag, "building")?;
        }
        if q.all("cgroupparent").any(|c| !c.is_empty()) {
            return Err(Refusal::deny(
                "cgroup_parent",
                "builds cannot pick a cgroup parent",
            ));
        }
        super::build::dockerfile_names(q.first("dockerfile"))?;
        let mut plan = Plan::new(BodyHandling::BuildContext);
        let mode = q.first("networkmode").unwrap_or("");
        match self.egress() {
            Some(network) => match mode {
                "" | "default" | "bridge" => {
                    let mut query = q.clone();
                    query.set("networkmode", network.to_owned());
                    plan.query = Some(query);
                }
                m if m == network || m == "none" => {}
                other => {
                    return Err(Refusal::deny(
                        "egress",
                        format!(
                            "builds use network {network} with egress control on, not `{other}`"
                        ),
                    ));
                }
            },
            None => match mode {
                "" | "default" | "bridge" | "none" => {}
                "host" => {
                    return Err(Refusal::deny(
                        "host_network",
                        "builds cannot use the host network",
                    ));
                }
                other if other.starts_with("container:") => {
                    return Err(Refusal::deny(
                        "build_network",
                        "builds cannot join another container's network",
                    ));
                }
                other => plan.add(Lookup::Network(other.to_owned())),
            },
        }
        Ok(plan)
    }

    /// The baseline's checks and rewrites of a JSON body (`plan.body == Json`).
    pub fn check_body(
        &self,
        call: &Call,
        plan: &mut Plan,
        body: &mut Value,
    ) -> Result<(), Refusal> {
        let Some(object) = body.as_object_mut() else {
            if body.is_null() && matches!(call.endpoint, Endpoint::Exec(_, ExecOp::Start)) {
                return Ok(());
            }
            return Err(Refusal::bad_request(
                "the request body must be a JSON object",
            ));
        };
        match call.endpoint {
            Endpoint::ContainerCreate => self.check_create(object, plan),
            Endpoint::Container(_, ContainerOp::Update) => self.check_resources(object, ""),
            Endpoint::Container(_, ContainerOp::ExecCreate) => {
                if get_ci(object, "Privileged") == Some(&Value::Bool(true)) {
                    return Err(Refusal::deny(
                        "privileged",
                        "privileged exec is not allowed",
                    ));
                }
                Ok(())
            }
            Endpoint::NetworkCreate => self.check_network_create(object),
            Endpoint::Network(_, NetworkOp::Connect | NetworkOp::Disconnect) => {
                match get_ci(object, "Container") {
                    Some(Value::String(name)) if !name.is_empty() => {
                        plan.add(Lookup::Container(name.clone()));
                        Ok(())
                    }
                    _ => Err(Refusal::bad_request("`Container` must name a container")),
                }
            }
            Endpoint::VolumeCreate => self.check_volume_create(object),
            _ => Ok(()),
        }
    }

    fn check_create(
        &self,
        object: &mut Map<String, Value>,
        plan: &mut Plan,
    ) -> Result<(), Refusal> {
        let mut labels = BTreeLabels::take(object, "Labels")?;
        labels.insert(OWNER_LABEL, &self.context.owner);
        if !self.context.daemon.is_empty() {
            labels.insert(DAEMON_LABEL, &self.context.daemon);
        }
        labels.put_back(object);

        let host_key = key_ci(object, "HostConfig");
        let host = object
            .entry(host_key)
            .or_insert_with(|| Value::Object(Map::new()));
        if host.is_null() {
            *host = Value::Object(Map::new());
        }
        let Some(host) = host.as_object_mut() else {
            return Err(Refusal::bad_request("HostConfig must be an object"));
        };
        self.check_host_config(host, plan)?;

        let endpoints = match get_ci_mut(object, "NetworkingConfig") {
            None | Some(Value::Null) => return Ok(()),
            Some(Value::Object(config)) => match get_ci_mut(config, "EndpointsConfig") {
                None | Some(Value::Null) => return Ok(()),
                Some(Value::Object(endpoints)) => endpoints,
                Some(_) => {
                    return Err(Refusal::bad_request(
                        "NetworkingConfig.EndpointsConfig must be an object",
                    ));
                }
            },
            Some(_) => return Err(Refusal::bad_request("NetworkingConfig must be an object")),
        };
        if let Some(network) = self.egress() {
            // The daemon's default network is the internal one here (the CLI names it
            // `default`); the network mode was rewritten the same way.
            let old = std::mem::take(endpoints);
            for (name, config) in old {
                let name = if matches!(name.as_str(), "" | "default" | "bridge") {
                    network.to_owned()
                } else {
                    name
                };
                self.check_network_use(&name, plan, "NetworkingConfig.EndpointsConfig")?;
                endpoints.entry(name).or_insert(config);
            }
            return Ok(());
        }
        let names: Vec<String> = endpoints.keys().cloned().collect();
        for name in names {
            self.check_network_use(&name, plan, "NetworkingConfig.EndpointsConfig")?;
        }
        Ok(())
    }

    /// A network a container joins (by name): builtin bridge, the agent's own, or with egress
    /// control the internal network only.
    fn check_network_use(&self, name: &str, plan: &mut Plan, field: &str) -> Result<(), Refusal> {
        if let Some(network) = self.egress() {
            if name == network {
                return Ok(());
            }
            return Err(Refusal::deny(
                "egress",
                format!(
                    "{field}: nested containers join {network} with egress control on, not `{name}`"
                ),
            ));
        }
        match name {
            "" | "bridge" | "default" | "none" => Ok(()),
            "host" => Err(Refusal::deny(
                "host_network",
                "the host network is not allowed",
            )),
            other => {
                plan.add(Lookup::Network(other.to_owned()));
                Ok(())
            }
        }
    }

    fn check_host_config(
        &self,
        host: &mut Map<String, Value>,
        plan: &mut Plan,
    ) -> Result<(), Refusal> {
        if get_ci(host, "Privileged") == Some(&Value::Bool(true)) {
            return Err(Refusal::deny(
                "privileged",
                "privileged containers are not allowed",
            ));
        }
        for (field, rule) in [
            ("CapAdd", "cap_add"),
            ("Capabilities", "cap_add"),
            ("Sysctls", "sysctls"),
            ("Annotations", "annotations"),
            ("VolumeDriver", "volume_driver"),
            ("Links", "links"),
        ] {
            if is_set(get_ci(host, field)) {
                return Err(Refusal::deny(
                    rule,
                    format!("HostConfig.{field} is not allowed"),
                ));
            }
        }
        for field in ["MaskedPaths", "ReadonlyPaths"] {
            if get_ci(host, field).is_some_and(|v| !v.is_null()) {
                return Err(Refusal::deny(
                    "masked_paths",
                    format!("HostConfig.{field} cannot be changed (it would unmask /proc)"),
                ));
            }
        }
        self.check_resources(host, "HostConfig.")?;
        if let Some(options) = get_ci(host, "SecurityOpt").filter(|v| !v.is_null()) {
            let Some(options) = options.as_array() else {
                return Err(Refusal::bad_request(
                    "HostConfig.SecurityOpt must be a list",
                ));
            };
            for option in options {
                let text = option.as_str().unwrap_or("");
                let normalised = text.replace(':', "=").to_ascii_lowercase();
                if !(normalised == "no-new-privileges" || normalised == "no-new-privileges=true") {
                    return Err(Refusal::deny(
                        "security_opt",
                        format!(
                            "HostConfig.SecurityOpt `{text}` is not allowed (only no-new-privileges)"
                        ),
                    ));
                }
            }
        }
        for (field, allowed) in [
            ("UsernsMode", &[""][..]),
            ("UTSMode", &[""][..]),
            ("CgroupnsMode", &["", "private"][..]),
        ] {
            let value = string_field(host, field)?;
            if !allowed.contains(&value.as_str()) {
                return Err(Refusal::deny(
                    "host_namespace",
                    format!("HostConfig.{field} `{value}` is not allowed"),
                ));
            }
        }
        for (field, allowed) in [
            ("PidMode", &["", "private"][..]),
            ("IpcMode", &["", "none", "private", "shareable"][..]),
            ("Cgroup", &[""][..]),
        ] {
            let value = string_field(host, field)?;
            if let Some(target) = value.strip_prefix("container:") {
                plan.add(Lookup::Container(target.to_owned()));
            } else if !allowed.contains(&value.as_str()) {
                return Err(Refusal::deny(
                    "host_namespace",
                    format!("HostConfig.{field} `{value}` is not allowed"),
                ));
            }
        }
        let network_mode = string_field(host, "NetworkMode")?;
        if let Some(target) = network_mode.strip_prefix("container:") {
            plan.add(Lookup::Container(target.to_owned()));
        } else if let Some(network) = self.egress() {
            match network_mode.as_str() {
                "" | "default" | "bridge" => {
                    let key = key_ci(host, "NetworkMode");
                    host.insert(key, Value::String(network.to_owned()));
                }
                "none" => {}
                other => self.check_network_use(other, plan, "HostConfig.NetworkMode")?,
            }
        } else {
            self.check_network_use(&network_mode, plan, "HostConfig.NetworkMode")?;
        }
        let runtime = string_field(host, "Runtime")?;
        if !RUNTIMES.contains(&runtime.as_str()) {
            return Err(Refusal::deny(
                "runtime",
                format!("HostConfig.Runtime `{runtime}` is not allowed (runc or runsc)"),
            ));
        }
        if let Some(Value::Object(log)) = get_ci(host, "LogConfig") {
            let driver = string_field(log, "Type")?;
            if !LOG_DRIVERS.contains(&driver.as_str()) {
                return Err(Refusal::deny(
                    "log_driver",
                    format!("log driver `{driver}` is not allowed (json-file, local or none)"),
                ));
            }
        }
        if get_ci(host, "OomScoreAdj")
            .and_then(Value::as_i64)
            .is_some_and(|v| v < 0)
        {
            return Err(Refusal::deny(
                "oom_score",
                "a negative OomScoreAdj would shield the container from the host's OOM killer",
            ));
        }
        if get_ci(host, "PublishAllPorts") == Some(&Value::Bool(true)) {
            return Err(Refusal::deny(
                "publish",
                "PublishAllPorts publishes on every host interface; publish on 127.0.0.1",
            ));
        }
        if let Some(Value::Object(ports)) = get_ci(host, "PortBindings") {
            for (port, bindings) in ports {
                for binding in bindings.as_array().into_iter().flatten() {
                    let ip = binding
                        .as_object()
                        .and_then(|b| get_ci(b, "HostIp"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    if !matches!(ip, "127.0.0.1" | "::1") {
                        return Err(Refusal::deny(
                            "publish",
                            format!(
                                "port {port} would be published on {} of the host; publish on 127.0.0.1 (-p 127.0.0.1:PORT:PORT)",
                                if ip.is_empty() { "every interface" } else { ip }
                            ),
                        ));
                    }
                }
            }
        }
        self.check_binds(host, plan)?;
        self.check_mounts(host, plan)?;
        if let Some(list) = get_ci(host, "VolumesFrom").filter(|v| !v.is_null()) {
            let Some(list) = list.as_array() else {
                return Err(Refusal::bad_request(
                    "HostConfig.VolumesFrom must be a list",
                ));
            };
            for entry in list {
                let entry = entry.as_str().unwrap_or("");
                let name = entry.split(':').next().unwrap_or("");
                plan.add(Lookup::Container(name.to_owned()));
            }
        }
        // Rewrites: no device nodes in the host directories a container mounts, and a pids
        // limit.
        let cap_drop_key = key_ci(host, "CapDrop");
        let mut drops: Vec<Value> = match host.get(&cap_drop_key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.clone(),
            Some(Value::String(one)) => vec![Value::String(one.clone())],
            Some(_) => return Err(Refusal::bad_request("HostConfig.CapDrop must be a list")),
        };
        let drops_all_or_mknod = drops.iter().any(|d| {
            d.as_str().is_some_and(|d| {
                let d = d.to_ascii_uppercase();
                d == "ALL" || d == "MKNOD" || d == "CAP_MKNOD"
            })
        });
        if !drops_all_or_mknod {
            drops.push(Value::String("MKNOD".to_owned()));
        }
        host.insert(cap_drop_key, Value::Array(drops));
        let pids_key = key_ci(host, "PidsLimit");
        if host
            .get(&pids_key)
            .and_then(Value::as_i64)
            .is_none_or(|n| n <= 0)
        {
            host.insert(pids_key, json!(DEFAULT_PIDS_LIMIT));
        }
        Ok(())
    }

    /// The fields create's `HostConfig` and update's body share (`Resources`, restart policy).
    fn check_resources(&self, object: &Map<String, Value>, prefix: &str) -> Result<(), Refusal> {
        for field in ["Devices", "DeviceRequests", "DeviceCgroupRules"] {
            if is_set(get_ci(object, field)) {
                return Err(Refusal::deny(
                    "devices",
                    format!("{prefix}{field} is not allowed"),
                ));
            }
        }
        if is_set(get_ci(object, "CgroupParent")) {
            return Err(Refusal::deny(
                "cgroup_parent",
                format!("{prefix}CgroupParent is not allowed"),
            ));
        }
        if get_ci(object, "OomKillDisable") == Some(&Value::Bool(true)) {
            return Err(Refusal::deny(
                "oom_kill_disable",
                "OomKillDisable would let a container take the host's memory",
            ));
        }
        if let Some(Value::Object(policy)) = get_ci(object, "RestartPolicy") {
            let name = string_field(policy, "Name")?;
            if !matches!(name.as_str(), "" | "no" | "on-failure") {
                return Err(Refusal::deny(
                    "restart_policy",
                    format!(
                        "restart policy `{name}` would outlive the agent (use no or on-failure)"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_binds(&self, host: &Map<String, Value>, plan: &mut Plan) -> Result<(), Refusal> {
        let Some(binds) = get_ci(host, "Binds").filter(|v| !v.is_null()) else {
            return Ok(());
        };
        let Some(binds) = binds.as_array() else {
            return Err(Refusal::bad_request("HostConfig.Binds must be a list"));
        };
        for bind in binds {
            let Some(bind) = bind.as_str() else {
                return Err(Refusal::bad_request("HostConfig.Binds must hold strings"));
            };
            // The daemon's Linux parser: `dst` (anonymous volume), `src:dst`, `src:dst:mode`.
            let parts: Vec<&str> = bind.split(':').collect();
            match parts.len() {
                1 => {}
                2 | 3 => {
                    let source = parts[0];
                    if source.starts_with('/') {
                        self.check_host_path(source, "HostConfig.Binds")?;
                    } else {
                        plan.add(Lookup::UseVolume(source.to_owned()));
                    }
                }
                _ => return Err(Refusal::bad_request(format!("malformed bind `{bind}`"))),
            }
        }
        Ok(())
    }

    fn check_mounts(&self, host: &Map<String, Value>, plan: &mut Plan) -> Result<(), Refusal> {
        let Some(mounts) = get_ci(host, "Mounts").filter(|v| !v.is_null()) else {
            return Ok(());
        };
        let Some(mounts) = mounts.as_array() else {
            return Err(Refusal::bad_request("HostConfig.Mounts must be a list"));
        };
        for mount in mounts {
            let Some(mount) = mount.as_object() else {
                return Err(Refusal::bad_request("HostConfig.Mounts must hold objects"));
            };
            let kind = string_field(mount, "Type")?;
            let source = string_field(mount, "Source")?;
            match kind.as_str() {
                "bind" => self.check_host_path(&source, "HostConfig.Mounts")?,
                "volume" => {
                    let driver = get_ci(mount, "VolumeOptions")
                        .and_then(Value::as_object)
                        .and_then(|o| get_ci(o, "DriverConfig"));
                    if is_set(driver) {
                        return Err(Refusal::deny(
                            "volume_driver",
                            "volume mounts cannot carry driver options (the local driver can bind any host path)",
                        ));
                    }
                    if !source.is_empty() {
                        plan.add(Lookup::UseVolume(source));
                    }
                }
                "tmpfs" | "image" => {}
                other => {
                    return Err(Refusal::deny(
                        "mount_type",
                        format!("mounts of type `{other}` are not allowed"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A bind source must be one of the allowed directories itself. A path inside one is
    /// refused: the agent can write there, so it could swap a subdirectory for a symlink to
    /// `/` between this check and the daemon's mount (the daemon follows symlinks on the host).
    /// The allowed directories themselves are mount points in the agent's container, which it
    /// cannot rename or replace, under host directories it cannot reach.
    fn check_host_path(&self, source: &str, field: &str) -> Result<(), Refusal> {
        let allowed = &self.context.allowed_paths;
        let Some(path) = normalize_host_path(source) else {
            return Err(Refusal::deny(
                "bind",
                format!("{field}: `{source}` is not a plain absolute path"),
            ));
        };
        if allowed.contains(&path) {
            return Ok(());
        }
        let inside = allowed.iter().find(|a| path.starts_with(&format!("{a}/")));
        let message = match inside {
            Some(root) => format!(
                "{field}: `{source}` is inside {root}: bind {root} itself and use the subdirectory from there (a subdirectory could be swapped for a symlink between this check and the mount)"
            ),
            None if allowed.is_empty() => {
                format!("{field}: `{source}`: no host directory may be mounted")
            }
            None => format!(
                "{field}: `{source}` is not an allowed host directory (allowed: {})",
                allowed.join(", ")
            ),
        };
        Err(Refusal::deny("bind", message))
    }

    fn check_network_create(&self, object: &mut Map<String, Value>) -> Result<(), Refusal> {
        let driver = string_field(object, "Driver")?;
        if !matches!(driver.as_str(), "" | "bridge") {
            return Err(Refusal::deny(
                "network_driver",
                format!("network driver `{driver}` is not allowed (bridge only)"),
            ));
        }
        for field in ["Ingress", "ConfigOnly"] {
            if get_ci(object, field) == Some(&Value::Bool(true)) {
                return Err(Refusal::deny(
                    "network_options",
                    format!("{field} networks are not allowed"),
                ));
            }
        }
        let scope = string_field(object, "Scope")?;
        if !matches!(scope.as_str(), "" | "local") {
            return Err(Refusal::deny(
                "network_options",
                "only local networks are allowed",
            ));
        }
        if is_set(get_ci(object, "ConfigFrom")) || is_set(get_ci(object, "Options")) {
            return Err(Refusal::deny(
                "network_options",
                "network Options and ConfigFrom are not allowed",
            ));
        }
        if let Some(Value::Object(ipam)) = get_ci(object, "IPAM") {
            let driver = string_field(ipam, "Driver")?;
            if !matches!(driver.as_str(), "" | "default")
                || is_set(get_ci(ipam, "Options"))
                || is_set(get_ci(ipam, "Config"))
            {
                return Err(Refusal::deny(
                    "network_options",
                    "custom IPAM (subnets, drivers) is not allowed: a subnet could shadow the host's own networks",
                ));
            }
        }
        let mut labels = BTreeLabels::take(object, "Labels")?;
        labels.insert(OWNER_LABEL, &self.context.owner);
        if !self.context.daemon.is_empty() {
            labels.insert(DAEMON_LABEL, &self.context.daemon);
        }
        labels.put_back(object);
        Ok(())
    }

    fn check_volume_create(&self, object: &mut Map<String, Value>) -> Result<(), Refusal> {
        let driver = string_field(object, "Driver")?;
        if !matches!(driver.as_str(), "" | "local") {
            return Err(Refusal::deny(
                "volume_driver",
                format!("volume driver `{driver}` is not allowed (local only)"),
            ));
        }
        if is_set(get_ci(object, "DriverOpts")) {
            return Err(Refusal::deny(
                "volume_driver",
                "volume DriverOpts are not allowed (the local driver can bind any host path)",
            ));
        }
        if is_set(get_ci(object, "ClusterVolumeSpec")) {
            return Err(Refusal::deny("swarm", "cluster volumes are not available"));
        }
        let mut labels = BTreeLabels::take(object, "Labels")?;
        labels.insert(CHANNEL_LABEL, &self.context.channel);
        labels.put_back(object);
        Ok(())
    }

    /// Labels the proxy puts on a volume it creates for a container's named mount.
    pub fn volume_create_body(&self, name: &str) -> Value {
        json!({"Name": name, "Labels": {CHANNEL_LABEL: self.context.channel}})
    }

    /// Rewrites what the lookups resolved: the object in the path, `?container=`, and names in
    /// the body, to full ids.
    pub fn apply(
        &self,
        call: &Call,
        plan: &mut Plan,
        body: Option<&mut Value>,
        resolved: &Resolved,
    ) {
        if plan.lookups.contains(&Lookup::QueryContainer("container"))
            && let Some(name) = call.query.first("container")
            && let Some(id) = resolved.containers.get(name)
        {
            let mut query = plan.query.clone().unwrap_or_else(|| call.query.clone());
            query.set("container", id.clone());
            plan.query = Some(query);
        }
        let Some(Value::Object(object)) = body else {
            return;
        };
        let container = |name: &str| resolved.containers.get(name).cloned();
        match call.endpoint {
            Endpoint::ContainerCreate => {
                if let Some(Value::Object(host)) = get_ci_mut(object, "HostConfig") {
                    for field in ["NetworkMode", "PidMode", "IpcMode", "Cgroup"] {
                        if let Some(Value::String(mode)) = get_ci_mut(host, field) {
                            if let Some(id) = mode.strip_prefix("container:").and_then(container) {
                                *mode = format!("container:{id}");
                            } else if field == "NetworkMode"
                                && let Some(id) = resolved.networks.get(mode.as_str())
                            {
                                *mode = id.clone();
                            }
                        }
                    }
                    if let Some(Value::Array(list)) = get_ci_mut(host, "VolumesFrom") {
                        for entry in list.iter_mut() {
                            if let Value::String(text) = entry {
                                let (name, mode) = match text.split_once(':') {
                                    Some((n, m)) => (n.to_owned(), Some(m.to_owned())),
                                    None => (text.clone(), None),
                                };
                                if let Some(id) = container(&name) {
                                    *text = match mode {
                                        Some(mode) => format!("{id}:{mode}"),
                                        None => id,
                                    };
                                }
                            }
                        }
                    }
                }
                if let Some(Value::Object(config)) = get_ci_mut(object, "NetworkingConfig")
                    && let Some(Value::Object(endpoints)) = get_ci_mut(config, "EndpointsConfig")
                {
                    let names: Vec<String> = endpoints.keys().cloned().collect();
                    for name in names {
                        if let Some(id) = resolved.networks.get(&name)
                            && let Some(value) = endpoints.remove(&name)
                        {
                            endpoints.insert(id.clone(), value);
                        }
                    }
                }
            }
            Endpoint::Network(_, NetworkOp::Connect | NetworkOp::Disconnect) => {
                if let Some(Value::String(name)) = get_ci_mut(object, "Container")
                    && let Some(id) = container(name)
                {
                    *name = id;
                }
            }
            _ => {}
        }
    }
}

/// A `Labels` object taken out of a body, checked (no `loop.dockerproxy.*` from the agent)
/// and put back with the proxy's labels.
struct BTreeLabels {
    key: String,
    labels: Map<String, Value>,
}

impl BTreeLabels {
    fn take(object: &mut Map<String, Value>, field: &str) -> Result<BTreeLabels, Refusal> {
        let key = key_ci(object, field);
        let labels = match object.remove(&key) {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) => return Err(Refusal::bad_request(format!("{field} must be an object"))),
        };
        for label in labels.keys() {
            if label.to_ascii_lowercase().starts_with(LABEL_PREFIX) {
                return Err(Refusal::deny(
                    "labels",
                    format!("label `{label}` is reserved for the proxy"),
                ));
            }
        }
        Ok(BTreeLabels { key, labels })
    }

    fn insert(&mut self, label: &str, value: &str) {
        self.labels
            .insert(label.to_owned(), Value::String(value.to_owned()));
    }

    fn put_back(self, object: &mut Map<String, Value>) {
        object.insert(self.key, Value::Object(self.labels));
    }
}

/// A string field, `""` when absent or null; another type is a bad request.
fn string_field(object: &Map<String, Value>, field: &str) -> Result<String, Refusal> {
    match get_ci(object, field) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Refusal::bad_request(format!("{field} must be a string"))),
    }
}

/// Whether a field carries something: not absent, null, false, 0, "", [] or {}.
fn is_set(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// Adds a `label` filter to the `filters` query parameter (both of the daemon's JSON forms:
/// `{"label": ["k=v"]}` and `{"label": {"k=v": true}}`); filters are ANDed.
fn with_label_filter(query: &Query, label: &str) -> Result<Query, Refusal> {
    let mut filters = match query.first("filters") {
        None | Some("") => Map::new(),
        Some(text) => match super::request::parse_json(text.as_bytes()) {
            Ok(Value::Object(map)) => map,
            _ => {
                return Err(Refusal::bad_request(
                    "the filters parameter is not a JSON object",
                ));
            }
        },
    };
    match filters.get_mut("label") {
        None | Some(Value::Null) => {
            filters.insert("label".to_owned(), json!([label]));
        }
        Some(Value::Array(values)) => values.push(Value::String(label.to_owned())),
        Some(Value::Object(values)) => {
            values.insert(label.to_owned(), Value::Bool(true));
        }
        Some(_) => return Err(Refusal::bad_request("the label filter is malformed")),
    }
    let mut out = query.clone();
    out.set("filters", Value::Object(filters).to_string());
    Ok(out)
}

#[cfg(test)]
mod tests;
