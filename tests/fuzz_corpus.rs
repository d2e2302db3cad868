//! The fuzz targets' committed inputs on stable: every seed (`fuzz/seeds/<target>/`, the
//! minimized corpora) and every fixed crash (`fuzz/regressions/<target>/`) runs through the
//! same target bodies the fuzzer runs (`fuzz/src/lib.rs`, compiled into this test), so what
//! the fuzzer once found stays fixed without a nightly toolchain.

#[path = "../fuzz/src/lib.rs"]
mod bodies;

use std::path::{Path, PathBuf};

/// The committed inputs of one target, sorted, seeds then regressions.
fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut all = Vec::new();
    for kind in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries.map(|e| e.expect("a corpus entry").path()).collect();
        files.sort();
        all.extend(files);
    }
    all
}

/// Runs `body` on each input of `target`, naming the file that fails (the captured output of
/// a failing test); at least `min` inputs must be committed.
fn replay(target: &str, min: usize, body: fn(&[u8])) {
    let files = inputs(target);
    assert!(
        files.len() >= min,
        "{target}: {} committed inputs, expected at least {min}",
        files.len()
    );
    for file in files {
        eprintln!("{target}: {}", file.display());
        body(&std::fs::read(&file).expect("a committed input"));
    }
}

/// REST JSON bodies: the reader against serde_json, then typing and rendering.
#[test]
fn rest_json_inputs() {
    replay("rest_json", 20, bodies::rest_json);
}

/// TensorProto and PredictResponse bytes: decoding within a limit, and the round trip.
#[test]
fn tensor_proto_inputs() {
    replay("tensor_proto", 10, bodies::tensor_proto);
}

/// model.toml and gateway.toml text: parsing and validation.
#[test]
fn config_toml_inputs() {
    replay("config_toml", 10, bodies::config_toml);
}

/// Methods and URL paths: the HTTP API's grammar.
#[test]
fn url_path_inputs() {
    replay("url_path", 10, bodies::url_path);
}

/// A plugin's outputs: the checks before the gateway trusts them.
#[test]
fn plugin_output_inputs() {
    replay("plugin_output", 5, bodies::plugin_output);
}
