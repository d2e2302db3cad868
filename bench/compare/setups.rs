//! Starting each setup, checking it answers correctly, and measuring its rows.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant as StdInstant};

use anyhow::{Context, bail};
use bytes::Bytes;
use infergate::backend::tfserving::convert;
use infergate::config::LimitsConfig;
use infergate::plugin::{CallLimits, CallTag, Host, Needs, Plugin, PluginRequest};
use infergate::proto::tensorflow::serving::{ModelSpec, PredictRequest};
use infergate::tensor::{NamedTensors, Tensor};
use tokio::time::Instant;

use crate::load::{self, Target};
use crate::procs::{self, Server};
use crate::report::{self, Row};
use crate::{Args, Plan};

/// The image every setup classifies; the fake answers class 0 for it (dark pixels), real
/// TensorFlow answers 7.
const IMAGE: &str = "examples/images/digit-7-0.png";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub async fn run_all(args: Args) -> anyhow::Result<()> {
    let plan = args.plan();
    let png = Bytes::from(std::fs::read(root().join(IMAGE)).context(IMAGE)?);
    let work = PrePost::measure(&png).await?;
    let fake = start_fake(&args)?;
    let backend_addr = fake.1.clone();
    let fake = fake.0;
    println!(
        "fake TF Serving: {} µs per call + {} µs per row; {:?} warm-up + {:?} measured per row; \
         {} CPUs\n",
        args.call_cost_us,
        args.row_cost_us,
        plan.warmup,
        plan.measure,
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    );
    let mut rows = Vec::new();
    let gateway_bin = gateway_binary(&args)?;
    let json_body = rest_body(&work.image)?;

    if args.runs(1) {
        let dir = gateway_config(&backend_addr, true)?;
        let server = start_gateway(&gateway_bin, &dir)?;
        let target = http_target(&server.1, png.clone(), "image/png")?;
        check(&target, "predictions").await?;
        for &c in &plan.concurrencies {
            rows.push(measure("1 infergate", Some(&server.0), &fake, &target, c, &plan).await);
        }
    }
    if args.runs(2) {
        for &procs in &plan.tornado_procs {
            let server = start_tornado(&args, &backend_addr, procs)?;
            let target = http_target(&server.1, png.clone(), "image/png")?;
            check(&target, "predictions").await?;
            let name = format!("2 tornado x{procs}");
            for &c in &plan.concurrencies {
                rows.push(measure(&name, Some(&server.0), &fake, &target, c, &plan).await);
            }
        }
    }
    if args.runs(3) {
        let target = grpc_target(&backend_addr, &work.image).await?;
        check(&target, "").await?;
        for &c in &plan.concurrencies {
            rows.push(measure("3 direct gRPC", None, &fake, &target, c, &plan).await);
        }
    }
    if args.runs(4) {
        let dir = gateway_config(&backend_addr, false)?;
        let server = start_gateway(&gateway_bin, &dir)?;
        let target = http_target(&server.1, json_body, "application/json")?;
        check(&target, "predictions").await?;
        for &c in &plan.concurrencies {
            rows.push(
                measure(
                    "4 infergate rest",
                    Some(&server.0),
                    &fake,
                    &target,
                    c,
                    &plan,
                )
                .await,
            );
        }
    }
    // The tensor protocols on setup 4's pass-through gateway: TF Serving's gRPC Predict with
    // setup 3's request (so 5 / 3 is the gateway's cost on gRPC), and the Open Inference
    // Protocol over REST, JSON and binary tensors (beside setup 4's REST JSON).
    if args.runs(5) || args.runs(6) {
        let dir = gateway_config(&backend_addr, false)?;
        let server = start_gateway(&gateway_bin, &dir)?;
        let mut targets = Vec::new();
        if args.runs(5) {
            let addr = server.1.trim_start_matches("http://");
            targets.push((
                "5 infergate gRPC",
                grpc_target(addr, &work.image).await?,
                "",
            ));
        }
        if args.runs(6) {
            let (json, binary) = v2_targets(&server.1, &work.image)?;
            targets.push(("6 infergate v2 json", json, "outputs"));
            targets.push(("6 infergate v2 binary", binary, "outputs"));
        }
        for (name, target, expect) in targets {
            check(&target, expect).await?;
            for &c in &plan.concurrencies {
                rows.push(measure(name, Some(&server.0), &fake, &target, c, &plan).await);
            }
        }
    }
    // Sanity row: setup 1's plugins on the embedded ONNX backend, the real model run in
    // process (no fake), so it says what the zero-setup default delivers on this machine.
    if args.runs(1) {
        let dir = onnx_config()?;
        let server = start_gateway(&gateway_bin, &dir)?;
        let target = http_target(&server.1, png.clone(), "image/png")?;
        check(&target, "predictions").await?;
        for &c in &plan.concurrencies {
            rows.push(measure("infergate onnx", Some(&server.0), &fake, &target, c, &plan).await);
        }
    }
    if args.real_tf {
        match real_tf_rows(&args, &gateway_bin, &png, &plan).await {
            Ok(mut tf_rows) => rows.append(&mut tf_rows),
            Err(e) => eprintln!("real TensorFlow rows skipped: {e:#}"),
        }
    }
    drop(fake);
    report::print(&rows, &work, &plan);
    Ok(())
}

