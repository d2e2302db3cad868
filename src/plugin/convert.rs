//! Conversions between the gateway's types and the generated WIT types, with the checks a
//! plugin's output must pass before the gateway trusts it.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::bindings::types::{self as wit, Dtype};
use super::types::{PluginRequest, Prepared, Rejection};
use crate::reply::Reply;
use crate::tensor::{DType, NamedTensors, Tensor};

pub fn request_to_wit(request: &PluginRequest) -> wit::Request {
    wit::Request {
        model: request.model.clone(),
        version: request.version,
        label: request.label.clone(),
        method: request.method.clone(),
        path: request.path.clone(),
        query: request.query.clone(),
        headers: request.headers.clone(),
        body: request.body.to_vec(),
    }
}

pub fn tensors_to_wit(tensors: &NamedTensors) -> Vec<(String, wit::Tensor)> {
    tensors
        .iter()
        .map(|(name, t)| (name.clone(), tensor_to_wit(t)))
        .collect()
}

fn tensor_to_wit(tensor: &Tensor) -> wit::Tensor {
    wit::Tensor {
        dtype: dtype_to_wit(tensor.dtype()),
        shape: tensor.shape().to_vec(),
        data: tensor.data().to_vec(),
        strings: tensor.strings().iter().map(|s| s.to_vec()).collect(),
    }
}

pub fn rejection(error: wit::PluginError) -> Rejection {
    match error {
        wit::PluginError::BadRequest(m) => Rejection::BadRequest(m),
        wit::PluginError::Unprocessable(m) => Rejection::Unprocessable(m),
        wit::PluginError::Internal(m) => Rejection::Internal(m),
    }
}

/// Checks a preprocessor's output: unique names, well-formed tensors, one shared dim 0.
pub fn prepared_from_wit(prepared: wit::Prepared) -> Result<Prepared, String> {
    if prepared.inputs.is_empty() {
        return Err("preprocess returned no input tensors".into());
    }
    let mut inputs: NamedTensors = Vec::with_capacity(prepared.inputs.len());
    for (name, t) in prepared.inputs {
        if inputs.iter().any(|(n, _)| *n == name) {
            return Err(format!("input `{name}` appears twice"));
        }
        let strings = t.strings.into_iter().map(Bytes::from).collect();
        let tensor = Tensor::from_parts(
            dtype_from_wit(t.dtype),
            t.shape,
            Bytes::from(t.data),
            strings,
        )
        .map_err(|e| format!("input `{name}`: {e}"))?;
        inputs.push((name, tensor));
    }
    let rows = |t: &Tensor| t.rows();
    let first_rows = rows(&inputs[0].1);
    if first_rows.is_none() {
        return Err(format!(
            "input `{}` is a scalar; inputs need a batch dimension (dim 0)",
            inputs[0].0
        ));
    }
    if let Some((name, t)) = inputs.iter().find(|(_, t)| rows(t) != first_rows) {
        return Err(format!(
            "input `{name}` has shape {:?} but `{}` has {:?}; all inputs must share dim 0",
            t.shape(),
            inputs[0].0,
            inputs[0].1.shape()
        ));
    }
    Ok(Prepared {
        inputs,
        context: Bytes::from(prepared.context),
    })
}

/// Checks a postprocessor's output: a real HTTP status, valid header names and values.
pub fn response_from_wit(response: wit::Response) -> Result<Reply, String> {
    let status = StatusCode::from_u16(response.status)
        .ok()
        .filter(|s| (100..=599).contains(&s.as_u16()) && !s.is_informational())
        .ok_or_else(|| {
            format!(
                "status {} is not a valid final HTTP status (200..=599)",
                response.status
            )
        })?;
    let mut headers = HeaderMap::with_capacity(response.headers.len());
    for (name, value) in response.headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a valid header name"))?;
        if is_gateway_header(&header) {
            return Err(format!(
                "header `{name}` is the gateway's to set: a post plugin may not return framing \
                 or hop-by-hop headers ({GATEWAY_HEADERS}); remove it from the response"
            ));
        }
        let value = HeaderValue::from_str(&value)
            .map_err(|_| format!("header `{name}` has an invalid value"))?;
        headers.append(header, value);
    }
    Ok(Reply {
        status,
        headers,
        body: Bytes::from(response.body),
    })
}

/// The headers that frame the response or belong to one connection (RFC 9110 §7.6.1, §6.4;
/// RFC 9112 §6–7): the gateway's HTTP server sets them. A plugin returning one is refused
/// (500 naming it) rather than silently dropped, so a plugin relying on one finds out in its
/// first test instead of in production — and none can desynchronise a keep-alive connection
/// or smuggle a second response.
const GATEWAY_HEADERS: &str =
    "content-length, transfer-encoding, connection, keep-alive, upgrade, te, trailer, proxy-*";

