//! Micro-benchmarks of the request path's building blocks, each as p50/p99 over many runs
//! (a custom harness like the other benches here: criterion's build cost is out of proportion
//! on a 2-core machine, and these cases need no statistics beyond percentiles):
//!
//! - plugin instantiate + call: the near-noop `pre-only` fixture — the fixed cost every plugin
//!   call pays (fresh `Store`, instance, WASI context, call, teardown);
//! - the digits preprocess (PNG decode, grayscale, resize, normalize) as wasm through the
//!   gateway's plugin runtime, and the *same source* compiled natively (`plugins/digits` is
//!   also an rlib, a dev-dependency of the gateway), called directly;
//! - tensor encode/decode: a `[64, 28, 28, 1]` f32 batch into a serialized `PredictRequest`,
//!   and a `[64, 10]` `PredictResponse` (typed `float_val`, as TF Serving answers) back out;
//! - REST JSON: parsing and typing a 1 MiB `{"instances": …}` body, by the one-pass reader
//!   and by the full reader alone.
//!
//! ```sh
//! cargo bench --bench micro             # full counts
//! cargo bench --bench micro -- --quick  # a tenth
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use infergate::backend::tfserving::convert;
use infergate::config::LimitsConfig;
use infergate::plugin::{CallLimits, CallTag, Host, Needs, Plugin, PluginRequest};
use infergate::proto::tensorflow::serving::{ModelSpec, PredictRequest, PredictResponse};
use infergate::proto::tensorflow::{
    DataType, TensorProto, TensorShapeProto, tensor_shape_proto::Dim,
};
use infergate::rest::{InputSpec, parse_predict_body, parse_predict_body_full};
use infergate::tensor::{DType, Tensor};
use prost::Message;

/// Target for a noop plugin's instantiate + call: the best round's CPU p50.
const TARGET_NOOP: Duration = Duration::from_micros(10);
/// Wasm preprocessing over native, at most.
const TARGET_WASM_RATIO: f64 = 1.5;

#[derive(Parser, Debug)]
#[command(about = "Plugin call, wasm vs native, tensor codec and REST parse micro-benchmarks")]
struct Args {
    /// A tenth of the iterations.
    #[arg(long)]
    quick: bool,
    /// The digits plugin to time (default plugins/digits/plugin.wasm), e.g. one built with
    /// another opt-level.
    #[arg(long)]
    digits_wasm: Option<std::path::PathBuf>,
    /// Only the cases whose name contains this (e.g. `noop`, to profile one case).
    #[arg(long)]
    only: Option<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// p50 and p99 of one case.
struct Stats {
    name: String,
    p50: Duration,
    p99: Duration,
    /// p50 of the thread's CPU time per iteration: what the case costs even when other
    /// processes take the core in the middle of it (shared build machines do).
    cpu_p50: Duration,
    /// Each round's CPU p50 (see [`run`]), in round order.
    rounds: Vec<Duration>,
    /// Bytes one iteration handles, for a throughput column.
    bytes: Option<usize>,
}

impl Stats {
    /// The lowest round CPU p50: the case's cost in the quietest stretch of the run.
    fn cpu_best(&self) -> Duration {
        self.rounds.iter().copied().min().unwrap_or_default()
    }
}

/// One case: `iters` runs of `f` in all, spread over the rounds.
struct Case<'a> {
    name: &'static str,
    iters: usize,
    bytes: Option<usize>,
    f: Box<dyn FnMut() -> anyhow::Result<()> + 'a>,
}

impl<'a> Case<'a> {
    fn new(
        name: &'static str,
        iters: usize,
        bytes: Option<usize>,
        f: impl FnMut() -> anyhow::Result<()> + 'a,
    ) -> Self {
        Self {
            name,
            iters,
            bytes,
            f: Box::new(f),
        }
    }
}

/// How many rounds each case's iterations are split into.
const ROUNDS: usize = 5;

