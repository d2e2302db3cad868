//! The `kserve_v2` backend: the Open Inference Protocol's gRPC API
//! (`inference.GRPCInferenceService`), spoken by Triton Inference Server, OpenVINO Model
//! Server, MLServer and KServe. Batches go out as one `ModelInfer` with
//! `raw_input_contents`; answers are read from `raw_output_contents` or typed contents. The
//! protocol has no signatures: a route's `signature` names the model's one set of inputs and
//! outputs, reported by `ModelMetadata`; readiness comes from `ModelReady`. Calls go to every
//! replica through the backend's [`EndpointPool`] (balancing, health checks by `ModelReady`,
//! failover, TLS), as `tfserving`'s do; a deadline on every call.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tonic::transport::Channel;

use super::endpoints::{self, EndpointMetrics, EndpointPool, Probe, ProbeOutcome};
use super::grpc::{self, MAX_MESSAGE_BYTES, Pooled, RouteBackend, request};
use super::tfserving::convert;
use super::{
    Backend, BackendError, BackendFuture, LoadError, ModelMetadata, ModelTarget, Provider,
    SignatureInfo, TensorSpec, VersionChoice, VersionStatus,
};
use crate::config::{KserveV2Config, ModelConfig};
use crate::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::proto::inference::model_infer_request::InferInputTensor;
use crate::proto::inference::model_metadata_response::TensorMetadata;
use crate::proto::inference::{
    ModelInferRequest, ModelMetadataRequest, ModelReadyRequest, ServerReadyRequest,
};
use crate::protocol::v2::tensor;
use crate::tensor::NamedTensors;

pub struct KserveV2 {
    name: String,
    pool: EndpointPool,
    timeout: Duration,
}

impl KserveV2 {
    pub fn new(
        name: &str,
        config: &KserveV2Config,
        metrics: EndpointMetrics,
    ) -> Result<Self, BackendError> {
        let pool = grpc::pool(name, config, Arc::new(ReadyProbe), metrics)?;
        Ok(Self {
            name: name.to_string(),
            pool,
            timeout: config.timeout(),
        })
    }

    /// Runs one RPC through the pool within the deadline (the backend's, or the request's
    /// when shorter).
    async fn call<T, F, Fut>(
        &self,
        model: &str,
        deadline: Option<Duration>,
        mut attempt: F,
    ) -> Result<T, BackendError>
    where
        F: FnMut(GrpcInferenceServiceClient<Channel>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let timeout = deadline.map_or(self.timeout, |d| d.min(self.timeout));
        grpc::call(&self.pool, &self.name, model, timeout, |channel, left| {
            attempt(client(channel), left)
        })
        .await
    }

    fn version(&self, version: &VersionChoice) -> Result<String, BackendError> {
        match version {
            VersionChoice::Latest => Ok(String::new()),
            VersionChoice::Number(n) => Ok(n.to_string()),
            VersionChoice::Label(l) => Err(BackendError::new(
                tonic::Code::InvalidArgument,
                format!(
                    "version label `{l}`: the Open Inference Protocol has no labels; backend \
                     `{}` takes version numbers",
                    self.name
                ),
            )),
        }
    }

    async fn run_predict(
        &self,
        target: &ModelTarget,
        inputs: &NamedTensors,
        deadline: Option<Duration>,
    ) -> Result<NamedTensors, BackendError> {
        let version = self.version(&target.version)?;
        // Encoded per attempt: a retry is rare, and holding an encoded copy for it would
        // double every call's memory.
        let message = || ModelInferRequest {
            model_name: target.name.clone(),
            model_version: version.clone(),
            inputs: inputs
                .iter()
                .map(|(name, t)| InferInputTensor {
                    name: name.clone(),
                    datatype: tensor::datatype(t.dtype()).into(),
                    shape: t.shape().to_vec(),
                    parameters: Default::default(),
                    contents: None,
                })
                .collect(),
            raw_input_contents: inputs
                .iter()
                .map(|(_, t)| tensor::to_raw(t).to_vec())
                .collect(),
            ..Default::default()
        };
        let response = self
            .call(&target.name, deadline, |mut client, left| {
                let request = request(message(), left);
                async move { client.model_infer(request).await }
            })
            .await?;
        let bad = |e: String| BackendError::new(tonic::Code::Internal, e);
        let mut raw = response.raw_output_contents.into_iter();
        let use_raw = raw.len() > 0;
        if use_raw && raw.len() != response.outputs.len() {
            return Err(bad(format!(
                "backend `{}` answered {} outputs but {} raw_output_contents",
                self.name,
                response.outputs.len(),
                raw.len()
            )));
        }
        let mut outputs = response
            .outputs
            .into_iter()
            .map(|out| {
                let dtype = tensor::dtype(&out.datatype)
                    .map_err(|e| bad(format!("output `{}`: {e}", out.name)))?;
                let t = match raw.next() {
                    Some(bytes) => tensor::from_raw(dtype, out.shape, bytes.into()),
                    None => {
                        tensor::from_contents(dtype, out.shape, out.contents.unwrap_or_default())
                    }
                }
                .map_err(|e| bad(format!("output `{}`: {e}", out.name)))?;
                Ok((out.name, t))
            })
            .collect::<Result<NamedTensors, BackendError>>()?;
        outputs.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(outputs)
    }

