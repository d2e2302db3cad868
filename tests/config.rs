//! Invalid configuration files, each kept beside the exact error it must produce
//! (`tests/config/{gateway,model}/<case>.toml` → `<case>.err`). Run with `INFERGATE_BLESS=1`
//! to rewrite the `.err` files after an intended change to a message.

use std::path::{Path, PathBuf};

use infergate::GatewayConfig;
use infergate::config::ModelConfig;

fn cases(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/config")
        .join(kind);
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases in {}", dir.display());
    cases
}

/// Compares the error (with the temp/fixture directory stripped) to `<case>.err`.
fn check(case: &Path, error: String, dir: &Path) {
    let error = error.replace(&format!("{}/", dir.display()), "") + "\n";
    let expected_path = case.with_extension("err");
    if std::env::var_os("INFERGATE_BLESS").is_some() {
        std::fs::write(&expected_path, &error).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
        panic!(
            "{} is missing; run with INFERGATE_BLESS=1",
            expected_path.display()
        )
    });
    assert_eq!(error, expected, "{}", case.display());
}

/// Each invalid gateway.toml fails to load with its recorded error.
#[test]
fn invalid_gateway_configs() {
    for case in cases("gateway") {
        let dir = case.parent().unwrap();
        let error = GatewayConfig::load(&case)
            .err()
            .unwrap_or_else(|| panic!("{} loaded", case.display()));
        check(&case, error.to_string(), dir);
    }
}

/// Each invalid model.toml (copied into a model folder) fails with its recorded error.
#[test]
fn invalid_model_configs() {
    let gateway: GatewayConfig = toml::from_str(
        "[backends.tfs]\nkind = \"tfserving\"\nendpoints = [\"http://127.0.0.1:8500\"]\n\
         [backends.local]\nkind = \"onnx\"\n",
    )
    .unwrap();
    for case in cases("model") {
        let dir = tempfile::tempdir().unwrap();
        let model_dir = dir.path().join(case.file_stem().unwrap());
        std::fs::create_dir(&model_dir).unwrap();
        std::fs::copy(&case, model_dir.join("model.toml")).unwrap();
        let error = ModelConfig::load(&model_dir, &gateway)
            .err()
            .unwrap_or_else(|| panic!("{} loaded", case.display()));
        check(&case, error.to_string(), dir.path());
    }
}

/// The example configuration in the repository is valid.
#[test]
fn example_gateway_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.toml");
    GatewayConfig::load(&path).unwrap();
}

/// The other side of every `[backends.<b>]` endpoint bound the invalid cases test: the edge
/// values load, and the parsed endpoints are what was written.
#[test]
fn tfserving_fleet_keys_at_their_bounds_load() {
    use infergate::config::{BackendConfig, EndpointSpec};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        r#"
[backends.tfs]
kind = "tfserving"
endpoints = ["https://10.0.0.5:8500", "dns://tfserving-headless.ml.svc.cluster.local:8500"]
connect_timeout_ms = 1
resolve_interval_ms = 1
[backends.tfs.health]
interval_ms = 1
timeout_ms = 1
failures_to_eject = 1
ejection_ms = 1000
max_ejection_ms = 1000
[backends.tfs.retry]
budget_ratio = 1.0
min_per_second = 0
[backends.tfs.tls]
ca = "ca.pem"
cert = "client.pem"
key = "client.key"
server_name = "tfserving.internal"

[backends.off]
kind = "tfserving"
endpoints = ["http://10.0.0.5:8500"]
[backends.off.retry]
budget_ratio = 0
min_per_second = 0
"#,
    )
    .unwrap();
    let config = GatewayConfig::load(&path).unwrap();
    let BackendConfig::Tfserving(tfs) = &config.backends["tfs"] else {
        panic!("tfs is not a tfserving backend");
    };
    assert_eq!(
        tfs.endpoint_specs(),
        [
            EndpointSpec::Url {
                url: "https://10.0.0.5:8500".into(),
                authority: "10.0.0.5:8500".into(),
            },
            EndpointSpec::Dns {
                host: "tfserving-headless.ml.svc.cluster.local".into(),
                port: 8500,
            },
        ]
    );
    // TLS files are relative to gateway.toml.
    assert_eq!(tfs.tls.as_ref().unwrap().ca, dir.path().join("ca.pem"));
}

