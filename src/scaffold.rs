//! Plugin projects: `infergate plugin new` writes a standalone project from the templates
//! embedded here (`templates/` in the repository), and `infergate plugin build` turns a
//! project folder into its `plugin.wasm`.
//!
//! A project is `templates/common/` (model.toml, one sample case) plus
//! `templates/plugin-rust/` or `templates/plugin-python/`, with `{{name}}`, `{{crate_name}}`,
//! `{{artifact}}` and `{{sdk_dependency}}` filled in and a `.tmpl` suffix dropped (so the
//! repository's own tools never mistake a template's `Cargo.toml` for a real one).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A plugin's source language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
}

impl std::str::FromStr for Lang {
    type Err = ScaffoldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rust" => Ok(Lang::Rust),
            "python" => Ok(Lang::Python),
            other => Err(ScaffoldError(format!(
                "unknown language `{other}`: use rust or python"
            ))),
        }
    }
}

/// Why a project could not be written or built; the message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScaffoldError(String);

/// One embedded template file: its path inside the project, and its text.
type Template = (&'static str, &'static str);

macro_rules! templates {
    ($dir:literal: $($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../templates/", $dir, "/", $path)))),*]
    };
}

const COMMON: &[Template] = templates!("common":
    "model.toml",
    "samples/dog/request.json",
    "samples/dog/sample.toml",
    "samples/dog/pre.json",
    "samples/dog/outputs.json",
    "samples/dog/response.json",
);
const RUST: &[Template] = templates!("plugin-rust":
    "Cargo.toml.tmpl",
    ".cargo/config.toml",
    ".gitignore",
    "src/lib.rs",
);
const PYTHON: &[Template] = templates!("plugin-python":
    "plugin.py",
    "requirements.txt",
    ".gitignore",
);

/// Where the Rust SDK of the checkout this binary was built from lives, if it still does:
/// the default path dependency of a new Rust project.
pub fn default_sdk_path() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugin-sdk");
    sdk.join("Cargo.toml").is_file().then_some(sdk)
}

/// Writes a new project called `name` in `dest` (which must not exist, or be empty) and
/// returns the files written. `sdk_path` is the Rust SDK (a folder with its Cargo.toml, e.g.
/// an unpacked `.crate`), used by Rust projects only.
pub fn new_project(
    name: &str,
    lang: Lang,
    dest: &Path,
    sdk_path: Option<&Path>,
) -> Result<Vec<PathBuf>, ScaffoldError> {
    check_name(name)?;
    let busy = match dest.read_dir() {
        Ok(mut entries) => entries.next().is_some(),
        Err(_) => dest.exists(),
    };
    if busy {
        return Err(ScaffoldError(format!(
            "{} already exists and is not empty; pick a new folder",
            dest.display()
        )));
    }
    let sdk_dependency = match lang {
        Lang::Rust => {
            let sdk = sdk_path.ok_or_else(|| {
                ScaffoldError(
                    "where is the Rust SDK? pass --sdk-path DIR (a plugin-sdk/ folder, or an \
                     unpacked infergate-plugin-sdk .crate)"
                        .into(),
                )
            })?;
            if !sdk.join("Cargo.toml").is_file() {
                return Err(ScaffoldError(format!(
                    "{} has no Cargo.toml; --sdk-path names the SDK crate's folder",
                    sdk.display()
                )));
            }
            let sdk = sdk.canonicalize().map_err(|e| io_error(sdk, e))?;
            format!("{{ path = {} }}", toml_string(&sdk.to_string_lossy()))
        }
        Lang::Python => String::new(),
    };
    let crate_name = format!("{name}-plugin");
    let values = [
        ("{{name}}", name.to_string()),
        (
            "{{artifact}}",
            format!("{}.wasm", crate_name.replace('-', "_")),
        ),
        ("{{crate_name}}", crate_name),
        ("{{sdk_dependency}}", sdk_dependency),
    ];
    let lang_files = match lang {
        Lang::Rust => RUST,
        Lang::Python => PYTHON,
    };
    let mut written = Vec::new();
    for (path, text) in COMMON.iter().chain(lang_files) {
        let path = dest.join(path.strip_suffix(".tmpl").unwrap_or(path));
        let text = values
            .iter()
            .fold(text.to_string(), |t, (key, value)| t.replace(key, value));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
        }
        std::fs::write(&path, text).map_err(|e| io_error(&path, e))?;
        written.push(path);
    }
    Ok(written)
}

