//! The `tfserving` backend: TF Serving's `PredictionService` and `ModelService` over tonic.
//! One lazily connected channel per endpoint, used round robin; large message limits (TF
//! Serving accepts up to 2 GiB, tonic's default is 4 MiB); a deadline on every call.

pub mod convert;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prost::Message;
use tonic::transport::{Channel, Endpoint};

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

/// Largest gRPC message either way.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

pub struct TfServing {
    name: String,
    channels: Vec<Channel>,
    next: AtomicUsize,
    timeout: Duration,
}

impl TfServing {
    pub fn new(name: &str, config: &TfServingConfig) -> Result<Self, BackendError> {
        let channels = config
            .endpoints
            .iter()
            .map(|url| {
                let endpoint = Endpoint::from_shared(url.clone())
                    .map_err(|e| {
                        BackendError::new(
                            tonic::Code::InvalidArgument,
                            format!("endpoint {url}: {e}"),
                        )
                    })?
                    .connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(30));
                // Lazy: the gateway starts (and answers 503) while the model server is down,
                // and reconnects by itself when it comes back.
                Ok(endpoint.connect_lazy())
            })
            .collect::<Result<Vec<_>, BackendError>>()?;
        Ok(Self {
            name: name.to_string(),
            channels,
            next: AtomicUsize::new(0),
            timeout: config.timeout(),
        })
    }

    fn channel(&self) -> Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[i].clone()
    }

    fn prediction(&self) -> PredictionServiceClient<Channel> {
        PredictionServiceClient::new(self.channel())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Runs `call` with the deadline: sent to the server as `grpc-timeout` and enforced here.
    async fn call<T, F>(&self, deadline: Option<Duration>, call: F) -> Result<T, BackendError>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let timeout = deadline.map_or(self.timeout, |d| d.min(self.timeout));
        let started = std::time::Instant::now();
        let late = || {
            BackendError::new(
                tonic::Code::DeadlineExceeded,
                format!(
                    "backend `{}` did not answer within {}ms",
                    self.name,
                    timeout.as_millis()
                ),
            )
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            // A server that enforces the `grpc-timeout` we sent may beat our own timer to it
            // and answer CANCELLED; either way the deadline passed.
            Ok(Err(status))
                if status.code() == tonic::Code::Cancelled && started.elapsed() >= timeout =>
            {
                Err(late())
            }
            Ok(Err(status)) => Err(BackendError::new(
                status.code(),
                status_message(&self.name, &status),
            )),
            Err(_) => Err(late()),
        }
    }

    fn request<T>(&self, message: T, deadline: Option<Duration>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(deadline.map_or(self.timeout, |d| d.min(self.timeout)));
        request
    }

    async fn run_predict(
        &self,
        target: &ModelTarget,
        inputs: &NamedTensors,
        deadline: Option<Duration>,
    ) -> Result<NamedTensors, BackendError> {
        let message = PredictRequest {
            model_spec: Some(model_spec(target)),
            inputs: inputs
                .iter()
                .map(|(name, t)| (name.clone(), convert::to_proto(t)))
                .collect(),
            output_filter: Vec::new(),
        };
        let mut client = self.prediction();
        let request = self.request(message, deadline);
        let response = self.call(deadline, client.predict(request)).await?;
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
        let mut client = ModelServiceClient::new(self.channel());
        let request = self.request(
            GetModelStatusRequest {
                model_spec: Some(spec),
            },
            None,
        );
        let response = self.call(None, client.get_model_status(request)).await?;
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
        let message = GetModelMetadataRequest {
            model_spec: Some(spec),
            metadata_field: vec!["signature_def".into()],
        };
        let mut client = self.prediction();
        let request = self.request(message, None);
        let response = self.call(None, client.get_model_metadata(request)).await?;
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

/// A model server is shared as it is by every route that names it.
impl Provider for TfServing {
    fn for_route(
        self: Arc<Self>,
        _route: &str,
        _config: &ModelConfig,
    ) -> Result<Arc<dyn Backend>, LoadError> {
        Ok(self)
    }
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

/// The server's message, or for transport failures a sentence that says which backend.
fn status_message(backend: &str, status: &tonic::Status) -> String {
    match status.code() {
        tonic::Code::Unavailable => {
            format!("backend `{backend}` is unavailable: {}", status.message())
        }
        _ => status.message().to_string(),
    }
}
