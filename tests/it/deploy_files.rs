//! Deployment files beyond compose, each checked by a tool that runs here: the Dockerfiles by
//! hadolint, the systemd unit by `systemd-analyze verify` and `security`, the Kubernetes
//! manifests by kubernetes-validate (the official schemas, bundled, offline) — and the daemon
//! run with the Deployment's own arguments and ConfigMap catalog, probed where the kubelet
//! would probe it.

use std::path::PathBuf;
use std::process::{Command, Output};

use hickory_proto::rr::RecordType;
use serde_json::Value;

use crate::support::daemon::{binary, run_binary};
use crate::support::{Daemon, http, query_udp};

/// A tool on PATH, else in the venv scripts/test makes under target/tools.
fn tool(name: &str) -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/venv/bin").join(name);
    let on_path = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()));
    on_path
        .or_else(|| venv.is_file().then_some(venv))
        .unwrap_or_else(|| panic!("{name} is not installed (scripts/test installs it)"))
}

fn run(mut command: Command) -> Output {
    command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

const DOCKERFILES: [&str; 3] = ["Dockerfile", "examples/user/Dockerfile", "examples/order/Dockerfile"];

#[test]
fn dockerfiles_are_hadolint_clean_multi_stage_non_root_and_health_checked() {
    let hadolint = tool("hadolint");
    for file in DOCKERFILES {
        let out = run({
            let mut c = Command::new(&hadolint);
            c.arg(file);
            c
        });
        assert!(out.status.success() && text(&out).trim().is_empty(), "hadolint {file}:\n{}", text(&out));
        let body = std::fs::read_to_string(file).unwrap();
        let stages = body.lines().filter(|l| l.starts_with("FROM ")).count();
        assert!(stages >= 2, "{file}: multi-stage (build apart from runtime)");
        let last = body.rsplit("\nFROM ").next().unwrap();
        let user = last.lines().find_map(|l| l.strip_prefix("USER ")).map(str::trim);
        let distroless_nonroot = last.lines().next().is_some_and(|l| l.ends_with(":nonroot"));
        match user {
            Some(u) => assert!(u.parse::<u32>().is_ok_and(|uid| uid != 0), "{file}: numeric non-root USER, got {u}"),
            None => assert!(distroless_nonroot, "{file}: a USER or a nonroot base image"),
        }
        assert!(last.contains("HEALTHCHECK "), "{file}: the runtime stage has a HEALTHCHECK");
    }
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let dir = tempfile::tempdir().unwrap();
    // The unit as shipped, but starting the binary built here (verify checks ExecStart exists).
    let unit = std::fs::read_to_string("deploy/systemd/consul-dns.service").unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/consul-dns "), "{unit}");
    let path = dir.path().join("consul-dns.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/consul-dns", binary())).unwrap();
    for line in ["DynamicUser=yes", "NoNewPrivileges=yes", "CapabilityBoundingSet=\n", "AmbientCapabilities=\n"] {
        assert!(unit.contains(line), "the unit sets {line:?}");
    }
    let dropins = dir.path().join("consul-dns.service.d");
    std::fs::create_dir(&dropins).unwrap();
    std::fs::copy("deploy/systemd/port-53.conf", dropins.join("port-53.conf")).unwrap();
    let port53 = std::fs::read_to_string("deploy/systemd/port-53.conf").unwrap();
    assert!(port53.contains("AmbientCapabilities=CAP_NET_BIND_SERVICE\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"));

    let verify = run({
        let mut c = Command::new("systemd-analyze");
        c.args(["verify", "--man=no"]).arg(&path);
        c
    });
    // verify exits 0 on unknown keys too, with a warning: any output is a failure here.
    assert!(verify.status.success() && text(&verify).trim().is_empty(), "systemd-analyze verify:\n{}", text(&verify));

    let security = run({
        let mut c = Command::new("systemd-analyze");
        c.args(["security", "--offline=yes", "--no-pager"]).arg(&path);
        c
    });
    let report = text(&security);
    let exposure: f64 = report
        .split("Overall exposure level for consul-dns.service: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    println!("systemd-analyze security: exposure {exposure}");
    assert!(exposure <= 2.0, "exposure {exposure} (0 = locked down, 10 = none):\n{report}");

    // The configuration file the unit starts with is valid, with and without the drop-in's port.
    let (code, out, err) = run_binary(&["--check-config", "--config", "deploy/systemd/consul-dns.toml"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("state_dir /var/lib/consul-dns"), "{out}");
}

/// deploy/kubernetes/consul-dns.yaml as JSON documents.
fn manifests() -> Vec<Value> {
    let script = "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    let out = run({
        let mut c = Command::new("python3");
        c.args(["-c", script, "deploy/kubernetes/consul-dns.yaml"]);
        c
    });
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn kubernetes_manifests_validate_against_the_schemas() {
    let out = run({
        let mut c = Command::new(tool("kubernetes-validate"));
        c.args(["--strict", "-k", "1.30.0", "deploy/kubernetes/consul-dns.yaml"]);
        c
    });
    assert!(out.status.success(), "kubernetes-validate:\n{}", text(&out));
    assert_eq!(text(&out).matches(" passed for resource ").count(), 3, "{}", text(&out));

    let docs = manifests();
    let service = kind(&docs, "Service");
    let ports: Vec<(i64, &str)> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["port"].as_i64().unwrap(), p["protocol"].as_str().unwrap()))
        .collect();
    assert_eq!(ports, [(53, "UDP"), (53, "TCP")]);
    let pod = &kind(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
}

#[test]
fn kubernetes_deployment_arguments_and_catalog_serve_and_probe() {
    let docs = manifests();
    let catalog = kind(&docs, "ConfigMap")["data"]["services.toml"].as_str().unwrap().to_owned();
    let container = &kind(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let mount = container["volumeMounts"][0]["mountPath"].as_str().unwrap();
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .filter(|a| !a.starts_with("--listen=") && !a.starts_with("--http=")) // the harness binds loopback
        .map(|a| a.replace(mount, "CATALOG_DIR"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.toml"), &catalog).unwrap();
    // `--flag=value` as two words, the way the harness recognises the flags it would add.
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("CATALOG_DIR", &dir.path().display().to_string()))
        .flat_map(|a| match a.split_once('=') {
            Some((flag, value)) => vec![flag.to_owned(), value.to_owned()],
            None => vec![a],
        })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Daemon::start_in(dir, &args);

    for probe in ["readinessProbe", "livenessProbe"] {
        let path = container[probe]["httpGet"]["path"].as_str().unwrap();
        let reply = http::get(d.http(), path);
        assert_eq!(reply.status, 200, "{probe} {path}: {}", reply.text());
    }
    let srv = query_udp(d.addr, "user.service.consul", RecordType::SRV, None);
    assert_eq!(srv.answers().len(), 2, "the ConfigMap's two user instances: {:?}", srv.answers());
    let outside = query_udp(d.addr, "example.com", RecordType::A, None);
    assert_eq!(outside.rcode(), 5, "--recursor=none: REFUSED outside the domain");
}
