//! TF Serving's own gRPC API on the public port: `tensorflow.serving.PredictionService`
//! (`Predict`, `GetModelMetadata`) and `ModelService` (`GetModelStatus`), so a client of TF
//! Serving — `PredictionServiceStub(channel).Predict(request, 5.0)` — only changes the
//! address. `model_spec` picks the route by name, the version by number or label and the
//! signature by name, exactly as the REST path does; a Predict joins the model's batch queue
//! beside REST requests of the same shapes. Outputs are encoded as TF Serving encodes them
//! (the typed `*_val` fields), so a client sees the same bytes either way.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;
use tonic::{Request, Response, Status};

use crate::backend::tfserving::convert;
use crate::backend::{ModelMetadata, TensorSpec, VersionChoice, VersionStatus};
use crate::gateway::Gateway;
use crate::pipeline::{self, Protocol, TensorCall};
use crate::proto::tensorflow::error::Code as TfCode;
use crate::proto::tensorflow::serving::{
    GetModelMetadataRequest, GetModelMetadataResponse, GetModelStatusRequest,
    GetModelStatusResponse, ModelSpec, ModelVersionStatus, PredictRequest, PredictResponse,
    SignatureDefMap, StatusProto, model_service_server::ModelService,
    model_spec::VersionChoice as SpecVersion, model_version_status::State,
    prediction_service_server::PredictionService,
};
use crate::proto::tensorflow::{
    DataType, SignatureDef, TensorInfo, TensorProto, TensorShapeProto, tensor_info,
    tensor_shape_proto::Dim,
};
use crate::routes::Route;
use crate::tensor::{DType, NamedTensors, Tensor};

/// Both services, over the gateway's live route table.
pub struct TfServingApi {
    gateway: Arc<Gateway>,
}

impl TfServingApi {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }

    /// The route `spec` names, and the version it asks for.
    fn route(&self, spec: Option<&ModelSpec>) -> Result<(Arc<Route>, VersionChoice), Status> {
        let spec = spec.ok_or_else(|| {
            Status::invalid_argument("model_spec is missing: set model_spec.name to the model")
        })?;
        let table = self.gateway.routes().snapshot();
        let route = crate::ingress::find_route(&table, &spec.name).map_err(|e| e.to_status())?;
        tracing::Span::current().record("model", route.name.as_str());
        let version = match &spec.version_choice {
            None => VersionChoice::Latest,
            Some(SpecVersion::Version(v)) => VersionChoice::Number(*v),
            Some(SpecVersion::VersionLabel(l)) => VersionChoice::Label(l.clone()),
        };
        Ok((route, version))
    }
}

#[tonic::async_trait]
impl PredictionService for TfServingApi {
    async fn predict(
        &self,
        request: Request<PredictRequest>,
    ) -> Result<Response<PredictResponse>, Status> {
        let request = request.into_inner();
        let (route, version) = self.route(request.model_spec.as_ref())?;
        // A typed field with one value fills the whole shape: bound what a small message may
        // expand to by the limit on the message itself.
        let limit = self.gateway.config().server.max_body_bytes;
        let mut inputs: NamedTensors = request
            .inputs
            .into_iter()
            .map(
                |(name, proto)| match convert::from_proto_within(proto, limit) {
                    Ok(tensor) => Ok((name, tensor)),
                    Err(e) => Err(Status::invalid_argument(format!("input `{name}`: {e}"))),
                },
            )
            .collect::<Result<_, _>>()?;
        inputs.sort_by(|a, b| a.0.cmp(&b.0));
        let spec = request.model_spec.unwrap_or_default();
        let signature = (!spec.signature_name.is_empty()).then(|| spec.signature_name.clone());
        let call = TensorCall {
            version,
            signature: signature.clone(),
            inputs,
        };
        let outputs = pipeline::serve_tensors(route.clone(), Protocol::Grpc, call)
            .await
            .map_err(|e| e.to_status())?;
        let outputs = filter(outputs, &request.output_filter)?;
        Ok(Response::new(PredictResponse {
            model_spec: Some(ModelSpec {
                name: spec.name,
                version_choice: spec.version_choice,
                signature_name: signature.unwrap_or_else(|| route.config.signature.clone()),
            }),
            outputs: outputs
                .into_iter()
                .map(|(name, t)| (name, typed_proto(&t)))
                .collect(),
        }))
    }

