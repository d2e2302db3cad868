//! infergate against the architecture it replaces, against the servers users would pick
//! instead, and against the limit, in one run, on one fake TF Serving (its own process,
//! loopback gRPC, a fixed cost per call plus a cost per row):
//!
//! 1. `infergate` — the gateway binary with the example digits plugins (PNG decode + resize +
//!    normalize pre, top-k post), batching on;
//! 2. `tornado xN` — `bench/tornado_app.py`: the same pre/post in Python (Pillow + numpy),
//!    grpc.aio, N pre-forked processes;
//! 3. `direct gRPC` — this process sending the prepared tensor straight to the backend: no
//!    HTTP, no plugins, the limit;
//! 4. `infergate rest` — the gateway as a pass-through: no plugins, REST JSON in and out;
//! 5. `infergate gRPC` — the same pass-through gateway called with setup 3's gRPC Predict
//!    (TF Serving's API on the gateway's port), so 5 / 3 is the gateway's cost on gRPC;
//! 6. `infergate v2` — the same gateway over the Open Inference Protocol's REST infer, with
//!    JSON `data` and with the binary tensor extension;
//! 7. `mosec` — `bench/mosec_app.py`: mosec's Rust front, Python pre/inference/post workers,
//!    dynamic batching in front of the gRPC call;
//! 8. `triton` — `bench/triton_app.py`: Triton Inference Server (PyPI's nvidia-pytriton) with
//!    a Python model behind Triton's dynamic batcher.
//!
//! Plus sanity rows of setup 1 on the embedded ONNX backend and on real TensorFlow
//! (`scripts/tf_server.py`, `--real-tf`). Each server is a child process; each row is a fixed
//! window at one concurrency after a warm-up, the HTTP rows driven by `wrk` (a separate
//! process: the load costs what a lean C client costs, and its CPU is its own). Columns:
//! throughput, p50/p99, CPU time per request of the server's processes (the whole process
//! tree for the Python servers), of the fake backend and of the load generator, the server's
//! peak RSS (VmHWM, reset before each row, summed over its processes), and how much of the
//! machine other processes took meanwhile. The ratios and issue 16's targets in
//! BENCHMARKS.md are computed from the same run.
//!
//! ```sh
//! bench/run                 # builds everything, runs this and bench/micro.rs
//! cargo bench --bench compare -- --smoke
//! ```

