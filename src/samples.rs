//! Offline plugin checks: sample requests kept in a model folder, with what each should
//! produce, run through the model's plugins without a backend (`infergate check`).
//!
//! ```text
//! plugins/<model>/samples/<case>/
//!   request.<ext>   the request body (or the file `sample.toml` names; none: empty body)
//!   sample.toml     optional: method, path, query, version, label, [headers], [tolerance]
//!   pre.json        optional: the tensors (and context) preprocess must return
//!   outputs.json    optional: the backend's outputs for this request, recorded once
//!   response.json   optional: the response the client must get (needs outputs.json unless
//!                   preprocess rejects the request)
//! ```
//!
//! The format is documented for plugin authors in `plugin-sdk/README.md`. Samples never affect
//! serving: `samples/` is not a model folder, and a route's reload fingerprint covers only
//! `model.toml` and the files it names, so editing a sample reloads nothing.
//!
//! - `files`: reading a sample folder (the JSON tensor format lives here).
//! - `run`: one sample through the plugins, recorded outputs in place of the backend.
//! - `compare`: expected against got, as readable differences.

mod compare;
mod files;
mod run;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use files::{Sample, SampleFileError, Tolerance};
pub use run::Subject;

use crate::config::{BackendConfig, GatewayConfig, ModelConfig, OnnxConfig, TfServingConfig};
use crate::plugin::{CallLimits, Plugin, Runtime};
use crate::routes::{self, Route, RouteError};

/// The folder inside a model folder that holds its samples, one subfolder per case.
pub const SAMPLES_DIR: &str = "samples";

/// One sample's verdict.
#[derive(Debug)]
pub struct SampleReport {
    /// The case folder's name.
    pub name: String,
    /// What was compared ("pre", "post", "response"); empty: the plugins only had to run.
    pub checked: Vec<String>,
    /// Every difference or failure, one line each; empty: the sample passed.
    pub failures: Vec<String>,
}

impl SampleReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// `PASS seven (pre, post, response)`, or `FAIL seven` followed by one indented line per
/// difference.
impl fmt::Display for SampleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.passed() {
            write!(f, "PASS {}", self.name)?;
            if !self.checked.is_empty() {
                write!(f, " ({})", self.checked.join(", "))?;
            }
            return Ok(());
        }
        write!(f, "FAIL {}", self.name)?;
        for line in &self.failures {
            // Multi-line messages (a TOML error with its caret) stay under their sample.
            write!(f, "\n  {}", line.replace('\n', "\n  "))?;
        }
        Ok(())
    }
}

/// The case folders under `<model_dir>/samples/`, by name. Hidden entries and plain files
/// (a README beside the cases) are skipped.
pub fn sample_dirs(model_dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(model_dir.join(SAMPLES_DIR)) else {
        return Vec::new();
    };
    let mut dirs: Vec<(String, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            (!name.starts_with('.')).then_some((name, p))
        })
        .collect();
    dirs.sort();
    dirs
}

/// Runs every sample of a model folder, in name order. A sample that can't be read, or whose
/// plugin traps or times out, is a failure with its message; nothing here panics or stops.
pub async fn check_model(
    runtime: &Runtime,
    subject: &Subject<'_>,
    model_dir: &Path,
) -> Vec<SampleReport> {
    let mut reports = Vec::new();
    for (name, dir) in sample_dirs(model_dir) {
        let report = match Sample::load(&dir) {
            Ok(sample) => {
                let found = run::run(runtime, subject, &name, &sample).await;
                SampleReport {
                    name,
                    checked: found.checked,
                    failures: found.failures,
                }
            }
            Err(e) => SampleReport {
                name,
                checked: Vec::new(),
                failures: vec![e.to_string()],
            },
        };
        reports.push(report);
    }
    reports
}

impl<'a> Subject<'a> {
    /// A served route's plugins and limits.
    pub fn of_route(route: &'a Route) -> Self {
        Subject {
            model: &route.name,
            pre: route.pre.as_deref(),
            post: route.post.as_deref(),
            limits: route.limits(),
        }
    }
}

/// A model folder loaded on its own, without a `gateway.toml` (`infergate check --model`).
pub struct Folder {
    pub name: String,
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub pre: Option<Arc<Plugin>>,
    pub post: Option<Arc<Plugin>>,
}

impl Folder {
    /// Reads `dir/model.toml` and compiles its plugins. Samples never reach a backend, so
    /// whichever backend the folder names is taken as defined (a placeholder that is never
    /// dialled); everything else is validated as the gateway would.
    pub fn load(runtime: &Runtime, dir: &Path) -> Result<Folder, RouteError> {
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into());
        let mut gateway = GatewayConfig::default();
        if let Some((backend, embedded)) = backend_named(dir) {
            // The placeholder's kind must fit the folder: `model_file` is for onnx backends.
            let placeholder = if embedded {
                BackendConfig::Onnx(OnnxConfig {
                    threads: Some(1),
                    timeout_ms: 1,
                })
            } else {
                BackendConfig::Tfserving(TfServingConfig {
                    endpoints: vec!["http://127.0.0.1:1".into()],
                    timeout_ms: 1,
                })
            };
            gateway.backends.insert(backend, placeholder);
        }
        let config = ModelConfig::load(dir, &gateway)?;
        let (pre, post) = routes::load_plugins(&config, runtime)?;
        Ok(Folder {
            name,
            dir: dir.to_path_buf(),
            config,
            pre,
            post,
        })
    }

    pub fn subject(&self) -> Subject<'_> {
        Subject {
            model: &self.name,
            pre: self.pre.as_deref(),
            post: self.post.as_deref(),
            limits: CallLimits {
                timeout: self.config.limits.timeout(),
                memory_bytes: self.config.limits.memory_bytes(),
                max_output_bytes: self.config.limits.max_output_bytes(),
            },
        }
    }
}

/// The `backend = "…"` of `dir/model.toml`, if it reads; loading reports any problem.
/// The backend `dir/model.toml` names, and whether it names a `model_file` (an onnx model).
fn backend_named(dir: &Path) -> Option<(String, bool)> {
    let text = std::fs::read_to_string(dir.join("model.toml")).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    let backend = table.get("backend")?.as_str()?.to_string();
    Some((backend, table.contains_key("model_file")))
}
