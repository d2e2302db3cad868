//! The Open Inference Protocol's REST endpoints: `GET /v2`, `/v2/health/live`,
//! `/v2/health/ready`, `/v2/models/{m}[/versions/{v}]` (metadata), `…/ready`, and
//! `POST …/infer` with JSON tensors or the binary tensor extension: with an
//! `Inference-Header-Content-Length: N` header the body's first N bytes are the JSON request
//! and the rest holds the inputs whose `parameters.binary_data_size` says how many bytes each
//! takes, in order. Outputs come back binary when the request asks (an output's
//! `parameters.binary_data`, or the request's `parameters.binary_data_output`).

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{EXTENSIONS, Infer, SERVER_NAME, tensor};
use crate::backend::VersionChoice;
use crate::error::Error;
use crate::gateway::Gateway;
use crate::ingress::{Body, full, json_response};
use crate::pipeline::Protocol;
use crate::tensor::{NamedTensors, Tensor};

/// The header that splits a binary-extension body into its JSON part and its binary part.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// `GET /v2`: the server's name, version and extensions.
pub fn server_metadata() -> Response<Body> {
    let body = json!({
        "name": SERVER_NAME,
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    });
    json_response(StatusCode::OK, Bytes::from(body.to_string()))
}

/// `GET /v2/health/ready`: 200 while serving, 503 once draining (as `/readyz`).
pub fn server_ready(gateway: &Gateway) -> Response<Body> {
    if gateway.draining() {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(b"{\"ready\":false}"),
        )
    } else {
        json_response(StatusCode::OK, Bytes::from_static(b"{\"ready\":true}"))
    }
}

/// `GET /v2/health/live`.
pub fn server_live() -> Response<Body> {
    json_response(StatusCode::OK, Bytes::from_static(b"{\"live\":true}"))
}

/// `GET /v2/models/{m}[/versions/{v}]`.
pub async fn model_metadata(
    gateway: &Gateway,
    model: &str,
    version: VersionChoice,
) -> Result<Response<Body>, Error> {
    let route = super::route(gateway, model)?;
    let meta = super::metadata(gateway, &route, version).await?;
    let tensors = |list: &[super::TensorMeta]| -> Vec<Value> {
        list.iter()
            .map(|t| json!({ "name": t.name, "datatype": t.datatype, "shape": t.shape }))
            .collect()
    };
    let body = json!({
        "name": meta.name,
        "versions": meta.versions,
        "platform": meta.platform,
        "inputs": tensors(&meta.inputs),
        "outputs": tensors(&meta.outputs),
    });
    Ok(json_response(StatusCode::OK, Bytes::from(body.to_string())))
}

/// `GET /v2/models/{m}[/versions/{v}]/ready`: 200 when ready, 503 when the backend doesn't
/// report the version available (clients read any non-200 as not ready).
pub async fn model_ready(
    gateway: &Gateway,
    model: &str,
    version: VersionChoice,
) -> Result<Response<Body>, Error> {
    let route = super::route(gateway, model)?;
    let ready = super::ready(&route, version).await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({ "name": route.name, "ready": ready });
    Ok(json_response(status, Bytes::from(body.to_string())))
}

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<InputJson>,
    #[serde(default)]
    outputs: Vec<OutputJson>,
}

