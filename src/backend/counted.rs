//! The wrapper around every route's backend that counts its failed calls, once, in
//! `infergate_backend_errors_total{model, code}`, whichever path made the call (a batch's
//! Predict, the metadata lookup that types REST JSON, a status request).

use std::sync::Arc;
use std::time::Duration;

use super::{
    Backend, BackendError, BackendFuture, ModelMetadata, ModelTarget, VersionChoice, VersionStatus,
    code_name,
};
use crate::metrics::ModelMetrics;
use crate::tensor::NamedTensors;

/// A route's backend, with its failures counted in the model's series.
pub struct Counted {
    inner: Arc<dyn Backend>,
    metrics: ModelMetrics,
}

impl Counted {
    pub fn new(inner: Arc<dyn Backend>, metrics: ModelMetrics) -> Self {
        Self { inner, metrics }
    }

    /// Counts `result`'s error, unless it is the backend's verdict on the client's own choice:
    /// a version or label the client named that doesn't exist is the client's 404, not a
    /// backend failure an operator should be paged for.
    fn count<T>(
        &self,
        target: &ModelTarget,
        result: Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        if let Err(e) = &result {
            let clients_version =
                e.code == tonic::Code::NotFound && !matches!(target.version, VersionChoice::Latest);
            if !clients_version {
                self.metrics.backend_error(code_name(e.code));
            }
        }
        result
    }
}

impl Backend for Counted {
    fn predict<'a>(
        &'a self,
        target: &'a ModelTarget,
        inputs: &'a NamedTensors,
        deadline: Option<Duration>,
    ) -> BackendFuture<'a, NamedTensors> {
        Box::pin(async move {
            let result = self.inner.predict(target, inputs, deadline).await;
            self.count(target, result)
        })
    }

    fn status<'a>(&'a self, target: &'a ModelTarget) -> BackendFuture<'a, Vec<VersionStatus>> {
        Box::pin(async move {
            let result = self.inner.status(target).await;
            self.count(target, result)
        })
    }

    fn metadata<'a>(&'a self, target: &'a ModelTarget) -> BackendFuture<'a, ModelMetadata> {
        Box::pin(async move {
            let result = self.inner.metadata(target).await;
            self.count(target, result)
        })
    }

    fn timeout(&self) -> Duration {
        self.inner.timeout()
    }

    fn model_file(&self) -> Option<serde_json::Value> {
        self.inner.model_file()
    }

    fn readiness(&self) -> Result<(), String> {
        self.inner.readiness()
    }
}
