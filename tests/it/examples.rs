//! The Go example services (examples/user, examples/order): their own vet and tests, and a
//! replica against the fake Consul on loopback — it registers with an HTTP check the fake
//! runs against it, answers /user/hello with its id, and deregisters on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::fake_consul::FakeConsul;
use crate::support::go_examples::{binary, go};

/// Kills the replica if the test fails before it exits by itself.
struct Replica(Child);

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The body of `GET path` on `addr` (HTTP/1.0, so the server closes when done).
pub(crate) fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(|e| format!("read from {addr}: {e}"))?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no HTTP answer from {addr}: {text:?}"))?;
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or("no status line")?;
    Ok((status, body.to_owned()))
}

fn wait_until<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20)); // polling a condition, bounded
    }
}

#[test]
fn go_examples_are_gofmt_clean_and_pass_vet_and_test() {
    let goroot = go(&["env", "GOROOT"]).output().expect("go is installed (scripts/test installs golang-go)");
    let goroot = String::from_utf8_lossy(&goroot.stdout).trim().to_owned();
    let gofmt = Command::new(std::path::Path::new(&goroot).join("bin/gofmt"))
        .args(["-l", "."])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
        .output()
        .expect("gofmt comes with go");
    assert!(gofmt.stdout.is_empty(), "not gofmt-formatted: {}", String::from_utf8_lossy(&gofmt.stdout));
    for args in [&["vet", "./..."][..], &["test", "-count=1", "./..."][..]] {
        let out = go(args).output().expect("go is installed (scripts/test installs golang-go)");
        assert!(
            out.status.success(),
            "go {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn user_replica_registers_with_a_check_and_leaves_on_sigterm() {
    let fake = FakeConsul::start("dc1", &[]);
    let child = Command::new(binary("user"))
        .env("CONSUL_HTTP_ADDR", fake.url())
        .env("SERVICE_ID", "user-9")
        .env("LISTEN", "127.0.0.1:0")
        .env("CHECK_INTERVAL", "1s")
        .env_remove("SERVICE_ADDRESS")
        .env_remove("CONSUL_HTTP_TOKEN")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the user example");
    let mut replica = Replica(child);

    // Registered, and passing: the fake agent ran the HTTP check against the replica.
    let (address, port) = wait_until("user-9 registered and passing", Duration::from_secs(20), || {
        fake.instances("user").into_iter().find_map(|(id, address, port, checks)| {
            (id == "user-9" && checks == ["passing"]).then_some((address, port))
        })
    });
    assert_eq!(address, "127.0.0.1", "the address it reaches the agent from");
    let (status, body) = http_get(&format!("{address}:{port}"), "/user/hello").unwrap();
    assert_eq!((status, body.as_str()), (200, "user-9\n"));

    let kill = Command::new("kill").args(["-TERM", &replica.0.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let exit = wait_until("the replica to exit", Duration::from_secs(10), || replica.0.try_wait().unwrap());
    assert!(exit.success(), "exit after SIGTERM: {exit}");
    assert!(fake.instances("user").is_empty(), "deregistered before exiting: {:?}", fake.instances("user"));
    assert!(fake.paths().iter().any(|p| p == "/v1/agent/service/deregister/user-9"), "{:?}", fake.paths());
}