#[derive(Deserialize)]
struct InputJson {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// `POST /v2/models/{m}[/versions/{v}]/infer` with the request's headers and whole body.
pub async fn infer(
    gateway: &Gateway,
    model: &str,
    version: VersionChoice,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response<Body>, Error> {
    let route = super::route(gateway, model)?;
    let (json_part, mut binary) = split_body(headers, body)?;
    let request: InferRequest = serde_json::from_slice(&json_part)
        .map_err(|e| Error::BadRequest(format!("malformed inference request: {e}")))?;
    let mut inputs = NamedTensors::with_capacity(request.inputs.len());
    for input in &request.inputs {
        let tensor = decode_input(input, &mut binary)
            .map_err(|e| Error::BadRequest(format!("input `{}`: {e}", input.name)))?;
        inputs.push((input.name.clone(), tensor));
    }
    if !binary.is_empty() {
        return Err(Error::BadRequest(format!(
            "the binary part of the body has {} bytes that no input's binary_data_size claims",
            binary.len()
        )));
    }
    let all_binary = request
        .parameters
        .get("binary_data_output")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let binary_outputs: Vec<(String, bool)> = request
        .outputs
        .iter()
        .map(|o| {
            let b = o.parameters.get("binary_data").and_then(Value::as_bool);
            (o.name.clone(), b.unwrap_or(all_binary))
        })
        .collect();
    let infer = Infer {
        version: version.clone(),
        inputs,
        outputs: request.outputs.iter().map(|o| o.name.clone()).collect(),
    };
    let outputs = super::infer(route.clone(), Protocol::V2, infer).await?;
    let binary_of = |name: &str| {
        binary_outputs
            .iter()
            .find(|(n, _)| n == name)
            .map_or(all_binary, |(_, b)| *b)
    };
    Ok(respond(
        &route.name,
        &super::version_text(&version),
        request.id,
        &outputs,
        binary_of,
    ))
}

/// The JSON part and the binary part of the body.
fn split_body(headers: &HeaderMap, body: Bytes) -> Result<(Bytes, Bytes), Error> {
    let Some(value) = headers.get(HEADER_LENGTH) else {
        return Ok((body, Bytes::new()));
    };
    let n: usize = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            Error::BadRequest(
                "Inference-Header-Content-Length must be the JSON part's length in bytes".into(),
            )
        })?;
    if n > body.len() {
        return Err(Error::BadRequest(format!(
            "Inference-Header-Content-Length is {n} but the body has only {} bytes",
            body.len()
        )));
    }
    let mut json_part = body;
    let binary = json_part.split_off(n);
    Ok((json_part, binary))
}

/// One input from its JSON `data` or its share of the binary part.
fn decode_input(input: &InputJson, binary: &mut Bytes) -> Result<Tensor, String> {
    let dtype = tensor::dtype(&input.datatype)?;
    match (input.parameters.get("binary_data_size"), &input.data) {
        (Some(_), Some(_)) => Err("has both data and binary_data_size; send one".into()),
        (Some(size), None) => {
            let size = size
                .as_u64()
                .ok_or("binary_data_size must be a byte count")? as usize;
            if size > binary.len() {
                return Err(format!(
                    "binary_data_size is {size} but only {} bytes of binary data remain",
                    binary.len()
                ));
            }
            tensor::from_raw(dtype, input.shape.clone(), binary.split_to(size))
        }
        (None, Some(data)) => tensor::from_json(dtype, input.shape.clone(), data),
        (None, None) => Err("has neither data nor parameters.binary_data_size".into()),
    }
}

/// The inference response: all JSON, or a JSON header followed by the binary outputs.
fn respond(
    model: &str,
    version: &str,
    id: Option<String>,
    outputs: &NamedTensors,
    binary_of: impl Fn(&str) -> bool,
) -> Response<Body> {
    let mut binary = Vec::new();
    let entries: Vec<Value> = outputs
        .iter()
        .map(|(name, t)| {
            let mut entry = json!({
                "name": name,
                "datatype": tensor::datatype(t.dtype()),
                "shape": t.shape(),
            });
            if binary_of(name) {
                let raw = tensor::to_raw(t);
                entry["parameters"] = json!({ "binary_data_size": raw.len() });
                binary.push(raw);
            } else {
                entry["data"] = tensor::to_json(t);
            }
            entry
        })
        .collect();
    let mut head = json!({ "model_name": model, "model_version": version, "outputs": entries });
    if let Some(id) = id {
        head["id"] = json!(id);
    }
    let head = head.to_string().into_bytes();
    if binary.is_empty() {
        return json_response(StatusCode::OK, Bytes::from(head));
    }
    let head_len = head.len();
    let mut body = head;
    for part in &binary {
        body.extend_from_slice(part);
    }
    let mut response = Response::new(full(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(HEADER_LENGTH, HeaderValue::from(head_len));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header length past the body's end is refused, naming both lengths.
    #[test]
    fn header_longer_than_the_body() {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_LENGTH, HeaderValue::from_static("100"));
        let err = split_body(&headers, Bytes::from_static(b"{}")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Inference-Header-Content-Length is 100 but the body has only 2 bytes"
        );
        headers.insert(HEADER_LENGTH, HeaderValue::from_static("2"));
        let (json_part, binary) = split_body(&headers, Bytes::from_static(b"{}abc")).unwrap();
        assert_eq!(
            (json_part.as_ref(), binary.as_ref()),
            (&b"{}"[..], &b"abc"[..])
        );
    }
}
