//! The mapping sandbox: runs a `keeper:mapper` wasm component on keeper.db
//! rows and enforces its limits.
//!
//! A plugin may import only what the contract grants ([`check_imports`],
//! before it is ever linked): the read-only `lookup` served from a [`Lookup`]
//! snapshot, `diagnostics` to say why it is about to crash, and the WASI
//! input/output a Rust guest's standard library links, given empty (no
//! variables or arguments, nothing to read, stdout discarded, stderr captured
//! so a panic message can be reported). No files, sockets, clocks or
//! randomness: a plugin importing them is refused, naming the imports.
//!
//! Every call has a deadline (epoch interruption, counted in the calling
//! thread's CPU time where the platform has such a clock, see
//! [`crate::platform::thread_cpu_time`]), memory is capped and the output size is checked,
//! so a plugin that loops, allocates without end or panics fails that one
//! item and never the host. The operator's limits are ceilings: a plugin
//! of the `mapper-with-limits` world (keeper:mapper@1.2.0) declares what it
//! needs and is held to exactly that ([`Limits::grant`]), one that asks for
//! more than a ceiling is refused, and any other is given the ceilings.
//! A plugin of the `mapper-by-position` world (1.3.0) is called by position
//! ([`by_position`]): the column names cross the boundary once per
//! instance, not with every row.
//!
//! A trap poisons a wasmtime `Store`, so an instance is discarded after any
//! error and a fresh one made from the pre-instantiated component (tens of
//! microseconds).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, ComponentExportIndex, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{Deterministic, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use crate::row::{ColumnName, Row, Value};

mod by_position;

mod bindings {
    wasmtime::component::bindgen!({
        world: "mapper",
        path: "../mapper-guest/wit",
    });
}

use bindings::keeper::mapper::{diagnostics, lookup, types as wit};

/// The default mapping plugin, compiled from `mapper-guest` by build.rs.
pub const DEFAULT_PLUGIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/default_mapper.wasm"));

/// How often the epoch advances; a call's deadline is a number of ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Limits applied to every plugin call. The defaults are the contract's
/// (plugins/README.md); `Settings::plugin_limits` lets an operator override
/// them, and nothing else in the host decides a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time one `map` or `info` call may take: CPU time of the calling
    /// thread on Linux, Android, macOS, iOS and FreeBSD, so that a busy
    /// machine cannot make a valid plugin time out; wall-clock time elsewhere.
    pub deadline: Duration,
    /// Linear memory one plugin instance may grow to.
    pub memory_bytes: usize,
    /// Size of one mapped row plus its warnings (see [`Row::size`]).
    pub output_bytes: usize,
    /// The largest component compiled ([`Runtime::compile`]): compiling
    /// takes memory in proportion to the component's code (measured: a
    /// 19.3 MB Python plugin raises keeper's peak by about 350 MB, a 3 MB
    /// Rust one by about 20 MB; plugins/README.md), and this is what bounds
    /// it. Not a need a plugin can declare.
    pub component_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_millis(100),
            memory_bytes: 32 << 20,
            output_bytes: 1 << 20,
            component_bytes: 32 << 20,
        }
    }
}

impl Limits {
    /// What a plugin that declared `requested` is given when these limits
    /// are the operator's ceilings: exactly what it asked for (so a plugin
    /// that runs away is stopped at its own figure, not at the ceiling),
    /// the ceiling for what it did not declare, and a refusal for a need
    /// above a ceiling or of zero. The output cap is the contract's and
    /// cannot be asked for.
    pub fn grant(&self, requested: RequestedLimits) -> Result<Limits, LimitRefused> {
        let mut granted = *self;
        if let Some(need) = requested.memory_mib {
            let bytes = usize::try_from(need).unwrap_or(usize::MAX).saturating_mul(1 << 20);
            if need == 0 {
                return Err(LimitRefused::Zero { what: "memory-mib" });
            }
            if bytes > self.memory_bytes {
                return Err(LimitRefused::Memory {
                    need,
                    ceiling: self.memory_bytes >> 20,
                });
            }
            granted.memory_bytes = bytes;
        }
        if let Some(need) = requested.timeout_ms {
            let deadline = Duration::from_millis(u64::from(need));
            if need == 0 {
                return Err(LimitRefused::Zero { what: "timeout-ms" });
            }
            if deadline > self.deadline {
                return Err(LimitRefused::Time {
                    need,
                    ceiling: self.deadline.as_millis(),
                });
            }
            granted.deadline = deadline;
        }
        Ok(granted)
    }
}

/// What a plugin declared it needs (its `requested-limits` export,
/// keeper:mapper@1.2.0); `None` for what it did not declare, and both for a
/// plugin of the plain `mapper` world.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestedLimits {
    pub memory_mib: Option<u32>,
    pub timeout_ms: Option<u32>,
}

/// A declared need this keeper does not grant: the plugin is refused (by
/// `keeper plugin check`, at start-up and on hot reload) with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitRefused {
    #[error(
        "the plugin asks for {need} MiB of memory per instance (requested-limits), above this keeper's ceiling of \
         {ceiling} MiB: raise KEEPER_PLUGIN_MEMORY_MIB to at least {need}, or build the plugin asking for less"
    )]
    Memory { need: u32, ceiling: usize },
    #[error(
        "the plugin asks for {need} ms per call (requested-limits), above this keeper's ceiling of {ceiling} ms: \
         raise KEEPER_PLUGIN_TIMEOUT_MS to at least {need}, or build the plugin asking for less"
    )]
    Time { need: u32, ceiling: u128 },
    #[error(
        "the plugin asks for 0 in requested-limits.{what}: ask for at least 1, or for none to be given the ceiling"
    )]
    Zero { what: &'static str },
}

/// Who wrote a row: recorded with every item the plugin maps.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    /// SHA-256 of the component bytes, hex.
    pub hash: String,
}

