//! Every command the Markdown files show, accounted for: each line of a fenced `sh` block and
//! each inline code span that starts like a command (`consul-dns …`, `dig …`, `cargo …`) has
//! an entry in [`COMMANDS`] that says how it is checked — run here as written, checked by a
//! named test, or why it cannot run here. A command added to a document without an entry, or
//! an entry whose command is no longer in its document, fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::Daemon;
use crate::support::daemon::binary;

/// How one documented command is checked.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// Run here, as written, from the repository root (`consul-dns` is the binary under test;
    /// `dig`'s `-p 8600` goes to a daemon on the shipped catalog and a free port); must exit 0.
    Run,
    /// Checked by this test function of `tests/it/` (which must exist).
    Test(&'static str),
    /// Part of `.ci/run` itself.
    Ci,
    /// Cannot run here, and why.
    NotHere(&'static str),
}

use Check::*;

const NO_CONSUL: &str = "needs a Consul binary; the fake Consul stands in (tests/it/consul.rs)";
const NO_DOCKER: &str = "no Docker engine here; tests/it/deploy.rs checks the files and runs the stack's command";
const SYSTEMD: &str = "installs into the machine's own systemd; tests/it/deploy_files.rs verifies the unit";
const REHEARSAL: &str = "stack_on_its_real_addresses_serves_kong_and_refuses_strangers";
const KONG_CONFIG: &str = "kong_config_creates_the_seed_services_and_routes_and_stops_on_errors";
const KUBERNETES: &str = "kubernetes_deployment_arguments_and_catalog_serve_and_probe";
const FUZZ: &str =
    "needs a nightly toolchain and minutes of CPU; scripts/fuzz runs it, tests/it/fuzz_corpus.rs replays the corpora";
const BENCH: &str = "minutes of CPU and root for the cgroup; run by hand (bench/README.md)";

/// (document, command as written, check).
const COMMANDS: &[(&str, &str, Check)] = &[
    (
        "README.md",
        "cargo run --release -- --static builtin",
        Test("no_catalog_refuses_to_start_and_the_example_is_served_only_when_asked"),
    ),
    ("README.md", "scripts/test", Ci),
    ("README.md", "dig @127.0.0.1 -p 8600 user.service.consul SRV", Run),
    (
        "README.md",
        "KONG_DNS_RESOLVER=<consul-dns ip>:8600",
        Test("kong_k16_readme_tells_kong_users_how_to_set_up_both_clients"),
    ),
    (
        "README.md",
        "KONG_DNS_ORDER=LAST,SRV,A,CNAME",
        Test("kong_k16_readme_tells_kong_users_how_to_set_up_both_clients"),
    ),
    ("README.md", "KONG_NEW_DNS_CLIENT=on", Test("kong_k16_readme_tells_kong_users_how_to_set_up_both_clients")),
    (
        "README.md",
        "KONG_RESOLVER_ADDRESS=<consul-dns ip>:8600",
        Test("kong_k16_readme_tells_kong_users_how_to_set_up_both_clients"),
    ),
    ("README.md", "consul agent -dev &", NotHere(NO_CONSUL)),
    ("README.md", "consul services register -name web -port 8080 -address 127.0.0.1", NotHere(NO_CONSUL)),
    (
        "README.md",
        "consul-dns --consul http://127.0.0.1:8500 --state-dir /var/lib/consul-dns",
        Test("initial_sync_answers_services_nodes_srv_and_meta"),
    ),
    (
        "README.md",
        "dig @127.0.0.1 -p 8600 web.service.consul SRV",
        Test("initial_sync_answers_services_nodes_srv_and_meta"),
    ),
    (
        "README.md",
        "go tool pprof -top http://127.0.0.1:9153/debug/pprof/profile?seconds=10",
        Test("cpu_profile_is_read_by_go_tool_pprof"),
    ),
    (
        "README.md",
        "go tool pprof -http=:8080 http://127.0.0.1:9153/debug/pprof/profile",
        NotHere("opens a web UI; the profile it reads is checked by cpu_profile_is_read_by_go_tool_pprof"),
    ),
    ("README.md", "bench/run.sh", NotHere(BENCH)),
    ("README.md", "bench/run.sh --mode startup", NotHere(BENCH)),
    ("README.md", "bench/run.sh --mode consul-sync", NotHere(BENCH)),
    ("README.md", "bench/run.sh --mode rss", NotHere(BENCH)),
    ("README.md", "bench/run.sh --mode change-latency", NotHere(BENCH)),
    ("README.md", "bench/run.sh -l 5", NotHere(BENCH)),
    ("README.md", "bench/run.sh -s 100000 -l 5", NotHere(BENCH)),
    (
        "README.md",
        "cargo build --release --features heap-profile",
        Test("heap_profile_is_read_by_go_tool_pprof_or_says_how_to_get_one"),
    ),
    (
        "README.md",
        "go tool pprof -top http://127.0.0.1:9153/debug/pprof/heap",
        Test("heap_profile_is_read_by_go_tool_pprof_or_says_how_to_get_one"),
    ),
    ("README.md", "cargo bench --bench hot_path", NotHere("minutes of CPU; --all-targets builds the benches in CI")),
    ("README.md", "cargo clippy --all-targets -- -D warnings", Ci),
    ("README.md", "cargo doc --open", NotHere("opens a browser")),
    ("README.md", "cargo fmt --check", Ci),
    ("README.md", "cargo test --all-targets", Ci),
    ("README.md", "consul-dns --check-config --static config/services.toml", Run),
    ("README.md", "docker-compose up -d --build", NotHere(NO_DOCKER)),
    ("README.md", "docker-compose ps", NotHere(NO_DOCKER)),
    ("README.md", "consul-dns --version", Run),
    (
        "README.md",
        "consul-dns healthcheck [ADDR] [--name NAME]",
        Test("healthcheck_reads_the_daemons_configuration_and_counts_nxdomain_as_unhealthy"),
    ),
    (
        "README.md",
        "consul-dns query NAME [TYPE] [--server ADDR] [--tcp]",
        Test("query_prints_the_reply_like_dig_and_falls_back_to_tcp"),
    ),
    // The whole stack (README "Run the whole stack", deploy/README.md): what runs in containers
    // cannot run here; its network and lookups are rehearsed by tests/it/rehearsal.rs.
    ("README.md", "dig @127.0.0.1 -p 8600 ac28000b.addr.dc1.consul A", Test(REHEARSAL)),
    ("README.md", "dig @172.40.0.9 -p 8600 user.service.consul SRV", Test(REHEARSAL)),
    ("README.md", "curl -s http://127.0.0.1:8001/services | python3 -m json.tool | grep '\"host\"'", Test(KONG_CONFIG)),
    (
        "README.md",
        "curl -s http://127.0.0.1:8001/routes   | python3 -m json.tool | grep -A1 '\"paths\"'",
        Test(KONG_CONFIG),
    ),
    ("README.md", "curl http://127.0.0.1:8000/user/hello", Test(REHEARSAL)),
    ("README.md", "curl http://127.0.0.1:8000/order/hello", Test(REHEARSAL)),
    ("README.md", "docker-compose stop user-1", NotHere(NO_DOCKER)),
    ("README.md", "dig @<docker host> -p 8600 example.com", Test(REHEARSAL)),
    ("README.md", "docker-compose --profile canal up -d", NotHere(NO_DOCKER)),
    ("README.md", "cargo test --test it rehearsal:: -- --nocapture", Test(REHEARSAL)),
    ("deploy/README.md", "cargo build --release --locked", Ci),
    ("deploy/README.md", "docker-compose --profile canal up -d --build", NotHere(NO_DOCKER)),
    (
        "deploy/README.md",
        "consul-dns healthcheck",
        Test("healthcheck_reads_the_daemons_configuration_and_counts_nxdomain_as_unhealthy"),
    ),
    ("deploy/README.md", "scripts/test", Ci),
    ("deploy/README.md", "cargo test --test it rehearsal:: -- --nocapture", Test(REHEARSAL)),
    ("deploy/README.md", "dig +noedns", Test(REHEARSAL)),
    (
        "deploy/README.md",
        "cd examples && go run ./user",
        Test("user_replica_registers_with_a_check_and_leaves_on_sigterm"),
    ),
    (
        "deploy/README.md",
        "docker build -f examples/user/Dockerfile -t consul-dns-example-user examples",
        NotHere(NO_DOCKER),
    ),
    ("deploy/README.md", "go vet", Test("go_examples_are_gofmt_clean_and_pass_vet_and_test")),
    ("deploy/README.md", "go test", Test("go_examples_are_gofmt_clean_and_pass_vet_and_test")),
    ("deploy/README.md", "install -m 0755 target/release/consul-dns /usr/local/bin/consul-dns", NotHere(SYSTEMD)),
    (
        "deploy/README.md",
        "install -D -m 0644 deploy/systemd/consul-dns.toml /etc/consul-dns/consul-dns.toml",
        NotHere(SYSTEMD),
    ),
    ("deploy/README.md", "install -m 0644 deploy/systemd/consul-dns.service /etc/systemd/system/", NotHere(SYSTEMD)),
    ("deploy/README.md", "systemctl daemon-reload && systemctl enable --now consul-dns", NotHere(SYSTEMD)),
    ("deploy/README.md", "systemctl reload consul-dns", NotHere(SYSTEMD)),
    ("deploy/README.md", "consul-dns --check-config", Test("check_config_accepts_the_shipped_files")),
    ("deploy/README.md", "kubectl apply -f deploy/kubernetes/consul-dns.yaml", Test(KUBERNETES)),
    ("deploy/README.md", "kubectl edit configmap consul-dns", Test(KUBERNETES)),
    (
        "deploy/README.md",
        "docker-compose -f docker-compose.yml -f deploy/compose/mysql.yml up -d --build",
        Test("mysql_override_runs_consul_dns_on_the_stacks_database"),
    ),
    (
        "deploy/README.md",
        "docker-compose -f docker-compose.yml -f deploy/compose/mysql.yml run --rm consul-dns-db db register --name user --address 172.40.0.11 --port 8002",
        NotHere(NO_DOCKER),
    ),
    ("deploy/README.md", "consul-dns db init", Test("mariadb_commands")),
    ("deploy/README.md", "consul-dns db register", Test("mariadb_commands")),
    ("deploy/README.md", "docker build -t consul-dns .", NotHere(NO_DOCKER)),
    (
        "deploy/README.md",
        "docker run --rm -p 8600:8600/udp -p 8600:8600/tcp -p 9153:9153 consul-dns",
        NotHere(NO_DOCKER),
    ),
    (
        "deploy/README.md",
        "docker run --rm -p 8600:8600/udp -p 8600:8600/tcp consul-dns --listen 0.0.0.0:8600 --consul http://consul:8500 --state-dir /var/lib/consul-dns",
        Test("dockerfile_command_is_a_valid_configuration"),
    ),
    ("deploy/README.md", "docker-compose up -d --build", NotHere(NO_DOCKER)),
    (
        "deploy/README.md",
        "consul-dns healthcheck 127.0.0.1:8600",
        Test("healthcheck_succeeds_against_a_daemon_and_fails_without_one"),
    ),
    ("deploy/README.md", "docker-compose config", Test("compose_file_passes_docker_compose_config")),
    ("bench/README.md", "apt-get install -y dnsperf knot dnsutils", NotHere("installs packages as root")),
    ("bench/README.md", "cargo build --release", NotHere(BENCH)),
    ("bench/README.md", "bench/run.sh", NotHere(BENCH)),
    ("bench/README.md", "bench/run.sh --queries hot", NotHere(BENCH)),
    ("bench/README.md", "bench/run.sh --tcp", NotHere(BENCH)),
    ("bench/README.md", "bench/run.sh -s 100000", NotHere(BENCH)),
    ("bench/README.md", "bench/run.sh -l 3 --rounds 1", NotHere(BENCH)),
    ("bench/README.md", "bench/run.sh --mode startup", NotHere(BENCH)),
    ("bench/README.md", "cargo build --release --bin consul-dns --example consul_scale", NotHere(BENCH)),
    ("bench/README.md", "bench/run.sh --mode consul-sync", NotHere(BENCH)),
    ("bench/README.md", "bench/run.sh --mode rss", NotHere(BENCH)),
    ("bench/README.md", "bench/run.sh --mode change-latency", NotHere(BENCH)),
    ("bench/README.md", "bench/run.sh --help", Run),
    // Fuzzing (fuzz/README.md): tests/it/fuzz_corpus.rs replays the corpora.
    ("fuzz/README.md", "cargo install cargo-fuzz", NotHere(FUZZ)),
    ("fuzz/README.md", "cargo +nightly fuzz run respond -- -max_total_time=600", NotHere(FUZZ)),
    ("fuzz/README.md", "cargo +nightly fuzz cmin <target>", NotHere(FUZZ)),
    // The database and etcd sources (tests/it/db.rs, tests/it/db_source.rs).
    ("README.md", "consul-dns db", Test("sqlite_commands")),
    ("README.md", "export CONSUL_DNS_DATABASE_URL=sqlite:///var/lib/consul-dns/catalog.db", Test("round_trip")),
    ("README.md", "consul-dns db init", Test("round_trip")),
    (
        "README.md",
        "consul-dns db register --name user --address 127.0.0.31 --port 8001 --node n1 --tags v1,primary --weight 10",
        Test("round_trip"),
    ),
    (
        "README.md",
        "consul-dns db register --name user --id user-2 --address 127.0.0.32 --port 8001",
        Test("round_trip"),
    ),
    ("README.md", "consul-dns db set-health user-2 warning", Test("round_trip")),
    ("README.md", "consul-dns db list", Test("round_trip")),
    ("README.md", "consul-dns db deregister user-2", Test("round_trip")),
    ("README.md", "export CONSUL_DNS_DATABASE_URL=sqlite:///tmp/catalog.db", Test("sqlite_source")),
    ("README.md", "consul-dns db register --name user --address 127.0.0.31 --port 8001 --node n1", Test("serving")),
    ("README.md", "consul-dns --listen 127.0.0.1:8600 &", Test("serving")),
    ("README.md", "dig @127.0.0.1 -p 8600 user.service.consul SRV +short", Test("serving")),
    (
        "README.md",
        "export CONSUL_DNS_DATABASE_URL=mysql://dns:dns-pw@127.0.0.1:3306/consul_dns",
        Test("mariadb_source"),
    ),
    ("README.md", "consul-dns db register --name user --address 127.0.0.31 --port 8001", Test("changes_are_answered")),
    (
        "README.md",
        "export CONSUL_DNS_DATABASE_URL=postgres://dns:dns-pw@127.0.0.1:5432/consul_dns",
        Test("postgres_source_listens"),
    ),
    (
        "README.md",
        "export CONSUL_DNS_ETCD=http://127.0.0.1:2379",
        Test("etcd_source_watches_and_recovers_from_compaction"),
    ),
    (
        "README.md",
        "mariadb -u root -e \"CREATE DATABASE consul_dns; CREATE USER 'dns'@'%' IDENTIFIED BY 'dns-pw'; GRANT ALL ON consul_dns.* TO 'dns'@'%'\"",
        NotHere(
            "changes the machine's own MariaDB; tests/it/support/stores.rs sets up a throwaway server the same way",
        ),
    ),
    (
        "README.md",
        "sudo -u postgres psql -c \"CREATE ROLE dns LOGIN PASSWORD 'dns-pw'\" -c \"CREATE DATABASE consul_dns OWNER dns\"",
        NotHere(
            "changes the machine's own PostgreSQL; tests/it/support/stores.rs sets up a throwaway server the same way",
        ),
    ),
];

/// Inline code spans starting with one of these are commands too.
const COMMAND_STARTS: &[&str] =
    &["consul-dns ", "dig ", "cargo ", "curl ", "docker ", "docker-compose ", "go ", "bench/run.sh", "scripts/test"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn markdown_files() -> Vec<String> {
    let out = Command::new("git").args(["ls-files", "*.md"]).current_dir(root()).output().expect("git runs");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

/// The commands of one document: fenced `sh` lines (continuations joined, comments dropped)
/// and command-like inline code spans.
fn commands_in(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if !in_sh {
            found.extend(inline_commands(line));
            continue;
        }
        let code = strip_comment(line);
        let (code, continued) = match code.strip_suffix('\\') {
            Some(head) => (head.trim_end(), true),
            None => (code, false),
        };
        if !code.trim().is_empty() {
            if !pending.is_empty() {
                pending.push(' ');
            }
            pending.push_str(code.trim());
        }
        if !continued && !pending.is_empty() {
            found.push(std::mem::take(&mut pending));
        }
    }
    found
}

/// The line without a trailing `# comment` (a `#` after whitespace, outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '#') if previous.is_whitespace() => return line[..i].trim_end(),
            _ => {}
        }
        previous = c;
    }
    line.trim_end()
}

