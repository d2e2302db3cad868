//! The Open Inference Protocol (KServe v2) on the gateway's public port, over REST (JSON and
//! the binary tensor extension) and gRPC (`inference.GRPCInferenceService`, tonic clients from
//! the same proto tritonclient's stubs come from): inference through the route's batch queue,
//! metadata, readiness, health, and every hostile case answered with a status and a message
//! that say what to fix, without harm to another model.

mod support;

use bytes::Bytes;
use infergate::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use infergate::proto::inference::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use infergate::proto::inference::{
    InferTensorContents, ModelInferRequest, ModelMetadataRequest, ModelReadyRequest,
    ServerLiveRequest, ServerReadyRequest,
};
use serde_json::json;
use support::*;
use tonic::Code;
use tonic::transport::Channel;

async fn doubler_gateway(extra: &str) -> (FakeBackend, FakeServer, TestGateway) {
    let fake = FakeBackend::new([doubler()]);
    let server = fake.clone().start().await.unwrap();
    let gw = gateway()
        .backend("tfs", &server.url())
        .model("m", &format!("backend = \"tfs\"\n{extra}"))
        .model("other", "backend = \"tfs\"\nmodel = \"m\"\n")
        .start()
        .await
        .unwrap();
    (fake, server, gw)
}

fn le_floats(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn x_input(shape: &[i64], datatype: &str) -> InferInputTensor {
    InferInputTensor {
        name: "x".into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        parameters: Default::default(),
        contents: None,
    }
}

fn raw_infer(model: &str, input: InferInputTensor, raw: Vec<u8>) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        inputs: vec![input],
        raw_input_contents: vec![raw],
        ..Default::default()
    }
}

async fn grpc(gw: &TestGateway) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(gw.url.clone())
        .await
        .expect("gRPC connection to the gateway")
}

