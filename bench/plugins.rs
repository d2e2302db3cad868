//! Plugin call cost: instantiate + call, p50/p99, with wasmtime's pooling allocator and with
//! on-demand allocation, in the same run.
//!
//! Every plugin call on the request path builds a fresh `Store`, instantiates the plugin from
//! its pre-instantiated component and calls one export ([`Plugin::preprocess`] /
//! [`Plugin::postprocess`]); this bench times exactly that call, through the public API, for:
//!
//! - `pre-only` — a near-noop preprocess (ignores the request, returns one 1x1 tensor), so the
//!   number is the fixed per-call cost: store, instance, memory, WASI context, teardown;
//! - `digits pre` — the example plugin decoding a real 28x28 PNG into a `[1, 28, 28, 1]` tensor;
//! - `digits post` — the example plugin turning a `[1, 10]` `probabilities` tensor into the
//!   top-3 JSON answer.
//!
//! Each case runs sequentially on a current-thread runtime (warm-up, then N calls), then
//! concurrently (a multi-thread runtime, 8 tasks sharing the N calls), once per allocator.
//! Compiling each plugin ([`Plugin::load`]) is timed once per allocator and reported too.
//!
//! ```sh
//! scripts/build-plugins.sh                         # the fixture plugins, once
//! cargo bench --bench plugins                      # 10000 noop calls, 2000 digits calls per row
//! cargo bench --bench plugins -- --quick           # a tenth of that
//! cargo bench --bench plugins -- --iters 10000     # the same N for every case
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use infergate::config::LimitsConfig;
use infergate::plugin::{Allocator, CallLimits, CallTag, Host, Needs, Plugin, PluginRequest};
use infergate::tensor::{NamedTensors, Tensor};

/// The context the digits preprocess writes for model `digits` and the default k, byte for
/// byte; its postprocess reads it back.
const DIGITS_CONTEXT: &[u8] = br#"{"k":3,"model":"digits"}"#;

/// Concurrent tasks in the concurrent mode.
const TASKS: usize = 8;

/// The bounds of a model with the default `[limits]`, as the gateway would call it.
fn limits() -> CallLimits {
    let config = LimitsConfig::default();
    CallLimits {
        timeout: config.timeout(),
        memory_bytes: config.memory_bytes(),
        max_output_bytes: config.max_output_bytes(),
    }
}

#[derive(Parser, Debug)]
#[command(about = "Plugin instantiate + call p50/p99, pooling vs on-demand allocation")]
struct Args {
    /// Calls per row for every case (default: 10000 for the noop plugin, 2000 for digits;
    /// a tenth of that with --quick).
    #[arg(long)]
    iters: Option<usize>,
    /// A short smoke run: a tenth of the calls.
    #[arg(long)]
    quick: bool,
    /// Worker threads of the concurrent mode's runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Args {
    /// Timed calls for a case whose full run is `full` calls.
    fn iters(&self, full: usize) -> usize {
        match (self.iters, self.quick) {
            (Some(n), _) => n.max(1),
            (None, true) => (full / 10).max(1),
            (None, false) => full,
        }
    }
}

/// What one case calls, and how its answer is checked before anything is timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    NoopPre,
    DigitsPre,
    DigitsPost,
}

impl Case {
    const ALL: [Case; 3] = [Case::NoopPre, Case::DigitsPre, Case::DigitsPost];

    fn name(self) -> &'static str {
        match self {
            Case::NoopPre => "pre-only (noop)",
            Case::DigitsPre => "digits pre (28x28 PNG)",
            Case::DigitsPost => "digits post ([1,10] → top-3)",
        }
    }

    fn full_iters(self) -> usize {
        match self {
            Case::NoopPre => 10_000,
            Case::DigitsPre | Case::DigitsPost => 2000,
        }
    }
}

/// The inputs every call of a case reuses.
struct Inputs {
    noop: PluginRequest,
    png: PluginRequest,
    probabilities: NamedTensors,
}

impl Inputs {
    fn new() -> anyhow::Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let png = std::fs::read(root.join("examples/images/digit-7-0.png"))
            .context("reading examples/images/digit-7-0.png")?;
        let request = |model: &str, body: Bytes, content_type: &str| PluginRequest {
            model: model.into(),
            method: "POST".into(),
            path: format!("/v1/models/{model}:predict"),
            headers: vec![("content-type".into(), content_type.into())],
            body,
            ..PluginRequest::default()
        };
        let row = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.6, 0.08, 0.04];
        Ok(Self {
            noop: request("noop", Bytes::from_static(b"ok"), "text/plain"),
            png: request("digits", Bytes::from(png), "image/png"),
            probabilities: vec![("probabilities".into(), Tensor::from_f32(vec![1, 10], &row)?)],
        })
    }
}

