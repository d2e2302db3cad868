//! TF Serving's gRPC API on the gateway's public port, with tonic clients built from the same
//! protos the official `tensorflow-serving-api` package uses: Predict, GetModelMetadata and
//! GetModelStatus through the route table, batching shared with REST, metrics, and every
//! hostile case (unknown model or version, wrong dtype or shape, malformed protobuf, a
//! message over the limit, a 1 ms deadline) answered with a gRPC status that says what to
//! fix, without harm to another model.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use infergate::proto::tensorflow::serving::model_service_client::ModelServiceClient;
use infergate::proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use infergate::proto::tensorflow::serving::{
    GetModelMetadataRequest, GetModelStatusRequest, ModelSpec, PredictRequest, SignatureDefMap,
    model_spec::VersionChoice,
};
use infergate::proto::tensorflow::{
    DataType, TensorProto, TensorShapeProto, tensor_shape_proto::Dim,
};
use prost::Message;
use support::*;
use tonic::Code;
use tonic::transport::Channel;

fn shape(dims: &[i64]) -> Option<TensorShapeProto> {
    Some(TensorShapeProto {
        dim: dims
            .iter()
            .map(|&size| Dim {
                size,
                name: String::new(),
            })
            .collect(),
        unknown_rank: false,
    })
}

fn floats(dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: shape(dims),
        float_val: values.to_vec(),
        ..Default::default()
    }
}

fn spec(name: &str, version: Option<VersionChoice>) -> Option<ModelSpec> {
    Some(ModelSpec {
        name: name.into(),
        version_choice: version,
        signature_name: String::new(),
    })
}

fn predict_request(model: &str, x: TensorProto) -> PredictRequest {
    PredictRequest {
        model_spec: spec(model, None),
        inputs: HashMap::from([("x".to_string(), x)]),
        output_filter: Vec::new(),
    }
}

async fn client(gw: &TestGateway) -> PredictionServiceClient<Channel> {
    PredictionServiceClient::connect(gw.url.clone())
        .await
        .expect("gRPC connection to the gateway")
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(512 << 20)
}

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

/// Predict over gRPC runs the model and answers as TF Serving does: typed `float_val`
/// outputs, the model spec echoed with the signature filled in.
#[tokio::test]
async fn predict_round_trip() {
    let (_fake, _server, gw) = doubler_gateway("").await;
    let mut client = client(&gw).await;
    let response = client
        .predict(predict_request(
            "m",
            floats(&[2, 2], &[1.0, 2.0, 3.5, -1.0]),
        ))
        .await
        .expect("predict")
        .into_inner();
    let y = &response.outputs["y"];
    assert_eq!(y.dtype, DataType::DtFloat as i32);
    assert_eq!(y.tensor_shape, shape(&[2, 2]));
    assert_eq!(y.float_val, vec![2.0, 4.0, 7.0, -2.0]);
    assert!(y.tensor_content.is_empty());
    let spec = response.model_spec.unwrap();
    assert_eq!(
        (spec.name.as_str(), spec.signature_name.as_str()),
        ("m", "serving_default")
    );
}

/// `model_spec.version` and `version_label` reach the backend as REST's URL forms do, and
/// `output_filter` names outputs the model has.
#[tokio::test]
async fn versions_labels_and_output_filter() {
    let (fake, _server, gw) = doubler_gateway("").await;
    let mut client = client(&gw).await;
    let mut request = predict_request("m", floats(&[1, 2], &[1.0, 2.0]));
    request.model_spec = spec("m", Some(VersionChoice::Version(1)));
    request.output_filter = vec!["y".into()];
    client.predict(request.clone()).await.expect("version 1");
    request.model_spec = spec("m", Some(VersionChoice::VersionLabel("stable".into())));
    client.predict(request.clone()).await.expect("label");
    let versions: Vec<i64> = fake.calls().iter().map(|c| c.version).collect();
    assert_eq!(versions, vec![1, 1]);

    request.output_filter = vec!["z".into()];
    let status = client.predict(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("it outputs: y"),
        "{}",
        status.message()
    );
}

