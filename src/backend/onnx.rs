//! The `onnx` backend: ONNX models run inside the gateway with tract (pure Rust, nothing to
//! download or install). A named `[backends.<name>] kind = "onnx"` is an [`OnnxEngine`] — the
//! inference [`Pool`] and the call deadline its models share; each model folder's
//! `model_file` becomes an [`OnnxModel`] on it, loaded and optimised once per (re)load, with
//! its dim 0 left symbolic so one call runs a whole batch from the batcher.

pub mod convert;
pub mod pool;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tract_onnx::prelude::{
    Framework, InferenceModelExt, TDim, TValue, TVec, TypedModel, TypedRunnableModel,
};

use super::{
    Backend, BackendError, BackendFuture, LoadError, ModelMetadata, ModelTarget, Provider,
    SignatureInfo, TensorSpec, VersionChoice, VersionStatus, tfserving::convert as tf,
};
use crate::config::{ModelConfig, OnnxConfig};
use crate::tensor::{DType, NamedTensors};
pub use pool::{Pool, PoolError};

/// TF Serving's method name for a predict signature, reported in metadata.
const PREDICT_METHOD: &str = "tensorflow/serving/predict";

/// A configured `onnx` backend: the threads its models run on and how long a call may take.
pub struct OnnxEngine {
    pool: Arc<Pool>,
    timeout: Duration,
}

impl OnnxEngine {
    pub fn new(name: &str, config: &OnnxConfig) -> Result<Self, BackendError> {
        let pool = Pool::new(&format!("onnx-{name}"), config.threads()).map_err(|e| {
            BackendError::new(
                tonic::Code::Internal,
                format!("cannot start inference threads: {e}"),
            )
        })?;
        Ok(Self {
            pool: Arc::new(pool),
            timeout: config.timeout(),
        })
    }

    /// Loads, checks and optimises `path` for the route that calls it `name` with signature
    /// `signature`. CPU-heavy (tens of milliseconds for a small model): call it off the
    /// async workers, as route loading is.
    pub fn load(&self, path: &Path, name: &str, signature: &str) -> Result<OnnxModel, LoadError> {
        OnnxModel::load(path, name, signature, self.pool.clone(), self.timeout)
    }
}

/// One input or output as the model declares it.
#[derive(Clone, Debug)]
struct Port {
    name: String,
    dtype: DType,
    /// `None` marks a symbolic dimension (the batch, at least).
    shape: Vec<Option<i64>>,
}

impl Port {
    fn shape_i64(&self) -> Vec<i64> {
        self.shape.iter().map(|d| d.unwrap_or(-1)).collect()
    }

    fn spec(&self) -> TensorSpec {
        let dtype_name = tf::dtype_label(tf::dtype_to_proto(self.dtype) as i32);
        TensorSpec {
            name: self.name.clone(),
            dtype: Some(self.dtype),
            dtype_name,
            shape: Some(self.shape_i64()),
        }
    }
}

/// One model folder's ONNX model, ready to run on its engine's pool.
pub struct OnnxModel {
    path: PathBuf,
    /// `sha256:<hex>` of the file as loaded, shown in the route's status.
    digest: String,
    /// The model's name as routes and metadata know it.
    name: String,
    /// The file's `model_version`, or 1 when it sets none: the one version served.
    version: i64,
    signature: String,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
    plan: Arc<TypedRunnableModel>,
    pool: Arc<Pool>,
    timeout: Duration,
}

