//! Load benchmark for cross-request batching: what coalescing concurrent requests into one
//! backend call buys when each call has a fixed cost, and what it costs a lone client.
//!
//! One gateway, in process, serves two routes to the same fake TF Serving model over real gRPC:
//! `on` (`max_batch_size = 64`, `batch_timeout_us = 2000`) and `off` (`max_batch_size = 1`),
//! both with `max_concurrent_batches = 2`. The fake charges a GPU-like cost per `Predict`: a
//! fixed cost per call plus a small cost per row. For each route and each concurrency
//! (1, 8, 64, 256), N client tasks loop request → response on kept-alive HTTP/1.1 connections,
//! each sending one row of REST JSON. The table gives throughput, p50, p99, errors and the mean
//! batch size the backend saw; then the two targets, computed from the same run:
//!
//! - c = 64: throughput with batching on ≥ 8× off;
//! - c = 1: p50 with batching on within `batch_timeout_us` of off.
//!
//! ```sh
//! cargo bench --bench batching                     # 3 s per row, c = 1, 8, 64, 256
//! cargo bench --bench batching -- --quick          # 1 s per row, c = 1 and 64
//! cargo bench --bench batching -- --call-cost-ms 10 --row-cost-us 50
//! ```
//!
//! Reading the numbers: clients, gateway and fake share one multi-threaded runtime, so the
//! `CPU cores` column says how close a row came to this machine's limit rather than the
//! batcher's. Tokio's timers tick in whole milliseconds and round up, so a 2 ms batch window
//! holds a lone request about 3 ms, and the fake's 5 ms cost takes about 6 ms.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use infergate::fake::{FakeBackend, FakeModel};
use infergate::tensor::{DType, Tensor};
use infergate::{Gateway, GatewayConfig};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// Row width of the model's input `x: f32 [-1, WIDTH]`.
const WIDTH: usize = 16;
/// The `on` route's batch window; the c = 1 target is measured against it.
const BATCH_TIMEOUT_US: u64 = 2000;
/// Throughput ratio (on / off) the c = 64 target asks for.
const TARGET_SPEEDUP: f64 = 8.0;

/// `model.toml` of the two routes; both front the same backend model.
fn model_toml(route: &str) -> String {
    let batching = match route {
        "on" => format!(
            "max_batch_size = 64\nbatch_timeout_us = {BATCH_TIMEOUT_US}\n\
             max_concurrent_batches = 2\nmax_enqueued = 4096\n"
        ),
        _ => "max_batch_size = 1\nmax_concurrent_batches = 2\n".to_string(),
    };
    format!("backend = \"tfs\"\nmodel = \"dense\"\n[batching]\n{batching}")
}

#[derive(Parser, Debug)]
#[command(
    about = "Cross-request batching under load: batching on vs off against a fake TF Serving"
)]
struct Args {
    /// Fixed cost of one backend call, in milliseconds (an accelerator's launch cost).
    #[arg(long, default_value_t = 5.0)]
    call_cost_ms: f64,
    /// Cost of each row in a backend call, in microseconds.
    #[arg(long, default_value_t = 20.0)]
    row_cost_us: f64,
    /// Measured seconds per row of the table (default 3, or 1 with --quick).
    #[arg(long)]
    secs: Option<f64>,
    /// A short smoke run: 1 s per row, concurrency 1 and 64 only.
    #[arg(long)]
    quick: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// How one table row is run.
struct Plan {
    concurrencies: Vec<usize>,
    warmup: Duration,
    measure: Duration,
}

impl Args {
    fn plan(&self) -> Plan {
        let (concurrencies, warmup, secs) = if self.quick {
            (vec![1, 64], Duration::from_millis(200), 1.0)
        } else {
            (vec![1, 8, 64, 256], Duration::from_millis(500), 3.0)
        };
        Plan {
            concurrencies,
            warmup,
            measure: Duration::from_secs_f64(self.secs.unwrap_or(secs)),
        }
    }

