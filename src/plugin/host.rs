//! The plugin host: the one wasmtime `Engine` every plugin shares, its `Linker` (WASI sandbox +
//! the `host` and `ops` interfaces, for every contract version still loaded), and the epoch
//! ticker thread that lets calls be interrupted at a deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, LinkerInstance};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::host::{self as imports, Level};
use super::bindings::ops;
use super::sandbox::Sandbox;

/// How often the epoch advances. A call past its deadline is interrupted within one tick, and
/// a running call yields to the async runtime once per tick so it never hogs a worker thread.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Plugin instances that may exist at once (pooling allocator slots) unless configured.
pub const DEFAULT_MAX_INSTANCES: u32 = 1000;
/// `plugins.max_plugin_mb` by default: room for a CPython component (about 19 MB) with a
/// few times that in bundled pure-Python packages.
pub const DEFAULT_MAX_PLUGIN_MB: u64 = 128;

/// Ceiling of any one linear memory; per-model `limits.memory_mb` caps below it.
const MAX_MEMORY_BYTES: usize = 4 << 30;

/// Which instance allocator the engine ended up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocator {
    Pooling,
    OnDemand,
}

impl Allocator {
    /// `pooling` or `on-demand`, as the docs and `GET /admin/plugins` name them.
    pub fn name(self) -> &'static str {
        match self {
            Allocator::Pooling => "pooling",
            Allocator::OnDemand => "on-demand",
        }
    }
}

/// Shared wasmtime state. Cloning is cheap; the ticker stops when the last clone drops.
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    /// Where compiled plugins are cached; `None` compiles every load.
    cache_dir: Option<std::path::PathBuf>,
    /// `plugins.max_plugin_mb` in bytes: a bigger plugin file is refused at load.
    max_plugin_bytes: u64,
    linker: Linker<Sandbox>,
    allocator: Allocator,
    /// One permit per instance the pool holds (`plugins.max_instances`): a call takes one
    /// before it instantiates, so a full pool makes calls wait (see `share`) instead of
    /// failing in the allocator.
    instances: Arc<tokio::sync::Semaphore>,
    instances_total: u32,
    /// Every model's idle warm instances (`[reuse]`), freed for a call the pool keeps waiting.
    idlers: super::share::Idlers,
    _ticker: Ticker,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start the plugin host: {0}")]
pub struct HostError(String);

impl Host {
    /// Builds the engine (pooling allocator when the address space allows it) and linker.
    pub fn new() -> Result<Self, HostError> {
        Self::sized(DEFAULT_MAX_INSTANCES)
    }

    /// Like [`Host::new`], with `max_instances` pooling slots (`plugins.max_instances`):
    /// the plugin calls that may run at once across all models.
    pub fn sized(max_instances: u32) -> Result<Self, HostError> {
        let allocator = if pooling_fits() {
            Allocator::Pooling
        } else {
            Allocator::OnDemand
        };
        Self::build(allocator, max_instances)
    }

    /// Caches compiled plugins in `dir` (see [`super::cache`]). Call it on a new runtime,
    /// before it is cloned; a shared runtime keeps its setting.
    pub fn with_cache_dir(mut self, dir: Option<std::path::PathBuf>) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.cache_dir = dir,
            None => tracing::warn!("plugin cache dir not set: the runtime is already shared"),
        }
        self
    }

    /// Refuses plugin files over `mb` MiB at load (`plugins.max_plugin_mb`). Like
    /// [`Host::with_cache_dir`], call it on a new runtime, before it is cloned.
    pub fn with_max_plugin_mb(mut self, mb: u64) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.max_plugin_bytes = mb.saturating_mul(1 << 20),
            None => tracing::warn!("plugin size limit not set: the runtime is already shared"),
        }
        self
    }

    /// The largest plugin file [`super::Plugin::load`] accepts, in bytes.
    pub fn max_plugin_bytes(&self) -> u64 {
        self.inner.max_plugin_bytes
    }

    pub fn cache_dir(&self) -> Option<&std::path::Path> {
        self.inner.cache_dir.as_deref()
    }

    pub fn with_allocator(allocator: Allocator) -> Result<Self, HostError> {
        Self::build(allocator, DEFAULT_MAX_INSTANCES)
    }

    fn build(allocator: Allocator, max_instances: u32) -> Result<Self, HostError> {
        let engine = Engine::new(&engine_config(allocator, max_instances.max(1)))
            .map_err(|e| HostError(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| HostError(e.to_string()))?;
        imports::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| HostError(e.to_string()))?;
        ops::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| HostError(e.to_string()))?;
        link_contract_0_1(&mut linker).map_err(|e| HostError(e.to_string()))?;
        let ticker = Ticker::start(&engine);
        tracing::debug!(?allocator, "plugin runtime ready");
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                cache_dir: None,
                max_plugin_bytes: DEFAULT_MAX_PLUGIN_MB << 20,
                linker,
                allocator,
                instances: Arc::new(tokio::sync::Semaphore::new(max_instances.max(1) as usize)),
                instances_total: max_instances.max(1),
                idlers: super::share::Idlers::default(),
                _ticker: ticker,
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(super) fn linker(&self) -> &Linker<Sandbox> {
        &self.inner.linker
    }

    pub fn allocator(&self) -> Allocator {
        self.inner.allocator
    }

    /// `plugins.max_instances`: the instances that may exist at once.
    pub fn max_instances(&self) -> u32 {
        self.inner.instances_total
    }

    /// The gate in front of the instance pool.
    pub(super) fn instances(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.inner.instances
    }

    /// Every model's idle warm instances.
    pub(super) fn idlers(&self) -> &super::share::Idlers {
        &self.inner.idlers
    }
}

