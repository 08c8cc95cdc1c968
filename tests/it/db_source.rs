//! The daemon serving from a database or etcd: changes made with `consul-dns db` are answered
//! (delay measured over 50 changes, printed with --nocapture), bad rows and keys are skipped
//! and reported, a store that goes away keeps the answers while /ready and the metrics say so,
//! and it recovers when the store is back; an etcd watch cut off across a compaction re-reads.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::db::Cli;
use crate::support::http::{get, samples};
use crate::support::proxy::Proxy;
use crate::support::stores;
use crate::support::{Daemon, query_udp};

const WITHIN: Duration = Duration::from_secs(20);

/// SRV answers of `name` (empty on NXDOMAIN or before the first sync).
fn srv(addr: SocketAddr, name: &str) -> Vec<String> {
    let mut answers = query_udp(addr, name, RecordType::SRV, Some(1232)).answers();
    answers.sort();
    answers
}

/// Waits until `check` holds; the time it took.
fn until(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < WITHIN, "{what}: not within {WITHIN:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
    start.elapsed()
}

fn metric(daemon: &Daemon, prefix: &str) -> f64 {
    let scrape = get(daemon.http(), "/metrics").text();
    samples(&scrape).iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A daemon on the store `cli` writes to (reached at `url`), with one service answering.
fn serving(cli: &Cli, url: &str, extra: &[&str]) -> Daemon {
    cli.ok(&["init"]);
    cli.ok(&["register", "--name", "user", "--address", "127.0.0.31", "--port", "8001", "--node", "n1"]);
    let mut args = vec![cli.flag, url, "--max-stale", "2s"];
    args.extend_from_slice(extra);
    let daemon = Daemon::start_in(tempfile::tempdir().unwrap(), &args);
    until("the first sync", || !srv(daemon.addr, "user.service.consul").is_empty());
    daemon
}

/// Registers, flips health and deregisters through the CLI, 50 changes in all, each answered
/// by the daemon; returns (p50, p99) of the delay from the command's return to the answer.
fn changes_are_answered(cli: &Cli, daemon: &Daemon, store: &str) -> (Duration, Duration) {
    let mut delays = Vec::new();
    for i in 0..50 {
        let name = format!("svc{}", i / 3);
        let fqdn = format!("{name}.service.consul");
        match i % 3 {
            0 => {
                cli.ok(&["register", "--name", &name, "--address", "127.0.0.40", "--port", &format!("{}", 9000 + i)]);
                delays.push(until("a registration", || srv(daemon.addr, &fqdn).len() == 1));
            }
            1 => {
                cli.ok(&["set-health", &name, "critical"]);
                delays.push(until("a health flip", || srv(daemon.addr, &fqdn).is_empty()));
            }
            _ => {
                cli.ok(&["deregister", &name]);
                let gone = || query_udp(daemon.addr, &fqdn, RecordType::SRV, None).rcode() == 3; // NXDOMAIN
                delays.push(until("a deregistration", gone));
            }
        }
    }
    delays.sort();
    let (p50, p99) = (percentile(&delays, 0.5), percentile(&delays, 0.99));
    println!("{store}: change → answer over {} changes: p50 {p50:?}, p99 {p99:?}", delays.len());
    (p50, p99)
}

/// The store goes away: answers stay, /ready turns stale, failures are counted; it comes back:
/// a new change is answered and /ready is 200 again.
fn survives_an_outage(cli: &Cli, daemon: &Daemon, mut outage: impl FnMut(bool)) {
    let before = srv(daemon.addr, "user.service.consul");
    let failures = metric(daemon, "consul_dns_sync_failures_total");
    outage(true);
    until("failures counted", || metric(daemon, "consul_dns_sync_failures_total") > failures);
    until("/ready says stale", || get(daemon.http(), "/ready").status == 503);
    let ready = get(daemon.http(), "/ready").json();
    assert_eq!(ready["reason"].as_str(), Some("stale"), "{ready}");
    assert_eq!(srv(daemon.addr, "user.service.consul"), before, "the last catalog keeps answering");
    assert!(daemon.log().contains("Catalog source failed; the previous catalog keeps serving."));
    outage(false);
    cli.ok(&["register", "--name", "after", "--address", "127.0.0.50", "--port", "80"]);
    until("a change after recovery", || srv(daemon.addr, "after.service.consul").len() == 1);
    until("/ready again", || get(daemon.http(), "/ready").status == 200);
    assert!(daemon.wait_for_log("Catalog source answering again.", WITHIN));
}

/// Writes one row by hand, as another tool would.
fn sql(url: &str, statement: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(url).await.unwrap();
        sqlx::raw_sql(statement).execute(&pool).await.unwrap();
        pool.close().await;
    });
}

