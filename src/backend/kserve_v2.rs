//! The `kserve_v2` backend: the Open Inference Protocol's gRPC API
//! (`inference.GRPCInferenceService`), spoken by Triton Inference Server, OpenVINO Model
//! Server, MLServer and KServe. Batches go out as one `ModelInfer` with
//! `raw_input_contents`; answers are read from `raw_output_contents` or typed contents. The
//! protocol has no signatures: a route's `signature` names the model's one set of inputs and
//! outputs, reported by `ModelMetadata`; readiness comes from `ModelReady`. One lazily
//! connected channel per endpoint, used round robin; a deadline on every call.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

use super::tfserving::{MAX_MESSAGE_BYTES, convert};
use super::{
    Backend, BackendError, BackendFuture, LoadError, ModelMetadata, ModelTarget, Provider,
    SignatureInfo, TensorSpec, VersionChoice, VersionStatus,
};
use crate::config::{KserveV2Config, ModelConfig};
use crate::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::proto::inference::model_infer_request::InferInputTensor;
use crate::proto::inference::model_metadata_response::TensorMetadata;
use crate::proto::inference::{ModelInferRequest, ModelMetadataRequest, ModelReadyRequest};
use crate::protocol::v2::tensor;
use crate::tensor::NamedTensors;

pub struct KserveV2 {
    name: String,
    channels: Vec<Channel>,
    next: AtomicUsize,
    timeout: Duration,
}

impl KserveV2 {
    pub fn new(name: &str, config: &KserveV2Config) -> Result<Self, BackendError> {
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
                // Lazy: the gateway starts (and answers 503) while the model server is down.
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

    fn client(&self) -> GrpcInferenceServiceClient<Channel> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        GrpcInferenceServiceClient::new(self.channels[i].clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Runs `call` with the deadline: sent as `grpc-timeout` and enforced here.
    async fn call<T, F>(
        &self,
        deadline: Option<Duration>,
        call: impl FnOnce(GrpcInferenceServiceClient<Channel>, Duration) -> F,
    ) -> Result<T, BackendError>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let timeout = deadline.map_or(self.timeout, |d| d.min(self.timeout));
        let started = Instant::now();
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
        match tokio::time::timeout(timeout, call(self.client(), timeout)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status))
                if status.code() == tonic::Code::Cancelled && started.elapsed() >= timeout =>
            {
                Err(late())
            }
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => Err(BackendError::new(
                status.code(),
                format!(
                    "backend `{}` is unavailable: {}",
                    self.name,
                    status.message()
                ),
            )),
            Ok(Err(status)) => Err(BackendError::new(status.code(), status.message())),
            Err(_) => Err(late()),
        }
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
        let message = ModelInferRequest {
            model_name: target.name.clone(),
            model_version: self.version(&target.version)?,
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
            .call(deadline, |mut client, timeout| {
                let mut request = tonic::Request::new(message);
                request.set_timeout(timeout);
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
            let request = ModelReadyRequest {
                name: target.name.clone(),
                version: v.clone(),
            };
            let ready = self
                .call(None, |mut client, timeout| {
                    let mut request = tonic::Request::new(request);
                    request.set_timeout(timeout);
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
        let request = ModelMetadataRequest {
            name: target.name.clone(),
            version,
        };
        self.call(None, |mut client, timeout| {
            let mut request = tonic::Request::new(request);
            request.set_timeout(timeout);
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

/// A model server is shared as it is by every route that names it.
impl Provider for KserveV2 {
    fn for_route(
        self: Arc<Self>,
        _route: &str,
        _config: &ModelConfig,
    ) -> Result<Arc<dyn Backend>, LoadError> {
        Ok(self)
    }
}
