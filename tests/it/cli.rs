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
