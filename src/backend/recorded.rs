//! A backend that runs nothing: it answers Predict with outputs recorded once (a sample's
//! `outputs.json`) and describes the signature from the inputs a sample expects
//! (`pre.json`), so `infergate check` runs a sample through the real pipeline — plugins,
//! limits, batcher, REST JSON — with no model server.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{
    Backend, BackendError, BackendFuture, ModelMetadata, ModelTarget, SignatureInfo, TensorSpec,
    VersionStatus,
};
use crate::backend::tfserving::convert::{dtype_label, dtype_to_proto};
use crate::tensor::NamedTensors;

/// Recorded outputs standing in for a model.
pub struct Recorded {
    outputs: Option<NamedTensors>,
    inputs: Option<NamedTensors>,
}

impl Recorded {
    /// Answers Predict with `outputs` (none recorded: an error saying so), and metadata with
    /// one signature whose inputs are `inputs`' names, dtypes and shapes (dim 0 any size).
    pub fn new(outputs: Option<NamedTensors>, inputs: Option<NamedTensors>) -> Self {
        Self { outputs, inputs }
    }
}

impl Backend for Recorded {
    fn predict<'a>(
        &'a self,
        _target: &'a ModelTarget,
        _inputs: &'a NamedTensors,
        _deadline: Option<Duration>,
    ) -> BackendFuture<'a, NamedTensors> {
        let answer = match &self.outputs {
            Some(outputs) => {
                let mut outputs = outputs.clone();
                outputs.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(outputs)
            }
            None => Err(BackendError::new(
                tonic::Code::FailedPrecondition,
                "no outputs recorded for this sample (outputs.json)",
            )),
        };
        Box::pin(std::future::ready(answer))
    }

    fn status<'a>(&'a self, _target: &'a ModelTarget) -> BackendFuture<'a, Vec<VersionStatus>> {
        Box::pin(std::future::ready(Ok(vec![VersionStatus {
            version: 1,
            state: "AVAILABLE".into(),
            error_code: "OK".into(),
            error_message: String::new(),
        }])))
    }

    fn metadata<'a>(&'a self, target: &'a ModelTarget) -> BackendFuture<'a, ModelMetadata> {
        let answer = match &self.inputs {
            None => Err(BackendError::new(
                tonic::Code::FailedPrecondition,
                "a model without a pre plugin types its REST JSON by the signature's inputs: \
                 give the sample a pre.json with the tensors the body must decode to",
            )),
            Some(inputs) => {
                let spec = |(name, t): &(String, crate::tensor::Tensor)| {
                    let mut shape = t.shape().to_vec();
                    if let Some(rows) = shape.first_mut() {
                        *rows = -1;
                    }
                    let spec = TensorSpec {
                        name: name.clone(),
                        dtype: Some(t.dtype()),
                        dtype_name: dtype_label(dtype_to_proto(t.dtype()) as i32),
                        shape: Some(shape),
                    };
                    (name.clone(), spec)
                };
                let signature = SignatureInfo {
                    inputs: inputs.iter().map(spec).collect(),
                    outputs: BTreeMap::new(),
                    method_name: "tensorflow/serving/predict".into(),
                };
                Ok(ModelMetadata {
                    name: target.name.clone(),
                    version: Some(1),
                    signatures: BTreeMap::from([(target.signature.clone(), signature)]),
                })
            }
        };
        Box::pin(std::future::ready(answer))
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(10)
    }
}
