//! API keys on the public listener (`[auth]`): each status (401 without or with an unknown
//! key, 403 for a model the key may not call, 429 with `Retry-After` over its rate), the
//! bearer scheme in any case, the probes left open, key ids (never keys) in the metrics, and
//! a keys file hot-reloaded with the last good set kept through a bad edit.

mod support;

use bytes::Bytes;
use http::Method;
use serde_json::json;
use sha2::{Digest, Sha256};
use support::*;

fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn key_entry(table: &str, id: &str, key: &str, models: &str, extra: &str) -> String {
    format!(
        "[[{table}]]\nid = \"{id}\"\nsha256 = \"{}\"\nmodels = {models}\n{extra}\n",
        digest(key)
    )
}

async fn fake() -> FakeServer {
    FakeBackend::new([doubler()]).start().await.unwrap()
}

const BODY: &str = r#"{"instances": [[1.0, 2.0]]}"#;

/// A gateway serving `m` and `other` (both the doubler) with `auth` appended to
/// gateway.toml.
async fn with_auth(backend: &FakeServer, auth: &str) -> TestGateway {
    gateway()
        .backend("tfs", &backend.url())
        .model("m", "backend = \"tfs\"\n")
        .model("other", "backend = \"tfs\"\nmodel = \"m\"\n")
        .extra_config(auth)
        .start()
        .await
        .unwrap_or_else(|e| panic!("start: {e}"))
}

async fn predict(gw: &TestGateway, model: &str, authorization: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| ("authorization", a))
        .into_iter()
        .collect();
    gw.post_with(&format!("/v1/models/{model}:predict"), BODY, &headers)
        .await
}

/// Every status of the table, each named in its message: no key or an unknown one 401 with
/// `WWW-Authenticate`; a known key (any case of "Bearer") 200 on its model and 403 on
/// another; "*" opens every model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_of_keys_and_models() {
    let backend = fake().await;
    let auth = format!(
        "[auth]\n{}{}",
        key_entry("auth.keys", "team-a", "secret-a", "[\"m\"]", ""),
        key_entry("auth.keys", "ops", "secret-ops", "[\"*\"]", "")
    );
    let gw = with_auth(&backend, &auth).await;

    let missing = predict(&gw, "m", None).await;
    assert_eq!(missing.status, 401, "{}", missing.text());
    assert!(
        missing.error().contains("Authorization: Bearer"),
        "{}",
        missing.text()
    );
    assert_eq!(
        missing.headers["www-authenticate"],
        "Bearer realm=\"infergate\""
    );
    let unknown = predict(&gw, "m", Some("Bearer secret-b")).await;
    assert_eq!(unknown.status, 401, "{}", unknown.text());
    let basic = predict(&gw, "m", Some("Basic secret-a")).await;
    assert_eq!(basic.status, 401, "{}", basic.text());

    for scheme in ["Bearer", "bearer", "BEARER"] {
        let reply = predict(&gw, "m", Some(&format!("{scheme} secret-a"))).await;
        assert_eq!(reply.status, 200, "{scheme}: {}", reply.text());
        assert_eq!(reply.json(), json!({"predictions": [[2.0, 4.0]]}));
    }
    let forbidden = predict(&gw, "other", Some("Bearer secret-a")).await;
    assert_eq!(forbidden.status, 403, "{}", forbidden.text());
    assert!(
        forbidden
            .error()
            .contains("`team-a` may not call model `other`"),
        "{}",
        forbidden.text()
    );
    let status = gw
        .get_with("/v1/models/other", &[("authorization", "Bearer secret-a")])
        .await;
    assert_eq!(status.status, 403, "status endpoints are the model's too");
    assert_eq!(
        predict(&gw, "other", Some("Bearer secret-ops"))
            .await
            .status,
        200
    );

    // The model list needs a key, any key.
    assert_eq!(gw.get("/v1/models").await.status, 401);
    let list = gw
        .get_with("/v1/models", &[("authorization", "Bearer secret-a")])
        .await;
    assert_eq!(list.status, 200);
    // Probes and the API description stay open.
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(gw.get(path).await.status, 200, "{path}");
    }
}

/// A key with `rate` and `burst` gets `burst` requests, then 429 with `Retry-After` in
/// whole seconds; another key keeps its own budget. The metrics count by key id and never
/// show a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_429_with_retry_after() {
    let backend = fake().await;
    // One token per 500 s: the refill never lands inside this test.
    let auth = format!(
        "[auth]\n{}{}",
        key_entry(
            "auth.keys",
            "slow",
            "secret-slow",
            "[\"*\"]",
            "rate = 0.002\nburst = 2"
        ),
        key_entry("auth.keys", "free", "secret-free", "[\"*\"]", "")
    );
    let gw = with_auth(&backend, &auth).await;
    for i in 0..2 {
        let reply = predict(&gw, "m", Some("Bearer secret-slow")).await;
        assert_eq!(
            reply.status,
            200,
            "request {i} within the burst: {}",
            reply.text()
        );
    }
    let over = predict(&gw, "m", Some("Bearer secret-slow")).await;
    assert_eq!(over.status, 429, "{}", over.text());
    assert!(
        over.error().contains("`slow` is over its rate"),
        "{}",
        over.text()
    );
    let retry: u64 = over.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((499..=500).contains(&retry), "Retry-After {retry}");
    for _ in 0..5 {
        assert_eq!(
            predict(&gw, "m", Some("Bearer secret-free")).await.status,
            200
        );
    }
    let metrics = gw.admin_get("/metrics", &[]).await.text();
    for series in [
        "infergate_auth_requests_total{key=\"slow\",outcome=\"allowed\"} 2",
        "infergate_auth_requests_total{key=\"slow\",outcome=\"rate_limited\"} 1",
        "infergate_auth_requests_total{key=\"free\",outcome=\"allowed\"} 5",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    assert!(
        !metrics.contains("secret-"),
        "a key leaked into the metrics"
    );
}

