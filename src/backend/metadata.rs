//! What a backend says about a model: its versions' states and its signatures (input and
//! output names, dtypes, shapes), and how both render as TF Serving's REST JSON.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::tensor::DType;

/// One version's state, as `GetModelStatus` reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionStatus {
    pub version: i64,
    /// `AVAILABLE`, `LOADING`, …
    pub state: String,
    /// `OK`, `NOT_FOUND`, …
    pub error_code: String,
    pub error_message: String,
}

/// One input or output of a signature.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    /// The tensor's name in the graph (`serving_default_image:0`).
    pub name: String,
    /// `None` when the backend uses a dtype the gateway can't carry (complex, resource, …).
    pub dtype: Option<DType>,
    /// `DT_FLOAT`-style name, kept for rendering whatever the dtype.
    pub dtype_name: String,
    /// `None` for unknown rank; -1 marks an unknown dimension.
    pub shape: Option<Vec<i64>>,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct SignatureInfo {
    pub inputs: BTreeMap<String, TensorSpec>,
    pub outputs: BTreeMap<String, TensorSpec>,
    pub method_name: String,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct ModelMetadata {
    pub name: String,
    pub version: Option<i64>,
    pub signatures: BTreeMap<String, SignatureInfo>,
}

impl ModelMetadata {
    /// TF Serving's `GET /v1/models/{m}/metadata` body.
    pub fn to_json(&self) -> Value {
        let signatures: serde_json::Map<String, Value> = self
            .signatures
            .iter()
            .map(|(name, sig)| (name.clone(), sig.to_json()))
            .collect();
        json!({
            "model_spec": {
                "name": self.name,
                "signature_name": "",
                "version": self.version.map(|v| v.to_string()).unwrap_or_default(),
            },
            "metadata": {
                "signature_def": {
                    "signature_def": signatures,
                }
            }
        })
    }
}

impl SignatureInfo {
    fn to_json(&self) -> Value {
        let map = |specs: &BTreeMap<String, TensorSpec>| -> serde_json::Map<String, Value> {
            specs
                .iter()
                .map(|(name, spec)| (name.clone(), spec.to_json()))
                .collect()
        };
        json!({ "inputs": map(&self.inputs), "outputs": map(&self.outputs), "method_name": self.method_name })
    }
}

impl TensorSpec {
    fn to_json(&self) -> Value {
        let tensor_shape = match &self.shape {
            None => json!({ "dim": [], "unknown_rank": true }),
            Some(dims) => json!({
                // int64 renders as a string in proto3 JSON, as TF Serving does.
                "dim": dims.iter().map(|d| json!({ "size": d.to_string(), "name": "" })).collect::<Vec<_>>(),
                "unknown_rank": false,
            }),
        };
        json!({ "dtype": self.dtype_name, "tensor_shape": tensor_shape, "name": self.name })
    }
}

/// TF Serving's `GET /v1/models/{m}` body.
pub fn status_json(versions: &[VersionStatus]) -> Value {
    let list: Vec<Value> = versions
        .iter()
        .map(|v| {
            json!({
                "version": v.version.to_string(),
                "state": v.state,
                "status": { "error_code": v.error_code, "error_message": v.error_message },
            })
        })
        .collect();
    json!({ "model_version_status": list })
}
