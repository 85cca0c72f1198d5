//! Which Docker API endpoint a request is, following the daemon's own router (moby
//! `api/server/router/*`): the same methods, and the same greedy `{name:.*}` object names, so
//! `/containers/a/b/start` names container `a/b` for the proxy exactly as for the daemon.
//!
//! A method and path the table does not know is [`Endpoint::Unknown`], which the baseline
//! denies: an endpoint added by a newer daemon is never let through unchecked.

use super::request::{ApiPath, Span};

/// An operation on one container (`/containers/{name}/...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerOp {
    /// `GET json`.
    Inspect,
    /// `GET logs`.
    Logs,
    /// `GET top`.
    Top,
    /// `GET changes`.
    Changes,
    /// `GET export`.
    Export,
    /// `GET stats`.
    Stats,
    /// `GET attach/ws`.
    AttachWs,
    /// `GET`, `HEAD`, `PUT archive`.
    Archive,
    /// `POST kill`.
    Kill,
    /// `POST pause`.
    Pause,
    /// `POST unpause`.
    Unpause,
    /// `POST restart`.
    Restart,
    /// `POST start`.
    Start,
    /// `POST stop`.
    Stop,
    /// `POST wait`.
    Wait,
    /// `POST resize`.
    Resize,
    /// `POST attach`.
    Attach,
    /// `POST exec`: creates an exec instance.
    ExecCreate,
    /// `POST rename`.
    Rename,
    /// `POST update`.
    Update,
    /// `DELETE`.
    Remove,
    /// `GET`/`POST`/`DELETE checkpoints` (experimental, CRIU).
    Checkpoints,
}

/// An operation on one exec instance (`/exec/{id}/...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecOp {
    /// `GET json`.
    Inspect,
    /// `POST start`.
    Start,
    /// `POST resize`.
    Resize,
}

/// An operation on one image (`/images/{name}/...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageOp {
    /// `GET json`.
    Inspect,
    /// `GET history`.
    History,
    /// `GET get` (save).
    Save,
    /// `POST push`.
    Push,
    /// `POST tag`.
    Tag,
    /// `DELETE`.
    Remove,
}

/// An operation on one network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkOp {
    /// `GET`.
    Inspect,
    /// `POST connect`.
    Connect,
    /// `POST disconnect`.
    Disconnect,
    /// `DELETE`.
    Remove,
}

/// An operation on one volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeOp {
    /// `GET`.
    Inspect,
    /// `PUT` (cluster volumes).
    Update,
    /// `DELETE`.
    Remove,
}

/// A Docker API endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET|HEAD /_ping`.
    Ping,
    /// `GET /version`.
    Version,
    /// `GET /info`.
    Info,
    /// `GET /events`.
    Events,
    /// `GET /system/df`.
    SystemDf,
    /// `POST /auth`.
    Auth,
    /// `GET /containers/json`.
    ContainerList,
    /// `POST /containers/create`.
    ContainerCreate,
    /// `POST /containers/prune`.
    ContainerPrune,
    /// `/containers/{name}/...`.
    Container(Span, ContainerOp),
    /// `/exec/{id}/...`.
    Exec(Span, ExecOp),
    /// `GET /images/json`.
    ImageList,
    /// `POST /images/create`: pull (`fromImage`) or import (`fromSrc`).
    ImageCreate,
    /// `POST /images/load`.
    ImageLoad,
    /// `GET /images/get`.
    ImageSaveMany,
    /// `GET /images/search`.
    ImageSearch,
    /// `POST /images/prune`.
    ImagePrune,
    /// `/images/{name}/...`.
    Image(Span, ImageOp),
    /// `POST /build`.
    Build,
    /// `POST /build/prune`.
    BuildPrune,
    /// `POST /build/cancel`.
    BuildCancel,
    /// `POST /commit`.
    Commit,
    /// `GET /networks`.
    NetworkList,
    /// `POST /networks/create`.
    NetworkCreate,
    /// `POST /networks/prune`.
    NetworkPrune,
    /// `/networks/{id}...`.
    Network(Span, NetworkOp),
    /// `GET /volumes`.
    VolumeList,
    /// `POST /volumes/create`.
    VolumeCreate,
    /// `POST /volumes/prune`.
    VolumePrune,
    /// `/volumes/{name}`.
    Volume(Span, VolumeOp),
    /// `GET /distribution/{name}/json`: asks a registry about an image.
    Distribution(Span),
    /// Swarm, services, nodes, tasks, secrets, configs, plugins, BuildKit's `/session` and
    /// `/grpc`: denied, named by the first segment.
    Forbidden(ForbiddenArea),
    /// Anything else.
    Unknown,
}

