//! One sample folder on disk, read into plain data: `sample.toml` (request metadata and
//! tolerance), the request body, and the expectation files `pre.json`, `outputs.json` and
//! `response.json`. Every error names the file it is about.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::tensor::{DType, NamedTensors, Tensor, half};

/// `sample.toml` — everything about a sample that is not a file of its own. All optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SampleToml {
    /// `body = "digit.png"` — the request body file, relative to the sample folder
    /// (default: the one file named `request.*`; none means an empty body).
    body: Option<PathBuf>,
    /// `method = "POST"`
    method: Option<String>,
    /// `path = "/v1/models/digits/versions/2:predict"` (default: `/v1/models/<model>:predict`).
    path: Option<String>,
    /// `query = "k=3"` — the raw query string, without `?`.
    #[serde(default)]
    query: String,
    /// `version = 2` — the version the URL names, as the pre plugin sees it.
    version: Option<i64>,
    /// `label = "canary"` — the version label the URL names.
    label: Option<String>,
    /// `[headers]` then `content-type = "image/png"` — request headers (names lower-cased).
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// `[tolerance]` — how close floats must be.
    #[serde(default)]
    tolerance: Tolerance,
}

/// How close a float must be to pass: `|got − expected| ≤ abs + rel × |expected|` (numpy's
/// `isclose`). NaN matches NaN; an infinity matches only itself. Integers, booleans and
/// strings always compare exactly.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    /// `abs = 1e-5`
    #[serde(default = "default_tolerance")]
    pub abs: f64,
    /// `rel = 1e-5`
    #[serde(default = "default_tolerance")]
    pub rel: f64,
}

/// Loose enough for f32 arithmetic done in another order (SIMD, another library), tight
/// enough that any real change to preprocessing shows.
fn default_tolerance() -> f64 {
    1e-5
}

impl Default for Tolerance {
    fn default() -> Self {
        Self {
            abs: default_tolerance(),
            rel: default_tolerance(),
        }
    }
}

/// The request a sample sends, before the model name is filled in.
#[derive(Clone, Debug, Default)]
pub struct SampleRequest {
    pub method: String,
    pub path: Option<String>,
    pub query: String,
    pub version: Option<i64>,
    pub label: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// `pre.json`: `{"inputs": {"<name>": <tensor>, …}, "context": "…"}` — what preprocess must
/// return. Without `"context"` the context is not compared.
#[derive(Clone, Debug)]
pub struct ExpectedPre {
    pub inputs: NamedTensors,
    pub context: Option<Bytes>,
}

/// `response.json`: `{"status": 200, "headers": {…}, "json": …}` or `"text": "…"` in place of
/// `"json"` — the HTTP response the client would get.
#[derive(Clone, Debug)]
pub struct ExpectedResponse {
    /// Default 200.
    pub status: u16,
    /// Each must be present with this value (names compared case-insensitively); headers not
    /// listed are not checked.
    pub headers: Vec<(String, String)>,
    pub body: ExpectedBody,
}

#[derive(Clone, Debug)]
pub enum ExpectedBody {
    /// The body parsed as JSON must match structurally (floats within the tolerance).
    Json(Value),
    /// The body must be exactly this UTF-8 text.
    Text(String),
    /// The body is not checked.
    Any,
}

/// One sample folder, read and parsed.
#[derive(Clone, Debug)]
pub struct Sample {
    pub request: SampleRequest,
    pub tolerance: Tolerance,
    pub pre: Option<ExpectedPre>,
    /// `outputs.json`: `{"outputs": {"<name>": <tensor>, …}}` — the backend's outputs for this
    /// request, recorded once, which postprocess is run on.
    pub outputs: Option<NamedTensors>,
    pub response: Option<ExpectedResponse>,
}

/// Why a sample folder can't be read: the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct SampleFileError {
    pub path: PathBuf,
    pub message: String,
}

