//! `consul-dns db` against every store: SQLite (a file), and real MariaDB, PostgreSQL and etcd
//! servers on loopback. Each command's effect is checked through `db list --json`; refused
//! input changes nothing.

use std::process::{Command, Output};

use serde_json::Value;

use crate::support::daemon::binary;
use crate::support::stores;

/// Runs `consul-dns` with `args` and the store given by `store` (flag and URL), no other env.
pub(crate) fn consul_dns(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env_remove("CONSUL_HTTP_ADDR")
        .env_remove("CONSUL_DNS_DATABASE_URL")
        .env_remove("CONSUL_DNS_ETCD");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run consul-dns")
}

pub(crate) fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// `consul-dns db` against one store.
pub(crate) struct Cli {
    /// `--database-url` or `--etcd`.
    pub(crate) flag: &'static str,
    /// Its value.
    pub(crate) url: String,
}

impl Cli {
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let mut all = vec!["db"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[self.flag, &self.url]);
        let output = consul_dns(&all, &[]);
        assert!(output.status.success(), "{all:?}: {}", text(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn refused(&self, args: &[&str], says: &str) {
        let before = self.list();
        let mut all = vec!["db"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[self.flag, &self.url]);
        let output = consul_dns(&all, &[]);
        assert!(!output.status.success(), "{all:?} should be refused: {}", text(&output));
        assert!(text(&output).contains(says), "{all:?} should say {says:?}: {}", text(&output));
        assert_eq!(self.list(), before, "{all:?} changed nothing");
    }

    pub(crate) fn list(&self) -> Vec<Value> {
        let out = self.ok(&["list", "--json"]);
        match serde_json::from_str(&out) {
            Ok(Value::Array(rows)) => rows,
            other => panic!("list --json: {other:?} from {out}"),
        }
    }
}

/// The whole command set against one store.
fn round_trip(cli: &Cli) {
    let first = cli.ok(&["init"]);
    let again = cli.ok(&["init"]);
    if cli.flag == "--database-url" {
        assert!(first.contains("applied schema version 1"), "{first}");
        assert!(again.contains("up to date"), "{again}");
    }
    assert_eq!(cli.list(), Vec::<Value>::new());
    let out = cli.ok(&[
        "register",
        "--name",
        "user",
        "--address",
        "127.0.0.31",
        "--port",
        "8001",
        "--node",
        "n1",
        "--tags",
        "v1,primary",
        "--weight",
        "10",
    ]);
    assert!(out.contains("registered user") && out.contains("node n1 created"), "{out}");
    cli.ok(&["register", "--name", "user", "--id", "user-2", "--address", "127.0.0.32", "--port", "8002"]);
    // On an existing node, another address becomes the instance's own.
    cli.ok(&["register", "--name", "api", "--node", "n1", "--address", "127.0.0.41", "--port", "9000"]);
    let table = cli.ok(&["list"]);
    assert!(!table.contains("skipped"), "{table}");
    let rows = cli.list();
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["api", "user", "user-2"]);
    assert_eq!(rows[1]["tags"], serde_json::json!(["v1", "primary"]));
    assert_eq!((rows[1]["node"].as_str(), rows[1]["address"].as_str()), (Some("n1"), Some("127.0.0.31")));
    assert_eq!((rows[1]["weight_passing"].as_i64(), rows[1]["health"].as_str()), (Some(10), Some("passing")));
    assert_eq!(rows[0]["address"].as_str(), Some("127.0.0.41"));

    cli.refused(&["register", "--name", "user", "--address", "127.0.0.33", "--port", "1"], "registered already");
    cli.refused(
        &["register", "--name", "bad name", "--address", "127.0.0.33", "--port", "1", "--id", "x"],
        "not a DNS label",
    );
    cli.refused(&["register", "--name", "web", "--address", "127.0.0.33", "--port", "70000"], "70000");
    cli.refused(&["register", "--name", "web", "--node", "n9", "--port", "80"], "node \"n9\" is not registered");
    cli.refused(&["set-health", "user-2", "sick"], "passing, warning, critical");
    cli.refused(&["set-health", "nope", "warning"], "no service with ID \"nope\"");
    cli.refused(&["deregister", "nope"], "no service with ID \"nope\"");

    cli.ok(&["set-health", "user-2", "warning"]);
    cli.ok(&["set-health", "user-2", "warning"]); // the same value again is fine
    let rows = cli.list();
    assert_eq!(rows[2]["health"].as_str(), Some("warning"));
    cli.ok(&["deregister", "user-2"]);
    assert_eq!(cli.list().len(), 2);
    let table = cli.ok(&["list"]);
    assert!(table.starts_with("ID ") && table.contains("v1,primary") && table.contains("10/1"), "{table}");

    // The store may also come before `db`, or from the environment.
    let before = consul_dns(&[cli.flag, &cli.url, "db", "list", "--json"], &[]);
    assert!(before.status.success(), "{}", text(&before));
    let var = if cli.flag == "--etcd" { "CONSUL_DNS_ETCD" } else { "CONSUL_DNS_DATABASE_URL" };
    let from_env = consul_dns(&["db", "list", "--json"], &[(var, &cli.url)]);
    assert!(from_env.status.success(), "{}", text(&from_env));
    assert_eq!(before.stdout, from_env.stdout);
}

#[test]
fn sqlite_commands() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli { flag: "--database-url", url: format!("sqlite://{}", dir.path().join("catalog.db").display()) };
    round_trip(&cli);
}

