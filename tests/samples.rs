//! Offline plugin checks: `infergate check` runs each model folder's `samples/<case>/` through
//! its plugins, without a backend, and reports PASS, or FAIL with the differences; the exit
//! status says whether every sample passed. Run as a process, as users run it.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

/// Runs `infergate check` with `args`; returns success and stdout + stderr.
fn check(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_infergate"))
        .arg("check")
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn check_config(config: &Path) -> (bool, String) {
    check(&["--config".as_ref(), config.as_os_str()])
}

/// Writes `files` (name, contents) into `<model dir>/samples/<case>/`.
fn sample(model_dir: &Path, case: &str, files: &[(&str, &str)]) {
    let dir = model_dir.join("samples").join(case);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

fn model_dir(config: &Path, model: &str) -> PathBuf {
    config.parent().unwrap().join("plugins").join(model)
}

fn plugin_toml(fixture_name: &str) -> String {
    format!("backend = \"tfs\"\nplugin = \"{}\"\n", wasm(fixture_name))
}

/// The echo plugin's request: it sends input `x` = [[0.5, 1.5]] with context "c".
const ECHO_REQUEST: &str =
    r#"{"inputs": {"x": {"dtype": "f32", "shape": [1, 2], "values": [0.5, 1.5]}}, "context": "c"}"#;
const ECHO_OUTPUTS: &str = r#"{"outputs": {"y": {"dtype": "i64", "values": [[7]]}}}"#;
const ECHO_RESPONSE: &str = r#"{"status": 200, "headers": {"x-echo": "1"},
    "json": {"outputs": {"y": {"dtype": "i64", "shape": [1, 1], "values": [7]}}, "context": "c"}}"#;

/// A sample whose tensors, context and response all match passes, and the check exits 0.
/// A looser `[tolerance]` in sample.toml lets a float further off pass too.
#[test]
fn matching_samples_pass() {
    let (_dir, config) = gateway()
        .backend("tfs", "http://127.0.0.1:1")
        .model("echo", &plugin_toml("echo"))
        .fixture_plugin("echo", "echo")
        .write();
    let echo = model_dir(&config, "echo");
    let pre = r#"{"inputs": {"x": {"dtype": "f32", "values": [[0.5, 1.5]]}}, "context": "c"}"#;
    sample(
        &echo,
        "roundtrip",
        &[
            ("request.json", ECHO_REQUEST),
            ("pre.json", pre),
            ("outputs.json", ECHO_OUTPUTS),
            ("response.json", ECHO_RESPONSE),
        ],
    );
    let near = r#"{"inputs": {"x": {"dtype": "f32", "shape": [1, 2], "values": [0.9, 1.1]}}}"#;
    sample(
        &echo,
        "loose",
        &[
            ("request.json", ECHO_REQUEST),
            ("sample.toml", "[tolerance]\nabs = 0.5\nrel = 0\n"),
            ("pre.json", near),
        ],
    );
    let (ok, text) = check_config(&config);
    assert!(ok, "{text}");
    assert!(text.contains("ok, 1 model(s)"), "{text}");
    assert!(text.contains("PASS loose (pre)"), "{text}");
    assert!(
        text.contains("PASS roundtrip (pre, post, response)"),
        "{text}"
    );
    assert!(text.contains("samples: 2 passed, 0 failed"), "{text}");
}

/// A wrong expected value fails the sample with a diff naming the tensor, the element's index
/// and both values, and the JSON path of each body difference; the check exits non-zero.
#[test]
fn a_wrong_expectation_fails_with_a_diff() {
    let (_dir, config) = gateway()
        .backend("tfs", "http://127.0.0.1:1")
        .model("echo", &plugin_toml("echo"))
        .fixture_plugin("echo", "echo")
        .write();
    let echo = model_dir(&config, "echo");
    let pre = r#"{"inputs": {"x": {"dtype": "f32", "shape": [1, 2], "values": [0.5, 2.5]}}}"#;
    let response = ECHO_RESPONSE
        .replace("\"c\"}}", "\"d\"}}")
        .replace("[7]}", "[8]}");
    sample(
        &echo,
        "wrong",
        &[
            ("request.json", ECHO_REQUEST),
            ("pre.json", pre),
            ("outputs.json", ECHO_OUTPUTS),
            ("response.json", &response),
        ],
    );
    let shape = r#"{"inputs": {"x": {"dtype": "f32", "shape": [2, 1], "values": [0.5, 1.5]}}}"#;
    sample(
        &echo,
        "wrong-shape",
        &[("request.json", ECHO_REQUEST), ("pre.json", shape)],
    );
    let (ok, text) = check_config(&config);
    assert!(!ok, "{text}");
    assert!(text.contains("FAIL wrong\n"), "{text}");
    assert!(
        text.contains("input `x`: 1 of 2 element(s) differ")
            && text.contains("at [0, 1]: expected 2.5, got 1.5"),
        "{text}"
    );
    assert!(
        text.contains("body $.context: expected \"d\", got \"c\"")
            && text.contains("body $.outputs.y.values[0]: expected 8, got 7"),
        "{text}"
    );
    assert!(
        text.contains("input `x`: shape: expected [2, 1], got [1, 2]"),
        "{text}"
    );
    assert!(text.contains("samples: 0 passed, 2 failed"), "{text}");
    assert!(text.contains("2 sample(s) failed"), "{text}");
}

/// A plugin that traps or runs past its deadline on a sample is that sample's FAIL, with the
/// reason; the other samples still run. A rejection the sample expects is a PASS.
#[test]
fn misbehaving_plugins_fail_their_samples() {
    let toml = plugin_toml("misbehave") + "[limits]\ntimeout_ms = 100\n";
    let (_dir, config) = gateway()
        .backend("tfs", "http://127.0.0.1:1")
        .model("misbehave", &toml)
        .fixture_plugin("misbehave", "misbehave")
        .write();
    let dir = model_dir(&config, "misbehave");
    let outputs = r#"{"outputs": {"y": {"dtype": "f32", "values": [[1]]}}}"#;
    sample(&dir, "a-trap", &[("request.txt", "trap")]);
    sample(&dir, "b-loop", &[("request.txt", "loop")]);
    sample(
        &dir,
        "c-post-trap",
        &[("request.txt", "post-trap"), ("outputs.json", outputs)],
    );
    let rejected =
        r#"{"status": 400, "json": {"error": "misbehave: the body asked for bad-request"}}"#;
    sample(
        &dir,
        "d-rejected",
        &[("request.txt", "bad-request"), ("response.json", rejected)],
    );
    sample(
        &dir,
        "e-ok",
        &[
            ("request.txt", "ok"),
            ("outputs.json", outputs),
            ("response.json", r#"{"text": "ok"}"#),
        ],
    );
    // An unexpected rejection fails: nothing said a 422 was the right answer.
    sample(&dir, "f-unexpected", &[("request.txt", "unprocessable")]);
    let (ok, text) = check_config(&config);
    assert!(!ok, "{text}");
    assert!(
        text.contains("FAIL a-trap\n") && text.contains("preprocess: plugin trapped"),
        "{text}"
    );
    assert!(
        text.contains("FAIL b-loop\n") && text.contains("exceeded its 100ms deadline"),
        "{text}"
    );
    assert!(
        text.contains("FAIL c-post-trap\n") && text.contains("postprocess: plugin trapped"),
        "{text}"
    );
    assert!(text.contains("PASS d-rejected (response)"), "{text}");
    assert!(text.contains("PASS e-ok (post, response)"), "{text}");
    assert!(
        text.contains("FAIL f-unexpected\n") && text.contains("answered 422"),
        "{text}"
    );
    assert!(text.contains("samples: 2 passed, 4 failed"), "{text}");
}

/// A sample folder that can't be read is a FAIL naming the file, not a crash.
#[test]
fn an_unreadable_sample_names_its_file() {
    let (_dir, config) = gateway()
        .backend("tfs", "http://127.0.0.1:1")
        .model("echo", &plugin_toml("echo"))
        .fixture_plugin("echo", "echo")
        .write();
    let echo = model_dir(&config, "echo");
    sample(
        &echo,
        "typo",
        &[
            ("request.json", ECHO_REQUEST),
            ("sample.toml", "querry = \"k=1\"\n"),
        ],
    );
    sample(&echo, "two-bodies", &[("request.a", ""), ("request.b", "")]);
    let (ok, text) = check_config(&config);
    assert!(!ok, "{text}");
    assert!(
        text.contains("typo/sample.toml: TOML parse error at line 1")
            && text.contains("unknown field `querry`"),
        "{text}"
    );
    assert!(text.contains("more than one request body"), "{text}");
}

/// `check --model DIR` checks one folder without a gateway.toml: whatever backend it names
/// is never dialled. A pre-only model answers in TF Serving's columnar JSON.
#[test]
fn one_folder_checks_without_a_gateway_toml() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("scorer");
    std::fs::create_dir_all(&model).unwrap();
    let toml = format!("backend = \"nowhere\"\npre = \"{}\"\n", wasm("pre-only"));
    std::fs::write(model.join("model.toml"), toml).unwrap();
    std::fs::copy(fixture("pre-only"), model.join(wasm("pre-only"))).unwrap();
    sample(
        &model,
        "two",
        &[
            (
                "pre.json",
                r#"{"inputs": {"x": {"dtype": "f32", "values": [[2]]}}, "context": ""}"#,
            ),
            (
                "outputs.json",
                r#"{"outputs": {"y": {"dtype": "f32", "values": [[0.25]]}}}"#,
            ),
            ("response.json", r#"{"json": {"outputs": [[0.25]]}}"#),
        ],
    );
    let (ok, text) = check(&["--model".as_ref(), model.as_os_str()]);
    assert!(ok, "{text}");
    assert!(text.contains("ok, model `scorer`"), "{text}");
    assert!(
        text.contains("PASS two (pre, REST outputs, response)"),
        "{text}"
    );
}

/// Sample files are not route inputs: adding or editing them leaves the folder's reload
/// fingerprint unchanged, so the gateway reloads nothing.
#[test]
fn samples_do_not_change_the_reload_fingerprint() {
    let (_dir, path) = gateway()
        .backend("tfs", "http://127.0.0.1:1")
        .model("echo", &plugin_toml("echo"))
        .fixture_plugin("echo", "echo")
        .write();
    let config = infergate::GatewayConfig::load(&path).unwrap();
    let echo = model_dir(&path, "echo");
    let before = infergate::loader::fingerprint(&echo);
    sample(&echo, "new", &[("request.json", ECHO_REQUEST)]);
    assert_eq!(infergate::loader::fingerprint(&echo), before);
    let dirs = infergate::loader::model_dirs(&config.plugins.dir).unwrap();
    assert_eq!(dirs.len(), 1, "samples/ is not a model folder");
}

/// The samples shipped with the example digits plugin (recorded by
/// `scripts/record_digits_samples.py` from Pillow and the real model) pass.
#[test]
fn the_digits_samples_pass() {
    digits_plugin();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins/digits");
    let (ok, text) = check(&["--model".as_ref(), dir.as_os_str()]);
    assert!(ok, "{text}");
    assert!(text.contains("PASS seven (pre, post, response)"), "{text}");
    assert!(text.contains("samples: 5 passed, 0 failed"), "{text}");
}
