//! Baseline tables: every rule, both ways (refused, and the harmless neighbour let through).

use serde_json::json;

use super::*;

fn policy_with(network: Option<&str>) -> ProxyPolicy {
    let file = ProxyPolicyFile {
        context: ProxyContext {
            owner: "loop-agent-abc123".into(),
            channel: "local-c".into(),
            daemon: "d1".into(),
            allowed_paths: vec!["/home/u/proj".into(), "/srv/extra".into()],
            protected_images: vec!["loop-agent:latest".into(), "loop-chrome".into()],
            network: network.map(str::to_owned),
        },
        ..Default::default()
    };
    ProxyPolicy::compile(&file).unwrap()
}

fn policy() -> ProxyPolicy {
    policy_with(None)
}

fn call(method: &str, target: &str) -> Result<Call, Refusal> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    Call::parse(method, path, query, &[])
}

/// The baseline's verdict on a request line: `Ok(plan)` or the refusing rule.
fn plan(p: &ProxyPolicy, method: &str, target: &str) -> Result<Plan, String> {
    let call = call(method, target).map_err(|r| r.rule)?;
    p.plan(&call).map_err(|r| r.rule)
}

/// The baseline's verdict on a request with a JSON body; `Ok` carries the rewritten body.
fn body(
    p: &ProxyPolicy,
    method: &str,
    target: &str,
    value: Value,
) -> Result<(Plan, Value), String> {
    let call = call(method, target).map_err(|r| r.rule)?;
    let mut plan = p.plan(&call).map_err(|r| r.rule)?;
    assert_eq!(plan.body, BodyHandling::Json, "{method} {target}");
    let mut value = value;
    p.check_body(&call, &mut plan, &mut value)
        .map_err(|r| r.rule)?;
    Ok((plan, value))
}

fn create(host: Value) -> Value {
    json!({"Image": "debian:bookworm-slim", "HostConfig": host})
}

