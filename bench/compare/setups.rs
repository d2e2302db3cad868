//! Running each setup: start it, check it answers correctly, measure its rows.

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
use crate::procs::{self, Machine, Server};
use crate::report::{self, Row};
use crate::servers::{self, Bodies, Peer, http_target, root};
use crate::wrk::{self, WrkTarget};
use crate::{Args, Plan};

/// The image every setup classifies; the fake answers class 0 for it (dark pixels), real
/// TensorFlow answers 7.
const IMAGE: &str = "examples/images/digit-7-0.png";

pub async fn run_all(args: Args) -> anyhow::Result<()> {
    let plan = args.plan();
    let png = Bytes::from(std::fs::read(root().join(IMAGE)).context(IMAGE)?);
    let work = PrePost::measure(&png).await?;
    let (fake, backend_addr) = servers::start_fake(&args)?;
    let bodies = Bodies::new()?;
    let load = match &plan.wrk {
        Some(wrk) => format!(
            "{} (one thread), direct gRPC by this process",
            wrk.display()
        ),
        None => "this process (hyper / tonic)".to_string(),
    };
    println!(
        "fake TF Serving: {} µs per call + {} µs per row; {:?} warm-up + {:?} measured per row; \
         {} CPUs; load generator: {load}; gateway tuning: {:?}; load average at the start: {}\n",
        args.call_cost_us,
        args.row_cost_us,
        plan.warmup,
        plan.measure,
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        args.tuning(),
        procs::load_average(),
    );
    let m = Measure { plan: &plan };
    let mut rows = Vec::new();
    let mut c1_pairs = Vec::new();
    let gateway_bin = servers::gateway_binary(&args)?;
    let json_body = rest_body(&work.image)?;
    let direct = grpc_target(&backend_addr, &work.image).await?;
    check(&direct, "").await?;

    if args.runs(1) {
        let dir = servers::gateway_config(&backend_addr, true, args.tuning())?;
        let (server, base) = servers::start_gateway(&gateway_bin, &dir, &[])?;
        let target = digits_target(&base, &png, &bodies)?;
        check(&target, "predictions").await?;
        for &c in &plan.concurrencies {
            rows.push(
                m.row("1 infergate", Some(&server), &fake, &target, c)
                    .await?,
            );
        }
        // Target 3 asks for 5 of 5 runs: pairs of c = 1 rows, the direct client first, each
        // pair seconds apart so both sides share the machine's phase.
        for _ in 0..plan.c1_runs {
            let limit = m.row("3 direct gRPC", None, &fake, &direct, 1).await?;
            let gate = m
                .row("1 infergate", Some(&server), &fake, &target, 1)
                .await?;
            c1_pairs.push((gate, limit));
        }
    }
    if args.runs(2) {
        for &procs in &plan.tornado_procs {
            rows.extend(
                peer_rows(
                    &args,
                    &m,
                    Peer::Tornado { procs },
                    &fake,
                    &backend_addr,
                    &png,
                    &bodies,
                )
                .await?,
            );
        }
    }
    if args.runs(3) {
        for &c in &plan.concurrencies {
            rows.push(m.row("3 direct gRPC", None, &fake, &direct, c).await?);
        }
    }
    if args.runs(4) {
        let dir = servers::gateway_config(&backend_addr, false, args.tuning())?;
        let (server, base) = servers::start_gateway(&gateway_bin, &dir, &[])?;
        let target = http_target(
            &format!("{base}/v1/models/digits:predict"),
            &json_body,
            "application/json",
            &bodies,
        )?;
        check(&target, "predictions").await?;
        for &c in &plan.concurrencies {
            rows.push(
                m.row("4 infergate rest", Some(&server), &fake, &target, c)
                    .await?,
            );
        }
    }
    // The tensor protocols on setup 4's pass-through gateway: TF Serving's gRPC Predict with
    // setup 3's request (so 5 / 3 is the gateway's cost on gRPC), and the Open Inference
    // Protocol over REST, JSON and binary tensors (beside setup 4's REST JSON).
    if args.runs(5) || args.runs(6) {
        let dir = servers::gateway_config(&backend_addr, false, args.tuning())?;
        let (server, base) = servers::start_gateway(&gateway_bin, &dir, &[])?;
        let mut targets = Vec::new();
        if args.runs(5) {
            let addr = base.trim_start_matches("http://");
            targets.push((
                "5 infergate gRPC",
                grpc_target(addr, &work.image).await?,
                "",
            ));
        }
        if args.runs(6) {
            let (json, binary) = v2_targets(&base, &work.image, &bodies)?;
            targets.push(("6 infergate v2 json", json, "outputs"));
            targets.push(("6 infergate v2 binary", binary, "outputs"));
        }
        for (name, target, expect) in targets {
            check(&target, expect).await?;
            for &c in &plan.concurrencies {
                rows.push(m.row(name, Some(&server), &fake, &target, c).await?);
            }
        }
    }
    if args.runs(7) {
        rows.extend(peer_rows(&args, &m, Peer::Mosec, &fake, &backend_addr, &png, &bodies).await?);
    }
    if args.runs(8) {
        rows.extend(peer_rows(&args, &m, Peer::Triton, &fake, &backend_addr, &png, &bodies).await?);
    }
    // Sanity row: setup 1's plugins on the embedded ONNX backend, the real model run in
    // process (no fake), so it says what the zero-setup default delivers on this machine.
    if args.runs(1) && !args.smoke {
        let dir = servers::onnx_config()?;
        let (server, base) = servers::start_gateway(&gateway_bin, &dir, &[])?;
        let target = digits_target(&base, &png, &bodies)?;
        check(&target, "predictions").await?;
        for &c in &plan.concurrencies {
            rows.push(
                m.row("infergate onnx", Some(&server), &fake, &target, c)
                    .await?,
            );
        }
    }
    if args.real_tf {
        match real_tf_rows(&args, &m, &gateway_bin, &png, &bodies).await {
            Ok(mut tf_rows) => rows.append(&mut tf_rows),
            Err(e) => eprintln!("real TensorFlow rows skipped: {e:#}"),
        }
    }
    drop(fake);
    report::print(&rows, &c1_pairs, &work, &plan);
    Ok(())
}

