//! infergate against the architecture it replaces and against the limit, in one run, on one
//! fake TF Serving (loopback gRPC, a fixed cost per call plus a cost per row):
//!
//! 1. `infergate` — the gateway binary with the example digits plugins (PNG decode + resize +
//!    normalize pre, top-k post), batching on;
//! 2. `tornado xN` — `bench/tornado_app.py`: the same pre/post in Python (Pillow + numpy),
//!    grpc.aio with the official tensorflow-serving-api stubs, N pre-forked processes;
//! 3. `direct gRPC` — this process sending the prepared tensor straight to the backend: no
//!    HTTP, no plugins, the limit;
//! 4. `infergate rest` — the gateway as a pass-through: no plugins, REST JSON in and out;
//! 5. `infergate gRPC` — the same pass-through gateway called with setup 3's gRPC Predict
//!    (TF Serving's API on the gateway's port), so 5 / 3 is the gateway's cost on gRPC;
//! 6. `infergate v2` — the same gateway over the Open Inference Protocol's REST infer, with
//!    JSON `data` and with the binary tensor extension.
//!
//! Plus sanity rows of setup 1 on real TensorFlow (`scripts/tf_server.py`, `--real-tf`).
//! Each server is a child process; each row is a fixed window at one concurrency, after a
//! warm-up. Columns: throughput, p50/p99 (HDR histograms), CPU time per request of the
//! server's processes (all of them for Tornado), of the fake backend and of this load
//! generator, and the server's peak RSS (VmHWM, reset before each row, summed over its
//! processes). The targets in BENCHMARKS.md are computed from the same run.
//!
//! ```sh
//! bench/run                 # builds everything, runs this and bench/micro.rs
//! cargo bench --bench compare -- --smoke
//! ```
//!
//! All processes share this machine's cores, load generator included: the client CPU column
//! says what the load itself cost.

#[path = "compare/backend.rs"]
mod backend;
#[path = "compare/load.rs"]
mod load;
#[path = "compare/procs.rs"]
mod procs;
#[path = "compare/report.rs"]
mod report;
#[path = "compare/setups.rs"]
mod setups;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    about = "infergate vs Tornado + grpc.aio vs a direct gRPC client, on one fake TF Serving"
)]
pub struct Args {
    /// A ~30 s smoke run: 1 s rows, c = 1 and 64, one Tornado variant, no real TensorFlow.
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
    /// Only these setups (1-6), e.g. `--only 1,3`.
    #[arg(long, value_delimiter = ',')]
    only: Vec<u8>,
    /// The gateway binary (default: `infergate` beside this bench's build directory).
    #[arg(long)]
    infergate: Option<PathBuf>,
    /// Python with tensorflow-serving-api, grpcio, Pillow and numpy (scripts/venv.sh).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Extra PYTHONPATH for Tornado (bench/run installs it there).
    #[arg(long)]
    pythonpath: Option<PathBuf>,
    /// Internal: serve the fake backend (the bench starts itself with it).
    #[arg(long, hide = true)]
    serve_fake: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// How each row is run.
pub struct Plan {
    pub concurrencies: Vec<usize>,
    pub warmup: Duration,
    pub measure: Duration,
    pub tornado_procs: Vec<usize>,
}

impl Args {
    fn plan(&self) -> Plan {
        let pick = |given: &[usize], full: &[usize], smoke: &[usize]| match () {
            _ if !given.is_empty() => given.to_vec(),
            _ if self.smoke => smoke.to_vec(),
            _ => full.to_vec(),
        };
        Plan {
            concurrencies: pick(&self.concurrency, &[1, 16, 64], &[1, 64]),
            warmup: Duration::from_secs_f64(if self.smoke { 0.3 } else { 1.0 }),
            measure: Duration::from_secs_f64(self.secs.unwrap_or(if self.smoke {
                1.0
            } else {
                4.0
            })),
            tornado_procs: pick(&self.tornado_procs, &[1, 2], &[2]),
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
    runtime.block_on(setups::run_all(args))
}
