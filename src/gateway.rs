//! The running gateway's shared state — config, plugin runtime, backends, live route table —
//! and how it is built from config: every model folder loaded and checked before any port is
//! bound.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::backend::{Backend, BackendError};
use crate::config::{ConfigError, GatewayConfig};
use crate::metrics::Metrics;
use crate::plugin::{Runtime, RuntimeError};
use crate::routes::{self, RouteError, RouteStore, RouteTable};

pub struct Gateway {
    config: GatewayConfig,
    runtime: Runtime,
    backends: BTreeMap<String, Arc<Backend>>,
    routes: RouteStore,
    /// What `GET /metrics` encodes; `metrics` is registered on it.
    registry: prometheus_client::registry::Registry,
    metrics: Metrics,
    /// The bearer token the admin listener requires, if any.
    admin_token: Option<String>,
    /// Set when shutdown begins: `/readyz` turns 503 while in-flight requests finish.
    draining: AtomicBool,
    /// One rescan at a time (watcher and `POST /admin/reload` may ask together). A tokio
    /// mutex: it is held across the await of the blocking rescan.
    reloading: tokio::sync::Mutex<()>,
}

/// Why the gateway can't start. Route errors are collected so one run reports them all.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(
        "admin_listen {0} is not a loopback address, so the admin API needs a token: set \
         server.admin_token in gateway.toml or INFERGATE_ADMIN_TOKEN"
    )]
    AdminUnprotected(SocketAddr),
    #[error("backend `{0}`: {1}")]
    Backend(String, BackendError),
    #[error("{} model folder(s) failed to load:\n{}", .0.len(), .0.iter().map(|(n, e)| format!("  {n}: {e}")).collect::<Vec<_>>().join("\n"))]
    Routes(Vec<(String, RouteError)>),
}

impl Gateway {
    /// Loads every model folder. Fails if any folder is invalid, naming each one.
    pub fn load(config: GatewayConfig) -> Result<Gateway, StartError> {
        let runtime = Runtime::sized(config.plugins.max_instances)?
            .with_cache_dir(config.plugins.effective_cache_dir());
        Self::load_with(config, runtime)
    }

    pub fn load_with(config: GatewayConfig, runtime: Runtime) -> Result<Gateway, StartError> {
        // Reload and the route table must not be open to the network by accident.
        let admin_token = config.server.effective_admin_token();
        let admin = config.server.admin_listen;
        if admin_token.is_none() && !admin.ip().is_loopback() {
            return Err(StartError::AdminUnprotected(admin));
        }
        let backends = config
            .backends
            .iter()
            .map(|(name, cfg)| {
                Backend::from_config(name, cfg)
                    .map(|b| (name.clone(), Arc::new(b)))
                    .map_err(|e| StartError::Backend(name.clone(), e))
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::register(&mut registry);
        let mut table = RouteTable::default();
        let mut failures = Vec::new();
        // At start every folder must load: a gateway that silently serves half its models is
        // worse than one that says which folder is broken. Later reloads keep going instead.
        for (name, dir) in routes::model_dirs(&config.plugins.dir)? {
            match routes::load_route(&name, &dir, &config, &backends, &runtime, &metrics) {
                Ok(route) => {
                    table.routes.insert(name, Arc::new(route));
                }
                Err(e) => failures.push((name, e)),
            }
        }
        if !failures.is_empty() {
            return Err(StartError::Routes(failures));
        }
        Ok(Gateway {
            config,
            runtime,
            backends,
            routes: RouteStore::new(table),
            registry,
            metrics,
            admin_token,
            draining: AtomicBool::new(false),
            reloading: Default::default(),
        })
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn backends(&self) -> &BTreeMap<String, Arc<Backend>> {
        &self.backends
    }

    pub fn routes(&self) -> &RouteStore {
        &self.routes
    }

    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    /// Marks the gateway as shutting down (see [`Gateway::draining`]).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Every metric in OpenMetrics text, for `GET /metrics`.
    pub fn encode_metrics(&self) -> String {
        crate::metrics::encode(&self.registry)
    }

    /// Sends every route's declared warm-up request. There is no older version to keep at
    /// start, so a failure is only reported. Blocks: call it from a blocking thread.
    pub fn warm_up_all(&self) {
        for route in self.routes.snapshot().routes.values() {
            if let Err(message) = crate::reload::warm_up(&self.runtime, route) {
                tracing::warn!(model = %route.name, "warm-up failed: {message}");
            }
        }
    }

    fn count_reloads(&self, report: &crate::reload::ReloadReport) {
        let outcomes = [
            ("added", &report.added),
            ("reloaded", &report.reloaded),
            ("removed", &report.removed),
        ];
        for (outcome, models) in outcomes {
            for model in models {
                self.metrics.reload(model, outcome);
            }
        }
        for model in report.failed.keys() {
            self.metrics.reload(model, "failed");
        }
    }

    /// Rescans the plugin directory now (off the async workers) and swaps in the result.
    pub async fn reload(self: &Arc<Self>) -> crate::reload::ReloadReport {
        let _one_at_a_time = self.reloading.lock().await;
        let gateway = self.clone();
        match tokio::task::spawn_blocking(move || crate::reload::rescan(&gateway)).await {
            Ok(report) => {
                self.count_reloads(&report);
                report
            }
            Err(e) => {
                tracing::error!("reload task failed: {e}");
                Default::default()
            }
        }
    }
}
