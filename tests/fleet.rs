//! A backend of many model-server replicas: three in-process fake TF Servings on port 0 behind
//! one `[backends.tfs]`, killed and restarted under load, failing on purpose, behind TLS.
//! What must hold: no request fails while one replica dies, a replica that comes back takes
//! calls again, a fleet that is all down answers 503 at once, `/readyz` follows the health of
//! every routed model, and only calls that never ran are retried.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use infergate::fake::{FakeTls, Fault};
use infergate::proto::tensorflow::serving::PredictResponse;
use infergate::proto::tensorflow::{
    DataType, TensorProto, TensorShapeProto, tensor_shape_proto::Dim,
};
use support::*;

const BODY: &str = r#"{"instances": [[1, 2]]}"#;
const ROUTE: &str = "backend = \"tfs\"\nmodel = \"m\"\n";

/// `n` fake TF Servings serving the doubler, each call costing 1 ms (so calls overlap).
async fn fleet(n: usize) -> Vec<FakeServer> {
    let mut servers = Vec::new();
    for _ in 0..n {
        let fake = FakeBackend::new([doubler()]).cost(Duration::from_millis(1), Duration::ZERO);
        servers.push(fake.start().await.unwrap());
    }
    servers
}

/// `[backends.tfs]` over `servers`, with `extra` lines (sub-tables) after the endpoints.
fn backend(servers: &[FakeServer], extra: &str) -> String {
    let endpoints: Vec<String> = servers.iter().map(|s| format!("\"{}\"", s.url())).collect();
    format!(
        "kind = \"tfserving\"\nendpoints = [{}]\ntimeout_ms = 10000\n{extra}",
        endpoints.join(", ")
    )
}

async fn start(servers: &[FakeServer], extra: &str, route: &str) -> TestGateway {
    gateway()
        .backend_config("tfs", &backend(servers, extra))
        .model("m", route)
        .start()
        .await
        .unwrap()
}

