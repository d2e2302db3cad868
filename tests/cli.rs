//! The `infergate check` command, run as a process: a valid configuration reports its models
//! and exits 0; a broken model folder is named, with the reason, and exits non-zero.

mod support;

use std::process::Command;

use support::*;

fn check(config: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_infergate"))
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A valid config: every model listed with its plugin digests; nothing is dialled.
#[test]
fn check_reports_a_valid_config() {
    let toml = format!("backend = \"tfs\"\nplugin = \"{}\"\n", wasm("echo"));
    let (_dir, path) = gateway()
        .backend("tfs", "http://127.0.0.1:1")
        .model("echo", &toml)
        .fixture_plugin("echo", "echo")
        .write();
    let (ok, text) = check(&path);
    assert!(ok, "{text}");
    assert!(
        text.contains("ok, 1 model(s)") && text.contains("echo") && text.contains("sha256:"),
        "{text}"
    );
}

/// A broken model folder fails the check, naming the folder, the file and the reason.
#[test]
fn check_names_what_is_broken() {
    let toml = format!("backend = \"tfs\"\nplugin = \"{}\"\n", wasm("pre-only"));
    let (_dir, path) = gateway()
        .backend("tfs", "http://127.0.0.1:1")
        .model("half", &toml)
        .fixture_plugin("half", "pre-only")
        .model("typo", "backend = \"tfs\"\nplugins = \"x.wasm\"\n")
        .write();
    let (ok, text) = check(&path);
    assert!(!ok, "{text}");
    assert!(text.contains("2 model folder(s) failed to load"), "{text}");
    assert!(
        text.contains("half") && text.contains("`postprocess`"),
        "{text}"
    );
    assert!(
        text.contains("typo")
            && text.contains("unknown field `plugins`")
            && text.contains("line 2"),
        "{text}"
    );
}

/// An unreadable config says why once: the io error is not repeated by its source.
#[test]
fn a_missing_config_is_named_once() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = check(&dir.path().join("nope.toml"));
    assert!(!ok, "{text}");
    assert!(text.contains("nope.toml: cannot read"), "{text}");
    assert_eq!(
        text.matches("No such file or directory").count(),
        1,
        "printed once: {text}"
    );
}

/// Paths a model.toml names with `..` are shown as a person would write them, and logs to a
/// pipe carry no terminal colour codes.
#[test]
fn check_prints_plain_paths_and_no_colour() {
    let (dir, path) = gateway().backend("tfs", "http://127.0.0.1:1").write();
    let model = dir.path().join("plugins/echo");
    std::fs::create_dir_all(model.join("sub")).unwrap();
    std::fs::copy(fixture("echo"), model.join("echo.wasm")).unwrap();
    std::fs::write(
        model.join("model.toml"),
        "backend = \"tfs\"\nplugin = \"./sub/../echo.wasm\"\n",
    )
    .unwrap();
    let (ok, text) = check(&path);
    assert!(ok, "{text}");
    let shown = model.join("echo.wasm");
    assert!(
        text.contains(&format!("pre={} ", shown.display())),
        "{text}"
    );
    assert!(!text.contains("..") && !text.contains("/./"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "no ANSI escapes in a pipe: {text:?}"
    );
}

/// `infergate check` with the deploy's config warms its compile cache: check compiles the
/// plugin and writes the artifact; the gateway started afterwards from the same config loads
/// it from the cache (compiling nothing) and leaves it as it was.
#[test]
fn check_warms_the_compile_cache_for_serve() {
    let toml = format!("backend = \"tfs\"\nplugin = \"{}\"\n", wasm("echo"));
    let (dir, path) = gateway()
        .backend("tfs", "http://127.0.0.1:1")
        .model("echo", &toml)
        .fixture_plugin("echo", "echo")
        .write();
    let artifacts = || {
        let mut found: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
            .map(|entries| entries.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        found.sort();
        found
    };
    assert!(artifacts().is_empty(), "{:?}", artifacts());
    let (ok, text) = check(&path);
    assert!(ok, "{text}");
    assert!(text.contains("compiled in"), "check compiled: {text}");
    let written = artifacts();
    assert_eq!(written.len(), 1, "{written:?}");
    let modified = || std::fs::metadata(&written[0]).unwrap().modified().unwrap();
    let before = modified();

    let log = dir.path().join("serve.log");
    let served = serve_process(
        &path,
        &[],
        std::process::Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    sigterm(&served.child);
    let mut child = served.child;
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("loaded from the compile cache"),
        "a cache hit: {text}"
    );
    assert!(!text.contains("compiled in"), "nothing compiled: {text}");
    assert_eq!(artifacts(), written);
    assert_eq!(modified(), before, "the artifact was reused, not rewritten");
}
