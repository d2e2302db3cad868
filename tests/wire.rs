//! Wire compatibility with TensorFlow Serving: messages encoded by the official
//! `tensorflow-serving-api` Python package (`tests/fixtures/wire/*.bin`, written by
//! `scripts/wire_golden.py`) decode with this crate's protos to exactly the expected values,
//! and this crate encodes the same values to the same bytes.

use std::collections::HashMap;
use std::path::Path;

use infergate::proto::tensorflow::serving::{
    GetModelMetadataResponse, GetModelStatusResponse, ModelSpec, ModelVersionStatus,
    PredictRequest, PredictResponse, SignatureDefMap, StatusProto, model_spec::VersionChoice,
    model_version_status::State,
};
use infergate::proto::tensorflow::{
    DataType, TensorProto, TensorShapeProto, tensor_shape_proto::Dim,
};
use prost::Message;

fn golden(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/wire")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn shape(dims: &[i64]) -> Option<TensorShapeProto> {
    Some(TensorShapeProto {
        dim: dims
            .iter()
            .map(|&size| Dim {
                size,
                name: String::new(),
            })
            .collect(),
        unknown_rank: false,
    })
}

fn spec(version: Option<VersionChoice>, signature: &str) -> Option<ModelSpec> {
    Some(ModelSpec {
        name: "digits".into(),
        version_choice: version,
        signature_name: signature.into(),
    })
}

fn image_input() -> HashMap<String, TensorProto> {
    let content: Vec<u8> = [0.0f32, 0.25, 0.5, 1.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let tensor = TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: shape(&[1, 2, 2, 1]),
        tensor_content: content,
        ..Default::default()
    };
    [("image".to_string(), tensor)].into()
}

/// Decodes `name` to `expected`, and encodes `expected` back to the golden bytes.
fn assert_wire<M: Message + Default + PartialEq + std::fmt::Debug>(name: &str, expected: M) {
    let bytes = golden(name);
    assert_eq!(
        M::decode(bytes.as_slice()).unwrap(),
        expected,
        "{name} decodes"
    );
    assert_eq!(
        expected.encode_to_vec(),
        bytes,
        "{name} encodes byte for byte"
    );
}

/// A PredictRequest with a numeric version, signature, `tensor_content` input and output filter.
#[test]
fn predict_request_with_version() {
    let expected = PredictRequest {
        model_spec: spec(Some(VersionChoice::Version(2)), "serving_default"),
        inputs: image_input(),
        output_filter: vec!["probabilities".into()],
    };
    assert_wire("predict_request_version.bin", expected);
}

/// A PredictRequest addressing a version label. Python writes fields in number order
/// (signature_name = 3 before version_label = 4) while prost writes the `version_choice`
/// oneof where it is declared; both orders are valid protobuf, so this one is compared by value.
#[test]
fn predict_request_with_label() {
    let expected = PredictRequest {
        model_spec: spec(
            Some(VersionChoice::VersionLabel("stable".into())),
            "serving_default",
        ),
        inputs: image_input(),
        output_filter: vec![],
    };
    let bytes = golden("predict_request_label.bin");
    assert_eq!(PredictRequest::decode(bytes.as_slice()).unwrap(), expected);
    assert_eq!(
        PredictRequest::decode(expected.encode_to_vec().as_slice()).unwrap(),
        expected
    );
}

/// TF Serving's default response encoding: typed `float_val`.
#[test]
fn predict_response_typed_floats() {
    let tensor = TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: shape(&[1, 3]),
        float_val: vec![0.1, 0.2, 0.7],
        ..Default::default()
    };
    let expected = PredictResponse {
        model_spec: spec(Some(VersionChoice::Version(1)), "serving_default"),
        outputs: [("probabilities".to_string(), tensor)].into(),
    };
    assert_wire("predict_response_typed.bin", expected);
}

/// Typed `int64_val` outputs.
#[test]
fn predict_response_int64() {
    let tensor = TensorProto {
        dtype: DataType::DtInt64 as i32,
        tensor_shape: shape(&[2]),
        int64_val: vec![7, 3],
        ..Default::default()
    };
    let decoded = PredictResponse::decode(golden("predict_response_int64.bin").as_slice()).unwrap();
    assert_eq!(decoded.outputs["label"], tensor);
}

/// Model status with two available versions.
#[test]
fn model_status_response() {
    let decoded =
        GetModelStatusResponse::decode(golden("model_status_response.bin").as_slice()).unwrap();
    let versions: Vec<i64> = decoded
        .model_version_status
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(versions.len(), 2);
    for status in &decoded.model_version_status {
        assert_eq!(
            status,
            &ModelVersionStatus {
                version: status.version,
                state: State::Available as i32,
                status: Some(StatusProto {
                    error_code: 0,
                    error_message: String::new()
                }),
            }
        );
    }
    assert_eq!(decoded.encode_to_vec(), golden("model_status_response.bin"));
}

/// Metadata: an `Any` holding a SignatureDefMap, whose input and output infos decode.
#[test]
fn model_metadata_response() {
    let decoded =
        GetModelMetadataResponse::decode(golden("model_metadata_response.bin").as_slice()).unwrap();
    let any = &decoded.metadata["signature_def"];
    assert_eq!(
        any.type_url,
        "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    );
    let map = SignatureDefMap::decode(any.value.as_slice()).unwrap();
    let sig = &map.signature_def["serving_default"];
    assert_eq!(sig.method_name, "tensorflow/serving/predict");
    let image = &sig.inputs["image"];
    assert_eq!(image.dtype, DataType::DtFloat as i32);
    assert_eq!(image.tensor_shape, shape(&[-1, 28, 28, 1]));
    assert_eq!(sig.outputs["probabilities"].tensor_shape, shape(&[-1, 10]));
}

/// String tensors travel in `string_val`, one entry per element.
#[test]
fn string_tensor() {
    let expected = TensorProto {
        dtype: DataType::DtString as i32,
        tensor_shape: shape(&[2]),
        string_val: vec![b"a".to_vec(), b"bc".to_vec()],
        ..Default::default()
    };
    assert_wire("tensor_string.bin", expected);
}