/// The two plugins compiled on one allocator's host (each plugin holds its host).
struct Loaded {
    allocator: Allocator,
    noop: Plugin,
    digits: Plugin,
}

impl Loaded {
    fn plugin(&self, case: Case) -> &Plugin {
        match case {
            Case::NoopPre => &self.noop,
            Case::DigitsPre | Case::DigitsPost => &self.digits,
        }
    }
}

/// One call of `case`; the error says what was wrong with the answer.
async fn call(loaded: &Loaded, inputs: &Inputs, case: Case, tag: CallTag) -> anyhow::Result<()> {
    let plugin = loaded.plugin(case);
    match case {
        Case::NoopPre => {
            let prepared = plugin.preprocess(&inputs.noop, limits(), tag).await?;
            let x = prepared.inputs.first().map(|(name, t)| (name.as_str(), t));
            match x {
                Some(("x", t)) if t.shape() == [1, 1] && t.to_f32() == Some(vec![2.0]) => Ok(()),
                _ => bail!("pre-only answered {:?}", prepared.inputs),
            }
        }
        Case::DigitsPre => {
            let prepared = plugin.preprocess(&inputs.png, limits(), tag).await?;
            let shape = prepared
                .inputs
                .first()
                .map(|(name, t)| (name.as_str(), t.shape()));
            if shape != Some(("image", &[1, 28, 28, 1][..])) || prepared.context != DIGITS_CONTEXT {
                bail!(
                    "digits preprocess answered {shape:?}, context {:?}",
                    prepared.context
                );
            }
            Ok(())
        }
        Case::DigitsPost => {
            let response = plugin
                .postprocess(&inputs.probabilities, DIGITS_CONTEXT, limits(), tag)
                .await?;
            let body: serde_json::Value = serde_json::from_slice(&response.body)?;
            if response.status != 200 || body["predictions"][0]["label"] != "7" {
                bail!("digits postprocess answered {} {body}", response.status);
            }
            Ok(())
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let noop_path = built(root.join("tests/plugins/wasm/pre-only.wasm"))?;
    let digits_path = built(root.join("plugins/digits/plugin.wasm"))?;
    let inputs = Arc::new(Inputs::new()?);

    let mut loads = Vec::new();
    let mut runtimes = Vec::new();
    for allocator in [Allocator::Pooling, Allocator::OnDemand] {
        let runtime = Host::with_allocator(allocator)
            .with_context(|| format!("starting the {allocator:?} runtime"))?;
        let (noop, noop_load) = timed_load(
            &runtime,
            &noop_path,
            Needs {
                pre: true,
                post: false,
            },
        )?;
        let (digits, digits_load) = timed_load(
            &runtime,
            &digits_path,
            Needs {
                pre: true,
                post: true,
            },
        )?;
        loads.push((allocator, noop_load, digits_load));
        runtimes.push(Arc::new(Loaded {
            allocator,
            noop,
            digits,
        }));
    }
    println!(
        "{} CPUs; each call: fresh Store + instantiate + call; default [limits] {:?}; \
         concurrent = {} tasks on {} worker threads\n",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        LimitsConfig::default(),
        TASKS,
        args.threads,
    );

    let mut rows = Vec::new();
    for case in Case::ALL {
        let iters = args.iters(case.full_iters());
        for mode in [Mode::Sequential, Mode::Concurrent] {
            for loaded in &runtimes {
                let row = measure(loaded, &inputs, case, mode, iters, args.threads)?;
                eprintln!(
                    "  done: {} {:?} {}",
                    case.name(),
                    loaded.allocator,
                    mode.name()
                );
                rows.push(row);
            }
        }
    }
    print_loads(&loads);
    print_table(&rows);
    print_ratios(&rows);
    Ok(())
}

/// The file at `path`, or an error saying how to build it.
fn built(path: PathBuf) -> anyhow::Result<PathBuf> {
    if !path.is_file() {
        bail!(
            "{} is missing: run scripts/build-plugins.sh first",
            path.display()
        );
    }
    Ok(path)
}

/// [`Plugin::load`] (read, compile, type-check, pre-instantiate) and how long it took.
fn timed_load(runtime: &Host, path: &Path, needs: Needs) -> anyhow::Result<(Plugin, Duration)> {
    let started = Instant::now();
    let plugin = Plugin::load(runtime, path, needs)?;
    Ok((plugin, started.elapsed()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// One call at a time on a current-thread runtime.
    Sequential,
    /// [`TASKS`] tasks calling in a loop on a multi-thread runtime.
    Concurrent,
}

impl Mode {
    fn name(self) -> String {
        match self {
            Mode::Sequential => "sequential".into(),
            Mode::Concurrent => format!("{TASKS} tasks"),
        }
    }
}

/// Warm-up calls before each row: fill the pooling allocator's slots, fault in the code.
fn warmup(iters: usize) -> usize {
    (iters / 10).clamp(20, 200)
}

/// Runs one row: a checked warm-up, then `iters` timed calls.
fn measure(
    loaded: &Arc<Loaded>,
    inputs: &Arc<Inputs>,
    case: Case,
    mode: Mode,
    iters: usize,
    threads: usize,
) -> anyhow::Result<Row> {
    let runtime = match mode {
        Mode::Sequential => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        Mode::Concurrent => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?,
    };
    let tasks = match mode {
        Mode::Sequential => 1,
        Mode::Concurrent => TASKS,
    };
    runtime.block_on(async {
        for _ in 0..warmup(iters) {
            call(loaded, inputs, case, tag(case)).await?;
        }
        // The tasks share one counter of calls left, so the row makes exactly `iters` calls.
        let left = Arc::new(AtomicUsize::new(iters));
        let started = Instant::now();
        let workers: Vec<_> = (0..tasks)
            .map(|_| tokio::spawn(worker(loaded.clone(), inputs.clone(), case, left.clone())))
            .collect();
        let mut latencies = Vec::with_capacity(iters);
        for worker in workers {
            latencies.extend(worker.await??);
        }
        let wall = started.elapsed();
        Ok(Row::new(case, loaded.allocator, mode, wall, latencies))
    })
}

/// Calls `case` until `left` runs out; the latency of each call.
async fn worker(
    loaded: Arc<Loaded>,
    inputs: Arc<Inputs>,
    case: Case,
    left: Arc<AtomicUsize>,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    while left
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
    {
        let started = Instant::now();
        call(&loaded, &inputs, case, tag(case)).await?;
        latencies.push(started.elapsed());
    }
    Ok(latencies)
}

fn tag(case: Case) -> CallTag {
    CallTag {
        model: match case {
            Case::NoopPre => "noop".into(),
            Case::DigitsPre | Case::DigitsPost => "digits".into(),
        },
        request_id: String::new(),
        metrics: None,
    }
}

/// One line of the results table.
struct Row {
    case: Case,
    allocator: Allocator,
    mode: Mode,
    p50: Duration,
    p99: Duration,
    calls_per_sec: f64,
}

impl Row {
    fn new(
        case: Case,
        allocator: Allocator,
        mode: Mode,
        wall: Duration,
        mut latencies: Vec<Duration>,
    ) -> Self {
        latencies.sort();
        Row {
            case,
            allocator,
            mode,
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            calls_per_sec: latencies.len() as f64 / wall.as_secs_f64(),
        }
    }
}

/// Nearest-rank percentile of sorted samples; zero when there are none.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn allocator_name(allocator: Allocator) -> &'static str {
    match allocator {
        Allocator::Pooling => "pooling",
        Allocator::OnDemand => "on-demand",
    }
}

fn print_loads(loads: &[(Allocator, Duration, Duration)]) {
    println!("Plugin::load (read + compile + pre-instantiate), once each:\n");
    println!("| allocator | pre-only ms | digits ms |");
    println!("|---|--:|--:|");
    for (allocator, noop, digits) in loads {
        println!(
            "| {} | {:.1} | {:.1} |",
            allocator_name(*allocator),
            noop.as_secs_f64() * 1e3,
            digits.as_secs_f64() * 1e3
        );
    }
    println!();
}

fn print_table(rows: &[Row]) {
    println!("| plugin | allocator | mode | p50 µs | p99 µs | calls/s |");
    println!("|---|---|---|--:|--:|--:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.0} |",
            r.case.name(),
            allocator_name(r.allocator),
            r.mode.name(),
            us(r.p50),
            us(r.p99),
            r.calls_per_sec
        );
    }
    println!();
}

/// On-demand over pooling for each case and mode: above 1 means pooling is faster.
fn print_ratios(rows: &[Row]) {
    let find = |case: Case, mode: Mode, allocator: Allocator| {
        rows.iter()
            .find(|r| r.case == case && r.mode == mode && r.allocator == allocator)
    };
    println!("on-demand / pooling (above 1: pooling is faster):\n");
    println!("| plugin | mode | p50 | p99 | time per call (1 / calls/s) |");
    println!("|---|---|--:|--:|--:|");
    for case in Case::ALL {
        for mode in [Mode::Sequential, Mode::Concurrent] {
            let (Some(pool), Some(demand)) = (
                find(case, mode, Allocator::Pooling),
                find(case, mode, Allocator::OnDemand),
            ) else {
                continue;
            };
            println!(
                "| {} | {} | {:.2}x | {:.2}x | {:.2}x |",
                case.name(),
                mode.name(),
                us(demand.p50) / us(pool.p50).max(f64::MIN_POSITIVE),
                us(demand.p99) / us(pool.p99).max(f64::MIN_POSITIVE),
                pool.calls_per_sec / demand.calls_per_sec.max(f64::MIN_POSITIVE),
            );
        }
    }
}
