//! Model servers the gateway sends tensors to. `tfserving` speaks TF Serving's gRPC API;
//! `onnx` runs ONNX models in process. Every kind answers the same three questions: predict,
//! model status, signature metadata.

pub mod metadata;
pub mod onnx;
pub mod tfserving;

use std::sync::Arc;
use std::time::Duration;

pub use metadata::{ModelMetadata, SignatureInfo, TensorSpec, VersionStatus};
pub use onnx::{OnnxEngine, OnnxModel};
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

/// A configured backend.
pub enum Backend {
    TfServing(TfServing),
    /// A `kind = "onnx"` backend of gateway.toml: the threads and deadline its models share.
    /// Routes never call it; [`Backend::for_model`] loads each folder's model onto it.
    OnnxEngine(OnnxEngine),
    /// One model folder's ONNX model, running on its engine's threads.
    Onnx(OnnxModel),
    /// The fake TF Serving called in process, without gRPC: for tests on a paused clock and
    /// for benchmarks of the gateway alone. Never built from configuration.
    Fake(crate::fake::FakeBackend, Duration),
}

impl Backend {
    pub fn from_config(name: &str, config: &BackendConfig) -> Result<Self, BackendError> {
        match config {
            BackendConfig::Tfserving(tfs) => TfServing::new(name, tfs).map(Backend::TfServing),
            BackendConfig::Onnx(onnx) => OnnxEngine::new(name, onnx).map(Backend::OnnxEngine),
        }
    }

    /// What the route for `route` (with its `model.toml`) calls: a model server is shared by
    /// every route naming it; an `onnx` backend loads the folder's own `model_file`.
    /// CPU-heavy for `onnx`: call it off the async workers, as route loading is.
    pub fn for_model(
        self: &Arc<Self>,
        route: &str,
        config: &ModelConfig,
    ) -> Result<Arc<Backend>, onnx::LoadError> {
        match (self.as_ref(), &config.model_file) {
            (Backend::OnnxEngine(engine), Some(file)) => {
                let name = config.model.as_deref().unwrap_or(route);
                Ok(Arc::new(Backend::Onnx(engine.load(
                    file,
                    name,
                    &config.signature,
                )?)))
            }
            _ => Ok(self.clone()),
        }
    }

    /// How long one call may take.
    pub fn timeout(&self) -> Duration {
        match self {
            Backend::TfServing(b) => b.timeout(),
            Backend::OnnxEngine(e) => e.timeout(),
            Backend::Onnx(m) => m.timeout(),
            Backend::Fake(_, timeout) => *timeout,
        }
    }

    /// Runs the model on `inputs`; outputs come back sorted by name.
    pub async fn predict(
        &self,
        target: &ModelTarget,
        inputs: &NamedTensors,
        deadline: Option<Duration>,
    ) -> Result<NamedTensors, BackendError> {
        match self {
            Backend::TfServing(b) => b.predict(target, inputs, deadline).await,
            Backend::Onnx(m) => m.predict(target, inputs, deadline).await,
            Backend::OnnxEngine(_) => Err(no_model_file()),
            Backend::Fake(b, timeout) => {
                let timeout = deadline.map_or(*timeout, |d| d.min(*timeout));
                match tokio::time::timeout(timeout, b.predict_local(target, inputs)).await {
                    Ok(result) => result,
                    Err(_) => Err(BackendError::new(
                        tonic::Code::DeadlineExceeded,
                        "fake backend timed out",
                    )),
                }
            }
        }
    }

    pub async fn status(&self, target: &ModelTarget) -> Result<Vec<VersionStatus>, BackendError> {
        match self {
            Backend::TfServing(b) => b.status(target).await,
            Backend::Onnx(m) => m.status(target),
            Backend::OnnxEngine(_) => Err(no_model_file()),
            Backend::Fake(..) => Err(BackendError::new(
                tonic::Code::Unimplemented,
                "the in-process fake has no status",
            )),
        }
    }

    pub async fn metadata(&self, target: &ModelTarget) -> Result<ModelMetadata, BackendError> {
        match self {
            Backend::TfServing(b) => b.metadata(target).await,
            Backend::Onnx(m) => m.metadata(target),
            Backend::OnnxEngine(_) => Err(no_model_file()),
            Backend::Fake(..) => Err(BackendError::new(
                tonic::Code::Unimplemented,
                "the in-process fake has no metadata",
            )),
        }
    }
}

/// An `onnx` engine called as if it were a model: configuration validation requires
/// `model_file` for onnx backends, so this is a bug, not a user error.
fn no_model_file() -> BackendError {
    BackendError::new(
        tonic::Code::Internal,
        "an onnx backend was called without a model file",
    )
}
