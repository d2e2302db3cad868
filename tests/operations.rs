//! What operators rely on: metrics that count what happened, request ids, the admin token,
//! and an OpenAPI document that matches the router.

mod support;

use std::collections::BTreeSet;

use infergate::ingress::path::{self, Endpoint};
use serde_json::json;
use support::*;

/// The value of the sample `series` (name plus exact label set) in a scrape, if present.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split(' ').next()?.parse().ok()
    })
}

fn expect(scrape: &str, series: &str, want: f64) {
    assert_eq!(sample(scrape, series), Some(want), "{series} in:\n{scrape}");
}

/// After known traffic the scrape counts exactly it: requests by status and version, backend
/// calls and their errors, batch rows, stages, reloads; nothing left in flight or queued.
#[tokio::test]
async fn metrics_count_known_traffic() {
    let fake = FakeBackend::new([doubler()]);
    let backend = fake.clone().start().await.unwrap();
    let echo = format!(
        "backend = \"tfs\"\nmodel = \"m\"\nplugin = \"{}\"\n",
        wasm("echo")
    );
    let gw = gateway()
        .backend("tfs", &backend.url())
        .model("m", "backend = \"tfs\"\n")
        .model("e", &echo)
        .fixture_plugin("e", "echo")
        .model(
            "ghost",
            "backend = \"tfs\"\nmodel = \"not-on-the-backend\"\n",
        )
        .start()
        .await
        .unwrap();
    for i in 0..3 {
        let reply = gw
            .post(
                "/v1/models/m:predict",
                json!({"instances": [[i, 1]]}).to_string(),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let bad = gw.post("/v1/models/m:predict", "{not json").await;
    assert_eq!(bad.status, 400);
    let missing = gw
        .post(
            "/v1/models/m/versions/9:predict",
            json!({"instances": [[1, 1]]}).to_string(),
        )
        .await;
    assert_eq!(missing.status, 404, "{}", missing.text());
    // A route whose model the backend doesn't serve: the backend's failure, not the client's.
    let ghost = gw
        .post(
            "/v1/models/ghost:predict",
            json!({"instances": [[1, 1]]}).to_string(),
        )
        .await;
    assert_eq!(ghost.status, 404, "{}", ghost.text());
    let body = json!({"inputs": {"x": {"dtype": "f32", "shape": [2, 2], "values": [1, 2, 3, 4]}}});
    let plugged = gw.post("/v1/models/e:predict", body.to_string()).await;
    assert_eq!(plugged.status, 200, "{}", plugged.text());

    let reply = gw.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        reply.headers
    );
    let scrape = reply.text();
    let m = |labels: &str| format!("{{model=\"m\"{labels}}}");
    expect(
        &scrape,
        &format!(
            "infergate_requests_total{}",
            m(",version=\"latest\",status=\"200\",protocol=\"rest\"")
        ),
        3.0,
    );
    expect(
        &scrape,
        &format!(
            "infergate_requests_total{}",
            m(",version=\"latest\",status=\"400\",protocol=\"rest\"")
        ),
        1.0,
    );
    expect(
        &scrape,
        &format!(
            "infergate_requests_total{}",
            m(",version=\"other\",status=\"404\",protocol=\"rest\"")
        ),
        1.0,
    );
    expect(
        &scrape,
        "infergate_requests_total{model=\"e\",version=\"latest\",status=\"200\",protocol=\"rest\"}",
        1.0,
    );
    // The version the client made up is the client's 404, not a backend failure; the model
    // the backend lacks is one.
    assert_eq!(
        sample(
            &scrape,
            &format!("infergate_backend_errors_total{}", m(",code=\"NOT_FOUND\""))
        ),
        None,
        "{scrape}"
    );
    expect(
        &scrape,
        "infergate_backend_errors_total{model=\"ghost\",code=\"NOT_FOUND\"}",
        1.0,
    );
    // Three Predict calls for m, one row each: the 400 never reached the backend, and the
    // unknown version failed at the metadata lookup that types REST JSON (counted above).
    expect(
        &scrape,
        &format!("infergate_batch_size_rows_count{}", m("")),
        3.0,
    );
    expect(
        &scrape,
        &format!("infergate_batch_size_rows_sum{}", m("")),
        3.0,
    );
    expect(
        &scrape,
        &format!(
            "infergate_stage_duration_seconds_count{}",
            m(",stage=\"backend\"")
        ),
        3.0,
    );
    expect(
        &scrape,
        &format!(
            "infergate_stage_duration_seconds_count{}",
            m(",stage=\"queue\"")
        ),
        3.0,
    );
    expect(
        &scrape,
        &format!("infergate_request_duration_seconds_count{}", m("")),
        5.0,
    );
    expect(&scrape, "infergate_batch_size_rows_sum{model=\"e\"}", 2.0);
    for stage in ["pre", "post"] {
        expect(
            &scrape,
            &format!("infergate_stage_duration_seconds_count{{model=\"e\",stage=\"{stage}\"}}"),
            1.0,
        );
    }
    expect(
        &scrape,
        &format!("infergate_requests_in_flight{}", m("")),
        0.0,
    );
    expect(&scrape, &format!("infergate_queue_depth{}", m("")), 0.0);
    assert_eq!(
        fake.calls().len(),
        4,
        "the unknown version never reached the model"
    );

    // A changed folder reloads and is counted, per model and outcome.
    std::fs::write(
        gw.plugins_dir().join("m/model.toml"),
        "backend = \"tfs\"\n[batching]\nmax_batch_size = 4\n",
    )
    .unwrap();
    std::fs::create_dir(gw.plugins_dir().join("broken")).unwrap();
    std::fs::write(gw.plugins_dir().join("broken/model.toml"), "nope = 1\n").unwrap();
    let report = gw.admin_post("/admin/reload").await;
    assert_eq!(report.status, 200, "{}", report.text());
    let scrape = gw.admin_get("/metrics", &[]).await.text();
    expect(
        &scrape,
        "infergate_reloads_total{model=\"m\",outcome=\"reloaded\"}",
        1.0,
    );
    expect(
        &scrape,
        "infergate_reloads_total{model=\"broken\",outcome=\"failed\"}",
        1.0,
    );
    gw.shutdown().await;
}

/// Off loopback the admin API must be protected: without a token the gateway refuses to
/// start, saying how to set one.
#[tokio::test]
async fn admin_off_loopback_needs_a_token() {
    if std::env::var_os("INFERGATE_ADMIN_TOKEN").is_some() {
        eprintln!("skipped: INFERGATE_ADMIN_TOKEN is set in this environment");
        return;
    }
    let refused = gateway()
        .backend("tfs", "http://127.0.0.1:1")
        .server_config("admin_listen = \"0.0.0.0:0\"")
        .start()
        .await;
    let Err(error) = refused else {
        panic!("started with an unprotected admin listener on 0.0.0.0");
    };
    let message = error.to_string();
    assert!(
        message.contains("0.0.0.0:0") && message.contains("server.admin_token"),
        "{message}"
    );
    // With a token it starts.
    let gw = gateway()
        .backend("tfs", "http://127.0.0.1:1")
        .server_config("admin_listen = \"0.0.0.0:0\"\nadmin_token = \"s3cret\"")
        .start()
        .await
        .unwrap();
    gw.shutdown().await;
}

/// With a token configured, every admin endpoint but `/healthz` needs it as a bearer token.
#[tokio::test]
async fn admin_token_is_required_when_set() {
    let gw = gateway()
        .backend("tfs", "http://127.0.0.1:1")
        .server_config("admin_token = \"s3cret\"")
        .model("m", "backend = \"tfs\"\n")
        .start()
        .await
        .unwrap();
    let none = gw.admin_get("/admin/routes", &[]).await;
    assert_eq!(none.status, 401);
    assert!(none.error().contains("Bearer"), "{}", none.text());
    assert!(none.headers.contains_key("www-authenticate"));
    let wrong = gw
        .admin_get("/admin/routes", &[("authorization", "Bearer s3cres")])
        .await;
    assert_eq!(wrong.status, 401);
    let reload = gw.admin_post("/admin/reload").await;
    assert_eq!(reload.status, 401, "reload without a token");
    let right = gw
        .admin_get("/admin/routes", &[("authorization", "Bearer s3cret")])
        .await;
    assert_eq!(right.status, 200, "{}", right.text());
    assert_eq!(right.json()["models"][0]["name"], "m");
    let plugins = gw
        .admin_get("/admin/plugins", &[("authorization", "Bearer s3cret")])
        .await;
    assert_eq!(plugins.status, 200, "{}", plugins.text());
    assert_eq!(plugins.json()["models"]["m"]["limits"]["memory_mb"], 64);
    let allocator = plugins.json()["allocator"].clone();
    assert!(
        allocator == "pooling" || allocator == "on-demand",
        "named as the docs name it: {allocator}"
    );
    // The scheme is case-insensitive (RFC 9110): clients send `bearer` too.
    let lowercase = gw
        .admin_get("/admin/routes", &[("authorization", "bearer s3cret")])
        .await;
    assert_eq!(lowercase.status, 200, "{}", lowercase.text());
    // Probes carry no credentials.
    assert_eq!(gw.admin_get("/healthz", &[]).await.status, 200);
    let ready = gw.admin_get("/readyz", &[]).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["status"], "ready");
    gw.shutdown().await;
}