#[test]
fn request_lines() {
    let p = policy();
    let allowed = [
        ("GET", "/_ping"),
        ("HEAD", "/_ping"),
        ("GET", "/v1.47/version"),
        ("GET", "/info"),
        ("GET", "/images/json"),
        ("GET", "/images/debian/json"),
        ("GET", "/images/get?names=debian"),
        ("POST", "/images/create?fromImage=debian&tag=bookworm-slim"),
        ("POST", "/images/create?fromSrc=-&repo=mine"),
        ("POST", "/images/debian/tag?repo=mine&tag=1"),
        ("POST", "/images/mine/push"),
        ("GET", "/images/search?term=x"),
        ("POST", "/build?t=mine:1&t=mine:2"),
        ("POST", "/build?version=1&networkmode=none"),
        ("GET", "/distribution/debian/json"),
        ("POST", "/auth"),
    ];
    for (method, target) in allowed {
        assert!(plan(&p, method, target).is_ok(), "{method} {target}");
    }
    let refused = [
        ("GET", "/system/df", "baseline.system_df"),
        ("POST", "/containers/prune", "baseline.prune"),
        ("POST", "/images/prune", "baseline.prune"),
        ("POST", "/volumes/prune", "baseline.prune"),
        ("POST", "/networks/prune", "baseline.prune"),
        ("POST", "/build/prune", "baseline.prune"),
        ("POST", "/swarm/init", "baseline.swarm"),
        ("GET", "/services", "baseline.swarm"),
        ("GET", "/nodes", "baseline.swarm"),
        ("GET", "/tasks", "baseline.swarm"),
        ("POST", "/secrets/create", "baseline.swarm"),
        ("GET", "/configs", "baseline.swarm"),
        ("PUT", "/volumes/v", "baseline.swarm"),
        ("POST", "/plugins/pull?remote=x", "baseline.plugins"),
        ("POST", "/session", "baseline.buildkit"),
        ("POST", "/grpc", "baseline.buildkit"),
        ("POST", "/build/cancel", "baseline.buildkit"),
        ("POST", "/build?version=2", "baseline.buildkit"),
        ("POST", "/build?session=abc", "baseline.buildkit"),
        (
            "POST",
            "/build?remote=https://example.org/ctx.tar",
            "baseline.build_remote",
        ),
        ("POST", "/build?pull=1", "baseline.build_pull"),
        ("POST", "/build?networkmode=host", "baseline.host_network"),
        (
            "POST",
            "/build?networkmode=container:x",
            "baseline.build_network",
        ),
        ("POST", "/build?cgroupparent=/x", "baseline.cgroup_parent"),
        (
            "POST",
            "/build?t=ok&t=loop-agent",
            "baseline.protected_image",
        ),
        ("POST", "/images/load", "baseline.image_load"),
        (
            "POST",
            "/images/create?fromSrc=http://127.0.0.1:9/x.tar&repo=a",
            "baseline.import_url",
        ),
        (
            "POST",
            "/images/create?fromImage=loop-agent&tag=latest",
            "baseline.protected_image",
        ),
        (
            "POST",
            "/images/create?fromImage=docker.io/library/loop-agent:v2",
            "baseline.protected_image",
        ),
        (
            "POST",
            "/images/create?fromSrc=-&repo=loop-chrome",
            "baseline.protected_image",
        ),
        (
            "POST",
            "/images/debian/tag?repo=loop-agent&tag=latest",
            "baseline.protected_image",
        ),
        (
            "POST",
            "/images/debian/tag?repo=index.docker.io/library/loop-agent",
            "baseline.protected_image",
        ),
        (
            "DELETE",
            "/images/loop-agent:latest",
            "baseline.protected_image",
        ),
        (
            "DELETE",
            "/images/loop-agent@sha256:0123",
            "baseline.protected_image",
        ),
        (
            "POST",
            "/commit?container=c&repo=loop-agent",
            "baseline.protected_image",
        ),
        ("POST", "/containers/x/checkpoints", "baseline.checkpoints"),
        (
            "DELETE",
            "/containers/x/checkpoints/c1",
            "baseline.checkpoints",
        ),
        (
            "GET",
            "/containers/x/frobnicate",
            "baseline.unknown_endpoint",
        ),
        ("OPTIONS", "/containers/json", "baseline.unknown_endpoint"),
        ("GET", "/v1.12/containers/json", "baseline.malformed"),
        ("GET", "/containers//json", "baseline.malformed"),
        ("GET", "/containers/json?a=1;b=2", "baseline.malformed"),
    ];
    for (method, target, rule) in refused {
        assert_eq!(
            plan(&p, method, target).map(|_| ()),
            Err(rule.to_owned()),
            "{method} {target}"
        );
    }
    // A form-encoded body would be read by the daemon before the query.
    let form = Call::parse(
        "POST",
        "/images/x/tag",
        None,
        &["application/x-www-form-urlencoded; charset=utf-8"],
    );
    assert_eq!(
        form.map(|_| ()).map_err(|r| r.rule),
        Err("baseline.form_body".to_owned())
    );
    let second = Call::parse(
        "POST",
        "/images/x/tag",
        None,
        &["application/json", "application/x-www-form-urlencoded"],
    );
    assert_eq!(
        second.map(|_| ()).map_err(|r| r.rule),
        Err("baseline.form_body".to_owned())
    );
}

