//! Hot reload latency: from a new plugin file landing in its model folder to the first request
//! answered by the new version, p50/p99.
//!
//! One gateway, in process, per setting, in front of a fake TF Serving over real gRPC (model `m`
//! returns its input `x` as `y`). Model folder `a` has `pre = "pre.wasm"` and no post plugin,
//! so `POST /v1/models/a:predict` with body `ok` shows which plugin served it: `pre-only.wasm`
//! answers `{"outputs": [[2.0]]}`, `misbehave.wasm` `[[1.0]]`. Each round writes the other
//! version to a staging folder outside `plugins/`, renames it over `a/pre.wasm` (the atomic
//! write the reload docs ask for), then polls the predict endpoint back to back until the
//! answer flips; the time from the rename to the first flipped answer is one sample.
//!
//! Settings: `watch = "notify"` with `debounce_ms` at its default (250) and at 50, and
//! `watch = "off"` with `POST /admin/reload` right after the rename; the admin call's own
//! time is the rebuild-and-swap cost (hash the folder, compile the plugin, swap the table).
//!
//! Each round's file is a version's bytes plus a custom section holding a fresh nonce: a file
//! the gateway has never seen, as in a real deploy, so no compiled-plugin cache can serve it.
//! One more row re-uses the two versions' exact bytes (a rollback to files loaded before),
//! which such a cache can serve. The gateway's cache is kept in each run's temp dir
//! (`plugins.cache_dir = "compiled"`), empty at start, never in the user's own cache.
//!
//! ```sh
//! scripts/build-plugins.sh                         # the fixture plugins, once
//! cargo bench --bench reload                       # 30 reloads per setting
//! cargo bench --bench reload -- --quick            # 8 reloads per setting
//! cargo bench --bench reload -- --reloads 100
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use infergate::fake::{FakeBackend, FakeModel, FakeServer};
use infergate::tensor::DType;
use infergate::{Gateway, GatewayConfig};
use tokio::net::TcpListener;

/// Model folder `a`: the pre plugin only, in front of the identity model.
const MODEL_TOML: &str = "backend = \"tfs\"\nmodel = \"m\"\npre = \"pre.wasm\"\n";

/// Longest one reload may take before the bench gives up on it.
const GIVE_UP: Duration = Duration::from_secs(10);

/// Requests timed on a warm route, to compare a reload's last step with.
const STEADY_REQUESTS: usize = 200;

/// Pause after each flip, so the next rename never lands in the tail of the last reload.
const SETTLE: Duration = Duration::from_millis(20);

#[derive(Parser, Debug)]
#[command(about = "Hot reload latency: plugin file renamed into place → new version answering")]
struct Args {
    /// Timed reloads per setting (default 30, or 8 with --quick).
    #[arg(long)]
    reloads: Option<usize>,
    /// A short smoke run: 8 reloads per setting.
    #[arg(long)]
    quick: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Whether each round's file is new to the gateway or one it has loaded before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Files {
    /// The version's bytes plus a unique custom section: never seen before.
    New,
    /// The version's exact bytes, both loaded before the timed rounds start.
    Seen,
}

impl Files {
    fn name(self) -> &'static str {
        match self {
            Files::New => "new",
            Files::Seen => "seen before",
        }
    }
}

/// The rows of the table, in order.
const SCENARIOS: [(Setting, Files); 4] = [
    (Setting::Notify(None), Files::New),
    (Setting::Notify(Some(50)), Files::New),
    (Setting::Admin, Files::New),
    (Setting::Admin, Files::Seen),
];

/// How the gateway notices the new file.
#[derive(Clone, Copy, Debug)]
enum Setting {
    /// `watch = "notify"` with this `debounce_ms` (`None`: the default, 250).
    Notify(Option<u64>),
    /// `watch = "off"`; the bench calls `POST /admin/reload` after the rename.
    Admin,
}

impl Setting {
    fn plugins_config(self) -> String {
        match self {
            Setting::Notify(None) => String::new(),
            Setting::Notify(Some(ms)) => format!("debounce_ms = {ms}\n"),
            Setting::Admin => "watch = \"off\"\n".into(),
        }
    }