/// The admin listener answers as the public one does: a known path with the wrong method is
/// 405 with `Allow`, an unknown path 404.
#[tokio::test]
async fn admin_wrong_method_is_405() {
    let gw = gateway()
        .backend("tfs", "http://127.0.0.1:1")
        .model("m", "backend = \"tfs\"\n")
        .start()
        .await
        .unwrap();
    let get_reload = gw.admin_get("/admin/reload", &[]).await;
    assert_eq!(get_reload.status, 405, "{}", get_reload.text());
    assert_eq!(get_reload.headers["allow"], "POST");
    assert!(
        get_reload.error().contains("GET is not allowed"),
        "{}",
        get_reload.text()
    );
    let post_routes = gw.admin_post("/admin/routes").await;
    assert_eq!(post_routes.status, 405);
    assert_eq!(post_routes.headers["allow"], "GET");
    assert_eq!(gw.admin_get("/admin/nothing", &[]).await.status, 404);
    gw.shutdown().await;
}

/// Every path and method in the OpenAPI document reaches its endpoint in the router, every
/// endpoint is documented, and the document served is the one in `docs/`.
#[tokio::test]
async fn openapi_matches_the_router() {
    let doc: serde_json::Value = serde_json::from_str(infergate::ingress::OPENAPI).unwrap();
    assert_eq!(
        doc["openapi"].as_str().unwrap().split('.').next(),
        Some("3")
    );
    let mut reached = BTreeSet::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        let concrete = template
            .replace("{model}", "digits")
            .replace("{version}", "2")
            .replace("{label}", "stable");
        assert!(!concrete.contains('{'), "unknown parameter in {template}");
        let methods: Vec<&String> = item.as_object().unwrap().keys().collect();
        assert!(!methods.is_empty(), "{template} documents no method");
        for method in methods {
            let method: http::Method = method.to_uppercase().parse().unwrap();
            let endpoint = path::parse(&method, &concrete)
                .unwrap_or_else(|e| panic!("{method} {template} is documented but {e:?}"));
            // The documented parameters are the ones the router extracted.
            match &endpoint {
                Endpoint::Predict { model, version }
                | Endpoint::Status { model, version }
                | Endpoint::Metadata { model, version }
                | Endpoint::V2Metadata { model, version }
                | Endpoint::V2ModelReady { model, version }
                | Endpoint::V2Infer { model, version } => {
                    assert_eq!(model, "digits", "{template}");
                    let expected = if template.contains("{version}") {
                        infergate::backend::VersionChoice::Number(2)
                    } else if template.contains("{label}") {
                        infergate::backend::VersionChoice::Label("stable".into())
                    } else {
                        infergate::backend::VersionChoice::Latest
                    };
                    assert_eq!(version, &expected, "{template}");
                }
                _ => {}
            }
            reached.insert(variant(&endpoint));
        }
    }
    let all: BTreeSet<&str> = [
        "Predict",
        "Status",
        "Metadata",
        "ListModels",
        "Healthz",
        "Readyz",
        "Metrics",
        "OpenApi",
        "V2Server",
        "V2Live",
        "V2Ready",
        "V2Metadata",
        "V2ModelReady",
        "V2Infer",
    ]
    .into();
    assert_eq!(reached, all, "endpoints missing from docs/openapi.json");

    let gw = gateway()
        .backend("tfs", "http://127.0.0.1:1")
        .start()
        .await
        .unwrap();
    let served = gw.get("/openapi.json").await;
    assert_eq!(served.status, 200);
    assert_eq!(served.json(), doc);
    gw.shutdown().await;
}

/// The variant's name; the exhaustive match makes a new endpoint fail to compile here until
/// it is added to the list above (and so to the document).
fn variant(endpoint: &Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Predict { .. } => "Predict",
        Endpoint::Status { .. } => "Status",
        Endpoint::Metadata { .. } => "Metadata",
        Endpoint::ListModels => "ListModels",
        Endpoint::Healthz => "Healthz",
        Endpoint::Readyz => "Readyz",
        Endpoint::Metrics => "Metrics",
        Endpoint::OpenApi => "OpenApi",
        Endpoint::V2Server => "V2Server",
        Endpoint::V2Live => "V2Live",
        Endpoint::V2Ready => "V2Ready",
        Endpoint::V2Metadata { .. } => "V2Metadata",
        Endpoint::V2ModelReady { .. } => "V2ModelReady",
        Endpoint::V2Infer { .. } => "V2Infer",
    }
}