    async fn model_status(&self, target: &ModelTarget) -> Result<Vec<VersionStatus>, BackendError> {
        let version = self.version(&target.version)?;
        let versions: Vec<String> = if version.is_empty() {
            let metadata = self.fetch_metadata(target, String::new()).await?;
            metadata.versions
        } else {
            vec![version]
        };
        // A server that lists no versions serves one, unnumbered: ask for the default.
        let versions = if versions.is_empty() {
            vec![String::new()]
        } else {
            versions
        };
        let mut out = Vec::with_capacity(versions.len());
        for v in versions {
            let message = ModelReadyRequest {
                name: target.name.clone(),
                version: v.clone(),
            };
            let ready = self
                .call(&target.name, None, |mut client, left| {
                    let request = request(message.clone(), left);
                    async move { client.model_ready(request).await }
                })
                .await?
                .ready;
            out.push(VersionStatus {
                version: v.parse().unwrap_or(0),
                state: if ready { "AVAILABLE" } else { "UNKNOWN" }.to_string(),
                error_code: if ready { "OK" } else { "UNAVAILABLE" }.to_string(),
                error_message: if ready {
                    String::new()
                } else {
                    format!("backend `{}` says the model is not ready", self.name)
                },
            });
        }
        Ok(out)
    }

    async fn fetch_metadata(
        &self,
        target: &ModelTarget,
        version: String,
    ) -> Result<crate::proto::inference::ModelMetadataResponse, BackendError> {
        let message = ModelMetadataRequest {
            name: target.name.clone(),
            version,
        };
        self.call(&target.name, None, |mut client, left| {
            let request = request(message.clone(), left);
            async move { client.model_metadata(request).await }
        })
        .await
    }

    async fn model_metadata(&self, target: &ModelTarget) -> Result<ModelMetadata, BackendError> {
        let version = self.version(&target.version)?;
        let response = self.fetch_metadata(target, version.clone()).await?;
        let specs = |list: Vec<TensorMetadata>| {
            list.into_iter()
                .map(|t| {
                    let dtype = tensor::dtype(&t.datatype).ok();
                    let dtype_name = dtype.map_or_else(
                        || t.datatype.clone(),
                        |d| convert::dtype_to_proto(d).as_str_name().to_string(),
                    );
                    let spec = TensorSpec {
                        name: t.name.clone(),
                        dtype,
                        dtype_name,
                        shape: Some(t.shape),
                    };
                    (t.name, spec)
                })
                .collect()
        };
        let signature = SignatureInfo {
            inputs: specs(response.inputs),
            outputs: specs(response.outputs),
            method_name: String::new(),
        };
        Ok(ModelMetadata {
            name: target.name.clone(),
            version: version.parse().ok(),
            signatures: [(target.signature.clone(), signature)].into(),
        })
    }
}

impl Backend for KserveV2 {
    fn predict<'a>(
        &'a self,
        target: &'a ModelTarget,
        inputs: &'a NamedTensors,
        deadline: Option<Duration>,
    ) -> BackendFuture<'a, NamedTensors> {
        Box::pin(self.run_predict(target, inputs, deadline))
    }

    fn status<'a>(&'a self, target: &'a ModelTarget) -> BackendFuture<'a, Vec<VersionStatus>> {
        Box::pin(self.model_status(target))
    }

    fn metadata<'a>(&'a self, target: &'a ModelTarget) -> BackendFuture<'a, ModelMetadata> {
        Box::pin(self.model_metadata(target))
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl Pooled for KserveV2 {
    fn name(&self) -> &str {
        &self.name
    }

    fn pool(&self) -> &EndpointPool {
        &self.pool
    }
}

/// Every route naming the backend shares its pool; each route's handle registers the route's
/// model with it, so health checks ask about the model and `/readyz` covers it.
impl Provider for KserveV2 {
    fn for_route(
        self: Arc<Self>,
        route: &str,
        config: &ModelConfig,
    ) -> Result<Arc<dyn Backend>, LoadError> {
        let model = config.model.clone().unwrap_or_else(|| route.to_string());
        Ok(Arc::new(RouteBackend::new(self, model)))
    }

    fn start(&self) {
        self.pool.start();
    }
}

fn client(channel: Channel) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The Open Inference Protocol's health check: `ModelReady` for the model (any version), or
/// `ServerReady` before a model is routed. A server without the RPC (`UNIMPLEMENTED`) is taken
/// at its word that it answers; `ready: false` or another error says the model isn't there.
struct ReadyProbe;

impl Probe for ReadyProbe {
    fn check(
        &self,
        channel: Channel,
        _endpoint: &str,
        model: Option<String>,
        timeout: Duration,
    ) -> BoxFuture<'static, ProbeOutcome> {
        Box::pin(async move {
            let mut client = client(channel);
            let answer = match &model {
                Some(name) => {
                    let message = ModelReadyRequest {
                        name: name.clone(),
                        version: String::new(),
                    };
                    client
                        .model_ready(request(message, timeout))
                        .await
                        .map(|r| r.into_inner().ready)
                }
                None => client
                    .server_ready(request(ServerReadyRequest {}, timeout))
                    .await
                    .map(|r| r.into_inner().ready),
            };
            match answer {
                Ok(true) => ProbeOutcome::Ready,
                Ok(false) if model.is_some() => {
                    ProbeOutcome::NotReady("ModelReady answered ready: false".to_string())
                }
                Ok(false) => {
                    ProbeOutcome::NotReady("ServerReady answered ready: false".to_string())
                }
                Err(status) if endpoints::counts_against_endpoint(&status) => {
                    ProbeOutcome::Unreachable(endpoints::describe_status(&status))
                }
                Err(status) if status.code() == tonic::Code::Unimplemented => ProbeOutcome::Ready,
                Err(status) => ProbeOutcome::NotReady(format!(
                    "{}: {}",
                    super::code_name(status.code()),
                    status.message()
                )),
            }
        })
    }
}
