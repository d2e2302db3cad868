//! infergate: an inference gateway. HTTP requests are routed by model name to that model's
//! WebAssembly plugins (preprocess: request → tensors; postprocess: tensors → response), and
//! the tensors go to a model server as gRPC `Predict` calls, or to an ONNX model run in process.
//!
//! ```text
//! client ─HTTP─▶ ingress ─▶ routes (snapshot) ─▶ pre plugin ─▶ batcher ─▶ backend
//!                                                      HTTP ◀─ post plugin ◀─ (own rows) ◀─┘
//! ```
//!
//! # Layout
//!
//! - [`config`] — `gateway.toml` and `plugins/<model>/model.toml` as plain data, validated.
//! - [`gateway`] — the running gateway's shared state, built from config before ports open.
//! - [`workers`] — `server.workers`: single-threaded runtimes, one per core, each owning the
//!   connections it is handed (opt-in; the default is tokio's work-stealing runtime).
//! - [`server`] — the accept loop, shared by both listeners: connection cap and timeouts,
//!   lingering close, HTTP/2 stream limit, graceful drain (503 for what outlives it).
//! - [`tls`] — PEM certificates and keys for rustls; the public listener's reloading acceptor.
//! - [`auth`] — API keys (`[auth]`): SHA-256 digests, allowed models, token-bucket rates.
//! - [`ingress`] — the public HTTP API: parses a request (URL grammar, body limit), answers.
//! - [`admin`] — the operator listener.
//! - [`views`] — JSON views of the route table, for both listeners.
//! - [`pipeline`] — one predict request: pre plugin or REST JSON → batcher → post plugin or
//!   REST JSON, and its accounting in the model's metrics.
//! - [`protocol`] — the tensor protocols: TF Serving's gRPC API and the Open Inference
//!   Protocol (KServe v2) over REST and gRPC, through the same routes and batch queues.
//! - [`reply`] — a predict answer before it is an HTTP response.
//! - [`batch`] — coalesces concurrent requests into one backend call, splits the answer.
//! - [`routes`] — a model's route (plugins, backend, batcher) and the table of them, swapped
//!   whole.
//! - [`loader`] — model folder → route: config, fingerprint, plugins, backend, warm-up.
//! - [`reload`] — watches `plugins/`, rebuilds changed folders, swaps the route table.
//! - [`plugin`] — the plugin host (wasmtime): load, sandbox, bound and call plugins.
//! - [`samples`] — offline plugin checks: a model folder's samples through the real pipeline.
//! - [`scaffold`] — `infergate plugin new|build`: standalone plugin projects from `templates/`.
//! - [`backend`] — the seam tensors are run through, and its kinds: `tfserving` (gRPC),
//!   `onnx` (tract, in process, on its own thread pool); what they report (status, metadata).
//! - [`rest`] — TF Serving's REST JSON (`instances`/`inputs`, `predictions`/`outputs`).
//! - [`tensor`] — the one tensor type every format converts to.
//! - [`error`] — every failure and its HTTP status, in one match.
//! - [`metrics`] — the Prometheus series behind `GET /metrics`, per gateway, no globals.
//! - [`proto`] — generated TF Serving protobuf/gRPC code.
//! - `fake` — a fake TF Serving for hermetic tests and benchmarks; only with the
//!   `test-util` feature, never in the release binary.

pub mod admin;
pub mod auth;
pub mod backend;
pub mod batch;
pub mod config;
pub mod error;
#[cfg(feature = "test-util")]
pub mod fake;
pub mod gateway;
pub mod ingress;
pub mod loader;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod proto;
pub mod protocol;
pub mod reload;
pub mod reply;
pub mod rest;
pub mod routes;
pub mod samples;
pub mod scaffold;
pub mod server;
pub mod tensor;
pub mod tls;
pub mod views;
pub mod workers;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::GatewayConfig;
pub use gateway::{Gateway, StartError};

/// Serves `gateway` on the public and admin listeners until `shutdown` resolves, then drains.
/// Both `main` and the tests call this, the tests with listeners on port 0. Every
/// connection runs on the calling runtime; see [`run_on`] for spreading them over workers.
pub async fn run(
    gateway: Arc<Gateway>,
    public: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    run_on(gateway, public, admin, shutdown, None).await;
}

/// [`run`], with the public listener's connections spread over `workers` (`main` starts
/// `server.workers` of them); the admin listener's stay on the calling runtime.
pub async fn run_on(
    gateway: Arc<Gateway>,
    public: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()>,
    workers: Option<workers::Workers>,
) {
    let config = &gateway.config().server;
    let drain = config.drain_timeout();
    let mut public_limits = server::Limits::public(
        config,
        gateway.tls().cloned(),
        gateway.conn_metrics().clone(),
    );
    public_limits.workers = workers;
    let admin_limits = server::Limits::admin(config, gateway.conn_metrics().clone());
    // Health checks run while serving; they stop when the gateway (its backends) is dropped.
    gateway.start_backends();
    let draining = gateway.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let public_gateway = gateway.clone();
    let public = server::serve(
        public,
        move |req| ingress::handle(public_gateway.clone(), req),
        stopped(stop_rx.clone()),
        public_limits,
    );
    // The watcher tasks are owned here and stop with the listeners.
    let watcher = reload::watch(gateway.reloader().clone(), stopped(stop_rx.clone()));
    let tls_watcher = {
        let stop = stopped(stop_rx.clone());
        let tls = gateway.tls().cloned();
        async move {
            if let Some(tls) = tls {
                tls::watch(tls, stop).await;
            }
        }
    };
    let keys_watcher = {
        let stop = stopped(stop_rx.clone());
        let keys = gateway.auth().cloned();
        async move {
            if let Some(keys) = keys {
                auth::watch(keys, stop).await;
            }
        }
    };
    let admin = server::serve(
        admin,
        move |req| admin::handle(gateway.clone(), req),
        stopped(stop_rx),
        admin_limits,
    );
    let signal = async move {
        shutdown.await;
        tracing::info!(
            drain_ms = drain.as_millis() as u64,
            "shutting down: draining"
        );
        draining.start_draining();
        let _ = stop_tx.send(true);
    };
    tokio::join!(public, admin, watcher, tls_watcher, keys_watcher, signal);
}