/// Whether `name` (lowercase, as [`HeaderName`] keeps it) is one of [`GATEWAY_HEADERS`].
fn is_gateway_header(name: &HeaderName) -> bool {
    let name = name.as_str();
    matches!(
        name,
        "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "upgrade"
            | "te"
            | "trailer"
    ) || name.starts_with("proxy-")
}

/// A plugin's output tensor as plain parts: name, dtype, shape, data, strings.
pub type RawTensor = (String, DType, Vec<i64>, Vec<u8>, Vec<Vec<u8>>);

/// [`prepared_from_wit`] on plain parts: the checks a preprocessor's output passes, for
/// fuzzing and tests, which can't build the generated WIT types.
pub fn check_prepared(inputs: Vec<RawTensor>, context: Vec<u8>) -> Result<Prepared, String> {
    let inputs = inputs
        .into_iter()
        .map(|(name, dtype, shape, data, strings)| {
            let dtype = dtype_to_wit(dtype);
            (
                name,
                wit::Tensor {
                    dtype,
                    shape,
                    data,
                    strings,
                },
            )
        })
        .collect();
    prepared_from_wit(wit::Prepared { inputs, context })
}

/// [`response_from_wit`] on plain parts: the checks a postprocessor's output passes.
pub fn check_response(
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> Result<Reply, String> {
    response_from_wit(wit::Response {
        status,
        headers,
        body,
    })
}

pub(super) fn dtype_to_wit(dtype: DType) -> Dtype {
    match dtype {
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::Bf16,
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::I8 => Dtype::I8,
        DType::I16 => Dtype::I16,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        DType::U8 => Dtype::U8,
        DType::U16 => Dtype::U16,
        DType::U32 => Dtype::U32,
        DType::U64 => Dtype::U64,
        DType::Bool => Dtype::Boolean,
        DType::Str => Dtype::Str,
    }
}

pub(super) fn dtype_from_wit(dtype: Dtype) -> DType {
    match dtype {
        Dtype::F16 => DType::F16,
        Dtype::Bf16 => DType::BF16,
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::I8 => DType::I8,
        Dtype::I16 => DType::I16,
        Dtype::I32 => DType::I32,
        Dtype::I64 => DType::I64,
        Dtype::U8 => DType::U8,
        Dtype::U16 => DType::U16,
        Dtype::U32 => DType::U32,
        Dtype::U64 => DType::U64,
        Dtype::Boolean => DType::Bool,
        Dtype::Str => DType::Str,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(name: &str, value: &str) -> wit::Response {
        wit::Response {
            status: 200,
            headers: vec![
                ("content-type".into(), "text/plain".into()),
                (name.into(), value.into()),
            ],
            body: b"ok".to_vec(),
        }
    }

    /// Every framing and hop-by-hop header, in any case, is refused naming itself; the ones
    /// a plugin may set (and look-alikes of the refused ones) pass.
    #[test]
    fn framing_and_hop_by_hop_headers_are_refused() {
        for (name, value) in [
            ("content-length", "2"),
            ("content-length", "1"),
            ("content-length", "100"),
            ("content-length", "two"),
            ("Content-Length", "2"),
            ("CONTENT-LENGTH", "2"),
            ("transfer-encoding", "chunked"),
            ("Transfer-Encoding", "identity"),
            ("connection", "close"),
            ("Connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("upgrade", "h2c"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("proxy-connection", "keep-alive"),
            ("Proxy-Authenticate", "Basic"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
        ] {
            let refused = response_from_wit(with_header(name, value));
            let Err(message) = refused else {
                panic!("{name}: {value} was accepted")
            };
            assert!(
                message.contains(&format!("header `{name}` is the gateway's to set")),
                "{message}"
            );
        }
        for (name, value) in [
            ("x-content-length", "2"),
            ("content-language", "en"),
            ("x-connection", "close"),
            ("tech", "1"),
            ("trailers", "1"),
            ("x-proxy-hop", "1"),
            ("cache-control", "no-store"),
        ] {
            let reply = response_from_wit(with_header(name, value)).unwrap();
            assert_eq!(reply.headers[name], value, "{name}");
        }
    }

    /// Two `content-length`s are refused at the first, whatever the values.
    #[test]
    fn two_content_lengths_are_refused() {
        let mut response = with_header("content-length", "2");
        response.headers.push(("content-length".into(), "3".into()));
        let message = response_from_wit(response).unwrap_err();
        assert!(message.contains("`content-length`"), "{message}");
    }
}
