//! The static catalog follows its file: edits are answered within 2 s, broken edits are
//! rejected with file and line and the old answers stay, SIGHUP reloads configuration.

use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::support::http::{get, samples};
use crate::support::{Daemon, query_udp};

const ONE: &str = "[[nodes]]\nname = \"n1\"\naddress = \"127.0.0.21\"\n[[services]]\nname = \"web\"\nid = \"web-1\"\nnode = \"n1\"\nport = 80\n";
const TWO: &str = "[[nodes]]\nname = \"n1\"\naddress = \"127.0.0.21\"\n[[services]]\nname = \"web\"\nid = \"web-1\"\nnode = \"n1\"\nport = 80\n[[services]]\nname = \"web\"\nid = \"web-2\"\naddress = \"127.0.0.42\"\nport = 81\n";

fn answers(d: &Daemon) -> usize {
    query_udp(d.addr, "web.service.consul", RecordType::A, Some(1232)).answers().len()
}

/// Polls until `done` holds; returns how long it took.
fn time_until(within: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if done() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn edit_that_adds_an_instance_is_answered_within_2s() {
    let d = Daemon::start(ONE, &[]);
    assert_eq!(answers(&d), 1);
    d.write_catalog(TWO);
    let took = time_until(Duration::from_secs(2), || answers(&d) == 2);
    assert!(took.is_some(), "not answered within 2 s; log:\n{}", d.log());
    let in_place = Daemon::start(ONE, &[]);
    std::fs::write(in_place.catalog_path(), TWO).unwrap();
    assert!(time_until(Duration::from_secs(2), || answers(&in_place) == 2).is_some(), "in-place write seen too");
}

#[test]
fn broken_edit_keeps_old_answers_and_logs_file_and_line() {
    let d = Daemon::start(TWO, &[]);
    assert_eq!(answers(&d), 2);
    d.write_catalog("[[nodes]]\nname = \"n1\"\naddres = \"127.0.0.21\"\n");
    assert!(d.wait_for_log("Catalog source failed", Duration::from_secs(3)), "{}", d.log());
    let log = d.log();
    assert!(log.contains("services.toml:3:") && log.contains("addres"), "file, line and key in the log:\n{log}");
    assert_eq!(answers(&d), 2, "the previous catalog keeps serving");
    d.write_catalog(ONE);
    assert!(time_until(Duration::from_secs(2), || answers(&d) == 1).is_some(), "a fixed file is picked up again");
}

#[test]
fn deleted_catalog_file_keeps_old_answers() {
    let d = Daemon::start(TWO, &[]);
    std::fs::remove_file(d.catalog_path()).unwrap();
    assert!(d.wait_for_log("Catalog source failed", Duration::from_secs(3)), "{}", d.log());
    assert_eq!(answers(&d), 2);
}

#[test]
fn sighup_applies_a_changed_ttl_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.toml"), ONE).unwrap();
    let config = dir.path().join("consul-dns.toml");
    std::fs::write(&config, "service_ttl = \"5s\"\n").unwrap();
    let config_arg = config.display().to_string();
    let d = Daemon::start_in(dir, &["--config", &config_arg]);
    let ttl = |d: &Daemon| query_udp(d.addr, "web.service.consul", RecordType::A, None).message.answers[0].ttl;
    assert_eq!(ttl(&d), 5);
    let reloads = |d: &Daemon, result: &str| {
        let scrape = get(d.http(), "/metrics").text();
        samples(&scrape).get(&format!("consul_dns_config_reloads_total{{result=\"{result}\"}}")).copied()
    };
    assert_eq!((reloads(&d, "success"), reloads(&d, "failure")), (Some(0.0), Some(0.0)));
    std::fs::write(&config, "service_ttl = \"42s\"\n").unwrap();
    d.signal("HUP");
    assert!(time_until(Duration::from_secs(3), || ttl(&d) == 42).is_some(), "{}", d.log());
    assert_eq!(reloads(&d, "success"), Some(1.0), "the reload is counted");
    std::fs::write(&config, "service_ttl = \"nonsense\"\n").unwrap();
    d.signal("HUP");
    assert!(d.wait_for_log("Configuration rejected on reload", Duration::from_secs(3)), "{}", d.log());
    assert_eq!(ttl(&d), 42, "a bad reload changes nothing");
    assert_eq!((reloads(&d, "success"), reloads(&d, "failure")), (Some(1.0), Some(1.0)));
}

#[test]
fn sigterm_stops_cleanly() {
    let mut d = Daemon::start(ONE, &[]);
    let _idle = std::net::TcpStream::connect(d.addr).unwrap();
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(5)), Some(0), "{}", d.log());
}

/// Finding: `: > services.toml` (a truncated write, an editor crash) reloaded as zero
/// services, every name NXDOMAIN, logged at INFO and counted as a success. An empty file is
/// now an error that keeps the last good catalog, counted as `empty`; a file that keeps
/// changing is read once it holds still, so a writer that truncates and then writes is seen
/// only whole.
#[test]
fn an_empty_catalog_file_is_rejected_and_the_old_answers_stay() {
    let d = Daemon::start(TWO, &[]);
    assert_eq!(answers(&d), 2);
    std::fs::write(d.catalog_path(), "").unwrap();
    assert!(d.wait_for_log("is empty", Duration::from_secs(3)), "{}", d.log());
    assert_eq!(answers(&d), 2, "the previous catalog keeps serving");
    let m = samples(&get(d.http(), "/metrics").text());
    assert_eq!(m.get("consul_dns_sync_failures_total{backend=\"file\",reason=\"empty\"}"), Some(&1.0), "{m:?}");
    std::fs::write(d.catalog_path(), " \n\t\n").unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(answers(&d), 2, "whitespace only is empty too");
    // Truncate, pause shorter than the settle time, then write the whole file: never served empty.
    let file = std::fs::OpenOptions::new().write(true).truncate(true).open(d.catalog_path()).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    std::io::Write::write_all(&mut &file, ONE.as_bytes()).unwrap();
    drop(file);
    assert!(time_until(Duration::from_secs(2), || answers(&d) == 1).is_some(), "{}", d.log());
}
