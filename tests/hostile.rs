//! Hostile clients: each kind of request built to grow the gateway's state or take it down,
//! 10,000 of them against one gateway, and what they leave behind — the process's resident
//! memory (`/proc/self/statm`), its live tasks (tokio's runtime metrics), its batch queues and
//! its metric series. Bounds are counts and ratios, never times. Then the wait for signature
//! metadata that types REST JSON, on a paused clock.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use infergate::backend::{
    Backend, BackendError, BackendFuture, ModelMetadata, ModelTarget, SignatureInfo, TensorSpec,
    VersionChoice, VersionStatus,
};
use infergate::config::ModelConfig;
use infergate::metrics::ModelMetrics;
use infergate::pipeline::{self, PredictCall};
use infergate::routes::{Fingerprint, Parts, Route};
use infergate::tensor::NamedTensors;
use serde_json::json;
use support::*;

/// RSS is the whole process's: cases run one at a time, each against its own gateway.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Requests per case, after a warm-up of a tenth as many (so allocator pools, connections and
/// the bounded structures are at their working size before the first measurement).
const HOSTILE: usize = 10_000;
/// Clients sending at once.
const CONCURRENCY: usize = 8;
/// What 10,000 hostile requests may add to resident memory: 1.6 KB per request on average,
/// a third of the smallest leak the issue measured (5 KB per distinct version).
const RSS_BUDGET: usize = 16 << 20;
/// Tasks beyond the bounded structures' own (connections coming and going, timers).
const TASK_SLACK: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Probe {
    rss: usize,
    tasks: usize,
}

/// Resident bytes (statm's second field, in pages of 4 KiB on Linux x86-64 and arm64) and
/// live tasks of this runtime.
fn probe() -> Probe {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm resident pages");
    Probe {
        rss: pages * 4096,
        tasks: tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
    }
}

/// One keep-alive client for a whole case, so its own connections don't count as growth.
#[derive(Clone)]
struct Hostile {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Hostile {
    fn new(gw: &TestGateway) -> Self {
        Self {
            // The gateway closes an HTTP/1.1 connection that waits longer than
            // `server.header_timeout_ms` (10 s) for its next request; a pooled connection idle
            // that long (a phase's pause on a loaded machine) could be reused just as it
            // closes, and the POST would fail with no answer. Retire idle ones well before.
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(5))
                .build_http(),
            base: gw.url.clone(),
        }
    }

    async fn post(&self, path: &str, body: String) -> StatusCode {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.base))
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let response = self.client.request(request).await.expect("HTTP request");
        let status = response.status();
        response.into_body().collect().await.expect("body");
        status
    }

    /// Sends requests `from..to` built by `make(i)` (path, body), `CONCURRENCY` at a time;
    /// answers counted by status.
    async fn drive(
        &self,
        from: usize,
        to: usize,
        make: &(dyn Fn(usize) -> (String, String) + Sync),
    ) -> BTreeMap<u16, usize> {
        use futures::StreamExt;
        let statuses: Vec<StatusCode> = futures::stream::iter(from..to)
            .map(|i| {
                let (path, body) = make(i);
                async move { self.post(&path, body).await }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut counts = BTreeMap::new();
        for s in statuses {
            *counts.entry(s.as_u16()).or_default() += 1;
        }
        counts
    }
}

/// Metric series exported now (sample lines of `GET /metrics`, without their values).
async fn series(gw: &TestGateway) -> std::collections::BTreeSet<String> {
    let text = gw.get("/metrics").await.text();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.rsplit_once(' ').map_or(l, |(name, _)| name).to_string())
        .collect()
}

/// Series that may appear during the measured 10,000 requests: closed-set labels whose first
/// occurrence depends on timing (a batch closed by size rather than by time, on a busy
/// machine). A client-driven series would add one per request, thousands.
const SERIES_SLACK: usize = 8;

/// What a case left behind.
struct Outcome {
    statuses: BTreeMap<u16, usize>,
    before: Probe,
    after: Probe,
    series_before: std::collections::BTreeSet<String>,
    series_after: std::collections::BTreeSet<String>,
    queues: usize,
}