/// The digits plugins' own work, in process: p50 of pre and of post over a few hundred calls.
/// Target 2 allows setup 1 this much over the direct client.
pub struct PrePost {
    pub pre_p50: Duration,
    pub post_p50: Duration,
    /// The tensor the pre plugin makes of [`IMAGE`]: what setups 3 and 4 send.
    pub image: Tensor,
}

impl PrePost {
    async fn measure(png: &Bytes) -> anyhow::Result<Self> {
        const CALLS: usize = 300;
        let runtime = Host::new()?;
        let path = root().join("plugins/digits/plugin.wasm");
        let needs = Needs {
            pre: true,
            post: true,
        };
        let plugin =
            Plugin::load(&runtime, &path, needs).context("run scripts/build-plugins.sh first")?;
        let request = PluginRequest {
            model: "digits".into(),
            method: "POST".into(),
            path: "/v1/models/digits:predict".into(),
            headers: vec![("content-type".into(), "image/png".into())],
            body: png.clone(),
            ..PluginRequest::default()
        };
        let limits = {
            let config = LimitsConfig::default();
            CallLimits {
                timeout: config.timeout(),
                memory_bytes: config.memory_bytes(),
                max_output_bytes: config.max_output_bytes(),
            }
        };
        let tag = || CallTag {
            model: "digits".into(),
            request_id: String::new(),
            metrics: None,
        };
        let row = [
            0.01f32, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.91, 0.01, 0.01,
        ];
        let outputs: NamedTensors =
            vec![("probabilities".into(), Tensor::from_f32(vec![1, 10], &row)?)];
        let (mut pre, mut post) = (Vec::new(), Vec::new());
        let mut prepared = None;
        for i in 0..CALLS + CALLS / 10 {
            let started = StdInstant::now();
            let p = plugin.preprocess(&request, limits, tag()).await?;
            let mid = StdInstant::now();
            plugin
                .postprocess(&outputs, &p.context, limits, tag())
                .await?;
            // The first tenth warms the pooling allocator's slots and the code up.
            if i >= CALLS / 10 {
                pre.push(mid - started);
                post.push(mid.elapsed());
            }
            prepared = Some(p);
        }
        let image = prepared
            .and_then(|p| p.inputs.into_iter().find(|(name, _)| name == "image"))
            .context("the digits plugin made no `image` input")?
            .1;
        Ok(Self {
            pre_p50: median(&mut pre),
            post_p50: median(&mut post),
            image,
        })
    }
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// Starts this binary as the fake backend; the server and its `HOST:PORT`.
fn start_fake(args: &Args) -> anyhow::Result<(Server, String)> {
    let mut command = Command::new(std::env::current_exe()?);
    command.args([
        "--serve-fake",
        "--call-cost-us",
        &args.call_cost_us.to_string(),
        "--row-cost-us",
        &args.row_cost_us.to_string(),
    ]);
    Server::start(
        "fake backend",
        command,
        "fake listening on ",
        Duration::from_secs(10),
    )
}

fn gateway_binary(args: &Args) -> anyhow::Result<PathBuf> {
    let path = match &args.infergate {
        Some(path) => path.clone(),
        // cargo puts bench binaries in <profile>/deps/ and the gateway in <profile>/.
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("bench binary location")?
            .join("infergate"),
    };
    if !path.is_file() {
        bail!(
            "{} is missing: `cargo build --release` first, or pass --infergate",
            path.display()
        );
    }
    Ok(path)
}

/// A temp dir with `gateway.toml` and `plugins/digits/model.toml` (with the example plugin when
/// `plugins`, else a REST pass-through), batching on.
fn gateway_config(backend: &str, plugins: bool) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let gateway = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [plugins]\ndir = \"plugins\"\nwatch = \"off\"\n\
         [backends.tfs]\nkind = \"tfserving\"\nendpoints = [\"http://{backend}\"]\n\
         timeout_ms = 30000\n"
    );
    std::fs::write(dir.path().join("gateway.toml"), gateway)?;
    let folder = dir.path().join("plugins/digits");
    std::fs::create_dir_all(&folder)?;
    let mut model =
        String::from("backend = \"tfs\"\nmodel = \"digits\"\nsignature = \"serving_default\"\n");
    if plugins {
        std::fs::copy(
            root().join("plugins/digits/plugin.wasm"),
            folder.join("plugin.wasm"),
        )?;
        model.push_str("plugin = \"plugin.wasm\"\n");
    }
    model.push_str(
        "[batching]\nmax_batch_size = 64\nbatch_timeout_us = 1000\nmax_enqueued = 4096\n\
         max_concurrent_batches = 2\n",
    );
    std::fs::write(folder.join("model.toml"), model)?;
    Ok(dir)
}