/// Keys in a file of their own are reloaded when it changes: a new key works and a removed
/// one is refused; an invalid edit keeps the last good keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_file_hot_reload() {
    let backend = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.toml");
    std::fs::write(&file, key_entry("keys", "first", "key-1", "[\"m\"]", "")).unwrap();
    let auth = format!(
        "[auth]\nkeys_file = \"{}\"\nreload_interval_ms = 50\n",
        file.display()
    );
    let gw = with_auth(&backend, &auth).await;
    assert_eq!(predict(&gw, "m", Some("Bearer key-1")).await.status, 200);
    assert_eq!(predict(&gw, "m", Some("Bearer key-2")).await.status, 401);

    std::fs::write(&file, key_entry("keys", "second", "key-2", "[\"m\"]", "")).unwrap();
    eventually(10, "the second key accepted", || {
        let url = format!("{}/v1/models/m:predict", gw.url);
        async move {
            send(
                Method::POST,
                &url,
                Bytes::from(BODY),
                &[("authorization", "Bearer key-2")],
            )
            .await
            .status
                == 200
        }
    })
    .await;
    assert_eq!(
        predict(&gw, "m", Some("Bearer key-1")).await.status,
        401,
        "removed key"
    );
    let metrics = gw.admin_get("/metrics", &[]).await.text();
    assert!(
        metrics.contains("infergate_auth_reloads_total{outcome=\"reloaded\"} 1"),
        "{metrics}"
    );

    // A digest that isn't one: refused, the second key stays in force.
    std::fs::write(
        &file,
        "[[keys]]\nid = \"third\"\nsha256 = \"key-3\"\nmodels = [\"m\"]\n",
    )
    .unwrap();
    eventually(10, "the bad edit read and refused", || {
        let url = format!("{}/metrics", gw.admin_url);
        async move {
            let text = send(Method::GET, &url, Bytes::new(), &[]).await.text();
            text.contains("infergate_auth_reloads_total{outcome=\"failed\"} 1")
        }
    })
    .await;
    assert_eq!(
        predict(&gw, "m", Some("Bearer key-2")).await.status,
        200,
        "bad edit took effect"
    );
}

/// gRPC carries the key as `authorization` metadata. Its model is inside the message, so a
/// key for every model may call (and is rate limited like REST); a key limited to some
/// models gets PERMISSION_DENIED saying why, and none UNAUTHENTICATED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_need_a_key_for_every_model() {
    use infergate::proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
    use infergate::proto::tensorflow::serving::{ModelSpec, PredictRequest};
    use infergate::proto::tensorflow::{
        DataType, TensorProto, TensorShapeProto, tensor_shape_proto::Dim,
    };

    let backend = fake().await;
    let auth = format!(
        "[auth]\n{}{}",
        key_entry("auth.keys", "team-a", "secret-a", "[\"m\"]", ""),
        key_entry("auth.keys", "ops", "secret-ops", "[\"*\"]", "")
    );
    let gw = with_auth(&backend, &auth).await;
    let request = || {
        let x = TensorProto {
            dtype: DataType::DtFloat as i32,
            tensor_shape: Some(TensorShapeProto {
                dim: [1, 2]
                    .iter()
                    .map(|&size| Dim {
                        size,
                        name: String::new(),
                    })
                    .collect(),
                unknown_rank: false,
            }),
            float_val: vec![1.0, 2.0],
            ..Default::default()
        };
        PredictRequest {
            model_spec: Some(ModelSpec {
                name: "m".into(),
                ..Default::default()
            }),
            inputs: [("x".to_string(), x)].into(),
            output_filter: Vec::new(),
        }
    };
    let mut client = PredictionServiceClient::connect(gw.url.clone())
        .await
        .unwrap();
    for (key, expected) in [
        (None, Some(tonic::Code::Unauthenticated)),
        (Some("Bearer nope"), Some(tonic::Code::Unauthenticated)),
        (Some("Bearer secret-a"), Some(tonic::Code::PermissionDenied)),
        (Some("bearer secret-ops"), None),
    ] {
        let mut call = tonic::Request::new(request());
        if let Some(key) = key {
            call.metadata_mut()
                .insert("authorization", key.parse().unwrap());
        }
        match (client.predict(call).await, expected) {
            (Ok(_), None) => {}
            (Err(status), Some(code)) => {
                assert_eq!(status.code(), code, "{key:?}: {status:?}");
                if code == tonic::Code::PermissionDenied {
                    assert!(status.message().contains("models = [\"*\"]"), "{status:?}");
                }
            }
            (outcome, _) => panic!("{key:?}: {outcome:?}"),
        }
    }
}
