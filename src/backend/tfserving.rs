//! The `tfserving` backend: TF Serving's `PredictionService` and `ModelService` over tonic,
//! to every replica of the backend through its [`EndpointPool`] (balancing, health checks by
//! `GetModelStatus`, failover), with large message limits (TF Serving accepts up to 2 GiB,
//! tonic's default is 4 MiB) and a deadline on every call.

pub mod convert;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use prost::Message;
use tonic::transport::Channel;

use super::endpoints::{self, EndpointMetrics, EndpointPool, Probe, ProbeOutcome};
use super::grpc::{self, Pooled, RouteBackend, request};
use super::{
    Backend, BackendError, BackendFuture, LoadError, ModelMetadata, ModelTarget, Provider,
    SignatureInfo, TensorSpec, VersionChoice, VersionStatus,
};
use crate::config::{ModelConfig, TfServingConfig};
use crate::proto::tensorflow::TensorInfo;
use crate::proto::tensorflow::error::Code as TfCode;
use crate::proto::tensorflow::serving::{
    GetModelMetadataRequest, GetModelStatusRequest, ModelSpec, PredictRequest, SignatureDefMap,
    model_service_client::ModelServiceClient, model_spec::VersionChoice as SpecVersion,
    model_version_status::State, prediction_service_client::PredictionServiceClient,
};
use crate::tensor::NamedTensors;

pub use super::grpc::MAX_MESSAGE_BYTES;

pub struct TfServing {
    name: String,
    pool: EndpointPool,
    timeout: Duration,
}

impl TfServing {
    pub fn new(
        name: &str,
        config: &TfServingConfig,
        metrics: EndpointMetrics,
    ) -> Result<Self, BackendError> {
        let pool = grpc::pool(name, config, Arc::new(StatusProbe), metrics)?;
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
        attempt: F,
    ) -> Result<T, BackendError>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let timeout = deadline.map_or(self.timeout, |d| d.min(self.timeout));
        grpc::call(&self.pool, &self.name, model, timeout, attempt).await
    }

    async fn run_predict(
        &self,
        target: &ModelTarget,
        inputs: &NamedTensors,
        deadline: Option<Duration>,
    ) -> Result<NamedTensors, BackendError> {
        let response = self
            .call(&target.name, deadline, |channel, left| {
                // Encoded per attempt: a retry is rare, and holding an encoded copy for it
                // would double every call's memory.
                let message = PredictRequest {
                    model_spec: Some(model_spec(target)),
                    inputs: inputs
                        .iter()
                        .map(|(name, t)| (name.clone(), convert::to_proto(t)))
                        .collect(),
                    output_filter: Vec::new(),
                };
                let mut client = prediction_client(channel);
                async move { client.predict(request(message, left)).await }
            })
            .await?;
        // The reply's shapes are checked against its bytes and one limit for all outputs
        // before anything is allocated (convert's module docs say why).
        let outputs = convert::outputs_from_proto(response.outputs, convert::MAX_TENSOR_BYTES)
            .map_err(|e| BackendError::new(tonic::Code::Internal, e))?;
        Ok(outputs)
    }

    async fn model_status(&self, target: &ModelTarget) -> Result<Vec<VersionStatus>, BackendError> {
        let mut spec = model_spec(target);
        spec.signature_name.clear();
        if target.version == VersionChoice::Latest {
            spec.version_choice = None;
        }
        let response = self
            .call(&target.name, None, |channel, left| {
                let message = GetModelStatusRequest {
                    model_spec: Some(spec.clone()),
                };
                let mut client = ModelServiceClient::new(channel);
                async move { client.get_model_status(request(message, left)).await }
            })
            .await?;
        Ok(response
            .model_version_status
            .into_iter()
            .map(|v| {
                let status = v.status.unwrap_or_default();
                VersionStatus {
                    version: v.version,
                    state: State::try_from(v.state)
                        .map_or("UNKNOWN", |s| s.as_str_name())
                        .to_string(),
                    error_code: TfCode::try_from(status.error_code)
                        .map_or("UNKNOWN", |c| c.as_str_name())
                        .to_string(),
                    error_message: status.error_message,
                }
            })
            .collect())
    }

    async fn model_metadata(&self, target: &ModelTarget) -> Result<ModelMetadata, BackendError> {
        let mut spec = model_spec(target);
        spec.signature_name.clear();
        let response = self
            .call(&target.name, None, |channel, left| {
                let message = GetModelMetadataRequest {
                    model_spec: Some(spec.clone()),
                    metadata_field: vec!["signature_def".into()],
                };
                let mut client = prediction_client(channel);
                async move { client.get_model_metadata(request(message, left)).await }
            })
            .await?;
        let spec = response.model_spec.unwrap_or_default();
        let signatures = match response.metadata.get("signature_def") {
            Some(any) => {
                SignatureDefMap::decode(any.value.as_slice())
                    .map_err(|e| {
                        BackendError::new(
                            tonic::Code::Internal,
                            format!("undecodable signature_def: {e}"),
                        )
                    })?
                    .signature_def
            }
            None => Default::default(),
        };
        let signatures = signatures
            .into_iter()
            .map(|(name, def)| {
                let info = SignatureInfo {
                    inputs: def
                        .inputs
                        .into_iter()
                        .map(|(n, t)| (n, tensor_spec(t)))
                        .collect(),
                    outputs: def
                        .outputs
                        .into_iter()
                        .map(|(n, t)| (n, tensor_spec(t)))
                        .collect(),
                    method_name: def.method_name,
                };
                (name, info)
            })
            .collect();
        let version = match spec.version_choice {
            Some(SpecVersion::Version(v)) => Some(v),
            _ => None,
        };
        Ok(ModelMetadata {
            name: spec.name,
            version,
            signatures,
        })
    }
}

