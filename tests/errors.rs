//! Every row of the error table, each through the real HTTP path: the status, a JSON
//! `{"error": …}` body whose message says what to fix, and a gateway that keeps serving.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

async fn doubler_gateway() -> (FakeServer, TestGateway) {
    let backend = FakeBackend::new([doubler()]).start().await.unwrap();
    let gw = gateway()
        .backend("tfs", &backend.url())
        .model("m", "backend = \"tfs\"\n")
        .start()
        .await
        .unwrap();
    (backend, gw)
}

async fn plugin_gateway(fixture_name: &str, extra: &str) -> (FakeServer, TestGateway) {
    let backend = FakeBackend::new([identity()]).start().await.unwrap();
    let toml = format!(
        "backend = \"tfs\"\nmodel = \"m\"\nplugin = \"{}\"\n{extra}",
        wasm(fixture_name)
    );
    let gw = gateway()
        .backend("tfs", &backend.url())
        .model("p", &toml)
        .fixture_plugin("p", fixture_name)
        .start()
        .await
        .unwrap();
    (backend, gw)
}

/// After any error, a good request still succeeds: nothing was poisoned.
async fn still_serves(gw: &TestGateway) {
    let reply = gw
        .post("/v1/models/m:predict", r#"{"instances": [[1, 2]]}"#)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// Unknown model → 404 naming it.
#[tokio::test]
async fn unknown_model_is_404() {
    let (_b, gw) = doubler_gateway().await;
    let reply = gw.post("/v1/models/nope:predict", "{}").await;
    assert_eq!(reply.status, 404);
    assert!(reply.error().contains("`nope`"), "{}", reply.error());
    assert_eq!(reply.headers["content-type"], "application/json");
}

/// Unknown version → the backend's NOT_FOUND → 404.
#[tokio::test]
async fn unknown_version_is_404() {
    let (_b, gw) = doubler_gateway().await;
    let reply = gw
        .post(
            "/v1/models/m/versions/9:predict",
            r#"{"instances": [[1, 2]]}"#,
        )
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    assert!(reply.error().contains("NOT_FOUND"), "{}", reply.error());
    still_serves(&gw).await;
}

/// Unknown paths are 404, wrong methods 405, a non-numeric version 400.
#[tokio::test]
async fn bad_urls() {
    let (_b, gw) = doubler_gateway().await;
    assert_eq!(gw.get("/v2/health").await.status, 404);
    assert_eq!(gw.get("/v1/models/m:predict").await.status, 405);
    assert_eq!(
        gw.post("/v1/models/m/versions/x:predict", "{}")
            .await
            .status,
        400
    );
}

/// Malformed JSON → 400 that says it is JSON that failed.
#[tokio::test]
async fn malformed_json_is_400() {
    let (_b, gw) = doubler_gateway().await;
    let reply = gw
        .post("/v1/models/m:predict", "{\"instances\": [[1, 2]")
        .await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.error().to_lowercase().contains("json"),
        "{}",
        reply.error()
    );
    still_serves(&gw).await;
}

/// A shape that doesn't fit the signature → 400 naming the input and both shapes.
#[tokio::test]
async fn wrong_shape_is_400() {
    let (_b, gw) = doubler_gateway().await;
    let reply = gw
        .post("/v1/models/m:predict", r#"{"instances": [[1, 2, 3]]}"#)
        .await;
    assert_eq!(reply.status, 400);
    assert!(reply.error().contains("[1, 3]"), "{}", reply.error());
}

/// A value that can't be the signature's dtype → 400.
#[tokio::test]
async fn wrong_dtype_is_400() {
    let (_b, gw) = doubler_gateway().await;
    let reply = gw
        .post("/v1/models/m:predict", r#"{"instances": [["a", "b"]]}"#)
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
}

/// The backend's INVALID_ARGUMENT (here: a plugin sends a dtype the model rejects) → 400
/// carrying the backend's message.
#[tokio::test]
async fn backend_invalid_argument_is_400() {
    let (_b, gw) = plugin_gateway("echo", "").await;
    let body = json!({ "inputs": { "x": { "dtype": "i64", "shape": [1, 2], "values": [1, 2] } } });
    // The identity model's `x` is f32; an i64 tensor is the backend's INVALID_ARGUMENT.
    let reply = gw.post("/v1/models/p:predict", body.to_string()).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(
        reply.error().starts_with("INVALID_ARGUMENT"),
        "{}",
        reply.error()
    );
}

/// A body over `server.max_body_bytes` → 413, whether or not Content-Length announced it.
#[tokio::test]
async fn oversized_body_is_413() {
    let backend = FakeBackend::new([doubler()]).start().await.unwrap();
    let gw = gateway()
        .backend("tfs", &backend.url())
        .model("m", "backend = \"tfs\"\n")
        .max_body_bytes(1024)
        .start()
        .await
        .unwrap();
    let reply = gw.post("/v1/models/m:predict", vec![b' '; 4096]).await;
    assert_eq!(reply.status, 413);
    assert!(reply.error().contains("1024"), "{}", reply.error());
    assert_eq!(
        gw.post("/v1/models/m:predict", r#"{"instances": [[1, 2]]}"#)
            .await
            .status,
        200
    );
}

/// A plugin's own verdicts map to 400, 422 and 500 with the plugin's message.
#[tokio::test]
async fn plugin_rejections() {
    let (_b, gw) = plugin_gateway("misbehave", "").await;
    for (body, status) in [
        ("bad-request", 400),
        ("unprocessable", 422),
        ("internal", 500),
    ] {
        let reply = gw.post("/v1/models/p:predict", body).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text());
        assert!(reply.error().contains(body), "{}", reply.error());
    }
    assert_eq!(gw.post("/v1/models/p:predict", "ok").await.status, 200);
}

/// A trapping plugin costs its request a 500 that says it trapped (with the panic message);
/// the next request is fine.
#[tokio::test]
async fn plugin_trap_is_500() {
    let (_b, gw) = plugin_gateway("misbehave", "").await;
    let reply = gw.post("/v1/models/p:predict", "trap").await;
    assert_eq!(reply.status, 500);
    assert!(reply.error().contains("trapped"), "{}", reply.error());
    assert!(
        reply.error().contains("trap requested"),
        "{}",
        reply.error()
    );
    let reply = gw.post("/v1/models/p:predict", "post-trap").await;
    assert_eq!(reply.status, 500);
    assert_eq!(gw.post("/v1/models/p:predict", "ok").await.status, 200);
}

/// A plugin past its deadline → 504; the gateway's worker is not held hostage.
#[tokio::test]
async fn plugin_deadline_is_504() {
    let (_b, gw) = plugin_gateway("misbehave", "[limits]\ntimeout_ms = 100\n").await;
    let started = std::time::Instant::now();
    let reply = gw.post("/v1/models/p:predict", "loop").await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(reply.error().contains("100ms"), "{}", reply.error());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(gw.post("/v1/models/p:predict", "ok").await.status, 200);
}

/// A plugin that grows memory past `limits.memory_mb` → 500 that names the limit.
#[tokio::test]
async fn plugin_memory_cap_is_500() {
    let (_b, gw) = plugin_gateway("misbehave", "[limits]\nmemory_mb = 32\n").await;
    let reply = gw.post("/v1/models/p:predict", "grow").await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(
        reply.error().contains("memory limit of 32 MiB"),
        "{}",
        reply.error()
    );
    assert_eq!(gw.post("/v1/models/p:predict", "ok").await.status, 200);
}

/// A post plugin answering an impossible HTTP status → 500 saying so.
#[tokio::test]
async fn plugin_invalid_status_is_500() {
    let (_b, gw) = plugin_gateway("misbehave", "").await;
    let reply = gw.post("/v1/models/p:predict", "post-bad-status").await;
    assert_eq!(reply.status, 500);
    assert!(reply.error().contains("1000"), "{}", reply.error());
}

/// A post plugin returning a framing or hop-by-hop header → 500 naming the header, for each
/// of them; the model serves again afterwards.
#[tokio::test]
async fn plugin_framing_headers_are_500() {
    let (_b, gw) = plugin_gateway("misbehave", "").await;
    for (body, header) in [
        ("post-header:content-length:1", "content-length"),
        ("post-header:content-length:1000", "content-length"),
        ("post-header:content-length:x", "content-length"),
        (
            "post-header:x-ok:1,content-length:2,content-length:2",
            "content-length",
        ),
        ("post-header:Content-Length:2", "Content-Length"),
        ("post-header:transfer-encoding:chunked", "transfer-encoding"),
        ("post-header:connection:close", "connection"),
        ("post-header:keep-alive:timeout=1", "keep-alive"),
        ("post-header:upgrade:h2c", "upgrade"),
        ("post-header:te:trailers", "te"),
        ("post-header:trailer:x-sum", "trailer"),
        ("post-header:proxy-connection:close", "proxy-connection"),
        ("post-header:Proxy-Authenticate:Basic", "Proxy-Authenticate"),
    ] {
        let reply = gw.post("/v1/models/p:predict", body).await;
        assert_eq!(reply.status, 500, "{body}: {}", reply.text());
        assert!(
            reply
                .error()
                .contains(&format!("header `{header}` is the gateway's to set")),
            "{body}: {}",
            reply.error()
        );
    }
    // Any other header passes through.
    let reply = gw
        .post("/v1/models/p:predict", "post-header:x-model-note:fine")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.headers["x-model-note"], "fine");
}

/// A plugin's `content-length: 1` can't desynchronise a keep-alive connection: of two
/// requests pipelined on one connection, the first gets a well-framed 500 and the second its
/// 200, on the same connection.
#[tokio::test]
async fn a_plugins_content_length_cannot_desynchronise_a_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_b, gw) = plugin_gateway("misbehave", "").await;
    let addr = gw.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = |body: &str, last: bool| {
        format!(
            "POST /v1/models/p:predict HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n{}\r\n{body}",
            body.len(),
            if last { "connection: close\r\n" } else { "" }
        )
    };
    let both = request("post-header:content-length:1", false) + &request("ok", true);
    stream.write_all(both.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // A desynchronised connection would hang rather than close: bound the read.
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .expect("the connection closed after the second answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let (first, rest) = split_response(&answer);
    assert!(first.starts_with("HTTP/1.1 500"), "{answer}");
    assert!(
        first.contains("header `content-length` is the gateway's to set"),
        "{answer}"
    );
    let (second, rest) = split_response(rest);
    assert!(second.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(second.ends_with("\r\n\r\nok"), "{answer}");
    assert_eq!(rest, "", "nothing after the two answers: {answer}");
}

/// The first response of `raw` (head and a `content-length`-framed body), and what follows.
fn split_response(raw: &str) -> (&str, &str) {
    let head_end = raw.find("\r\n\r\n").expect("a response head") + 4;
    let length: usize = raw[..head_end]
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .expect("a content-length-framed response");
    raw.split_at(head_end + length)
}

/// A plugin missing an export the model needs is refused at load, naming file and export.
#[tokio::test]
async fn plugin_missing_export_refuses_to_load() {
    let backend = FakeBackend::new([doubler()]).start().await.unwrap();
    let toml = format!("backend = \"tfs\"\nplugin = \"{}\"\n", wasm("pre-only"));
    let err = gateway()
        .backend("tfs", &backend.url())
        .model("p", &toml)
        .fixture_plugin("p", "pre-only")
        .start()
        .await
        .err()
        .expect("must fail");
    let message = err.to_string();
    assert!(
        message.contains("pre-only.wasm") && message.contains("`postprocess`"),
        "{message}"
    );
}

/// Files that aren't components are refused at load with a reason.
#[tokio::test]
async fn non_components_refuse_to_load() {
    for (name, reason) in [
        ("garbage", "not a WebAssembly file"),
        ("core-module", "component"),
    ] {
        let toml = format!("backend = \"tfs\"\npre = \"{}\"\n", wasm(name));
        let err = gateway()
            .backend("tfs", "http://127.0.0.1:1")
            .model("p", &toml)
            .fixture_plugin("p", name)
            .start()
            .await
            .err()
            .expect("must fail");
        assert!(err.to_string().contains(reason), "{name}: {err}");
    }
}

/// `fixture` with a custom section of `mib` MiB appended: a valid component of that size
/// (a CPython component with bundled packages runs to tens of MB).
fn padded_component(fixture_name: &str, mib: usize) -> Vec<u8> {
    let mut bytes = std::fs::read(fixture(fixture_name)).unwrap();
    let name = b"padding";
    let payload = mib << 20;
    let mut size = name.len() + 1 + payload; // name length (1 byte), name, payload
    bytes.push(0); // custom section id
    loop {
        // LEB128 section size
        let low = (size & 0x7f) as u8;
        size >>= 7;
        if size == 0 {
            bytes.push(low);
            break;
        }
        bytes.push(low | 0x80);
    }
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.resize(bytes.len() + payload, 0xa5);
    bytes
}

/// A 60 MB component loads and serves under the default `plugins.max_plugin_mb` (128); a
/// limit below its size refuses it at load with a message naming the setting.
#[tokio::test]
async fn big_plugin_loads_within_max_plugin_mb_and_is_refused_past_it() {
    let big = padded_component("echo", 60);
    assert!(big.len() > 60 << 20);
    let backend = FakeBackend::new([identity()]).start().await.unwrap();
    let toml = "backend = \"tfs\"\nmodel = \"m\"\nplugin = \"big.wasm\"\n";
    let gw = gateway()
        .backend("tfs", &backend.url())
        .model("p", toml)
        .file("p", "big.wasm", big.clone())
        .start()
        .await
        .unwrap();
    let body = json!({ "inputs": { "x": { "dtype": "f32", "shape": [1, 2], "values": [1, 2] } } });
    let reply = gw.post("/v1/models/p:predict", body.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    let err = gateway()
        .backend("tfs", &backend.url())
        .plugins_config("max_plugin_mb = 32")
        .model("p", toml)
        .file("p", "big.wasm", big)
        .start()
        .await
        .err()
        .expect("a 60 MiB plugin over a 32 MiB limit must not load");
    let text = err.to_string();
    assert!(
        text.contains("big.wasm")
            && text.contains("is 60.")
            && text.contains("MiB, over the 32 MiB a plugin may be")
            && text.contains("plugins.max_plugin_mb"),
        "{text}"
    );
}

/// A backend that is down → 503; the gateway keeps answering.
#[tokio::test]
async fn backend_down_is_503() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let toml = format!("backend = \"tfs\"\nplugin = \"{}\"\n", wasm("misbehave"));
    let gw = gateway()
        .backend("tfs", &format!("http://127.0.0.1:{port}"))
        .model("p", &toml)
        .fixture_plugin("p", "misbehave")
        .start()
        .await
        .unwrap();
    for _ in 0..2 {
        let reply = gw.post("/v1/models/p:predict", "ok").await;
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert!(reply.error().contains("unavailable"), "{}", reply.error());
    }
}

/// A backend slower than its timeout → 504.
#[tokio::test]
async fn backend_deadline_is_504() {
    let backend = FakeBackend::new([doubler()])
        .cost(Duration::from_millis(500), Duration::ZERO)
        .start()
        .await
        .unwrap();
    let gw = gateway()
        .backend_with_timeout("tfs", &backend.url(), 100)
        .model("m", "backend = \"tfs\"\n")
        .start()
        .await
        .unwrap();
    // Metadata is fetched (and cached) first; then the slow predict times out.
    let reply = gw
        .post("/v1/models/m:predict", r#"{"instances": [[1, 2]]}"#)
        .await;
    assert_eq!(reply.status, 504, "{}", reply.text());
}

/// Any other backend failure (here INTERNAL) → 502 with the backend's message.
#[tokio::test]
async fn backend_internal_is_502() {
    let broken = FakeModel::new("m")
        .input("x", DType::F32, &[-1, 2])
        .compute(|_| Err(tonic::Status::internal("the model exploded")));
    let backend = FakeBackend::new([broken]).start().await.unwrap();
    let gw = gateway()
        .backend("tfs", &backend.url())
        .model("m", "backend = \"tfs\"\n")
        .start()
        .await
        .unwrap();
    let reply = gw
        .post("/v1/models/m:predict", r#"{"instances": [[1, 2]]}"#)
        .await;
    assert_eq!(reply.status, 502);
    assert!(
        reply.error().contains("the model exploded"),
        "{}",
        reply.error()
    );
}

/// Output bounds, obeyed and violated: a 256 MiB tensor from a pre plugin and a 64 MiB body
/// from a post plugin are refused (500 naming the limit); small outputs pass.
#[tokio::test]
async fn plugin_output_limits() {
    let (_b, gw) = plugin_gateway(
        "misbehave",
        // A generous deadline: writing 256 MiB can take over the default second on a loaded
        // machine, and this test is about the output bound, not the deadline.
        "[limits]\nmemory_mb = 1024\nmax_output_mb = 16\ntimeout_ms = 20000\n",
    )
    .await;
    for body in ["huge-tensor", "post-huge-body"] {
        let reply = gw.post("/v1/models/p:predict", body).await;
        assert_eq!(reply.status, 500, "{body}: {}", reply.text());
        assert!(
            reply.error().contains("16 MiB output limit"),
            "{}",
            reply.error()
        );
    }
    assert_eq!(gw.post("/v1/models/p:predict", "ok").await.status, 200);
}

/// Plugin log lines don't break anything, and a plugin's stdout/stderr is captured (bounded)
/// rather than written to the gateway's own streams.
#[tokio::test]
async fn plugin_logging_is_harmless() {
    let (_b, gw) = plugin_gateway("misbehave", "").await;
    assert_eq!(gw.post("/v1/models/p:predict", "log").await.status, 200);
}

/// A plugin that keeps trapping fails its own model only; another model keeps answering.
#[tokio::test]
async fn a_failing_plugin_affects_only_its_model() {
    let backend = FakeBackend::new([identity()]).start().await.unwrap();
    let bad = format!(
        "backend = \"tfs\"\nmodel = \"m\"\nplugin = \"{}\"\n",
        wasm("misbehave")
    );
    let good = format!(
        "backend = \"tfs\"\nmodel = \"m\"\npre = \"{}\"\n",
        wasm("pre-only")
    );
    let gw = gateway()
        .backend("tfs", &backend.url())
        .model("bad", &bad)
        .fixture_plugin("bad", "misbehave")
        .model("good", &good)
        .fixture_plugin("good", "pre-only")
        .start()
        .await
        .unwrap();
    for _ in 0..20 {
        assert_eq!(gw.post("/v1/models/bad:predict", "trap").await.status, 500);
        assert_eq!(gw.post("/v1/models/good:predict", "").await.status, 200);
    }
}