#[test]
fn objects_in_paths_are_looked_up() {
    let p = policy();
    let lookups = |method: &str, target: &str| plan(&p, method, target).unwrap().lookups;
    let span = |start, end| Span { start, end };
    for (method, target) in [
        ("GET", "/containers/web/json"),
        ("POST", "/containers/web/start"),
        ("POST", "/containers/web/stop"),
        ("POST", "/containers/web/kill"),
        ("POST", "/containers/web/wait"),
        ("POST", "/containers/web/attach?stream=1"),
        ("GET", "/containers/web/attach/ws"),
        ("GET", "/containers/web/logs?follow=1"),
        ("PUT", "/containers/web/archive?path=/"),
        ("HEAD", "/containers/web/archive?path=/"),
        ("POST", "/containers/web/exec"),
        ("POST", "/containers/web/update"),
        ("POST", "/containers/web/rename?name=x"),
        ("DELETE", "/containers/web?force=1"),
        ("GET", "/containers/web/export"),
    ] {
        assert_eq!(
            lookups(method, target),
            [Lookup::PathContainer(span(1, 2))],
            "{method} {target}"
        );
    }
    assert_eq!(
        lookups("POST", "/exec/e1/start"),
        [Lookup::PathExec(span(1, 2))]
    );
    assert_eq!(
        lookups("GET", "/exec/e1/json"),
        [Lookup::PathExec(span(1, 2))]
    );
    assert_eq!(
        lookups("GET", "/networks/n"),
        [Lookup::PathNetwork(span(1, 2))]
    );
    assert_eq!(
        lookups("DELETE", "/networks/n"),
        [Lookup::PathNetwork(span(1, 2))]
    );
    assert_eq!(
        lookups("DELETE", "/volumes/v"),
        [Lookup::PathVolume(span(1, 2))]
    );
    assert_eq!(
        lookups("GET", "/volumes/v"),
        [Lookup::PathVolume(span(1, 2))]
    );
    assert_eq!(
        lookups("DELETE", "/images/sha256:ab"),
        [Lookup::ImageRemoval("sha256:ab".into())]
    );
    assert_eq!(
        lookups("POST", "/commit?container=c&repo=mine"),
        [Lookup::QueryContainer("container")]
    );
    assert_eq!(
        plan(&p, "POST", "/containers/web/start").unwrap().body,
        BodyHandling::Empty
    );
}

#[test]
fn lists_and_events_are_filtered_to_the_agents_own() {
    let p = policy();
    let filters = |target: &str| -> Value {
        let plan = plan(&p, "GET", target).unwrap();
        let query = plan.query.expect("a rewritten query");
        serde_json::from_str(query.first("filters").unwrap()).unwrap()
    };
    assert_eq!(
        filters("/containers/json?all=1"),
        json!({"label": ["loop.dockerproxy.owner=loop-agent-abc123"]})
    );
    assert_eq!(
        filters(
            "/containers/json?filters=%7B%22status%22%3A%5B%22running%22%5D%2C%22label%22%3A%5B%22a%3Db%22%5D%7D"
        ),
        json!({"status": ["running"], "label": ["a=b", "loop.dockerproxy.owner=loop-agent-abc123"]})
    );
    assert_eq!(
        filters("/events?filters=%7B%22label%22%3A%7B%22a%22%3Atrue%7D%7D"),
        json!({"label": {"a": true, "loop.dockerproxy.owner=loop-agent-abc123": true}})
    );
    assert_eq!(
        filters("/networks"),
        json!({"label": ["loop.dockerproxy.owner=loop-agent-abc123"]})
    );
    assert_eq!(
        filters("/volumes"),
        json!({"label": ["loop.dockerproxy.channel=local-c"]})
    );
    // Two `filters`: the daemon reads the first; the proxy forwards exactly one.
    let two = plan(
        &p,
        "GET",
        "/containers/json?filters=%7B%7D&filters=%7B%22label%22%3A%5B%5D%7D",
    )
    .unwrap();
    assert_eq!(two.query.unwrap().all("filters").count(), 1);
    assert!(plan(&p, "GET", "/containers/json?filters=nope").is_err());
}

