//! The running gateway's shared state — config, route store, reloader, metrics — and how it
//! is built from config: every backend started and every model folder loaded and checked
//! before any port is bound.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::auth::Auth;
use crate::backend::{self, BackendError, EndpointMetrics, Provider};
use crate::config::{ConfigError, GatewayConfig};
use crate::loader::{RouteError, RouteLoader};
use crate::metrics::Metrics;
use crate::plugin::{Host, HostError};
use crate::reload::{ReloadReport, Reloader};
use crate::routes::{RouteStore, RouteTable};
use crate::server::ConnMetrics;
use crate::tls::{Acceptor, TlsError};

pub struct Gateway {
    config: Arc<GatewayConfig>,
    loader: Arc<RouteLoader>,
    routes: Arc<RouteStore>,
    reloader: Arc<Reloader>,
    /// What `GET /metrics` encodes; the loader's metrics are registered on it.
    registry: prometheus_client::registry::Registry,
    /// The bearer token the admin listener requires, if any.
    admin_token: Option<String>,
    /// Set when shutdown begins: `/readyz` turns 503 while in-flight requests finish.
    draining: AtomicBool,
    /// The configured backends, whose background work (health checks) starts with serving.
    backends: Vec<Arc<dyn Provider>>,
    /// `[server.tls]`: the public listener's acceptor, reloaded when its files change.
    tls: Option<Arc<Acceptor>>,
    /// `[auth]`: the API keys the public listener requires.
    auth: Option<Arc<Auth>>,
    /// Both listeners' connection series.
    conn_metrics: ConnMetrics,
}

/// Why the gateway can't start. Route errors are collected so one run reports them all.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(
        "admin_listen {0} is not a loopback address, so the admin API needs a token: set \
         server.admin_token in gateway.toml or INFERGATE_ADMIN_TOKEN"
    )]
    AdminUnprotected(SocketAddr),
    #[error("server.tls: {0}")]
    Tls(#[from] TlsError),
    #[error("backend `{0}`: {1}")]
    Backend(String, BackendError),
    #[error("{} model folder(s) failed to load:\n{}", .0.len(), .0.iter().map(|(n, e)| format!("  {n}: {e}")).collect::<Vec<_>>().join("\n"))]
    Routes(Vec<(String, RouteError)>),
}

impl Gateway {
    /// Loads every model folder. Fails if any folder is invalid, naming each one.
    pub fn load(config: GatewayConfig) -> Result<Gateway, StartError> {
        let host = Host::sized(config.plugins.max_instances)?
            .with_cache_dir(config.plugins.effective_cache_dir())
            .with_max_plugin_mb(config.plugins.max_plugin_mb);
        Self::load_with(config, host)
    }

    pub fn load_with(config: GatewayConfig, host: Host) -> Result<Gateway, StartError> {
        // Reload and the route table must not be open to the network by accident.
        let admin_token = config.server.effective_admin_token();
        let admin = config.server.admin_listen;
        if admin_token.is_none() && !admin.ip().is_loopback() {
            return Err(StartError::AdminUnprotected(admin));
        }
        let mut registry = prometheus_client::registry::Registry::default();
        let endpoint_metrics = EndpointMetrics::register(&mut registry);
        let backends = config
            .backends
            .iter()
            .map(|(name, cfg)| {
                backend::from_config(name, cfg, &endpoint_metrics)
                    .map(|b| (name.clone(), b))
                    .map_err(|e| StartError::Backend(name.clone(), e))
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        let metrics = Metrics::register(&mut registry);
        let conn_metrics = ConnMetrics::register(&mut registry);
        let tls = config
            .server
            .tls
            .as_ref()
            .map(|tls| Acceptor::load(tls, &mut registry))
            .transpose()?
            .map(Arc::new);
        let auth = config
            .auth
            .as_ref()
            .map(|a| Auth::load(a, &mut registry))
            .transpose()?
            .map(Arc::new);
        let config = Arc::new(config);
        let loader = Arc::new(RouteLoader::new(
            config.clone(),
            backends.clone(),
            host,
            metrics,
        ));
        // At start every folder must load: a gateway that silently serves half its models is
        // worse than one that says which folder is broken. Later reloads keep going instead.
        let mut table = RouteTable::default();
        let mut failures = Vec::new();
        for (name, dir) in loader.model_dirs()? {
            match loader.load(&name, &dir) {
                Ok(route) => {
                    table.routes.insert(name, Arc::new(route));
                }
                Err(e) => failures.push((name, e)),
            }
        }
        if !failures.is_empty() {
            return Err(StartError::Routes(failures));
        }
        let routes = Arc::new(RouteStore::new(table));
        let reloader = Arc::new(Reloader::new(loader.clone(), routes.clone()));
        Ok(Gateway {
            config,
            loader,
            routes,
            reloader,
            registry,
            admin_token,
            draining: AtomicBool::new(false),
            backends: backends.into_values().collect(),
            tls,
            auth,
            conn_metrics,
        })
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    pub fn host(&self) -> &Host {
        self.loader.host()
    }

    pub fn routes(&self) -> &RouteStore {
        &self.routes
    }

    pub fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }

    /// The public listener's TLS acceptor, with `[server.tls]`.
    pub fn tls(&self) -> Option<&Arc<Acceptor>> {
        self.tls.as_ref()
    }

    /// The API keys, with `[auth]`.
    pub fn auth(&self) -> Option<&Arc<Auth>> {
        self.auth.as_ref()
    }

    pub fn conn_metrics(&self) -> &ConnMetrics {
        &self.conn_metrics
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

    /// Starts the backends' background work (model servers' health checks, DNS
    /// re-resolution) on the current runtime; [`crate::run`] calls it.
    pub fn start_backends(&self) {
        for backend in &self.backends {
            backend.start();
        }
    }

    /// `GET /readyz` on either listener: 503 `draining` once shutdown began, 503 `unready`
    /// with each model that has no healthy backend endpoint and why, else 200 `ready`.
    pub fn readiness(&self) -> (http::StatusCode, serde_json::Value) {
        if self.draining() {
            return (
                http::StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "status": "draining" }),
            );
        }
        let unready = self.unready_models();
        if unready.is_empty() {
            (
                http::StatusCode::OK,
                serde_json::json!({ "status": "ready" }),
            )
        } else {
            (
                http::StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "status": "unready", "models": unready }),
            )
        }
    }

    /// The routes whose backend can't serve them now, with why (empty: all can). `/readyz`
    /// answers 503 while any is listed.
    pub fn unready_models(&self) -> BTreeMap<String, String> {
        self.routes
            .snapshot()
            .routes
            .iter()
            .filter_map(|(name, route)| {
                let why = route.backend.readiness().err()?;
                Some((name.clone(), why))
            })
            .collect()
    }

    pub fn metrics(&self) -> &Metrics {
        self.loader.metrics()
    }

    /// Every metric in OpenMetrics text, for `GET /metrics`.
    pub fn encode_metrics(&self) -> String {
        crate::metrics::encode(&self.registry)
    }

    /// Sends every route's declared warm-up request. There is no older version to keep at
    /// start, so a failure is only reported. Blocks: call it from a blocking thread.
    pub fn warm_up_all(&self) {
        for route in self.routes.snapshot().routes.values() {
            if let Err(message) = self.loader.warm_up(route) {
                tracing::warn!(model = %route.name, "warm-up failed: {message}");
            }
        }
    }

    /// Rescans the plugin directory now (off the async workers) and swaps in the result.
    pub async fn reload(&self) -> ReloadReport {
        self.reloader.reload().await
    }
}