impl OnnxModel {
    fn load(
        path: &Path,
        name: &str,
        signature: &str,
        pool: Arc<Pool>,
        timeout: Duration,
    ) -> Result<Self, LoadError> {
        let invalid = |e: &dyn std::fmt::Display| LoadError::Invalid {
            path: path.to_path_buf(),
            message: format!("{e:#}"),
        };
        // Read the bytes rather than let tract map the file: a file replaced or truncated
        // under a live map is undefined behaviour, and reloads replace files.
        let bytes = std::fs::read(path).map_err(|cause| LoadError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        let digest = {
            use sha2::{Digest, Sha256};
            format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
        };
        let onnx = tract_onnx::onnx();
        let proto = onnx
            .proto_model_for_read(&mut bytes.as_slice())
            .map_err(|e| invalid(&e))?;
        let model = onnx
            .model_for_proto_model(&proto)
            .map_err(|e| invalid(&e))?;
        let typed = model.into_typed().map_err(|e| invalid(&e))?;
        let graph = proto.graph.as_ref().ok_or_else(|| invalid(&"no graph"))?;
        let (inputs, outputs) = ports(&typed, graph).map_err(|e| invalid(&e))?;
        for port in inputs.iter().chain(&outputs) {
            if port.shape.first().is_some_and(Option::is_some) {
                return Err(invalid(&format!(
                    "`{}` has a fixed dim 0 ({:?}); the gateway batches along dim 0, so the \
                     model must leave it symbolic (e.g. `batch`)",
                    port.name,
                    port.shape_i64()
                )));
            }
        }
        // Optimised for the symbolic batch dim, so any batch size runs the same plan.
        let plan = typed
            .into_optimized()
            .and_then(tract_onnx::prelude::IntoRunnable::into_runnable)
            .map_err(|e| invalid(&e))?;
        Ok(Self {
            path: path.to_path_buf(),
            digest,
            name: name.to_string(),
            version: if proto.model_version > 0 {
                proto.model_version
            } else {
                1
            },
            signature: signature.to_string(),
            inputs,
            outputs,
            plan,
            pool,
            timeout,
        })
    }

    /// The model file, as loaded.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `sha256:<hex>` of the model file's bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The one version served.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// Checks the target's version and signature: this backend serves one of each.
    fn check_target(&self, target: &ModelTarget) -> Result<(), BackendError> {
        match &target.version {
            VersionChoice::Latest => {}
            VersionChoice::Number(v) if *v == self.version => {}
            VersionChoice::Number(v) => {
                return Err(BackendError::new(
                    tonic::Code::NotFound,
                    format!(
                        "model `{}` has no version {v}; it serves version {} ({})",
                        self.name,
                        self.version,
                        self.path.display()
                    ),
                ));
            }
            VersionChoice::Label(l) => {
                return Err(BackendError::new(
                    tonic::Code::NotFound,
                    format!(
                        "model `{}` has no version label `{l}` (an onnx model has one version and no labels)",
                        self.name
                    ),
                ));
            }
        }
        if target.signature != self.signature {
            return Err(BackendError::new(
                tonic::Code::InvalidArgument,
                format!(
                    "model `{}` has no signature `{}` (it has: {})",
                    self.name, target.signature, self.signature
                ),
            ));
        }
        Ok(())
    }

    /// Every model input present with the model's dtype and a shape that fits it; no others.
    fn check_inputs(&self, inputs: &NamedTensors) -> Result<(), BackendError> {
        let bad = |message: String| BackendError::new(tonic::Code::InvalidArgument, message);
        if let Some((name, _)) = inputs
            .iter()
            .find(|(n, _)| !self.inputs.iter().any(|p| &p.name == n))
        {
            return Err(bad(format!(
                "unknown input `{name}`; the model's inputs are: {}",
                names(&self.inputs)
            )));
        }
        for port in &self.inputs {
            let Some((_, tensor)) = inputs.iter().find(|(n, _)| n == &port.name) else {
                return Err(bad(format!(
                    "missing input `{}`; the model's inputs are: {}",
                    port.name,
                    names(&self.inputs)
                )));
            };
            if tensor.dtype() != port.dtype {
                return Err(bad(format!(
                    "input `{}`: expected dtype {}, given {}",
                    port.name,
                    port.dtype.name(),
                    tensor.dtype().name()
                )));
            }
            let fits = tensor.shape().len() == port.shape.len()
                && port
                    .shape
                    .iter()
                    .zip(tensor.shape())
                    .all(|(want, &got)| want.is_none_or(|w| w == got));
            if !fits {
                return Err(bad(format!(
                    "input `{}`: expected shape {:?}, given {:?}",
                    port.name,
                    port.shape_i64(),
                    tensor.shape()
                )));
            }
        }
        Ok(())
    }

    /// Runs the model once on `inputs` (a whole batch) on the pool; outputs sorted by name.
    async fn run(
        &self,
        target: &ModelTarget,
        inputs: &NamedTensors,
        deadline: Option<Duration>,
    ) -> Result<NamedTensors, BackendError> {
        self.check_target(target)?;
        self.check_inputs(inputs)?;
        let internal = |m: String| BackendError::new(tonic::Code::Internal, m);
        let args: TVec<TValue> = self
            .inputs
            .iter()
            .map(|port| {
                let (_, tensor) = inputs
                    .iter()
                    .find(|(n, _)| n == &port.name)
                    .expect("check_inputs found every input");
                convert::to_tract(tensor)
                    .map(TValue::from)
                    .map_err(|e| internal(format!("input `{}`: {e}", port.name)))
            })
            .collect::<Result<_, _>>()?;
        let plan = self.plan.clone();
        let timeout = deadline.map_or(self.timeout, |d| d.min(self.timeout));
        let run = self
            .pool
            .run(move || plan.run(args).map_err(|e| format!("{e:#}")));
        let results = match tokio::time::timeout(timeout, run).await {
            Err(_) => {
                return Err(BackendError::new(
                    tonic::Code::DeadlineExceeded,
                    format!(
                        "model `{}` did not finish within {}ms",
                        self.name,
                        timeout.as_millis()
                    ),
                ));
            }
            Ok(Err(PoolError::Stopped)) => {
                return Err(BackendError::new(
                    tonic::Code::Unavailable,
                    PoolError::Stopped.to_string(),
                ));
            }
            Ok(Err(e)) => return Err(internal(e.to_string())),
            Ok(Ok(Err(e))) => {
                return Err(internal(format!("{}: {e}", self.path.display())));
            }
            Ok(Ok(Ok(results))) => results,
        };
        let mut outputs: NamedTensors = self
            .outputs
            .iter()
            .zip(results.iter())
            .map(|(port, value)| {
                convert::from_tract(value)
                    .map(|t| (port.name.clone(), t))
                    .map_err(|e| internal(format!("output `{}`: {e}", port.name)))
            })
            .collect::<Result<_, _>>()?;
        outputs.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(outputs)
    }

    /// One version, available since it loaded (a model that failed to load is no route).
    fn version_status(&self, target: &ModelTarget) -> Result<Vec<VersionStatus>, BackendError> {
        let target = ModelTarget {
            signature: self.signature.clone(),
            ..target.clone()
        };
        self.check_target(&target)?;
        Ok(vec![VersionStatus {
            version: self.version,
            state: "AVAILABLE".into(),
            error_code: "OK".into(),
            error_message: String::new(),
        }])
    }

    /// The model's inputs and outputs as one signature, in TF Serving's terms.
    fn signatures(&self, target: &ModelTarget) -> Result<ModelMetadata, BackendError> {
        let target = ModelTarget {
            signature: self.signature.clone(),
            ..target.clone()
        };
        self.check_target(&target)?;
        let map = |ports: &[Port]| -> BTreeMap<String, TensorSpec> {
            ports.iter().map(|p| (p.name.clone(), p.spec())).collect()
        };
        let signature = SignatureInfo {
            inputs: map(&self.inputs),
            outputs: map(&self.outputs),
            method_name: PREDICT_METHOD.into(),
        };
        Ok(ModelMetadata {
            name: self.name.clone(),
            version: Some(self.version),
            signatures: BTreeMap::from([(self.signature.clone(), signature)]),
        })
    }
}

impl Backend for OnnxModel {
    fn predict<'a>(
        &'a self,
        target: &'a ModelTarget,
        inputs: &'a NamedTensors,
        deadline: Option<Duration>,
    ) -> BackendFuture<'a, NamedTensors> {
        Box::pin(self.run(target, inputs, deadline))
    }

    fn status<'a>(&'a self, target: &'a ModelTarget) -> BackendFuture<'a, Vec<VersionStatus>> {
        Box::pin(std::future::ready(self.version_status(target)))
    }

    fn metadata<'a>(&'a self, target: &'a ModelTarget) -> BackendFuture<'a, ModelMetadata> {
        Box::pin(std::future::ready(self.signatures(target)))
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn model_file(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "path": self.path.display().to_string(),
            "digest": self.digest,
            "version": self.version,
        }))
    }
}