fn fail(path: &Path, message: impl Into<String>) -> SampleFileError {
    SampleFileError {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl Sample {
    /// Reads the sample folder `dir`.
    pub fn load(dir: &Path) -> Result<Sample, SampleFileError> {
        let toml_path = dir.join("sample.toml");
        let meta: SampleToml = if toml_path.is_file() {
            crate::config::read_toml(&toml_path).map_err(|e| fail(&toml_path, strip(&e)))?
        } else {
            SampleToml::default()
        };
        let body = match body_file(dir, meta.body.as_deref())? {
            Some(path) => std::fs::read(&path)
                .map_err(|e| fail(&path, format!("cannot read: {e}")))?
                .into(),
            None => Bytes::new(),
        };
        let request = SampleRequest {
            method: meta.method.unwrap_or_else(|| "POST".into()),
            path: meta.path,
            query: meta.query,
            version: meta.version,
            label: meta.label,
            headers: meta
                .headers
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            body,
        };
        let pre = read_json(&dir.join("pre.json"))?
            .map(|(path, v)| expected_pre(&v).map_err(|m| fail(&path, m)))
            .transpose()?;
        let outputs = read_json(&dir.join("outputs.json"))?
            .map(|(path, v)| {
                let outputs = only_keys(&v, &["outputs"])
                    .and_then(|o| o.get("outputs").ok_or_else(|| "needs \"outputs\"".into()))
                    .and_then(named_tensors);
                outputs.map_err(|m| fail(&path, m))
            })
            .transpose()?;
        let response = read_json(&dir.join("response.json"))?
            .map(|(path, v)| expected_response(&v).map_err(|m| fail(&path, m)))
            .transpose()?;
        Ok(Sample {
            request,
            tolerance: meta.tolerance,
            pre,
            outputs,
            response,
        })
    }
}

/// The config error's message without its leading path (the sample error adds it back).
fn strip(error: &crate::config::ConfigError) -> String {
    use crate::config::ConfigError::*;
    match error {
        Read { cause, .. } => format!("cannot read: {cause}"),
        Parse { message, .. } | Invalid { message, .. } => message.clone(),
    }
}

/// The body file: the one named in `sample.toml`, else the one file called `request.*`.
fn body_file(dir: &Path, named: Option<&Path>) -> Result<Option<PathBuf>, SampleFileError> {
    if let Some(name) = named {
        let path = dir.join(name);
        return match path.is_file() {
            true => Ok(Some(path)),
            false => Err(fail(
                &dir.join("sample.toml"),
                format!("body file {} does not exist", path.display()),
            )),
        };
    }
    let entries = std::fs::read_dir(dir).map_err(|e| fail(dir, format!("cannot read: {e}")))?;
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.file_stem().is_some_and(|s| s == "request"))
        .collect();
    found.sort();
    if found.len() > 1 {
        let names: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
        return Err(fail(
            dir,
            format!(
                "more than one request body ({}); keep one, or name it with `body` in sample.toml",
                names.join(", ")
            ),
        ));
    }
    Ok(found.pop())
}

fn read_json(path: &Path) -> Result<Option<(PathBuf, Value)>, SampleFileError> {
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(path).map_err(|e| fail(path, format!("cannot read: {e}")))?;
    let value = serde_json::from_slice(&bytes).map_err(|e| fail(path, e.to_string()))?;
    Ok(Some((path.to_path_buf(), value)))
}

/// The object `v`, refusing keys outside `allowed` (a typo should not silently skip a check).
fn only_keys<'a>(v: &'a Value, allowed: &[&str]) -> Result<&'a Map<String, Value>, String> {
    let object = v
        .as_object()
        .ok_or_else(|| format!("expected a JSON object with keys {allowed:?}"))?;
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(format!("unknown key {key:?}; allowed: {allowed:?}")),
        None => Ok(object),
    }
}

fn expected_pre(v: &Value) -> Result<ExpectedPre, String> {
    let object = only_keys(v, &["inputs", "context"])?;
    let inputs = named_tensors(object.get("inputs").ok_or("needs \"inputs\"")?)?;
    let context = object
        .get("context")
        .map(|c| byte_string(c).map_err(|e| format!("\"context\": {e}")))
        .transpose()?;
    Ok(ExpectedPre { inputs, context })
}

fn expected_response(v: &Value) -> Result<ExpectedResponse, String> {
    let object = only_keys(v, &["status", "headers", "json", "text"])?;
    let status = match object.get("status") {
        None => 200,
        Some(s) => s
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .ok_or("\"status\" must be an HTTP status number")?,
    };
    let mut headers = Vec::new();
    if let Some(h) = object.get("headers") {
        let h = h
            .as_object()
            .ok_or("\"headers\" must be an object of strings")?;
        for (name, value) in h {
            let value = value
                .as_str()
                .ok_or_else(|| format!("header {name:?} must be a string"))?;
            headers.push((name.to_ascii_lowercase(), value.to_string()));
        }
    }
    let body = match (object.get("json"), object.get("text")) {
        (Some(_), Some(_)) => return Err("give \"json\" or \"text\", not both".into()),
        (Some(json), None) => ExpectedBody::Json(json.clone()),
        (None, Some(Value::String(text))) => ExpectedBody::Text(text.clone()),
        (None, Some(_)) => return Err("\"text\" must be a string".into()),
        (None, None) => ExpectedBody::Any,
    };
    Ok(ExpectedResponse {
        status,
        headers,
        body,
    })
}