/// Runs the cases (those `--only` selects) interleaved: a warm-up of a tenth of each, then
/// [`ROUNDS`] rounds that each run a fifth of every case in turn. On a shared machine other
/// VMs' load comes and goes in phases of a second or more that slow every case alike, by up to
/// 1.7x; a ratio taken within one round (wasm vs native) holds steady across them, and the
/// best round shows a case's cost with the core to itself.
fn run(cases: Vec<Case<'_>>) -> anyhow::Result<Vec<Stats>> {
    let only = ONLY.get().and_then(Option::as_deref);
    let mut cases: Vec<Case<'_>> = cases
        .into_iter()
        .filter(|case| only.is_none_or(|only| case.name.contains(only)))
        .collect();
    for case in &mut cases {
        for _ in 0..(case.iters / 10).max(10) {
            (case.f)()?;
        }
    }
    let mut wall: Vec<Vec<Duration>> = cases.iter().map(|c| Vec::with_capacity(c.iters)).collect();
    let mut cpu: Vec<Vec<Duration>> = cases.iter().map(|c| Vec::with_capacity(c.iters)).collect();
    let mut rounds: Vec<Vec<Duration>> = vec![Vec::with_capacity(ROUNDS); cases.len()];
    for _ in 0..ROUNDS {
        for (i, case) in cases.iter_mut().enumerate() {
            let per_round = (case.iters / ROUNDS).max(1);
            let mut round = Vec::with_capacity(per_round);
            for _ in 0..per_round {
                let cpu_started = thread_cpu();
                let started = Instant::now();
                (case.f)()?;
                wall[i].push(started.elapsed());
                round.push(thread_cpu().saturating_sub(cpu_started));
            }
            round.sort();
            rounds[i].push(round[round.len() / 2]);
            cpu[i].extend(round);
        }
    }
    Ok(cases
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let (wall, cpu) = (&mut wall[i], &mut cpu[i]);
            wall.sort();
            cpu.sort();
            let at = |q: f64| wall[((q * wall.len() as f64) as usize).min(wall.len() - 1)];
            Stats {
                name: case.name.to_string(),
                p50: at(0.50),
                p99: at(0.99),
                cpu_p50: cpu[cpu.len() / 2],
                rounds: std::mem::take(&mut rounds[i]),
                bytes: case.bytes,
            }
        })
        .collect())
}