    async fn get_model_metadata(
        &self,
        request: Request<GetModelMetadataRequest>,
    ) -> Result<Response<GetModelMetadataResponse>, Status> {
        let request = request.into_inner();
        // TF Serving's own checks, in its words.
        if request.metadata_field.is_empty() {
            return Err(Status::invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field \
                 (\"signature_def\")",
            ));
        }
        if let Some(other) = request
            .metadata_field
            .iter()
            .find(|f| *f != "signature_def")
        {
            return Err(Status::invalid_argument(format!(
                "Metadata field {other} is not supported (only \"signature_def\" is)"
            )));
        }
        let (route, version) = self.route(request.model_spec.as_ref())?;
        let metadata = route
            .backend
            .metadata(&route.target(version, None))
            .await
            .map_err(|e| crate::error::Error::from(e).to_status())?;
        Ok(Response::new(metadata_response(&route, &metadata)))
    }
}

#[tonic::async_trait]
impl ModelService for TfServingApi {
    async fn get_model_status(
        &self,
        request: Request<GetModelStatusRequest>,
    ) -> Result<Response<GetModelStatusResponse>, Status> {
        let request = request.into_inner();
        let (route, version) = self.route(request.model_spec.as_ref())?;
        let versions = route
            .backend
            .status(&route.target(version, None))
            .await
            .map_err(|e| crate::error::Error::from(e).to_status())?;
        Ok(Response::new(GetModelStatusResponse {
            model_version_status: versions.iter().map(version_status).collect(),
        }))
    }
}

/// `output_filter`: only the outputs named, each at most once (TF Serving's rule).
fn filter(outputs: NamedTensors, wanted: &[String]) -> Result<NamedTensors, Status> {
    if wanted.is_empty() {
        return Ok(outputs);
    }
    let mut seen = std::collections::BTreeSet::new();
    for name in wanted {
        if !seen.insert(name) {
            return Err(Status::invalid_argument(format!(
                "duplicate output_filter entry `{name}`"
            )));
        }
        if !outputs.iter().any(|(n, _)| n == name) {
            let known: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
            return Err(Status::invalid_argument(format!(
                "output_filter names `{name}`, which the model does not output (it outputs: {})",
                known.join(", ")
            )));
        }
    }
    Ok(outputs
        .into_iter()
        .filter(|(n, _)| wanted.contains(n))
        .collect())
}

/// A tensor as TF Serving answers it (`Tensor::AsProtoField`): shape, dtype and the typed
/// `*_val` field for the dtype.
pub fn typed_proto(tensor: &Tensor) -> TensorProto {
    let mut proto = TensorProto {
        dtype: convert::dtype_to_proto(tensor.dtype()) as i32,
        tensor_shape: Some(shape_proto(tensor.shape())),
        ..Default::default()
    };
    let data = tensor.data();
    fn each<const N: usize, T>(data: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        data.chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunk of N bytes")))
            .collect()
    }
    match tensor.dtype() {
        DType::F32 => proto.float_val = each(data, f32::from_le_bytes),
        DType::F64 => proto.double_val = each(data, f64::from_le_bytes),
        DType::I32 => proto.int_val = each(data, i32::from_le_bytes),
        DType::I16 => proto.int_val = each(data, |b| i16::from_le_bytes(b).into()),
        DType::I8 => proto.int_val = each(data, |b: [u8; 1]| (b[0] as i8).into()),
        DType::U8 => proto.int_val = each(data, |b: [u8; 1]| b[0].into()),
        DType::U16 => proto.int_val = each(data, |b| u16::from_le_bytes(b).into()),
        DType::I64 => proto.int64_val = each(data, i64::from_le_bytes),
        DType::U32 => proto.uint32_val = each(data, u32::from_le_bytes),
        DType::U64 => proto.uint64_val = each(data, u64::from_le_bytes),
        DType::Bool => proto.bool_val = each(data, |b: [u8; 1]| b[0] != 0),
        DType::F16 | DType::BF16 => proto.half_val = each(data, |b| u16::from_le_bytes(b).into()),
        DType::Str => proto.string_val = tensor.strings().iter().map(|s| s.to_vec()).collect(),
    }
    proto
}