    fn name(self) -> String {
        match self {
            Setting::Notify(None) => "notify, debounce_ms = 250 (default)".into(),
            Setting::Notify(Some(ms)) => format!("notify, debounce_ms = {ms}"),
            Setting::Admin => "watch = off + POST /admin/reload".into(),
        }
    }
}

/// The two plugin versions and the answer each gives.
struct Versions {
    files: [(Vec<u8>, f64); 2],
    /// Makes every nonce of this run unique, and unlike any earlier run's.
    run_id: u128,
    next_nonce: AtomicU64,
}

impl Versions {
    fn read() -> anyhow::Result<Self> {
        let read = |name: &str| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/plugins/wasm")
                .join(format!("{name}.wasm"));
            std::fs::read(&path).with_context(|| {
                format!(
                    "reading {} (run scripts/build-plugins.sh first)",
                    path.display()
                )
            })
        };
        Ok(Self {
            files: [(read("pre-only")?, 2.0), (read("misbehave")?, 1.0)],
            run_id: SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos(),
            next_nonce: AtomicU64::new(0),
        })
    }

    /// The file for version `index` (0 or 1), and the answer it gives.
    fn file(&self, index: usize, files: Files) -> (Vec<u8>, f64) {
        let (bytes, answer) = &self.files[index];
        match files {
            Files::Seen => (bytes.clone(), *answer),
            Files::New => {
                let n = self.next_nonce.fetch_add(1, Ordering::Relaxed);
                let nonce = format!("{}-{n}", self.run_id);
                (
                    with_custom_section(bytes, "bench-nonce", nonce.as_bytes()),
                    *answer,
                )
            }
        }
    }
}

/// `wasm` with a custom section appended: the same component, other bytes (a custom section
/// may close a component binary; wasmtime ignores unknown ones).
fn with_custom_section(wasm: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let mut content = leb128(name.len());
    content.extend_from_slice(name.as_bytes());
    content.extend_from_slice(payload);
    let mut out = wasm.to_vec();
    out.push(0); // section id 0: custom
    out.extend(leb128(content.len()));
    out.extend(content);
    out
}

/// Unsigned LEB128, as section sizes and name lengths are encoded.
fn leb128(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let reloads = args
        .reloads
        .unwrap_or(if args.quick { 8 } else { 30 })
        .max(1);
    let versions = Versions::read()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        println!(
            "{} CPUs; {reloads} timed reloads per row (after one untimed); \
             pre.wasm alternates pre-only.wasm ({} KiB) and misbehave.wasm ({} KiB)\n",
            std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            versions.files[0].0.len() >> 10,
            versions.files[1].0.len() >> 10,
        );
        let mut rows = Vec::new();
        let mut steady = Vec::new();
        for (setting, files) in SCENARIOS {
            let env = Env::start(setting, &versions).await?;
            if steady.is_empty() {
                steady = env.steady(STEADY_REQUESTS).await?;
            }
            let samples = env.run(&versions, files, reloads).await?;
            eprintln!("  done: {}, {} files", setting.name(), files.name());
            rows.extend(samples.rows(setting, files));
            env.stop().await;
        }
        print_table(&rows);
        steady.sort();
        println!(
            "For scale: a predict round trip on a warm route, no reload running: \
             p50 {:.2} ms, p99 {:.2} ms ({} requests).",
            ms(percentile(&steady, 0.50)),
            ms(percentile(&steady, 0.99)),
            steady.len()
        );
        Ok(())
    })
}

