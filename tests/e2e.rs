//! The end-to-end tests: the real `keeper` binary on real files, real HTTP
//! and TLS on 127.0.0.1, real wasm built from source, a real PostgreSQL, a
//! fake Discord on loopback (see TESTING.md for which test proves which
//! promise of README.md).
//!
//! One test binary with a module per concern, not one binary per file:
//! every test binary links wasmtime, sqlx, poem and serenity and compiles
//! `common`, so fifteen of them cost fifteen links and fifteen compiles on
//! a 2-core CI machine. nextest still runs every test in a process of its
//! own. Run one module with `cargo nextest run --test e2e -E 'test(/^api::/)'`
//! or `cargo test --test e2e api::`.

mod common;

// Each module's own doc comment says what it covers.
mod api;
mod bot;
mod config;
mod console;
mod intake;
mod ops;
mod pipeline;
mod plugin_follow;
mod plugin_upload;
mod plugins;
mod postgres;
mod pull;
mod reliability;
mod torture;