fn bad_rows_are_skipped(cli: &Cli, daemon: &Daemon) {
    let skipped = metric(daemon, "consul_dns_sync_skipped_entries_total");
    sql(
        &cli.url,
        "INSERT INTO services (id, name, address, port, health, updated_at) VALUES ('bad-1', 'bad', '127.0.0.9', 80, 'sick', 0)",
    );
    cli.ok(&["register", "--name", "good", "--address", "127.0.0.60", "--port", "81"]);
    until("the good row answers", || srv(daemon.addr, "good.service.consul").len() == 1);
    assert!(metric(daemon, "consul_dns_sync_skipped_entries_total") > skipped);
    assert!(daemon.wait_for_log("id=\"service bad-1\"", WITHIN) || daemon.wait_for_log("service bad-1", WITHIN));
    assert!(srv(daemon.addr, "bad.service.consul").is_empty());
    assert!(srv(daemon.addr, "user.service.consul").len() == 1, "the rest of the table is served");
}

#[test]
fn sqlite_source() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("catalog.db").display());
    let cli = Cli { flag: "--database-url", url };
    let daemon = serving(&cli, &cli.url, &["--db-poll-interval", "100ms"]);
    let (_, p99) = changes_are_answered(&cli, &daemon, "sqlite (100ms probe)");
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
    bad_rows_are_skipped(&cli, &daemon);
}

#[test]
fn mariadb_source() {
    let Some(mut server) = stores::mariadb() else { return };
    let cli = Cli { flag: "--database-url", url: server.url.clone() };
    let daemon = serving(&cli, &cli.url, &["--db-poll-interval", "100ms"]);
    let (_, p99) = changes_are_answered(&cli, &daemon, "mariadb (100ms probe)");
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
    bad_rows_are_skipped(&cli, &daemon);
    survives_an_outage(&cli, &daemon, |down| if down { server.stop() } else { server.restart() });
}

#[test]
fn postgres_source_listens() {
    let Some(mut server) = stores::postgres() else { return };
    let cli = Cli { flag: "--database-url", url: server.url.clone() };
    // The default 1s probe: answers well under it come from LISTEN/NOTIFY.
    let daemon = serving(&cli, &cli.url, &[]);
    let (p50, p99) = changes_are_answered(&cli, &daemon, "postgres (LISTEN, 1s probe)");
    assert!(p50 < Duration::from_millis(100) && p99 < Duration::from_millis(500), "p50 {p50:?} p99 {p99:?}");
    bad_rows_are_skipped(&cli, &daemon);
    survives_an_outage(&cli, &daemon, |down| if down { server.stop() } else { server.restart() });
}

fn etcd_bad_key(cli: &Cli, daemon: &Daemon, endpoint: &str) {
    let skipped = metric(daemon, "consul_dns_sync_skipped_entries_total");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = consul_dns::backend::etcd::EtcdStore::new(&[endpoint.to_owned()], "/consul-dns/").unwrap();
    runtime.block_on(store.put_raw("services/broken", b"{not json")).unwrap();
    cli.ok(&["register", "--name", "good", "--address", "127.0.0.60", "--port", "81"]);
    until("the good key answers", || srv(daemon.addr, "good.service.consul").len() == 1);
    assert!(metric(daemon, "consul_dns_sync_skipped_entries_total") > skipped);
    assert!(daemon.wait_for_log("services/broken", WITHIN));
}

