//! Where tensors are run: the [`Backend`] seam every route calls through, and its kinds.
//! `tfserving` speaks TF Serving's gRPC API; `kserve_v2` the Open Inference Protocol's (Triton,
//! OVMS, MLServer, KServe); `onnx` runs ONNX models in process. Every kind
//! answers the same three questions: predict, model status, signature metadata.
//!
//! - [`Provider`]: a configured `[backends.<name>]`, which gives each route its [`Backend`].
//! - [`endpoints`]: the replicas behind a gRPC backend (discovery, balancing, health,
//!   failover), shared by every tonic-based kind.
//! - `grpc`: what those kinds share on top of it (the pool from the config keys, one RPC with
//!   its errors mapped, the per-route handle that registers the route's model).
//! - `counted`: the wrapper every route's backend sits in, counting its failures once.
//! - `recorded`: a backend that answers from a sample's recorded outputs (`infergate check`).
//! - `metadata`: what backends report (versions, signatures) and its TF Serving JSON.

mod counted;
pub mod endpoints;
mod grpc;
pub mod kserve_v2;
pub mod metadata;
pub mod onnx;
mod recorded;
pub mod tfserving;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use counted::Counted;
pub use endpoints::EndpointMetrics;
pub use kserve_v2::KserveV2;
pub use metadata::{ModelMetadata, SignatureInfo, TensorSpec, VersionStatus};
pub use onnx::{OnnxEngine, OnnxModel};
pub use recorded::Recorded;
pub use tfserving::TfServing;

use crate::config::{BackendConfig, ModelConfig};
use crate::tensor::NamedTensors;

/// Which version of a model a call is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum VersionChoice {
    Latest,
    Number(i64),
    Label(String),
}

/// Model, version and signature on the backend.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelTarget {
    pub name: String,
    pub version: VersionChoice,
    pub signature: String,
}

/// A failed backend call, with the gRPC status code it carried (or that fits it).
#[derive(Clone, Debug, thiserror::Error)]
#[error("backend {}: {message}", code_name(*.code))]
pub struct BackendError {
    pub code: tonic::Code,
    pub message: String,
}

impl BackendError {
    pub fn new(code: tonic::Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// `INVALID_ARGUMENT`-style name of a gRPC code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A boxed future of a backend call: the trait stays object-safe, so routes and the batcher
/// hold `Arc<dyn Backend>` whatever the kind.
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BackendError>> + Send + 'a>>;

/// What a route calls to run its model: predict, the versions' status, the signatures.
///
/// A trait object rather than an enum of kinds: the batcher, pipeline and views never name a
/// kind, so a new one (a module and a [`BackendConfig`] variant) touches nothing else, and
/// tests, benchmarks and `infergate check` plug their own in (the in-process fake, the
/// recorded outputs of a sample) without the product knowing them. The price is one boxed
/// future per call, and a call carries a whole batch: noise beside a network round trip.
pub trait Backend: Send + Sync {
    /// Runs the model on `inputs` (a whole batch); outputs come back sorted by name. The
    /// call ends by `deadline` (or the backend's own timeout, whichever is sooner).
    fn predict<'a>(
        &'a self,
        target: &'a ModelTarget,
        inputs: &'a NamedTensors,
        deadline: Option<Duration>,
    ) -> BackendFuture<'a, NamedTensors>;

    /// The state of the target's versions (all of them for [`VersionChoice::Latest`]).
    fn status<'a>(&'a self, target: &'a ModelTarget) -> BackendFuture<'a, Vec<VersionStatus>>;

    /// The target version's signatures.
    fn metadata<'a>(&'a self, target: &'a ModelTarget) -> BackendFuture<'a, ModelMetadata>;

    /// How long one call may take.
    fn timeout(&self) -> Duration;

    /// What the backend loaded from the model folder, for the route's status (the onnx
    /// backend's model file); `None` for a model server.
    fn model_file(&self) -> Option<serde_json::Value> {
        None
    }

    /// Whether the route's model can be served now, for `/readyz`: `Err` says why not (a
    /// model server with no healthy endpoint for it). In-process kinds are always ready.
    fn readiness(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A `[backends.<name>]` of gateway.toml, shared by every route naming it: gives each route
/// the [`Backend`] it calls. A model server hands out itself; an in-process engine loads the
/// folder's own model onto its threads.
pub trait Provider: Send + Sync {
    /// The backend of route `route` (whose `model.toml` is `config`). CPU-heavy for an
    /// in-process engine: call it off the async workers, as route loading is.
    fn for_route(
        self: Arc<Self>,
        route: &str,
        config: &ModelConfig,
    ) -> Result<Arc<dyn Backend>, LoadError>;

    /// Starts the backend's background work on the current runtime (a model server's
    /// health checks and DNS re-resolution); called once the gateway serves. It stops when
    /// the provider is dropped. `infergate check` never calls it, so it dials nothing.
    fn start(&self) {}
}

/// Creates the backend `[backends.<name>]` configures (clients connect lazily: nothing is
/// dialled here), its endpoint series on `metrics`. The one place that knows every kind.
pub fn from_config(
    name: &str,
    config: &BackendConfig,
    metrics: &EndpointMetrics,
) -> Result<Arc<dyn Provider>, BackendError> {
    Ok(match config {
        BackendConfig::Tfserving(tfs) => Arc::new(TfServing::new(name, tfs, metrics.clone())?),
        BackendConfig::Onnx(onnx) => Arc::new(OnnxEngine::new(name, onnx)?),
        BackendConfig::KserveV2(v2) => Arc::new(KserveV2::new(name, v2, metrics.clone())?),
    })
}

/// Why a backend can't serve a model folder (its model file is unreadable or unusable).
/// Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("model file {path}: cannot read: {cause}")]
    Read {
        path: PathBuf,
        /// Not `source`: the message already shows it, and a source would print it twice.
        cause: std::io::Error,
    },
    #[error("model file {path}: not a usable ONNX model: {message}")]
    Invalid { path: PathBuf, message: String },
}