/// `{"<name>": <tensor>, …}` in file order (serde_json keeps it sorted; order is not compared).
fn named_tensors(v: &Value) -> Result<NamedTensors, String> {
    let object = v
        .as_object()
        .ok_or("tensors are an object: {\"<name>\": {\"dtype\", \"shape\", \"values\"}}")?;
    object
        .iter()
        .map(|(name, t)| {
            tensor_from_json(t)
                .map(|t| (name.clone(), t))
                .map_err(|e| format!("tensor {name:?}: {e}"))
        })
        .collect()
}

/// `{"dtype": "f32", "shape": [1, 2], "values": [[0.5, 1]]}`. `values` may be flat or nested
/// (it is flattened row-major); without `shape`, the nesting is the shape.
pub fn tensor_from_json(v: &Value) -> Result<Tensor, String> {
    let object = only_keys(v, &["dtype", "shape", "values"])?;
    let name = object
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or("\"dtype\" must be a string such as \"f32\"")?;
    let dtype = dtype_from_name(name).ok_or_else(|| {
        format!(
            "unknown dtype {name:?}; use f16 bf16 f32 f64 i8 i16 i32 i64 u8 u16 u32 u64 bool string"
        )
    })?;
    let values = object.get("values").ok_or("\"values\" is missing")?;
    let nesting = nesting(values)?;
    let shape = match object.get("shape") {
        None => nesting,
        Some(s) => s
            .as_array()
            .and_then(|dims| dims.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
            .ok_or("\"shape\" must be a list of integers")?,
    };
    let mut flat = Vec::new();
    flatten(values, &mut flat);
    let at = |i: usize| format!("values[{i}]");
    if dtype == DType::Str {
        let strings = flat
            .iter()
            .enumerate()
            .map(|(i, v)| byte_string(v).map_err(|e| format!("{}: {e}", at(i))))
            .collect::<Result<Vec<_>, _>>()?;
        return Tensor::from_strings(shape, strings).map_err(|e| e.to_string());
    }
    let mut data = Vec::with_capacity(flat.len() * dtype.size().unwrap_or(1));
    for (i, v) in flat.iter().enumerate() {
        push_element(dtype, v, &mut data).map_err(|e| format!("{}: {e}", at(i)))?;
    }
    Tensor::from_bytes(dtype, shape, data.into()).map_err(|e| e.to_string())
}

pub fn dtype_from_name(name: &str) -> Option<DType> {
    use DType::*;
    Some(match name {
        "f16" => F16,
        "bf16" => BF16,
        "f32" => F32,
        "f64" => F64,
        "i8" => I8,
        "i16" => I16,
        "i32" => I32,
        "i64" => I64,
        "u8" => U8,
        "u16" => U16,
        "u32" => U32,
        "u64" => U64,
        "bool" => Bool,
        "string" | "str" => Str,
        _ => return None,
    })
}

/// The shape a nested list spells; lists at one depth must agree in length.
fn nesting(v: &Value) -> Result<Vec<i64>, String> {
    let Value::Array(items) = v else {
        return Ok(Vec::new());
    };
    let mut inner: Option<Vec<i64>> = None;
    for item in items {
        let shape = nesting(item)?;
        match &inner {
            Some(first) if *first != shape => {
                return Err(format!(
                    "\"values\" is ragged: an entry of shape {shape:?} next to one of {first:?}"
                ));
            }
            _ => inner = Some(shape),
        }
    }
    let mut shape = vec![items.len() as i64];
    shape.extend(inner.unwrap_or_default());
    Ok(shape)
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        scalar => out.push(scalar),
    }
}