#[test]
fn etcd_source_watches_and_recovers_from_compaction() {
    let Some(mut server) = stores::etcd() else { return };
    let direct = Cli { flag: "--etcd", url: server.url.clone() };
    let proxy = Proxy::start(format!("127.0.0.1:{}", server.url.rsplit(':').next().unwrap()).parse().unwrap());
    let daemon = serving(&direct, &format!("http://{}", proxy.addr), &[]);
    let (p50, p99) = changes_are_answered(&direct, &daemon, "etcd (watch)");
    assert!(p50 < Duration::from_millis(100) && p99 < Duration::from_millis(500), "p50 {p50:?} p99 {p99:?}");
    etcd_bad_key(&direct, &daemon, &server.url);

    // Cut the daemon off; meanwhile change things and compact the history it would resume from.
    let failures = metric(&daemon, "consul_dns_sync_failures_total");
    proxy.cut();
    until("the cut is seen", || metric(&daemon, "consul_dns_sync_failures_total") > failures);
    direct.ok(&["deregister", "user"]);
    direct.ok(&["register", "--name", "during", "--address", "127.0.0.70", "--port", "82"]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = consul_dns::backend::etcd::EtcdClient::new(&[server.url.clone()]).unwrap();
    let (revision, _) = runtime.block_on(client.range("/consul-dns/")).unwrap();
    runtime.block_on(client.compact(revision)).unwrap();
    assert_eq!(srv(daemon.addr, "user.service.consul").len(), 1, "still the old answer while cut off");
    proxy.restore();
    until("the change made during the cut", || srv(daemon.addr, "during.service.consul").len() == 1);
    until("the deregistration made during the cut", || srv(daemon.addr, "user.service.consul").is_empty());
    assert!(daemon.wait_for_log("compacted", WITHIN), "the compaction was noticed: {}", daemon.log());

    survives_an_outage(&direct, &daemon, |down| if down { server.stop() } else { server.restart() });
}

/// The randomized oracle through SQLite: a daemon that followed a seeded random stream of
/// registrations, deregistrations, health flips and node edits answers every name × A, SRV,
/// TXT exactly as a second daemon started fresh on the final database (order aside).
#[test]
fn sqlite_oracle_followed_equals_fresh() {
    use consul_dns::backend::registry::Registration;
    use consul_dns::backend::sql::SqlStore;
    const SERVICES: [&str; 4] = ["web", "api", "db", "cache"];
    let mut questions = Vec::new();
    for service in SERVICES {
        for name in [format!("{service}.service.consul."), format!("v1.{service}.service.consul.")] {
            questions.extend([RecordType::A, RecordType::SRV, RecordType::TXT].map(|t| (name.clone(), t)));
        }
    }
    for i in 0..4 {
        questions.extend([RecordType::A, RecordType::TXT].map(|t| (format!("n{i}.node.consul."), t)));
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for seed in 0..3u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("catalog.db").display());
        let cli = Cli { flag: "--database-url", url: url.clone() };
        let followed = serving(&cli, &url, &["--db-poll-interval", "50ms"]);
        let store = {
            let _context = runtime.enter(); // the pool's reaper is a tokio task
            SqlStore::open(&url.parse().unwrap(), false).unwrap()
        };
        for round in 0..2 {
            for _ in 0..25 {
                let name = SERVICES[rng.usize(0..SERVICES.len())];
                let id = format!("{name}-{}", rng.u8(0..4));
                let node = format!("n{}", rng.u8(0..4));
                let address = format!("127.0.0.{}", 61 + rng.u8(0..4));
                match rng.u8(0..8) {
                    0..=2 => {
                        let tags = if rng.bool() { vec!["v1".to_owned()] } else { vec![] };
                        let on_node = rng.u8(0..4) > 0;
                        let registration = Registration::new(
                            name,
                            Some(&address),
                            8000 + rng.u16(0..3),
                            Some(&id),
                            &tags,
                            on_node.then_some(node.as_str()),
                            1 + u32::from(rng.u8(0..3)),
                        )
                        .unwrap();
                        let _ = runtime.block_on(store.register(registration)); // a taken ID is refused
                    }
                    3 => {
                        let _ = runtime.block_on(store.deregister(&id));
                    }
                    4 | 5 => {
                        let health = ["passing", "warning", "critical"][rng.usize(0..3)];
                        let _ = runtime.block_on(store.set_health(&id, health));
                    }
                    6 => {
                        let rack = rng.u8(0..2);
                        let update = format!(
                            "UPDATE nodes SET address = '{address}', meta = '{{\"rack\":\"r{rack}\"}}' WHERE name = '{node}'"
                        );
                        sql(&url, &update);
                    }
                    _ => sql(&url, &format!("DELETE FROM nodes WHERE name = '{node}'")), // its instances are skipped
                }
                std::thread::sleep(Duration::from_millis(rng.u64(0..10)));
            }
            let fresh = Daemon::start_in(tempfile::tempdir().unwrap(), &[cli.flag, &url]);
            until("the fresh daemon's first sync", || get(fresh.http(), "/ready").status == 200);
            let deadline = Instant::now() + Duration::from_secs(10);
            while let Some(diff) = crate::oracle::difference(&followed, &fresh, &questions) {
                assert!(Instant::now() < deadline, "seed {seed}, round {round}: {diff}\nlog:\n{}", followed.log());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        runtime.block_on(store.close());
    }
}

/// Resident memory (kB) and CPU time used so far (user + system) of a process.
fn usage(pid: u32) -> (u64, Duration) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok());
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    (rss.unwrap(), Duration::from_millis(ticks * 1000 / hz))
}