/// Warms up with `HOSTILE / 10` requests, measures, sends `HOSTILE` more, measures again.
async fn hostile(
    gw: &TestGateway,
    name: &str,
    make: &(dyn Fn(usize) -> (String, String) + Sync),
) -> Outcome {
    let client = Hostile::new(gw);
    client.drive(0, HOSTILE / 10, make).await;
    let series_before = series(gw).await;
    let before = probe();
    let statuses = client
        .drive(HOSTILE / 10, HOSTILE / 10 + HOSTILE, make)
        .await;
    let after = probe();
    let series_after = series(gw).await;
    let queues = gw
        .gateway
        .routes()
        .snapshot()
        .get("m")
        .map_or(0, |r| r.batcher.queue_count());
    eprintln!(
        "{name}: {HOSTILE} requests answered {statuses:?}; RSS {} -> {} KiB ({:+} KiB, {:.3}x); \
         tasks {} -> {}; metric series {} -> {}; batch queues {queues}",
        before.rss >> 10,
        after.rss >> 10,
        (after.rss as i64 - before.rss as i64) >> 10,
        after.rss as f64 / before.rss as f64,
        before.tasks,
        after.tasks,
        series_before.len(),
        series_after.len(),
    );
    Outcome {
        statuses,
        before,
        after,
        series_before,
        series_after,
        queues,
    }
}

impl Outcome {
    /// The bounds every case must keep: memory within the budget, tasks within the bounded
    /// queues plus slack, at most `SERIES_SLACK` new metric series, queues within `max_queues`.
    fn within_bounds(&self, max_queues: usize) {
        let grown = self.after.rss.saturating_sub(self.before.rss);
        assert!(
            grown <= RSS_BUDGET,
            "RSS grew {} KiB over {HOSTILE} requests (budget {} KiB)",
            grown >> 10,
            RSS_BUDGET >> 10
        );
        assert!(
            self.after.tasks <= self.before.tasks + max_queues + TASK_SLACK,
            "tasks {} -> {}",
            self.before.tasks,
            self.after.tasks
        );
        let added: Vec<&String> = self.series_after.difference(&self.series_before).collect();
        assert!(
            added.len() <= SERIES_SLACK,
            "hostile requests minted {} metric series: {added:?}",
            added.len()
        );
        assert!(self.queues <= max_queues, "{} batch queues", self.queues);
    }

    fn all(&self, status: u16) {
        assert_eq!(
            self.statuses,
            BTreeMap::from([(status, HOSTILE)]),
            "every request should be answered {status}"
        );
    }
}

/// The echo fixture (pre and post plugin) over a fake TF Serving with versions 1 and 2.
async fn echo_gateway() -> (FakeServer, TestGateway) {
    let backend = FakeBackend::new([identity()]).start().await.unwrap();
    let toml = "backend = \"tfs\"\nmodel = \"m\"\nplugin = \"plugin.wasm\"\n";
    let gw = gateway()
        .backend("tfs", &backend.url())
        .model("m", toml)
        .file("m", "plugin.wasm", std::fs::read(fixture("echo")).unwrap())
        .start()
        .await
        .unwrap();
    (backend, gw)
}

fn echo_body() -> String {
    json!({ "inputs": { "x": { "dtype": "f32", "shape": [1, 2], "values": [1, 2] } } }).to_string()
}

/// A new version number in every URL, each answered 404 by the backend: before, each one
/// kept a batch queue and its task (about 5 KB) for the life of the route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_versions_keep_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (_backend, gw) = echo_gateway().await;
    let body = echo_body();
    let outcome = hostile(&gw, "versions", &|i| {
        (
            format!("/v1/models/m/versions/{}:predict", i + 100),
            body.clone(),
        )
    })
    .await;
    outcome.all(404);
    outcome.within_bounds(64);
}

/// A new version label in every URL, each a 400 from the backend: before, each one kept a
/// queue, a task and a metric series of its own (about 10 KB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_labels_keep_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (_backend, gw) = echo_gateway().await;
    let body = echo_body();
    let outcome = hostile(&gw, "labels", &|i| {
        (format!("/v1/models/m/labels/l{i}:predict"), body.clone())
    })
    .await;
    outcome.all(400);
    outcome.within_bounds(64);
    let text = gw.get("/metrics").await.text();
    assert!(
        text.contains("version=\"other\"") && !text.contains("label:l1"),
        "labels the backend never served must be counted as `other`"
    );
}