    fn costs(&self) -> (Duration, Duration) {
        (
            Duration::from_secs_f64(self.call_cost_ms / 1e3),
            Duration::from_secs_f64(self.row_cost_us / 1e6),
        )
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let plan = args.plan();
    let (call_cost, row_cost) = args.costs();
    let env = Env::start(call_cost, row_cost).await?;
    env.check("on").await?;
    env.check("off").await?;
    println!(
        "fake backend: {call_cost:?} per call + {row_cost:?} per row; \
         {:?} warm-up + {:?} measured per row; {} worker threads\n",
        plan.warmup,
        plan.measure,
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    );
    let mut rows = Vec::new();
    for route in ["on", "off"] {
        for &concurrency in &plan.concurrencies {
            let row = env.measure(route, concurrency, &plan).await;
            eprintln!("  done: {route} c={concurrency}");
            rows.push(row);
        }
    }
    print_table(&rows);
    print_targets(&rows);
    env.stop().await;
    Ok(())
}

/// The fake model: `y = 2x` over `x: f32 [-1, 16]`. Cheap on purpose, so the cost model
/// dominates.
fn dense() -> FakeModel {
    FakeModel::new("dense")
        .input("x", DType::F32, &[-1, WIDTH as i64])
        .output("y", DType::F32, &[-1, WIDTH as i64])
        .compute(|inputs| {
            let x = &inputs[0].1;
            let values = x
                .to_f32()
                .ok_or_else(|| tonic::Status::invalid_argument("x must be f32"))?;
            let y: Vec<f32> = values.iter().map(|v| v * 2.0).collect();
            let y = Tensor::from_f32(x.shape().to_vec(), &y)
                .map_err(|e| tonic::Status::internal(e.to_string()))?;
            Ok(vec![("y".into(), y)])
        })
}

/// The fake backend and the gateway in front of it, both on port 0.
struct Env {
    fake: FakeBackend,
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    gateway: tokio::task::JoinHandle<()>,
    // Held so the fake keeps serving and the config files outlive the gateway.
    _stop_fake: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start(call_cost: Duration, row_cost: Duration) -> anyhow::Result<Self> {
        let fake = FakeBackend::new([dense()]).cost(call_cost, row_cost);
        let (backend_url, stop_fake) = start_fake(fake.clone())?;
        let (dir, path) = write_config(&backend_url)?;
        let config = GatewayConfig::load(&path)?;
        // Loading may compile plugins, which blocks; keep it off the runtime's workers.
        let gateway = tokio::task::spawn_blocking(move || Gateway::load(config)).await??;
        let public = listen()?;
        let admin = listen()?;
        let url = format!("http://{}", public.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let gateway = tokio::spawn(infergate::run(Arc::new(gateway), public, admin, async {
            let _ = stopped.await;
        }));
        Ok(Self {
            fake,
            url,
            stop,
            gateway,
            _stop_fake: stop_fake,
            _dir: dir,
        })
    }

    /// One request through `route`, answer checked: proves the setup before timing it, and
    /// caches the model's signature so no timed request pays for the metadata lookup.
    async fn check(&self, route: &str) -> anyhow::Result<()> {
        let client = client();
        let body = instance(3);
        let (ok, reply) = post(&client, &self.predict_uri(route)?, body.clone()).await;
        let sent: serde_json::Value = serde_json::from_slice(&body)?;
        let doubled: Vec<f64> = sent["instances"][0]
            .as_array()
            .context("instances")?
            .iter()
            .filter_map(|v| v.as_f64().map(|v| v * 2.0))
            .collect();
        let expected = json!({ "predictions": [doubled] });
        let got: serde_json::Value = serde_json::from_slice(&reply)?;
        if !ok || got != expected {
            bail!("route `{route}` answered {got}, expected {expected}");
        }
        Ok(())
    }

    fn predict_uri(&self, route: &str) -> anyhow::Result<Uri> {
        Ok(format!("{}/v1/models/{route}:predict", self.url).parse()?)
    }

    /// Runs `concurrency` clients against `route` for the warm-up plus the measured window.
    async fn measure(&self, route: &str, concurrency: usize, plan: &Plan) -> Row {
        let uri = self.predict_uri(route).expect("a valid URI");
        let from = Instant::now() + plan.warmup;
        let until = from + plan.measure;
        let clients: Vec<_> = (0..concurrency)
            .map(|i| tokio::spawn(run_client(uri.clone(), instance(i), from, until)))
            .collect();
        // The backend's calls over exactly the measured window give the mean batch size.
        tokio::time::sleep_until(from).await;
        let calls_before = self.fake.calls().len();
        let cpu_before = process_cpu();
        tokio::time::sleep_until(until).await;
        let calls = self.fake.calls()[calls_before..].to_vec();
        let cpu = cpu_before
            .zip(process_cpu())
            .map(|(before, after)| (after - before).as_secs_f64() / plan.measure.as_secs_f64());
        let mut tally = Tally::default();
        for client in clients {
            // A client task only ends by finishing its loop; a panic is a bench bug.
            tally.merge(client.await.expect("client task"));
        }
        Row::new(route, concurrency, plan.measure, tally, &calls, cpu)
    }

    /// Stops the gateway and waits for it to drain; the fake stops when dropped.
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.gateway.await;
    }
}

/// A loopback listener on a free port with TCP_NODELAY set (Linux passes it on to every
/// accepted connection) and a backlog of 1024.
///
/// `TcpListener::bind` listens with a backlog of 128 and `FakeBackend::start` leaves Nagle
/// on, and both show up in the numbers as kernel timers, not batching: 256 clients
/// connecting at once overflow 128 and the dropped ones retry a second later; and Nagle on
/// the fake's side holds a batch's gRPC response behind the gateway's delayed ACK (~40 ms),
/// which real TF Serving (gRPC sets TCP_NODELAY) doesn't do.
fn listen() -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_nodelay(true)?;
    socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
    socket.listen(1024)
}

/// Serves `fake` on [`listen`]; returns its URL and the sender whose drop stops it.
fn start_fake(fake: FakeBackend) -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let listener = listen()?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(fake.serve(listener, async move {
        let _ = stopped.await;
    }));
    Ok((format!("http://{addr}"), stop))
}