#[test]
fn mariadb_commands() {
    let Some(server) = stores::mariadb() else { return };
    round_trip(&Cli { flag: "--database-url", url: server.url.clone() });
    assert_password_never_shown(&server.url.replace("dns-pw", "wrong-pw-1234"));
}

#[test]
fn postgres_commands() {
    let Some(mut server) = stores::postgres() else { return };
    let cli = Cli { flag: "--database-url", url: server.url.clone() };
    round_trip(&cli);
    down_then_back(&mut server, &cli, "the database");
    assert_password_never_shown(&server.url.replace("dns-pw", "wrong-pw-1234"));
}

#[test]
fn etcd_commands() {
    let Some(mut server) = stores::etcd() else { return };
    let cli = Cli { flag: "--etcd", url: server.url.clone() };
    round_trip(&cli);
    down_then_back(&mut server, &cli, "etcd is unreachable");
}

/// With the server down a command fails in one sentence; back up, the data is all there.
fn down_then_back(server: &mut stores::Server, cli: &Cli, says: &str) {
    let before = cli.list();
    server.stop();
    let output = consul_dns(&["db", "list", cli.flag, &cli.url], &[]);
    assert!(!output.status.success());
    assert!(text(&output).starts_with(&format!("consul-dns db: {says}")), "{}", text(&output));
    server.restart();
    assert_eq!(cli.list(), before);
}

fn assert_password_never_shown(url: &str) {
    let output = consul_dns(&["db", "list", "--database-url", url], &[]);
    assert!(!output.status.success(), "a wrong password is refused");
    let shown = text(&output);
    assert!(!shown.contains("wrong-pw-1234"), "{shown}");
    let check = consul_dns(&["--database-url", url, "--check-config"], &[]);
    assert!(check.status.success() && text(&check).contains(":***@127.0.0.1"), "{}", text(&check));
    assert!(!text(&check).contains("wrong-pw-1234"), "{}", text(&check));
}

#[test]
fn db_without_a_store_says_which_flag_is_missing() {
    let output = consul_dns(&["db", "list"], &[]);
    assert!(!output.status.success());
    assert!(text(&output).contains("--database-url URL or --etcd URL"), "{}", text(&output));
    let bad = consul_dns(&["db", "list", "--database-url", "oracle://x/y"], &[]);
    assert!(text(&bad).contains("unknown scheme"), "{}", text(&bad));
}
