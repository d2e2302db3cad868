//! The replicas behind one gRPC backend and how a call reaches one of them: discovery (URLs,
//! and `dns://` names re-resolved on an interval: addresses that appear join, those that
//! vanish drain), power-of-two-choices balancing on outstanding calls, active health checks
//! and passive ejection with backoff, one failover retry under a budget, per-endpoint metrics.
//!
//! Any tonic-based backend kind uses it the same way: build an [`EndpointPool`] from
//! [`Settings`] and a [`Probe`] (how to ask one of its servers whether it serves a model), then
//! make every RPC through [`EndpointPool::call`], which hands the kind a `Channel` to the
//! endpoint it picked, and register each routed model ([`EndpointPool::register`]) so checks
//! and `/readyz` cover it.
//!
//! - `endpoint`: one replica's channel, calls in flight and health state.
//! - `health`: the background task (checks, re-resolution) and the [`Probe`] trait.
//! - `budget`: the retry budget. `metrics`: the per-endpoint series. `tls`: the channels' TLS.

mod budget;
mod endpoint;
mod health;
mod metrics;
#[cfg(test)]
mod tests;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint as TonicEndpoint};

pub use health::{Probe, ProbeOutcome};
pub use metrics::EndpointMetrics;

use crate::config::{EndpointSpec, HealthConfig, RetryConfig};
use budget::RetryBudget;
use endpoint::{Ejection, Endpoint, Verdict};

/// Resolves a `dns://` name to its addresses; the system resolver unless a test swaps it.
pub type Resolver =
    Arc<dyn Fn(String, u16) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> + Send + Sync>;

/// The system resolver (`getaddrinfo`, on tokio's blocking pool).
pub fn system_resolver() -> Resolver {
    Arc::new(|host, port| {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), port)).await?;
            Ok(addrs.collect())
        })
    })
}

/// What a pool is built from: the backend's `[backends.<name>]` keys, already validated.
pub struct Settings {
    /// The backend's name, for messages and metric labels.
    pub backend: String,
    pub endpoints: Vec<EndpointSpec>,
    pub connect_timeout: Duration,
    pub resolve_interval: Duration,
    pub health: HealthConfig,
    pub retry: RetryConfig,
    /// TLS for every endpoint (see [`tls::client_config`]).
    pub tls: Option<ClientTlsConfig>,
    /// `server_name` from the TLS config: the name certificates are checked against. Else an
    /// endpoint URL's host, or a `dns://` name.
    pub server_name: Option<String>,
    pub resolver: Resolver,
}

/// Why a call through the pool failed.
#[derive(Debug)]
pub enum CallError {
    /// No endpoint takes calls: every one is ejected, or a `dns://` name resolved to nothing.
    /// The message says which endpoints there are and why each is out.
    NoEndpoint(String),
    /// The endpoint answered with an error, or the transport failed.
    Status {
        endpoint: String,
        status: tonic::Status,
        /// Since the call (not this attempt) started.
        elapsed: Duration,
    },
    /// No answer within the call's deadline.
    Timeout { endpoint: String },
}

/// A backend's endpoints. Cheap to share; the background task stops when it is dropped.
pub struct EndpointPool {
    inner: Arc<Inner>,
}

struct Inner {
    backend: String,
    specs: Vec<EndpointSpec>,
    connect_timeout: Duration,
    tls: Option<ClientTlsConfig>,
    server_name: Option<String>,
    resolve_interval: Duration,
    resolver: Resolver,
    check_timeout: Duration,
    rules: Ejection,
    /// The current set; replaced whole when resolution changes it. Calls in flight keep the
    /// `Arc<Endpoint>` they picked, so a vanished endpoint drains instead of failing them.
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    /// What each `dns://` name last resolved to, and its last resolution error. A std mutex:
    /// read and written between awaits, never across one.
    dns: Mutex<BTreeMap<(String, u16), Resolution>>,
    /// One resolution at a time (the task, and a first call that finds none done yet). A
    /// tokio mutex: held across the resolver's await.
    resolving: tokio::sync::Mutex<()>,
    resolved_once: AtomicBool,
    /// Routed models and how many routes name each. A std mutex: never held across an await.
    models: Mutex<BTreeMap<String, usize>>,
    probe: Arc<dyn Probe>,
    budget: RetryBudget,
    metrics: EndpointMetrics,
    /// Wakes the background task: an endpoint was ejected, or a model was routed here.
    wake: Arc<Notify>,
    /// Cancels the background task when the pool is dropped.
    background: OnceLock<DropGuard>,
}

