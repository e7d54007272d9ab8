//! Builds the default mapping plugin (`mapper-guest`) as a wasm32-wasip2
//! component and leaves it in OUT_DIR for `include_bytes!`, so a fresh clone
//! needs no manual step: the wasm target is added with rustup when missing.
//! Also reads the WIT world `sandbox` (mapper-guest/wit/mapper.wit), which
//! says what a plugin may import, into OUT_DIR/sandbox_imports.rs: the
//! host's import check uses that list, so the WIT and the host cannot
//! disagree.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

/// The operating systems where keeper calls libc itself (the machine's name,
/// a thread's CPU clock: src/platform.rs), as `cfg(keeper_libc)`. The one
/// list of them: the code says `cfg(keeper_libc)`.
const LIBC_PLATFORMS: [&str; 5] = ["linux", "android", "macos", "ios", "freebsd"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("host/ lives in the workspace").to_owned();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for watched in [
        "mapper-guest/src",
        "mapper-guest/wit",
        "mapper-guest/Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    write_sandbox_imports(&root.join("mapper-guest/wit"), &out_dir);

    println!("cargo::rustc-check-cfg=cfg(keeper_libc)");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if LIBC_PLATFORMS.contains(&target_os.as_str()) {
        println!("cargo::rustc-cfg=keeper_libc");
    }

    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    ensure_target(&rustc);

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Where the plugin is built: this build's own folder, or one that
    // several builds of keeper share (`KEEPER_GUEST_TARGET_DIR`; .ci/run's
    // test build, lint check and Windows check each run this script, and
    // the plugin they build is the same). A lock taken around the build and
    // the copy keeps a second build from replacing the file being copied.
    println!("cargo:rerun-if-env-changed=KEEPER_GUEST_TARGET_DIR");
    let target_dir = std::env::var_os("KEEPER_GUEST_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| out_dir.join("guest-target"), PathBuf::from);
    std::fs::create_dir_all(&target_dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", target_dir.display()));
    let lock_path = target_dir.join("keeper-build.lock");
    let lock =
        std::fs::File::create(&lock_path).unwrap_or_else(|e| panic!("cannot create {}: {e}", lock_path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));
    let mut build = Command::new(&cargo);
    build
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "mapper-guest",
            "--target",
            TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's flags and wrappers (clippy, coverage) are for the host.
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
    // Without DWARF (the workspace's release profile keeps line tables for
    // the host): 188 KB instead of 3.1 MB. keeper hashes these bytes at
    // every start and parses them to compile, and they live in its binary.
    // Function names stay, for the wasm backtrace of a trap.
    build
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    let status = build.status().expect("cannot run cargo to build mapper-guest");
    assert!(status.success(), "building mapper-guest for {TARGET} failed");

    let wasm = target_dir.join(TARGET).join("release").join("mapper_guest.wasm");
    std::fs::copy(&wasm, out_dir.join("default_mapper.wasm"))
        .unwrap_or_else(|e| panic!("cannot copy {}: {e}", wasm.display()));
    drop(lock);
}

/// Installs the wasm target's standard library if this toolchain lacks it
/// (rustup does not install the targets of rust-toolchain.toml by itself).
fn ensure_target(rustc: &str) {
    let libdir = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if libdir.as_deref().is_some_and(has_std) {
        return;
    }
    println!("cargo:warning=installing the {TARGET} target with rustup (first build only)");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .expect("the wasm32-wasip2 target is missing and rustup cannot be run to add it");
    assert!(status.success(), "rustup target add {TARGET} failed");
}

fn has_std(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
        })
        .unwrap_or(false)
}

/// Writes `sandbox_imports.rs`: `SANDBOX_IMPORTS`, the interfaces the world
/// `sandbox` imports, as (`namespace:package/interface`, version) pairs.
fn write_sandbox_imports(wit: &Path, out_dir: &Path) {
    use wit_parser::{Resolve, WorldItem};
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_path(wit)
        .unwrap_or_else(|e| panic!("cannot read {}: {e:#}", wit.display()));
    let world = resolve
        .select_world(&[package], Some("sandbox"))
        .unwrap_or_else(|e| panic!("mapper.wit must have the world `sandbox`: {e:#}"));
    let mut imports: Vec<(String, String)> = Vec::new();
    for item in resolve.worlds[world].imports.values() {
        match item {
            WorldItem::Interface { id, .. } => {
                let interface = &resolve.interfaces[*id];
                let name = interface
                    .name
                    .as_deref()
                    .expect("the world imports named interfaces only");
                let package = &resolve.packages[interface.package.expect("an interface of a package")].name;
                let version = package
                    .version
                    .as_ref()
                    .unwrap_or_else(|| panic!("package {package} of the world `sandbox` has no version"));
                imports.push((
                    format!("{}:{}/{name}", package.namespace, package.name),
                    version.to_string(),
                ));
            }
            // A `use` in the world: the types of an interface it imports.
            WorldItem::Type { .. } => {}
            WorldItem::Function(f) => panic!("the world `sandbox` imports a bare function {}", f.name),
        }
    }
    imports.sort();
    let mut code = String::from(
        "/// What a plugin may import: the interfaces the WIT world `sandbox`\n\
         /// imports, as (`namespace:package/interface`, version). Written by\n\
         /// build.rs from mapper-guest/wit.\n\
         pub const SANDBOX_IMPORTS: &[(&str, &str)] = &[\n",
    );
    for (name, version) in &imports {
        code.push_str(&format!("    ({name:?}, {version:?}),\n"));
    }
    code.push_str("];\n");
    let path = out_dir.join("sandbox_imports.rs");
    std::fs::write(&path, code).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
