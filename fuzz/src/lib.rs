//! The bodies of the fuzz targets, one function per target (`fuzz_targets/<name>.rs` calls
//! it). Each feeds arbitrary bytes to one parser a client, a backend, a plugin or an operator
//! controls, and checks what must hold whatever the input: no panic, no abort, no unbounded
//! allocation, and the properties named below. The normal test suite replays every committed
//! seed through these same functions (`tests/fuzz_corpus.rs`), so a crash found here and
//! fixed stays fixed.

use std::collections::BTreeMap;
use std::path::Path;

use infergate::backend::tfserving::convert;
use infergate::config::{GatewayConfig, ModelConfig};
use infergate::rest::{self, InputSpec};
use infergate::tensor::DType;

/// The REST JSON reader and tensor decoding. The reader must agree with serde_json on every
/// document both accept (the same value), and may accept more only through its documented
/// extensions (`NaN`, `Infinity`, a byte-order mark) and its nesting limit (128 levels;
/// serde_json's is 127). A body that reads is then typed twice:
/// as one input `x`, and as inputs `a` and `b`, with dtypes and ranks taken from the body's
/// length, as a signature would type it. The one-pass reader for plain numeric bodies must
/// give what the full reader alone gives: the same tensors or the same error.
pub fn rest_json(data: &[u8]) {
    json_differential(data);
    let pick = data.len();
    let specs = [
        vec![("x", DType::ALL[pick % DType::ALL.len()], None)],
        vec![
            (
                "a",
                DType::ALL[(pick / 3) % DType::ALL.len()],
                Some(vec![-1, 2]),
            ),
            (
                "b",
                DType::ALL[(pick / 7) % DType::ALL.len()],
                Some(vec![-1]),
            ),
        ],
    ];
    for spec in specs {
        let specs: BTreeMap<String, InputSpec> = spec
            .into_iter()
            .map(|(name, dtype, shape)| (name.to_string(), InputSpec { dtype, shape }))
            .collect();
        let decode = |body: Result<rest::PredictBody, rest::RestError>| {
            let body = body?;
            let head = (body.signature_name.clone(), body.format);
            body.into_tensors(&specs).map(|t| (head, t))
        };
        assert_eq!(
            decode(rest::parse_predict_body(data)).map_err(|e| e.to_string()),
            decode(rest::parse_predict_body_full(data)).map_err(|e| e.to_string()),
            "the one-pass reader and the full reader disagree"
        );
        let Ok(body) = rest::parse_predict_body(data) else {
            return;
        };
        if let Ok(tensors) = body.into_tensors(&specs) {
            for (name, t) in &tensors {
                assert!(
                    specs.contains_key(name),
                    "decoded an input `{name}` no spec names"
                );
                assert_eq!(t.dtype(), specs[name].dtype);
            }
            // What was decoded renders back (the no-post-plugin answer path).
            let _ = rest::render_outputs(rest::Format::Columnar, &tensors);
            let _ = rest::render_outputs(rest::Format::Row, &tensors);
        }
    }
}

/// Compares the gateway's JSON reader with serde_json on `data` (see [`rest_json`]).
pub fn json_differential(data: &[u8]) {
    let ours = rest::json_to_value(data);
    let theirs = serde_json::from_slice::<serde_json::Value>(data);
    match (ours, theirs) {
        (Ok(ours), Ok(theirs)) => assert_eq!(ours, theirs, "the readers disagree on {data:?}"),
        (Err(e), Ok(_)) => {
            panic!("serde_json reads {data:?}, the gateway's reader refuses it: {e}")
        }
        (Ok(_), Err(e)) => assert!(
            uses_extension(data) || e.to_string().starts_with("recursion limit exceeded"),
            "the gateway's reader takes {data:?}, which is not JSON and uses no documented extension"
        ),
        (Err(_), Err(_)) => {}
    }
}

/// Whether `data` uses what the gateway's reader takes beyond JSON: TF Serving's non-finite
/// numbers (and rapidjson's spellings), or a UTF-8 byte-order mark.
fn uses_extension(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    data.starts_with(b"\xEF\xBB\xBF") || text.contains("NaN") || text.contains("Inf")
}