/// The fake backend and a gateway over a temp dir holding `gateway.toml`, `plugins/a/` and a
/// staging folder on the same filesystem (so a rename is atomic) but outside `plugins/`.
struct Env {
    setting: Setting,
    client: Client<HttpConnector, Full<Bytes>>,
    predict: Uri,
    reload: Uri,
    plugin: PathBuf,
    staging: PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    gateway: tokio::task::JoinHandle<()>,
    // Held so the fake keeps serving and the files outlive the gateway.
    _backend: FakeServer,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start(setting: Setting, versions: &Versions) -> anyhow::Result<Self> {
        let backend = FakeBackend::new([identity()]).start().await?;
        let dir = tempfile::tempdir()?;
        let model = dir.path().join("plugins/a");
        let staging = dir.path().join("staging");
        std::fs::create_dir_all(&model)?;
        std::fs::create_dir_all(&staging)?;
        std::fs::write(model.join("model.toml"), MODEL_TOML)?;
        std::fs::write(model.join("pre.wasm"), &versions.files[0].0)?;
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(
            &config_path,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
                 [plugins]\ndir = \"plugins\"\ncache_dir = \"compiled\"\n{}\
                 [backends.tfs]\nkind = \"tfserving\"\nendpoints = [\"{}\"]\ntimeout_ms = 5000\n",
                setting.plugins_config(),
                backend.url()
            ),
        )?;
        let config = GatewayConfig::load(&config_path)?;
        // Loading compiles plugins, which blocks; keep it off the runtime's workers.
        let gateway = tokio::task::spawn_blocking(move || Gateway::load(config)).await??;
        let public = TcpListener::bind("127.0.0.1:0").await?;
        let admin = TcpListener::bind("127.0.0.1:0").await?;
        let predict = format!("http://{}/v1/models/a:predict", public.local_addr()?).parse()?;
        let reload = format!("http://{}/admin/reload", admin.local_addr()?).parse()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let gateway = tokio::spawn(infergate::run(Arc::new(gateway), public, admin, async {
            let _ = stopped.await;
        }));
        Ok(Self {
            setting,
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1)
                .build_http(),
            predict,
            reload,
            plugin: model.join("pre.wasm"),
            staging: staging.join("pre.wasm"),
            stop,
            gateway,
            _backend: backend,
            _dir: dir,
        })
    }

    /// One untimed reload (it warms the connection and the paths a reload takes, and with
    /// [`Files::Seen`] loads the second version once), then `reloads` timed ones, alternating
    /// the two versions.
    async fn run(
        &self,
        versions: &Versions,
        files: Files,
        reloads: usize,
    ) -> anyhow::Result<Samples> {
        let first = self.answer().await?;
        if first != Some(versions.files[0].1) {
            bail!("the gateway answered {first:?} before any reload, expected pre-only's 2.0");
        }
        let mut samples = Samples::default();
        for round in 0..=reloads {
            let (bytes, expect) = versions.file((round + 1) % 2, files);
            let sample = self.reload_once(&bytes, expect).await?;
            if round > 0 {
                samples.push(sample);
            }
            tokio::time::sleep(SETTLE).await;
        }
        Ok(samples)
    }

    /// The latency of `n` predict requests on the current (warm) route.
    async fn steady(&self, n: usize) -> anyhow::Result<Vec<Duration>> {
        let mut latencies = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            if self.answer().await?.is_none() {
                bail!("model `a` failed a request with no reload running");
            }
            latencies.push(started.elapsed());
        }
        Ok(latencies)
    }

    /// Puts `bytes` in place and waits for the answer `expect`.
    async fn reload_once(&self, bytes: &[u8], expect: f64) -> anyhow::Result<Sample> {
        std::fs::write(&self.staging, bytes)?;
        let renamed = Instant::now();
        std::fs::rename(&self.staging, &self.plugin)?;
        let admin_call = match self.setting {
            Setting::Admin => Some(self.admin_reload().await?),
            Setting::Notify(_) => None,
        };
        let mut polls = 0;
        loop {
            polls += 1;
            if self.answer().await? == Some(expect) {
                return Ok(Sample {
                    flipped: renamed.elapsed(),
                    admin_call,
                    polls,
                });
            }
            if renamed.elapsed() > GIVE_UP {
                bail!("no answer {expect} within {GIVE_UP:?} of the rename");
            }
        }
    }

    /// `POST /admin/reload`, checked to have rebuilt `a`; how long the call took.
    async fn admin_reload(&self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let (ok, body) = self.post(&self.reload, Bytes::new()).await?;
        let took = started.elapsed();
        let report: serde_json::Value = serde_json::from_slice(&body)?;
        if !ok || report["reloaded"] != serde_json::json!(["a"]) {
            bail!("POST /admin/reload answered {report}");
        }
        Ok(took)
    }

    /// The value model `a` answers with; `None` for any other answer.
    async fn answer(&self) -> anyhow::Result<Option<f64>> {
        let (ok, body) = self.post(&self.predict, Bytes::from_static(b"ok")).await?;
        if !ok {
            return Ok(None);
        }
        let reply: serde_json::Value = serde_json::from_slice(&body)?;
        Ok(reply["outputs"][0][0].as_f64())
    }

    async fn post(&self, uri: &Uri, body: Bytes) -> anyhow::Result<(bool, Bytes)> {
        let request = Request::post(uri.clone()).body(Full::new(body))?;
        let response = self.client.request(request).await?;
        let ok = response.status().is_success();
        Ok((ok, response.into_body().collect().await?.to_bytes()))
    }

    /// Stops the gateway and waits for it to drain; the fake stops when dropped.
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.gateway.await;
    }
}

