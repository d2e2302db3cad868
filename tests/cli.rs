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
    let toml = format!(
        "backend = \"tfs\"\nplugin = \"{}\"\n",
        fixture("echo").display()
    );
    let (_dir, path) = gateway()
        .backend("tfs", "http://127.0.0.1:1")
        .model("echo", &toml)
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
    let toml = format!(
        "backend = \"tfs\"\nplugin = \"{}\"\n",
        fixture("pre-only").display()
    );
    let (_dir, path) = gateway()
        .backend("tfs", "http://127.0.0.1:1")
        .model("half", &toml)
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
