//! The command line: --check-config, configuration errors at start-up, the healthcheck
//! subcommand, and the shipped files.

use crate::support::Daemon;
use crate::support::daemon::run_binary;

#[test]
fn check_config_accepts_the_shipped_files() {
    let (code, out, err) = run_binary(&["--check-config", "--config", "config/consul-dns.toml"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("configuration OK") && out.contains("5 instances"), "{out}");
    let (code, out, err) = run_binary(&[
        "--check-config",
        "--static",
        "builtin",
        "--recursor",
        "192.0.2.53",
        "--allow-recursion",
        "10.0.0.0/8",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("recursion: [192.0.2.53:53] (from configuration) for clients in 10.0.0.0/8"), "{out}");
    let (_, out, _) = run_binary(&["--check-config", "--static", "builtin", "--recursor", "none"]);
    assert!(out.contains("recursion: off"), "{out}");
}

#[test]
fn check_config_into_a_closed_pipe_exits_quietly() {
    // `consul-dns --check-config | head -1`: the reader is gone before the second line.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(crate::support::daemon::binary())
        .args(["--check-config", "--config", "config/consul-dns.toml"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "nothing to say about a closed pipe: {err}");
}

#[test]
fn check_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "domain = \"consul.\"\nnode_ttl = \"5s\"\nlisten_addr = \"127.0.0.1:53\"\n").unwrap();
    let (code, _, err) = run_binary(&["--check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("bad.toml:3:") && err.contains("listen_addr"), "{err}");
    let catalog = dir.path().join("bad-catalog.toml");
    std::fs::write(&catalog, "[[services]]\nname = \"web\"\nport = 80\nnode = \"ghost\"\n").unwrap();
    let (code, _, err) = run_binary(&["--check-config", "--static", catalog.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("bad-catalog.toml:line 2") && err.contains("ghost"), "{err}");
}

#[test]
fn daemon_refuses_to_start_with_a_bad_config() {
    let (code, _, err) = run_binary(&["--listen", "127.0.0.1:0", "--node-ttl", "soon"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--node-ttl") && err.contains("invalid duration"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let (code, _, err) = run_binary(&["--listen", "127.0.0.1:0", "--static", missing.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("missing.toml"), "{err}");
}

/// Finding: started with no catalog named (an installed binary, a unit file), the daemon
/// silently served the built-in example. Now it refuses and says how to name one; the example
/// is served only when asked for.
#[test]
fn no_catalog_refuses_to_start_and_the_example_is_served_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(crate::support::daemon::binary())
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--listen", "127.0.0.1:0", "--http", "off"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--static FILE") && stderr.contains("--static builtin"), "{stderr}");
    let out = run(&["--check-config", "--static", "builtin"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("built into the binary") && stdout.contains("5 instances"),
        "{stdout}"
    );
}

#[test]
fn healthcheck_succeeds_against_a_daemon_and_fails_without_one() {
    let d = Daemon::start("[[services]]\nname = \"web\"\nid = \"web-1\"\naddress = \"127.0.0.9\"\nport = 80\n", &[]);
    let (code, out, err) = run_binary(&["healthcheck", &d.addr.to_string()]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("NoError") || out.contains("NOERROR") || out.contains("No Error"), "{out}");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap(); // bound, never answers
    let silent = socket.local_addr().unwrap().to_string();
    let (code, _, err) = run_binary(&["healthcheck", &silent, "--timeout-ms", "300"]);
    assert_eq!(code, Some(1), "{err}");
}

#[test]
fn a_taken_port_is_reported_once_with_what_to_do() {
    let holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let listen = holder.local_addr().unwrap().to_string();
    for format in ["text", "json"] {
        let (code, _, err) = run_binary(&[
            "--static",
            "config/services.toml",
            "--listen",
            &listen,
            "--http",
            "off",
            "--recursor",
            "none",
            "--log-format",
            format,
        ]);
        assert_eq!(code, Some(1), "{err}");
        let mentions: Vec<&str> = err.lines().filter(|l| l.contains("already uses that port")).collect();
        assert_eq!(mentions.len(), 1, "said once ({format}): {err}");
        assert!(mentions[0].contains(&listen) && mentions[0].contains("--listen"), "{}", mentions[0]);
        assert!(mentions[0].contains("Consul agent"), "{}", mentions[0]);
        if format == "json" {
            for line in err.lines() {
                assert!(serde_json::from_str::<serde_json::Value>(line).is_ok(), "not JSON: {line}");
            }
        }
    }
}

#[test]
fn healthcheck_reads_the_daemons_configuration_and_counts_nxdomain_as_unhealthy() {
    let d = Daemon::start("", &["--domain", "example."]);
    let config = d.dir.path().join("healthcheck.toml");
    std::fs::write(&config, format!("listen = [\"{}\"]\ndomain = \"example.\"\n", d.addr)).unwrap();
    let config = config.to_str().unwrap();
    let (code, out, err) = run_binary(&["--config", config, "healthcheck"]);
    assert_eq!(code, Some(0), "address and domain from the file: {out}{err}");
    assert!(out.contains("NOERROR for example. SOA"), "{out}");
    let out = std::process::Command::new(crate::support::daemon::binary())
        .args(["healthcheck"])
        .env("CONSUL_DNS_LISTEN", d.addr.to_string())
        .env("CONSUL_DNS_DOMAIN", "example.")
        .output()
        .unwrap();
    assert!(out.status.success(), "from the environment: {}", String::from_utf8_lossy(&out.stderr));
    let (code, out, err) = run_binary(&["--config", config, "healthcheck", "--name", "example"]);
    assert_eq!(code, Some(0), "a name without the trailing dot: {out}{err}");
    let (code, _, err) = run_binary(&["--config", config, "healthcheck", "--name", "nothing.example"]);
    assert_eq!(code, Some(1), "NXDOMAIN is not healthy: {err}");
    assert!(err.contains("NXDOMAIN"), "{err}");
    let (code, _, err) = run_binary(&["--config", config, "healthcheck", "--name", "consul"]);
    assert_eq!(code, Some(1), "outside the domain: REFUSED is not healthy: {err}");
}

#[test]
fn version_names_the_commit_and_the_build_profile() {
    let (code, out, err) = run_binary(&["--version"]);
    assert_eq!(code, Some(0), "{err}");
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    assert!(!head.is_empty(), "the tests run in a git checkout");
    assert!(out.starts_with(&format!("consul-dns {} ({head}, ", env!("CARGO_PKG_VERSION"))), "{out}");
    assert!(out.contains("debug build") || out.contains("release build"), "{out}");
}

#[test]
fn query_prints_the_reply_like_dig_and_falls_back_to_tcp() {
    let d = Daemon::start(&crate::support::big_catalog("big", 20), &[]);
    let server = d.addr.to_string();
    let (code, out, err) = run_binary(&["--listen", &server, "query", "big.service.consul", "srv"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with(";; status: NOERROR; flags: aa rd; answer 20,"), "{out}");
    assert!(out.contains("over TCP after a truncated UDP reply"), "every instance, as dig would: {out}");
    assert_eq!(out.lines().filter(|l| l.contains(" IN SRV 1 1 ")).count(), 20, "{out}");
    let (code, out, err) = run_binary(&["query", "--server", &server, "n3.node.consul"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("n3.node.consul. 5 IN A 127.1.0.4"), "{out}");
    let (code, out, _) = run_binary(&["query", "--server", &server, "nothing.service.consul", "A"]);
    assert_eq!(code, Some(0), "a reply is a reply, as with dig");
    assert!(out.starts_with(";; status: NXDOMAIN;") && out.contains("IN SOA"), "{out}");
    let (code, _, err) = run_binary(&["query", "--server", &server, "web.service.consul", "bogus"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("unknown record type \"bogus\""), "{err}");
}
