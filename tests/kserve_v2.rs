//! The `kserve_v2` backend: routes whose model runs on a server speaking the Open Inference
//! Protocol over gRPC. The server here is a second gateway's own `GRPCInferenceService` in
//! front of the fake TF Serving (the end-to-end suite drives a real Triton); through it
//! the REST pipeline, batching, status and metadata behave as with `tfserving`.

mod support;

use serde_json::json;
use support::*;

/// An upstream gateway serving model `m` over v2 gRPC, and a gateway in front whose route
/// `d` runs `m` through a `kserve_v2` backend.
async fn chain(route_toml: &str) -> (FakeBackend, FakeServer, TestGateway, TestGateway) {
    let fake = FakeBackend::new([doubler()]);
    let server = fake.clone().start().await.unwrap();
    let upstream = gateway()
        .backend("tfs", &server.url())
        .model("m", "backend = \"tfs\"\n")
        .start()
        .await
        .unwrap();
    let front = gateway()
        .kserve_v2_backend("v2", &upstream.url)
        .model(
            "d",
            &format!("backend = \"v2\"\nmodel = \"m\"\n{route_toml}"),
        )
        .start()
        .await
        .unwrap();
    (fake, server, upstream, front)
}

/// REST JSON through a kserve_v2 route: typed by the v2 server's metadata, answered as TF
/// Serving's REST API does; versions reach the server.
#[tokio::test]
async fn predict_through_kserve_v2() {
    let (fake, _server, _upstream, front) = chain("").await;
    let reply = front
        .post(
            "/v1/models/d:predict",
            r#"{"instances": [[1.0, 2.0], [3.5, -1]]}"#,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({ "predictions": [[2.0, 4.0], [7.0, -2.0]] })
    );
    let reply = front
        .post(
            "/v1/models/d/versions/1:predict",
            r#"{"instances": [[1, 1]]}"#,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let versions: Vec<i64> = fake.calls().iter().map(|c| c.version).collect();
    assert_eq!(versions, vec![2, 1]);
    let reply = front
        .post(
            "/v1/models/d/labels/stable:predict",
            r#"{"instances": [[1, 1]]}"#,
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.error().contains("no labels"), "{}", reply.error());
}

/// Status and metadata come from ModelMetadata / ModelReady, in TF Serving's JSON shape.
#[tokio::test]
async fn status_and_metadata_in_tf_serving_shape() {
    let (_fake, _server, _upstream, front) = chain("").await;
    let status = front.get("/v1/models/d").await;
    assert_eq!(status.status, 200, "{}", status.text());
    let versions = &status.json()["model_version_status"];
    assert_eq!(versions[0]["version"], "1");
    assert_eq!(versions[0]["state"], "AVAILABLE");
    assert_eq!(versions[1]["version"], "2");
    let meta = front.get("/v1/models/d/metadata").await;
    assert_eq!(meta.status, 200, "{}", meta.text());
    let x = &meta.json()["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
        ["x"];
    assert_eq!(x["dtype"], "DT_FLOAT");
    assert_eq!(x["tensor_shape"]["dim"][1]["size"], "2");
}

/// Concurrent requests are batched by the gateway into one ModelInfer, whose answer is split
/// back per request.
#[tokio::test]
async fn requests_are_batched_into_one_model_infer() {
    let batching = "[batching]\nmax_batch_size = 4\nbatch_timeout_us = 60000000\n\
                    dispatch_when_idle = false\n";
    let (fake, _server, _upstream, front) = chain(batching).await;
    let requests = (0..4).map(|i| {
        let front = &front;
        async move {
            let reply = front
                .post(
                    "/v1/models/d:predict",
                    format!("{{\"instances\": [[{i}, 1]]}}"),
                )
                .await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            assert_eq!(
                reply.json(),
                json!({ "predictions": [[2.0 * i as f64, 2.0]] })
            );
        }
    });
    futures::future::join_all(requests).await;
    let rows: Vec<usize> = fake.calls().iter().map(|c| c.rows).collect();
    assert_eq!(rows, vec![4]);
}

/// A v2 server that is down is 503 naming the backend; a bad request is the server's
/// INVALID_ARGUMENT, 400.
#[tokio::test]
async fn errors_map_like_tfserving() {
    let down = gateway()
        .kserve_v2_backend("v2", "http://127.0.0.1:1")
        .model("d", "backend = \"v2\"\nmodel = \"m\"\n")
        .start()
        .await
        .unwrap();
    let reply = down.get("/v1/models/d").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(reply.error().contains("backend `v2`"), "{}", reply.error());

    let (_fake, _server, _upstream, front) = chain("").await;
    let reply = front
        .post("/v1/models/d:predict", r#"{"inputs": {"x": [[1, 2, 3]]}}"#)
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
}

/// A kserve_v2 backend runs on the same endpoint pool as tfserving: with one of two replicas
/// refusing connections every request is still answered (failover to the live one, then the
/// dead one ejected), `/readyz` is 200 for a model the live server serves, and 503 naming the
/// backend for a route whose model no replica has (`ModelReady` health checks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replica_fails_over_and_readyz_follows_model_ready() {
    let fake = FakeBackend::new([doubler()]);
    let server = fake.clone().start().await.unwrap();
    let upstream = gateway()
        .backend("tfs", &server.url())
        .model("m", "backend = \"tfs\"\n")
        .start()
        .await
        .unwrap();
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let front = gateway()
        .backend_config(
            "v2",
            &format!(
                "kind = \"kserve_v2\"\nendpoints = [\"http://{dead}\", \"{}\"]\n\
                 timeout_ms = 5000\n[backends.v2.health]\ninterval_ms = 100\n",
                upstream.url
            ),
        )
        .model("d", "backend = \"v2\"\nmodel = \"m\"\n")
        .start()
        .await
        .unwrap();
    for _ in 0..20 {
        let reply = front
            .post("/v1/models/d:predict", r#"{"instances": [[1.0, 2.0]]}"#)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json(), json!({ "predictions": [[2.0, 4.0]] }));
    }
    eventually(30, "readyz 200 with one live replica", || async {
        front.get("/readyz").await.status == 200
    })
    .await;
    let metrics = front.get("/metrics").await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("infergate_endpoint_calls_total{")
                && l.contains(&dead.to_string())),
        "no call series for the dead endpoint:\n{metrics}"
    );

    // A route whose model no replica serves: ModelReady says so, /readyz names it.
    let absent = gateway()
        .kserve_v2_backend("v2", &upstream.url)
        .model("x", "backend = \"v2\"\nmodel = \"absent\"\n")
        .start()
        .await
        .unwrap();
    eventually(30, "readyz 503 for a model no replica has", || async {
        absent.get("/readyz").await.status == 503
    })
    .await;
    let body = absent.get("/readyz").await.json();
    let why = body["models"]["x"].as_str().unwrap_or_default();
    assert!(why.contains("backend `v2`"), "{body}");
}
