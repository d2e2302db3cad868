//! Conversions between the SDK's types and the generated contract types, and the two functions
//! the export macros call around a plugin's own `preprocess` and `postprocess`.

use crate::bindings::shared::infergate::plugin::types as wit;
use crate::error::PluginError;
use crate::outputs::Outputs;
use crate::prepared::Prepared;
use crate::request::Request;
use crate::response::Response;
use crate::tensor::{DType, Tensor, TensorError, Values, element_count};

/// Runs a plugin's `preprocess` on a request from the gateway.
pub fn preprocess<E: Into<PluginError>>(
    req: wit::Request,
    preprocess: impl FnOnce(Request) -> Result<Prepared, E>,
) -> Result<wit::Prepared, wit::PluginError> {
    forward_panics_to_log();
    match preprocess(request_from_wire(req)) {
        Ok(prepared) => Ok(wit::Prepared {
            inputs: prepared
                .inputs
                .into_iter()
                .map(|(n, t)| (n, tensor_to_wire(t)))
                .collect(),
            context: prepared.context,
        }),
        Err(err) => Err(error_to_wire(err.into())),
    }
}

/// Runs a plugin's `postprocess` on the model's outputs from the gateway.
pub fn postprocess<E: Into<PluginError>>(
    outputs: Vec<(String, wit::Tensor)>,
    context: Vec<u8>,
    postprocess: impl FnOnce(Outputs, Vec<u8>) -> Result<Response, E>,
) -> Result<wit::Response, wit::PluginError> {
    forward_panics_to_log();
    let outputs = outputs_from_wire(outputs).map_err(error_to_wire)?;
    match postprocess(outputs, context) {
        Ok(resp) => Ok(wit::Response {
            status: resp.status,
            headers: resp.headers,
            body: resp.body,
        }),
        Err(err) => Err(error_to_wire(err.into())),
    }
}

/// A panic traps the plugin and the gateway answers 500; this puts the panic message in the
/// gateway's log first, as one error line (`plugin panicked at src/lib.rs:7: <message>`), where
/// the gateway and the plugin's author can find it (a sandbox's stderr may go nowhere).
fn forward_panics_to_log() {
    #[cfg(target_arch = "wasm32")]
    {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                let message = info
                    .payload_as_str()
                    .unwrap_or("(a panic without a message)");
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()));
                let at = at.unwrap_or_default();
                crate::log::error(&format!("plugin panicked{at}: {message}"));
            }));
        });
    }
}

fn request_from_wire(req: wit::Request) -> Request {
    Request {
        model: req.model,
        version: req.version,
        label: req.label,
        method: req.method,
        path: req.path,
        query: req.query,
        headers: req.headers,
        body: req.body,
    }
}

fn outputs_from_wire(outputs: Vec<(String, wit::Tensor)>) -> Result<Outputs, PluginError> {
    outputs
        .into_iter()
        .map(|(name, t)| match tensor_from_wire(t) {
            Ok(t) => Ok((name, t)),
            Err(e) => Err(PluginError::internal(format!(
                "the gateway sent a malformed output '{name}': {e}"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Outputs::new)
}

fn error_to_wire(err: PluginError) -> wit::PluginError {
    match err {
        PluginError::BadRequest(m) => wit::PluginError::BadRequest(m),
        PluginError::Unprocessable(m) => wit::PluginError::Unprocessable(m),
        PluginError::Internal(m) => wit::PluginError::Internal(m),
    }
}

pub(crate) fn dtype_to_wire(dtype: DType) -> wit::Dtype {
    match dtype {
        DType::F16 => wit::Dtype::F16,
        DType::BF16 => wit::Dtype::Bf16,
        DType::F32 => wit::Dtype::F32,
        DType::F64 => wit::Dtype::F64,
        DType::I8 => wit::Dtype::I8,
        DType::I16 => wit::Dtype::I16,
        DType::I32 => wit::Dtype::I32,
        DType::I64 => wit::Dtype::I64,
        DType::U8 => wit::Dtype::U8,
        DType::U16 => wit::Dtype::U16,
        DType::U32 => wit::Dtype::U32,
        DType::U64 => wit::Dtype::U64,
        DType::Bool => wit::Dtype::Boolean,
        DType::Str => wit::Dtype::Str,
    }
}

fn dtype_from_wire(dtype: wit::Dtype) -> DType {
    match dtype {
        wit::Dtype::F16 => DType::F16,
        wit::Dtype::Bf16 => DType::BF16,
        wit::Dtype::F32 => DType::F32,
        wit::Dtype::F64 => DType::F64,
        wit::Dtype::I8 => DType::I8,
        wit::Dtype::I16 => DType::I16,
        wit::Dtype::I32 => DType::I32,
        wit::Dtype::I64 => DType::I64,
        wit::Dtype::U8 => DType::U8,
        wit::Dtype::U16 => DType::U16,
        wit::Dtype::U32 => DType::U32,
        wit::Dtype::U64 => DType::U64,
        wit::Dtype::Boolean => DType::Bool,
        wit::Dtype::Str => DType::Str,
    }
}

/// A fixed-size element stored little-endian on the wire.
trait Le: Copy {
    const SIZE: usize;
    fn put(self, out: &mut Vec<u8>);
    fn get(bytes: &[u8]) -> Self;
}

macro_rules! le {
    ($($t:ty),*) => {$(
        impl Le for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                let mut raw = [0u8; std::mem::size_of::<$t>()];
                raw.copy_from_slice(bytes);
                <$t>::from_le_bytes(raw)
            }
        }
    )*};
}
le!(u16, u32, u64, i8, i16, i32, i64, f32, f64);

fn encode<T: Le>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * T::SIZE);
    for &v in values {
        v.put(&mut out);
    }
    out
}

