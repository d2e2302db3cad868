//! The embedded `onnx` backend end to end: the example digits model (plugins/digits/model.onnx)
//! run in process behind the same pipeline as TF Serving — plugins, REST JSON, batching,
//! metadata and status — plus its input checks and how its model file reloads.

mod support;

use std::path::Path;

use prost::Message;
use serde_json::{Value, json};
use support::*;

/// A digits route on the onnx backend `local`, with the plugin (or REST JSON without it).
fn digits_toml(plugin: bool) -> String {
    let mut toml = "backend = \"local\"\nmodel_file = \"model.onnx\"\n".to_string();
    if plugin {
        toml += "plugin = \"plugin.wasm\"\n";
    }
    toml
}

fn digits_plugin_bytes() -> Vec<u8> {
    std::fs::read(digits_plugin()).expect("plugins/digits/plugin.wasm")
}

fn digits_model_bytes() -> Vec<u8> {
    std::fs::read(digits_onnx()).expect("plugins/digits/model.onnx")
}

/// `model.onnx` with its `model_version` set to `version`: the same weights, told apart by the
/// version that status reports.
fn with_version(version: i64) -> Vec<u8> {
    let mut proto = tract_onnx::pb::ModelProto::decode(digits_model_bytes().as_slice()).unwrap();
    proto.model_version = version;
    proto.encode_to_vec()
}

