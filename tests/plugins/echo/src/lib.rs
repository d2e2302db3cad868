//! Fixture `echo` (world `plugin`): the request body says which tensors to send, and the
//! response shows exactly which tensors came back.
//!
//! preprocess takes
//! `{"inputs": {"<name>": {"dtype": "f32", "shape": [1, 2], "values": [1.5, 2]}}, "context": "…"}`
//! (dtypes `f32 f64 i8 i16 i32 i64 u8 u16 u32 u64 bool str`; `values` may be nested, it is
//! flattened; `context` is optional) and sends those inputs, with the context string as the
//! context bytes. Anything else is a 400 whose message starts with `echo:` and names the problem.
//!
//! postprocess answers 200 `application/json` with header `x-echo: 1` and body
//! `{"outputs": {"<name>": {"dtype": "…", "shape": […], "values": [flat]}}, "context": "…"}`
//! for every output, in every dtype: floats as JSON numbers (f32 widened to f64, so they print
//! exactly; f16/bf16 decoded; NaN and infinities as null), strings as UTF-8 (lossy), and the
//! context as UTF-8 (lossy).

use infergate_sdk::serde_json::{Map, Value, json};
use infergate_sdk::{DType, Outputs, PluginError, Prepared, Request, Response, Tensor, Values};

const NEEDS_INPUTS: &str =
    r#"the body needs an "inputs" object mapping names to {"dtype", "shape", "values"}"#;

fn preprocess(req: Request) -> Result<Prepared, PluginError> {
    let body: Value = req.json().map_err(|e| bad(e.message()))?;
    let inputs = body
        .get("inputs")
        .and_then(Value::as_object)
        .ok_or_else(|| bad(NEEDS_INPUTS))?;
    let mut prepared = Prepared::new();
    for (name, spec) in inputs {
        let tensor = tensor_from_json(spec).map_err(|e| bad(format!("input '{name}': {e}")))?;
        prepared = prepared.input(name.as_str(), tensor);
    }
    match body.get("context") {
        None | Some(Value::Null) => Ok(prepared),
        Some(Value::String(context)) => Ok(prepared.context(context.as_str())),
        Some(_) => Err(bad("\"context\" must be a string")),
    }
}

fn postprocess(outputs: Outputs, context: Vec<u8>) -> Result<Response, PluginError> {
    let mut echoed = Map::new();
    for (name, tensor) in outputs.iter() {
        let entry = json!({
            "dtype": tensor.dtype().name(),
            "shape": tensor.shape(),
            "values": values_to_json(tensor.values()),
        });
        echoed.insert(name.to_string(), entry);
    }
    let body = json!({ "outputs": echoed, "context": String::from_utf8_lossy(&context) });
    Ok(Response::json(&body)?.header("x-echo", "1"))
}

infergate_sdk::plugin!(preprocess, postprocess);

fn bad(msg: impl std::fmt::Display) -> PluginError {
    PluginError::bad_request(format!("echo: {msg}"))
}

/// `{"dtype", "shape", "values"}` to a tensor; the error says which field is wrong.
fn tensor_from_json(spec: &Value) -> Result<Tensor, String> {
    let dtype_name = spec
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or("\"dtype\" must be a string")?;
    let dtype = DType::from_name(dtype_name)
        .filter(|d| !matches!(d, DType::F16 | DType::BF16))
        .ok_or_else(|| format!("unsupported dtype '{dtype_name}'"))?;
    let shape = spec
        .get("shape")
        .and_then(Value::as_array)
        .and_then(|dims| dims.iter().map(Value::as_i64).collect::<Option<Vec<i64>>>())
        .ok_or("\"shape\" must be a list of integers")?;
    let mut flat = Vec::new();
    flatten(
        spec.get("values").ok_or("\"values\" is missing")?,
        &mut flat,
    );
    let values = values_from_json(dtype, &flat)?;
    Tensor::new(shape, values).map_err(|e| e.to_string())
}

fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        scalar => out.push(scalar),
    }
}

/// Converts every value to `T`, naming the first one that does not fit.
fn each<T>(
    flat: &[&Value],
    what: &str,
    convert: impl Fn(&Value) -> Option<T>,
) -> Result<Vec<T>, String> {
    flat.iter()
        .map(|v| convert(v).ok_or_else(|| format!("value {v} is not {what}")))
        .collect()
}

fn int<T: TryFrom<i64> + TryFrom<u64>>(v: &Value) -> Option<T> {
    match (v.as_i64(), v.as_u64()) {
        (Some(i), _) => T::try_from(i).ok(),
        (None, Some(u)) => T::try_from(u).ok(),
        _ => None,
    }
}

fn values_from_json(dtype: DType, flat: &[&Value]) -> Result<Values, String> {
    let range = |t: &str| format!("an integer in the {t} range");
    Ok(match dtype {
        DType::F32 => Values::F32(each(flat, "a number", |v| v.as_f64().map(|f| f as f32))?),
        DType::F64 => Values::F64(each(flat, "a number", Value::as_f64)?),
        DType::I8 => Values::I8(each(flat, &range("i8"), int)?),
        DType::I16 => Values::I16(each(flat, &range("i16"), int)?),
        DType::I32 => Values::I32(each(flat, &range("i32"), int)?),
        DType::I64 => Values::I64(each(flat, &range("i64"), int)?),
        DType::U8 => Values::U8(each(flat, &range("u8"), int)?),
        DType::U16 => Values::U16(each(flat, &range("u16"), int)?),
        DType::U32 => Values::U32(each(flat, &range("u32"), int)?),
        DType::U64 => Values::U64(each(flat, &range("u64"), int)?),
        DType::Bool => Values::Bool(each(flat, "true or false", Value::as_bool)?),
        DType::Str => Values::Str(each(flat, "a string", |v| {
            v.as_str().map(|s| s.as_bytes().to_vec())
        })?),
        DType::F16 | DType::BF16 => return Err(format!("unsupported dtype '{dtype}'")),
    })
}

fn values_to_json(values: &Values) -> Vec<Value> {
    fn all<T: Copy>(v: &[T], f: impl Fn(T) -> Value) -> Vec<Value> {
        v.iter().map(|&x| f(x)).collect()
    }
    match values {
        Values::F16(v) => all(v, |h| json!(f64::from(f16_to_f32(h)))),
        Values::BF16(v) => all(v, |h| json!(f64::from(f32::from_bits(u32::from(h) << 16)))),
        Values::F32(v) => all(v, |x| json!(f64::from(x))),
        Values::F64(v) => all(v, |x| json!(x)),
        Values::I8(v) => all(v, |x| json!(x)),
        Values::I16(v) => all(v, |x| json!(x)),
        Values::I32(v) => all(v, |x| json!(x)),
        Values::I64(v) => all(v, |x| json!(x)),
        Values::U8(v) => all(v, |x| json!(x)),
        Values::U16(v) => all(v, |x| json!(x)),
        Values::U32(v) => all(v, |x| json!(x)),
        Values::U64(v) => all(v, |x| json!(x)),
        Values::Bool(v) => all(v, |x| json!(x)),
        Values::Str(v) => v
            .iter()
            .map(|s| json!(String::from_utf8_lossy(s)))
            .collect(),
    }
}

/// IEEE 754 half precision to single (exact: every f16 is an f32).
fn f16_to_f32(h: u16) -> f32 {
    let negative = h & 0x8000 != 0;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let magnitude = match exp {
        0 => frac as f32 * f32::from_bits(0x3380_0000), // subnormal: frac * 2^-24
        0x1f => f32::from_bits(0x7f80_0000 | frac << 13), // infinity or NaN
        _ => f32::from_bits((exp + 127 - 15) << 23 | frac << 13),
    };
    if negative { -magnitude } else { magnitude }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_floats_decode() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
    }
}