/// `--only`, read by [`run`].
static ONLY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ONLY.get_or_init(|| args.only.clone());
    let n = |full: usize| if args.quick { full / 10 } else { full };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let png = std::fs::read(root.join("examples/images/digit-7-0.png"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let plugins = Plugins::load(root, args.digits_wasm.as_deref())?;

    let noop = plugins.request("noop", b"ok".to_vec(), "text/plain");
    let valid = plugins.request("digits", png.clone(), "image/png");
    // The same module answering at once (a body that is no image): its instantiate + call
    // cost without the image work, subtracted to get the work alone.
    let invalid = plugins.request("digits", b"x".to_vec(), "image/png");
    let batch = batch_tensor()?;
    let request_bytes = request_bytes_of(&batch);
    let response = response_bytes();
    let body = instances_body(1 << 20, |v| format!("{v:.6}"));
    // What a Python client sends for an f32 image (`json.dumps(x.tolist())`, and serde_json
    // for an `f32` put in a `Value`): each pixel's f64, up to 17 digits.
    let python_body = instances_body(1 << 20, |v| format!("{:?}", f64::from(v)));
    let specs: BTreeMap<String, InputSpec> = [(
        "x".to_string(),
        InputSpec {
            dtype: DType::F32,
            shape: Some(vec![-1, 784]),
        },
    )]
    .into();

    let mut cases = Vec::new();
    cases.push(Case::new(
        "noop plugin: instantiate + call",
        n(20_000),
        None,
        || {
            rt.block_on(plugins.noop.preprocess(&noop, limits(), tag()))?;
            Ok(())
        },
    ));
    cases.push(Case::new(
        "digits pre, wasm: instantiate + call",
        n(5000),
        None,
        || {
            rt.block_on(plugins.digits.preprocess(&valid, limits(), tag()))?;
            Ok(())
        },
    ));
    cases.push(Case::new(
        "digits pre, wasm: instantiate + reject",
        n(5000),
        None,
        || match rt.block_on(plugins.digits.preprocess(&invalid, limits(), tag())) {
            Err(infergate::plugin::CallError::Rejected(_)) => Ok(()),
            other => bail!("expected a rejection, got {other:?}"),
        },
    ));
    cases.push(Case::new("digits pre, native", n(5000), None, || {
        let request = infergate_sdk::Request::new("digits", png.clone())
            .with_header("content-type", "image/png");
        digits_plugin::preprocess(request).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }));

    cases.push(Case::new(
        "encode [64,28,28,1] f32 → PredictRequest bytes",
        n(5000),
        Some(request_bytes.len()),
        || {
            let bytes = request_bytes_of(&batch);
            std::hint::black_box(bytes);
            Ok(())
        },
    ));
    cases.push(Case::new(
        "decode PredictResponse [64,10] float_val → tensor",
        n(20_000),
        Some(response.len()),
        || {
            let mut decoded = PredictResponse::decode(response.as_slice())?;
            let proto = decoded
                .outputs
                .remove("probabilities")
                .context("probabilities")?;
            let tensor = convert::from_proto(proto).map_err(anyhow::Error::msg)?;
            std::hint::black_box(tensor);
            Ok(())
        },
    ));
    // The one-pass reader on both spellings, and the 6-decimal body through the full reader
    // alone: what the one-pass reader saves.
    type Reader = fn(&[u8]) -> Result<infergate::rest::PredictBody, infergate::rest::RestError>;
    let parses: [(&'static str, &[u8], Reader); 3] = [
        (
            "parse 1 MiB {\"instances\": …} → f32 tensor",
            &body,
            parse_predict_body,
        ),
        (
            "parse 1 MiB {\"instances\": …} of f64-spelled f32s → f32 tensor",
            &python_body,
            parse_predict_body,
        ),
        (
            "parse 1 MiB {\"instances\": …} → f32 tensor, full reader",
            &body,
            parse_predict_body_full,
        ),
    ];
    for (name, body, read) in parses {
        let specs = &specs;
        cases.push(Case::new(name, n(200), Some(body.len()), move || {
            let tensors = read(body)?.into_tensors(specs)?;
            std::hint::black_box(tensors);
            Ok(())
        }));
    }
    let rows = run(cases)?;
    print(&rows, plugins.runtime.allocator());
    Ok(())
}

/// The two plugins, compiled once on the gateway's default runtime.
struct Plugins {
    runtime: Host,
    noop: Plugin,
    digits: Plugin,
}

impl Plugins {
    fn load(root: &Path, digits: Option<&Path>) -> anyhow::Result<Self> {
        let runtime = Host::new()?;
        let load = |path: &Path, post: bool| {
            Plugin::load(&runtime, path, Needs { pre: true, post })
                .with_context(|| format!("{}: run scripts/build-plugins.sh first", path.display()))
        };
        let digits = digits.map_or_else(
            || root.join("plugins/digits/plugin.wasm"),
            Path::to_path_buf,
        );
        Ok(Self {
            noop: load(&root.join("tests/plugins/wasm/pre-only.wasm"), false)?,
            digits: load(&digits, true)?,
            runtime,
        })
    }

    fn request(&self, model: &str, body: Vec<u8>, content_type: &str) -> PluginRequest {
        PluginRequest {
            model: model.into(),
            method: "POST".into(),
            path: format!("/v1/models/{model}:predict"),
            headers: vec![("content-type".into(), content_type.into())],
            body: Bytes::from(body),
            ..PluginRequest::default()
        }
    }
}

fn limits() -> CallLimits {
    let config = LimitsConfig::default();
    CallLimits {
        timeout: config.timeout(),
        memory_bytes: config.memory_bytes(),
        max_output_bytes: config.max_output_bytes(),
    }
}

fn tag() -> CallTag {
    CallTag::default()
}

fn batch_tensor() -> anyhow::Result<Tensor> {
    let values: Vec<f32> = (0..64 * 784).map(|i| (i % 255) as f32 / 255.0).collect();
    Ok(Tensor::from_f32(vec![64, 28, 28, 1], &values)?)
}

fn request_bytes_of(batch: &Tensor) -> Vec<u8> {
    let request = PredictRequest {
        model_spec: Some(ModelSpec {
            name: "digits".into(),
            signature_name: "serving_default".into(),
            version_choice: None,
        }),
        inputs: [("image".to_string(), convert::to_proto(batch))].into(),
        output_filter: Vec::new(),
    };
    request.encode_to_vec()
}

/// A `[64, 10]` f32 answer in typed `float_val`, as TF Serving encodes it by default.
fn response_bytes() -> Vec<u8> {
    let proto = TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: [64, 10]
                .map(|size| Dim {
                    size,
                    name: String::new(),
                })
                .to_vec(),
            unknown_rank: false,
        }),
        float_val: (0..640).map(|i| i as f32 / 640.0).collect(),
        ..Default::default()
    };
    PredictResponse {
        model_spec: None,
        outputs: [("probabilities".to_string(), proto)].into(),
    }
    .encode_to_vec()
}

