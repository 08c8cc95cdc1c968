//! The configuration as a new user meets it, on the real binary: the shipped file from any
//! directory, paths in a file taken from its directory, errors that give the full path and
//! the line, `--print-config`, and a warning for a `CONSUL_DNS_*` variable that is no setting.

use std::path::Path;
use std::process::Command;

use crate::support::Daemon;
use crate::support::daemon::binary;

/// Runs the binary in `cwd` with a clean environment for our variables, plus `env`.
fn run_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut command = Command::new(binary());
    command.current_dir(cwd).args(args).env_remove("RUST_LOG");
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("CONSUL_")) {
        command.env_remove(key);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command.output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

fn shipped_config() -> String {
    std::path::absolute("config/consul-dns.toml").unwrap().display().to_string()
}

/// Finding: the shipped config worked only from the repository root.
#[test]
fn the_shipped_config_works_from_any_directory() {
    let elsewhere = tempfile::tempdir().unwrap();
    let (code, out, err) = run_in(elsewhere.path(), &["--check-config", "--config", &shipped_config()], &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    let catalog = std::path::absolute("config/services.toml").unwrap();
    assert!(out.contains(&format!("static catalog {}: ", catalog.display())), "{out}");
    assert!(out.contains("5 instances"), "{out}");
}

/// Finding: relative paths in a file resolved against the working directory, and a missing
/// file's error did not say where it was looked for.
#[test]
fn paths_in_a_file_are_taken_from_its_directory_and_errors_give_the_full_path() {
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc");
    std::fs::create_dir_all(etc.join("catalog")).unwrap();
    std::fs::copy("config/services.toml", etc.join("catalog/services.toml")).unwrap();
    std::fs::write(etc.join("consul-dns.toml"), "static = \"catalog/services.toml\"\n").unwrap();
    let config = etc.join("consul-dns.toml").display().to_string();
    let (code, out, err) = run_in(root.path(), &["--check-config", "--config", &config], &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("{}: ", etc.join("catalog/services.toml").display())), "{out}");

    std::fs::write(etc.join("consul-dns.toml"), "static = \"missing.toml\"\n").unwrap();
    let (code, _, err) = run_in(root.path(), &["--check-config", "--config", &config], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("cannot read catalog {}", etc.join("missing.toml").display())), "{err}");

    // A flag stays relative to the working directory, and the error gives the full path.
    let (code, _, err) = run_in(root.path(), &["--check-config", "--static", "missing.toml"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("cannot read catalog {}", root.path().join("missing.toml").display())), "{err}");
}

/// Finding: `consul_wait = "20m"` reported no place and was not checked without Consul.
#[test]
fn a_bad_value_is_reported_with_file_line_and_key_whatever_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "static = \"builtin\"\n\nconsul_wait = \"20m\"\n").unwrap();
    let (code, _, err) = run_in(dir.path(), &["--check-config", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "{err}");
    let want = format!("{}:3:15: consul_wait \"20m\" is out of range", config.display());
    assert!(err.contains(&want), "wanted {want:?} in:\n{err}");
    assert!(err.contains("consul_wait = \"20m\""), "the line itself is shown:\n{err}");
}

#[test]
fn print_config_shows_each_value_and_where_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "static = \"builtin\"\nconsul_token = \"t0p-s3cr3t\"\nlisten = \"127.0.0.1:5300\"\n")
        .unwrap();
    let args = ["--print-config", "--config", config.to_str().unwrap(), "--node-ttl", "9s"];
    let (code, out, err) = run_in(dir.path(), &args, &[("CONSUL_DNS_DOMAIN", "example.")]);
    assert_eq!(code, Some(0), "{err}");
    let file = config.display();
    for line in [
        format!("static = \"builtin\"  # {file}:1"),
        format!("consul_token = \"***\"  # {file}:2"),
        format!("listen = [\"127.0.0.1:5300\"]  # {file}:3"),
        "node_ttl = \"9s\"  # flag --node-ttl".to_owned(),
        "domain = \"example.\"  # environment variable CONSUL_DNS_DOMAIN".to_owned(),
        "negative_ttl = \"5s\"  # default".to_owned(),
        "recursor_strategy = \"sequential\"  # default".to_owned(),
    ] {
        assert!(out.lines().any(|l| l == line), "wanted the line {line:?} in:\n{out}");
    }
    assert!(!out.contains("t0p-s3cr3t") && !err.contains("t0p-s3cr3t"), "the secret is never shown:\n{out}");
}

/// Finding: `CONSUL_DNS_NODE_TLL` was silently ignored.
#[test]
fn an_unknown_consul_dns_variable_is_warned_about_with_the_closest_name() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("CONSUL_DNS_NODE_TLL", "30s")];
    let (code, _, err) = run_in(dir.path(), &["--check-config", "--static", "builtin"], &env);
    assert_eq!(code, Some(0), "a warning, not an error: {err}");
    let want = "CONSUL_DNS_NODE_TLL is not a consul-dns setting and is ignored; did you mean CONSUL_DNS_NODE_TTL?";
    assert!(err.contains(want), "{err}");

    let mut command = Command::new(binary());
    command.args(["--listen", "127.0.0.1:0", "--http", "off", "--static", "builtin", "--recursor", "none"]);
    command.env("CONSUL_DNS_LISTN", "127.0.0.1:53").env_remove("RUST_LOG");
    let daemon = Daemon::spawn(command, dir, true);
    assert!(
        daemon.log().lines().any(|l| l.contains("WARN") && l.contains("did you mean CONSUL_DNS_LISTEN?")),
        "{}",
        daemon.log()
    );
}
