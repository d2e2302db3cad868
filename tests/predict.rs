//! The predict path end to end against the fake TF Serving: REST JSON pass-through in both
//! formats, plugins, versions and labels, and the status, metadata and route-list endpoints.

mod support;

use serde_json::json;
use support::*;

/// A model with no plugins speaks TF Serving's row format: instances in, predictions out.
#[tokio::test]
async fn rest_instances_round_trip() {
    let backend = FakeBackend::new([doubler()]).start().await.unwrap();
    let gw = gateway()
        .backend("tfs", &backend.url())
        .model("m", "backend = \"tfs\"\n")
        .start()
        .await
        .unwrap();
    let reply = gw
        .post(
            "/v1/models/m:predict",
            r#"{"instances": [[1.0, 2.0], [3.5, -1]]}"#,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({ "predictions": [[2.0, 4.0], [7.0, -2.0]] })
    );
}

/// The columnar format answers in `outputs`, as TF Serving does.
#[tokio::test]
async fn rest_inputs_round_trip() {
    let backend = FakeBackend::new([doubler()]).start().await.unwrap();
    let gw = gateway()
        .backend("tfs", &backend.url())
        .model("m", "backend = \"tfs\"\n")
        .start()
        .await
        .unwrap();
    let reply = gw
        .post("/v1/models/m:predict", r#"{"inputs": {"x": [[0.5, 1.5]]}}"#)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({ "outputs": [[1.0, 3.0]] }));
}

/// Responses carried in `tensor_content` decode the same as TF Serving's typed fields.
#[tokio::test]
async fn tensor_content_responses_decode() {
    let backend = FakeBackend::new([doubler()])
        .tensor_content()
        .start()
        .await
        .unwrap();
    let gw = gateway()
        .backend("tfs", &backend.url())
        .model("m", "backend = \"tfs\"\n")
        .start()
        .await
        .unwrap();
    let reply = gw
        .post("/v1/models/m:predict", r#"{"instances": [[1, 2]]}"#)
        .await;
    assert_eq!(reply.json(), json!({ "predictions": [[2.0, 4.0]] }));
}

/// Versions and labels in the URL reach the backend's ModelSpec; the route's `model` key maps
/// the URL name to the backend's name.
#[tokio::test]
async fn versions_and_labels_are_forwarded() {
    let fake = FakeBackend::new([doubler()]);
    let backend = fake.clone().start().await.unwrap();
    let gw = gateway()
        .backend("tfs", &backend.url())
        .model("doubler", "backend = \"tfs\"\nmodel = \"m\"\n")
        .start()
        .await
        .unwrap();
    let body = r#"{"instances": [[1, 1]]}"#;
    assert_eq!(
        gw.post("/v1/models/doubler:predict", body).await.status,
        200
    );
    assert_eq!(
        gw.post("/v1/models/doubler/versions/1:predict", body)
            .await
            .status,
        200
    );
    assert_eq!(
        gw.post("/v1/models/doubler/labels/stable:predict", body)
            .await
            .status,
        200
    );
    let versions: Vec<i64> = fake.calls().iter().map(|c| c.version).collect();
    assert_eq!(versions, vec![2, 1, 1]);
    assert!(
        fake.calls()
            .iter()
            .all(|c| c.model == "m" && c.signature == "serving_default")
    );
}

/// A plugin model: the pre plugin builds tensors from the body, the post plugin sees the
/// backend's outputs and the context, and its response (status, headers, body) is returned.
#[tokio::test]
async fn plugins_shape_request_and_response() {
    let backend = FakeBackend::new([doubler()]).start().await.unwrap();
    let toml = format!(
        "backend = \"tfs\"\nmodel = \"m\"\nplugin = \"{}\"\n",
        wasm("echo")
    );
    let gw = gateway()
        .backend("tfs", &backend.url())
        .model("echo", &toml)
        .fixture_plugin("echo", "echo")
        .start()
        .await
        .unwrap();
    let body = json!({ "inputs": { "x": { "dtype": "f32", "shape": [1, 2], "values": [1.5, 2.0] } }, "context": "ctx-1" });
    let reply = gw.post("/v1/models/echo:predict", body.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.headers["x-echo"], "1");
    assert_eq!(
        reply.json(),
        json!({ "outputs": { "y": { "dtype": "f32", "shape": [1, 2], "values": [3.0, 4.0] } }, "context": "ctx-1" })
    );
}

/// `GET /v1/models/{m}` answers TF Serving's status shape plus the route's plugin digests.
#[tokio::test]
async fn status_endpoint() {
    let backend = FakeBackend::new([doubler()]).start().await.unwrap();
    let toml = format!(
        "backend = \"tfs\"\nmodel = \"m\"\nplugin = \"{}\"\n",
        wasm("echo")
    );
    let gw = gateway()
        .backend("tfs", &backend.url())
        .model("echo", &toml)
        .fixture_plugin("echo", "echo")
        .start()
        .await
        .unwrap();
    let status = gw.get("/v1/models/echo").await.json();
    let versions: Vec<&str> = status["model_version_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1", "2"]);
    assert_eq!(status["model_version_status"][0]["state"], "AVAILABLE");
    assert!(
        status["infergate"]["pre"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    let one = gw.get("/v1/models/echo/versions/2").await.json();
    assert_eq!(one["model_version_status"].as_array().unwrap().len(), 1);
}

/// `GET /v1/models/{m}/metadata` renders the backend's signature in TF Serving's JSON.
#[tokio::test]
async fn metadata_endpoint() {
    let backend = FakeBackend::new([doubler()]).start().await.unwrap();
    let gw = gateway()
        .backend("tfs", &backend.url())
        .model("m", "backend = \"tfs\"\n")
        .start()
        .await
        .unwrap();
    let meta = gw.get("/v1/models/m/metadata").await.json();
    let sig = &meta["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(sig["inputs"]["x"]["dtype"], "DT_FLOAT");
    assert_eq!(sig["inputs"]["x"]["tensor_shape"]["dim"][0]["size"], "-1");
    assert_eq!(sig["outputs"]["y"]["dtype"], "DT_FLOAT");
    assert_eq!(meta["model_spec"]["version"], "2");
}

/// `GET /v1/models` lists every route; health endpoints answer; the request id is echoed.
#[tokio::test]
async fn route_list_health_and_request_id() {
    let backend = FakeBackend::new([doubler()]).start().await.unwrap();
    let gw = gateway()
        .backend("tfs", &backend.url())
        .model("a", "backend = \"tfs\"\nmodel = \"m\"\n")
        .model("b", "backend = \"tfs\"\nmodel = \"m\"\n")
        .start()
        .await
        .unwrap();
    let list = gw.get("/v1/models").await.json();
    let names: Vec<&str> = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(gw.get("/healthz").await.status, 200);
    assert_eq!(gw.get("/readyz").await.status, 200);
    let reply = gw
        .post_with(
            "/v1/models/a:predict",
            r#"{"instances": [[1, 2]]}"#,
            &[("x-request-id", "abc-123")],
        )
        .await;
    assert_eq!(reply.headers["x-request-id"], "abc-123");
    assert!(
        gw.get("/healthz")
            .await
            .headers
            .contains_key("x-request-id")
    );
}
