//! Starting and stopping the real binary.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_consul-dns")
}

/// A running daemon; killed on drop. Its stderr is collected in `log`.
pub struct Daemon {
    child: Child,
    /// The bound DNS address (UDP and TCP).
    pub addr: SocketAddr,
    /// The bound HTTP address (`None` with `--http off`).
    pub http: Option<SocketAddr>,
    /// Temp dir holding the catalog and config files.
    pub dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts with `catalog` (TOML) as the static catalog, plus extra flags.
    pub fn start(catalog: &str, args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("services.toml"), catalog).unwrap();
        Daemon::start_in(dir, args)
    }

    /// Starts in a prepared dir (which holds `services.toml` unless `args` say otherwise).
    /// Recursion is off unless `args` give `--recursor` or `--resolv-conf`: the host's own
    /// resolv.conf would make answers depend on the machine.
    pub fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Daemon {
        let http_off = args.windows(2).any(|w| w[0] == "--http" && w[1] == "off");
        let command = Daemon::command(dir.path(), args);
        Daemon::spawn(command, dir, http_off)
    }

    /// The command line [`Daemon::start_in`] runs in `dir`, not started yet.
    pub fn command(dir: &Path, args: &[&str]) -> Command {
        let catalog = dir.join("services.toml");
        let mut command = Command::new(binary());
        command.args(["--listen", "127.0.0.1:0", "--udp-workers", "2", "--log-level", "info,consul_dns=debug"]);
        if !["--static", "--consul", "--database-url", "--etcd"].iter().any(|a| args.contains(a)) {
            command.arg("--static").arg(&catalog);
        }
        if !args.contains(&"--http") {
            command.args(["--http", "127.0.0.1:0"]);
        }
        if !args.contains(&"--resolv-conf") {
            let empty = dir.join("resolv.conf");
            std::fs::write(&empty, "").unwrap();
            command.arg("--resolv-conf").arg(&empty);
        }
        for var in
            ["CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_CACERT", "CONSUL_HTTP_SSL"]
        {
            command.env_remove(var); // the machine's Consul settings must not leak into tests
        }
        command.args(args).env_remove("RUST_LOG");
        command
    }

    /// Starts a prepared command line (e.g. under `ip netns exec`) and waits for its
    /// "listening." log lines; the HTTP one too unless `http_off`.
    pub fn spawn(mut command: Command, dir: tempfile::TempDir, http_off: bool) -> Daemon {
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("start consul-dns");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                for listener in ["DNS", "HTTP"] {
                    if line.contains(&format!("{listener} listening.")) {
                        let _ = tx.send((listener, field(&line, "addr").unwrap_or_default()));
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let (mut addr, mut http) = (None, None);
        while addr.is_none() || (http.is_none() && !http_off) {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(("DNS", found)) => addr = Some(found.parse().unwrap()),
                Ok((_, found)) => http = Some(found.parse().unwrap()),
                Err(_) => {
                    let _ = child.kill();
                    panic!("daemon did not start; log:\n{}", log.lock().unwrap().join("\n"));
                }
            }
        }
        Daemon { child, addr: addr.unwrap(), http, dir, log }
    }

    /// The HTTP address; panics with `--http off`.
    pub fn http(&self) -> SocketAddr {
        self.http.expect("the HTTP listener is on")
    }

    /// Path of the static catalog.
    pub fn catalog_path(&self) -> PathBuf {
        self.dir.path().join("services.toml")
    }

    /// Replaces the catalog file atomically (write + rename, as editors and ConfigMaps do).
    pub fn write_catalog(&self, text: &str) {
        write_atomically(&self.catalog_path(), text);
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").args(["-s", name, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; its status code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `key` in a log line, text (`key=value`) or JSON (`"key":"value"`).
pub fn field(line: &str, key: &str) -> Option<String> {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(line) {
        return map.get(key).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
    }
    let value = line.split(&format!("{key}=")).nth(1)?;
    Some(value.split_whitespace().next().unwrap_or_default().to_owned())
}

/// Writes a file via a temporary sibling and a rename.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Runs real `dig` against `addr`; returns stdout. Fails loudly when dig is missing.
pub fn dig(addr: SocketAddr, args: &[&str]) -> String {
    let output: Output = Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("dig is installed (apt-get install bind9-dnsutils; .ci/run does this)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs the binary with arguments (no daemon), returning (exit code, stdout, stderr).
pub fn run_binary(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(binary()).args(args).env_remove("RUST_LOG").output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
