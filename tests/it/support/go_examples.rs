//! The Go example services (examples/user, examples/order), built once per test run.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The built binary of example `name` (`user` or `order`).
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT.get_or_init(build).as_ref().unwrap_or_else(|e| panic!("{e}"));
    dir.join(name)
}

/// `go` in examples/, with the environment every run here uses.
pub fn go(args: &[&str]) -> Command {
    let mut command = Command::new("go");
    command
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
        .env("GOFLAGS", "-buildvcs=false")
        .env("CGO_ENABLED", "0");
    if std::env::var_os("HOME").is_none() {
        // go needs a cache and a module directory; without a home, keep them under target/.
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        command.env("GOCACHE", tmp.join("go-cache")).env("GOPATH", tmp.join("go-path"));
    }
    command
}

fn build() -> Result<PathBuf, String> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-examples");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let out = go(&["build", "-o", &format!("{}/", dir.display()), "./user", "./order"])
        .output()
        .map_err(|e| format!("go is not installed (scripts/test installs golang-go): {e}"))?;
    if !out.status.success() {
        return Err(format!("go build of the examples failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(dir)
}