/// A gRPC Predict and REST requests of the same shapes share one batch queue: four of each,
/// with a batch size of 8 and a window far longer than the test, make one backend call of 8
/// rows.
#[tokio::test]
async fn grpc_and_rest_requests_share_a_batch() {
    let batching = "[batching]\nmax_batch_size = 8\nbatch_timeout_us = 60000000\n\
                    dispatch_when_idle = false\n";
    let (fake, _server, gw) = doubler_gateway(batching).await;
    let client = client(&gw).await;
    let grpc = (0..4).map(|i| {
        let mut client = client.clone();
        async move {
            let out = client
                .predict(predict_request("m", floats(&[1, 2], &[i as f32, 1.0])))
                .await
                .expect("grpc predict")
                .into_inner();
            assert_eq!(out.outputs["y"].float_val, vec![2.0 * i as f32, 2.0]);
        }
    });
    let rest = (0..4).map(|i| {
        let gw = &gw;
        async move {
            let reply = gw
                .post(
                    "/v1/models/m:predict",
                    format!("{{\"instances\": [[{i}, 5]]}}"),
                )
                .await;
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
    });
    tokio::join!(
        futures::future::join_all(grpc),
        futures::future::join_all(rest)
    );
    let rows: Vec<usize> = fake.calls().iter().map(|c| c.rows).collect();
    assert_eq!(rows, vec![8]);
}

/// GetModelMetadata packs the signatures as TF Serving does; GetModelStatus lists versions.
#[tokio::test]
async fn metadata_and_status() {
    let (_fake, _server, gw) = doubler_gateway("").await;
    let mut client = client(&gw).await;
    let metadata = client
        .get_model_metadata(GetModelMetadataRequest {
            model_spec: spec("m", None),
            metadata_field: vec!["signature_def".into()],
        })
        .await
        .expect("metadata")
        .into_inner();
    let any = &metadata.metadata["signature_def"];
    assert_eq!(
        any.type_url,
        "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    );
    let map = SignatureDefMap::decode(any.value.as_slice()).unwrap();
    let x = &map.signature_def["serving_default"].inputs["x"];
    assert_eq!(x.dtype, DataType::DtFloat as i32);
    assert_eq!(x.tensor_shape, shape(&[-1, 2]));

    let status = client
        .get_model_metadata(GetModelMetadataRequest {
            model_spec: spec("m", None),
            metadata_field: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let mut models = ModelServiceClient::connect(gw.url.clone()).await.unwrap();
    let status = models
        .get_model_status(GetModelStatusRequest {
            model_spec: spec("m", None),
        })
        .await
        .expect("status")
        .into_inner();
    let versions: Vec<i64> = status
        .model_version_status
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(versions, vec![1, 2]);
    assert!(status.model_version_status.iter().all(|v| v.state == 30));
}

/// Unknown models and versions, wrong dtypes and shapes, a missing spec and the methods
/// infergate doesn't serve each get their own status and a message that says what to fix;
/// the other model keeps answering.
#[tokio::test]
async fn bad_requests_get_statuses_that_say_what_to_fix() {
    let (_fake, _server, gw) = doubler_gateway("").await;
    let mut client = client(&gw).await;
    let good = || predict_request("m", floats(&[1, 2], &[1.0, 2.0]));
    let check = |result: Result<tonic::Response<_>, tonic::Status>, code: Code, text: &str| {
        let status = result.expect_err("an error status");
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(
            status.message().contains(text),
            "`{}` lacks `{text}`",
            status.message()
        );
    };

    let mut r = good();
    r.model_spec = spec("ghost", None);
    check(client.predict(r).await, Code::NotFound, "model `ghost`");
    let mut r = good();
    r.model_spec = spec("m", Some(VersionChoice::Version(9)));
    check(client.predict(r).await, Code::NotFound, "9");
    let mut r = good();
    r.model_spec = None;
    check(client.predict(r).await, Code::InvalidArgument, "model_spec");
    let r = predict_request(
        "m",
        TensorProto {
            dtype: DataType::DtInt64 as i32,
            tensor_shape: shape(&[1, 2]),
            int64_val: vec![1, 2],
            ..Default::default()
        },
    );
    check(client.predict(r).await, Code::InvalidArgument, "takes f32");
    let r = predict_request("m", floats(&[1, 3], &[1.0, 2.0, 3.0]));
    check(client.predict(r).await, Code::InvalidArgument, "[-1, 2]");
    let r = predict_request(
        "m",
        TensorProto {
            dtype: DataType::DtFloat as i32,
            tensor_shape: shape(&[2, 2]),
            tensor_content: vec![0; 12],
            ..Default::default()
        },
    );
    check(client.predict(r).await, Code::InvalidArgument, "input `x`");
    // One value fills the shape (TF's rule), but not past the message size limit.
    let r = predict_request("m", floats(&[1 << 20, 1 << 20], &[1.0]));
    check(client.predict(r).await, Code::InvalidArgument, "input `x`");
    let mut r = good();
    r.inputs.insert("w".into(), floats(&[1, 2], &[1.0, 2.0]));
    check(
        client.predict(r).await,
        Code::InvalidArgument,
        "no input `w`",
    );
    let mut r = good();
    r.model_spec.as_mut().unwrap().signature_name = "nope".into();
    check(
        client.predict(r).await,
        Code::InvalidArgument,
        "signature `nope`",
    );

    let (status, message) = raw_call(&gw, "/tensorflow.serving.PredictionService/Classify", b"")
        .await
        .unwrap();
    assert_eq!(status, Code::Unimplemented as i32);
    assert!(message.contains("call Predict"), "{message}");

    let mut r = good();
    r.model_spec = spec("other", None);
    client
        .predict(r)
        .await
        .expect("the other model still answers");
}

/// Bytes that are no protobuf message are the client's INVALID_ARGUMENT, not INTERNAL.
#[tokio::test]
async fn malformed_protobuf_is_invalid_argument() {
    let (_fake, _server, gw) = doubler_gateway("").await;
    // Field 1 (model_spec), length-delimited, claiming 100 bytes that never come.
    let (status, message) = raw_call(
        &gw,
        "/tensorflow.serving.PredictionService/Predict",
        &[0x0a, 100, 1, 2],
    )
    .await
    .unwrap();
    assert_eq!(status, Code::InvalidArgument as i32, "{message}");
    assert!(message.contains("not a valid protobuf"), "{message}");
    let mut client = client(&gw).await;
    client
        .predict(predict_request("other", floats(&[1, 2], &[1.0, 2.0])))
        .await
        .expect("the gateway still answers");
}

/// `server.max_body_bytes` bounds a gRPC message both ways: one just under it is served, one
/// over it is RESOURCE_EXHAUSTED naming the key.
#[tokio::test]
async fn message_size_limit_obeyed_and_violated() {
    let fake = FakeBackend::new([identity()]);
    let server = fake.clone().start().await.unwrap();
    let gw = gateway()
        .backend("tfs", &server.url())
        .max_body_bytes(1 << 20)
        .model("m", "backend = \"tfs\"\n")
        .start()
        .await
        .unwrap();
    let mut client = client(&gw).await;
    let big = |floats: usize| {
        predict_request(
            "m",
            TensorProto {
                dtype: DataType::DtFloat as i32,
                tensor_shape: shape(&[1, floats as i64]),
                tensor_content: vec![0; floats * 4],
                ..Default::default()
            },
        )
    };
    client
        .predict(big(200_000))
        .await
        .expect("800 KB fits in 1 MiB");
    let status = client.predict(big(300_000)).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("server.max_body_bytes"),
        "{}",
        status.message()
    );
}

/// A 300 MiB message is refused from its frame header, before it is sent, let alone
/// buffered: the client's body never ends, yet the answer comes.
#[tokio::test]
async fn a_300_mib_message_is_refused_from_its_header() {
    let (_fake, _server, gw) = doubler_gateway("").await;
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(300u32 << 20).to_be_bytes());
    frame.extend_from_slice(&[0u8; 4096]);
    let first = futures::stream::iter([Ok::<_, std::convert::Infallible>(
        hyper::body::Frame::data(Bytes::from(frame)),
    )]);
    let body = http_body_util::StreamBody::new(futures::StreamExt::chain(
        first,
        futures::stream::pending(),
    ));
    let (status, message) =
        grpc_exchange(&gw, "/tensorflow.serving.PredictionService/Predict", body)
            .await
            .unwrap();
    assert_eq!(status, Code::ResourceExhausted as i32, "{message}");
    assert!(message.contains("314572800 bytes"), "{message}");
}

/// The client's deadline (`grpc-timeout`) is honoured by the gateway both ways: 1 ms on a
/// model that takes 300 ms is DEADLINE_EXCEEDED saying so, and the request never reaches the
/// backend; 30 s on the same model is answered. (A plain HTTP/2 client sends the header, so
/// the gateway's answer is seen rather than the client giving up on its own.)
#[tokio::test]
async fn deadline_obeyed_and_violated() {
    let fake = FakeBackend::new([doubler()]).cost(Duration::from_millis(300), Duration::ZERO);
    let server = fake.clone().start().await.unwrap();
    let gw = gateway()
        .backend("tfs", &server.url())
        .model(
            "m",
            "backend = \"tfs\"\n[batching]\nmax_concurrent_batches = 1\n",
        )
        .start()
        .await
        .unwrap();
    let payload = predict_request("m", floats(&[1, 2], &[1.0, 2.0])).encode_to_vec();
    let path = "/tensorflow.serving.PredictionService/Predict";
    let (status, message) = raw_call_with(&gw, path, &payload, &[("grpc-timeout", "1m")])
        .await
        .unwrap();
    assert_eq!(status, Code::DeadlineExceeded as i32, "{message}");
    assert!(message.contains("grpc-timeout"), "{message}");
    let (status, message) = raw_call_with(&gw, path, &payload, &[("grpc-timeout", "30S")])
        .await
        .unwrap();
    assert_eq!(status, Code::Ok as i32, "{message}");
    let (status, message) = raw_call_with(&gw, path, &payload, &[("grpc-timeout", "soon")])
        .await
        .unwrap();
    assert_eq!(status, Code::InvalidArgument as i32, "{message}");
}

/// gRPC requests are counted in `infergate_requests_total` with `protocol="grpc"` and the
/// HTTP status of the same outcome, beside REST's.
#[tokio::test]
async fn grpc_requests_are_counted_by_protocol() {
    let (_fake, _server, gw) = doubler_gateway("").await;
    let mut client = client(&gw).await;
    client
        .predict(predict_request("m", floats(&[1, 2], &[1.0, 2.0])))
        .await
        .unwrap();
    let _ = client
        .predict(predict_request("m", floats(&[1, 3], &[1.0, 2.0, 3.0])))
        .await
        .unwrap_err();
    gw.post("/v1/models/m:predict", r#"{"instances": [[1, 2]]}"#)
        .await;
    let scrape = gw.get("/metrics").await.text();
    for (series, n) in [
        (
            "infergate_requests_total{model=\"m\",version=\"latest\",status=\"200\",protocol=\"grpc\"}",
            1,
        ),
        (
            "infergate_requests_total{model=\"m\",version=\"latest\",status=\"400\",protocol=\"grpc\"}",
            1,
        ),
        (
            "infergate_requests_total{model=\"m\",version=\"latest\",status=\"200\",protocol=\"rest\"}",
            1,
        ),
    ] {
        assert!(
            scrape.lines().any(|l| l == format!("{series} {n}")),
            "{series} {n} missing from:\n{scrape}"
        );
    }
}

/// A reloaded route serves gRPC too: a model folder added after start answers Predict.
#[tokio::test]
async fn hot_reload_applies_to_grpc() {
    let (_fake, server, gw) = doubler_gateway("").await;
    let dir = gw.plugins_dir().join("late");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.toml"), "backend = \"tfs\"\nmodel = \"m\"\n").unwrap();
    let _ = &server;
    let reply = gw.admin_post("/admin/reload").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut client = client(&gw).await;
    client
        .predict(predict_request("late", floats(&[1, 2], &[1.0, 2.0])))
        .await
        .expect("the new route answers gRPC");
}

/// Sends one gRPC message of `payload` bytes to `path`; the call's status and message.
async fn raw_call(gw: &TestGateway, path: &str, payload: &[u8]) -> Result<(i32, String), String> {
    raw_call_with(gw, path, payload, &[]).await
}

async fn raw_call_with(
    gw: &TestGateway,
    path: &str,
    payload: &[u8],
    headers: &[(&str, &str)],
) -> Result<(i32, String), String> {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    let body = http_body_util::Full::new(Bytes::from(frame));
    grpc_exchange_with(gw, path, body, headers).await
}

/// A gRPC call over a plain HTTP/2 client: the `grpc-status` and `grpc-message` of the answer
/// (from its headers, or its trailers).
async fn grpc_exchange<B>(gw: &TestGateway, path: &str, body: B) -> Result<(i32, String), String>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    grpc_exchange_with(gw, path, body, &[]).await
}

async fn grpc_exchange_with<B>(
    gw: &TestGateway,
    path: &str,
    body: B,
    headers: &[(&str, &str)],
) -> Result<(i32, String), String>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<B>();
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("{}{path}", gw.url))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(body).map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let mut status = tonic::Status::from_header_map(&parts.headers);
    if status.is_none() {
        let collected = body.collect().await.map_err(|e| e.to_string())?;
        status = collected
            .trailers()
            .and_then(tonic::Status::from_header_map);
    }
    let status = status.ok_or("no grpc-status")?;
    Ok((status.code() as i32, status.message().to_string()))
}