#[test]
fn container_create_baseline() {
    let p = policy();
    let refused: &[(Value, &str)] = &[
        (json!({"Privileged": true}), "privileged"),
        (json!({"privileged": true}), "privileged"),
        (json!({"CapAdd": ["SYS_ADMIN"]}), "cap_add"),
        (json!({"CapAdd": "NET_ADMIN"}), "cap_add"),
        (json!({"Capabilities": ["CAP_SYS_ADMIN"]}), "cap_add"),
        (json!({"Devices": [{"PathOnHost": "/dev/sda"}]}), "devices"),
        (
            json!({"Device\u{017F}": [{"PathOnHost": "/dev/sda"}]}),
            "devices",
        ),
        (json!({"DeviceRequests": [{"Count": -1}]}), "devices"),
        (json!({"DeviceCgroupRules": ["b *:* rwm"]}), "devices"),
        (json!({"Sysctls": {"net.ipv4.ip_forward": "1"}}), "sysctls"),
        (json!({"CgroupParent": "/"}), "cgroup_parent"),
        (
            json!({"SecurityOpt": ["seccomp=unconfined"]}),
            "security_opt",
        ),
        (
            json!({"SecurityOpt": ["apparmor=unconfined"]}),
            "security_opt",
        ),
        (json!({"SecurityOpt": ["label=disable"]}), "security_opt"),
        (json!({"SecurityOpt": ["label:type:spc_t"]}), "security_opt"),
        (
            json!({"SecurityOpt": ["seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\"}"]}),
            "security_opt",
        ),
        (
            json!({"SecurityOpt": ["systempaths=unconfined"]}),
            "security_opt",
        ),
        (json!({"MaskedPaths": []}), "masked_paths"),
        (json!({"ReadonlyPaths": []}), "masked_paths"),
        (json!({"PidMode": "host"}), "host_namespace"),
        (json!({"IpcMode": "host"}), "host_namespace"),
        (json!({"UTSMode": "host"}), "host_namespace"),
        (json!({"UsernsMode": "host"}), "host_namespace"),
        (json!({"CgroupnsMode": "host"}), "host_namespace"),
        (json!({"NetworkMode": "host"}), "host_network"),
        (json!({"Networ\u{212A}Mode": "host"}), "host_network"),
        (json!({"Runtime": "nvidia"}), "runtime"),
        (
            json!({"LogConfig": {"Type": "syslog", "Config": {"syslog-address": "tcp://10.0.0.1:514"}}}),
            "log_driver",
        ),
        (json!({"LogConfig": {"Type": "gelf"}}), "log_driver"),
        (
            json!({"RestartPolicy": {"Name": "always"}}),
            "restart_policy",
        ),
        (
            json!({"RestartPolicy": {"Name": "unless-stopped"}}),
            "restart_policy",
        ),
        (json!({"OomScoreAdj": -1000}), "oom_score"),
        (json!({"OomKillDisable": true}), "oom_kill_disable"),
        (json!({"PublishAllPorts": true}), "publish"),
        (
            json!({"PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}}),
            "publish",
        ),
        (
            json!({"PortBindings": {"80/tcp": [{"HostPort": "8080"}]}}),
            "publish",
        ),
        (
            json!({"PortBindings": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}}),
            "publish",
        ),
        (
            json!({"Annotations": {"io.kubernetes.cri.x": "y"}}),
            "annotations",
        ),
        (json!({"VolumeDriver": "sshfs"}), "volume_driver"),
        (json!({"Links": ["other:db"]}), "links"),
        (json!({"Binds": ["/etc:/x"]}), "bind"),
        (json!({"Binds": ["/:/host"]}), "bind"),
        (json!({"Binds": ["/home/u:/x"]}), "bind"),
        (json!({"Binds": ["/home/u/proj/sub:/x"]}), "bind"),
        (json!({"Binds": ["/home/u/proj/../..:/x"]}), "bind"),
        (json!({"Binds": ["/home/u/proj/.:/x"]}), "bind"),
        (json!({"Binds": ["/home/u/projX:/x"]}), "bind"),
        (json!({"Binds": ["/home/u//proj:/x"]}), "bind"),
        (
            json!({"Mounts": [{"Type": "bind", "Source": "/etc", "Target": "/x"}]}),
            "bind",
        ),
        (
            json!({"mounts": [{"type": "bind", "source": "/var/run/docker.sock", "target": "/s"}]}),
            "bind",
        ),
        (
            json!({"Mounts": [{"Type": "volume", "Source": "v", "Target": "/x", "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {"type": "none", "o": "bind", "device": "/"}}}}]}),
            "volume_driver",
        ),
        (
            json!({"Mounts": [{"Type": "npipe", "Source": "x", "Target": "/x"}]}),
            "mount_type",
        ),
        (
            json!({"Mounts": [{"Type": "cluster", "Source": "x", "Target": "/x"}]}),
            "mount_type",
        ),
    ];
    for (host, rule) in refused {
        let got = body(&p, "POST", "/containers/create", create(host.clone())).map(|_| ());
        assert_eq!(got, Err(format!("baseline.{rule}")), "{host}");
    }
    // Labels in the proxy's namespace are the proxy's.
    let forged = json!({"Image": "x", "Labels": {"loop.dockerproxy.owner": "someone-else"}});
    assert_eq!(
        body(&p, "POST", "/containers/create", forged).map(|_| ()),
        Err("baseline.labels".to_owned())
    );

    let allowed: &[Value] = &[
        json!({}),
        json!(null),
        json!({"Binds": ["/home/u/proj:/work", "/srv/extra/:/extra:ro", "/anon"]}),
        json!({"Mounts": [{"Type": "bind", "Source": "/home/u/proj", "Target": "/w"}, {"Type": "tmpfs", "Target": "/t"}, {"Type": "volume", "Target": "/anon"}]}),
        json!({"SecurityOpt": ["no-new-privileges", "no-new-privileges:true"]}),
        json!({"CapDrop": ["ALL"], "ReadonlyRootfs": true, "Memory": 1048576}),
        json!({"PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}}),
        json!({"NetworkMode": "bridge", "IpcMode": "private", "PidMode": "", "CgroupnsMode": "private"}),
        json!({"NetworkMode": "none"}),
        json!({"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3}}),
        json!({"LogConfig": {"Type": "json-file", "Config": {"max-size": "1m"}}}),
        json!({"Runtime": "runsc"}),
        json!({"OomScoreAdj": 500}),
    ];
    for host in allowed {
        let got = body(&p, "POST", "/containers/create", create(host.clone()));
        assert!(got.is_ok(), "{host}: {got:?}");
    }
}

#[test]
fn created_containers_are_labelled_and_hardened() {
    let p = policy();
    let (plan, rewritten) = body(
        &p,
        "POST",
        "/containers/create?name=web",
        json!({"Image": "debian", "labels": {"mine": "1"}, "HostConfig": {"capdrop": ["NET_RAW"], "PidsLimit": 0}}),
    )
    .unwrap();
    assert!(plan.lookups.is_empty());
    assert_eq!(
        rewritten["labels"],
        json!({"mine": "1", "loop.dockerproxy.owner": "loop-agent-abc123", "loop.dockerproxy.daemon": "d1"}),
        "labels keep the body's own key spelling"
    );
    assert_eq!(
        rewritten["HostConfig"]["capdrop"],
        json!(["NET_RAW", "MKNOD"])
    );
    assert_eq!(
        rewritten["HostConfig"]["PidsLimit"],
        json!(DEFAULT_PIDS_LIMIT)
    );
    assert!(rewritten.get("Labels").is_none());
    let (_, rewritten) = body(
        &p,
        "POST",
        "/containers/create",
        json!({"Image": "debian", "HostConfig": {"CapDrop": ["all"], "PidsLimit": 100}}),
    )
    .unwrap();
    assert_eq!(rewritten["HostConfig"]["CapDrop"], json!(["all"]));
    assert_eq!(rewritten["HostConfig"]["PidsLimit"], json!(100));
    let (_, rewritten) =
        body(&p, "POST", "/containers/create", json!({"Image": "debian"})).unwrap();
    assert_eq!(rewritten["HostConfig"]["CapDrop"], json!(["MKNOD"]));
}

#[test]
fn references_to_other_objects_must_be_the_agents() {
    let p = policy();
    let (plan, mut value) = body(
        &p,
        "POST",
        "/containers/create",
        json!({
            "Image": "debian",
            "HostConfig": {
                "NetworkMode": "container:db",
                "PidMode": "container:db",
                "IpcMode": "container:cache",
                "VolumesFrom": ["data:ro", "cache"],
                "Binds": ["named:/n", "/home/u/proj:/w"]
            },
            "NetworkingConfig": {"EndpointsConfig": {"appnet": {}, "bridge": {}}}
        }),
    )
    .unwrap();
    let want = [
        Lookup::Container("db".into()),
        Lookup::Container("cache".into()),
        Lookup::UseVolume("named".into()),
        Lookup::Container("data".into()),
        Lookup::Network("appnet".into()),
    ];
    for lookup in &want {
        assert!(
            plan.lookups.contains(lookup),
            "{lookup:?} in {:?}",
            plan.lookups
        );
    }
    assert_eq!(plan.lookups.len(), want.len(), "{:?}", plan.lookups);
    // After the lookups, names become full ids.
    let mut resolved = Resolved::default();
    for (name, id) in [
        ("db", "d".repeat(64)),
        ("cache", "c".repeat(64)),
        ("data", "a".repeat(64)),
    ] {
        resolved.containers.insert(name.into(), id);
    }
    resolved.networks.insert("appnet".into(), "n".repeat(64));
    let call = call("POST", "/containers/create").unwrap();
    let mut plan = plan;
    p.apply(&call, &mut plan, Some(&mut value), &resolved);
    assert_eq!(
        value["HostConfig"]["NetworkMode"],
        json!(format!("container:{}", "d".repeat(64)))
    );
    assert_eq!(
        value["HostConfig"]["IpcMode"],
        json!(format!("container:{}", "c".repeat(64)))
    );
    assert_eq!(
        value["HostConfig"]["VolumesFrom"],
        json!([format!("{}:ro", "a".repeat(64)), "c".repeat(64)])
    );
    let endpoints = value["NetworkingConfig"]["EndpointsConfig"]
        .as_object()
        .unwrap();
    assert!(endpoints.contains_key(&"n".repeat(64)) && endpoints.contains_key("bridge"));

    // A custom network mode is a network that must be the agent's.
    let (plan, _) = body(
        &p,
        "POST",
        "/containers/create",
        create(json!({"NetworkMode": "appnet"})),
    )
    .unwrap();
    assert_eq!(plan.lookups, [Lookup::Network("appnet".into())]);
    // Network connect names a container.
    let (plan, _) = body(
        &p,
        "POST",
        "/networks/appnet/connect",
        json!({"Container": "web"}),
    )
    .unwrap();
    assert_eq!(
        plan.lookups,
        [
            Lookup::PathNetwork(Span { start: 1, end: 2 }),
            Lookup::Container("web".into())
        ]
    );
    assert!(body(&p, "POST", "/networks/appnet/connect", json!({})).is_err());
}

#[test]
fn exec_update_network_and_volume_bodies() {
    let p = policy();
    assert_eq!(
        body(
            &p,
            "POST",
            "/containers/web/exec",
            json!({"Cmd": ["sh"], "Privileged": true})
        )
        .map(|_| ()),
        Err("baseline.privileged".to_owned())
    );
    assert!(
        body(
            &p,
            "POST",
            "/containers/web/exec",
            json!({"Cmd": ["sh"], "User": "root"})
        )
        .is_ok()
    );
    assert!(
        body(
            &p,
            "POST",
            "/exec/e1/start",
            json!({"Detach": false, "Tty": false})
        )
        .is_ok()
    );
    for (update, rule) in [
        (json!({"Devices": [{"PathOnHost": "/dev/mem"}]}), "devices"),
        (json!({"CgroupParent": "x"}), "cgroup_parent"),
        (
            json!({"RestartPolicy": {"Name": "always"}}),
            "restart_policy",
        ),
        (json!({"OomKillDisable": true}), "oom_kill_disable"),
    ] {
        assert_eq!(
            body(&p, "POST", "/containers/web/update", update.clone()).map(|_| ()),
            Err(format!("baseline.{rule}")),
            "{update}"
        );
    }
    assert!(
        body(
            &p,
            "POST",
            "/containers/web/update",
            json!({"Memory": 1000000, "CpuShares": 2})
        )
        .is_ok()
    );

    for (network, rule) in [
        (
            json!({"Name": "n", "Driver": "macvlan", "Options": {"parent": "eth0"}}),
            "network_driver",
        ),
        (json!({"Name": "n", "Driver": "host"}), "network_driver"),
        (
            json!({"Name": "n", "Options": {"com.docker.network.bridge.name": "docker0"}}),
            "network_options",
        ),
        (
            json!({"Name": "n", "IPAM": {"Config": [{"Subnet": "192.168.1.0/24"}]}}),
            "network_options",
        ),
        (json!({"Name": "n", "Ingress": true}), "network_options"),
        (
            json!({"Name": "n", "ConfigFrom": {"Network": "x"}}),
            "network_options",
        ),
        (json!({"Name": "n", "Scope": "swarm"}), "network_options"),
        (
            json!({"Name": "n", "Labels": {"loop.dockerproxy.owner": "x"}}),
            "labels",
        ),
    ] {
        assert_eq!(
            body(&p, "POST", "/networks/create", network.clone()).map(|_| ()),
            Err(format!("baseline.{rule}")),
            "{network}"
        );
    }
    let (_, network) = body(
        &p,
        "POST",
        "/networks/create",
        json!({"Name": "n", "Internal": true}),
    )
    .unwrap();
    assert_eq!(
        network["Labels"]["loop.dockerproxy.owner"],
        json!("loop-agent-abc123")
    );

    for (volume, rule) in [
        (
            json!({"Name": "v", "DriverOpts": {"type": "none", "o": "bind", "device": "/etc"}}),
            "volume_driver",
        ),
        (json!({"Name": "v", "Driver": "sshfs"}), "volume_driver"),
        (
            json!({"Name": "v", "ClusterVolumeSpec": {"Group": "g"}}),
            "swarm",
        ),
    ] {
        assert_eq!(
            body(&p, "POST", "/volumes/create", volume.clone()).map(|_| ()),
            Err(format!("baseline.{rule}")),
            "{volume}"
        );
    }
    let (_, volume) = body(&p, "POST", "/volumes/create", json!({"Name": "v"})).unwrap();
    assert_eq!(
        volume["Labels"],
        json!({"loop.dockerproxy.channel": "local-c"})
    );
}

#[test]
fn egress_keeps_nested_containers_on_the_internal_network() {
    let p = policy_with(Some("loop-egress"));
    for target in [
        "/networks/create",
        "/networks/n/connect",
        "/networks/n/disconnect",
        "/images/x/push",
        "/auth",
    ] {
        assert_eq!(
            plan(&p, "POST", target).map(|_| ()),
            Err("baseline.egress".to_owned()),
            "{target}"
        );
    }
    assert_eq!(
        plan(&p, "GET", "/images/search?term=x").map(|_| ()),
        Err("baseline.egress".to_owned())
    );
    assert_eq!(
        plan(&p, "GET", "/distribution/x/json").map(|_| ()),
        Err("baseline.egress".to_owned())
    );
    // Pulls still work (the residual risk in the README).
    assert!(plan(&p, "POST", "/images/create?fromImage=debian").is_ok());

    for mode in ["", "default", "bridge"] {
        let (_, value) = body(
            &p,
            "POST",
            "/containers/create",
            create(json!({"NetworkMode": mode})),
        )
        .unwrap();
        assert_eq!(
            value["HostConfig"]["NetworkMode"],
            json!("loop-egress"),
            "{mode:?}"
        );
    }
    let (_, value) = body(&p, "POST", "/containers/create", json!({"Image": "x"})).unwrap();
    assert_eq!(value["HostConfig"]["NetworkMode"], json!("loop-egress"));
    assert!(
        body(
            &p,
            "POST",
            "/containers/create",
            create(json!({"NetworkMode": "none"}))
        )
        .is_ok()
    );
    assert!(
        body(
            &p,
            "POST",
            "/containers/create",
            create(json!({"NetworkMode": "loop-egress"}))
        )
        .is_ok()
    );
    for mode in ["appnet", "host"] {
        assert_eq!(
            body(
                &p,
                "POST",
                "/containers/create",
                create(json!({"NetworkMode": mode}))
            )
            .map(|_| ()),
            Err("baseline.egress".to_owned()),
            "{mode}"
        );
    }
    let elsewhere = json!({"Image": "x", "NetworkingConfig": {"EndpointsConfig": {"appnet": {}}}});
    assert_eq!(
        body(&p, "POST", "/containers/create", elsewhere).map(|_| ()),
        Err("baseline.egress".to_owned())
    );
    // The CLI names the default network `default`: it becomes the internal one.
    let cli = json!({"Image": "x", "HostConfig": {"NetworkMode": "default"},
        "NetworkingConfig": {"EndpointsConfig": {"default": {"Aliases": ["a"]}}}});
    let (_, value) = body(&p, "POST", "/containers/create", cli).unwrap();
    assert_eq!(value["HostConfig"]["NetworkMode"], json!("loop-egress"));
    assert_eq!(
        value["NetworkingConfig"]["EndpointsConfig"],
        json!({"loop-egress": {"Aliases": ["a"]}})
    );
    // Builds run on the internal network too.
    let build = plan(&p, "POST", "/build?t=x").unwrap();
    assert_eq!(
        build.query.unwrap().first("networkmode"),
        Some("loop-egress")
    );
    assert_eq!(
        plan(&p, "POST", "/build?networkmode=appnet").map(|_| ()),
        Err("baseline.egress".to_owned())
    );
}

#[test]
fn references_and_host_paths_normalise() {
    for (reference, repo) in [
        ("debian", "docker.io/library/debian"),
        ("debian:bookworm-slim", "docker.io/library/debian"),
        ("library/debian@sha256:abc", "docker.io/library/debian"),
        ("docker.io/library/debian:1", "docker.io/library/debian"),
        ("index.docker.io/me/app", "docker.io/me/app"),
        ("me/app:1", "docker.io/me/app"),
        ("localhost:5000/app:1", "localhost:5000/app"),
        ("localhost/app", "localhost/app"),
        ("ghcr.io/o/app:tag", "ghcr.io/o/app"),
        ("LOOP-AGENT", "docker.io/library/loop-agent"),
    ] {
        assert_eq!(
            repository_of(reference).as_deref(),
            Some(repo),
            "{reference}"
        );
    }
    assert_eq!(repository_of(""), None);
    assert_eq!(repository_of(":tag"), None);
    assert_eq!(normalize_host_path("/a/b/").as_deref(), Some("/a/b"));
    assert_eq!(normalize_host_path("/").as_deref(), Some("/"));
    for bad in ["a/b", "/a//b", "/a/./b", "/a/../b", ""] {
        assert_eq!(normalize_host_path(bad), None, "{bad}");
    }
    let p = policy();
    assert!(p.is_protected("loop-agent"));
    assert!(p.is_protected("docker.io/library/loop-chrome:v9"));
    assert!(!p.is_protected("loop-agentx"));
}
