//! Real database servers for the tests: MariaDB, PostgreSQL and etcd from Debian's packages
//! (`scripts/test` installs them), each on 127.0.0.1 with a free port and a throwaway data
//! directory, stopped (killed) on drop. A server that is not installed is a skip with a note
//! on a developer's machine and a failure in CI (`CI=true`).

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A free TCP port on 127.0.0.1 (bound and released: the server binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `None` (with a note) when `program` is missing outside CI; a panic in CI.
fn require(program: &Path, package: &str) -> Option<()> {
    if program.exists() {
        return Some(());
    }
    assert!(
        !in_ci(),
        "{} is missing: scripts/test installs {package}; in CI a missing server is a failure",
        program.display()
    );
    eprintln!("note: skipped, {} is missing (apt-get install {package}, or run scripts/test)", program.display());
    None
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn wait_for_port(port: u16, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the server exited ({status}) before listening: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "the server did not listen on {port} within {START_TIMEOUT:?}: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One server process and its data directory.
pub struct Server {
    child: Option<Child>,
    start: Box<dyn Fn() -> Child + Send + Sync>,
    port: u16,
    /// The URL `consul-dns` takes (`--database-url` or `--etcd`).
    pub url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Kills the server (as a crash or a network loss looks to its clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        let mut child = (self.start)();
        wait_for_port(self.port, &mut child, &self.log);
        self.child = Some(child);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// MariaDB with database `consul_dns` and user `dns` (password `dns-pw`).
pub fn mariadb() -> Option<Server> {
    require(Path::new("/usr/sbin/mariadbd"), "mariadb-server")?;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let socket = dir.path().join("mysqld.sock");
    let mut install = Command::new("mariadb-install-db");
    install
        .args(["--no-defaults", "--auth-root-authentication-method=normal", "--skip-test-db"])
        .arg(format!("--datadir={}", data.display()))
        .stdout(Stdio::null());
    if is_root() {
        install.arg("--user=root");
    }
    run(&mut install);
    let port = free_port();
    let (data_arg, socket_arg, log_arg) = (data.clone(), socket.clone(), log.clone());
    let start = move || {
        let mut command = Command::new("/usr/sbin/mariadbd");
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data_arg.display()))
            .arg(format!("--socket={}", socket_arg.display()))
            .arg(format!("--pid-file={}", data_arg.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", log_arg.display()))
            .args(["--bind-address=127.0.0.1", "--skip-name-resolve", "--innodb-buffer-pool-size=16M"])
            .arg(format!("--port={port}"));
        if is_root() {
            command.arg("--user=root");
        }
        command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start mariadbd")
    };
    let mut child = start();
    wait_for_port(port, &mut child, &log);
    let setup = "CREATE DATABASE consul_dns; CREATE USER 'dns'@'%' IDENTIFIED BY 'dns-pw'; \
                 GRANT ALL ON consul_dns.* TO 'dns'@'%'; FLUSH PRIVILEGES;";
    run(Command::new("mariadb")
        .arg("--no-defaults")
        .arg(format!("--socket={}", socket.display()))
        .args(["-u", "root", "-e", setup]));
    Some(Server {
        child: Some(child),
        start: Box::new(start),
        port,
        url: format!("mysql://dns:dns-pw@127.0.0.1:{port}/consul_dns"),
        log,
        _dir: dir,
    })
}

/// The `postgres` account's user or group ID (`id -u` / `id -g`).
fn user_id(which: &str) -> u32 {
    let output = Command::new("id").args([which, "postgres"]).output().expect("id");
    String::from_utf8_lossy(&output.stdout).trim().parse().expect("the postgres account exists (package postgresql)")
}

fn postgres_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("postgres").exists())
        .collect();
    found.sort();
    found.pop()
}

/// PostgreSQL with database `consul_dns` owned by role `dns` (password `dns-pw`, md5 over
/// TCP). Runs as the `postgres` user when the tests run as root (it refuses root).
pub fn postgres() -> Option<Server> {
    let Some(bin) = postgres_bin() else {
        require(Path::new("/usr/lib/postgresql/<version>/bin/postgres"), "postgresql")?;
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    // As root, the server runs as `postgres` set directly on the process (no runuser in
    // between, so that stopping the child stops the server).
    let ids = is_root().then(|| (user_id("-u"), user_id("-g")));
    let as_server = move |program: &Path| {
        let mut command = Command::new(program);
        if let Some((uid, gid)) = ids {
            command.uid(uid).gid(gid).env("HOME", "/tmp");
        }
        command
    };
    if is_root() {
        run(Command::new("chown").args(["postgres:postgres"]).arg(dir.path()));
    }
    let pwfile = dir.path().join("pw");
    std::fs::write(&pwfile, "postgres-pw\n").unwrap();
    if is_root() {
        run(Command::new("chown").args(["postgres:postgres"]).arg(&pwfile));
    }
    run(as_server(&bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth-local=trust", "--auth-host=md5", "--no-sync"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .stdout(Stdio::null()));
    let port = free_port();
    let (bin_start, data_start, log_start, socket_dir) =
        (bin.clone(), data.clone(), log.clone(), dir.path().to_owned());
    let start = move || {
        let log_file = std::fs::File::create(&log_start).unwrap();
        as_server(&bin_start.join("postgres"))
            .arg("-D")
            .arg(&data_start)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(&socket_dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"])
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start postgres")
    };
    let mut child = start();
    wait_for_port(port, &mut child, &log);
    let psql = |sql: &str| {
        let mut deadline = 0;
        loop {
            let output = Command::new(bin.join("psql"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-c",
                    sql,
                ])
                .env("PGPASSWORD", "postgres-pw")
                .output()
                .expect("psql");
            if output.status.success() {
                return;
            }
            deadline += 1;
            assert!(deadline < 100, "psql {sql}: {}", String::from_utf8_lossy(&output.stderr));
            std::thread::sleep(Duration::from_millis(100)); // the port listens before the server accepts logins
        }
    };
    psql("CREATE ROLE dns LOGIN PASSWORD 'dns-pw'");
    psql("CREATE DATABASE consul_dns OWNER dns");
    Some(Server {
        child: Some(child),
        start: Box::new(start),
        port,
        url: format!("postgres://dns:dns-pw@127.0.0.1:{port}/consul_dns"),
        log,
        _dir: dir,
    })
}

/// A one-member etcd cluster.
pub fn etcd() -> Option<Server> {
    require(Path::new("/usr/bin/etcd"), "etcd-server")?;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let (port, peer) = (free_port(), free_port());
    let log_start = log.clone();
    let start = move || {
        let client = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{peer}");
        Command::new("/usr/bin/etcd")
            .arg("--data-dir")
            .arg(&data)
            .args(["--name", "test", "--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}"), "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_start).unwrap())
            .spawn()
            .expect("start etcd")
    };
    let mut child = start();
    wait_for_port(port, &mut child, &log);
    Some(Server {
        child: Some(child),
        start: Box::new(start),
        port,
        url: format!("http://127.0.0.1:{port}"),
        log,
        _dir: dir,
    })
}