/// Setup 1 on the embedded backend: the digits plugin and `plugins/digits/model.onnx`.
fn onnx_config() -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let gateway = "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
                   [plugins]\ndir = \"plugins\"\nwatch = \"off\"\n\
                   [backends.embedded]\nkind = \"onnx\"\n";
    std::fs::write(dir.path().join("gateway.toml"), gateway)?;
    let folder = dir.path().join("plugins/digits");
    std::fs::create_dir_all(&folder)?;
    for file in ["plugin.wasm", "model.onnx"] {
        std::fs::copy(root().join("plugins/digits").join(file), folder.join(file))?;
    }
    std::fs::write(
        folder.join("model.toml"),
        "backend = \"embedded\"\nmodel_file = \"model.onnx\"\nplugin = \"plugin.wasm\"\n\
         [batching]\nmax_batch_size = 64\nbatch_timeout_us = 1000\nmax_enqueued = 4096\n",
    )?;
    Ok(dir)
}

/// `infergate serve` on `dir`'s config; the server and its URL.
fn start_gateway(bin: &Path, dir: &tempfile::TempDir) -> anyhow::Result<(Server, String)> {
    let mut command = Command::new(bin);
    command
        .arg("serve")
        .arg("--config")
        .arg(dir.path().join("gateway.toml"))
        .current_dir(dir.path())
        .env("RUST_LOG", "warn");
    Server::start(
        "infergate",
        command,
        "infergate listening on ",
        Duration::from_secs(60),
    )
}

fn start_tornado(args: &Args, backend: &str, procs: usize) -> anyhow::Result<(Server, String)> {
    let home = std::env::var("HOME").unwrap_or_default();
    let python = args
        .python
        .clone()
        .unwrap_or_else(|| Path::new(&home).join(".cache/infergate/venv/bin/python"));
    let mut command = Command::new(python);
    command.arg(root().join("bench/tornado_app.py")).args([
        "--backend",
        backend,
        "--procs",
        &procs.to_string(),
    ]);
    if let Some(path) = &args.pythonpath {
        command.env("PYTHONPATH", path);
    }
    let (server, addr) = Server::start(
        "tornado",
        command,
        "tornado listening on ",
        Duration::from_secs(120),
    )?;
    Ok((server, format!("http://{addr}")))
}

fn http_target(base: &str, body: Bytes, content_type: &'static str) -> anyhow::Result<Target> {
    Ok(Target::Http {
        uri: format!("{base}/v1/models/digits:predict").parse()?,
        body,
        content_type,
        header: None,
    })
}

/// `POST /v2/models/digits/infer` with setup 3's pixels: as JSON `data`, and with the binary
/// tensor extension (the raw f32 bytes after the JSON header, a binary output asked for).
fn v2_targets(base: &str, image: &Tensor) -> anyhow::Result<(Target, Target)> {
    let uri: http::Uri = format!("{base}/v2/models/digits/infer").parse()?;
    let pixels = image.to_f32().context("the image tensor is f32")?;
    let json = serde_json::json!({
        "inputs": [{ "name": "image", "shape": [1, 28, 28, 1], "datatype": "FP32", "data": pixels }]
    });
    let head = serde_json::json!({
        "inputs": [{ "name": "image", "shape": [1, 28, 28, 1], "datatype": "FP32",
                     "parameters": { "binary_data_size": image.data().len() } }],
        "outputs": [{ "name": "probabilities", "parameters": { "binary_data": true } }]
    })
    .to_string();
    let mut binary = head.clone().into_bytes();
    binary.extend_from_slice(image.data());
    Ok((
        Target::Http {
            uri: uri.clone(),
            body: Bytes::from(json.to_string()),
            content_type: "application/json",
            header: None,
        },
        Target::Http {
            uri,
            body: Bytes::from(binary),
            content_type: "application/octet-stream",
            header: Some(("inference-header-content-length", head.len().to_string())),
        },
    ))
}