/// Writes `bytes` to `path` the safe way: a temp file in the same folder, then a rename.
fn put(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn digits_gateway(plugin: bool, watch: &str) -> TestGateway {
    gateway()
        .onnx_backend("local")
        .plugins_config(watch)
        .model("digits", &digits_toml(plugin))
        .file("digits", "model.onnx", digits_model_bytes())
        .file("digits", "plugin.wasm", digits_plugin_bytes())
        .start()
        .await
        .unwrap()
}

async fn top_label(gw: &TestGateway, image: &str) -> String {
    let reply = gw
        .post("/v1/models/digits:predict?k=1", example_image(image))
        .await;
    assert_eq!(reply.status, 200, "{image}: {}", reply.text());
    reply.json()["predictions"][0]["label"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A bundled image through the digits plugin and the in-process model gets its label.
#[tokio::test]
async fn plugin_route_classifies_bundled_images() {
    let gw = digits_gateway(true, "").await;
    for image in [
        "digit-7-0.png",
        "digit-3-0.png",
        "digit-0-1.png",
        "digit-7.jpg",
    ] {
        let want = &image[6..7];
        assert_eq!(top_label(&gw, image).await, want, "{image}");
    }
}

/// One uniform 28x28x1 image with every pixel at `level` (0..1), as a REST JSON row.
fn uniform(level: f32) -> Value {
    json!(vec![vec![vec![level]; 28]; 28])
}

/// Without plugins the route speaks TF Serving's REST JSON; three rows run as one call
/// through the model's symbolic batch dim and come back as three predictions.
#[tokio::test]
async fn rest_rows_run_as_one_batch() {
    let gw = digits_gateway(false, "").await;
    let body = json!({ "instances": [uniform(0.5), uniform(0.0), uniform(0.5)] });
    let reply = gw.post("/v1/models/digits:predict", body.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let predictions = reply.json()["predictions"].as_array().unwrap().clone();
    assert_eq!(predictions.len(), 3);
    for row in &predictions {
        let probabilities = row["probabilities"].as_array().unwrap();
        assert_eq!(probabilities.len(), 10);
        let sum: f64 = probabilities.iter().map(|p| p.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-4, "softmax sums to {sum}");
        assert!(row["label"].as_i64().is_some());
    }
    assert_eq!(predictions[0], predictions[2], "same input, same answer");
}

/// Concurrent requests share batches (a wide window) and each gets its own row back.
#[tokio::test]
async fn concurrent_requests_batch_and_split() {
    let toml = digits_toml(true) + "[batching]\nmax_batch_size = 8\nbatch_timeout_us = 200000\n";
    let gw = gateway()
        .onnx_backend("local")
        .model("digits", &toml)
        .file("digits", "model.onnx", digits_model_bytes())
        .file("digits", "plugin.wasm", digits_plugin_bytes())
        .start()
        .await
        .unwrap();
    let images = [
        "digit-1-0.png",
        "digit-2-0.png",
        "digit-4-0.png",
        "digit-5-0.png",
    ];
    let answers = futures::future::join_all(images.iter().map(|i| top_label(&gw, i))).await;
    for (image, label) in images.iter().zip(answers) {
        assert_eq!(label, &image[6..7], "{image}");
    }
}

/// Tensors that don't fit the model are 400s naming the input and what was expected.
#[tokio::test]
async fn tensors_that_do_not_fit_are_400s() {
    let toml = format!(
        "backend = \"local\"\nmodel_file = \"model.onnx\"\nplugin = \"{}\"\n",
        wasm("echo")
    );
    let gw = gateway()
        .onnx_backend("local")
        .model("e", &toml)
        .fixture_plugin("e", "echo")
        .file("e", "model.onnx", digits_model_bytes())
        .start()
        .await
        .unwrap();
    let send = |inputs: Value| {
        let body = json!({ "inputs": inputs }).to_string();
        let gw = &gw;
        async move { gw.post("/v1/models/e:predict", body).await }
    };
    let cases = [
        (
            json!({"image": {"dtype": "f32", "shape": [1, 28, 28], "values": vec![0.0; 784]}}),
            "INVALID_ARGUMENT: input `image`: expected shape [-1, 28, 28, 1], given [1, 28, 28]",
        ),
        (
            json!({"image": {"dtype": "f32", "shape": [1, 2, 2, 1], "values": [0, 0, 0, 0]}}),
            "INVALID_ARGUMENT: input `image`: expected shape [-1, 28, 28, 1], given [1, 2, 2, 1]",
        ),
        (
            json!({"image": {"dtype": "i64", "shape": [1, 28, 28, 1], "values": vec![0; 784]}}),
            "INVALID_ARGUMENT: input `image`: expected dtype f32, given i64",
        ),
        (
            json!({"pixels": {"dtype": "f32", "shape": [1], "values": [0]}}),
            "INVALID_ARGUMENT: unknown input `pixels`; the model's inputs are: `image`",
        ),
    ];
    for (inputs, want) in cases {
        let reply = send(inputs).await;
        assert_eq!(reply.status, 400, "{want}: {}", reply.text());
        assert_eq!(reply.error(), want);
    }
    // Two rows of the right shape go through, and the echo shows both outputs per row.
    let ok = send(
        json!({"image": {"dtype": "f32", "shape": [2, 28, 28, 1], "values": vec![0.0; 1568]}}),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        ok.json()["outputs"]["probabilities"]["shape"],
        json!([2, 10])
    );
    assert_eq!(ok.json()["outputs"]["label"]["shape"], json!([2]));
}

/// Metadata reports the ONNX model's signature in TF Serving's JSON shape; status reports
/// its one version (the file's model_version) as available.
#[tokio::test]
async fn metadata_and_status_in_tf_serving_shape() {
    let gw = digits_gateway(true, "").await;
    let metadata = gw.get("/v1/models/digits/metadata").await;
    assert_eq!(metadata.status, 200, "{}", metadata.text());
    let dims = |sizes: &[&str]| -> Value {
        json!({
            "dim": sizes.iter().map(|s| json!({"size": s, "name": ""})).collect::<Vec<_>>(),
            "unknown_rank": false,
        })
    };
    assert_eq!(
        metadata.json(),
        json!({
            "model_spec": {"name": "digits", "signature_name": "", "version": "2"},
            "metadata": {"signature_def": {"signature_def": {"serving_default": {
                "inputs": {"image": {
                    "dtype": "DT_FLOAT", "name": "image",
                    "tensor_shape": dims(&["-1", "28", "28", "1"]),
                }},
                "outputs": {
                    "label": {"dtype": "DT_INT64", "name": "label", "tensor_shape": dims(&["-1"])},
                    "probabilities": {
                        "dtype": "DT_FLOAT", "name": "probabilities",
                        "tensor_shape": dims(&["-1", "10"]),
                    },
                },
                "method_name": "tensorflow/serving/predict",
            }}}},
        })
    );
    let status = gw.get("/v1/models/digits").await.json();
    assert_eq!(
        status["model_version_status"],
        json!([{"version": "2", "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""}}])
    );
    assert_eq!(gw.get("/v1/models/digits/versions/2").await.status, 200);
    let other = gw.get("/v1/models/digits/versions/1").await;
    assert_eq!(other.status, 404, "{}", other.text());
    let label = gw
        .post(
            "/v1/models/digits/labels/stable:predict",
            example_image("digit-7-0.png"),
        )
        .await;
    assert_eq!(label.status, 404, "{}", label.text());
}

/// Replacing the model file reloads the model, as replacing a plugin does.
#[tokio::test]
async fn changing_the_model_file_reloads() {
    let gw = digits_gateway(true, "debounce_ms = 50").await;
    let version = || async {
        gw.get("/v1/models/digits").await.json()["model_version_status"][0]["version"].clone()
    };
    assert_eq!(version().await, json!("2"));
    put(
        &gw.plugins_dir().join("digits/model.onnx"),
        &with_version(7),
    );
    eventually(10, "version 7 served", || async {
        version().await == json!("7")
    })
    .await;
    assert_eq!(top_label(&gw, "digit-7-0.png").await, "7");
}

/// A corrupt or missing model file keeps the last good model serving and reports the file.
#[tokio::test]
async fn a_broken_model_file_keeps_the_last_good_one() {
    let gw = digits_gateway(true, "watch = \"off\"").await;
    let model = gw.plugins_dir().join("digits/model.onnx");
    put(&model, b"this is not an onnx model");
    let report = gw.admin_post("/admin/reload").await.json();
    let error = report["failed"]["digits"].as_str().unwrap().to_string();
    assert!(
        error.contains("digits/model.onnx") && error.contains("not a usable ONNX model"),
        "{error}"
    );
    assert_eq!(
        top_label(&gw, "digit-7-0.png").await,
        "7",
        "last good serves"
    );
    let status = gw.get("/v1/models/digits").await.json();
    assert!(
        status["infergate"]["last_reload_error"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("model.onnx")),
        "{status}"
    );

    std::fs::remove_file(&model).unwrap();
    let report = gw.admin_post("/admin/reload").await.json();
    let error = report["failed"]["digits"].as_str().unwrap().to_string();
    assert!(error.contains("model.onnx does not exist"), "{error}");
    assert_eq!(
        top_label(&gw, "digit-3-0.png").await,
        "3",
        "last good serves"
    );

    // A good file again (told apart by its version) is loaded, and the error clears.
    put(&model, &with_version(3));
    let report = gw.admin_post("/admin/reload").await.json();
    assert_eq!(report["reloaded"], json!(["digits"]), "{report}");
    let status = gw.get("/v1/models/digits").await.json();
    assert_eq!(status["model_version_status"][0]["version"], json!("3"));
    assert!(
        status["infergate"]["last_reload_error"].is_null(),
        "{status}"
    );
}

/// With no usable model file the gateway refuses to start, naming the file.
#[tokio::test]
async fn no_usable_model_file_refuses_to_start() {
    let missing = gateway()
        .onnx_backend("local")
        .model("digits", &digits_toml(false))
        .start()
        .await
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        missing.contains("digits/model.onnx does not exist"),
        "{missing}"
    );
    let corrupt = gateway()
        .onnx_backend("local")
        .model("digits", &digits_toml(false))
        .file("digits", "model.onnx", &digits_model_bytes()[..5000])
        .start()
        .await
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        corrupt.contains("digits/model.onnx: not a usable ONNX model"),
        "{corrupt}"
    );
    let no_file = gateway()
        .onnx_backend("local")
        .model("digits", "backend = \"local\"\n")
        .start()
        .await
        .err()
        .expect("must fail")
        .to_string();
    assert!(no_file.contains("set `model_file"), "{no_file}");
}
