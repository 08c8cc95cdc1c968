//! SIGHUP as an operator relies on it: a reload whose catalog is rejected is a failed reload
//! (the last good catalog keeps serving), and the log level follows the configuration.

use std::process::Command;
use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::support::daemon::{binary, write_atomically};
use crate::support::http::{get, samples};
use crate::support::{Daemon, query_udp};

const WEB: &str = "[[nodes]]\nname = \"n1\"\naddress = \"127.0.0.21\"\n[[services]]\nname = \"web\"\nid = \"web-1\"\nnode = \"n1\"\nport = 80\n";

fn reloads(d: &Daemon, result: &str) -> Option<f64> {
    let scrape = get(d.http(), "/metrics").text();
    samples(&scrape).get(&format!("consul_dns_config_reloads_total{{result=\"{result}\"}}")).copied()
}

fn answers(d: &Daemon) -> usize {
    query_udp(d.addr, "web.service.consul", RecordType::A, None).answers().len()
}

/// Finding: a SIGHUP whose catalog was rejected counted as a successful reload.
#[test]
fn a_sighup_whose_catalog_is_rejected_is_a_failed_reload() {
    let d = Daemon::start(WEB, &[]);
    assert_eq!(answers(&d), 1);
    assert_eq!((reloads(&d, "success"), reloads(&d, "failure")), (Some(0.0), Some(0.0)));
    d.write_catalog("[[services]]\nname = \"web\"\nport = 80\nnode = \"ghost\"\n");
    d.signal("HUP");
    assert!(d.wait_for_log("Reload failed: the static catalog was rejected", Duration::from_secs(5)), "{}", d.log());
    assert_eq!((reloads(&d, "success"), reloads(&d, "failure")), (Some(0.0), Some(1.0)), "{}", d.log());
    assert!(d.log().contains("ghost"), "the log says what is wrong:\n{}", d.log());
    assert_eq!(answers(&d), 1, "the last good catalog keeps serving");
    d.write_catalog(WEB);
    d.signal("HUP");
    assert!(d.wait_for_log("Configuration reloaded.", Duration::from_secs(5)), "{}", d.log());
    assert_eq!(reloads(&d, "success"), Some(1.0));
}

/// The log level is re-read on SIGHUP (it was applied on restart only).
#[test]
fn the_log_level_changes_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.toml"), WEB).unwrap();
    let config = dir.path().join("consul-dns.toml");
    let write = |level: &str, extra: &str| {
        write_atomically(&config, &format!("static = \"services.toml\"\nlog_level = \"{level}\"\n{extra}"));
    };
    write("info", "");
    let mut command = Command::new(binary());
    command.args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--recursor", "none", "--config"]);
    command.arg(&config).env_remove("RUST_LOG");
    let d = Daemon::spawn(command, tempfile::tempdir().unwrap(), false);

    write("warn", "");
    d.signal("HUP");
    assert!(d.wait_for_log("Log level changes from \"info\" to \"warn\".", Duration::from_secs(5)), "{}", d.log());
    write("warn", "node_ttl = \"soon\"\n");
    d.signal("HUP");
    assert!(d.wait_for_log("Configuration rejected on reload", Duration::from_secs(5)), "{}", d.log());
    assert!(!d.log().contains("Configuration reloaded."), "INFO is off after the first reload:\n{}", d.log());

    write("info", "");
    d.signal("HUP");
    assert!(d.wait_for_log("Configuration reloaded.", Duration::from_secs(5)), "INFO is on again:\n{}", d.log());
}