/// The world every plugin must implement, as named in error messages.
/// Plugins built against an earlier 1.x of it load too (wasmtime matches
/// semver-compatible import names).
pub const WORLD: &str = "keeper:mapper/mapper@1.3.0";

/// The export by which a `mapper-with-limits` plugin declares its needs.
const REQUESTED_LIMITS_EXPORT: &str = "requested-limits";

/// What a plugin may import, read by build.rs from the WIT world `sandbox`
/// (mapper-guest/wit/mapper.wit), so the contract's text is the list the
/// host enforces: the contract's own interfaces, and the WASI 0.2 a Rust
/// guest's standard library imports on wasm32-wasip2 even when the plugin
/// uses none of it (its start-up reads the environment, its panics print to
/// stderr), granted empty ([`sandbox_wasi`]) so a plugin can be built with
/// plain `cargo build --target wasm32-wasip2`. Everything else WASI offers
/// (files, sockets, clocks, randomness, HTTP) is refused.
mod sandbox {
    include!(concat!(env!("OUT_DIR"), "/sandbox_imports.rs"));
}

/// Held while a component compiles, so compiles run one at a time: a
/// Python plugin (CPython and its standard library, 18.5 MB) takes seconds
/// of CPU and about 370 MB of memory to compile, and two files dropped in
/// together, or a check beside hot reload, would otherwise double that peak
/// on a machine that is also syncing. Across processes sharing a keeper.db
/// the compiled-plugin cache serialises compiles the same way
/// (`plugins::cache`).
static COMPILING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The longest crash report ([`diagnostics`]) kept, in bytes.
const CRASH_REPORT_LIMIT: usize = 2048;

/// A plugin that cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The bytes do not even compile as a WebAssembly component.
    #[error(
        "not a WebAssembly component (build a Rust plugin with `cargo build --target wasm32-wasip2`, a Python \
         one with `componentize-py --world mapper componentize app --stub-wasi`; see plugins/README.md): {0}"
    )]
    NotWasm(String),
    /// A component that imports what the contract does not grant.
    #[error(
        "imports what a mapping plugin may not use: {}. A plugin may import only the keeper:mapper interfaces \
         (and, for a Rust plugin, the WASI input/output its standard library links, given empty). Build a \
         Python plugin with `componentize-py ... componentize --stub-wasi`, which leaves it no WASI imports; \
         in a Rust plugin use no files (std::fs), sockets (std::net), clocks (std::time) or randomness \
         (HashMap::new seeds itself: use BTreeMap)",
        .0.join(", ")
    )]
    ForbiddenImports(Vec<String>),
    /// A component larger than [`Limits::component_bytes`]: not compiled.
    #[error(
        "the component is {} bytes, above this keeper's limit of {} MiB for a plugin it compiles (compiling \
         takes memory in proportion to the component's size): raise KEEPER_PLUGIN_SIZE_MIB to at least {}, or \
         make the plugin smaller",
        .bytes, .limit >> 20, .bytes.div_ceil(1 << 20)
    )]
    TooLarge { bytes: usize, limit: usize },
    /// A component, but not of our world (other imports or exports).
    #[error("not a {WORLD} component: {0}")]
    WrongWorld(String),
    #[error("plugin failed to start: {0}")]
    Start(String),
}

/// Why one row could not be mapped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MapError {
    #[error("mapping failed: {}", match field { Some(f) => format!("{f}: {message}"), None => message.clone() })]
    Rejected { field: Option<String>, message: String },
    #[error("mapper timed out after {} ms", .0.as_millis())]
    TimedOut(Duration),
    #[error("mapper exceeded memory limit {} MiB", .0 >> 20)]
    MemoryExceeded(usize),
    #[error("mapper output too large: {bytes} bytes, the limit is {limit}")]
    OutputTooLarge { bytes: usize, limit: usize },
    #[error("mapper trapped: {0}")]
    Trapped(String),
    /// It returned what the contract rules out (a cell naming no output
    /// column); the same input would do it again.
    #[error("mapper broke the contract: {0}")]
    BrokeContract(String),
}

/// A plugin's own refusal of a row.
impl From<wit::MappingError> for MapError {
    fn from(e: wit::MappingError) -> MapError {
        MapError::Rejected {
            field: e.field,
            message: e.message,
        }
    }
}

/// A mapped row with the warnings that did not stop it.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub row: Row,
    pub warnings: Vec<String>,
}

/// VH-Database's lookup tables, read once per batch, so lookups cost no I/O
/// and a batch sees one consistent picture.
#[derive(Debug, Default)]
pub struct Lookup {
    systems_exact: HashMap<String, String>,
    systems_folded: HashMap<String, String>,
    /// Planets by system.
    planets: Vec<KnownBody>,
    /// Moons by the system of their planet.
    moons: Vec<KnownBody>,
}

/// The case-insensitive, trimmed form names are compared in after an exact miss.
fn fold(name: &str) -> String {
    name.trim().to_lowercase()
}

/// A planet or a moon of a system in the snapshot, its name folded once,
/// when the snapshot is taken, rather than at every lookup that misses.
#[derive(Debug)]
struct KnownBody {
    system_id: String,
    name: String,
    folded: String,
    id: i64,
    /// The planet itself for a planet; the parent planet for a moon.
    planet_id: i64,
}

