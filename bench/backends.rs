//! The example through both backends, same run: the digits plugin and model behind the
//! embedded `onnx` backend (tract, in process) vs behind `tfserving` (gRPC to
//! `scripts/tf_server.py`, real TensorFlow 2.21 on the same weights).
//!
//! One gateway, in process, serves two routes with default batching: `onnx` and `tfserving`.
//! For each route and each concurrency (1, 8), N client tasks loop request → response on
//! kept-alive HTTP/1.1 connections, each posting `examples/images/digit-7-0.png`. The table
//! gives throughput, p50, p99 and errors.
//!
//! ```sh
//! cargo bench --bench backends               # 3 s per row
//! cargo bench --bench backends -- --quick    # 1 s per row
//! ```
//!
//! Needs the Python venv of the end-to-end suite (`scripts/venv.sh`; `INFERGATE_VENV` picks
//! another) and the built plugin (`scripts/build-plugins.sh`). Clients, gateway and the
//! TensorFlow server share this machine's cores: the numbers compare the two backends on one
//! machine, not either one's ceiling.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
use infergate::{Gateway, GatewayConfig};
use tokio::net::TcpListener;
use tokio::time::Instant;

const IMAGE: &str = "examples/images/digit-7-0.png";
const ROUTES: [&str; 2] = ["onnx", "tfserving"];

#[derive(Parser, Debug)]
#[command(about = "The digits example through the embedded onnx backend vs TF Serving")]
struct Args {
    /// Measured seconds per row of the table (default 3, or 1 with --quick).
    #[arg(long)]
    secs: Option<f64>,
    /// A short smoke run: 1 s per row.
    #[arg(long)]
    quick: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let measure = Duration::from_secs_f64(args.secs.unwrap_or(if args.quick { 1.0 } else { 3.0 }));
    let warmup = Duration::from_millis(if args.quick { 200 } else { 500 });
    let tf = TfServer::start(&root)?;
    let env = Env::start(&root, &tf.endpoint).await?;
    let body = Bytes::from(std::fs::read(root.join(IMAGE))?);
    for route in ROUTES {
        env.check(route, &body).await?;
    }
    println!(
        "{IMAGE} through the digits plugin; {warmup:?} warm-up + {measure:?} measured per row; \
         {} cores\n",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    );
    let mut rows = Vec::new();
    for concurrency in [1, 8] {
        for route in ROUTES {
            let uri = env.predict_uri(route)?;
            let from = Instant::now() + warmup;
            let until = from + measure;
            let clients: Vec<_> = (0..concurrency)
                .map(|_| tokio::spawn(run_client(uri.clone(), body.clone(), from, until)))
                .collect();
            let mut tally = Tally::default();
            for client in clients {
                tally.merge(client.await.expect("client task"));
            }
            eprintln!("  done: {route} c={concurrency}");
            rows.push(Row::new(route, concurrency, measure, tally));
        }
    }
    print_table(&rows);
    env.stop().await;
    drop(tf);
    Ok(())
}

/// `scripts/tf_server.py` on a free port, stopped when dropped.
struct TfServer {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl TfServer {
    fn start(root: &Path) -> anyhow::Result<Self> {
        let venv = std::env::var_os("INFERGATE_VENV").map_or_else(
            || {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/infergate/venv")
            },
            PathBuf::from,
        );
        let python = venv.join("bin/python");
        if !python.is_file() {
            bail!("no Python venv at {} (run scripts/venv.sh)", venv.display());
        }
        let dir = tempfile::tempdir()?;
        let port_file = dir.path().join("port");
        let child = Command::new(python)
            .current_dir(root)
            .env("TF_CPP_MIN_LOG_LEVEL", "2")
            .args([
                "scripts/tf_server.py",
                "--port",
                "0",
                "--model",
                "digits=models/digits",
            ])
            .arg("--port-file")
            .arg(&port_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting scripts/tf_server.py")?;
        let mut server = Self {
            child,
            endpoint: String::new(),
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|p| p.trim().parse::<u16>().ok())
            {
                server.endpoint = format!("http://127.0.0.1:{port}");
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("scripts/tf_server.py exited ({status})");
            }
            if std::time::Instant::now() > deadline {
                bail!("scripts/tf_server.py did not start within 180 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for TfServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Env {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    gateway: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start(root: &Path, tf_endpoint: &str) -> anyhow::Result<Self> {
        let plugin = root.join("plugins/digits/plugin.wasm");
        let model = root.join("plugins/digits/model.onnx");
        if !plugin.is_file() {
            bail!(
                "{} is missing: run scripts/build-plugins.sh",
                plugin.display()
            );
        }
        let dir = tempfile::tempdir()?;
        let gateway = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             [plugins]\ndir = \"plugins\"\n\
             [backends.tfs]\nkind = \"tfserving\"\nendpoints = [\"{tf_endpoint}\"]\n\
             [backends.local]\nkind = \"onnx\"\n"
        );
        let routes = [
            (
                "onnx",
                "backend = \"local\"\nmodel = \"digits\"\nmodel_file = \"model.onnx\"\nplugin = \"plugin.wasm\"\n"
                    .to_string(),
            ),
            (
                "tfserving",
                "backend = \"tfs\"\nmodel = \"digits\"\nplugin = \"plugin.wasm\"\n".to_string(),
            ),
        ];
        for (route, toml) in routes {
            let folder = dir.path().join("plugins").join(route);
            std::fs::create_dir_all(&folder)?;
            std::fs::write(folder.join("model.toml"), toml)?;
            // A model folder names only its own files: copy them in.
            std::fs::copy(&plugin, folder.join("plugin.wasm"))?;
            std::fs::copy(&model, folder.join("model.onnx"))?;
        }
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, gateway)?;
        let config = GatewayConfig::load(&path)?;
        // Loading compiles plugins and optimises the ONNX model: keep it off the workers.
        let gateway = tokio::task::spawn_blocking(move || Gateway::load(config)).await??;
        let public = TcpListener::bind("127.0.0.1:0").await?;
        let admin = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", public.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let gateway = tokio::spawn(infergate::run(Arc::new(gateway), public, admin, async {
            let _ = stopped.await;
        }));
        Ok(Self {
            url,
            stop,
            gateway,
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

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.gateway.await;
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

/// Loops request → response until `until`, counting what finishes inside [`from`, `until`]
/// (latency only for requests also sent after `from`).
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

struct Row {
    route: &'static str,
    concurrency: usize,
    throughput: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

impl Row {
    fn new(route: &'static str, concurrency: usize, window: Duration, mut tally: Tally) -> Self {
        tally.latencies.sort();
        Row {
            route,
            concurrency,
            throughput: tally.completed as f64 / window.as_secs_f64(),
            p50: percentile(&tally.latencies, 0.50),
            p99: percentile(&tally.latencies, 0.99),
            errors: tally.errors,
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
    println!("| backend | concurrency | requests/s | p50 ms | p99 ms | errors |");
    println!("|---|--:|--:|--:|--:|--:|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {} |",
            r.route,
            r.concurrency,
            r.throughput,
            ms(r.p50),
            ms(r.p99),
            r.errors
        );
    }
    println!();
}