fn shape_proto(dims: &[i64]) -> TensorShapeProto {
    TensorShapeProto {
        dim: dims
            .iter()
            .map(|&size| Dim {
                size,
                name: String::new(),
            })
            .collect(),
        unknown_rank: false,
    }
}

/// `GetModelMetadataResponse`: the signatures as a packed `SignatureDefMap`, under the
/// route's name (what the client called).
fn metadata_response(route: &Route, metadata: &ModelMetadata) -> GetModelMetadataResponse {
    let info = |spec: &TensorSpec| TensorInfo {
        encoding: Some(tensor_info::Encoding::Name(spec.name.clone())),
        dtype: DataType::from_str_name(&spec.dtype_name).map_or(0, |d| d as i32),
        tensor_shape: Some(match &spec.shape {
            Some(dims) => shape_proto(dims),
            None => TensorShapeProto {
                dim: Vec::new(),
                unknown_rank: true,
            },
        }),
    };
    let signature_def = metadata
        .signatures
        .iter()
        .map(|(name, sig)| {
            let def = SignatureDef {
                inputs: sig
                    .inputs
                    .iter()
                    .map(|(n, s)| (n.clone(), info(s)))
                    .collect(),
                outputs: sig
                    .outputs
                    .iter()
                    .map(|(n, s)| (n.clone(), info(s)))
                    .collect(),
                method_name: sig.method_name.clone(),
            };
            (name.clone(), def)
        })
        .collect();
    let any = prost_types::Any {
        type_url: "type.googleapis.com/tensorflow.serving.SignatureDefMap".into(),
        value: SignatureDefMap { signature_def }.encode_to_vec(),
    };
    GetModelMetadataResponse {
        model_spec: Some(ModelSpec {
            name: route.name.clone(),
            version_choice: metadata.version.map(SpecVersion::Version),
            signature_name: String::new(),
        }),
        metadata: HashMap::from([("signature_def".to_string(), any)]),
    }
}

fn version_status(v: &VersionStatus) -> ModelVersionStatus {
    ModelVersionStatus {
        version: v.version,
        state: State::from_str_name(&v.state).map_or(0, |s| s as i32),
        status: Some(StatusProto {
            error_code: TfCode::from_str_name(&v.error_code).map_or(2, |c| c as i32),
            error_message: v.error_message.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Typed output fields decode back to the same tensor, for every numeric family.
    #[test]
    fn typed_protos_round_trip() {
        let tensors = [
            Tensor::from_f32(vec![2, 2], &[0.5, -1.0, 3.25, 0.0]).unwrap(),
            Tensor::from_i64(vec![3], &[-7, 0, 1 << 40]).unwrap(),
            Tensor::from_bytes(DType::U8, vec![3], vec![0u8, 128, 255].into()).unwrap(),
            Tensor::from_bytes(DType::I8, vec![2], vec![0x80u8, 0x7f].into()).unwrap(),
            Tensor::from_bytes(DType::Bool, vec![2], vec![1u8, 0].into()).unwrap(),
            Tensor::from_bytes(DType::F16, vec![1], vec![0x00u8, 0x3c].into()).unwrap(),
            Tensor::from_strings(vec![2], vec!["a".into(), "bc".into()]).unwrap(),
        ];
        for t in tensors {
            assert_eq!(convert::from_proto(typed_proto(&t)).unwrap(), t);
        }
    }

    /// output_filter keeps what it names and refuses names the model doesn't output.
    #[test]
    fn output_filter() {
        let t = Tensor::from_f32(vec![1], &[1.0]).unwrap();
        let outputs = vec![("a".to_string(), t.clone()), ("b".to_string(), t)];
        let kept = filter(outputs.clone(), &["b".into()]).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].0, "b");
        let err = filter(outputs.clone(), &["c".into()]).unwrap_err();
        assert!(
            err.message().contains("it outputs: a, b"),
            "{}",
            err.message()
        );
        assert!(filter(outputs, &["a".into(), "a".into()]).is_err());
    }
}
