//! PostgreSQL for the tests that run against it: a database of their own in
//! the throwaway cluster `.ci/postgres start` runs (`.ci/run` starts one and
//! exports its URL as `KEEPER_TEST_POSTGRES_URL`).
//!
//! A test that needs PostgreSQL and finds none fails, saying how to get one:
//! the PostgreSQL half of the suite is never skipped silently.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::output_within;

/// The variable `.ci/postgres start` prints: a superuser URL to the
/// cluster's `postgres` database.
pub const URL_VARIABLE: &str = "KEEPER_TEST_POSTGRES_URL";

const HOW_TO_GET_ONE: &str = "start a throwaway cluster with `eval \"$(.ci/postgres start)\"` \
     (needs Debian's postgresql package; .ci/run does this itself) and stop it with `.ci/postgres stop`";

/// The cluster's admin URL, or a failure saying how to start one.
pub fn admin_url() -> String {
    match std::env::var(URL_VARIABLE) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!("this test needs PostgreSQL and {URL_VARIABLE} is not set: {HOW_TO_GET_ONE}"),
    }
}

/// A new, empty database for one test, created in the cluster; returns its
/// URL. Names carry the process id and a counter, so tests running in
/// parallel (nextest runs each in its own process) never share one.
pub fn fresh_database(hint: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let admin = admin_url();
    let hint: String = hint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(30)
        .collect();
    let name = format!(
        "t_{hint}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    psql(&admin, &format!("CREATE DATABASE \"{name}\""));
    database_url(&admin, &name)
}

/// Runs one SQL statement with `psql` (the server package's client), failing
/// the test with psql's own message.
pub fn psql(url: &str, sql: &str) -> String {
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql]);
    let out = output_within(cmd, Duration::from_secs(60), "psql");
    assert!(
        out.status.success(),
        "psql failed on {sql:?}: {} ({HOW_TO_GET_ONE})",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `url` with its database (the path after the host) replaced by `name`.
fn database_url(url: &str, name: &str) -> String {
    let mut url = url::Url::parse(url).unwrap_or_else(|e| panic!("KEEPER_TEST_POSTGRES_URL {url:?}: {e}"));
    url.set_path(name);
    url.to_string()
}

/// A PostgreSQL cluster of one test's own (`.ci/postgres start`), for a test
/// that does to the server what it must not do to the shared one: crash it.
/// Stopped and removed when dropped.
pub struct PrivateCluster {
    /// Its folder (`KEEPER_TEST_POSTGRES_DIR` of the script's output).
    dir: String,
    /// A superuser URL to its `postgres` database.
    pub url: String,
}

const CLUSTER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../.ci/postgres");

impl PrivateCluster {
    /// Starts one; fails the test, with the script's reason, when it cannot.
    pub fn start() -> PrivateCluster {
        let mut cmd = Command::new(CLUSTER_SCRIPT);
        cmd.arg("start");
        let out = output_within(cmd, Duration::from_secs(120), ".ci/postgres start");
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "this test starts a PostgreSQL cluster of its own and could not: {} ({HOW_TO_GET_ONE})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let value = |name: &str| {
            printed
                .lines()
                .find_map(|line| line.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!(".ci/postgres start printed no {name}: {printed}"))
                .to_string()
        };
        PrivateCluster {
            dir: value("KEEPER_TEST_POSTGRES_DIR"),
            url: value(URL_VARIABLE),
        }
    }

    /// Stops the server as a crash would (no checkpoint, every client cut
    /// off) and starts it again on the same port, recovering from its log.
    pub fn crash_restart(&self) {
        let mut cmd = Command::new(CLUSTER_SCRIPT);
        cmd.args(["crash-restart", &self.dir]);
        let out = output_within(cmd, Duration::from_secs(120), ".ci/postgres crash-restart");
        assert!(
            out.status.success(),
            "PostgreSQL did not come back: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let mut cmd = Command::new(CLUSTER_SCRIPT);
        cmd.args(["stop", &self.dir]);
        let _ = output_within(cmd, Duration::from_secs(120), ".ci/postgres stop");
    }
}