/// A Python peer's rows at every concurrency.
async fn peer_rows(
    args: &Args,
    m: &Measure<'_>,
    peer: Peer,
    fake: &Server,
    backend: &str,
    png: &Bytes,
    bodies: &Bodies,
) -> anyhow::Result<Vec<Row>> {
    let (server, base) = servers::start_peer(args, peer, backend)?;
    let target = peer.target(&base, png, bodies)?;
    check(&target, peer.expect())
        .await
        .with_context(|| peer.name())?;
    let mut rows = Vec::new();
    for &c in &m.plan.concurrencies {
        rows.push(m.row(&peer.name(), Some(&server), fake, &target, c).await?);
    }
    Ok(rows)
}

fn digits_target(base: &str, png: &Bytes, bodies: &Bodies) -> anyhow::Result<Target> {
    http_target(
        &format!("{base}/v1/models/digits:predict"),
        png,
        "image/png",
        bodies,
    )
}

/// The digits plugins' own work, in process: p50 of pre and of post over a few hundred calls.
/// Target 3 allows setup 1 this much over the direct client.
pub struct PrePost {
    pub pre_p50: Duration,
    pub post_p50: Duration,
    /// The tensor the pre plugin makes of [`IMAGE`]: what setups 3 and 4 send.
    pub image: Tensor,
}