impl Backend for TfServing {
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

impl Pooled for TfServing {
    fn name(&self) -> &str {
        &self.name
    }

    fn pool(&self) -> &EndpointPool {
        &self.pool
    }
}

/// Every route naming the backend shares its pool; each route's handle registers the route's
/// model with it, so health checks ask about the model and `/readyz` covers it.
impl Provider for TfServing {
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

/// TF Serving's health check: `GetModelStatus` for the model; it serves the model when a
/// version is AVAILABLE. A server without `ModelService` (`UNIMPLEMENTED`) is taken at its
/// word that it answers; any other answer without one AVAILABLE says the model isn't there.
struct StatusProbe;

impl Probe for StatusProbe {
    fn check(
        &self,
        channel: Channel,
        _endpoint: &str,
        model: Option<String>,
        timeout: Duration,
    ) -> BoxFuture<'static, ProbeOutcome> {
        Box::pin(async move {
            let message = GetModelStatusRequest {
                model_spec: Some(ModelSpec {
                    name: model.clone().unwrap_or_default(),
                    ..Default::default()
                }),
            };
            let mut client = ModelServiceClient::new(channel);
            let answer = client.get_model_status(request(message, timeout)).await;
            match (answer, model) {
                (Ok(_), None) => ProbeOutcome::Ready,
                (Ok(response), Some(_)) => {
                    let versions = response.into_inner().model_version_status;
                    if versions.iter().any(|v| v.state == State::Available as i32) {
                        ProbeOutcome::Ready
                    } else {
                        let states: Vec<String> = versions
                            .iter()
                            .map(|v| {
                                let state =
                                    State::try_from(v.state).map_or("UNKNOWN", |s| s.as_str_name());
                                format!("version {} {state}", v.version)
                            })
                            .collect();
                        ProbeOutcome::NotReady(format!(
                            "no version AVAILABLE: {}",
                            if states.is_empty() {
                                "none loaded".to_string()
                            } else {
                                states.join(", ")
                            }
                        ))
                    }
                }
                (Err(status), _) if endpoints::counts_against_endpoint(&status) => {
                    ProbeOutcome::Unreachable(endpoints::describe_status(&status))
                }
                (Err(_), None) => ProbeOutcome::Ready,
                (Err(status), Some(_)) if status.code() == tonic::Code::Unimplemented => {
                    ProbeOutcome::Ready
                }
                (Err(status), Some(_)) => ProbeOutcome::NotReady(format!(
                    "{}: {}",
                    super::code_name(status.code()),
                    status.message()
                )),
            }
        })
    }
}

fn prediction_client(channel: Channel) -> PredictionServiceClient<Channel> {
    PredictionServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

fn model_spec(target: &ModelTarget) -> ModelSpec {
    ModelSpec {
        name: target.name.clone(),
        version_choice: match &target.version {
            VersionChoice::Latest => None,
            VersionChoice::Number(v) => Some(SpecVersion::Version(*v)),
            VersionChoice::Label(l) => Some(SpecVersion::VersionLabel(l.clone())),
        },
        signature_name: target.signature.clone(),
    }
}

fn tensor_spec(info: TensorInfo) -> TensorSpec {
    let shape = info
        .tensor_shape
        .and_then(|s| (!s.unknown_rank).then(|| s.dim.iter().map(|d| d.size).collect()));
    let dtype = crate::proto::tensorflow::DataType::try_from(info.dtype)
        .ok()
        .and_then(convert::dtype_from_proto);
    let name = match info.encoding {
        Some(crate::proto::tensorflow::tensor_info::Encoding::Name(n)) => n,
        None => String::new(),
    };
    TensorSpec {
        name,
        dtype,
        dtype_name: convert::dtype_label(info.dtype),
        shape,
    }
}
