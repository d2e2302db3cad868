//! What every tonic-based backend kind (`tfserving`, `kserve_v2`) shares on top of its
//! [`EndpointPool`]: the pool built from the `[backends.<name>]` keys, one RPC run within the
//! deadline with its failures mapped to [`BackendError`]s that say which backend and endpoint,
//! and the per-route handle that registers the route's model for health checks and `/readyz`.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;

use super::endpoints::{
    self, CallError, EndpointMetrics, EndpointPool, ModelGuard, Probe, Settings,
};
use super::{Backend, BackendError, BackendFuture, ModelMetadata, ModelTarget, VersionStatus};
use crate::config::GrpcBackendConfig;
use crate::tensor::NamedTensors;

/// Largest gRPC message either way (TF Serving accepts up to 2 GiB, tonic's default is 4 MiB).
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// The backend's pool of endpoints: lazy channels, so the gateway starts (and answers 503)
/// while the model servers are down, and reconnects by itself when they come back.
pub fn pool(
    name: &str,
    config: &GrpcBackendConfig,
    probe: Arc<dyn Probe>,
    metrics: EndpointMetrics,
) -> Result<EndpointPool, BackendError> {
    let invalid = |e: String| BackendError::new(tonic::Code::InvalidArgument, e);
    let tls = config
        .tls
        .as_ref()
        .map(|t| endpoints::tls::client_config(name, t))
        .transpose()
        .map_err(invalid)?;
    let settings = Settings {
        backend: name.to_string(),
        endpoints: config.endpoint_specs(),
        connect_timeout: Duration::from_millis(config.connect_timeout_ms),
        resolve_interval: Duration::from_millis(config.resolve_interval_ms),
        health: config.health.clone(),
        retry: config.retry.clone(),
        tls,
        server_name: config.tls.as_ref().and_then(|t| t.server_name.clone()),
        resolver: endpoints::system_resolver(),
    };
    EndpointPool::new(settings, probe, metrics).map_err(invalid)
}

/// Runs one RPC through `pool` within `timeout` (sent to the server as `grpc-timeout` by
/// `attempt`, and enforced here), mapping failures to [`BackendError`]s that say which
/// backend and endpoint.
pub async fn call<T, F, Fut>(
    pool: &EndpointPool,
    backend: &str,
    model: &str,
    timeout: Duration,
    attempt: F,
) -> Result<T, BackendError>
where
    F: FnMut(Channel, Duration) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let late = |endpoint: &str| {
        BackendError::new(
            tonic::Code::DeadlineExceeded,
            format!(
                "backend `{backend}` did not answer within {}ms (endpoint {endpoint})",
                timeout.as_millis()
            ),
        )
    };
    let mut attempt = attempt;
    let result = pool
        .call(model, timeout, |channel, left, _endpoint| {
            let call = attempt(channel, left);
            async move { call.await.map(tonic::Response::into_inner) }
        })
        .await;
    match result {
        Ok(response) => Ok(response),
        Err(CallError::NoEndpoint(why)) => Err(BackendError::new(
            tonic::Code::Unavailable,
            format!("backend `{backend}` is unavailable: {why}"),
        )),
        Err(CallError::Timeout { endpoint }) => Err(late(&endpoint)),
        // A server that enforces the `grpc-timeout` we sent may beat our own timer to it and
        // answer CANCELLED; either way the deadline passed.
        Err(CallError::Status {
            endpoint,
            status,
            elapsed,
        }) if status.code() == tonic::Code::Cancelled && elapsed >= timeout => Err(late(&endpoint)),
        // A call that never reached a server (refused, cut before an answer, a TLS handshake
        // refused) is the backend being unavailable, whatever code tonic gave the transport
        // error.
        Err(CallError::Status {
            endpoint, status, ..
        }) => Err(BackendError::new(
            if endpoints::failed_before_server(&status) {
                tonic::Code::Unavailable
            } else {
                status.code()
            },
            status_message(backend, &endpoint, &status),
        )),
    }
}

/// A request carrying its deadline as `grpc-timeout`.
pub fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// The server's message, or for transport failures a sentence that says which backend and
/// endpoint, and the root cause.
fn status_message(backend: &str, endpoint: &str, status: &tonic::Status) -> String {
    if endpoints::counts_against_endpoint(status) {
        format!(
            "backend `{backend}` is unavailable (endpoint {endpoint}): {}",
            endpoints::describe_status(status)
        )
    } else {
        status.message().to_string()
    }
}

/// A pooled backend kind: its name and its pool, for [`RouteBackend`].
pub trait Pooled: Backend {
    fn name(&self) -> &str;
    fn pool(&self) -> &EndpointPool;
}

/// A route's handle on a shared pooled backend: the backend, and the route's model registered
/// with its pool for as long as the route lives (so health checks ask about the model and
/// `/readyz` covers it).
pub struct RouteBackend<B> {
    backend: Arc<B>,
    model: String,
    _registration: ModelGuard,
}

impl<B: Pooled> RouteBackend<B> {
    pub fn new(backend: Arc<B>, model: String) -> Self {
        let registration = backend.pool().register(&model);
        Self {
            backend,
            model,
            _registration: registration,
        }
    }
}

impl<B: Pooled> Backend for RouteBackend<B> {
    fn predict<'a>(
        &'a self,
        target: &'a ModelTarget,
        inputs: &'a NamedTensors,
        deadline: Option<Duration>,
    ) -> BackendFuture<'a, NamedTensors> {
        self.backend.predict(target, inputs, deadline)
    }

    fn status<'a>(&'a self, target: &'a ModelTarget) -> BackendFuture<'a, Vec<VersionStatus>> {
        self.backend.status(target)
    }

    fn metadata<'a>(&'a self, target: &'a ModelTarget) -> BackendFuture<'a, ModelMetadata> {
        self.backend.metadata(target)
    }

    fn timeout(&self) -> Duration {
        self.backend.timeout()
    }

    fn readiness(&self) -> Result<(), String> {
        self.backend
            .pool()
            .readiness(&self.model)
            .map_err(|why| format!("backend `{}`: {why}", self.backend.name()))
    }
}