/// The areas of the API the proxy never forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForbiddenArea {
    /// `/swarm`, `/nodes`, `/services`, `/tasks`, `/secrets`, `/configs`.
    Swarm,
    /// `/plugins`.
    Plugins,
    /// `/session`, `/grpc` (BuildKit).
    BuildKit,
}

impl Endpoint {
    /// Classifies `method` (upper case) on `path`.
    pub fn classify(method: &str, path: &ApiPath) -> Endpoint {
        let s: Vec<&str> = path.segments.iter().map(String::as_str).collect();
        let n = s.len();
        let Some(&area) = s.first() else {
            return Endpoint::Unknown;
        };
        match area {
            "swarm" | "nodes" | "services" | "tasks" | "secrets" | "configs" => {
                return Endpoint::Forbidden(ForbiddenArea::Swarm);
            }
            "plugins" => return Endpoint::Forbidden(ForbiddenArea::Plugins),
            "session" | "grpc" => return Endpoint::Forbidden(ForbiddenArea::BuildKit),
            _ => {}
        }
        match (method, s.as_slice()) {
            ("GET" | "HEAD", ["_ping"]) => return Endpoint::Ping,
            ("GET", ["version"]) => return Endpoint::Version,
            ("GET", ["info"]) => return Endpoint::Info,
            ("GET", ["events"]) => return Endpoint::Events,
            ("GET", ["system", "df"]) => return Endpoint::SystemDf,
            ("POST", ["auth"]) => return Endpoint::Auth,
            ("GET", ["containers", "json"]) => return Endpoint::ContainerList,
            ("POST", ["containers", "create"]) => return Endpoint::ContainerCreate,
            ("POST", ["containers", "prune"]) => return Endpoint::ContainerPrune,
            ("GET", ["images", "json"]) => return Endpoint::ImageList,
            ("POST", ["images", "create"]) => return Endpoint::ImageCreate,
            ("POST", ["images", "load"]) => return Endpoint::ImageLoad,
            ("GET", ["images", "get"]) => return Endpoint::ImageSaveMany,
            ("GET", ["images", "search"]) => return Endpoint::ImageSearch,
            ("POST", ["images", "prune"]) => return Endpoint::ImagePrune,
            ("POST", ["build"]) => return Endpoint::Build,
            ("POST", ["build", "prune"]) => return Endpoint::BuildPrune,
            ("POST", ["build", "cancel"]) => return Endpoint::BuildCancel,
            ("POST", ["commit"]) => return Endpoint::Commit,
            ("GET", ["networks"]) => return Endpoint::NetworkList,
            ("POST", ["networks", "create"]) => return Endpoint::NetworkCreate,
            ("POST", ["networks", "prune"]) => return Endpoint::NetworkPrune,
            ("GET", ["volumes"]) => return Endpoint::VolumeList,
            ("POST", ["volumes", "create"]) => return Endpoint::VolumeCreate,
            ("POST", ["volumes", "prune"]) => return Endpoint::VolumePrune,
            _ => {}
        }
        // `{name:.*}` routes: the name is everything between the area and the known suffix.
        let last = s[n - 1];
        let span = |suffix: usize| Span {
            start: 1,
            end: n - suffix,
        };
        let named = |suffix: usize| n > 1 + suffix;
        match area {
            "containers" => {
                if method == "GET" && n >= 4 && s[n - 2] == "attach" && last == "ws" {
                    return Endpoint::Container(span(2), ContainerOp::AttachWs);
                }
                if method == "DELETE" && n >= 4 && s[n - 2] == "checkpoints" {
                    return Endpoint::Container(span(2), ContainerOp::Checkpoints);
                }
                if method == "DELETE" && named(0) {
                    return Endpoint::Container(span(0), ContainerOp::Remove);
                }
                if !named(1) {
                    return Endpoint::Unknown;
                }
                let op = match (method, last) {
                    ("GET", "json") => ContainerOp::Inspect,
                    ("GET", "logs") => ContainerOp::Logs,
                    ("GET", "top") => ContainerOp::Top,
                    ("GET", "changes") => ContainerOp::Changes,
                    ("GET", "export") => ContainerOp::Export,
                    ("GET", "stats") => ContainerOp::Stats,
                    ("GET" | "HEAD" | "PUT", "archive") => ContainerOp::Archive,
                    ("POST", "kill") => ContainerOp::Kill,
                    ("POST", "pause") => ContainerOp::Pause,
                    ("POST", "unpause") => ContainerOp::Unpause,
                    ("POST", "restart") => ContainerOp::Restart,
                    ("POST", "start") => ContainerOp::Start,
                    ("POST", "stop") => ContainerOp::Stop,
                    ("POST", "wait") => ContainerOp::Wait,
                    ("POST", "resize") => ContainerOp::Resize,
                    ("POST", "attach") => ContainerOp::Attach,
                    ("POST", "exec") => ContainerOp::ExecCreate,
                    ("POST", "rename") => ContainerOp::Rename,
                    ("POST", "update") => ContainerOp::Update,
                    ("GET" | "POST", "checkpoints") => ContainerOp::Checkpoints,
                    _ => return Endpoint::Unknown,
                };
                Endpoint::Container(span(1), op)
            }
            "exec" if named(1) => match (method, last) {
                ("GET", "json") => Endpoint::Exec(span(1), ExecOp::Inspect),
                ("POST", "start") => Endpoint::Exec(span(1), ExecOp::Start),
                ("POST", "resize") => Endpoint::Exec(span(1), ExecOp::Resize),
                _ => Endpoint::Unknown,
            },
            "images" => {
                if method == "DELETE" && named(0) {
                    return Endpoint::Image(span(0), ImageOp::Remove);
                }
                if !named(1) {
                    return Endpoint::Unknown;
                }
                match (method, last) {
                    ("GET", "json") => Endpoint::Image(span(1), ImageOp::Inspect),
                    ("GET", "history") => Endpoint::Image(span(1), ImageOp::History),
                    ("GET", "get") => Endpoint::Image(span(1), ImageOp::Save),
                    ("POST", "push") => Endpoint::Image(span(1), ImageOp::Push),
                    ("POST", "tag") => Endpoint::Image(span(1), ImageOp::Tag),
                    _ => Endpoint::Unknown,
                }
            }
            "networks" => match method {
                "GET" if named(0) => Endpoint::Network(span(0), NetworkOp::Inspect),
                "DELETE" if named(0) => Endpoint::Network(span(0), NetworkOp::Remove),
                "POST" if named(1) && last == "connect" => {
                    Endpoint::Network(span(1), NetworkOp::Connect)
                }
                "POST" if named(1) && last == "disconnect" => {
                    Endpoint::Network(span(1), NetworkOp::Disconnect)
                }
                _ => Endpoint::Unknown,
            },
            "volumes" => match method {
                "GET" if named(0) => Endpoint::Volume(span(0), VolumeOp::Inspect),
                "PUT" if named(0) => Endpoint::Volume(span(0), VolumeOp::Update),
                "DELETE" if named(0) => Endpoint::Volume(span(0), VolumeOp::Remove),
                _ => Endpoint::Unknown,
            },
            "distribution" if method == "GET" && named(1) && last == "json" => {
                Endpoint::Distribution(span(1))
            }
            _ => Endpoint::Unknown,
        }
    }