impl Lookup {
    /// `systems` as (id, name); `planets` as (id, system id, name); `moons` as
    /// (id, planet id, name).
    pub fn new(
        systems: Vec<(String, String)>,
        planets: Vec<(i64, String, String)>,
        moons: Vec<(i64, i64, String)>,
    ) -> Lookup {
        let mut lookup = Lookup::default();
        for (id, name) in systems {
            lookup.systems_folded.entry(fold(&name)).or_insert_with(|| id.clone());
            lookup.systems_exact.insert(name, id);
        }
        let planet_system: HashMap<i64, String> = planets.iter().map(|(id, sys, _)| (*id, sys.clone())).collect();
        let body = |system_id: String, name: String, id: i64, planet_id: i64| KnownBody {
            system_id,
            folded: fold(&name),
            name,
            id,
            planet_id,
        };
        lookup.planets = planets
            .into_iter()
            .map(|(id, sys, name)| body(sys, name, id, id))
            .collect();
        lookup.moons = moons
            .into_iter()
            .filter_map(|(id, planet, name)| {
                planet_system
                    .get(&planet)
                    .map(|sys| body(sys.clone(), name, id, planet))
            })
            .collect();
        lookup
    }

    pub fn find_system(&self, name: &str) -> Option<String> {
        self.systems_exact
            .get(name)
            .or_else(|| self.systems_folded.get(&fold(name)))
            .cloned()
    }

    /// Exact name first, then folded, among the bodies of one system.
    fn find_in<'a>(bodies: &'a [KnownBody], system_id: &str, name: &str) -> Option<&'a KnownBody> {
        let mut in_system = bodies.iter().filter(|b| b.system_id == system_id);
        in_system.clone().find(|b| b.name == name).or_else(|| {
            let folded = fold(name);
            in_system.find(|b| b.folded == folded)
        })
    }

    pub fn find_planet(&self, system_id: &str, name: &str) -> Option<(i64, String)> {
        Self::find_in(&self.planets, system_id, name).map(|p| (p.id, p.name.clone()))
    }

    /// The moon's id, its parent planet's id and its stored name.
    pub fn find_moon(&self, system_id: &str, name: &str) -> Option<(i64, i64, String)> {
        Self::find_in(&self.moons, system_id, name).map(|m| (m.id, m.planet_id, m.name.clone()))
    }
}

/// Per-store state: the empty WASI context and what the limiter observed.
struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryCap,
    lookup: Arc<Lookup>,
    /// The running call's deadline in thread CPU time (see [`arm_deadline`]).
    cpu_budget: CpuBudget,
    /// What the plugin said about the crash it is having (`diagnostics`),
    /// reported if the running call then traps.
    crash: Option<String>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::Host for HostState {}

impl diagnostics::Host for HostState {
    fn report_crash(&mut self, mut text: String) {
        if text.len() > CRASH_REPORT_LIMIT {
            let mut end = CRASH_REPORT_LIMIT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        self.crash = Some(text);
    }
}

impl lookup::Host for HostState {
    fn find_system(&mut self, name: String) -> Option<String> {
        self.lookup.find_system(&name)
    }

    fn find_planet(&mut self, system_id: String, name: String) -> Option<lookup::Body> {
        self.lookup
            .find_planet(&system_id, &name)
            .map(|(id, name)| lookup::Body {
                id,
                planet_id: id,
                name,
            })
    }

    fn find_moon(&mut self, system_id: String, name: String) -> Option<lookup::Body> {
        self.lookup
            .find_moon(&system_id, &name)
            .map(|(id, planet_id, name)| lookup::Body { id, planet_id, name })
    }
}

/// Refuses memory growth past the cap and remembers that it did, so the
/// resulting trap can be reported as what it is.
struct MemoryCap {
    limit: usize,
    hit: Arc<AtomicBool>,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit.store(true, Ordering::Relaxed);
            return Err(wasmtime::Error::msg("memory limit exceeded"));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The engine and linker all plugins share; one per process.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    limits: Limits,
}

impl Runtime {
    pub fn new(limits: Limits) -> Result<Runtime, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| PluginError::Start(e.to_string()))?;
        start_epoch_ticker(&engine);
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| PluginError::Start(e.to_string()))?;
        bindings::Mapper::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Start(e.to_string()))?;
        Ok(Runtime {
            engine,
            linker: Arc::new(linker),
            limits,
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The engine plugins are compiled for; a precompiled plugin is only
    /// valid for an engine of the same configuration (see `plugins::cache`).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles and links a component and asks it who it is. Blocking (tens
    /// to hundreds of milliseconds): call it off the async runtime.
    pub fn load(&self, bytes: &[u8]) -> Result<Plugin, PluginError> {
        let component = self.compile(bytes)?;
        self.link(&component, content_hash(bytes))
    }

    /// Compiles a component without linking it. Blocking; one compile at a
    /// time in this process ([`COMPILING`]), and none of a component larger
    /// than [`Limits::component_bytes`]. Every compile goes through here:
    /// start-up, hot reload, `keeper plugin check` and `preview`, cached or
    /// not (`plugins::cache` compiles only on a miss, through this).
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, PluginError> {
        if bytes.len() > self.limits.component_bytes {
            return Err(PluginError::TooLarge {
                bytes: bytes.len(),
                limit: self.limits.component_bytes,
            });
        }
        let _one_at_a_time = COMPILING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Component::new(&self.engine, bytes).map_err(|e| PluginError::NotWasm(one_line(&format!("{e:#}"))))
    }

    /// Links a compiled component against the contract and asks it who it
    /// is; `hash` is the content hash of the `.wasm` it was compiled from.
    pub fn link(&self, component: &Component, hash: String) -> Result<Plugin, PluginError> {
        check_imports(&self.engine, component)?;
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| PluginError::WrongWorld(one_line(&format!("{e:#}"))))?;
        let pre = bindings::MapperPre::new(pre).map_err(|e| PluginError::WrongWorld(one_line(&format!("{e:#}"))))?;
        let mut plugin = Plugin {
            runtime: self.clone(),
            pre,
            info: PluginInfo {
                name: String::new(),
                version: String::new(),
                hash,
            },
            requested: RequestedLimits::default(),
            limits: self.limits,
            refused: None,
            by_position: None,
        };
        // Loaded under the ceilings; what it declares applies from the
        // next instance on.
        let mut instance = plugin
            .instantiate(Arc::new(Lookup::default()), Call::Named)
            .map_err(|e| PluginError::Start(e.to_string()))?;
        let info = instance.info().map_err(|e| PluginError::Start(e.to_string()))?;
        plugin.info.name = info.name;
        plugin.info.version = info.version;
        if let Some(export) = component.get_export_index(None, REQUESTED_LIMITS_EXPORT) {
            plugin.requested = instance.requested_limits(&export)?;
        }
        if let Some(exports) = by_position::Exports::find(component)? {
            let Some(raw) = instance.raw else {
                return Err(PluginError::Start(Instance::not_initialised().to_string()));
            };
            plugin.by_position = Some(Arc::new(exports.load(&mut instance.store, raw)?));
        }
        match self.limits.grant(plugin.requested) {
            Ok(granted) => plugin.limits = granted,
            Err(refused) => plugin.refused = Some(refused),
        }
        Ok(plugin)
    }
}

