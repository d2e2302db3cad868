//! Hot reload of `plugins/` against a live gateway: folders added, changed and removed;
//! broken files that keep the last good version serving; editor saves, Kubernetes symlink
//! swaps and truncated writes; polling and manual modes; and traffic through 50 reloads.
//!
//! Every model here uses a pre plugin only and the identity fake, so the answer shows which
//! plugin served it: `pre-only` → `{"outputs": [[2.0]]}`, `misbehave` (body `ok`) → `[[1.0]]`.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use support::*;

const MODEL: &str = "backend = \"tfs\"\nmodel = \"m\"\npre = \"pre.wasm\"\n";
const FAST: &str = "debounce_ms = 50";

/// Writes `bytes` to `path` the safe way: a temp file in the same folder, then a rename.
fn put(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Creates a model folder whose pre plugin is a copy of `fixture`.
fn add_model(plugins: &Path, name: &str, fixture_name: &str) {
    let dir = plugins.join(name);
    let staging = plugins.join(format!(".{name}-staging"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(fixture(fixture_name), staging.join("pre.wasm")).unwrap();
    std::fs::write(staging.join("model.toml"), MODEL).unwrap();
    std::fs::rename(&staging, &dir).unwrap();
}

/// The value the model answers with, or the HTTP status if it fails.
async fn answer(gw: &TestGateway, model: &str) -> Result<f64, u16> {
    let reply = gw.post(&format!("/v1/models/{model}:predict"), "ok").await;
    if reply.status != 200 {
        return Err(reply.status.as_u16());
    }
    Ok(reply.json()["outputs"][0][0].as_f64().unwrap())
}

async fn start(models: &[(&str, &str)], plugins_config: &str) -> (FakeServer, TestGateway) {
    let backend = FakeBackend::new([identity()]).start().await.unwrap();
    let gw = gateway()
        .backend("tfs", &backend.url())
        .plugins_config(plugins_config)
        .start()
        .await
        .unwrap();
    for (name, fixture_name) in models {
        add_model(&gw.plugins_dir(), name, fixture_name);
    }
    if !models.is_empty() {
        gw.admin_post("/admin/reload").await;
    }
    (backend, gw)
}

/// A new folder becomes a route, a changed plugin is swapped in, a removed folder is gone.
#[tokio::test]
async fn add_change_remove() {
    let (_b, gw) = start(&[], FAST).await;
    assert_eq!(answer(&gw, "a").await, Err(404));
    add_model(&gw.plugins_dir(), "a", "pre-only");
    eventually(10, "a served", || async {
        answer(&gw, "a").await == Ok(2.0)
    })
    .await;
    put(
        &gw.plugins_dir().join("a/pre.wasm"),
        &std::fs::read(fixture("misbehave")).unwrap(),
    );
    eventually(10, "a reloaded", || async {
        answer(&gw, "a").await == Ok(1.0)
    })
    .await;
    std::fs::remove_dir_all(gw.plugins_dir().join("a")).unwrap();
    eventually(10, "a removed", || async {
        answer(&gw, "a").await == Err(404)
    })
    .await;
}

/// An invalid plugin keeps the last good version serving and shows the file and reason in
/// the model's status; fixing it clears the error.
#[tokio::test]
async fn invalid_plugin_keeps_last_good() {
    let (_b, gw) = start(&[("a", "pre-only")], FAST).await;
    assert_eq!(answer(&gw, "a").await, Ok(2.0));
    put(&gw.plugins_dir().join("a/pre.wasm"), b"not wasm at all");
    eventually(10, "failure recorded", || async {
        gw.get("/v1/models/a").await.json()["infergate"]["last_reload_error"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("pre.wasm") && e.contains("not a WebAssembly file"))
    })
    .await;
    assert_eq!(
        answer(&gw, "a").await,
        Ok(2.0),
        "the last good version still serves"
    );
    put(
        &gw.plugins_dir().join("a/pre.wasm"),
        &std::fs::read(fixture("misbehave")).unwrap(),
    );
    eventually(10, "fixed", || async { answer(&gw, "a").await == Ok(1.0) }).await;
    assert!(gw.get("/v1/models/a").await.json()["infergate"]["last_reload_error"].is_null());
}

/// A plugin with the wrong contract and an invalid model.toml are refused the same way.
#[tokio::test]
async fn wrong_contract_and_bad_config_keep_last_good() {
    let (_b, gw) = start(&[("a", "pre-only")], FAST).await;
    put(
        &gw.plugins_dir().join("a/pre.wasm"),
        &std::fs::read(fixture("post-only")).unwrap(),
    );
    eventually(10, "contract failure", || async {
        let list = gw.get("/v1/models").await.json();
        list["failures"]["a"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("`preprocess`"))
    })
    .await;
    assert_eq!(answer(&gw, "a").await, Ok(2.0));
    put(
        &gw.plugins_dir().join("a/model.toml"),
        format!("{MODEL}batch_size = 4\n").as_bytes(),
    );
    eventually(10, "config failure", || async {
        let list = gw.get("/v1/models").await.json();
        list["failures"]["a"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("batch_size") && e.contains("line 4"))
    })
    .await;
    assert_eq!(answer(&gw, "a").await, Ok(2.0));
}

/// A folder that has never loaded answers 404 with the reason.
#[tokio::test]
async fn never_loaded_folder_says_why() {
    let (_b, gw) = start(&[], FAST).await;
    let dir = gw.plugins_dir().join("broken");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("model.toml"), "backend = \"nope\"\n").unwrap();
    eventually(10, "failure visible", || async {
        let reply = gw.post("/v1/models/broken:predict", "ok").await;
        reply.status == 404 && reply.error().contains("`nope` is not defined")
    })
    .await;
}

/// Kubernetes ConfigMap volumes: files are symlinks into `..data`, which is swapped
/// atomically to a new timestamped folder.
#[tokio::test]
async fn configmap_symlink_swap() {
    let (_b, gw) = start(&[], FAST).await;
    let dir = gw.plugins_dir().join("k");
    let v1 = dir.join("..2026_11_25_1");
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::copy(fixture("pre-only"), v1.join("pre.wasm")).unwrap();
    std::fs::write(v1.join("model.toml"), MODEL).unwrap();
    std::os::unix::fs::symlink("..2026_11_25_1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/pre.wasm", dir.join("pre.wasm")).unwrap();
    std::os::unix::fs::symlink("..data/model.toml", dir.join("model.toml")).unwrap();
    eventually(10, "k served", || async {
        answer(&gw, "k").await == Ok(2.0)
    })
    .await;
    let v2 = dir.join("..2026_11_25_2");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::copy(fixture("misbehave"), v2.join("pre.wasm")).unwrap();
    std::fs::write(v2.join("model.toml"), MODEL).unwrap();
    std::os::unix::fs::symlink("..2026_11_25_2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();
    eventually(10, "k swapped", || async {
        answer(&gw, "k").await == Ok(1.0)
    })
    .await;
}

/// A file written in two halves with a pause between them: the half-written file fails to
/// load (the old version keeps serving), the completed file is picked up.
#[tokio::test]
async fn truncated_write_then_completion() {
    let (_b, gw) = start(&[("a", "pre-only")], FAST).await;
    let full = std::fs::read(fixture("misbehave")).unwrap();
    let path = gw.plugins_dir().join("a/pre.wasm");
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        answer(&gw, "a").await,
        Ok(2.0),
        "a truncated file is never swapped in"
    );
    std::fs::write(&path, &full).unwrap();
    eventually(10, "completed file loaded", || async {
        answer(&gw, "a").await == Ok(1.0)
    })
    .await;
}

/// `watch = "poll"` notices changes without filesystem events.
#[tokio::test]
async fn polling_mode() {
    let (_b, gw) = start(
        &[("a", "pre-only")],
        "watch = \"poll\"\npoll_interval_ms = 100\ndebounce_ms = 10",
    )
    .await;
    put(
        &gw.plugins_dir().join("a/pre.wasm"),
        &std::fs::read(fixture("misbehave")).unwrap(),
    );
    eventually(10, "polled reload", || async {
        answer(&gw, "a").await == Ok(1.0)
    })
    .await;
}

/// With `watch = "off"` nothing changes until `POST /admin/reload`, which reports what it did.
#[tokio::test]
async fn manual_reload() {
    let (_b, gw) = start(&[("a", "pre-only")], "watch = \"off\"").await;
    put(
        &gw.plugins_dir().join("a/pre.wasm"),
        &std::fs::read(fixture("misbehave")).unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(answer(&gw, "a").await, Ok(2.0));
    let report = gw.admin_post("/admin/reload").await.json();
    assert_eq!(report["reloaded"], json!(["a"]));
    assert_eq!(answer(&gw, "a").await, Ok(1.0));
    let again = gw.admin_post("/admin/reload").await.json();
    assert_eq!(
        again["reloaded"],
        json!([]),
        "an unchanged folder is not rebuilt"
    );
    // A folder that breaks is `failed` in the rescan that finds it, and stays `failing` in
    // every later report until it is fixed, while its last good version serves.
    put(&gw.plugins_dir().join("a/pre.wasm"), b"not wasm");
    let broken = gw.admin_post("/admin/reload").await.json();
    assert!(broken["failed"]["a"].is_string(), "{broken}");
    assert!(broken["failing"]["a"].is_string(), "{broken}");
    let still = gw.admin_post("/admin/reload").await.json();
    assert_eq!(still["failed"], json!({}), "nothing new failed: {still}");
    assert!(
        still["failing"]["a"]
            .as_str()
            .is_some_and(|e| e.contains("not a WebAssembly file")),
        "{still}"
    );
    assert_eq!(
        answer(&gw, "a").await,
        Ok(1.0),
        "the last good version serves"
    );
}

/// Concurrent clients through 50 reloads alternating two plugin versions: no request fails,
/// and every answer comes from one of the two versions.
#[tokio::test]
async fn traffic_through_fifty_reloads() {
    let (_b, gw) = start(&[("a", "pre-only")], "watch = \"off\"").await;
    let gw = Arc::new(gw);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (gw, stop, served, seen) = (gw.clone(), stop.clone(), served.clone(), seen.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let value = answer(&gw, "a")
                        .await
                        .unwrap_or_else(|status| panic!("request failed: {status}"));
                    assert!(value == 1.0 || value == 2.0, "unexpected answer {value}");
                    seen.lock().unwrap().insert(value as i64);
                    served.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let versions = [
        std::fs::read(fixture("misbehave")).unwrap(),
        std::fs::read(fixture("pre-only")).unwrap(),
    ];
    for i in 0..50 {
        put(&gw.plugins_dir().join("a/pre.wasm"), &versions[i % 2]);
        let report = gw.admin_post("/admin/reload").await.json();
        assert_eq!(report["reloaded"], json!(["a"]), "reload {i}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert!(served.load(Ordering::Relaxed) > 50);
    assert_eq!(seen.lock().unwrap().len(), 2, "both versions answered");
}

/// A declared warm-up request runs through the new version before it serves: a version whose
/// warm-up fails is not swapped in, and says why.
#[tokio::test]
async fn warmup_gates_the_swap() {
    let (_b, gw) = start(&[("a", "pre-only")], FAST).await;
    let dir = gw.plugins_dir().join("a");
    std::fs::write(dir.join("warmup.txt"), "trap").unwrap();
    std::fs::copy(fixture("misbehave"), dir.join("next.wasm")).unwrap();
    // misbehave traps on the body `trap`: this version must never serve.
    put(
        &dir.join("model.toml"),
        b"backend = \"tfs\"\nmodel = \"m\"\npre = \"next.wasm\"\nwarmup = \"warmup.txt\"\n",
    );
    eventually(10, "warm-up failure", || async {
        let list = gw.get("/v1/models").await.json();
        list["failures"]["a"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("warmup") && e.contains("500"))
    })
    .await;
    assert_eq!(
        answer(&gw, "a").await,
        Ok(2.0),
        "the old version still serves"
    );
    put(&dir.join("warmup.txt"), b"ok");
    eventually(10, "warmed-up version serves", || async {
        answer(&gw, "a").await == Ok(1.0)
    })
    .await;
}