/// A `gateway.toml` plus `plugins/on` and `plugins/off`, in a temp dir.
fn write_config(backend_url: &str) -> anyhow::Result<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = tempfile::tempdir()?;
    // A long backend timeout: the `off` route at c = 256 queues for hundreds of ms by design,
    // and a timeout there would measure the limit, not the batcher.
    let gateway = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [plugins]\ndir = \"plugins\"\n\
         [backends.tfs]\nkind = \"tfserving\"\nendpoints = [\"{backend_url}\"]\ntimeout_ms = 30000\n"
    );
    for route in ["on", "off"] {
        let folder = dir.path().join("plugins").join(route);
        std::fs::create_dir_all(&folder)?;
        std::fs::write(folder.join("model.toml"), model_toml(route))?;
    }
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, gateway)?;
    Ok((dir, path))
}

/// One row of REST JSON, distinct per client so a mixed-up split would show in `check`.
fn instance(client: usize) -> Bytes {
    let row: Vec<f32> = (0..WIDTH)
        .map(|j| (client * WIDTH + j) as f32 * 0.25)
        .collect();
    Bytes::from(json!({ "instances": [row] }).to_string())
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A client that keeps one idle connection: each task sends one request at a time, so it
/// reuses a single kept-alive HTTP/1.1 connection, as a real client pool would per caller.
fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    // Without it Nagle may hold a request's last segment for the server's delayed ACK, and
    // the bench would measure the kernel's timers instead of the gateway.
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(connector)
}