/// A string as UTF-8 bytes, or `{"b64": "…"}` for any bytes.
fn byte_string(v: &Value) -> Result<Bytes, String> {
    match v {
        Value::String(s) => Ok(Bytes::from(s.clone().into_bytes())),
        Value::Object(o) if o.len() == 1 && o.get("b64").is_some_and(Value::is_string) => {
            let text = o["b64"].as_str().unwrap_or_default();
            STANDARD
                .decode(text)
                .map(Bytes::from)
                .map_err(|e| format!("bad base64: {e}"))
        }
        _ => Err("expected a string or {\"b64\": \"…\"}".into()),
    }
}

/// A float: a JSON number, or `"NaN"`, `"Infinity"`, `"-Infinity"` (JSON has no such numbers).
fn float(v: &Value) -> Result<f64, String> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not a float")),
        Value::String(s) => match s.as_str() {
            "NaN" | "nan" => Ok(f64::NAN),
            "Infinity" | "inf" => Ok(f64::INFINITY),
            "-Infinity" | "-inf" => Ok(f64::NEG_INFINITY),
            _ => Err(format!("{s:?} is not a number")),
        },
        other => Err(format!("expected a number, got {other}")),
    }
}

fn integer<T: TryFrom<i128>>(v: &Value, dtype: DType) -> Result<T, String> {
    let wide = v
        .as_i64()
        .map(i128::from)
        .or_else(|| v.as_u64().map(i128::from))
        .ok_or_else(|| format!("expected an integer, got {v}"))?;
    T::try_from(wide).map_err(|_| format!("{wide} is out of range for {dtype}"))
}

/// Appends one element's little-endian bytes.
fn push_element(dtype: DType, v: &Value, data: &mut Vec<u8>) -> Result<(), String> {
    use DType::*;
    match dtype {
        F16 => data.extend(half::f16_bits(float(v)?).to_le_bytes()),
        BF16 => data.extend(half::bf16_bits(float(v)? as f32).to_le_bytes()),
        F32 => data.extend((float(v)? as f32).to_le_bytes()),
        F64 => data.extend(float(v)?.to_le_bytes()),
        I8 => data.extend(integer::<i8>(v, dtype)?.to_le_bytes()),
        I16 => data.extend(integer::<i16>(v, dtype)?.to_le_bytes()),
        I32 => data.extend(integer::<i32>(v, dtype)?.to_le_bytes()),
        I64 => data.extend(integer::<i64>(v, dtype)?.to_le_bytes()),
        U8 => data.extend(integer::<u8>(v, dtype)?.to_le_bytes()),
        U16 => data.extend(integer::<u16>(v, dtype)?.to_le_bytes()),
        U32 => data.extend(integer::<u32>(v, dtype)?.to_le_bytes()),
        U64 => data.extend(integer::<u64>(v, dtype)?.to_le_bytes()),
        Bool => data.push(u8::from(
            v.as_bool()
                .ok_or_else(|| format!("expected true or false, got {v}"))?,
        )),
        Str => unreachable!("string tensors are built from byte strings"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Nested values give the shape; a flat list takes the shape it is given.
    #[test]
    fn tensors_read_nested_or_flat() {
        let nested = tensor_from_json(&json!({"dtype": "f32", "values": [[1, 2.5]]})).unwrap();
        assert_eq!(nested.shape(), &[1, 2]);
        assert_eq!(nested.to_f32().unwrap(), vec![1.0, 2.5]);
        let flat =
            tensor_from_json(&json!({"dtype": "i64", "shape": [2, 1], "values": [3, -4]})).unwrap();
        assert_eq!(flat.to_i64().unwrap(), vec![3, -4]);
        let s = tensor_from_json(&json!({"dtype": "string", "values": ["a", {"b64": "AAE="}]}))
            .unwrap();
        assert_eq!(s.strings()[1].as_ref(), &[0u8, 1]);
    }

    /// Mistakes name what is wrong instead of guessing.
    #[test]
    fn tensor_mistakes_are_named() {
        let err = |v: Value| tensor_from_json(&v).unwrap_err();
        assert!(err(json!({"dtype": "float", "values": [1]})).contains("unknown dtype"));
        assert!(err(json!({"dtype": "u8", "values": [256]})).contains("out of range for u8"));
        assert!(err(json!({"dtype": "f32", "values": [[1], [2, 3]]})).contains("ragged"));
        assert!(
            err(json!({"dtype": "f32", "shape": [3], "values": [1, 2]}))
                .contains("holds 3 f32 elements but 2")
        );
        assert!(err(json!({"dtype": "f32", "value": [1]})).contains("unknown key \"value\""));
    }
}
