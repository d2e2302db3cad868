//! The plugin contract through real plugins: a component built against contract 0.1.0 still
//! loads and answers beside 0.2.0 ones, and the native ops of 0.2.0, called by a guest,
//! answer, refuse a decompression bomb from its header, count against the memory cap and stop
//! at the call's deadline — each costing only its own request.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

/// A backend whose model `pixels` takes u8 `x` `[1, h, w, 1]` and keeps the last one it got,
/// beside the identity model `m` (f32 `x`).
async fn backend(seen: Arc<Mutex<Option<Tensor>>>) -> FakeServer {
    let pixels = FakeModel::new("pixels")
        .input("x", DType::U8, &[-1, -1, -1, 1])
        .compute(move |inputs| {
            *seen.lock().unwrap() = Some(inputs[0].1.clone());
            Ok(vec![(
                "y".into(),
                Tensor::from_parts(DType::F32, vec![1, 1], vec![0u8; 4].into(), vec![]).unwrap(),
            )])
        });
    FakeBackend::new([pixels, identity()])
        .start()
        .await
        .unwrap()
}

async fn gateway_for(backend: &FakeServer, models: &[(&str, &str, &str, &str)]) -> TestGateway {
    let mut gw = gateway().backend("tfs", &backend.url());
    for (route, model, fixture_name, extra) in models {
        let toml = format!(
            "backend = \"tfs\"\nmodel = \"{model}\"\nplugin = \"{}\"\n{extra}",
            wasm(fixture_name)
        );
        gw = gw.model(route, &toml).fixture_plugin(route, fixture_name);
    }
    gw.start().await.unwrap()
}

/// The names a component imports, as wasmtime reads them.
fn imports(path: &std::path::Path) -> Vec<String> {
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::from_file(&engine, path).unwrap();
    component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_string())
        .collect()
}

#[tokio::test]
async fn a_plugin_built_against_contract_0_1_0_loads_and_answers_beside_0_2_0() {
    // The fixture really is a 0.1.0 component, and misbehave a 0.2.0 one using the ops.
    let old = imports(&fixture("contract-v0-1"));
    assert!(
        old.iter().any(|n| n == "infergate:plugin/host@0.1.0"),
        "{old:?}"
    );
    assert!(!old.iter().any(|n| n.contains("@0.2.0")), "{old:?}");
    let new = imports(&fixture("misbehave"));
    assert!(
        new.iter().any(|n| n == "infergate:plugin/ops@0.2.0"),
        "{new:?}"
    );

    let b = backend(Arc::default()).await;
    let gw = gateway_for(
        &b,
        &[
            ("old", "m", "contract-v0-1", ""),
            ("new", "m", "misbehave", ""),
        ],
    )
    .await;
    let reply = gw.post("/v1/models/old:predict", "AB").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "contract 0.1.0 v0.1: y Dtype::F32 [1, 2]\n");
    let reply = gw.post("/v1/models/old:predict", "").await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(
        reply.error().contains("contract-v0-1: send some bytes"),
        "{}",
        reply.error()
    );
    assert_eq!(gw.post("/v1/models/new:predict", "ok").await.status, 200);
}

#[tokio::test]
async fn a_guest_decodes_through_the_native_op_and_gets_pillows_pixels() {
    let seen = Arc::new(Mutex::new(None));
    let b = backend(seen.clone()).await;
    let gw = gateway_for(&b, &[("img", "pixels", "misbehave", "")]).await;
    let png = example_image("digit-7-0.png");
    let reply = gw.post("/v1/models/img:predict", png.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let got = seen.lock().unwrap().take().expect("the model was called");
    // An 8-bit PNG decodes to its stored samples exactly (the golden tests cover the
    // conversions); the image crate reads the same samples.
    let want = image::load_from_memory(&png).unwrap().to_luma8();
    assert_eq!(
        got.shape(),
        [1, i64::from(want.height()), i64::from(want.width()), 1]
    );
    assert_eq!(got.data().as_ref(), want.as_raw().as_slice());
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_from_its_header_through_a_guest() {
    let b = backend(Arc::default()).await;
    let gw = gateway_for(
        &b,
        &[("img", "pixels", "misbehave", "[limits]\nmemory_mb = 32\n")],
    )
    .await;
    let bomb = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/ops/bomb-30000.png"
    ))
    .unwrap();
    let reply = gw.post("/v1/models/img:predict", bomb).await;
    // The plugin maps the op's refusal of client bytes to 400 (not the 500 of a memory cap).
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(
        reply.error().contains("30000x30000") && reply.error().contains("decode limits"),
        "{}",
        reply.error()
    );
    let png = example_image("digit-7-0.png");
    assert_eq!(gw.post("/v1/models/img:predict", png).await.status, 200);
}

#[tokio::test]
async fn an_op_result_over_the_memory_cap_is_refused_before_it_is_allocated() {
    let b = backend(Arc::default()).await;
    let gw = gateway_for(&b, &[("p", "m", "misbehave", "[limits]\nmemory_mb = 64\n")]).await;
    let reply = gw.post("/v1/models/p:predict", "op-huge").await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(
        reply
            .error()
            .contains("the resized image needs 268435456 bytes")
            && reply.error().contains("limits.memory_mb"),
        "{}",
        reply.error()
    );
    assert_eq!(gw.post("/v1/models/p:predict", "ok").await.status, 200);
}

#[tokio::test]
async fn an_op_running_past_the_deadline_fails_the_call_with_504() {
    let b = backend(Arc::default()).await;
    let gw = gateway_for(
        &b,
        &[("p", "m", "misbehave", "[limits]\ntimeout_ms = 200\n")],
    )
    .await;
    let started = Instant::now();
    let reply = gw.post("/v1/models/p:predict", "op-loop").await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(reply.error().contains("200ms"), "{}", reply.error());
    // One lanczos resize row is microseconds: the op noticed the deadline promptly.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(gw.post("/v1/models/p:predict", "ok").await.status, 200);
}

#[tokio::test]
async fn a_bad_op_argument_is_the_plugins_error_naming_it() {
    let b = backend(Arc::default()).await;
    let gw = gateway_for(&b, &[("p", "m", "misbehave", "")]).await;
    let reply = gw.post("/v1/models/p:predict", "op-invalid").await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(
        reply.error().contains(
            "left, top, width, height: the window 3x3 at (2, 2) is not inside the 4x4 image"
        ),
        "{}",
        reply.error()
    );
}