#[derive(Default)]
struct Resolution {
    addrs: Vec<SocketAddr>,
    error: Option<String>,
}

impl EndpointPool {
    /// Builds the pool; URL endpoints exist at once (connected lazily, nothing is dialled
    /// here), `dns://` names resolve on first use. Needs a tokio runtime's context. Fails
    /// only when the TLS settings are unusable.
    pub fn new(
        settings: Settings,
        probe: Arc<dyn Probe>,
        metrics: EndpointMetrics,
    ) -> Result<Self, String> {
        let h = &settings.health;
        let inner = Inner {
            backend: settings.backend,
            specs: settings.endpoints,
            connect_timeout: settings.connect_timeout,
            tls: settings.tls,
            server_name: settings.server_name,
            resolve_interval: settings.resolve_interval,
            resolver: settings.resolver,
            check_timeout: Duration::from_millis(h.timeout_ms),
            rules: Ejection {
                failures_to_eject: h.failures_to_eject,
                first: Duration::from_millis(h.ejection_ms),
                max: Duration::from_millis(h.max_ejection_ms),
                check_interval: Duration::from_millis(h.interval_ms),
            },
            endpoints: ArcSwap::from_pointee(Vec::new()),
            dns: Mutex::new(BTreeMap::new()),
            resolving: tokio::sync::Mutex::new(()),
            resolved_once: AtomicBool::new(false),
            models: Mutex::new(BTreeMap::new()),
            probe,
            budget: RetryBudget::new(settings.retry.budget_ratio, settings.retry.min_per_second),
            metrics,
            wake: Arc::new(Notify::new()),
            background: OnceLock::new(),
        };
        inner.reconcile(inner.static_targets()?);
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Starts the background task (checks, re-resolution) on the current runtime, once.
    /// Outside a runtime it does nothing; the first call starts it then.
    pub fn start(&self) {
        if self.inner.background.get().is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let stop = CancellationToken::new();
        // A second starter racing this one loses the `set`, and its guard stops its task.
        let guard = stop.clone().drop_guard();
        runtime.spawn(health::run(
            Arc::downgrade(&self.inner),
            self.inner.wake.clone(),
            stop,
        ));
        let _ = self.inner.background.set(guard);
    }

    /// Routes `model` here: checks ask about it and `/readyz` covers it until the guard drops.
    pub fn register(&self, model: &str) -> ModelGuard {
        let first = {
            let mut models = self.inner.lock_models();
            let n = models.entry(model.to_string()).or_insert(0);
            *n += 1;
            *n == 1
        };
        if first {
            for e in self.inner.endpoints.load().iter() {
                e.check_soon();
            }
            self.inner.wake.notify_one();
        }
        ModelGuard {
            inner: self.inner.clone(),
            model: model.to_string(),
        }
    }

    /// `Ok` when an endpoint that takes calls serves `model` (or hasn't been checked yet);
    /// else why none does.
    pub fn readiness(&self, model: &str) -> Result<(), String> {
        let all = self.inner.endpoints.load();
        if all.iter().any(|e| e.serves(model)) {
            Ok(())
        } else {
            Err(self.inner.no_endpoint(model, &all))
        }
    }

    /// Runs one RPC for `model` within `timeout`: `attempt` gets a channel to the endpoint
    /// picked, the time left and the endpoint's address, and makes the call. A call that failed before the server
    /// could have run it is retried once on another endpoint if the deadline and the retry
    /// budget allow; nothing else is retried.
    pub async fn call<T, F, Fut>(
        &self,
        model: &str,
        timeout: Duration,
        mut attempt: F,
    ) -> Result<T, CallError>
    where
        F: FnMut(Channel, Duration, &str) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        self.start();
        self.inner.resolve_once().await;
        let started = Instant::now();
        let deadline = started + timeout;
        let inner = &self.inner;
        inner.budget.record_call();
        let first = inner.pick(model, None).map_err(CallError::NoEndpoint)?;
        let error = match inner.attempt(&first, started, deadline, &mut attempt).await {
            Ok(value) => return Ok(value),
            Err(e) => e,
        };
        let CallError::Status { status, .. } = &error else {
            return Err(error);
        };
        if !failed_before_server(status) {
            return Err(error);
        }
        let Ok(second) = inner.pick(model, Some(&first)) else {
            inner.metrics.retry(&inner.backend, "no_other_endpoint");
            return Err(error);
        };
        if Instant::now() >= deadline {
            inner.metrics.retry(&inner.backend, "past_deadline");
            return Err(error);
        }
        if !inner.budget.try_retry() {
            inner.metrics.retry(&inner.backend, "budget_exhausted");
            return Err(error);
        }
        inner.metrics.retry(&inner.backend, "retried");
        tracing::debug!(
            backend = %inner.backend,
            from = %first.addr,
            to = %second.addr,
            "retrying on another endpoint: {status}"
        );
        inner
            .attempt(&second, started, deadline, &mut attempt)
            .await
    }