fn decode<T: Le>(bytes: &[u8]) -> Vec<T> {
    bytes.chunks_exact(T::SIZE).map(T::get).collect()
}

pub(crate) fn tensor_to_wire(tensor: Tensor) -> wit::Tensor {
    let dtype = dtype_to_wire(tensor.dtype());
    let (shape, values) = tensor.into_parts();
    let (data, strings) = match values {
        Values::U8(v) => (v, Vec::new()),
        Values::Str(v) => (Vec::new(), v),
        Values::Bool(v) => (v.into_iter().map(u8::from).collect(), Vec::new()),
        Values::F16(v) | Values::BF16(v) | Values::U16(v) => (encode(&v), Vec::new()),
        Values::F32(v) => (encode(&v), Vec::new()),
        Values::F64(v) => (encode(&v), Vec::new()),
        Values::I8(v) => (encode(&v), Vec::new()),
        Values::I16(v) => (encode(&v), Vec::new()),
        Values::I32(v) => (encode(&v), Vec::new()),
        Values::I64(v) => (encode(&v), Vec::new()),
        Values::U32(v) => (encode(&v), Vec::new()),
        Values::U64(v) => (encode(&v), Vec::new()),
    };
    wit::Tensor {
        dtype,
        shape,
        data,
        strings,
    }
}