/// A REST model (no plugins) over a fake identity model with inputs `x: f32 [-1, -1]`.
async fn rest_gateway(batching: &str, model: FakeModel) -> (FakeServer, TestGateway) {
    let backend = FakeBackend::new([model]).start().await.unwrap();
    let toml = format!("backend = \"tfs\"\nmodel = \"m\"\n[batching]\n{batching}\n");
    let gw = gateway()
        .backend("tfs", &backend.url())
        .model("m", &toml)
        .start()
        .await
        .unwrap();
    (backend, gw)
}

/// A new inner shape in every request (widths 1 to 3,000), all served: before, each shape
/// kept a queue and its task for the life of the route; now at most `max_queues` are open
/// and the other shapes go unbatched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_shapes_keep_bounded_queues() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (_backend, gw) = rest_gateway("max_queues = 16", identity()).await;
    let outcome = hostile(&gw, "shapes", &|i| {
        let width = i % 3000 + 1;
        let row = vec![1.0f32; width];
        (
            "/v1/models/m:predict".to_string(),
            json!({ "instances": [row] }).to_string(),
        )
    })
    .await;
    outcome.all(200);
    outcome.within_bounds(16);
}

/// A made-up signature in every request: answered 400 from the cached metadata, with no
/// backend call and nothing kept per name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_signatures_are_400_and_keep_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (_backend, gw) = rest_gateway("", identity()).await;
    let outcome = hostile(&gw, "signatures", &|i| {
        (
            "/v1/models/m:predict".to_string(),
            json!({ "signature_name": format!("s{i}"), "instances": [[1.0, 2.0]] }).to_string(),
        )
    })
    .await;
    outcome.all(400);
    outcome.within_bounds(64);
}

/// The abort: `[1, 1, N]` and `[1, N, 1]` sent together to a model with
/// `pad_variable_length`, whose padded batch would be `[2, N, N]` (N = 6,000: 288 MB, over
/// `max_batch_bytes`). Every request is answered and nothing that size is ever allocated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn padding_explosion_is_refused_not_allocated() {
    let _one = ONE_AT_A_TIME.lock().await;
    let model = FakeModel::new("m")
        .input("x", DType::F32, &[-1, -1, -1])
        .output("y", DType::F32, &[-1, -1, -1])
        .compute(|inputs| Ok(vec![("y".into(), inputs[0].1.clone())]));
    let (_backend, gw) = rest_gateway("pad_variable_length = true", model).await;
    const N: usize = 6000;
    let wide = json!({ "inputs": { "x": [[vec![1.0f32; N]]] } }).to_string();
    let tall = json!({ "inputs": { "x": [vec![[1.0f32]; N]] } }).to_string();
    let outcome = hostile(&gw, "padding", &|i| {
        let body = if i % 2 == 0 {
            wide.clone()
        } else {
            tall.clone()
        };
        ("/v1/models/m:predict".to_string(), body)
    })
    .await;
    outcome.all(200);
    outcome.within_bounds(64);
}

/// A backend whose metadata call is counted and, when `gated`, waits for `open` and knows
/// only the latest version (ungated: every version has signature `serving_default`);
/// predictions double `x`.
struct GatedMetadata {
    fake: infergate::fake::InProcess,
    open: Arc<tokio::sync::Notify>,
    calls: Arc<AtomicUsize>,
    gated: bool,
}

/// One signature, `serving_default`, with input `x: f32 [-1, 2]`.
fn one_signature() -> ModelMetadata {
    let spec = TensorSpec {
        name: "x:0".into(),
        dtype: Some(DType::F32),
        dtype_name: "DT_FLOAT".into(),
        shape: Some(vec![-1, 2]),
    };
    let signature = SignatureInfo {
        inputs: BTreeMap::from([("x".to_string(), spec)]),
        ..SignatureInfo::default()
    };
    ModelMetadata {
        name: "m".into(),
        version: Some(1),
        signatures: BTreeMap::from([("serving_default".to_string(), signature)]),
    }
}

