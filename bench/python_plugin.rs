//! The digits example with its plugin in Python (plugins/digits-py, componentize-py) vs in
//! Rust (plugins/digits), same run, same gateway, same model.
//!
//! One `infergate serve` process (this package's release binary) serves two routes on the
//! embedded `onnx` backend with the same model file: `rust` and `python`. For each
//! concurrency (1, then 16) and each route in turn, N client tasks loop request → response on
//! kept-alive HTTP/1.1 connections posting `examples/images/digit-7-0.png` (28x28, so no
//! resize). The table gives throughput, p50, p99 and the gateway process's minor page faults
//! per request (copy-on-write faults on fresh instances' memory); then, from the gateway's
//! own metrics, the mean time per call of each pipeline stage and of creating the plugin
//! instance, which is where a CPython guest's cost goes. `--plugin NAME=PATH` adds a route,
//! to compare two builds of a plugin in one run; `--reuse N` adds, for every route, a twin
//! `<route>-reuse` whose model.toml opts into `[reuse] max_calls = N` (warm instances).
//!
//! ```sh
//! scripts/build-plugins.sh --examples      # both plugins
//! cargo bench --bench python_plugin               # 3 s per row
//! cargo bench --bench python_plugin -- --quick    # 1 s per row
//! ```
//!
//! Clients and gateway share this machine's cores: the numbers compare the two plugins on one
//! machine, not either one's ceiling. The gateway runs as a child process (its CLI is the
//! interface benchmarked), killed when the bench ends.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

const IMAGE: &str = "examples/images/digit-7-0.png";
/// Route name → the plugin it serves, relative to the repository.
const ROUTES: [(&str, &str); 2] = [
    ("rust", "plugins/digits/plugin.wasm"),
    ("python", "plugins/digits-py/plugin.wasm"),
];

