//! Fixture `contract-v0-1` (world `plugin` of contract 0.1.0, from `wit/plugin.wit`, a frozen
//! copy of that version): proves the host keeps loading and answering plugins built before
//! contract 0.2.0. It imports `infergate:plugin/host@0.1.0` and nothing of 0.2.0.
//!
//! preprocess sends the body's bytes as input `x`, f32 `[1, len]` (each byte's value), logs a line through the
//! 0.1.0 `host.log`, and puts `v0.1` in the context; an empty body is a 400. postprocess answers
//! 200 `text/plain` `contract 0.1.0 <context>: <name> <dtype> <shape>` per output, one a line.

wit_bindgen::generate!({ path: "wit", world: "plugin" });

use infergate::plugin::host::{Level, log};
use infergate::plugin::types::Dtype;

struct Fixture;

impl Guest for Fixture {
    fn preprocess(req: Request) -> Result<Prepared, PluginError> {
        if req.body.is_empty() {
            return Err(PluginError::BadRequest(
                "contract-v0-1: send some bytes".into(),
            ));
        }
        log(
            Level::Info,
            &format!("contract 0.1.0 plugin: {} bytes", req.body.len()),
        );
        let x = Tensor {
            dtype: Dtype::F32,
            shape: vec![1, req.body.len() as i64],
            data: req
                .body
                .iter()
                .flat_map(|&b| f32::from(b).to_le_bytes())
                .collect(),
            strings: Vec::new(),
        };
        Ok(Prepared {
            inputs: vec![("x".into(), x)],
            context: b"v0.1".to_vec(),
        })
    }

    fn postprocess(
        outputs: Vec<(String, Tensor)>,
        context: Vec<u8>,
    ) -> Result<Response, PluginError> {
        let mut body = String::new();
        for (name, t) in outputs {
            body.push_str(&format!(
                "contract 0.1.0 {}: {name} {:?} {:?}\n",
                String::from_utf8_lossy(&context),
                t.dtype,
                t.shape
            ));
        }
        Ok(Response {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: body.into_bytes(),
        })
    }
}

export!(Fixture);