impl PrePost {
    pub async fn measure(png: &Bytes) -> anyhow::Result<Self> {
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

/// `POST /v2/models/digits/infer` with setup 3's pixels: as JSON `data`, and with the binary
/// tensor extension (the raw f32 bytes after the JSON header, a binary output asked for).
fn v2_targets(base: &str, image: &Tensor, bodies: &Bodies) -> anyhow::Result<(Target, Target)> {
    let url = format!("{base}/v2/models/digits/infer");
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
    let json = http_target(
        &url,
        &Bytes::from(json.to_string()),
        "application/json",
        bodies,
    )?;
    let mut binary = http_target(
        &url,
        &Bytes::from(binary),
        "application/octet-stream",
        bodies,
    )?;
    if let Target::Http { headers, .. } = &mut binary {
        headers.push(("inference-header-content-length", head.len().to_string()));
    }
    Ok((json, binary))
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
pub fn rest_body(image: &Tensor) -> anyhow::Result<Bytes> {
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
pub async fn check(target: &Target, expect: &str) -> anyhow::Result<()> {
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

/// How rows are measured.
pub struct Measure<'a> {
    pub plan: &'a Plan,
}

/// The costs read around a measured window.
struct Before {
    server: Option<Duration>,
    backend: Duration,
    rss_reset: bool,
    machine: Machine,
}

impl Before {
    fn read(server: Option<&Server>, backend: &Server) -> Self {
        Self {
            rss_reset: server.is_none_or(Server::reset_peak_rss),
            server: server.map(Server::cpu),
            backend: backend.cpu(),
            machine: Machine::read(),
        }
    }
}

impl Measure<'_> {
    /// One row: a warm-up, then the measured window with every process's CPU read around
    /// it. HTTP targets go to wrk unless `--load hyper`; the gRPC target to this process.
    async fn row(
        &self,
        setup: &str,
        server: Option<&Server>,
        backend: &Server,
        target: &Target,
        concurrency: usize,
    ) -> anyhow::Result<Row> {
        let row = match (&self.plan.wrk, target) {
            (Some(wrk), Target::Http { .. }) => {
                self.wrk_row(wrk, setup, server, backend, target, concurrency)
                    .await?
            }
            _ => {
                self.in_process_row(setup, server, backend, target, concurrency)
                    .await
            }
        };
        if row.errors > 0 {
            eprintln!(
                "  {setup} c={concurrency}: {} errors: {}",
                row.errors, row.error_detail
            );
        }
        eprintln!("  done: {setup} c={concurrency}");
        Ok(row)
    }

    async fn wrk_row(
        &self,
        wrk: &std::path::Path,
        setup: &str,
        server: Option<&Server>,
        backend: &Server,
        target: &Target,
        concurrency: usize,
    ) -> anyhow::Result<Row> {
        let Target::Http {
            uri,
            content_type,
            headers,
            body_file,
            ..
        } = target
        else {
            bail!("wrk drives HTTP targets only")
        };
        let target = WrkTarget {
            url: uri.to_string(),
            body_file: body_file.clone(),
            content_type: content_type.to_string(),
            headers: headers
                .iter()
                .map(|(name, value)| ((*name).to_string(), value.clone()))
                .collect(),
        };
        let whole_secs = |d: Duration| d.as_secs_f64().ceil() as u64;
        let run = |secs: u64| {
            let (wrk, target) = (wrk.to_path_buf(), target.clone());
            tokio::task::spawn_blocking(move || wrk::run(&wrk, &target, concurrency, secs))
        };
        run(whole_secs(self.plan.warmup)).await??;
        let before = Before::read(server, backend);
        let result = run(whole_secs(self.plan.measure)).await??;
        Ok(self.finish(
            setup,
            concurrency,
            server,
            backend,
            before,
            Outcome {
                completed: result.ok,
                errors: result.errors,
                error_detail: result.error_detail,
                p50: result.p50,
                p99: result.p99,
                window: result.duration,
                client_cpu: Some(result.cpu),
                load: "wrk",
            },
        ))
    }

    async fn in_process_row(
        &self,
        setup: &str,
        server: Option<&Server>,
        backend: &Server,
        target: &Target,
        concurrency: usize,
    ) -> Row {
        let plan = self.plan;
        let from = Instant::now() + plan.warmup;
        let until = from + plan.measure;
        let load = {
            let target = target.clone();
            tokio::spawn(async move { load::run(&target, concurrency, from, until).await })
        };
        tokio::time::sleep_until(from).await;
        let before = Before::read(server, backend);
        let own_cpu = procs::cpu_time(std::process::id());
        tokio::time::sleep_until(until).await;
        let own_cpu = own_cpu
            .zip(procs::cpu_time(std::process::id()))
            .map(|(before, after)| after - before);
        let tally = load.await.expect("load task");
        self.finish(
            setup,
            concurrency,
            server,
            backend,
            before,
            Outcome {
                completed: tally.completed,
                errors: tally.errors,
                error_detail: tally.first_error.clone().unwrap_or_default(),
                p50: tally.percentile(0.50),
                p99: tally.percentile(0.99),
                window: plan.measure,
                client_cpu: own_cpu,
                load: match target {
                    Target::Http { .. } => "hyper",
                    Target::Grpc { .. } => "tonic",
                },
            },
        )
    }

    fn finish(
        &self,
        setup: &str,
        concurrency: usize,
        server: Option<&Server>,
        backend: &Server,
        before: Before,
        outcome: Outcome,
    ) -> Row {
        let server_cpu = server
            .zip(before.server)
            .map(|(s, before)| s.cpu().saturating_sub(before));
        let backend_cpu = backend.cpu().saturating_sub(before.backend);
        let machine = Machine::read().since(&before.machine);
        let ours =
            server_cpu.unwrap_or_default() + backend_cpu + outcome.client_cpu.unwrap_or_default();
        Row {
            setup: setup.to_string(),
            concurrency,
            throughput: outcome.completed as f64 / outcome.window.as_secs_f64().max(1e-9),
            p50: outcome.p50,
            p99: outcome.p99,
            errors: outcome.errors,
            error_detail: outcome.error_detail,
            completed: outcome.completed,
            server_cpu,
            backend_cpu,
            client_cpu: outcome.client_cpu,
            peak_rss: server.map(Server::peak_rss).filter(|_| before.rss_reset),
            others_cpu: machine.others_share(ours),
            steal: machine.steal_share(),
            load: outcome.load,
        }
    }
}

/// What the load generator saw in a window.
struct Outcome {
    completed: u64,
    errors: u64,
    error_detail: String,
    p50: Duration,
    p99: Duration,
    window: Duration,
    client_cpu: Option<Duration>,
    load: &'static str,
}

/// Setup 1 in front of real TensorFlow (scripts/tf_server.py on models/digits), c = 1 and 16.
async fn real_tf_rows(
    args: &Args,
    m: &Measure<'_>,
    gateway_bin: &std::path::Path,
    png: &Bytes,
    bodies: &Bodies,
) -> anyhow::Result<Vec<Row>> {
    let (tf, addr) = servers::start_tf(args)?;
    let dir = servers::gateway_config(&addr, true, args.tuning())?;
    let (gateway, base) = servers::start_gateway(gateway_bin, &dir, &[])?;
    let target = digits_target(&base, png, bodies)?;
    // Real TensorFlow must read the bundled 7 as a 7.
    check(&target, r#"{"label":"7""#).await?;
    let mut rows = Vec::new();
    for c in [1, 16] {
        rows.push(
            m.row("1 infergate, real TF", Some(&gateway), &tf, &target, c)
                .await?,
        );
    }
    Ok(rows)
}