#[derive(Parser, Debug)]
#[command(about = "The digits plugin in Python vs in Rust, through one gateway")]
struct Args {
    /// Measured seconds per row (default 3, or 1 with --quick).
    #[arg(long)]
    secs: Option<f64>,
    /// A short smoke run: 1 s per row.
    #[arg(long)]
    quick: bool,
    /// Client concurrencies, in order (default 1,16).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16])]
    concurrency: Vec<usize>,
    /// Another route to time beside them, `NAME=PATH` to a digits plugin (e.g. a variant
    /// build, to compare two builds in one run); may repeat.
    #[arg(long = "plugin", value_parser = parse_route)]
    extra: Vec<(String, PathBuf)>,
    /// Also time every route with `[reuse] max_calls = N`, as a twin route `<route>-reuse`.
    #[arg(long)]
    reuse: Option<u32>,
    /// A `[limits]` table for every route's model.toml, e.g. `max_running_calls = 2` (lines
    /// separated by `;`), so a comparison can give each route the same share of the cores.
    #[arg(long)]
    limits: Option<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn parse_route(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s.split_once('=').ok_or("expected NAME=PATH")?;
    Ok((name.to_string(), PathBuf::from(path)))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let measure = Duration::from_secs_f64(args.secs.unwrap_or(if args.quick { 1.0 } else { 3.0 }));
    let warmup = Duration::from_millis(if args.quick { 300 } else { 800 });
    let mut routes: Vec<(String, PathBuf)> = ROUTES
        .iter()
        .map(|&(name, path)| (name.to_string(), root.join(path)))
        .collect();
    routes.extend(args.extra.iter().cloned());
    if args.reuse.is_some() {
        let twins: Vec<_> = routes
            .iter()
            .map(|(name, path)| (format!("{name}-reuse"), path.clone()))
            .collect();
        routes.extend(twins);
    }
    let gateway = Gateway::start(&root, &routes, args.reuse, args.limits.as_deref())?;
    let body = Bytes::from(std::fs::read(root.join(IMAGE))?);
    for (route, _) in &routes {
        gateway.check(route, &body).await?;
    }
    println!(
        "{IMAGE} through the digits plugin, Rust vs Python (onnx backend, in process); \
         {warmup:?} warm-up + {measure:?} measured per row; {} cores\n",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    );
    let mut rows = Vec::new();
    for &concurrency in &args.concurrency {
        for (route, _) in &routes {
            let uri = gateway.predict_uri(route)?;
            let from = Instant::now() + warmup;
            let until = from + measure;
            let faults_before = gateway.minor_faults();
            let clients: Vec<_> = (0..concurrency)
                .map(|_| tokio::spawn(run_client(uri.clone(), body.clone(), from, until)))
                .collect();
            let mut tally = Tally::default();
            for client in clients {
                tally.merge(client.await.context("client task")?);
            }
            eprintln!("  done: {route} c={concurrency}");
            // Warm-up requests fault too; spread over every request the row sent.
            let sent = tally.completed + tally.warmup;
            let faults = gateway.minor_faults().saturating_sub(faults_before) as f64;
            let mut row = Row::new(route.clone(), concurrency, measure, tally);
            row.faults_per_request = if sent > 0 { faults / sent as f64 } else { 0.0 };
            rows.push(row);
        }
    }
    print_table(&rows);
    print_stages(&gateway.metrics().await?);
    Ok(())
}

/// `infergate serve` on port 0 over a temp plugins dir; killed when dropped.
struct Gateway {
    child: Child,
    url: String,
    admin: String,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Routes named `…-reuse` get `[reuse] max_calls = reuse`.
    fn start(
        root: &Path,
        routes: &[(String, PathBuf)],
        reuse: Option<u32>,
        limits: Option<&str>,
    ) -> anyhow::Result<Self> {
        let limits = limits.map_or(String::new(), |l| {
            format!("[limits]\n{}\n", l.replace(';', "\n"))
        });
        let model = root.join("plugins/digits/model.onnx");
        let dir = tempfile::tempdir()?;
        for (route, plugin) in routes {
            if !plugin.is_file() {
                bail!(
                    "{} is missing: run scripts/build-plugins.sh --examples",
                    plugin.display()
                );
            }
            let folder = dir.path().join("plugins").join(route);
            std::fs::create_dir_all(&folder)?;
            let reuse = match reuse {
                Some(n) if route.ends_with("-reuse") => format!("[reuse]\nmax_calls = {n}\n"),
                _ => String::new(),
            };
            std::fs::write(
                folder.join("model.toml"),
                format!(
                    "backend = \"local\"\nmodel = \"digits\"\nmodel_file = \"model.onnx\"\n\
                     plugin = \"plugin.wasm\"\n{limits}{reuse}"
                ),
            )?;
            // A model folder names only its own files: copy them in.
            std::fs::copy(plugin, folder.join("plugin.wasm"))?;
            std::fs::copy(&model, folder.join("model.onnx"))?;
        }
        let config = dir.path().join("gateway.toml");
        std::fs::write(
            &config,
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             [plugins]\ndir = \"plugins\"\n[backends.local]\nkind = \"onnx\"\n",
        )?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_infergate"))
            .args(["serve", "--config"])
            .arg(&config)
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting infergate serve")?;
        let stdout = child.stdout.take().context("gateway stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut found = BTreeMap::new();
        while found.len() < 2 {
            let Some(line) = lines.next() else {
                bail!("infergate serve exited before printing its addresses");
            };
            let line = line?;
            for key in ["listening on ", "admin on "] {
                if let Some(at) = line.find(key) {
                    found.insert(key, line[at + key.len()..].trim().to_string());
                }
            }
        }
        // Keep draining stdout so the gateway never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Self {
            child,
            url: found["listening on "].clone(),
            admin: found["admin on "].clone(),
            _dir: dir,
        })
    }

    /// One request through `route`, answer checked (a 7), before anything is timed.
    async fn check(&self, route: &str, body: &Bytes) -> anyhow::Result<()> {
        let (ok, reply) = post(&client(), &self.predict_uri(route)?, body.clone()).await;
        let got: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
        if !ok || got["predictions"][0]["label"] != "7" {
            bail!("route `{route}` answered {got}, expected label 7 first");
        }
        Ok(())
    }

    fn predict_uri(&self, route: &str) -> anyhow::Result<Uri> {
        Ok(format!("{}/v1/models/{route}:predict", self.url).parse()?)
    }