/// A route name: lower-case ASCII letters, digits and `-`, starting with a letter (it becomes
/// a URL segment, a folder and, for Rust, a crate name).
fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ScaffoldError(format!(
            "`{name}` is not a plugin name: use lower-case letters, digits and '-', starting \
             with a letter (it becomes the route /v1/models/NAME:predict)"
        )))
    }
}

/// Builds the project in `dir` into `dir/plugin.wasm` and returns that path: a `Cargo.toml`
/// with cargo for wasm32-wasip2 (release; into `CARGO_TARGET_DIR` when set, else
/// `dir/target`), a `plugin.py` with the Python SDK's `infergate-plugin build` (on PATH).
pub fn build(dir: &Path) -> Result<PathBuf, ScaffoldError> {
    let out = dir.join("plugin.wasm");
    if dir.join("Cargo.toml").is_file() {
        let crate_name = package_name(&dir.join("Cargo.toml"))?;
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| dir.join("target"), PathBuf::from);
        run(Command::new("cargo")
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--target-dir",
            ])
            .arg(&target)
            .current_dir(dir))?;
        let artifact = target
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", crate_name.replace('-', "_")));
        let tmp = dir.join("plugin.wasm.tmp");
        std::fs::copy(&artifact, &tmp).map_err(|e| io_error(&artifact, e))?;
        // Renamed into place: a gateway watching the folder never loads half a file.
        std::fs::rename(&tmp, &out).map_err(|e| io_error(&out, e))?;
    } else if dir.join("plugin.py").is_file() {
        run(Command::new("infergate-plugin").arg("build").arg(dir))?;
    } else {
        return Err(ScaffoldError(format!(
            "{} has neither Cargo.toml (a Rust plugin) nor plugin.py (a Python plugin)",
            dir.display()
        )));
    }
    Ok(out)
}

fn package_name(manifest: &Path) -> Result<String, ScaffoldError> {
    let text = std::fs::read_to_string(manifest).map_err(|e| io_error(manifest, e))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| ScaffoldError(format!("{}: {e}", manifest.display())))?;
    table
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string)
        .ok_or_else(|| ScaffoldError(format!("{} has no [package] name", manifest.display())))
}

fn run(cmd: &mut Command) -> Result<(), ScaffoldError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let status = cmd.status().map_err(|e| {
        let hint = if program == "infergate-plugin" {
            " (install the Python SDK: pip install plugin-sdk/python)"
        } else {
            ""
        };
        ScaffoldError(format!("could not run {program}: {e}{hint}"))
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(ScaffoldError(format!("{program} failed ({status})")))
    }
}

fn io_error(path: &Path, e: std::io::Error) -> ScaffoldError {
    ScaffoldError(format!("{}: {e}", path.display()))
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_python_project_has_the_common_files_and_no_placeholder_left() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("demo");
        let files = new_project("demo", Lang::Python, &dest, None).unwrap();
        assert!(files.contains(&dest.join("plugin.py")));
        assert!(files.contains(&dest.join("samples/dog/response.json")));
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            assert!(!text.contains("{{"), "{} keeps a placeholder", f.display());
        }
    }

    #[test]
    fn a_rust_project_names_its_crate_and_sdk() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = dir.path().join("sdk");
        std::fs::create_dir(&sdk).unwrap();
        std::fs::write(sdk.join("Cargo.toml"), "").unwrap();
        let dest = dir.path().join("demo");
        new_project("demo", Lang::Rust, &dest, Some(&sdk)).unwrap();
        let manifest = std::fs::read_to_string(dest.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"demo-plugin\""));
        assert!(manifest.contains("infergate-plugin-sdk = { path = "));
        assert!(!dest.join("Cargo.toml.tmpl").exists());
    }

    #[test]
    fn bad_names_and_busy_folders_are_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["Demo", "1x", "a b", "", "x_y"] {
            let err = new_project(name, Lang::Python, &dir.path().join("p"), None).unwrap_err();
            assert!(err.to_string().contains("is not a plugin name"), "{err}");
        }
        std::fs::write(dir.path().join("f"), "").unwrap();
        let err = new_project("ok", Lang::Python, dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        let err = new_project("ok", Lang::Rust, &dir.path().join("r"), None).unwrap_err();
        assert!(err.to_string().contains("--sdk-path"), "{err}");
    }
}