fn inline_commands(line: &str) -> Vec<String> {
    line.split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| COMMAND_STARTS.iter().any(|start| span.starts_with(start)))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_documented_command_is_accounted_for() {
    let mut missing = Vec::new();
    let mut documented = Vec::new();
    for doc in markdown_files() {
        let text = std::fs::read_to_string(root().join(&doc)).unwrap();
        for command in commands_in(&text) {
            if !COMMANDS.iter().any(|(d, c, _)| *d == doc && *c == command) {
                missing.push(format!("(\"{doc}\", {command:?}, ...)"));
            }
            documented.push((doc.clone(), command));
        }
    }
    assert!(missing.is_empty(), "commands without an entry in COMMANDS:\n{}", missing.join("\n"));
    let stale: Vec<_> =
        COMMANDS.iter().filter(|(d, c, _)| !documented.iter().any(|(doc, cmd)| doc == d && cmd == c)).collect();
    assert!(stale.is_empty(), "entries whose command is no longer documented: {stale:?}");
    let sources: String = std::fs::read_dir(root().join("tests/it"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .collect();
    for (doc, command, check) in COMMANDS {
        match check {
            Test(name) => assert!(
                sources.contains(&format!("fn {name}(")),
                "{doc}: {command:?} names a test {name} that does not exist"
            ),
            NotHere(why) => assert!(why.len() > 10, "{doc}: {command:?}: say why it cannot run here"),
            Run | Ci => {}
        }
    }
}

#[test]
fn documented_commands_that_can_run_here_run_as_written() {
    let daemon = Daemon::start_in(shipped_catalog_dir(), &[]);
    for (doc, command, check) in COMMANDS {
        if !matches!(check, Run) {
            continue;
        }
        let words: Vec<String> =
            command
                .split_whitespace()
                .map(|w| {
                    if w == "8600" && command.starts_with("dig ") {
                        daemon.addr.port().to_string()
                    } else {
                        w.to_owned()
                    }
                })
                .collect();
        let program = match words[0].as_str() {
            "consul-dns" => binary().to_owned(),
            "bench/run.sh" => root().join("bench/run.sh").display().to_string(),
            other => other.to_owned(),
        };
        let out = Command::new(&program).args(&words[1..]).current_dir(root()).env_remove("RUST_LOG").output();
        let out = out.unwrap_or_else(|e| panic!("{doc}: {command}: cannot run {program}: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{doc}: {command}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(!stdout.trim().is_empty(), "{doc}: {command}: no output");
        if command.starts_with("dig ") {
            assert!(stdout.contains("status: NOERROR") && stdout.contains("IN\tSRV"), "{doc}: {command}: {stdout}");
        }
    }
}

/// A temp dir holding the shipped catalog as `services.toml`, which the test daemon serves.
fn shipped_catalog_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("config/services.toml"), dir.path().join("services.toml")).unwrap();
    assert!(Path::new(&dir.path().join("services.toml")).exists());
    dir
}
