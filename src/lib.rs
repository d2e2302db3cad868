//! infergate: an inference gateway. HTTP requests are routed by model name to that model's
//! WebAssembly plugins (preprocess: request → tensors; postprocess: tensors → response), and
//! the tensors go to a model server as gRPC `Predict` calls.
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
//! - [`server`] — the accept loop with graceful drain, shared by both listeners.
//! - [`ingress`] — the public HTTP API: URL grammar, body limit, responses.
//! - [`admin`] — the operator listener.
//! - [`pipeline`] — one predict request: pre plugin or REST JSON → backend → post plugin.
//! - [`batch`] — coalesces concurrent requests into one backend call, splits the answer.
//! - [`reload`] — watches `plugins/`, rebuilds changed folders, swaps the route table.
//! - [`routes`] — the route table (model → plugins + backend), swapped whole.
//! - [`plugin`] — the wasmtime runtime: load, sandbox, bound and call plugins.
//! - [`samples`] — offline plugin checks: a model folder's sample requests and expectations.
//! - [`backend`] — model servers: `tfserving` (gRPC) and what they report.
//! - [`rest`] — TF Serving's REST JSON (`instances`/`inputs`, `predictions`/`outputs`).
//! - [`tensor`] — the one tensor type every format converts to.
//! - [`error`] — every failure and its HTTP status, in one match.
//! - [`metrics`] — the Prometheus series behind `GET /metrics`, per gateway, no globals.
//! - [`proto`] — generated TF Serving protobuf/gRPC code.
//! - [`fake`] — a fake TF Serving for hermetic tests and benchmarks.

pub mod admin;
pub mod backend;
pub mod batch;
pub mod config;
pub mod error;
pub mod fake;
pub mod gateway;
pub mod ingress;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod proto;
pub mod reload;
pub mod rest;
pub mod routes;
pub mod samples;
pub mod server;
pub mod tensor;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::GatewayConfig;
pub use gateway::{Gateway, StartError};

/// Serves `gateway` on the public and admin listeners until `shutdown` resolves, then drains.
/// Both `main` and the tests call this, the tests with listeners on port 0.
pub async fn run(
    gateway: Arc<Gateway>,
    public: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let drain = gateway.config().server.drain_timeout();
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
        drain,
    );
    // The watcher task is owned here and stops with the listeners.
    let watcher = reload::watch(gateway.clone(), stopped(stop_rx.clone()));
    let admin = server::serve(
        admin,
        move |req| admin::handle(gateway.clone(), req),
        stopped(stop_rx),
        drain,
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
    tokio::join!(public, admin, watcher, signal);
}