/// `{"instances": [[784 floats], …]}` of about `size` bytes, each written by `spell`.
fn instances_body(size: usize, spell: impl Fn(f32) -> String) -> Vec<u8> {
    let row: Vec<String> = (0..784).map(|i| spell((i % 255) as f32 / 255.0)).collect();
    let row = format!("[{}]", row.join(","));
    let rows = (size / (row.len() + 1)).max(1);
    format!("{{\"instances\": [{}]}}", vec![row; rows].join(",")).into_bytes()
}

/// CPU time this thread has used (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu() -> Duration {
    cpu_time::ThreadTime::now().as_duration()
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn print(rows: &[Stats], allocator: infergate::plugin::Allocator) {
    println!(
        "plugin runtime: {allocator:?} allocator; one call at a time; cases interleaved in \
         {ROUNDS} rounds; targets judged on CPU p50s (the thread's CPU time, equal to wall time \
         on an idle machine): the best round's, and for wasm vs native the median of the \
         per-round ratios\n"
    );
    println!("| case | p50 µs | p99 µs | CPU p50 µs | best-round CPU p50 µs | MB/s at CPU p50 |");
    println!("|---|--:|--:|--:|--:|--:|");
    for r in rows {
        let rate = r.bytes.map_or("–".to_string(), |b| {
            format!("{:.0}", b as f64 / r.cpu_p50.as_secs_f64() / 1e6)
        });
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {rate} |",
            r.name,
            us(r.p50),
            us(r.p99),
            us(r.cpu_p50),
            us(r.cpu_best())
        );
    }
    println!();
    let get = |prefix: &str| rows.iter().find(|r| r.name.starts_with(prefix));
    if let Some(noop) = get("noop plugin") {
        println!(
            "target: noop plugin instantiate + call CPU p50 {:.1} µs best round, {:.1} µs all \
             rounds (<= {} µs): {}",
            us(noop.cpu_best()),
            us(noop.cpu_p50),
            TARGET_NOOP.as_micros(),
            verdict(noop.cpu_best() <= TARGET_NOOP)
        );
    }
    if let (Some(wasm), Some(reject), Some(native)) = (
        get("digits pre, wasm: instantiate + call"),
        get("digits pre, wasm: instantiate + reject"),
        get("digits pre, native"),
    ) {
        // Per round, then the median: the three cases of one round ran in the same phase.
        let median_ratio = |over: fn(&Stats, &Stats, usize) -> Duration| {
            let mut ratios: Vec<f64> = (0..native.rounds.len())
                .map(|r| over(wasm, reject, r).as_secs_f64() / native.rounds[r].as_secs_f64())
                .collect();
            ratios.sort_by(f64::total_cmp);
            ratios[ratios.len() / 2]
        };
        let work_ratio =
            median_ratio(|wasm, reject, r| wasm.rounds[r].saturating_sub(reject.rounds[r]));
        let call_ratio = median_ratio(|wasm, _, r| wasm.rounds[r]);
        let work = wasm.cpu_best().saturating_sub(reject.cpu_best());
        println!(
            "target: digits preprocessing in wasm {:.1} µs (call {:.1} − instantiate-and-reject \
             {:.1}, best rounds) vs native {:.1} µs; median over rounds of the same round's \
             ratio {work_ratio:.2}x (<= {TARGET_WASM_RATIO}x): {}; whole call / native = \
             {call_ratio:.2}x",
            us(work),
            us(wasm.cpu_best()),
            us(reject.cpu_best()),
            us(native.cpu_best()),
            verdict(work_ratio <= TARGET_WASM_RATIO)
        );
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "MISSED" }
}
