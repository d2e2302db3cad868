//! Starting every server of the comparison as a child process: the fake backend, the gateway
//! (plugins, pass-through, ONNX), the Python peers (Tornado, mosec, Triton) and real
//! TensorFlow; and the request each one is sent.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;

use crate::Args;
use crate::load::Target;
use crate::procs::Server;

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Starts this binary as the fake backend; the server and its `HOST:PORT`.
pub fn start_fake(args: &Args) -> anyhow::Result<(Server, String)> {
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

pub fn gateway_binary(args: &Args) -> anyhow::Result<PathBuf> {
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
    // Absolute: the gateway starts in its config's temp dir.
    Ok(path.canonicalize()?)
}

/// What a run may set on the gateway rows beyond the defaults, as an operator would.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// `server.workers`.
    pub workers: Option<usize>,
    /// The digits model's `limits.max_running_calls`.
    pub running_calls: Option<u32>,
    /// The digits model's `[reuse] max_calls` (warm instances; off by default).
    pub reuse: Option<u32>,
}

/// A temp dir with `gateway.toml` and `plugins/digits/model.toml` (with the example plugin when
/// `plugins`, else a REST pass-through), batching on, and the [`Tuning`] given.
pub fn gateway_config(
    backend: &str,
    plugins: bool,
    tuning: Tuning,
) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let workers = tuning
        .workers
        .map_or(String::new(), |n| format!("workers = {n}\n"));
    let gateway = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{workers}\
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
    if let Some(running) = tuning.running_calls {
        model.push_str(&format!("[limits]\nmax_running_calls = {running}\n"));
    }
    if let Some(calls) = tuning.reuse {
        model.push_str(&format!("[reuse]\nmax_calls = {calls}\n"));
    }
    std::fs::write(folder.join("model.toml"), model)?;
    Ok(dir)
}

/// Setup 1 on the embedded backend: the digits plugin and `plugins/digits/model.onnx`.
pub fn onnx_config() -> anyhow::Result<tempfile::TempDir> {
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

/// `infergate serve` on `dir`'s config; the server and its URL. `env` is added to the
/// gateway's environment (`INFERGATE_PERFMAP=1` for profiles).
pub fn start_gateway(
    bin: &Path,
    dir: &tempfile::TempDir,
    env: &[(&str, &str)],
) -> anyhow::Result<(Server, String)> {
    let mut command = Command::new(bin);
    command
        .arg("serve")
        .arg("--config")
        .arg(dir.path().join("gateway.toml"))
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied());
    Server::start(
        "infergate",
        command,
        "infergate listening on ",
        Duration::from_secs(60),
    )
}

/// The Python that runs the peers: the bench venv bench/run makes (its requirements are
/// bench/requirements.txt), with the TF Serving stubs on `--pythonpath`.
fn peer_python(args: &Args, script: &str) -> Command {
    let home = std::env::var("HOME").unwrap_or_default();
    let python = args
        .python
        .clone()
        .unwrap_or_else(|| Path::new(&home).join(".cache/infergate/bench-venv/bin/python"));
    let mut command = Command::new(python);
    command.arg(root().join("bench").join(script));
    if let Some(path) = &args.pythonpath {
        command.env("PYTHONPATH", path);
    }
    command
}

/// A Python peer on `backend`; the server and its base URL. Startup may take a while: mosec
/// spawns its workers, Triton loads its Python backend.
pub fn start_peer(args: &Args, peer: Peer, backend: &str) -> anyhow::Result<(Server, String)> {
    let (script, ready) = match peer {
        Peer::Tornado { .. } => ("tornado_app.py", "tornado listening on "),
        Peer::Mosec => ("mosec_app.py", "mosec listening on "),
        Peer::Triton => ("triton_app.py", "triton listening on "),
    };
    let mut command = peer_python(args, script);
    command.args(["--backend", backend]);
    if let Peer::Tornado { procs } = peer {
        command.args(["--procs", &procs.to_string()]);
    }
    let (server, addr) = Server::start(script, command, ready, Duration::from_secs(180))?;
    Ok((server, format!("http://{addr}")))
}