    /// The endpoints now, by address, and whether each takes calls (for tests and views).
    pub fn endpoints(&self) -> Vec<(String, bool)> {
        self.inner
            .endpoints
            .load()
            .iter()
            .map(|e| (e.addr.clone(), e.takes_calls()))
            .collect()
    }

    /// Resolves the `dns://` names now (the background task does it every interval).
    pub async fn refresh(&self) {
        self.inner.refresh().await;
    }
}

/// A route's claim on a model of the pool (see [`EndpointPool::register`]).
pub struct ModelGuard {
    inner: Arc<Inner>,
    model: String,
}

impl Drop for ModelGuard {
    fn drop(&mut self) {
        let mut models = self.inner.lock_models();
        if let Some(n) = models.get_mut(&self.model) {
            *n -= 1;
            if *n == 0 {
                models.remove(&self.model);
                self.inner
                    .metrics
                    .forget_model(&self.inner.backend, &self.model);
            }
        }
    }
}

/// Whether a failed call never ran on a server, so it is safe to send elsewhere: the server
/// said `UNAVAILABLE` (or refused the stream), the connection could not be made, or it broke
/// before the response's headers — a failure in tonic's request phase carries its transport
/// error as the status's source, while one after the headers comes from reading the body.
pub fn failed_before_server(status: &tonic::Status) -> bool {
    use std::error::Error;
    status.code() == tonic::Code::Unavailable
        || status
            .source()
            .is_some_and(<dyn Error>::is::<tonic::transport::Error>)
}