/// Each route gets the model its folder's `model_file` names, on this engine's threads.
/// Configuration validation requires `model_file` for onnx backends.
impl Provider for OnnxEngine {
    fn for_route(
        self: Arc<Self>,
        route: &str,
        config: &ModelConfig,
    ) -> Result<Arc<dyn Backend>, LoadError> {
        let file = config
            .model_file
            .as_deref()
            .ok_or_else(|| LoadError::Invalid {
                path: route.into(),
                message: "an onnx backend needs `model_file` in model.toml".into(),
            })?;
        let name = config.model.as_deref().unwrap_or(route);
        Ok(Arc::new(self.load(file, name, &config.signature)?))
    }
}

/// The model's inputs (by their source nodes' names, which are the ONNX input names) and
/// outputs (named as the graph declares them, in the same order tract keeps them).
fn ports(
    typed: &TypedModel,
    graph: &tract_onnx::pb::GraphProto,
) -> Result<(Vec<Port>, Vec<Port>), String> {
    let mut inputs = Vec::new();
    for (i, outlet) in typed
        .input_outlets()
        .map_err(|e| e.to_string())?
        .iter()
        .enumerate()
    {
        let fact = typed.input_fact(i).map_err(|e| e.to_string())?;
        inputs.push(port(typed.node(outlet.node).name.clone(), fact)?);
    }
    let mut outputs = Vec::new();
    for (i, declared) in graph.output.iter().enumerate() {
        let fact = typed.output_fact(i).map_err(|e| e.to_string())?;
        outputs.push(port(declared.name.clone(), fact)?);
    }
    Ok((inputs, outputs))
}

/// A declared input or output: its dtype must be one the gateway carries.
fn port(name: String, fact: &tract_onnx::prelude::TypedFact) -> Result<Port, String> {
    let dtype = convert::dtype_from_tract(fact.datum_type).ok_or_else(|| {
        format!(
            "`{name}` has dtype {:?}, which the onnx backend can't carry",
            fact.datum_type
        )
    })?;
    let shape = fact.shape.iter().map(TDim::as_i64).collect();
    Ok(Port { name, dtype, shape })
}

fn names(ports: &[Port]) -> String {
    ports
        .iter()
        .map(|p| format!("`{}`", p.name))
        .collect::<Vec<_>>()
        .join(", ")
}