/// Refuses a component that imports anything beyond the contract, naming
/// every such import. The linker holds all of WASI (with an empty context),
/// so this check, not the linker, is what keeps a plugin from files,
/// sockets, clocks and randomness; it runs before anything is instantiated.
fn check_imports(engine: &Engine, component: &Component) -> Result<(), PluginError> {
    let forbidden: Vec<String> = component
        .component_type()
        .imports(engine)
        .filter(|(name, import)| !import_allowed(name, &import.ty))
        .map(|(name, _)| name.to_owned())
        .collect();
    if forbidden.is_empty() {
        Ok(())
    } else {
        Err(PluginError::ForbiddenImports(forbidden))
    }
}

/// Whether the contract grants the import `name`: a type (the world's
/// `use types.{...}` imports the contract's types by name; a type grants
/// nothing) or an interface [`interface_allowed`].
fn import_allowed(name: &str, item: &wasmtime::component::types::ComponentItem) -> bool {
    use wasmtime::component::types::ComponentItem;
    (matches!(item, ComponentItem::Type(_)) && !name.contains(':')) || interface_allowed(name)
}

/// Whether the interface `name` (`namespace:package/interface@version`) is
/// one the world `sandbox` imports, at a semver-compatible version (the
/// same major, or for a 0.x the same minor: `keeper:mapper` 1.x, WASI 0.2.x),
/// as wasmtime links them.
fn interface_allowed(name: &str) -> bool {
    let (interface, version) = name.split_once('@').unwrap_or((name, ""));
    sandbox::SANDBOX_IMPORTS
        .iter()
        .any(|(allowed, allowed_version)| *allowed == interface && same_family(allowed_version, version))
}

/// Whether two semver versions are compatible: the same major, or, below
/// 1.0, the same major and minor.
fn same_family(a: &str, b: &str) -> bool {
    fn family(version: &str) -> Option<(&str, Option<&str>)> {
        let mut parts = version.split('.');
        let major = parts.next().filter(|m| !m.is_empty())?;
        Some((major, (major == "0").then(|| parts.next()).flatten()))
    }
    family(a).is_some_and(|f| family(b) == Some(f))
}

/// wasmtime's messages may embed pretty-printed values over several lines;
/// the registry, the log and the queue want one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The content hash recorded as a plugin's provenance: SHA-256 of the
/// `.wasm` bytes, hex.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Advances every engine's epoch from one background thread.
fn start_epoch_ticker(engine: &Engine) {
    static TICKERS: OnceLock<std::sync::Mutex<Vec<Engine>>> = OnceLock::new();
    let mut started = false;
    let engines = TICKERS.get_or_init(|| {
        started = true;
        std::sync::Mutex::new(Vec::new())
    });
    if let Ok(mut list) = engines.lock() {
        list.push(engine.clone());
    }
    if started {
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(EPOCH_TICK);
                    if let Ok(list) = engines.lock() {
                        list.iter().for_each(Engine::increment_epoch);
                    }
                }
            })
            .map(drop)
            .unwrap_or_else(
                |e| tracing::error!(error = %e, "cannot start the wasm epoch ticker; plugin deadlines will not fire"),
            );
    }
}

/// The plugin new batches run on. A batch takes it once at its start, so a
/// switch never splits a batch between two versions.
#[derive(Clone)]
pub struct PluginSlot(Arc<std::sync::RwLock<Arc<Plugin>>>);

impl PluginSlot {
    pub fn new(plugin: Plugin) -> PluginSlot {
        PluginSlot(Arc::new(std::sync::RwLock::new(Arc::new(plugin))))
    }

    pub fn current(&self) -> Arc<Plugin> {
        match self.0.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Makes `plugin` the one new batches use; returns the one it replaces.
    pub fn replace(&self, plugin: Plugin) -> Arc<Plugin> {
        let mut slot = match self.0.write() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        std::mem::replace(&mut *slot, Arc::new(plugin))
    }
}

/// A compiled, linked plugin, ready to make instances.
#[derive(Clone)]
pub struct Plugin {
    runtime: Runtime,
    pre: bindings::MapperPre<HostState>,
    info: PluginInfo,
    /// What it declared it needs.
    requested: RequestedLimits,
    /// What every call and instance is held to: what it asked for within
    /// the ceilings, the ceilings for the rest.
    limits: Limits,
    /// Why what it asked for is not granted; such a plugin fails the
    /// conformance check and never becomes active.
    refused: Option<LimitRefused>,
    /// Its by-position calls, for a plugin of the `mapper-by-position`
    /// world: the host then maps by position.
    by_position: Option<Arc<by_position::ByPosition>>,
}

/// Which of a plugin's exports maps a row.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    /// `map-values` where the plugin has it, else `map`.
    Fastest,
    /// `map`, always (the conformance check's comparison).
    Named,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("info", &self.info).finish()
    }
}

