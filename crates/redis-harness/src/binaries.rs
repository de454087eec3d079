//! Finding the Redis binaries on `PATH`, and the install hints when they are missing.

use std::path::Path;

pub(crate) const REDIS_SERVER: &str = "redis-server";
pub(crate) const REDIS_CLI: &str = "redis-cli";
pub(crate) const OPENSSL: &str = "openssl";

pub(crate) const REDIS_SERVER_HINT: &str = "redis-server not found on PATH: install it \
     (Debian/Ubuntu: apt-get install -y redis-server redis-tools) — Redis tests never skip";
pub(crate) const REDIS_CLI_HINT: &str = "redis-cli not found on PATH: install it \
     (Debian/Ubuntu: apt-get install -y redis-tools) — Redis tests never skip";
pub(crate) const OPENSSL_HINT: &str = "openssl not found on PATH: install it to make test certificates \
     (Debian/Ubuntu: apt-get install -y openssl) — Redis TLS tests never skip";

/// Panics, with how to install it, unless `redis-server` is on `PATH`.
///
/// Redis tests fail rather than skip when Redis is missing; call this first in a test that needs
/// the binary before it starts a [`RedisServer`](crate::RedisServer) (starting one checks too).
///
/// # Panics
/// When `redis-server` is not an executable file in any `PATH` directory.
pub fn require_redis_server() {
    assert!(on_path(REDIS_SERVER), "{REDIS_SERVER_HINT}");
}

/// Panics, with how to install it, unless `redis-cli` is on `PATH` (needed to form a cluster).
pub(crate) fn require_redis_cli() {
    assert!(on_path(REDIS_CLI), "{REDIS_CLI_HINT}");
}

/// Panics, with how to install it, unless `openssl` is on `PATH` (needed to make test
/// certificates).
pub(crate) fn require_openssl() {
    assert!(on_path(OPENSSL), "{OPENSSL_HINT}");
}

fn on_path(program: &str) -> bool {
    // The same lookup `Command::new(program)` will do; reading PATH directly lets us fail with the
    // hint before starting anything.
    let Some(path) = std::env::var_os("PATH") else { return false };
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .any(|dir| is_executable(&dir.join(program)))
}

#[cfg(unix)]
fn is_executable(file: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    file.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(file: &Path) -> bool {
    file.is_file()
}