/// POSTs `body`; whether the answer was a 200, and its body (empty on a transport error).
async fn post(client: &HttpClient, uri: &Uri, body: Bytes) -> (bool, Bytes) {
    let request = Request::post(uri.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .expect("a valid request");
    let Ok(response) = client.request(request).await else {
        return (false, Bytes::new());
    };
    let ok = response.status().is_success();
    // Read the whole body: the connection goes back to the pool only once it is drained.
    match response.into_body().collect().await {
        Ok(body) => (ok, body.to_bytes()),
        Err(_) => (false, Bytes::new()),
    }
}

/// What the clients saw in the measured window.
#[derive(Default)]
struct Tally {
    /// Successful requests that finished in the window.
    completed: usize,
    /// Latencies of those that were also sent in it.
    latencies: Vec<Duration>,
    errors: usize,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.completed += other.completed;
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
    }
}

/// Loops request → response until `until`, tallying requests that finish inside
/// [`from`, `until`]. Latency is taken only from requests also sent after `from`: a client's
/// first requests wait for their connection and for the queue to reach its steady state.
async fn run_client(uri: Uri, body: Bytes, from: Instant, until: Instant) -> Tally {
    let client = client();
    let mut tally = Tally::default();
    while Instant::now() < until {
        let started = Instant::now();
        let (ok, _) = post(&client, &uri, body.clone()).await;
        let finished = Instant::now();
        if finished < from || finished > until {
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

/// One line of the results table.
struct Row {
    route: String,
    concurrency: usize,
    throughput: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
    mean_batch: f64,
    /// Cores this process kept busy (clients, gateway and fake together), where known.
    cpu: Option<f64>,
}

impl Row {
    fn new(
        route: &str,
        concurrency: usize,
        window: Duration,
        mut tally: Tally,
        calls: &[infergate::fake::FakeCall],
        cpu: Option<f64>,
    ) -> Self {
        tally.latencies.sort();
        let rows: usize = calls.iter().map(|c| c.rows).sum();
        Row {
            route: route.to_string(),
            concurrency,
            throughput: tally.completed as f64 / window.as_secs_f64(),
            p50: percentile(&tally.latencies, 0.50),
            p99: percentile(&tally.latencies, 0.99),
            errors: tally.errors,
            mean_batch: rows as f64 / calls.len().max(1) as f64,
            cpu,
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

/// CPU time (user + system) this process has used so far, from `/proc/self/stat` on Linux.
/// It tells a row limited by the batcher from one limited by this machine's cores.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th,
    // in clock ticks of 1/100 s (USER_HZ on every Linux platform we run on).
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn print_table(rows: &[Row]) {
    println!(
        "| route | concurrency | requests/s | p50 ms | p99 ms | errors | mean batch | CPU cores |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|");
    for r in rows {
        let cpu = r.cpu.map_or("n/a".to_string(), |c| format!("{c:.2}"));
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {:.1} | {cpu} |",
            r.route,
            r.concurrency,
            r.throughput,
            ms(r.p50),
            ms(r.p99),
            r.errors,
            r.mean_batch
        );
    }
    println!();
}

/// The issue's two targets, from the rows above; a target whose rows weren't run is skipped.
fn print_targets(rows: &[Row]) {
    let find = |route: &str, c: usize| rows.iter().find(|r| r.route == route && r.concurrency == c);
    if let (Some(on), Some(off)) = (find("on", 64), find("off", 64)) {
        let speedup = on.throughput / off.throughput.max(f64::MIN_POSITIVE);
        println!(
            "c=64 throughput on/off: {speedup:.1}x (target >= {TARGET_SPEEDUP}x) {}",
            verdict(speedup >= TARGET_SPEEDUP)
        );
    }
    if let (Some(on), Some(off)) = (find("on", 1), find("off", 1)) {
        let extra_us = (ms(on.p50) - ms(off.p50)) * 1e3;
        println!(
            "c=1 p50 on - off: {extra_us:.0} us (target <= batch_timeout_us = {BATCH_TIMEOUT_US} us) {}",
            verdict(extra_us <= BATCH_TIMEOUT_US as f64)
        );
    }
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}