/// A model folder stays inside itself once links are resolved: a file, a folder or model.toml
/// that links out is refused naming the key, and the message doesn't say where the link goes
/// (it may be read on the public listener). Kubernetes' ConfigMap layout (files linked into
/// `..data`, itself a link to a timestamped folder beside them) loads, whether the ConfigMap
/// is one model folder or the whole plugins directory (the folder is then itself a link).
#[test]
fn model_folder_links_stay_inside() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("x.wasm"), b"not read").unwrap();
    std::fs::write(outside.join("model.toml"), "backend = \"tfs\"\n").unwrap();
    let plugins = dir.path().join("plugins");
    let folder = |name: &str, toml: Option<&str>| {
        let path = plugins.join(name);
        std::fs::create_dir_all(&path).unwrap();
        if let Some(toml) = toml {
            std::fs::write(path.join("model.toml"), toml).unwrap();
        }
        path
    };
    let refused = |path: &Path, key: &str| {
        let error = ModelConfig::read(path)
            .err()
            .unwrap_or_else(|| panic!("{} loaded", path.display()))
            .to_string();
        assert!(error.contains(&format!("`{key} = ")), "{error}");
        assert!(error.contains("outside the model folder"), "{error}");
        assert!(!error.contains("outside/"), "{error}");
    };

    let linked_file = folder(
        "linked-file",
        Some("backend = \"tfs\"\nplugin = \"plugin.wasm\"\n"),
    );
    symlink(outside.join("x.wasm"), linked_file.join("plugin.wasm")).unwrap();
    refused(&linked_file, "plugin");

    let linked_dir = folder(
        "linked-dir",
        Some("backend = \"tfs\"\npre = \"lib/x.wasm\"\n"),
    );
    symlink(&outside, linked_dir.join("lib")).unwrap();
    refused(&linked_dir, "pre");

    let linked_toml = folder("linked-toml", None);
    symlink(outside.join("model.toml"), linked_toml.join("model.toml")).unwrap();
    refused(&linked_toml, "model.toml");

    // `..` that stays inside is fine.
    let inside = folder(
        "inside",
        Some("backend = \"tfs\"\npre = \"sub/../pre.wasm\"\n"),
    );
    std::fs::write(inside.join("pre.wasm"), b"").unwrap();
    let config = ModelConfig::read(&inside).unwrap();
    assert_eq!(
        config.pre.as_deref(),
        Some(inside.join("pre.wasm").as_path())
    );

    // One model folder as a ConfigMap volume.
    let configmap = folder("configmap", None);
    let data = configmap.join("..2026_12_02_10_00_00.1");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(
        data.join("model.toml"),
        "backend = \"tfs\"\nplugin = \"plugin.wasm\"\n",
    )
    .unwrap();
    std::fs::write(data.join("plugin.wasm"), b"").unwrap();
    symlink("..2026_12_02_10_00_00.1", configmap.join("..data")).unwrap();
    for file in ["model.toml", "plugin.wasm"] {
        symlink(format!("..data/{file}"), configmap.join(file)).unwrap();
    }
    let config = ModelConfig::read(&configmap).unwrap();
    assert_eq!(
        config.plugin.as_deref(),
        Some(configmap.join("plugin.wasm").as_path())
    );

    // The whole plugins directory as one ConfigMap (items with paths `digits/...`): the
    // model folder is itself a link into `..data`.
    let volume = dir.path().join("volume");
    let data = volume.join("..2026_12_02_10_00_00.2/digits");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("model.toml"),
        "backend = \"tfs\"\nplugin = \"plugin.wasm\"\n",
    )
    .unwrap();
    std::fs::write(data.join("plugin.wasm"), b"").unwrap();
    symlink("..2026_12_02_10_00_00.2", volume.join("..data")).unwrap();
    symlink("..data/digits", volume.join("digits")).unwrap();
    ModelConfig::read(&volume.join("digits")).unwrap();
}