async fn grpc_target(backend: &str, image: &Tensor) -> anyhow::Result<Target> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{backend}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let request = PredictRequest {
        model_spec: Some(ModelSpec {
            name: "digits".into(),
            signature_name: "serving_default".into(),
            version_choice: None,
        }),
        inputs: [("image".to_string(), convert::to_proto(image))].into(),
        output_filter: Vec::new(),
    };
    Ok(Target::Grpc { channel, request })
}

/// `{"instances": [<28x28x1 image>]}`: what setup 4 is sent, the same pixels as setup 1's.
fn rest_body(image: &Tensor) -> anyhow::Result<Bytes> {
    let pixels = image.to_f32().context("the image tensor is f32")?;
    let rows: Vec<Vec<[f32; 1]>> = pixels
        .chunks(28)
        .map(|row| row.iter().map(|&p| [p]).collect())
        .collect();
    Ok(Bytes::from(
        serde_json::json!({ "instances": [rows] }).to_string(),
    ))
}

/// One request must succeed (retrying while a server finishes starting) and its answer
/// contain `expect`.
async fn check(target: &Target, expect: &str) -> anyhow::Result<()> {
    let client = load::http_client();
    let mut last = String::new();
    for _ in 0..100 {
        match target.once(&client).await {
            Ok(body) if String::from_utf8_lossy(&body).contains(expect) => return Ok(()),
            Ok(body) => bail!("unexpected answer: {}", String::from_utf8_lossy(&body)),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("no successful answer: {last}")
}

/// Runs one row: warm-up, then the measured window with the servers' costs read around it.
async fn measure(
    setup: &str,
    server: Option<&Server>,
    fake: &Server,
    target: &Target,
    concurrency: usize,
    plan: &Plan,
) -> Row {
    let from = Instant::now() + plan.warmup;
    let until = from + plan.measure;
    let load = {
        let target = target.clone();
        tokio::spawn(async move { load::run(&target, concurrency, from, until).await })
    };
    tokio::time::sleep_until(from).await;
    let rss_reset = server.is_none_or(Server::reset_peak_rss);
    let server_cpu = server.map(Server::cpu);
    let fake_cpu = fake.cpu();
    let own_cpu = procs::cpu_time(std::process::id());
    tokio::time::sleep_until(until).await;
    let server_cpu = server.zip(server_cpu).map(|(s, before)| s.cpu() - before);
    let fake_cpu = fake.cpu() - fake_cpu;
    let own_cpu = own_cpu
        .zip(procs::cpu_time(std::process::id()))
        .map(|(before, after)| after - before);
    let peak_rss = server.map(Server::peak_rss);
    let tally = load.await.expect("load task");
    if let Some(e) = &tally.first_error {
        eprintln!(
            "  {setup} c={concurrency}: {} errors, first: {e}",
            tally.errors
        );
    }
    eprintln!("  done: {setup} c={concurrency}");
    Row {
        setup: setup.to_string(),
        concurrency,
        throughput: tally.completed as f64 / plan.measure.as_secs_f64(),
        p50: tally.percentile(0.50),
        p99: tally.percentile(0.99),
        errors: tally.errors,
        completed: tally.completed,
        server_cpu,
        backend_cpu: fake_cpu,
        client_cpu: own_cpu,
        peak_rss: peak_rss.filter(|_| rss_reset),
    }
}

/// Setup 1 in front of real TensorFlow (scripts/tf_server.py on models/digits), c = 1 and 16.
async fn real_tf_rows(
    args: &Args,
    gateway_bin: &Path,
    png: &Bytes,
    plan: &Plan,
) -> anyhow::Result<Vec<Row>> {
    let home = std::env::var("HOME").unwrap_or_default();
    let python = args
        .python
        .clone()
        .unwrap_or_else(|| Path::new(&home).join(".cache/infergate/venv/bin/python"));
    let mut command = Command::new(python);
    command
        .arg(root().join("scripts/tf_server.py"))
        .args(["--port", "0", "--model"])
        .arg(format!("digits={}", root().join("models/digits").display()));
    let (tf, addr) = Server::start(
        "tf_server",
        command,
        "tf_server listening on ",
        Duration::from_secs(180),
    )?;
    let dir = gateway_config(&addr, true)?;
    let gateway = start_gateway(gateway_bin, &dir)?;
    let target = http_target(&gateway.1, png.clone(), "image/png")?;
    // Real TensorFlow must read the bundled 7 as a 7.
    check(&target, r#"{"label":"7""#).await?;
    let mut rows = Vec::new();
    for c in [1, 16] {
        rows.push(
            measure(
                "1 infergate, real TF",
                Some(&gateway.0),
                &tf,
                &target,
                c,
                plan,
            )
            .await,
        );
    }
    Ok(rows)
}