pub(crate) fn tensor_from_wire(tensor: wit::Tensor) -> Result<Tensor, TensorError> {
    let dtype = dtype_from_wire(tensor.dtype);
    let count = element_count(&tensor.shape)?;
    if let Some(size) = dtype.size() {
        if tensor.data.len() != count.saturating_mul(size) || !tensor.strings.is_empty() {
            return Err(TensorError::Malformed(format!(
                "shape {:?} needs {} bytes of {dtype} data but {} bytes and {} strings were sent",
                tensor.shape,
                count.saturating_mul(size),
                tensor.data.len(),
                tensor.strings.len(),
            )));
        }
    } else if !tensor.data.is_empty() {
        return Err(TensorError::Malformed(format!(
            "a str tensor carries its elements in `strings`, but {} bytes of `data` were sent",
            tensor.data.len()
        )));
    }
    let data = tensor.data;
    let values = match dtype {
        DType::U8 => Values::U8(data),
        DType::Str => Values::Str(tensor.strings),
        DType::Bool => Values::Bool(data.into_iter().map(|b| b != 0).collect()),
        DType::F16 => Values::F16(decode(&data)),
        DType::BF16 => Values::BF16(decode(&data)),
        DType::U16 => Values::U16(decode(&data)),
        DType::F32 => Values::F32(decode(&data)),
        DType::F64 => Values::F64(decode(&data)),
        DType::I8 => Values::I8(decode(&data)),
        DType::I16 => Values::I16(decode(&data)),
        DType::I32 => Values::I32(decode(&data)),
        DType::I64 => Values::I64(decode(&data)),
        DType::U32 => Values::U32(decode(&data)),
        DType::U64 => Values::U64(decode(&data)),
    };
    Tensor::new(tensor.shape, values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_tensors_go_on_the_wire_little_endian() {
        let wire = tensor_to_wire(Tensor::f32([1, 2], vec![1.0, -2.5]).unwrap());
        assert!(matches!(wire.dtype, wit::Dtype::F32));
        assert_eq!(wire.shape, [1, 2]);
        assert_eq!(
            wire.data,
            [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat()
        );
        assert!(wire.strings.is_empty());
        let wire = tensor_to_wire(Tensor::bool([2], vec![true, false]).unwrap());
        assert_eq!(wire.data, [1, 0]);
    }

    #[test]
    fn every_dtype_round_trips_through_the_wire() {
        let tensors = [
            Tensor::f16_bits([2], vec![0x3c00, 0xc000]).unwrap(),
            Tensor::bf16_bits([1], vec![0x3f80]).unwrap(),
            Tensor::f32([1], vec![f32::MIN_POSITIVE]).unwrap(),
            Tensor::f64([1], vec![std::f64::consts::PI]).unwrap(),
            Tensor::i8([2], vec![-128, 127]).unwrap(),
            Tensor::i16([1], vec![-300]).unwrap(),
            Tensor::i32([1], vec![i32::MIN]).unwrap(),
            Tensor::i64([1, 1], vec![i64::MAX]).unwrap(),
            Tensor::u8([3], vec![0, 1, 255]).unwrap(),
            Tensor::u16([1], vec![65535]).unwrap(),
            Tensor::u32([1], vec![u32::MAX]).unwrap(),
            Tensor::u64([1], vec![u64::MAX]).unwrap(),
            Tensor::bool([1], vec![true]).unwrap(),
            Tensor::strings([2], ["a", "é"]).unwrap(),
        ];
        for t in tensors {
            assert_eq!(tensor_from_wire(tensor_to_wire(t.clone())).unwrap(), t);
        }
    }

    #[test]
    fn malformed_wire_tensors_are_errors() {
        let short = wit::Tensor {
            dtype: wit::Dtype::F32,
            shape: vec![2],
            data: vec![0; 7],
            strings: vec![],
        };
        let err = tensor_from_wire(short).unwrap_err();
        assert_eq!(
            err.to_string(),
            "shape [2] needs 8 bytes of f32 data but 7 bytes and 0 strings were sent"
        );
        let strs = wit::Tensor {
            dtype: wit::Dtype::Str,
            shape: vec![2],
            data: vec![],
            strings: vec![vec![]],
        };
        assert!(matches!(
            tensor_from_wire(strs),
            Err(TensorError::ElementCount { .. })
        ));
        let neg = wit::Tensor {
            dtype: wit::Dtype::U8,
            shape: vec![-1],
            data: vec![],
            strings: vec![],
        };
        assert!(matches!(
            tensor_from_wire(neg),
            Err(TensorError::NegativeDim { .. })
        ));
    }

    #[test]
    fn glue_maps_errors_to_their_kind() {
        let req = wit::Request {
            model: "m".into(),
            version: Some(2),
            label: None,
            method: "POST".into(),
            path: "/v1/models/m/versions/2:predict".into(),
            query: "k=1".into(),
            headers: vec![],
            body: b"x".to_vec(),
        };
        let out = preprocess(req, |r: Request| {
            Err::<Prepared, _>(PluginError::unprocessable(format!("{:?}", r.version)))
        });
        assert!(matches!(out, Err(wit::PluginError::Unprocessable(m)) if m == "Some(2)"));

        let bad = wit::Tensor {
            dtype: wit::Dtype::I64,
            shape: vec![1],
            data: vec![0; 4],
            strings: vec![],
        };
        let out = postprocess(vec![("y".into(), bad)], vec![], |_, _| {
            Ok::<_, PluginError>(Response::text(""))
        });
        let Err(wit::PluginError::Internal(msg)) = out else {
            panic!("a malformed output should be an internal error");
        };
        assert!(
            msg.starts_with("the gateway sent a malformed output 'y'"),
            "{msg}"
        );
    }
}