#[derive(Clone, Copy)]
pub enum Peer {
    Tornado { procs: usize },
    Mosec,
    Triton,
}

impl Peer {
    /// Setup number and row name.
    pub fn name(self) -> String {
        match self {
            Peer::Tornado { procs } => format!("2 tornado x{procs}"),
            Peer::Mosec => "7 mosec".into(),
            Peer::Triton => "8 triton".into(),
        }
    }

    /// What a successful answer contains.
    pub fn expect(self) -> &'static str {
        match self {
            Peer::Tornado { .. } | Peer::Mosec => "predictions",
            Peer::Triton => "\"labels\"",
        }
    }

    /// The request for the digits PNG `png`, in this peer's API.
    pub fn target(self, base: &str, png: &Bytes, bodies: &Bodies) -> anyhow::Result<Target> {
        match self {
            Peer::Tornado { .. } => http_target(
                &format!("{base}/v1/models/digits:predict"),
                png,
                "image/png",
                bodies,
            ),
            Peer::Mosec => http_target(&format!("{base}/inference"), png, "image/png", bodies),
            Peer::Triton => triton_target(base, png, bodies),
        }
    }
}

/// Request bodies as files, for wrk to read.
pub struct Bodies {
    dir: tempfile::TempDir,
    written: std::cell::Cell<usize>,
}

impl Bodies {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
            written: std::cell::Cell::new(0),
        })
    }

    fn write(&self, body: &[u8]) -> anyhow::Result<PathBuf> {
        let n = self.written.get();
        self.written.set(n + 1);
        let path = self.dir.path().join(format!("body-{n}"));
        std::fs::write(&path, body)?;
        Ok(path)
    }
}

/// A POST of `body` to `url`, the body also written to a file for wrk.
pub fn http_target(
    url: &str,
    body: &Bytes,
    content_type: &'static str,
    bodies: &Bodies,
) -> anyhow::Result<Target> {
    Ok(Target::Http {
        uri: url.parse()?,
        body: body.clone(),
        content_type,
        headers: Vec::new(),
        body_file: bodies.write(body)?,
    })
}

/// KServe v2 `infer` with the PNG as a BYTES tensor `image` [1, 1] in the binary tensor
/// extension (a JSON header, then the tensor's bytes: a u32 little-endian length and the
/// PNG), the way `tritonclient.http` sends it; the outputs come back as JSON.
fn triton_target(base: &str, png: &Bytes, bodies: &Bodies) -> anyhow::Result<Target> {
    let header = serde_json::json!({
        "inputs": [{
            "name": "image",
            "shape": [1, 1],
            "datatype": "BYTES",
            "parameters": { "binary_data_size": png.len() + 4 },
        }],
        "outputs": [{ "name": "labels" }, { "name": "scores" }],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&u32::try_from(png.len())?.to_le_bytes());
    body.extend_from_slice(png);
    Ok(Target::Http {
        uri: format!("{base}/v2/models/digits/infer").parse()?,
        body_file: bodies.write(&body)?,
        body: Bytes::from(body),
        content_type: "application/octet-stream",
        headers: vec![("Inference-Header-Content-Length", header.len().to_string())],
    })
}

/// `scripts/tf_server.py` on `models/digits` (real TensorFlow, from the end-to-end venv).
pub fn start_tf(args: &Args) -> anyhow::Result<(Server, String)> {
    let home = std::env::var("HOME").unwrap_or_default();
    let python = args
        .tf_python
        .clone()
        .unwrap_or_else(|| Path::new(&home).join(".cache/infergate/venv/bin/python"));
    let mut command = Command::new(python);
    command
        .arg(root().join("scripts/tf_server.py"))
        .args(["--port", "0", "--model"])
        .arg(format!("digits={}", root().join("models/digits").display()));
    Server::start(
        "tf_server",
        command,
        "tf_server listening on ",
        Duration::from_secs(180),
    )
}