    /// The route with object names replaced by `*`, for "allow for session" keys and
    /// messages: `/containers/*/start`.
    pub fn template(&self, path: &ApiPath) -> String {
        let span = match self {
            Endpoint::Container(span, _)
            | Endpoint::Exec(span, _)
            | Endpoint::Image(span, _)
            | Endpoint::Network(span, _)
            | Endpoint::Volume(span, _)
            | Endpoint::Distribution(span) => Some(*span),
            _ => None,
        };
        match span {
            None => path.route(),
            Some(span) => {
                let mut parts: Vec<&str> = Vec::new();
                for (i, segment) in path.segments.iter().enumerate() {
                    if i == span.start {
                        parts.push("*");
                    }
                    if i < span.start || i >= span.end {
                        parts.push(segment);
                    }
                }
                format!("/{}", parts.join("/"))
            }
        }
    }

    /// Whether the request body is JSON the proxy reads (and `body_rules` can look at).
    pub fn has_json_body(&self) -> bool {
        matches!(
            self,
            Endpoint::ContainerCreate
                | Endpoint::Container(_, ContainerOp::Update | ContainerOp::ExecCreate)
                | Endpoint::Exec(_, ExecOp::Start)
                | Endpoint::NetworkCreate
                | Endpoint::Network(_, NetworkOp::Connect | NetworkOp::Disconnect)
                | Endpoint::VolumeCreate
                | Endpoint::Commit
                | Endpoint::Auth
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(method: &str, path: &str) -> (Endpoint, String) {
        let p = ApiPath::parse(path).unwrap();
        let e = Endpoint::classify(method, &p);
        let name = match e {
            Endpoint::Container(s, _)
            | Endpoint::Exec(s, _)
            | Endpoint::Image(s, _)
            | Endpoint::Network(s, _)
            | Endpoint::Volume(s, _)
            | Endpoint::Distribution(s) => s.text(&p),
            _ => String::new(),
        };
        (e, name)
    }

    #[test]
    fn routes_like_the_daemon() {
        use ContainerOp as C;
        use Endpoint as E;
        let cases: &[(&str, &str, Endpoint, &str)] = &[
            ("GET", "/_ping", E::Ping, ""),
            ("HEAD", "/v1.41/_ping", E::Ping, ""),
            ("GET", "/containers/json", E::ContainerList, ""),
            ("POST", "/containers/create", E::ContainerCreate, ""),
            ("GET", "/containers/create/json", E::Unknown, "create"),
            ("POST", "/containers/abc/start", E::Unknown, "abc"),
            ("DELETE", "/containers/a/b", E::Unknown, "a/b"),
            ("GET", "/containers/x/attach/ws", E::Unknown, "x"),
            ("POST", "/containers/start", E::Unknown, ""),
            ("PATCH", "/containers/x/start", E::Unknown, ""),
            (
                "POST",
                "/plugins/pull",
                E::Forbidden(ForbiddenArea::Plugins),
                "",
            ),
            (
                "POST",
                "/session",
                E::Forbidden(ForbiddenArea::BuildKit),
                "",
            ),
            ("GET", "/services", E::Forbidden(ForbiddenArea::Swarm), ""),
            (
                "POST",
                "/images/library/debian/tag",
                E::Unknown,
                "library/debian",
            ),
            ("DELETE", "/images/sha256:abc", E::Unknown, "sha256:abc"),
            ("GET", "/images/json", E::ImageList, ""),
            ("POST", "/build", E::Build, ""),
            ("GET", "/networks/n1", E::Unknown, "n1"),
            ("GET", "/networks", E::NetworkList, ""),
            ("GET", "/nothing", E::Unknown, ""),
        ];
        for (method, path, want, name) in cases {
            let (got, got_name) = classify(method, path);
            if *want != E::Unknown {
                assert_eq!(got, *want, "{method} {path}");
            }
            assert_eq!(got_name, *name, "{method} {path}");
        }
        assert!(matches!(
            classify("POST", "/containers/abc/start").0,
            E::Container(_, C::Start)
        ));
        assert!(matches!(
            classify("DELETE", "/containers/a/b").0,
            E::Container(_, C::Remove)
        ));
        assert!(matches!(
            classify("GET", "/containers/x/attach/ws").0,
            E::Container(_, C::AttachWs)
        ));
        assert!(matches!(
            classify("POST", "/images/library/debian/tag").0,
            E::Image(_, ImageOp::Tag)
        ));
        assert!(matches!(
            classify("DELETE", "/images/sha256:abc").0,
            E::Image(_, ImageOp::Remove)
        ));
        assert!(matches!(
            classify("GET", "/networks/n1").0,
            E::Network(_, NetworkOp::Inspect)
        ));
        assert_eq!(classify("POST", "/containers/start").0, E::Unknown);
        assert_eq!(classify("PATCH", "/containers/x/start").0, E::Unknown);
        assert_eq!(classify("GET", "/nothing").0, E::Unknown);
    }

    #[test]
    fn templates_hide_names() {
        let p = ApiPath::parse("/v1.41/containers/a/b/start").unwrap();
        let e = Endpoint::classify("POST", &p);
        assert_eq!(e.template(&p), "/containers/*/start");
        let p = ApiPath::parse("/containers/create").unwrap();
        assert_eq!(
            Endpoint::classify("POST", &p).template(&p),
            "/containers/create"
        );
        let p = ApiPath::parse("/images/x/y").unwrap();
        assert_eq!(Endpoint::classify("DELETE", &p).template(&p), "/images/*");
    }
}