impl Plugin {
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// What the plugin declared it needs.
    pub fn requested_limits(&self) -> RequestedLimits {
        self.requested
    }

    /// The limits it runs under (see [`Limits::grant`]).
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Why its declared needs are not granted, if they are not.
    pub fn refused_limits(&self) -> Option<&LimitRefused> {
        self.refused.as_ref()
    }

    /// Whether the host maps its rows by position (it is of the
    /// `mapper-by-position` world).
    pub fn maps_by_position(&self) -> bool {
        self.by_position.is_some()
    }

    fn instantiate(&self, lookup: Arc<Lookup>, call: Call) -> Result<Instance, MapError> {
        let limits = self.limits;
        let stderr = MemoryOutputPipe::new(64 << 10);
        let memory_hit = Arc::new(AtomicBool::new(false));
        let state = HostState {
            wasi: sandbox_wasi(stderr.clone()),
            table: ResourceTable::new(),
            limiter: MemoryCap {
                limit: limits.memory_bytes,
                hit: memory_hit.clone(),
            },
            lookup,
            cpu_budget: CpuBudget::Unarmed,
            crash: None,
        };
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|s| &mut s.limiter);
        handle_deadlines(&mut store);
        arm_deadline(&mut store, limits.deadline);
        let mut instance = Instance {
            bindings: None,
            raw: None,
            by_position: None,
            store,
            stderr,
            memory_hit,
            limits,
        };
        let raw = self
            .pre
            .instance_pre()
            .instantiate(&mut instance.store)
            .map_err(|e| instance.classify(e))?;
        let bindings = bindings::Mapper::new(&mut instance.store, &raw).map_err(|e| instance.classify(e))?;
        if let (Some(plugin), Call::Fastest) = (&self.by_position, call) {
            let calls = by_position::Calls::new(plugin.clone(), &mut instance.store, raw);
            instance.by_position = Some(calls.map_err(|e| instance.classify(e))?);
        }
        instance.bindings = Some(bindings);
        instance.raw = Some(raw);
        Ok(instance)
    }

    /// Maps rows in order, each independently: one row's failure costs at
    /// most the deadline and never affects another row. Blocking: run it on
    /// a blocking thread (WASI must not run on an async worker thread).
    pub fn map_all(&self, lookup: Arc<Lookup>, rows: &[Row]) -> Vec<Result<Mapped, MapError>> {
        self.map_each(lookup, rows.iter().map(Cow::Borrowed), Call::Fastest)
    }

    /// [`Plugin::map_all`] on rows the caller is done with (the worker's
    /// and the puller's batches): their names and texts move into the
    /// sandbox's input instead of being copied, item by item.
    pub fn map_owned(&self, lookup: Arc<Lookup>, rows: Vec<Row>) -> Vec<Result<Mapped, MapError>> {
        self.map_each(lookup, rows.into_iter().map(Cow::Owned), Call::Fastest)
    }

    /// [`Plugin::map_all`] through the plugin's `map` export even where it
    /// maps by position, for the conformance check to hold the two to the
    /// same rows.
    pub fn map_all_by_name(&self, lookup: Arc<Lookup>, rows: &[Row]) -> Vec<Result<Mapped, MapError>> {
        self.map_each(lookup, rows.iter().map(Cow::Borrowed), Call::Named)
    }

    fn map_each<'r>(
        &self,
        lookup: Arc<Lookup>,
        rows: impl Iterator<Item = Cow<'r, Row>>,
        call: Call,
    ) -> Vec<Result<Mapped, MapError>> {
        let mut current: Option<Instance> = None;
        rows.map(|row| {
            let mut instance = match current.take() {
                Some(i) => i,
                None => self.instantiate(lookup.clone(), call)?,
            };
            let result = instance.map(row);
            if result.is_ok()
                || matches!(
                    result,
                    Err(MapError::Rejected { .. } | MapError::OutputTooLarge { .. } | MapError::BrokeContract(_))
                )
            {
                current = Some(instance);
            }
            result
        })
        .collect()
    }
}

/// A row as the plugin's `map` takes it.
fn to_wit_row(row: Cow<'_, Row>) -> Vec<wit::Column> {
    let column = |(name, value): (ColumnName, Value)| wit::Column {
        name: name.to_string(),
        value: to_wit(value),
    };
    match row {
        Cow::Owned(row) => row.0.into_iter().map(column).collect(),
        Cow::Borrowed(row) => row.0.iter().cloned().map(column).collect(),
    }
}

/// The WASI a std guest needs to start, granting nothing: no preopened
/// directories, environment, arguments or sockets; stderr captured; time
/// frozen at zero and randomness a fixed sequence (the contract promises a
/// plugin no clock, and a mapping must not depend on when it runs).
fn sandbox_wasi(stderr: MemoryOutputPipe) -> WasiCtx {
    const RANDOM: [u8; 8] = [0x9e, 0x37, 0x79, 0xb9, 0x7f, 0x4a, 0x7c, 0x15];
    WasiCtx::builder()
        .stderr(stderr)
        .wall_clock(FrozenClock)
        .monotonic_clock(FrozenClock)
        .secure_random(Deterministic::new(RANDOM.to_vec()))
        .insecure_random(Deterministic::new(RANDOM.to_vec()))
        .insecure_random_seed(0)
        .build()
}

/// A clock that always reads zero.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

/// A call's deadline in thread CPU time, where the thread has a CPU clock.
///
/// Why CPU time: the epoch ticker only makes the call look at that clock
/// every tick, so a machine busy with other work (which stalls this thread
/// without it using CPU) never times a call out, and a plugin is judged as
/// on an idle machine. A plugin that loops still uses CPU time and is
/// stopped.
#[derive(Clone, Copy, Debug, PartialEq)]
enum CpuBudget {
    /// No call armed yet (or no CPU clock here, where the deadline is
    /// wall-clock time, counted in ticks).
    Unarmed,
    /// A call has started and seen no tick yet: its budget starts counting
    /// at its first tick.
    Armed(Duration),
    /// Counting since `started`, the thread's CPU time at the call's first
    /// tick.
    Counting { started: Duration, budget: Duration },
}

