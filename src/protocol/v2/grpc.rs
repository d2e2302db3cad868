//! `inference.GRPCInferenceService` on the public port: server and model health, model
//! metadata, and `ModelInfer` with `raw_input_contents` or typed contents. Answers carry
//! `raw_output_contents`, as Triton's do, which every client reads.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::tensor;
use super::{EXTENSIONS, Infer, SERVER_NAME};
use crate::gateway::Gateway;
use crate::pipeline::Protocol;
use crate::proto::inference::grpc_inference_service_server::GrpcInferenceService;
use crate::proto::inference::{
    ModelInferRequest, ModelInferResponse, ModelMetadataRequest, ModelMetadataResponse,
    ModelReadyRequest, ModelReadyResponse, ServerLiveRequest, ServerLiveResponse,
    ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest, ServerReadyResponse,
    model_infer_request::InferInputTensor, model_infer_response::InferOutputTensor,
    model_metadata_response::TensorMetadata,
};
use crate::tensor::{NamedTensors, Tensor};

pub struct InferenceApi {
    gateway: Arc<Gateway>,
}

impl InferenceApi {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }
}

fn status(e: crate::error::Error) -> Status {
    e.to_status()
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceApi {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: !self.gateway.draining(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let request = request.into_inner();
        let route = super::route(&self.gateway, &request.name).map_err(status)?;
        let version = super::version(&request.version).map_err(status)?;
        Ok(Response::new(ModelReadyResponse {
            ready: super::ready(&route, version).await,
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: SERVER_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|e| (*e).to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let request = request.into_inner();
        let route = super::route(&self.gateway, &request.name).map_err(status)?;
        let version = super::version(&request.version).map_err(status)?;
        let meta = super::metadata(&self.gateway, &route, version)
            .await
            .map_err(status)?;
        let tensors = |list: Vec<super::TensorMeta>| {
            list.into_iter()
                .map(|t| TensorMetadata {
                    name: t.name,
                    datatype: t.datatype,
                    shape: t.shape,
                })
                .collect()
        };
        Ok(Response::new(ModelMetadataResponse {
            name: meta.name,
            versions: meta.versions,
            platform: meta.platform,
            inputs: tensors(meta.inputs),
            outputs: tensors(meta.outputs),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let request = request.into_inner();
        let route = super::route(&self.gateway, &request.model_name).map_err(status)?;
        let version = super::version(&request.model_version).map_err(status)?;
        let inputs = decode_inputs(request.inputs, request.raw_input_contents)?;
        let infer = Infer {
            version: version.clone(),
            inputs,
            outputs: request.outputs.into_iter().map(|o| o.name).collect(),
        };
        let outputs = super::infer(route.clone(), Protocol::V2Grpc, infer)
            .await
            .map_err(status)?;
        Ok(Response::new(encode_outputs(
            route.name.clone(),
            super::version_text(&version),
            request.id,
            &outputs,
        )))
    }
}

/// The request's tensors: all raw (one `raw_input_contents` entry per input, in order) or all
/// typed.
pub fn decode_inputs(
    inputs: Vec<InferInputTensor>,
    raw: Vec<Vec<u8>>,
) -> Result<NamedTensors, Status> {
    if !raw.is_empty() && raw.len() != inputs.len() {
        return Err(Status::invalid_argument(format!(
            "raw_input_contents has {} entries but the request has {} inputs: send one per \
             input, in the order of `inputs`",
            raw.len(),
            inputs.len()
        )));
    }
    let mut raw = raw.into_iter();
    inputs
        .into_iter()
        .map(|input| {
            let bad = |e: String| Status::invalid_argument(format!("input `{}`: {e}", input.name));
            let dtype = tensor::dtype(&input.datatype).map_err(bad)?;
            let tensor = match raw.next() {
                Some(bytes) => {
                    if input.contents.is_some() {
                        return Err(bad(
                            "has both contents and raw_input_contents; send one".into()
                        ));
                    }
                    tensor::from_raw(dtype, input.shape.clone(), bytes.into())
                }
                None => tensor::from_contents(
                    dtype,
                    input.shape.clone(),
                    input.contents.clone().unwrap_or_default(),
                ),
            }
            .map_err(bad)?;
            Ok((input.name, tensor))
        })
        .collect()
}

/// A response with `raw_output_contents`, one entry per output in order.
pub fn encode_outputs(
    model_name: String,
    model_version: String,
    id: String,
    outputs: &[(String, Tensor)],
) -> ModelInferResponse {
    ModelInferResponse {
        model_name,
        model_version,
        id,
        parameters: Default::default(),
        outputs: outputs
            .iter()
            .map(|(name, t)| InferOutputTensor {
                name: name.clone(),
                datatype: tensor::datatype(t.dtype()).into(),
                shape: t.shape().to_vec(),
                parameters: Default::default(),
                contents: None,
            })
            .collect(),
        raw_output_contents: outputs
            .iter()
            .map(|(_, t)| tensor::to_raw(t).to_vec())
            .collect(),
    }
}
