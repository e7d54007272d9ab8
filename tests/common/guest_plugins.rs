//! The test plugins of tests/guest-plugins, built from source once per test
//! process (release, wasm32-wasip2) for every test that needs a real plugin.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// One cargo feature of tests/guest-plugins per test plugin.
pub const FEATURES: [&str; 21] = [
    "loop",
    "alloc",
    "panic",
    "unknown-column",
    "wrong-type",
    "oversized",
    "wrong-world",
    "upper",
    "lenient",
    "trapdoor",
    "probe-file",
    "probe-env",
    "probe-socket",
    "probe-clock",
    "probe-random",
    "contract-1-0",
    "contract-1-1",
    "small-needs",
    "big-needs",
    "by-position",
    "by-position-disagrees",
];

/// The test plugin `name` (a feature of tests/guest-plugins, or `not-wasm`).
/// All are built once per test process, in the release profile, into the
/// test target's temporary folder.
pub fn plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(build_plugins)
        .get(name)
        .unwrap_or_else(|| panic!("no test plugin {name}"))
        .clone()
}

/// Builds every test plugin; returns where each one is.
///
/// Test processes run side by side (nextest runs every test in a process of
/// its own) and share one cargo target folder, where every feature's build
/// lands at the same path: the build and the copy out of it run under a file
/// lock, and each copy is named by its content's hash, so a process can
/// never pick up another feature's plugin under this one's name.
///
/// Within one nextest run the sources cannot change, so the first process
/// writes what it built to a list named by the run's id and the others read
/// it: 19 cargo invocations that find nothing to do still cost about ten
/// seconds, and under the lock every plugin test would wait for them in turn.
fn build_plugins() -> HashMap<String, PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/guest-plugins/Cargo.toml");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guest-plugins");
    let out = target.join("out");
    std::fs::create_dir_all(&out).expect("create plugin output folder");
    let lock = std::fs::File::create(target.join("build.lock")).expect("create build lock");
    lock.lock().expect("take the test plugins' build lock");
    let run_list = std::env::var("NEXTEST_RUN_ID")
        .ok()
        .map(|run| target.join(format!("built-in-run-{run}.json")));
    if let Some(built) = run_list.as_deref().and_then(read_run_list) {
        return built;
    }
    let mut built = HashMap::new();
    for feature in FEATURES {
        let mut build = Command::new(env!("CARGO"));
        build
            .args([
                "build",
                "--locked",
                "--quiet",
                // Release: rust-lld 1.95 segfaults linking mapper-guest's
                // debug cdylib for wasm32-wasip2 in some checkout paths.
                "--release",
                "--target",
                "wasm32-wasip2",
                "--features",
                feature,
            ])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target);
        for var in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
        ] {
            build.env_remove(var);
        }
        let status = build.status().expect("run cargo");
        assert!(status.success(), "building test plugin {feature} failed");
        let wasm = std::fs::read(target.join("wasm32-wasip2/release/keeper_test_plugins.wasm"))
            .unwrap_or_else(|e| panic!("read test plugin {feature}: {e}"));
        built.insert(feature.to_owned(), store_by_hash(&out, feature, &wasm));
    }
    let text = b"this is a text file, not WebAssembly\n";
    built.insert("not-wasm".to_owned(), store_by_hash(&out, "not-wasm", text));
    if let Some(run_list) = run_list {
        let json = serde_json::to_vec(&built).expect("serialise the test plugins' list");
        std::fs::write(&run_list, json).expect("write the test plugins' list for this run");
    }
    built
}

/// The plugins an earlier process of this nextest run built, if every one of
/// them is still in place.
fn read_run_list(path: &Path) -> Option<HashMap<String, PathBuf>> {
    let built: HashMap<String, PathBuf> = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let complete = FEATURES
        .iter()
        .all(|feature| built.get(*feature).is_some_and(|wasm| wasm.is_file()));
    complete.then_some(built)
}

/// Writes `bytes` to `<dir>/<name>-<hash>.wasm` unless already there.
pub fn store_by_hash(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    use sha2::Digest;
    let hash = hex::encode(&sha2::Sha256::digest(bytes)[..8]);
    let path = dir.join(format!("{name}-{hash}.wasm"));
    if !path.is_file() {
        let partial = dir.join(format!("{name}-{hash}.partial"));
        std::fs::write(&partial, bytes).expect("write test plugin");
        std::fs::rename(&partial, &path).expect("rename test plugin into place");
    }
    path
}