/// The value of the series `series` (name and labels, exactly as exported) in `/metrics`.
async fn metric(gw: &TestGateway, series: &str) -> Option<f64> {
    let text = gw.get("/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn endpoint_label(server: &FakeServer) -> String {
    format!("backend=\"tfs\",endpoint=\"{}\"", server.addr)
}

/// Clients posting the doubler's request in a loop until stopped, counting answers.
struct Load {
    ok: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(gw: &TestGateway, clients: usize) -> Load {
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let url = format!("{}/v1/models/m:predict", gw.url);
        let tasks = (0..clients)
            .map(|_| {
                let (ok, failures, stop, url) =
                    (ok.clone(), failures.clone(), stop.clone(), url.clone());
                tokio::spawn(async move {
                    // One client per task, keeping its connection as real clients do.
                    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
                    while !stop.load(Ordering::Relaxed) {
                        let request = http::Request::post(&url)
                            .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                            .unwrap();
                        match client.request(request).await {
                            Ok(response) => {
                                let status = response.status();
                                let body = response.into_body().collect().await;
                                let body = body
                                    .map(http_body_util::Collected::to_bytes)
                                    .unwrap_or_default();
                                if status == 200 {
                                    ok.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    failures.lock().unwrap().push(format!(
                                        "{status}: {}",
                                        String::from_utf8_lossy(&body)
                                    ));
                                }
                            }
                            Err(e) => failures.lock().unwrap().push(format!("transport: {e}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            ok,
            failures,
            stop,
            tasks,
        }
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `n` more requests have succeeded (failing after 60 s: a hang guard).
    async fn answered(&self, n: usize) {
        let target = self.ok() + n;
        eventually(60, &format!("{n} more answered requests"), || async {
            self.ok() >= target || !self.failures.lock().unwrap().is_empty()
        })
        .await;
    }

    /// Stops the clients; the failures they saw.
    async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        Arc::try_unwrap(self.failures)
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

/// One replica of three killed under 32 concurrent clients: no request fails (calls in flight
/// on it fail over, the rest avoid it once it is ejected), it is reported ejected, and once
/// restarted on its address it takes calls again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_one_of_three_loses_no_request_and_it_comes_back() {
    let mut servers = fleet(3).await;
    let gw = start(&servers, "", ROUTE).await;
    let load = Load::start(&gw, 32);
    load.answered(300).await;
    for s in &servers {
        assert!(!s.backend().calls().is_empty(), "{} got no calls", s.addr);
    }
    servers[0].kill();
    load.answered(1000).await;
    let healthy = format!(
        "infergate_endpoint_healthy{{{}}}",
        endpoint_label(&servers[0])
    );
    assert_eq!(
        metric(&gw, &healthy).await,
        Some(0.0),
        "killed endpoint not ejected"
    );
    let ejections = format!(
        "infergate_endpoint_ejections_total{{{}}}",
        endpoint_label(&servers[0])
    );
    assert!(metric(&gw, &ejections).await.unwrap() >= 1.0);
    // Back on the same address: it takes calls again (its re-admission check is due within
    // max_ejection_ms, 1 s by default; the unit tests pin that schedule on a paused clock).
    let before = servers[0].backend().calls().len();
    servers[0].restart().await.unwrap();
    let restarted = Instant::now();
    eventually(30, "the restarted replica takes calls", || async {
        servers[0].backend().calls().len() > before
    })
    .await;
    eprintln!(
        "restarted replica took calls again after {:?}",
        restarted.elapsed()
    );
    assert_eq!(metric(&gw, &healthy).await, Some(1.0));
    load.answered(300).await;
    let failures = load.stop().await;
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

/// Calls in flight on a replica when it dies (connection cut before any answer) are retried
/// on another one: every request succeeds, and the retries are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_cut_before_an_answer_fail_over() {
    let mut servers = Vec::new();
    for _ in 0..2 {
        let fake = FakeBackend::new([doubler()]).cost(Duration::from_millis(400), Duration::ZERO);
        servers.push(fake.start().await.unwrap());
    }
    let route = format!("{ROUTE}[batching]\nmax_batch_size = 1\nmax_concurrent_batches = 16\n");
    let gw = Arc::new(start(&servers, "", &route).await);
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move { gw.post("/v1/models/m:predict", BODY).await })
        })
        .collect();
    // The fake records a call before charging its cost: all 8 are in flight now.
    eventually(30, "8 calls in flight", || async {
        servers
            .iter()
            .map(|s| s.backend().calls().len())
            .sum::<usize>()
            == 8
    })
    .await;
    let cut = servers[0].backend().calls().len();
    assert!(cut > 0, "no call went to the replica to kill");
    servers[0].kill();
    for r in requests {
        let reply = r.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let retried = metric(
        &gw,
        "infergate_backend_retries_total{backend=\"tfs\",outcome=\"retried\"}",
    )
    .await;
    assert_eq!(retried, Some(cut as f64));
    assert_eq!(
        servers[1].backend().calls().len(),
        8,
        "the survivor ran every call"
    );
}

/// All three down: after the first few requests eject them, answers are 503s that name each
/// endpoint and try none of them (no call is sent: fast, no hang); `/readyz` is 503 naming the
/// model; one replica back makes the model ready and served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_down_answers_503_at_once_and_readyz_follows() {
    let mut servers = fleet(3).await;
    let gw = start(&servers, "", ROUTE).await;
    assert_eq!(gw.post("/v1/models/m:predict", BODY).await.status, 200);
    assert_eq!(gw.get("/readyz").await.status, 200);
    for s in &mut servers {
        s.kill();
    }
    let mut sent = 0;
    loop {
        let reply = tokio::time::timeout(
            Duration::from_secs(30),
            gw.post("/v1/models/m:predict", BODY),
        )
        .await
        .expect("a request hung with every replica down");
        assert_eq!(reply.status, 503, "{}", reply.text());
        sent += 1;
        if reply.error().contains("no healthy endpoint") {
            break;
        }
        // 3 failures eject each of 3 endpoints, and a request makes at most 2 attempts.
        assert!(
            sent < 9,
            "still dialling after {sent} requests: {}",
            reply.error()
        );
    }
    let before: f64 = servers_labels(&gw).await.iter().sum();
    for _ in 0..50 {
        let reply = gw.post("/v1/models/m:predict", BODY).await;
        assert_eq!(reply.status, 503);
        let error = reply.error();
        assert!(
            error.starts_with(
                "UNAVAILABLE: backend `tfs` is unavailable: no healthy endpoint for model `m`"
            ),
            "{error}"
        );
        for s in &servers {
            assert!(
                error.contains(&format!("{} ejected after", s.addr)),
                "{error}"
            );
        }
    }
    let after: f64 = servers_labels(&gw).await.iter().sum();
    assert_eq!(after, before, "calls were sent to ejected endpoints");
    let ready = gw.get("/readyz").await;
    assert_eq!(ready.status, 503);
    let body = ready.json();
    assert_eq!(body["status"], "unready");
    assert!(
        body["models"]["m"]
            .as_str()
            .unwrap()
            .contains("no healthy endpoint for model `m`"),
        "{body}"
    );
    assert_eq!(gw.admin_get("/readyz", &[]).await.status, 503);
    servers[1].restart().await.unwrap();
    eventually(30, "readyz 200 once a replica is back", || async {
        gw.get("/readyz").await.status == 200
    })
    .await;
    assert_eq!(gw.post("/v1/models/m:predict", BODY).await.status, 200);
}

/// The gateway's total `infergate_endpoint_calls_total` over every endpoint.
async fn servers_labels(gw: &TestGateway) -> Vec<f64> {
    let text = gw.get("/metrics").await.text();
    text.lines()
        .filter(|l| l.starts_with("infergate_endpoint_calls_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

/// A replica answering UNAVAILABLE (TF Serving shutting down) is failed over from and ejected;
/// errors the server chose (INTERNAL) are answered as they are, never retried.
#[tokio::test]
async fn unavailable_fails_over_other_errors_do_not() {
    let servers = fleet(2).await;
    let gw = start(&servers, "", ROUTE).await;
    servers[0].backend().set_fault(Some(Fault::Status(
        tonic::Code::Unavailable,
        "shutting down".into(),
    )));
    for _ in 0..20 {
        let reply = gw.post("/v1/models/m:predict", BODY).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let unavailable = format!(
        "infergate_endpoint_errors_total{{{},code=\"UNAVAILABLE\"}}",
        endpoint_label(&servers[0])
    );
    let failed = metric(&gw, &unavailable).await.unwrap_or(0.0);
    assert!(failed >= 1.0, "no call reached the failing replica");
    let retried = metric(
        &gw,
        "infergate_backend_retries_total{backend=\"tfs\",outcome=\"retried\"}",
    )
    .await;
    assert_eq!(retried, Some(failed));
    servers[0].backend().set_fault(None);
    eventually(30, "the replica re-admitted", || async {
        metric(
            &gw,
            &format!(
                "infergate_endpoint_healthy{{{}}}",
                endpoint_label(&servers[0])
            ),
        )
        .await
            == Some(1.0)
    })
    .await;
    for s in &servers {
        s.backend().set_fault(Some(Fault::Predict(
            tonic::Code::Internal,
            "model failed".into(),
        )));
    }
    let calls_before: f64 = servers_labels(&gw).await.iter().sum();
    for _ in 0..10 {
        let reply = gw.post("/v1/models/m:predict", BODY).await;
        assert_eq!(reply.status, 502, "{}", reply.text());
        assert_eq!(reply.error(), "INTERNAL: model failed");
    }
    let calls_after: f64 = servers_labels(&gw).await.iter().sum();
    assert_eq!(
        calls_after - calls_before,
        10.0,
        "an INTERNAL answer was retried"
    );
    for s in &servers {
        assert_eq!(
            metric(
                &gw,
                &format!("infergate_endpoint_healthy{{{}}}", endpoint_label(s))
            )
            .await,
            Some(1.0),
            "an answering replica was ejected"
        );
    }
}

/// A replica whose model is still loading (its GetModelStatus says LOADING) gets no calls
/// for it; with the model loading everywhere, `/readyz` is 503 saying so and requests get
/// the server's own 404.
#[tokio::test]
async fn a_replica_without_the_model_gets_no_calls_for_it() {
    let servers = fleet(2).await;
    servers[0].backend().set_fault(Some(Fault::Loading));
    let gw = start(&servers, "", ROUTE).await;
    eventually(30, "the first checks ran", || async {
        metric(
            &gw,
            "infergate_backend_model_healthy_endpoints{backend=\"tfs\",model=\"m\"}",
        )
        .await
            == Some(1.0)
    })
    .await;
    for _ in 0..30 {
        let reply = gw.post("/v1/models/m:predict", BODY).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(gw.get("/readyz").await.status, 200);
    servers[1].backend().set_fault(Some(Fault::Loading));
    let gw = &gw;
    eventually(
        30,
        "readyz 503 while the model loads everywhere",
        || async move { gw.get("/readyz").await.status == 503 },
    )
    .await;
    let why = gw.get("/readyz").await.json()["models"]["m"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        why.contains("does not serve `m` (no version AVAILABLE: version 1 LOADING"),
        "{why}"
    );
    let reply = gw.post("/v1/models/m:predict", BODY).await;
    assert_eq!(reply.status, 404, "{}", reply.text());
}

/// A reply declaring a terabyte-sized output in a few bytes is a 502 naming the output and
/// the limit, not an allocation; the gateway goes on serving.
#[tokio::test]
async fn a_hostile_reply_is_refused_before_allocating() {
    let servers = fleet(1).await;
    let gw = start(&servers, "", ROUTE).await;
    let huge = TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: vec![Dim {
                size: 1 << 40,
                name: String::new(),
            }],
            unknown_rank: false,
        }),
        ..Default::default()
    };
    let reply = PredictResponse {
        model_spec: None,
        outputs: [("y".to_string(), huge)].into_iter().collect(),
    };
    servers[0].backend().set_fault(Some(Fault::Reply(reply)));
    let answer = gw.post("/v1/models/m:predict", BODY).await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    let error = answer.error();
    assert!(
        error.contains(
            "output `y`: shape [1099511627776] of DT_FLOAT declares 1099511627776 elements"
        ),
        "{error}"
    );
    assert!(error.contains("byte limit"), "{error}");
    let short = TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: vec![
                Dim {
                    size: 1,
                    name: String::new(),
                },
                Dim {
                    size: 2,
                    name: String::new(),
                },
            ],
            unknown_rank: false,
        }),
        tensor_content: vec![0; 3],
        ..Default::default()
    };
    servers[0]
        .backend()
        .set_fault(Some(Fault::Reply(PredictResponse {
            model_spec: None,
            outputs: [("y".to_string(), short)].into_iter().collect(),
        })));
    let answer = gw.post("/v1/models/m:predict", BODY).await;
    assert_eq!(answer.status, 502);
    assert!(
        answer
            .error()
            .contains("tensor_content holds 3 bytes but shape [1, 2] of DT_FLOAT needs 8"),
        "{}",
        answer.error()
    );
    servers[0].backend().set_fault(None);
    assert_eq!(gw.post("/v1/models/m:predict", BODY).await.status, 200);
}

/// `dns://localhost:<port>` resolves to the fake's address and serves; the endpoint is named
/// by the address it resolved to.
#[tokio::test]
async fn a_dns_endpoint_resolves_and_serves() {
    let servers = fleet(1).await;
    let port = servers[0].addr.port();
    let gw = gateway()
        .backend_config(
            "tfs",
            &format!("kind = \"tfserving\"\nendpoints = [\"dns://localhost:{port}\"]\nresolve_interval_ms = 200\n"),
        )
        .model("m", ROUTE)
        .start()
        .await
        .unwrap();
    for _ in 0..5 {
        let reply = gw.post("/v1/models/m:predict", BODY).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let calls =
        format!("infergate_endpoint_calls_total{{backend=\"tfs\",endpoint=\"127.0.0.1:{port}\"}}");
    assert!(metric(&gw, &calls).await.unwrap() >= 5.0);
}

/// Every per-endpoint series is exported: calls, errors by code, latency, health, calls in
/// flight, ejections, failed checks, and per model the healthy endpoints.
#[tokio::test]
async fn per_endpoint_metrics_are_exported() {
    let servers = fleet(1).await;
    let gw = start(&servers, "", ROUTE).await;
    assert_eq!(gw.post("/v1/models/m:predict", BODY).await.status, 200);
    servers[0].backend().set_fault(Some(Fault::Predict(
        tonic::Code::InvalidArgument,
        "bad input".into(),
    )));
    assert_eq!(gw.post("/v1/models/m:predict", BODY).await.status, 400);
    let labels = endpoint_label(&servers[0]);
    for series in [
        format!("infergate_endpoint_calls_total{{{labels}}}"),
        format!("infergate_endpoint_errors_total{{{labels},code=\"INVALID_ARGUMENT\"}}"),
        format!("infergate_endpoint_call_duration_seconds_count{{{labels}}}"),
        format!("infergate_endpoint_healthy{{{labels}}}"),
        format!("infergate_endpoint_outstanding_calls{{{labels}}}"),
        format!("infergate_endpoint_ejections_total{{{labels}}}"),
        format!("infergate_endpoint_check_failures_total{{{labels}}}"),
        "infergate_backend_model_healthy_endpoints{backend=\"tfs\",model=\"m\"}".to_string(),
    ] {
        assert!(metric(&gw, &series).await.is_some(), "{series} missing");
    }
    // The first REST request also asked for the signature (metadata): three calls.
    assert_eq!(
        metric(&gw, &format!("infergate_endpoint_calls_total{{{labels}}}")).await,
        Some(3.0)
    );
    assert_eq!(
        metric(
            &gw,
            &format!("infergate_endpoint_errors_total{{{labels},code=\"INVALID_ARGUMENT\"}}")
        )
        .await,
        Some(1.0)
    );
}

// --------------------------------------------------------------------------- TLS

struct Pki {
    ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Pki {
            ca_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf certificate for `names` (DNS names or IP addresses): (cert PEM, key PEM).
    fn leaf(&self, names: &[&str], expired: bool) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(ToString::to_string).collect::<Vec<_>>(),
        )
        .unwrap();
        params.use_authority_key_identifier_extension = true;
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn tls_fake(cert: (String, String), client_ca: Option<&Pki>) -> FakeTls {
    FakeTls {
        cert: cert.0.into_bytes(),
        key: cert.1.into_bytes(),
        client_ca: client_ca.map(|p| p.ca_pem.clone().into_bytes()),
    }
}

/// A gateway whose `tfs` backend is `endpoint` with a `[backends.tfs.tls]` table of `tls`
/// lines; PEM `files` are written beside gateway.toml first.
async fn tls_gateway(
    endpoint: &str,
    tls: &str,
    files: &[(&str, &str)],
) -> Result<TestGateway, infergate::StartError> {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = tls.to_string();
    for (name, pem) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        lines = lines.replace(&format!("@{name}"), &path.display().to_string());
    }
    let result = gateway()
        .backend_config(
            "tfs",
            &format!("kind = \"tfserving\"\nendpoints = [\"{endpoint}\"]\ntimeout_ms = 5000\n[backends.tfs.tls]\n{lines}"),
        )
        .model("m", ROUTE)
        .start()
        .await;
    // The files were read at start.
    drop(dir);
    result
}

/// TLS to the backend with the CA that signed its certificate: served.
#[tokio::test]
async fn tls_to_the_backend_with_its_ca() {
    let pki = Pki::new("test ca");
    let server = FakeBackend::new([doubler()])
        .start_tls(tls_fake(pki.leaf(&["localhost"], false), None))
        .await
        .unwrap();
    let gw = tls_gateway(
        &server.url(),
        "ca = \"@ca.pem\"\n",
        &[("ca.pem", &pki.ca_pem)],
    )
    .await
    .unwrap();
    let reply = gw.post("/v1/models/m:predict", BODY).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// A server certificate from another CA, an expired one, or one for another name is refused:
/// 503 naming the certificate problem, and the request is not sent.
#[tokio::test]
async fn tls_refuses_wrong_ca_expired_and_wrong_name() {
    let pki = Pki::new("test ca");
    let other = Pki::new("other ca");
    let cases = [
        (
            "wrong CA",
            other.leaf(&["localhost"], false),
            "UnknownIssuer",
        ),
        (
            "expired",
            pki.leaf(&["localhost"], true),
            "certificate expired",
        ),
        (
            "wrong name",
            pki.leaf(&["tfserving.internal"], false),
            "certificate not valid for name \"localhost\"",
        ),
    ];
    for (case, cert, reason) in cases {
        let server = FakeBackend::new([doubler()])
            .start_tls(tls_fake(cert, None))
            .await
            .unwrap();
        let gw = tls_gateway(
            &server.url(),
            "ca = \"@ca.pem\"\n",
            &[("ca.pem", &pki.ca_pem)],
        )
        .await
        .unwrap();
        let reply = gw.post("/v1/models/m:predict", BODY).await;
        assert_eq!(reply.status, 503, "{case}: {}", reply.text());
        assert!(reply.error().contains(reason), "{case}: {}", reply.error());
        assert!(
            server.backend().calls().is_empty(),
            "{case}: the call reached the server"
        );
    }
}

/// `server_name` checks the certificate (and sends SNI) for a name other than the endpoint's
/// host: a certificate for `tfserving.internal` served at 127.0.0.1.
#[tokio::test]
async fn tls_server_name_override() {
    let pki = Pki::new("test ca");
    let server = FakeBackend::new([doubler()])
        .start_tls(tls_fake(pki.leaf(&["tfserving.internal"], false), None))
        .await
        .unwrap();
    let endpoint = format!("https://127.0.0.1:{}", server.addr.port());
    let gw = tls_gateway(
        &endpoint,
        "ca = \"@ca.pem\"\nserver_name = \"tfserving.internal\"\n",
        &[("ca.pem", &pki.ca_pem)],
    )
    .await
    .unwrap();
    let reply = gw.post("/v1/models/m:predict", BODY).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// Mutual TLS: a server requiring client certificates refuses the gateway without one (503)
/// and serves it with one its CA signed.
#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let pki = Pki::new("test ca");
    let clients = Pki::new("client ca");
    let server = FakeBackend::new([doubler()])
        .start_tls(tls_fake(pki.leaf(&["localhost"], false), Some(&clients)))
        .await
        .unwrap();
    let without = tls_gateway(
        &server.url(),
        "ca = \"@ca.pem\"\n",
        &[("ca.pem", &pki.ca_pem)],
    )
    .await
    .unwrap();
    let reply = without.post("/v1/models/m:predict", BODY).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(
        reply.error().contains("CertificateRequired"),
        "{}",
        reply.error()
    );
    let (cert, key) = clients.leaf(&["infergate"], false);
    let with = tls_gateway(
        &server.url(),
        "ca = \"@ca.pem\"\ncert = \"@client.pem\"\nkey = \"@client.key\"\n",
        &[
            ("ca.pem", &pki.ca_pem),
            ("client.pem", &cert),
            ("client.key", &key),
        ],
    )
    .await
    .unwrap();
    let reply = with.post("/v1/models/m:predict", BODY).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// Unusable TLS files stop the gateway at start with an error naming the key and the file.
#[tokio::test]
async fn unusable_tls_files_are_start_errors() {
    let missing = tls_gateway("https://localhost:1", "ca = \"/nonexistent/ca.pem\"\n", &[])
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        missing.contains("backends.tfs.tls.ca: cannot read /nonexistent/ca.pem"),
        "{missing}"
    );
    let not_pem = tls_gateway(
        "https://localhost:1",
        "ca = \"@ca.pem\"\n",
        &[("ca.pem", "hello")],
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(
        not_pem.contains("backends.tfs.tls.ca:") && not_pem.contains("holds no PEM certificate"),
        "{not_pem}"
    );
    let pki = Pki::new("test ca");
    let (cert, _) = pki.leaf(&["x"], false);
    let bad_key = tls_gateway(
        "https://localhost:1",
        "ca = \"@ca.pem\"\ncert = \"@c.pem\"\nkey = \"@c.key\"\n",
        &[("ca.pem", &pki.ca_pem), ("c.pem", &cert), ("c.key", &cert)],
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(
        bad_key.contains("backends.tfs.tls.key:") && bad_key.contains("holds no PEM private key"),
        "{bad_key}"
    );
}