impl CpuBudget {
    /// What to do at a tick, and the budget from then on. Reading the CPU
    /// clock is a system call (0.4–1 µs on the build machine, a tenth of a
    /// whole mapping or more), so it is read at ticks only, never per call: the
    /// count starts at the call's first tick, at most one tick (5 ms) after
    /// the call did, so a call may run up to one tick past its limit and is
    /// never stopped before it. `now` is `None` where the clock cannot be read.
    fn at_tick(self, now: Option<Duration>) -> (UpdateDeadline, CpuBudget) {
        match (self, now) {
            (CpuBudget::Armed(budget), Some(now)) => (
                UpdateDeadline::Continue(1),
                CpuBudget::Counting { started: now, budget },
            ),
            (CpuBudget::Counting { started, budget }, Some(now)) if now.saturating_sub(started) < budget => {
                (UpdateDeadline::Continue(1), self)
            }
            _ => (UpdateDeadline::Interrupt, self),
        }
    }
}

/// How `store` meets a call's deadline: in thread CPU time where the thread
/// has a CPU clock (see [`CpuBudget`]), else in wall-clock ticks. Once per
/// store; [`arm_deadline`] starts each call's.
fn handle_deadlines(store: &mut Store<HostState>) {
    if deadline_is_wall_clock() {
        store.epoch_deadline_trap();
    } else {
        store.epoch_deadline_callback(|mut ctx| {
            let (update, budget) = ctx.data().cpu_budget.at_tick(crate::platform::thread_cpu_time());
            ctx.data_mut().cpu_budget = budget;
            Ok(update)
        });
    }
}

/// Starts the deadline of the next call into `store` (set up by
/// [`handle_deadlines`]).
fn arm_deadline(store: &mut Store<HostState>, deadline: Duration) {
    if deadline_is_wall_clock() {
        store.set_epoch_deadline(deadline_ticks(deadline));
    } else {
        store.data_mut().cpu_budget = CpuBudget::Armed(deadline);
        store.set_epoch_deadline(1);
    }
}

/// Whether plugin deadlines are wall-clock time on this platform (see
/// [`arm_deadline`]), so that a busy machine can make a call time out.
pub fn deadline_is_wall_clock() -> bool {
    // Asked once: whether threads have a CPU clock does not change.
    static WALL_CLOCK: OnceLock<bool> = OnceLock::new();
    *WALL_CLOCK.get_or_init(|| crate::platform::thread_cpu_time().is_none())
}

fn deadline_ticks(deadline: Duration) -> u64 {
    let tick = EPOCH_TICK.as_micros().max(1);
    u64::try_from(deadline.as_micros().div_ceil(tick))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// One live plugin instance in its own store.
struct Instance {
    bindings: Option<bindings::Mapper>,
    /// The component instance itself, for the exports the bindings do not
    /// cover (`requested-limits`, which older plugins lack).
    raw: Option<wasmtime::component::Instance>,
    /// Where the instance maps by position.
    by_position: Option<by_position::Calls>,
    store: Store<HostState>,
    stderr: MemoryOutputPipe,
    memory_hit: Arc<AtomicBool>,
    limits: Limits,
}

impl Instance {
    fn not_initialised() -> MapError {
        MapError::Trapped("instance not initialised".into())
    }

    fn info(&mut self) -> Result<wit::PluginInfo, MapError> {
        self.store.data_mut().crash = None;
        arm_deadline(&mut self.store, self.limits.deadline);
        let result = match &self.bindings {
            Some(b) => b.call_info(&mut self.store),
            None => return Err(Self::not_initialised()),
        };
        result.map_err(|e| self.classify(e))
    }

    /// Calls the plugin's `requested-limits` export.
    fn requested_limits(&mut self, export: &ComponentExportIndex) -> Result<RequestedLimits, PluginError> {
        let Some(raw) = self.raw else {
            return Err(PluginError::Start(Self::not_initialised().to_string()));
        };
        let func = raw
            .get_typed_func::<(), (wit::PluginLimits,)>(&mut self.store, export)
            .map_err(|e| PluginError::WrongWorld(one_line(&format!("{REQUESTED_LIMITS_EXPORT}: {e:#}"))))?;
        self.store.data_mut().crash = None;
        arm_deadline(&mut self.store, self.limits.deadline);
        let (declared,) = func
            .call(&mut self.store, ())
            .map_err(|e| PluginError::Start(self.classify(e).to_string()))?;
        Ok(RequestedLimits {
            memory_mib: declared.memory_mib,
            timeout_ms: declared.timeout_ms,
        })
    }

    fn map(&mut self, row: Cow<'_, Row>) -> Result<Mapped, MapError> {
        self.store.data_mut().crash = None;
        arm_deadline(&mut self.store, self.limits.deadline);
        let mapped = match (&mut self.by_position, &self.bindings) {
            (Some(calls), _) => calls.map(&mut self.store, row),
            (None, Some(b)) => b.call_map(&mut self.store, &to_wit_row(row)).map(|output| {
                output
                    .map(|mapped| Mapped {
                        row: Row(mapped
                            .row
                            .into_iter()
                            .map(|c| (ColumnName::from(c.name), from_wit(c.value)))
                            .collect()),
                        warnings: mapped.warnings,
                    })
                    .map_err(MapError::from)
            }),
            (None, None) => return Err(Self::not_initialised()),
        };
        let Mapped { row, warnings } = mapped.map_err(|e| self.classify(e))??;
        let bytes = row.size() + warnings.iter().map(String::len).sum::<usize>();
        if bytes > self.limits.output_bytes {
            return Err(MapError::OutputTooLarge {
                bytes,
                limit: self.limits.output_bytes,
            });
        }
        Ok(Mapped { row, warnings })
    }

    /// Turns a wasmtime error into the reason an operator can act on.
    fn classify(&self, error: wasmtime::Error) -> MapError {
        if self.memory_hit.load(Ordering::Relaxed) {
            return MapError::MemoryExceeded(self.limits.memory_bytes);
        }
        if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return MapError::TimedOut(self.limits.deadline);
        }
        // What the plugin said before it broke (a Python exception) says
        // more than the trap it then hit.
        if let Some(report) = self.store.data().crash.as_deref().map(one_line)
            && !report.is_empty()
        {
            return MapError::Trapped(report);
        }
        let stderr = String::from_utf8_lossy(&self.stderr.contents()).trim().to_owned();
        let panic = stderr
            .lines()
            .skip_while(|l| !l.contains("panicked"))
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        if panic.is_empty() {
            MapError::Trapped(format!("{error:#}"))
        } else {
            MapError::Trapped(panic)
        }
    }
}