#[path = "compare/backend.rs"]
mod backend;
#[path = "compare/load.rs"]
mod load;
#[path = "compare/procs.rs"]
mod procs;
#[path = "compare/profile.rs"]
mod profile;
#[path = "compare/report.rs"]
mod report;
#[path = "compare/servers.rs"]
mod servers;
#[path = "compare/setups.rs"]
mod setups;
#[path = "compare/wrk.rs"]
mod wrk;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    about = "infergate vs Tornado, mosec, Triton and a direct gRPC client, on one fake TF Serving"
)]
pub struct Args {
    /// A short smoke run: 1 s rows, c = 1 and 64, one Tornado variant, no ONNX or real
    /// TensorFlow rows, no repeated c = 1 runs.
    #[arg(long)]
    smoke: bool,
    /// Measured seconds per row (default 4; 1 with --smoke).
    #[arg(long)]
    secs: Option<f64>,
    /// Concurrencies (default 1,16,64; 1,64 with --smoke).
    #[arg(long, value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Fixed cost of one backend call, µs.
    #[arg(long, default_value_t = 1000)]
    call_cost_us: u64,
    /// Cost of each row of a backend call, µs.
    #[arg(long, default_value_t = 10)]
    row_cost_us: u64,
    /// Tornado worker process counts to run (default 1,2; 2 with --smoke).
    #[arg(long, value_delimiter = ',')]
    tornado_procs: Vec<usize>,
    /// Also run setup 1 against real TensorFlow (scripts/tf_server.py).
    #[arg(long)]
    real_tf: bool,
    /// Only these setups (1-8), e.g. `--only 1,3`.
    #[arg(long, value_delimiter = ',')]
    only: Vec<u8>,
    /// Pairs of c = 1 rows (direct gRPC, then infergate) for target 3, which asks for 5 of 5
    /// (default 5; 0 with --smoke).
    #[arg(long)]
    c1_runs: Option<usize>,
    /// The HTTP load generator: `wrk` (a separate process) or `hyper` (this process's HDR
    /// harness, as before wrk).
    #[arg(long, default_value = "wrk")]
    load: LoadGen,
    /// The wrk binary.
    #[arg(long, default_value = "wrk")]
    wrk: PathBuf,
    /// `server.workers` for the gateway rows (default: unset, the work-stealing runtime).
    #[arg(long)]
    workers: Option<usize>,
    /// The digits model's `limits.max_running_calls` (default: the gateway's, half the CPUs;
    /// a gateway serving one model is told to raise it to the CPU count).
    #[arg(long)]
    running_calls: Option<u32>,
    /// The digits model's `[reuse] max_calls`: warm instances, each serving up to this many
    /// calls (default: off, a fresh instance per call), to price the fresh-state guarantee.
    #[arg(long)]
    reuse: Option<u32>,
    /// The gateway binary (default: `infergate` beside this bench's build directory).
    #[arg(long)]
    infergate: Option<PathBuf>,
    /// Python for the peers (setups 2, 7, 8): the bench venv of bench/requirements.txt
    /// (bench/run makes it).
    #[arg(long)]
    python: Option<PathBuf>,
    /// PYTHONPATH for the peers: the TF Serving stubs bench/run compiles from proto/.
    #[arg(long)]
    pythonpath: Option<PathBuf>,
    /// Python with TensorFlow for the real-TF rows (scripts/venv.sh).
    #[arg(long)]
    tf_python: Option<PathBuf>,
    /// Profile the gateway instead of comparing: setups 1 and 4 at the last `--concurrency`
    /// (64), recorded into `--profile-out` (bench/profile renders the reports).
    #[arg(long)]
    profile: Option<profile::Profiler>,
    /// Where `--profile` writes.
    #[arg(long, default_value = "target/profile")]
    profile_out: PathBuf,
    /// Internal: serve the fake backend (the bench starts itself with it).
    #[arg(long, hide = true)]
    serve_fake: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LoadGen {
    Wrk,
    Hyper,
}

/// How each row is run.
pub struct Plan {
    pub concurrencies: Vec<usize>,
    pub warmup: Duration,
    pub measure: Duration,
    pub tornado_procs: Vec<usize>,
    pub c1_runs: usize,
    /// The wrk binary, when wrk drives the HTTP rows.
    pub wrk: Option<PathBuf>,
}

impl Args {
    fn tuning(&self) -> servers::Tuning {
        servers::Tuning {
            workers: self.workers,
            running_calls: self.running_calls,
            reuse: self.reuse,
        }
    }

    fn plan(&self) -> Plan {
        let pick = |given: &[usize], full: &[usize], smoke: &[usize]| match () {
            _ if !given.is_empty() => given.to_vec(),
            _ if self.smoke => smoke.to_vec(),
            _ => full.to_vec(),
        };
        Plan {
            concurrencies: pick(&self.concurrency, &[1, 16, 64], &[1, 64]),
            // wrk runs whole seconds.
            warmup: Duration::from_secs(1),
            measure: Duration::from_secs_f64(self.secs.unwrap_or(if self.smoke {
                1.0
            } else {
                4.0
            })),
            tornado_procs: pick(&self.tornado_procs, &[1, 2], &[2]),
            c1_runs: self.c1_runs.unwrap_or(if self.smoke { 0 } else { 5 }),
            wrk: match self.load {
                LoadGen::Wrk => Some(self.wrk.clone()),
                LoadGen::Hyper => None,
            },
        }
    }

    fn runs(&self, setup: u8) -> bool {
        self.only.is_empty() || self.only.contains(&setup)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.serve_fake {
        return backend::serve(
            Duration::from_micros(args.call_cost_us),
            Duration::from_micros(args.row_cost_us),
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.profile {
        Some(profiler) => runtime.block_on(profile::run(&args, profiler, &args.profile_out)),
        None => runtime.block_on(setups::run_all(args)),
    }
}