impl Backend for GatedMetadata {
    fn predict<'a>(
        &'a self,
        target: &'a ModelTarget,
        inputs: &'a NamedTensors,
        deadline: Option<Duration>,
    ) -> BackendFuture<'a, NamedTensors> {
        self.fake.predict(target, inputs, deadline)
    }

    fn status<'a>(&'a self, _: &'a ModelTarget) -> BackendFuture<'a, Vec<VersionStatus>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    fn metadata<'a>(&'a self, target: &'a ModelTarget) -> BackendFuture<'a, ModelMetadata> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if !self.gated {
                return Ok(one_signature());
            }
            self.open.notified().await;
            if target.version != VersionChoice::Latest {
                return Err(BackendError::new(tonic::Code::NotFound, "no such version"));
            }
            Ok(one_signature())
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}

fn rest_call(body: &str) -> PredictCall {
    PredictCall {
        version: VersionChoice::Latest,
        method: "POST".into(),
        path: "/v1/models/m:predict".into(),
        query: String::new(),
        headers: Vec::new(),
        body: Bytes::from(body.to_string()),
        request_id: "t".into(),
    }
}

/// Metadata lookups for REST typing are bounded like queued requests: with the backend's
/// metadata call hanging, 200 requests naming an unknown signature make one metadata call;
/// `max_enqueued` (16) of them wait for it and the other 184 are refused at once (429).
/// Once the metadata answers, the 16 get 400 (the signature doesn't exist), and later
/// requests get 400 at once from the cached metadata, without another backend call.
#[tokio::test(start_paused = true)]
async fn metadata_waits_are_bounded_and_unknown_signatures_are_400() {
    let open = Arc::new(tokio::sync::Notify::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let backend = GatedMetadata {
        fake: FakeBackend::new([doubler()]).in_process(Duration::from_secs(30)),
        open: open.clone(),
        calls: calls.clone(),
        gated: true,
    };
    let config: ModelConfig =
        toml::from_str("backend = \"b\"\nmodel = \"m\"\n[batching]\nmax_enqueued = 16\n").unwrap();
    let route = Arc::new(Route::build(Parts {
        name: "m".into(),
        dir: std::env::temp_dir(),
        config,
        backend: Arc::new(backend),
        pre: None,
        post: None,
        metrics: ModelMetrics::detached("m"),
        fingerprint: Fingerprint([0; 32]),
    }));
    let unknown = r#"{"signature_name": "nope", "instances": [[1, 2]]}"#;
    let waiting: Vec<_> = (0..200)
        .map(|_| tokio::spawn(pipeline::predict(route.clone(), rest_call(unknown))))
        .collect();
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one metadata call for all");
    assert_eq!(route.batcher.queued(), 16, "waits hold queue places");
    open.notify_waiters();
    let mut statuses = BTreeMap::new();
    for h in waiting {
        let status = match h.await.unwrap() {
            Ok(reply) => reply.status.as_u16(),
            Err(e) => e.status().as_u16(),
        };
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert_eq!(statuses, BTreeMap::from([(400, 16), (429, 184)]));
    assert_eq!(route.batcher.queued(), 0);
    let err = pipeline::predict(route.clone(), rest_call(unknown))
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    assert!(err.to_string().contains("no signature `nope`"), "{err}");
    let served = pipeline::predict(route.clone(), rest_call(r#"{"instances": [[1, 2]]}"#))
        .await
        .unwrap();
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "answered from the cache");
}

/// The metadata cache keeps at most `MAX_CACHED_VERSIONS` versions, dropping the oldest:
/// 100 versions that all exist leave 16 cached, the newest of them, and asking for a dropped
/// one again is a new backend call.
#[tokio::test]
async fn metadata_cache_keeps_a_bounded_number_of_versions() {
    use infergate::routes::{MAX_CACHED_VERSIONS, SpecCache};
    let calls = Arc::new(AtomicUsize::new(0));
    let backend: Arc<dyn Backend> = Arc::new(GatedMetadata {
        fake: FakeBackend::new([doubler()]).in_process(Duration::from_secs(30)),
        open: Arc::default(),
        calls: calls.clone(),
        gated: false,
    });
    let target = |n: i64| ModelTarget {
        name: "m".into(),
        version: VersionChoice::Number(n),
        signature: "serving_default".into(),
    };
    let cache = SpecCache::default();
    for n in 0..100 {
        let signatures = cache.get(&backend, target(n)).await.unwrap();
        assert!(signatures.contains_key("serving_default"));
        assert!(cache.len() <= MAX_CACHED_VERSIONS, "{} cached", cache.len());
    }
    assert_eq!(cache.len(), MAX_CACHED_VERSIONS);
    assert_eq!(calls.load(Ordering::SeqCst), 100);
    assert!(
        cache.cached(&VersionChoice::Number(99)).is_some(),
        "the newest stays"
    );
    assert!(
        cache.cached(&VersionChoice::Number(0)).is_none(),
        "the oldest went"
    );
    cache.get(&backend, target(99)).await.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        100,
        "a cached version costs no call"
    );
    cache.get(&backend, target(0)).await.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        101,
        "a dropped version is asked again"
    );
    assert_eq!(cache.len(), MAX_CACHED_VERSIONS);
}

/// The public listener shows no host paths and no warm-up file content: a folder whose
/// warm-up body is a secret that isn't JSON fails with the status and a short reason (before,
/// the REST error quoted the text near the syntax error), and every path on the public
/// listener is relative to the plugins directory. The admin listener keeps full paths.
#[tokio::test]
async fn public_listener_shows_relative_paths_and_no_warmup_content() {
    // It compiles a plugin: not while another case measures the process's memory.
    let _one = ONE_AT_A_TIME.lock().await;
    let backend = FakeBackend::new([identity()]).start().await.unwrap();
    let echo = "backend = \"tfs\"\nmodel = \"m\"\nplugin = \"plugin.wasm\"\n";
    let secret = "root:x:0:0:SECRET-LINE:/root:/bin/bash";
    let gw = gateway()
        .backend("tfs", &backend.url())
        .model("m", echo)
        .file("m", "plugin.wasm", std::fs::read(fixture("echo")).unwrap())
        .start()
        .await
        .unwrap();
    // Warm-up gates a reloaded version: add the folder and rescan.
    let w = gw.plugins_dir().join("w");
    std::fs::create_dir_all(&w).unwrap();
    std::fs::write(w.join("secret.txt"), secret).unwrap();
    std::fs::write(
        w.join("model.toml"),
        "backend = \"tfs\"\nmodel = \"m\"\nwarmup = \"secret.txt\"\n",
    )
    .unwrap();
    let report = gw.admin_post("/admin/reload").await.json();
    assert!(report["failed"]["w"].is_string(), "{report}");
    let root = gw.plugins_dir().canonicalize().unwrap();
    let root = root.display().to_string();
    let spelled = gw.plugins_dir().display().to_string();
    let list = gw.get("/v1/models").await;
    let text = list.text();
    assert!(!text.contains(&root) && !text.contains(&spelled), "{text}");
    let list = list.json();
    let error = list["failures"]["w"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("warmup") && error.contains("400"), "{error}");
    assert!(
        !error.contains("SECRET") && !error.contains("root:x"),
        "{error}"
    );
    let m = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "m")
        .unwrap();
    assert_eq!(m["pre"]["path"], "m/plugin.wasm");
    let why = gw.post("/v1/models/w:predict", echo_body()).await;
    assert_eq!(why.status, StatusCode::NOT_FOUND);
    let why = why.text();
    assert!(why.contains("warmup") && !why.contains("SECRET"), "{why}");
    assert!(!why.contains(&root) && !why.contains(&spelled), "{why}");
    let status = gw.get("/v1/models/m").await.text();
    assert!(
        status.contains("m/plugin.wasm") && !status.contains(&root),
        "{status}"
    );
    let admin = gw.admin_get("/admin/routes", &[]).await.text();
    assert!(
        admin.contains(&format!("{root}/m/plugin.wasm"))
            || admin.contains(&format!("{spelled}/m/plugin.wasm")),
        "the admin listener shows full paths: {admin}"
    );
}