/// Contract 0.1.0 (`infergate:plugin/host@0.1.0`): the same `log` as today's `host`. Linked by
/// hand because wasmtime matches import versions by semver, and 0.1 and 0.2 are not
/// compatible by that rule even though 0.2.0 only added the `ops` interface; its `types` are
/// records and variants, checked structurally, so a 0.1.0 component's exports type-check
/// against the newest bindings as they are.
fn link_contract_0_1(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    let mut host: LinkerInstance<'_, Sandbox> = linker.instance("infergate:plugin/host@0.1.0")?;
    host.func_wrap("log", |mut cx, (level, message): (Level, String)| {
        imports::Host::log(cx.data_mut(), level, message);
        Ok(())
    })
}

fn engine_config(allocator: Allocator, max_instances: u32) -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    // `perf` can name the frames of plugin code (`/tmp/perf-<pid>.map`): how a slow plugin
    // gets profiled. Off by default, since the map grows with every (re)load.
    if std::env::var_os("INFERGATE_PERFMAP").is_some_and(|v| v == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if allocator == Allocator::Pooling {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(max_instances)
            .total_core_instances(max_instances * 4)
            .total_memories(max_instances * 2)
            .total_tables(max_instances * 2)
            .total_stacks(max_instances)
            .max_memory_size(MAX_MEMORY_BYTES)
            .max_component_instance_size(10 << 20)
            .max_core_instance_size(10 << 20)
            .max_core_instances_per_component(64)
            .max_memories_per_component(16)
            .max_tables_per_component(64)
            .table_elements(100_000)
            // Keeping the first pages of a reused slot resident trades a memset for page faults.
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(512 << 10)
            // Without it that memset covers the whole 2 MiB on every call, dirty or not (over
            // half of a small plugin's call); with it (Linux 6.7+, ignored elsewhere) only the
            // pages the call actually wrote are reset.
            .pagemap_scan(Enabled::Auto);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// Whether this process can reserve the pooling allocator's address space. Small VMs,
/// containers with a VA limit and 39-bit address spaces can't; those fall back to on-demand
/// allocation (the same probe `wasmtime serve` and Spin run). `INFERGATE_POOLING=0|1` overrides.
fn pooling_fits() -> bool {
    match std::env::var("INFERGATE_POOLING").as_deref() {
        Ok("0") => return false,
        Ok("1") => return true,
        _ => {}
    }
    let mut config = Config::new();
    config.wasm_memory64(true).memory_reservation(1 << 42);
    let Ok(engine) = Engine::new(&config) else {
        return false;
    };
    let mut store = wasmtime::Store::new(&engine, ());
    let ty = wasmtime::MemoryType::new64(0, None);
    wasmtime::Memory::new(&mut store, ty).is_ok()
}

/// A thread that advances the engine's epoch every [`EPOCH_TICK`]. It holds only a weak
/// engine handle and stops when dropped (with the runtime) or when the engine is gone.
struct Ticker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: &Engine) -> Self {
        let weak = engine.weak();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("infergate-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .expect("spawning the epoch ticker thread");
        Self {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