    /// The gateway process's minor page faults so far (Linux; 0 elsewhere): mostly
    /// copy-on-write faults on fresh plugin instances' memory images.
    fn minor_faults(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the parenthesized command name: state is field 3, minflt field 10.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(7))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    async fn metrics(&self) -> anyhow::Result<String> {
        let uri: Uri = format!("{}/metrics", self.admin).parse()?;
        let response = Client::builder(TokioExecutor::new())
            .build::<_, Full<Bytes>>(HttpConnector::new())
            .get(uri)
            .await?;
        let body = response.into_body().collect().await?.to_bytes();
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One kept-alive connection per client task, Nagle off (see bench/batching.rs).
fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(connector)
}

/// POSTs `body`; whether the answer was a 200, and its body (empty on a transport error).
async fn post(client: &HttpClient, uri: &Uri, body: Bytes) -> (bool, Bytes) {
    let request = Request::post(uri.clone())
        .header(header::CONTENT_TYPE, "image/png")
        .body(Full::new(body))
        .expect("a valid request");
    let Ok(response) = client.request(request).await else {
        return (false, Bytes::new());
    };
    let ok = response.status().is_success();
    match response.into_body().collect().await {
        Ok(body) => (ok, body.to_bytes()),
        Err(_) => (false, Bytes::new()),
    }
}

#[derive(Default)]
struct Tally {
    completed: usize,
    /// Requests that finished before the measured window (warm-up).
    warmup: usize,
    latencies: Vec<Duration>,
    errors: usize,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.completed += other.completed;
        self.warmup += other.warmup;
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
    }
}

/// Loops request → response until `until`, counting what finishes inside [`from`, `until`]
/// (latency only for requests also sent after `from`).
async fn run_client(uri: Uri, body: Bytes, from: Instant, until: Instant) -> Tally {
    let client = client();
    let mut tally = Tally::default();
    while Instant::now() < until {
        let started = Instant::now();
        let (ok, _) = post(&client, &uri, body.clone()).await;
        let finished = Instant::now();
        if finished < from {
            tally.warmup += 1;
            continue;
        }
        if finished > until {
            continue;
        }
        if !ok {
            tally.errors += 1;
            continue;
        }
        tally.completed += 1;
        if started >= from {
            tally.latencies.push(finished - started);
        }
    }
    tally
}

struct Row {
    route: String,
    concurrency: usize,
    throughput: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
    faults_per_request: f64,
}

impl Row {
    fn new(route: String, concurrency: usize, window: Duration, mut tally: Tally) -> Self {
        tally.latencies.sort();
        Row {
            route,
            concurrency,
            throughput: tally.completed as f64 / window.as_secs_f64(),
            p50: percentile(&tally.latencies, 0.50),
            p99: percentile(&tally.latencies, 0.99),
            errors: tally.errors,
            faults_per_request: 0.0,
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn print_table(rows: &[Row]) {
    println!(
        "| plugin | concurrency | requests/s | p50 ms | p99 ms | errors | vs rust | page faults / request |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|");
    for r in rows {
        let rust = rows
            .iter()
            .find(|o| o.route == "rust" && o.concurrency == r.concurrency)
            .map_or(0.0, |o| o.throughput);
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {:.2}x | {:.0} |",
            r.route,
            r.concurrency,
            r.throughput,
            ms(r.p50),
            ms(r.p99),
            r.errors,
            if rust > 0.0 { r.throughput / rust } else { 0.0 },
            r.faults_per_request,
        );
    }
    println!();
}

/// Mean seconds per observation of each `<metric>_sum` / `<metric>_count` pair whose labels
/// name a model, from the Prometheus text: (metric, labels) → (mean, count).
fn means(text: &str, metric: &str) -> BTreeMap<String, (f64, f64)> {
    let mut sums: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        for (suffix, slot) in [("_sum{", 0), ("_count{", 1)] {
            let Some(rest) = line.strip_prefix(&format!("{metric}{suffix}")) else {
                continue;
            };
            let Some((labels, value)) = rest.split_once("} ") else {
                continue;
            };
            let value: f64 = value.trim().parse().unwrap_or(0.0);
            let entry = sums.entry(labels.to_string()).or_default();
            if slot == 0 {
                entry.0 = value;
            } else {
                entry.1 = value;
            }
        }
    }
    sums.into_iter()
        .filter(|(_, (_, n))| *n > 0.0)
        .map(|(k, (sum, n))| (k, (sum / n, n)))
        .collect()
}

fn print_stages(metrics: &str) {
    println!("Where the time goes, whole run (gateway metrics: mean per call):\n");
    println!("| metric | labels | mean ms | calls |");
    println!("|---|---|--:|--:|");
    for metric in [
        "infergate_stage_duration_seconds",
        "infergate_plugin_instantiate_duration_seconds",
        "infergate_request_duration_seconds",
    ] {
        for (labels, (mean, n)) in means(metrics, metric) {
            println!("| {metric} | {labels} | {:.3} | {n:.0} |", mean * 1e3);
        }
    }
    println!();
}
