//! Test harness: a gateway on port 0 over a temporary plugin directory, a fake TF Serving,
//! fixture plugins, and a small HTTP client.

#![allow(dead_code, unused_imports)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use infergate::{Gateway, GatewayConfig, StartError};
use tokio::net::TcpListener;

pub use infergate::fake::{FakeBackend, FakeModel, FakeServer};
pub use infergate::tensor::{DType, Tensor};

/// A built fixture plugin from `tests/plugins` (see `scripts/build-plugins.sh`).
pub fn fixture(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/plugins/wasm")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-plugins.sh first",
        path.display()
    );
    path
}

/// The file name a fixture plugin is copied to in a model folder: `<name>.wasm`.
pub fn wasm(name: &str) -> String {
    format!("{name}.wasm")
}

/// The example digits plugin.
pub fn digits_plugin() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins/digits/plugin.wasm");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-plugins.sh first",
        path.display()
    );
    path
}

/// The example digits model as ONNX (`scripts/train_digits.py` writes it; committed).
pub fn digits_onnx() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins/digits/model.onnx")
}

/// A bundled example image (`examples/images/<name>`).
pub fn example_image(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/images")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Builds a gateway config in a temp dir: backends by URL, model folders by `model.toml` text.
#[derive(Default)]
pub struct GatewayBuilder {
    backends: Vec<(String, String, u64)>,
    backend_tables: Vec<(String, String)>,
    onnx_backends: Vec<String>,
    kserve_v2_backends: Vec<(String, String)>,
    models: Vec<(String, String)>,
    files: Vec<(String, String, Vec<u8>)>,
    max_body_bytes: Option<usize>,
    plugins: String,
    server: String,
    extra: String,
    workers: Option<usize>,
}

pub fn gateway() -> GatewayBuilder {
    GatewayBuilder::default()
}

impl GatewayBuilder {
    /// A `tfserving` backend named `name` at `url`, with a 5 s call timeout.
    pub fn backend(self, name: &str, url: &str) -> Self {
        self.backend_with_timeout(name, url, 5000)
    }

    pub fn backend_with_timeout(mut self, name: &str, url: &str, timeout_ms: u64) -> Self {
        self.backends.push((name.into(), url.into(), timeout_ms));
        self
    }

    /// A backend named `name` whose `[backends.<name>]` table holds `toml` (its keys, and
    /// sub-tables such as `[backends.<name>.health]` after them).
    pub fn backend_config(mut self, name: &str, toml: &str) -> Self {
        self.backend_tables.push((name.into(), toml.into()));
        self
    }

    /// A `kserve_v2` backend (Open Inference Protocol over gRPC) named `name` at `url`, with a
    /// 5 s call timeout.
    pub fn kserve_v2_backend(mut self, name: &str, url: &str) -> Self {
        self.kserve_v2_backends.push((name.into(), url.into()));
        self
    }

    /// An `onnx` backend (in process) named `name`, with two inference threads.
    pub fn onnx_backend(mut self, name: &str) -> Self {
        self.onnx_backends.push(name.into());
        self
    }

    /// A file `file` holding `bytes` in model folder `model`, written before the gateway starts.
    pub fn file(mut self, model: &str, file: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.files.push((model.into(), file.into(), bytes.into()));
        self
    }

    /// Copies fixture plugin `name` into model folder `model` as `<name>.wasm` (see [`wasm`]):
    /// a model.toml may name only files inside its own folder.
    pub fn fixture_plugin(self, model: &str, name: &str) -> Self {
        let bytes = std::fs::read(fixture(name)).expect("fixture plugin");
        self.file(model, &wasm(name), bytes)
    }

    /// A model folder `name` whose `model.toml` is `toml`.
    pub fn model(mut self, name: &str, toml: &str) -> Self {
        self.models.push((name.into(), toml.into()));
        self
    }

    /// Extra lines for the `[plugins]` table (watch mode, debounce).
    pub fn plugins_config(mut self, lines: &str) -> Self {
        self.plugins = lines.to_string();
        self
    }

    /// Extra lines for the `[server]` table (admin token, drain timeout).
    /// Spreads the public listener's connections over `n` workers (the test's runtime is
    /// worker 0), as `infergate serve` does with `server.workers`.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    pub fn server_config(mut self, lines: &str) -> Self {
        self.server = lines.to_string();
        self
    }

    /// Tables appended to gateway.toml after everything else (`[auth]`, …).
    pub fn extra_config(mut self, text: &str) -> Self {
        self.extra = text.to_string();
        self
    }

    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = Some(n);
        self
    }

    /// Writes the files and returns the config path (and the dir that owns them).
    pub fn write(&self) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut text = String::from("[server]\nlisten = \"127.0.0.1:0\"\n");
        if !self.server.contains("admin_listen") {
            text += "admin_listen = \"127.0.0.1:0\"\n";
        }
        if let Some(n) = self.max_body_bytes {
            text += &format!("max_body_bytes = {n}\n");
        }
        text += &self.server;
        text += "\n";
        // A cache per test keeps tests hermetic (and exercises the cache on every load).
        text += &format!(
            "[plugins]\ndir = \"plugins\"\ncache_dir = \"cache\"\n{}\n",
            self.plugins
        );
        for (name, url, timeout) in &self.backends {
            text += &format!(
                "[backends.{name}]\nkind = \"tfserving\"\nendpoints = [\"{url}\"]\ntimeout_ms = {timeout}\n"
            );
        }
        for (name, toml) in &self.backend_tables {
            text += &format!("[backends.{name}]\n{toml}\n");
        }
        for (name, url) in &self.kserve_v2_backends {
            text += &format!(
                "[backends.{name}]\nkind = \"kserve_v2\"\nendpoints = [\"{url}\"]\ntimeout_ms = 5000\n"
            );
        }
        for name in &self.onnx_backends {
            text += &format!("[backends.{name}]\nkind = \"onnx\"\nthreads = 2\n");
        }
        text += &self.extra;
        std::fs::create_dir_all(dir.path().join("plugins")).expect("plugins dir");
        for (name, toml) in &self.models {
            let model_dir = dir.path().join("plugins").join(name);
            std::fs::create_dir_all(&model_dir).expect("model dir");
            std::fs::write(model_dir.join("model.toml"), toml).expect("model.toml");
        }
        for (model, file, bytes) in &self.files {
            let model_dir = dir.path().join("plugins").join(model);
            std::fs::create_dir_all(&model_dir).expect("model dir");
            std::fs::write(model_dir.join(file), bytes).expect("model folder file");
        }
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, text).expect("gateway.toml");
        (dir, path)
    }

    /// Loads the config and serves it on port 0.
    pub async fn start(self) -> Result<TestGateway, StartError> {
        let workers = self
            .workers
            .map(|n| infergate::workers::Workers::start(n).expect("starting workers"));
        let (dir, path) = self.write();
        let config = GatewayConfig::load(&path)?;
        let gateway = tokio::task::spawn_blocking(move || Gateway::load(config))
            .await
            .expect("load task")?;
        let public = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let url = format!("http://{}", public.local_addr().expect("addr"));
        let admin_url = format!("http://{}", admin.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let gateway = Arc::new(gateway);
        let task = tokio::spawn(infergate::run_on(
            gateway.clone(),
            public,
            admin,
            async move {
                let _ = stopped.await;
            },
            workers.clone(),
        ));
        Ok(TestGateway {
            url,
            admin_url,
            gateway,
            workers,
            dir,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

pub struct TestGateway {
    pub url: String,
    pub admin_url: String,
    pub gateway: Arc<Gateway>,
    /// The workers its connections run on, when started with [`GatewayBuilder::workers`].
    pub workers: Option<infergate::workers::Workers>,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestGateway {
    pub async fn post(&self, path: &str, body: impl Into<Bytes>) -> Reply {
        send(
            Method::POST,
            &format!("{}{path}", self.url),
            body.into(),
            &[],
        )
        .await
    }

    pub async fn post_with(
        &self,
        path: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> Reply {
        send(
            Method::POST,
            &format!("{}{path}", self.url),
            body.into(),
            headers,
        )
        .await
    }

    /// The gateway's plugin directory (one folder per model).
    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    pub async fn admin_post(&self, path: &str) -> Reply {
        send(
            Method::POST,
            &format!("{}{path}", self.admin_url),
            Bytes::new(),
            &[],
        )
        .await
    }

    pub async fn admin_get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        send(
            Method::GET,
            &format!("{}{path}", self.admin_url),
            Bytes::new(),
            headers,
        )
        .await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        send(
            Method::GET,
            &format!("{}{path}", self.url),
            Bytes::new(),
            headers,
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        send(
            Method::GET,
            &format!("{}{path}", self.url),
            Bytes::new(),
            &[],
        )
        .await
    }

    /// Stops accepting and waits for in-flight requests to drain.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// An HTTP response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `error` message of a JSON error body.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field in {:?}", self.body))
            .to_string()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn send(method: Method, url: &str, body: Bytes, headers: &[(&str, &str)]) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(Full::new(body)).expect("request");
    let response = client.request(request).await.expect("HTTP request");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// A fake model `m` computing `y = 2x` over `x: f32 [-1, 2]`, with versions 1 and 2 and a
/// `stable` label on 1.
pub fn doubler() -> FakeModel {
    FakeModel::new("m")
        .versions(&[1, 2])
        .label("stable", 1)
        .input("x", DType::F32, &[-1, 2])
        .output("y", DType::F32, &[-1, 2])
        .compute(|inputs| {
            let x = inputs
                .iter()
                .find(|(n, _)| n == "x")
                .map(|(_, t)| t)
                .expect("validated");
            let y: Vec<f32> = x.to_f32().expect("f32").iter().map(|v| v * 2.0).collect();
            Ok(vec![(
                "y".into(),
                Tensor::from_f32(x.shape().to_vec(), &y).expect("shape"),
            )])
        })
}

/// A fake model `m` returning its input `x` (f32, any shape with a dim 0) as `y`.
pub fn identity() -> FakeModel {
    FakeModel::new("m")
        .input("x", DType::F32, &[-1, -1])
        .output("y", DType::F32, &[-1, -1])
        .compute(|inputs| {
            let x = inputs
                .iter()
                .find(|(n, _)| n == "x")
                .map(|(_, t)| t.clone())
                .expect("validated");
            Ok(vec![("y".into(), x)])
        })
}

/// Polls `check` every 20 ms until it returns true, failing after `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A running gateway process and the addresses it printed.
pub struct Served {
    pub child: Child,
    pub url: String,
    pub admin_url: String,
}

/// Starts `infergate serve --config CONFIG ARGS…` (log level info, access lines on, stderr to
/// `stderr`) and
/// waits for it to print both addresses.
pub fn serve_process(config: &std::path::Path, args: &[&str], stderr: Stdio) -> Served {
    serve_process_logging(config, args, stderr, Some("info,infergate::access=debug"))
}

/// [`serve_process`] with `RUST_LOG` set to `filter`, or with the gateway's default filter
/// (`RUST_LOG` and `NO_COLOR` removed) for `None`.
pub fn serve_process_logging(
    config: &std::path::Path,
    args: &[&str],
    stderr: Stdio,
    filter: Option<&str>,
) -> Served {
    let mut command = Command::new(env!("CARGO_BIN_EXE_infergate"));
    command
        .args(["serve", "--config"])
        .arg(config)
        .args(args)
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(stderr);
    match filter {
        Some(filter) => command.env("RUST_LOG", filter),
        None => command.env_remove("RUST_LOG"),
    };
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = None;
    let mut admin_url = None;
    while url.is_none() || admin_url.is_none() {
        let line = lines
            .next()
            .expect("gateway exited before listening")
            .unwrap();
        if let Some(u) = line.strip_prefix("infergate listening on ") {
            url = Some(u.to_string());
        } else if let Some(u) = line.strip_prefix("infergate admin on ") {
            admin_url = Some(u.to_string());
        }
    }
    Served {
        child,
        url: url.unwrap(),
        admin_url: admin_url.unwrap(),
    }
}

pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