/// A fake model `m` returning its input `x` (f32, any shape with a dim 0) as `y`.
fn identity() -> FakeModel {
    FakeModel::new("m")
        .input("x", DType::F32, &[-1, -1])
        .output("y", DType::F32, &[-1, -1])
        .compute(|inputs| {
            let x = inputs
                .iter()
                .find(|(name, _)| name == "x")
                .map(|(_, t)| t.clone())
                .ok_or_else(|| tonic::Status::invalid_argument("no input x"))?;
            Ok(vec![("y".into(), x)])
        })
}

/// One timed reload.
struct Sample {
    /// Rename → first answer from the new version.
    flipped: Duration,
    /// The `POST /admin/reload` call alone, in the admin setting.
    admin_call: Option<Duration>,
    /// Predict requests sent until the answer flipped (the last one included).
    polls: usize,
}

#[derive(Default)]
struct Samples {
    flipped: Vec<Duration>,
    admin_calls: Vec<Duration>,
    polls: usize,
}

impl Samples {
    fn push(&mut self, sample: Sample) {
        self.flipped.push(sample.flipped);
        self.admin_calls.extend(sample.admin_call);
        self.polls += sample.polls;
    }

    /// The setting's table rows: rename → new answer, and the admin call alone if any.
    fn rows(mut self, setting: Setting, files: Files) -> Vec<Row> {
        let reloads = self.flipped.len();
        let polls = self.polls as f64 / reloads.max(1) as f64;
        let mut rows = vec![Row::new(
            setting.name(),
            files,
            "rename → new answer",
            &mut self.flipped,
            Some(polls),
        )];
        if !self.admin_calls.is_empty() {
            rows.push(Row::new(
                setting.name(),
                files,
                "the admin call alone (rebuild + swap)",
                &mut self.admin_calls,
                None,
            ));
        }
        rows
    }
}

/// One line of the results table.
struct Row {
    setting: String,
    files: Files,
    measured: &'static str,
    count: usize,
    min: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
    polls: Option<f64>,
}

impl Row {
    fn new(
        setting: String,
        files: Files,
        measured: &'static str,
        samples: &mut [Duration],
        polls: Option<f64>,
    ) -> Self {
        samples.sort();
        Row {
            setting,
            files,
            measured,
            count: samples.len(),
            min: samples.first().copied().unwrap_or_default(),
            p50: percentile(samples, 0.50),
            p99: percentile(samples, 0.99),
            max: samples.last().copied().unwrap_or_default(),
            polls,
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
        "| setting | file | measured | n | min ms | p50 ms | p99 ms | max ms | polls per reload |"
    );
    println!("|---|---|---|--:|--:|--:|--:|--:|--:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            r.setting,
            r.files.name(),
            r.measured,
            r.count,
            ms(r.min),
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            r.polls.map_or("–".into(), |p| format!("{p:.0}")),
        );
    }
    println!();
    println!("(nearest-rank p99: with n < 100 it is the slowest sample)\n");
}