/// TensorProto and PredictResponse decoding (what a backend sends). A tensor that decodes
/// re-encodes to one that decodes equal; nothing may allocate past the byte limit (1 MiB here,
/// so fill-rule tensors stay cheap to run).
pub fn tensor_proto(data: &[u8]) {
    use infergate::proto::tensorflow::TensorProto;
    use infergate::proto::tensorflow::serving::PredictResponse;
    use prost::Message;
    const LIMIT: usize = 1 << 20;
    if let Ok(proto) = TensorProto::decode(data)
        && let Ok(tensor) = convert::from_proto_within(proto, LIMIT)
    {
        let again = convert::from_proto_within(convert::to_proto(&tensor), LIMIT)
            .expect("a decoded tensor re-encodes");
        assert_eq!(again, tensor, "round trip changed the tensor");
    }
    if let Ok(reply) = PredictResponse::decode(data) {
        for (_, proto) in reply.outputs {
            let _ = convert::from_proto_within(proto, LIMIT);
        }
    }
}

/// model.toml and gateway.toml parsing and validation, from text. The first byte chooses
/// which; model files are resolved against an empty folder (nothing they name exists).
pub fn config_toml(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if which % 2 == 0 {
        if let Ok(config) = toml::from_str::<GatewayConfig>(text) {
            let _ = config.validate(Path::new("gateway.toml"));
        }
    } else {
        let _ = ModelConfig::parse(&empty_folder(), text);
    }
}

/// A folder with nothing in it. One fixed path for every process: nothing is ever written
/// into it, and a per-process name would leave a folder behind for each of the many
/// processes a long run (and every test run) starts.
fn empty_folder() -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("infergate-fuzz-empty/m");
        std::fs::create_dir_all(&dir).expect("temp folder");
        dir
    })
    .clone()
}

/// The HTTP API's URL grammar: any method (first byte) and path (the rest, as hyper would
/// hand it over: valid UTF-8). A predict, status or metadata endpoint names a non-empty model.
pub fn url_path(data: &[u8]) {
    use infergate::ingress::path::{self, Endpoint};
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let methods = [
        http::Method::GET,
        http::Method::POST,
        http::Method::HEAD,
        http::Method::PUT,
        http::Method::DELETE,
    ];
    let method = &methods[m as usize % methods.len()];
    if let Ok(
        Endpoint::Predict { model, .. }
        | Endpoint::Status { model, .. }
        | Endpoint::Metadata { model, .. },
    ) = path::parse(method, text)
    {
        assert!(!model.is_empty(), "{text:?} parsed to an empty model name");
    }
}

/// The checks a plugin's output passes before the gateway trusts it (`prepared` from
/// preprocess, `response` from postprocess), on outputs built from the bytes: whatever a
/// plugin returns is an error or a well-formed value, never a panic.
pub fn plugin_output(data: &[u8]) {
    let mut r = Reader(data);
    let count = r.byte() % 4;
    let mut inputs = Vec::new();
    for _ in 0..count {
        let name = r.string();
        let dtype = DType::ALL[r.byte() as usize % DType::ALL.len()];
        let rank = r.byte() % 5;
        let shape = (0..rank).map(|_| r.dim()).collect();
        let data = r.bytes().to_vec();
        let strings = (0..r.byte() % 4).map(|_| r.bytes().to_vec()).collect();
        inputs.push((name, dtype, shape, data, strings));
    }
    let context = r.bytes().to_vec();
    if let Ok(prepared) = infergate::plugin::check_prepared(inputs, context) {
        let rows = prepared.inputs[0].1.rows();
        for (_, t) in &prepared.inputs {
            assert_eq!(t.rows(), rows, "inputs disagree on dim 0");
            assert!(
                t.byte_size() <= data.len(),
                "a tensor holds more bytes than were sent"
            );
        }
    }
    let status = u16::from_le_bytes([r.byte(), r.byte()]);
    let headers = (0..r.byte() % 4)
        .map(|_| (r.string(), r.string()))
        .collect();
    let body = r.bytes().to_vec();
    let _ = infergate::plugin::check_response(status, headers, body);
}

/// Takes values off the front of the fuzzer's bytes; past the end, zeros and empties.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    /// A length byte, then that many bytes (fewer if the input ends).
    fn bytes(&mut self) -> &'a [u8] {
        let n = (self.byte() as usize).min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn string(&mut self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }

    /// A dim: mostly small, sometimes huge or negative (one byte picks which).
    fn dim(&mut self) -> i64 {
        match self.byte() {
            b @ 0..=200 => (b % 8) as i64,
            201..=250 => -1,
            b => 1i64 << (b - 251 + 59),
        }
    }
}