/// JSON tensors in and out: nested data, the model's outputs with datatype and shape, the
/// request id echoed.
#[tokio::test]
async fn rest_json_infer_round_trip() {
    let (_fake, _server, gw) = doubler_gateway("").await;
    let request = json!({
        "id": "r1",
        "inputs": [{ "name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3.5, -1]] }]
    });
    let reply = gw.post("/v2/models/m/infer", request.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({
            "model_name": "m",
            "model_version": "",
            "id": "r1",
            "outputs": [{ "name": "y", "datatype": "FP32", "shape": [2, 2], "data": [2.0, 4.0, 7.0, -2.0] }]
        })
    );
    let reply = gw
        .post(
            "/v2/models/m/versions/1/infer",
            json!({ "inputs": [{ "name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 1] }] })
                .to_string(),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["model_version"], "1");
}

/// The binary tensor extension both ways: an input's raw bytes after the JSON header, and a
/// binary output after the response's JSON header, whose length the header names.
#[tokio::test]
async fn rest_binary_extension_round_trip() {
    let (_fake, _server, gw) = doubler_gateway("").await;
    let head = json!({
        "inputs": [{ "name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": { "binary_data_size": 8 } }],
        "outputs": [{ "name": "y", "parameters": { "binary_data": true } }]
    })
    .to_string();
    let mut body = head.clone().into_bytes();
    body.extend(le_floats(&[1.5, -3.0]));
    let length = head.len().to_string();
    let reply = gw
        .post_with(
            "/v2/models/m/infer",
            body,
            &[("inference-header-content-length", &length)],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let n: usize = reply.headers["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&reply.body[..n]).unwrap();
    assert_eq!(
        json["outputs"][0],
        json!({ "name": "y", "datatype": "FP32", "shape": [1, 2], "parameters": { "binary_data_size": 8 } })
    );
    assert_eq!(&reply.body[n..], le_floats(&[3.0, -6.0]).as_slice());
}

/// Metadata comes from the backend's signature as v2 tensor metadata; readiness from its
/// version status; the server answers live, ready and its extensions.
#[tokio::test]
async fn rest_metadata_readiness_and_health() {
    let (_fake, _server, gw) = doubler_gateway("").await;
    let meta = gw.get("/v2/models/m").await;
    assert_eq!(meta.status, 200, "{}", meta.text());
    assert_eq!(
        meta.json(),
        json!({
            "name": "m",
            "versions": ["1", "2"],
            "platform": "tfserving",
            "inputs": [{ "name": "x", "datatype": "FP32", "shape": [-1, 2] }],
            "outputs": [{ "name": "y", "datatype": "FP32", "shape": [-1, 2] }]
        })
    );
    assert_eq!(gw.get("/v2/models/m/ready").await.status, 200);
    assert_eq!(gw.get("/v2/models/m/versions/2/ready").await.status, 200);
    let missing = gw.get("/v2/models/m/versions/9/ready").await;
    assert_eq!(missing.status, 503, "{}", missing.text());
    assert_eq!(missing.json()["ready"], false);
    assert_eq!(gw.get("/v2/models/ghost/ready").await.status, 404);
    assert_eq!(gw.get("/v2/health/live").await.status, 200);
    assert_eq!(gw.get("/v2/health/ready").await.status, 200);
    let server = gw.get("/v2").await.json();
    assert_eq!(server["name"], "infergate");
    assert_eq!(server["extensions"], json!(["binary_tensor_data"]));
}

/// Hostile REST requests: each is refused with its status and a message that says what to
/// fix, and the other model keeps answering.
#[tokio::test]
async fn rest_bad_requests_say_what_to_fix() {
    let (_fake, _server, gw) = doubler_gateway("").await;
    let infer = |input: serde_json::Value| json!({ "inputs": [input] }).to_string();
    /// Path, body, headers, status, a phrase of the message.
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "/v2/models/m/infer",
            infer(json!({ "name": "x", "shape": [1, 2], "datatype": "INT64", "data": [1, 2] })),
            vec![],
            400,
            "takes f32",
        ),
        (
            "/v2/models/m/infer",
            infer(json!({ "name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3] })),
            vec![],
            400,
            "[-1, 2]",
        ),
        (
            "/v2/models/m/infer",
            infer(json!({ "name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2] })),
            vec![],
            400,
            "needs 4 elements",
        ),
        (
            "/v2/models/m/infer",
            infer(json!({ "name": "x", "shape": [1, 2], "datatype": "FLOAT", "data": [1, 2] })),
            vec![],
            400,
            "datatype `FLOAT`",
        ),
        (
            "/v2/models/m/infer",
            "{\"inputs\": [".into(),
            vec![],
            400,
            "malformed inference request",
        ),
        (
            "/v2/models/m/infer",
            infer(
                json!({ "name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": { "binary_data_size": 8 } }),
            ),
            vec![("inference-header-content-length", "100000")],
            400,
            "Inference-Header-Content-Length is 100000",
        ),
        (
            "/v2/models/m/infer",
            infer(
                json!({ "name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": { "binary_data_size": 8 } }),
            ),
            vec![],
            400,
            "binary_data_size is 8 but only 0 bytes",
        ),
        (
            "/v2/models/ghost/infer",
            infer(json!({ "name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2] })),
            vec![],
            404,
            "model `ghost`",
        ),
        (
            "/v2/models/m/versions/9/infer",
            infer(json!({ "name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2] })),
            vec![],
            404,
            "9",
        ),
    ];
    for (path, body, headers, status, text) in cases {
        let reply = gw.post_with(path, body.clone(), &headers).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text());
        assert!(reply.error().contains(text), "{body}: {}", reply.error());
    }
    let ok = gw
        .post(
            "/v2/models/other/infer",
            infer(json!({ "name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2] })),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
}

/// `server.max_body_bytes` bounds a v2 body both ways, and a 300 MiB body is refused from its
/// declared length while the client has sent almost none of it.
#[tokio::test]
async fn rest_body_limit_obeyed_and_violated() {
    let fake = FakeBackend::new([identity()]);
    let server = fake.clone().start().await.unwrap();
    let gw = gateway()
        .backend("tfs", &server.url())
        .max_body_bytes(1 << 20)
        .model("m", "backend = \"tfs\"\n")
        .start()
        .await
        .unwrap();
    let binary = |floats: usize| {
        let head = json!({ "inputs": [{ "name": "x", "shape": [1, floats], "datatype": "FP32", "parameters": { "binary_data_size": floats * 4 } }] })
            .to_string();
        let mut body = head.clone().into_bytes();
        body.resize(head.len() + floats * 4, 0);
        (head.len().to_string(), body)
    };
    let (n, body) = binary(200_000);
    let reply = gw
        .post_with(
            "/v2/models/m/infer",
            body,
            &[("inference-header-content-length", &n)],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (n, body) = binary(300_000);
    let reply = gw
        .post_with(
            "/v2/models/m/infer",
            body,
            &[("inference-header-content-length", &n)],
        )
        .await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(
        reply.error().contains("server.max_body_bytes"),
        "{}",
        reply.error()
    );

    // 300 MiB declared, 4 KiB sent, the rest never: the answer comes anyway.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::StreamBody<_>>();
    let first = futures::stream::iter([Ok::<_, std::convert::Infallible>(
        hyper::body::Frame::data(Bytes::from(vec![b' '; 4096])),
    )]);
    let body = http_body_util::StreamBody::new(futures::StreamExt::chain(
        first,
        futures::stream::pending(),
    ));
    let request = http::Request::post(format!("{}/v2/models/m/infer", gw.url))
        .header("content-length", (300u64 << 20).to_string())
        .body(body)
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 413);
}

/// ModelInfer with raw_input_contents and with typed contents; the answer's
/// raw_output_contents hold the outputs asked for.
#[tokio::test]
async fn grpc_model_infer_raw_and_typed() {
    let (_fake, _server, gw) = doubler_gateway("").await;
    let mut client = grpc(&gw).await;
    let mut request = raw_infer("m", x_input(&[1, 2], "FP32"), le_floats(&[1.0, 2.5]));
    request.id = "a".into();
    request.outputs = vec![InferRequestedOutputTensor {
        name: "y".into(),
        parameters: Default::default(),
    }];
    let response = client
        .model_infer(request)
        .await
        .expect("infer")
        .into_inner();
    assert_eq!(response.id, "a");
    assert_eq!(response.outputs[0].name, "y");
    assert_eq!(response.outputs[0].datatype, "FP32");
    assert_eq!(response.outputs[0].shape, vec![1, 2]);
    assert_eq!(response.raw_output_contents, vec![le_floats(&[2.0, 5.0])]);

    let mut input = x_input(&[1, 2], "FP32");
    input.contents = Some(InferTensorContents {
        fp32_contents: vec![4.0, -1.0],
        ..Default::default()
    });
    let typed = ModelInferRequest {
        model_name: "m".into(),
        model_version: "2".into(),
        inputs: vec![input],
        ..Default::default()
    };
    let response = client.model_infer(typed).await.expect("typed").into_inner();
    assert_eq!(response.model_version, "2");
    assert_eq!(response.raw_output_contents, vec![le_floats(&[8.0, -2.0])]);
}

/// Hostile ModelInfer requests get statuses that say what to fix; the other model answers.
#[tokio::test]
async fn grpc_bad_requests_say_what_to_fix() {
    let (_fake, _server, gw) = doubler_gateway("").await;
    let mut client = grpc(&gw).await;
    let good = || raw_infer("m", x_input(&[1, 2], "FP32"), le_floats(&[1.0, 2.0]));
    let mut cases: Vec<(ModelInferRequest, Code, &str)> = vec![
        (
            raw_infer("m", x_input(&[2, 2], "FP32"), le_floats(&[1.0, 2.0])),
            Code::InvalidArgument,
            "needs 16 bytes of data but 8 were sent",
        ),
        (
            raw_infer("m", x_input(&[1, 2], "INT32"), vec![0; 8]),
            Code::InvalidArgument,
            "takes f32",
        ),
        (
            raw_infer("m", x_input(&[1, 1], "FP32"), le_floats(&[1.0])),
            Code::InvalidArgument,
            "[-1, 2]",
        ),
        (
            raw_infer("m", x_input(&[1, 2], "FLOAT32"), vec![0; 8]),
            Code::InvalidArgument,
            "datatype `FLOAT32`",
        ),
    ];
    let mut r = good();
    r.raw_input_contents.push(vec![1]);
    cases.push((r, Code::InvalidArgument, "raw_input_contents has 2 entries"));
    let mut r = good();
    r.model_name = "ghost".into();
    cases.push((r, Code::NotFound, "model `ghost`"));
    let mut r = good();
    r.model_version = "9".into();
    cases.push((r, Code::NotFound, "9"));
    let mut r = good();
    r.model_version = "latest".into();
    cases.push((r, Code::InvalidArgument, "not a number"));
    let mut r = good();
    r.outputs = vec![InferRequestedOutputTensor {
        name: "z".into(),
        parameters: Default::default(),
    }];
    cases.push((r, Code::InvalidArgument, "outputs only: y"));
    for (request, code, text) in cases {
        let status = client.model_infer(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(
            status.message().contains(text),
            "`{}` lacks `{text}`",
            status.message()
        );
    }
    let mut r = good();
    r.model_name = "other".into();
    client
        .model_infer(r)
        .await
        .expect("the other model answers");
}

/// ModelMetadata, ModelReady, ServerLive and ServerReady over gRPC.
#[tokio::test]
async fn grpc_metadata_and_health() {
    let (_fake, _server, gw) = doubler_gateway("").await;
    let mut client = grpc(&gw).await;
    let meta = client
        .model_metadata(ModelMetadataRequest {
            name: "m".into(),
            version: String::new(),
        })
        .await
        .expect("metadata")
        .into_inner();
    assert_eq!(meta.versions, vec!["1", "2"]);
    assert_eq!(meta.inputs[0].name, "x");
    assert_eq!(meta.inputs[0].datatype, "FP32");
    assert_eq!(meta.inputs[0].shape, vec![-1, 2]);
    let ready = |version: &str| ModelReadyRequest {
        name: "m".into(),
        version: version.into(),
    };
    assert!(
        client
            .model_ready(ready(""))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        !client
            .model_ready(ready("9"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let status = client
        .model_ready(ModelReadyRequest {
            name: "ghost".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        client
            .server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        client
            .server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
}

/// v2 REST, v2 gRPC and TF Serving REST requests of the same shapes share one batch queue:
/// two of each with a batch size of 6 make one backend call of 6 rows.
#[tokio::test]
async fn all_protocols_share_a_batch() {
    let batching = "[batching]\nmax_batch_size = 6\nbatch_timeout_us = 60000000\n\
                    dispatch_when_idle = false\n";
    let (fake, _server, gw) = doubler_gateway(batching).await;
    let client = grpc(&gw).await;
    let v2_rest = (0..2).map(|i| {
        let gw = &gw;
        async move {
            let body = json!({ "inputs": [{ "name": "x", "shape": [1, 2], "datatype": "FP32", "data": [i, 1] }] });
            let reply = gw.post("/v2/models/m/infer", body.to_string()).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
    });
    let v2_grpc = (0..2).map(|i| {
        let mut client = client.clone();
        async move {
            let r = raw_infer("m", x_input(&[1, 2], "FP32"), le_floats(&[i as f32, 1.0]));
            client.model_infer(r).await.expect("grpc infer");
        }
    });
    let v1 = (0..2).map(|i| {
        let gw = &gw;
        async move {
            let reply = gw
                .post(
                    "/v1/models/m:predict",
                    format!("{{\"instances\": [[{i}, 1]]}}"),
                )
                .await;
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
    });
    tokio::join!(
        futures::future::join_all(v2_rest),
        futures::future::join_all(v2_grpc),
        futures::future::join_all(v1)
    );
    let rows: Vec<usize> = fake.calls().iter().map(|c| c.rows).collect();
    assert_eq!(rows, vec![6]);
    let scrape = gw.get("/metrics").await.text();
    for protocol in ["rest", "v2", "v2_grpc"] {
        let series = format!(
            "infergate_requests_total{{model=\"m\",version=\"latest\",status=\"200\",protocol=\"{protocol}\"}} 2"
        );
        assert!(scrape.lines().any(|l| l == series), "{series} missing");
    }
}

/// A route with plugins answers v2 by skipping them: the tensors go to the model as sent.
#[tokio::test]
async fn plugins_are_skipped_for_tensor_protocols() {
    let fake = FakeBackend::new([doubler()]);
    let server = fake.clone().start().await.unwrap();
    let gw = gateway()
        .backend("tfs", &server.url())
        .model(
            "m",
            &format!("backend = \"tfs\"\nplugin = \"{}\"\n", wasm("echo")),
        )
        .fixture_plugin("m", "echo")
        .start()
        .await
        .unwrap();
    let body =
        json!({ "inputs": [{ "name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2] }] });
    let reply = gw.post("/v2/models/m/infer", body.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["outputs"][0]["data"], json!([2.0, 4.0]));
    let mut client = grpc(&gw).await;
    let r = raw_infer("m", x_input(&[1, 2], "FP32"), le_floats(&[1.0, 2.0]));
    let response = client.model_infer(r).await.expect("infer").into_inner();
    assert_eq!(response.raw_output_contents, vec![le_floats(&[2.0, 4.0])]);
}
