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