/// Whether a failed call says the endpoint is broken (counts toward ejection): failed before
/// the server, or the connection broke mid-answer. An error the server chose to send
/// (`INVALID_ARGUMENT`, `NOT_FOUND`, …) says it works.
pub fn counts_against_endpoint(status: &tonic::Status) -> bool {
    use std::error::Error;
    if failed_before_server(status) {
        return true;
    }
    let mut source = status.source();
    while let Some(e) = source {
        if e.is::<hyper::Error>() || e.is::<std::io::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

impl Inner {
    fn lock_models(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, usize>> {
        self.models
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn routed_models(&self) -> Vec<String> {
        self.lock_models().keys().cloned().collect()
    }

    fn has_dns(&self) -> bool {
        self.specs
            .iter()
            .any(|s| matches!(s, EndpointSpec::Dns { .. }))
    }

    /// Power of two choices: of two endpoints drawn at random among those that serve the
    /// model, the one with fewer calls in flight. It spreads load like least-loaded without
    /// every gateway piling onto the same momentarily idle endpoint, and costs two reads.
    /// When no endpoint's checks say it serves the model, any endpoint taking calls is used,
    /// so the server's own answer (a `NOT_FOUND`) reaches the client.
    fn pick(&self, model: &str, exclude: Option<&Arc<Endpoint>>) -> Result<Arc<Endpoint>, String> {
        let all = self.endpoints.load();
        let others = |e: &&Arc<Endpoint>| exclude.is_none_or(|x| !Arc::ptr_eq(x, e));
        let mut candidates: Vec<&Arc<Endpoint>> = all
            .iter()
            .filter(others)
            .filter(|e| e.serves(model))
            .collect();
        if candidates.is_empty() {
            candidates = all
                .iter()
                .filter(others)
                .filter(|e| e.takes_calls())
                .collect();
        }
        match candidates.len() {
            0 => Err(self.no_endpoint(model, &all)),
            1 => Ok(candidates[0].clone()),
            n => {
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                let (a, b) = (candidates[a], candidates[b]);
                Ok(if b.outstanding() < a.outstanding() {
                    b
                } else {
                    a
                }
                .clone())
            }
        }
    }

    /// Why no endpoint can take a call for `model`, naming each endpoint's state.
    fn no_endpoint(&self, model: &str, all: &[Arc<Endpoint>]) -> String {
        let mut parts: Vec<String> = all.iter().map(|e| e.describe(model)).collect();
        let dns = self
            .dns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for spec in &self.specs {
            if let EndpointSpec::Dns { host, port } = spec {
                match dns.get(&(host.clone(), *port)) {
                    None => parts.push(format!("dns://{host}:{port} is not resolved yet")),
                    Some(r) => {
                        if let Some(e) = &r.error {
                            parts.push(format!("dns://{host}:{port} did not resolve: {e}"));
                        } else if r.addrs.is_empty() {
                            parts.push(format!("dns://{host}:{port} resolved to no addresses"));
                        }
                    }
                }
            }
        }
        format!(
            "no healthy endpoint for model `{model}` ({})",
            parts.join("; ")
        )
    }

    async fn attempt<T, F, Fut>(
        &self,
        endpoint: &Arc<Endpoint>,
        started: Instant,
        deadline: Instant,
        attempt: &mut F,
    ) -> Result<T, CallError>
    where
        F: FnMut(Channel, Duration, &str) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let timed_out = || CallError::Timeout {
            endpoint: endpoint.addr.clone(),
        };
        if left.is_zero() {
            return Err(timed_out());
        }
        let guard = endpoint.start_call();
        let call = attempt(endpoint.channel.clone(), left, &endpoint.addr);
        let result = tokio::time::timeout(left, call).await;
        drop(guard);
        match result {
            Ok(Ok(value)) => {
                endpoint.record_call(Verdict::Answered, &self.rules);
                Ok(value)
            }
            Ok(Err(status)) => {
                endpoint.series.error(super::code_name(status.code()));
                let verdict = if counts_against_endpoint(&status) {
                    Verdict::Failed(describe_status(&status))
                } else {
                    Verdict::Answered
                };
                if endpoint.record_call(verdict, &self.rules) {
                    self.update_model_gauges();
                    self.wake.notify_one();
                }
                Err(CallError::Status {
                    endpoint: endpoint.addr.clone(),
                    status,
                    elapsed: started.elapsed(),
                })
            }
            Err(_) => {
                endpoint.series.error("DEADLINE_EXCEEDED");
                endpoint.record_call(Verdict::Inconclusive, &self.rules);
                Err(timed_out())
            }
        }
    }

    /// Sets each routed model's healthy-endpoint gauge.
    fn update_model_gauges(&self) {
        let all = self.endpoints.load();
        for model in self.routed_models() {
            let n = all.iter().filter(|e| e.serves(&model)).count();
            self.metrics.model_endpoints(&self.backend, &model, n);
        }
    }

    /// The first call waits for the first resolution rather than failing for lack of one.
    async fn resolve_once(&self) {
        if self.has_dns() && !self.resolved_once.load(Ordering::Acquire) {
            self.refresh().await;
        }
    }

    /// Resolves every `dns://` name and swaps in the new endpoint set. A name that fails to
    /// resolve keeps its last addresses (a resolver hiccup must not empty the fleet; stale
    /// addresses fail their checks and are ejected instead).
    async fn refresh(&self) {
        let _one = self.resolving.lock().await;
        let mut targets = match self.static_targets() {
            Ok(targets) => targets,
            Err(e) => {
                tracing::error!(backend = %self.backend, "{e}");
                return;
            }
        };
        for spec in &self.specs {
            let EndpointSpec::Dns { host, port } = spec else {
                continue;
            };
            let result = (self.resolver)(host.clone(), *port).await;
            let addrs = {
                let mut dns = self
                    .dns
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let entry = dns.entry((host.clone(), *port)).or_default();
                match result {
                    Ok(mut addrs) => {
                        addrs.sort();
                        addrs.dedup();
                        entry.addrs = addrs;
                        entry.error = None;
                    }
                    Err(e) => {
                        tracing::warn!(backend = %self.backend, "dns://{host}:{port} did not resolve: {e}");
                        entry.error = Some(e.to_string());
                    }
                }
                entry.addrs.clone()
            };
            for addr in addrs {
                let name = self.server_name.clone().unwrap_or_else(|| host.clone());
                match self.target(addr.to_string(), &addr.to_string(), Some(name)) {
                    Ok(target) => targets.push(target),
                    Err(e) => tracing::error!(backend = %self.backend, "{e}"),
                }
            }
        }
        self.reconcile(targets);
        self.resolved_once.store(true, Ordering::Release);
    }

    /// The endpoints of the `http(s)://` entries.
    fn static_targets(&self) -> Result<Vec<Target>, String> {
        self.specs
            .iter()
            .filter_map(|spec| match spec {
                EndpointSpec::Url { url, authority } => {
                    Some(self.target(authority.clone(), url, self.server_name.clone()))
                }
                EndpointSpec::Dns { .. } => None,
            })
            .collect()
    }

    /// A lazily connected channel to `url` (scheme and authority only).
    fn target(
        &self,
        addr: String,
        url: &str,
        server_name: Option<String>,
    ) -> Result<Target, String> {
        let url = if url.contains("://") {
            url.to_string()
        } else {
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{url}")
        };
        let mut endpoint = TonicEndpoint::from_shared(url.clone())
            .map_err(|e| format!("endpoint {url}: {e}"))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        if let Some(tls) = &self.tls {
            let mut tls = tls.clone();
            if let Some(name) = server_name {
                tls = tls.domain_name(name);
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("endpoint {url}: TLS: {}", tls::describe(&e)))?;
        }
        Ok(Target { addr, endpoint })
    }

    /// Swaps in the set `targets` names: endpoints already there stay as they are (their
    /// channel, health and counts), new ones join, the others leave: they get no new calls,
    /// calls in flight finish on them, and their series are removed.
    fn reconcile(&self, targets: Vec<Target>) {
        let current = self.endpoints.load_full();
        let mut next: Vec<Arc<Endpoint>> = Vec::with_capacity(targets.len());
        for target in targets {
            if next.iter().any(|e| e.addr == target.addr) {
                continue;
            }
            match current.iter().find(|e| e.addr == target.addr) {
                Some(existing) => next.push(existing.clone()),
                None => {
                    let channel = target.endpoint.connect_lazy();
                    let series = self.metrics.endpoint(&self.backend, &target.addr);
                    if !current.is_empty() || self.resolved_once.load(Ordering::Acquire) {
                        tracing::info!(backend = %self.backend, endpoint = %target.addr, "endpoint joined");
                    }
                    next.push(Arc::new(Endpoint::new(target.addr, channel, series)));
                }
            }
        }
        for gone in current
            .iter()
            .filter(|e| !next.iter().any(|n| n.addr == e.addr))
        {
            tracing::info!(backend = %self.backend, endpoint = %gone.addr, "endpoint left: draining");
            gone.series.remove();
        }
        self.endpoints.store(Arc::new(next));
        self.wake.notify_one();
    }
}

/// An endpoint to be: its address and its channel's settings.
struct Target {
    addr: String,
    endpoint: TonicEndpoint,
}

/// A status's code, message and (for transport failures) the root cause, in one line.
pub fn describe_status(status: &tonic::Status) -> String {
    use std::error::Error;
    let mut text = format!("{}: {}", super::code_name(status.code()), status.message());
    let mut source = status.source();
    let mut root = None;
    while let Some(e) = source {
        root = Some(e.to_string());
        source = e.source();
    }
    if let Some(root) = root.filter(|r| !text.contains(r.as_str())) {
        text.push_str(": ");
        text.push_str(&root);
    }
    text
}
