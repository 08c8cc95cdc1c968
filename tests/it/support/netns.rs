//! A lab of network namespaces (deploy/rehearsal/netlab.sh): hosts with the stack's real
//! addresses on a bridge of their own, never touching this machine's interfaces or routes.
//! [`Lab`] is the guard: dropping it (also while a failed test unwinds) ends the processes
//! started in it and removes every namespace. Code of the test binary reaches a host in two
//! ways: [`Lab::command`] (`ip netns exec`, for dig and the daemon) and [`enter`] on a thread
//! of its own (a thread's sockets stay in the namespace it was in when it made them).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rehearsal/netlab.sh");

/// Moves the calling thread into the network namespace `name` (a file under /run/netns).
pub fn enter(name: &str) {
    if let Err(e) = try_enter(name) {
        panic!("{e}");
    }
}

/// [`enter`] that reports instead of panicking (for drop paths, after the lab may be gone).
pub fn try_enter(name: &str) -> Result<(), String> {
    let path = PathBuf::from("/run/netns").join(name);
    let file = File::open(&path).map_err(|e| format!("network namespace {}: {e}", path.display()))?;
    // SAFETY: setns on a valid namespace descriptor changes only this thread's namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!("setns into {name}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Runs `f` on a new thread inside the namespace `name` and returns its result.
pub fn within<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let name = name.to_owned();
    std::thread::spawn(move || {
        enter(&name);
        f()
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Whether this machine can make a lab (root, iproute2 and network namespaces).
pub fn available() -> Result<(), String> {
    let probe = format!("cdns-probe-{}", std::process::id());
    let out = Command::new("ip").args(["netns", "add", &probe]).output();
    match out {
        Ok(out) if out.status.success() => {
            let _ = Command::new("ip").args(["netns", "del", &probe]).status();
            Ok(())
        }
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        Err(e) => Err(format!("ip: {e}")),
    }
}

/// A running lab; torn down on drop.
pub struct Lab {
    prefix: String,
    children: Vec<Child>,
}

impl Lab {
    /// Makes the hosts `(name, "ADDR/LEN")`, with a prefix unique to this process and call.
    pub fn up(hosts: &[(&str, &str)]) -> Lab {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let prefix = format!("cdns{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let lab = Lab { prefix, children: Vec::new() };
        let specs: Vec<String> = hosts.iter().map(|(name, addr)| format!("{name}={addr}")).collect();
        lab.script(&[&["up", &lab.prefix], &specs.iter().map(String::as_str).collect::<Vec<_>>()[..]].concat());
        lab
    }

    fn script(&self, args: &[&str]) -> Output {
        let out = Command::new(SCRIPT).args(args).output().expect("run deploy/rehearsal/netlab.sh");
        assert!(out.status.success(), "netlab.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    /// The namespace of host `name`.
    pub fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Sets the resolver host `name` sees in /etc/resolv.conf under `ip netns exec`.
    pub fn resolver(&self, name: &str, ip: &str) {
        self.script(&["resolver", &self.prefix, name, ip]);
    }

    /// `program` to run on host `name`.
    pub fn command(&self, name: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns(name), program]);
        command
    }

    /// Starts `command` (from [`Lab::command`]) and keeps it until the lab goes down; its index
    /// for [`Lab::child`].
    pub fn spawn(&mut self, mut command: Command) -> usize {
        let child = command.stdin(Stdio::null()).spawn().expect("start a process in the lab");
        self.children.push(child);
        self.children.len() - 1
    }

    /// A process started with [`Lab::spawn`].
    pub fn child(&mut self, index: usize) -> &mut Child {
        &mut self.children[index]
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let out = Command::new(SCRIPT).args(["down", &self.prefix]).output();
        if let Ok(out) = out
            && !out.status.success()
        {
            eprintln!("netlab.sh down {}: {}", self.prefix, String::from_utf8_lossy(&out.stderr));
        }
    }
}