fn to_wit(value: Value) -> wit::Value {
    match value {
        Value::Null => wit::Value::Null,
        Value::Integer(i) => wit::Value::Integer(i),
        Value::Real(r) => wit::Value::Real(r),
        Value::Text(s) => wit::Value::Text(s),
    }
}

fn from_wit(value: wit::Value) -> Value {
    match value {
        wit::Value::Null => Value::Null,
        wit::Value::Integer(i) => Value::Integer(i),
        wit::Value::Real(r) => Value::Real(r),
        wit::Value::Text(s) => Value::Text(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call's CPU budget counts from its first tick and stops it only once
    /// spent; without a readable clock, or never armed, the call stops.
    #[test]
    fn a_cpu_budget_starts_at_the_first_tick_and_interrupts_once_spent() {
        let ms = Duration::from_millis;
        let interrupts = |update: UpdateDeadline| matches!(update, UpdateDeadline::Interrupt);

        let (update, counting) = CpuBudget::Armed(ms(10)).at_tick(Some(ms(500)));
        assert!(!interrupts(update));
        assert_eq!(
            counting,
            CpuBudget::Counting {
                started: ms(500),
                budget: ms(10)
            }
        );

        let (update, still) = counting.at_tick(Some(ms(509)));
        assert!(!interrupts(update));
        assert_eq!(still, counting);
        assert!(interrupts(counting.at_tick(Some(ms(510))).0));

        assert!(interrupts(CpuBudget::Armed(ms(10)).at_tick(None).0));
        assert!(interrupts(counting.at_tick(None).0));
        assert!(interrupts(CpuBudget::Unarmed.at_tick(Some(ms(1))).0));
    }

    /// Names match exactly first, then folded (case and surrounding white
    /// space ignored), and only within the system asked about.
    #[test]
    fn lookups_match_exactly_then_folded_within_the_system() {
        let lookup = Lookup::new(
            vec![("sys-1".into(), "Oculi".into()), ("sys-2".into(), "Other".into())],
            vec![
                (11, "sys-1".into(), "Erren".into()),
                (12, "sys-1".into(), "erren".into()),
                (21, "sys-2".into(), "Far".into()),
            ],
            vec![(31, 11, "Getre Beta".into()), (32, 21, "Far Moon".into())],
        );
        assert_eq!(lookup.find_system(" oculi "), Some("sys-1".into()));
        assert_eq!(lookup.find_planet("sys-1", "erren"), Some((12, "erren".into())));
        assert_eq!(lookup.find_planet("sys-1", "Erren"), Some((11, "Erren".into())));
        assert_eq!(lookup.find_planet("sys-1", "  ERREN "), Some((11, "Erren".into())));
        assert_eq!(lookup.find_planet("sys-1", "Far"), None);
        assert_eq!(
            lookup.find_moon("sys-1", "getre beta"),
            Some((31, 11, "Getre Beta".into()))
        );
        assert_eq!(lookup.find_moon("sys-1", "Far Moon"), None);
        assert_eq!(lookup.find_moon("sys-2", "Far Moon"), Some((32, 21, "Far Moon".into())));
    }

    /// By position, an instance is told the input columns again whenever
    /// a row's differ from the last one's (other columns, another order),
    /// so every row maps as it does by name.
    #[test]
    fn by_position_the_columns_are_told_again_when_a_row_changes_them() {
        let runtime = Runtime::new(ceilings()).expect("runtime");
        let plugin = runtime.load(DEFAULT_PLUGIN).expect("the built-in plugin loads");
        assert!(plugin.maps_by_position());
        let row = |columns: &[(&str, &str)]| {
            Row(columns
                .iter()
                .map(|(name, text)| (ColumnName::from(*name), Value::Text((*text).to_owned())))
                .collect())
        };
        let rows = [
            row(&[("discovery_type", "🦴"), ("description", "first")]),
            row(&[
                ("description", "second"),
                ("discovery_type", "💎"),
                ("coordinates", "0123"),
            ]),
            row(&[("discovery_type", "🚀"), ("description", "third")]),
        ];
        let lookup = Arc::new(Lookup::default());
        let by_position = plugin.map_all(lookup.clone(), &rows);
        assert_eq!(by_position, plugin.map_all_by_name(lookup, &rows));
        let second = by_position[1].as_ref().expect("the second row maps");
        assert_eq!(second.row.text("description"), Some("second"));
        assert_eq!(second.row.text("discovery_type"), Some("💎"));
        assert_eq!(second.row.text("coordinates"), Some("0123"));
    }

    fn ceilings() -> Limits {
        Limits {
            deadline: Duration::from_millis(100),
            memory_bytes: 32 << 20,
            output_bytes: 1 << 20,
            component_bytes: 32 << 20,
        }
    }

    /// The sandbox's promise, as the WIT world `sandbox` states it and the
    /// host enforces it: the contract's interfaces and a Rust std's WASI
    /// input/output, no files, sockets, clocks or randomness. A change to
    /// the world that grants more fails here.
    #[test]
    fn the_sandbox_world_grants_the_contract_and_std_io_only() {
        let names: Vec<&str> = sandbox::SANDBOX_IMPORTS.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "keeper:mapper/diagnostics",
                "keeper:mapper/lookup",
                "keeper:mapper/types",
                "wasi:cli/environment",
                "wasi:cli/exit",
                "wasi:cli/stderr",
                "wasi:cli/stdin",
                "wasi:cli/stdout",
                "wasi:cli/terminal-input",
                "wasi:cli/terminal-output",
                "wasi:cli/terminal-stderr",
                "wasi:cli/terminal-stdin",
                "wasi:cli/terminal-stdout",
                "wasi:io/error",
                "wasi:io/poll",
                "wasi:io/streams",
            ]
        );
        for (name, version) in sandbox::SANDBOX_IMPORTS {
            let expected = if name.starts_with("keeper:") { "1.3.0" } else { "0.2.6" };
            assert_eq!(*version, expected, "{name}");
        }
    }

    #[test]
    fn an_import_is_allowed_at_a_compatible_version_of_the_worlds_only() {
        for allowed in [
            "wasi:cli/environment@0.2.6",
            "wasi:cli/environment@0.2.0",
            "wasi:io/streams@0.2.12",
            "keeper:mapper/lookup@1.0.0",
            "keeper:mapper/diagnostics@1.2.0",
        ] {
            assert!(interface_allowed(allowed), "{allowed} refused");
        }
        for refused in [
            "wasi:filesystem/types@0.2.6",
            "wasi:clocks/wall-clock@0.2.6",
            "wasi:cli/environment@0.3.0",
            "wasi:cli/environment",
            "keeper:mapper/lookup@2.0.0",
            "keeper:mapper/lookup@0.2.6",
        ] {
            assert!(!interface_allowed(refused), "{refused} allowed");
        }
    }

    /// The WASI the world names is the WASI a Rust plugin really imports,
    /// at the same version: the default plugin, built by this toolchain's
    /// standard library, imports nothing the world does not name exactly.
    /// A standard library importing another 0.2.x fails here, so that the
    /// vendored `mapper-guest/wit/deps/` follow it.
    #[test]
    fn the_default_plugin_imports_exactly_what_the_sandbox_world_names() {
        let runtime = Runtime::new(Limits::default()).expect("runtime");
        let component = runtime.compile(DEFAULT_PLUGIN).expect("the default plugin compiles");
        let imported: Vec<String> = component
            .component_type()
            .imports(runtime.engine())
            .map(|(name, _)| name.to_owned())
            .filter(|name| name.contains(':'))
            .collect();
        assert!(imported.iter().any(|i| i.starts_with("wasi:cli/")), "{imported:?}");
        for import in &imported {
            let (name, version) = import.split_once('@').expect("a versioned import");
            assert!(
                sandbox::SANDBOX_IMPORTS.contains(&(name, version)),
                "the default plugin imports {import}, which the world sandbox does not name: {:?}",
                sandbox::SANDBOX_IMPORTS
            );
        }
    }

    #[test]
    fn a_plugin_that_declares_nothing_gets_the_ceilings() {
        assert_eq!(ceilings().grant(RequestedLimits::default()), Ok(ceilings()));
    }

    #[test]
    fn a_need_within_a_ceiling_is_granted_exactly_and_the_rest_is_the_ceiling() {
        let granted = ceilings()
            .grant(RequestedLimits {
                memory_mib: Some(14),
                timeout_ms: None,
            })
            .expect("granted");
        assert_eq!(granted.memory_bytes, 14 << 20);
        assert_eq!(granted.deadline, Duration::from_millis(100));
        let granted = ceilings()
            .grant(RequestedLimits {
                memory_mib: Some(32),
                timeout_ms: Some(20),
            })
            .expect("granted");
        assert_eq!(granted.memory_bytes, 32 << 20);
        assert_eq!(granted.deadline, Duration::from_millis(20));
        assert_eq!(granted.output_bytes, 1 << 20);
    }

    #[test]
    fn a_need_above_a_ceiling_is_refused_naming_the_need_the_ceiling_and_the_setting() {
        let memory = ceilings()
            .grant(RequestedLimits {
                memory_mib: Some(64),
                timeout_ms: Some(50),
            })
            .expect_err("refused");
        assert_eq!(memory, LimitRefused::Memory { need: 64, ceiling: 32 });
        let text = memory.to_string();
        assert!(
            text.contains("64 MiB") && text.contains("ceiling of 32 MiB") && text.contains("KEEPER_PLUGIN_MEMORY_MIB"),
            "{text}"
        );
        let time = ceilings()
            .grant(RequestedLimits {
                memory_mib: None,
                timeout_ms: Some(u32::MAX),
            })
            .expect_err("refused");
        let text = time.to_string();
        assert!(
            text.contains(&format!("{} ms", u32::MAX))
                && text.contains("ceiling of 100 ms")
                && text.contains("KEEPER_PLUGIN_TIMEOUT_MS"),
            "{text}"
        );
    }

    #[test]
    fn a_need_of_zero_is_refused() {
        for requested in [
            RequestedLimits {
                memory_mib: Some(0),
                timeout_ms: None,
            },
            RequestedLimits {
                memory_mib: None,
                timeout_ms: Some(0),
            },
        ] {
            let refused = ceilings().grant(requested).expect_err("refused");
            assert!(matches!(refused, LimitRefused::Zero { .. }), "{refused}");
        }
    }
}