/// Fills the store with `services` × 3 instances on 1,000 nodes.
fn fill(flag: &str, url: &str, services: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let node = |n: usize| format!("n{n}");
    let address = |n: usize| format!("127.{}.{}.{}", 1 + n / 62500, (n / 250) % 250, n % 250 + 1);
    if flag == "--etcd" {
        let client = consul_dns::backend::etcd::EtcdClient::new(&[url.to_owned()]).unwrap();
        let mut puts = Vec::new();
        for n in 0..1000 {
            puts.push((
                format!("/consul-dns/nodes/{}", node(n)),
                format!("{{\"name\":\"{}\",\"address\":\"{}\"}}", node(n), address(n)),
            ));
        }
        for i in 0..services * 3 {
            let value = format!(
                "{{\"name\":\"svc{}\",\"port\":{},\"node\":\"{}\",\"tags\":[\"v1\"]}}",
                i / 3,
                10000 + i % 3,
                node(i % 1000)
            );
            puts.push((format!("/consul-dns/services/svc{}-{}", i / 3, i % 3), value));
        }
        for chunk in puts.chunks(100) {
            let batch: Vec<(String, Vec<u8>)> =
                chunk.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
            assert!(runtime.block_on(client.txn(&[], &batch, &[])).unwrap());
        }
        return;
    }
    let mut statements = Vec::new();
    let nodes: Vec<String> = (0..1000).map(|n| format!("('{}', '{}', NULL, NULL)", node(n), address(n))).collect();
    statements.push(format!("INSERT INTO nodes (name, address, datacenter, meta) VALUES {}", nodes.join(", ")));
    let rows: Vec<String> = (0..services * 3)
        .map(|i| {
            format!(
                "('svc{}-{}', 'svc{}', '{}', NULL, {}, '[\"v1\"]', 1, 1, 'passing', NULL, 0)",
                i / 3,
                i % 3,
                i / 3,
                node(i % 1000),
                10000 + i % 3
            )
        })
        .collect();
    for chunk in rows.chunks(1000) {
        statements.push(format!(
            "INSERT INTO services (id, name, node, address, port, tags, weight_passing, weight_warning, health, meta, updated_at) VALUES {}",
            chunk.join(", ")
        ));
    }
    runtime.block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(url).await.unwrap();
        for statement in &statements {
            sqlx::raw_sql(statement).execute(&pool).await.unwrap();
        }
        pool.close().await;
    });
}

/// The bench of the database sources (run with `--ignored --nocapture`): 10,000 services × 3
/// instances per store; time from start to the whole catalog answering, RSS, and the CPU an
/// idle daemon spends per minute (measured over 30 s).
#[test]
#[ignore = "a measurement (about 1 min per store): cargo test --test it bench_stores -- --ignored --nocapture"]
fn bench_stores() {
    const SERVICES: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let (maria, pg, etcd) = (stores::mariadb(), stores::postgres(), stores::etcd());
    let mut targets = vec![("sqlite", "--database-url", format!("sqlite://{}", dir.path().join("c.db").display()))];
    targets.extend(maria.as_ref().map(|s| ("mariadb", "--database-url", s.url.clone())));
    targets.extend(pg.as_ref().map(|s| ("postgres", "--database-url", s.url.clone())));
    targets.extend(etcd.as_ref().map(|s| ("etcd", "--etcd", s.url.clone())));
    for (store, flag, url) in targets {
        let cli = Cli { flag, url: url.clone() };
        cli.ok(&["init"]);
        fill(flag, &url, SERVICES);
        let start = Instant::now();
        let daemon = Daemon::start_in(tempfile::tempdir().unwrap(), &[flag, &url]);
        let last = format!("svc{}.service.consul", SERVICES - 1);
        until("the whole catalog", || srv(daemon.addr, &last).len() == 3);
        let first_answer = start.elapsed();
        std::thread::sleep(Duration::from_secs(2)); // let the first publish's garbage go
        let (_, cpu_before) = usage(daemon.pid());
        std::thread::sleep(Duration::from_secs(30));
        let (rss, cpu_after) = usage(daemon.pid());
        let idle_per_minute = (cpu_after - cpu_before) * 2;
        println!(
            "bench {store}: {SERVICES} services x 3: start to whole catalog answering {first_answer:?}, RSS {} MiB, idle CPU {idle_per_minute:?} per minute",
            rss / 1024
        );
    }
}
