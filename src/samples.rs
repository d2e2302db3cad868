//! Offline plugin checks: sample requests kept in a model folder, with what each should
//! produce, run through the model's real pipeline — plugins, limits, batcher, REST JSON —
//! with the recorded outputs standing in for the backend (`infergate check`).
//!
//! ```text
//! plugins/<model>/samples/<case>/
//!   request.<ext>   the request body (or the file `sample.toml` names; none: empty body)
//!   sample.toml     optional: method, path, query, version, label, [headers], [tolerance]
//!   pre.json        optional: the tensors (and context) preprocess must return; for a model
//!                   without a pre plugin, the tensors its REST JSON body decodes to
//!   outputs.json    optional: the backend's outputs for this request, recorded once
//!   response.json   optional: the response the client must get (needs outputs.json unless
//!                   the request is refused before the backend)
//! ```
//!
//! The format is documented for plugin authors in `plugin-sdk/README.md`. Samples never affect
//! serving: `samples/` is not a model folder, and a route's reload fingerprint covers only
//! `model.toml` and the files it names, so editing a sample reloads nothing.
//!
//! - `files`: reading a sample folder (the JSON tensor format lives here).
//! - `compare`: expected against got, as readable differences.

mod compare;
mod files;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use files::{Sample, SampleFileError, Tolerance};

use crate::backend::{Recorded, VersionChoice};
use crate::config::ModelConfig;
use crate::error::Error;
use crate::loader::{self, RouteError};
use crate::metrics::ModelMetrics;
use crate::pipeline::{self, PredictCall};
use crate::plugin::{CallError, Host, Plugin, Prepared};
use crate::routes::{Fingerprint, Parts, Route};
use compare::Answer;

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

/// What samples run against: one model folder's config and plugins.
pub struct Subject {
    /// The route name, which the pre plugin sees as `request.model`.
    pub name: String,
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub pre: Option<Arc<Plugin>>,
    pub post: Option<Arc<Plugin>>,
}

impl Subject {
    /// A served route's folder, config and plugins.
    pub fn of_route(route: &Route) -> Self {
        Subject {
            name: route.name.clone(),
            dir: route.dir.clone(),
            config: route.config.clone(),
            pre: route.pre.clone(),
            post: route.post.clone(),
        }
    }

    /// A model folder loaded on its own, without a gateway.toml (`infergate check --model`):
    /// everything is validated as the gateway would, except which backend the folder names,
    /// since samples never reach one.
    pub fn load(host: &Host, dir: &Path) -> Result<Subject, RouteError> {
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into());
        let config = ModelConfig::read(dir)?;
        let (pre, post) = loader::load_plugins(&config, host)?;
        Ok(Subject {
            name,
            dir: dir.to_path_buf(),
            config,
            pre,
            post,
        })
    }

    /// This folder as a route whose backend answers with `sample`'s recorded outputs. The
    /// batcher sends a lone request at once and pads nothing: the outputs were recorded for
    /// the request's own rows.
    fn route_for(&self, sample: &Sample) -> Arc<Route> {
        let recorded = Arc::new(Recorded::new(
            sample.outputs.clone(),
            sample.pre.as_ref().map(|p| p.inputs.clone()),
        ));
        let mut config = self.config.clone();
        config.batching.allowed_batch_sizes.clear();
        config.batching.pad_variable_length = false;
        config.batching.dispatch_when_idle = true;
        let route = Route::build(Parts {
            name: self.name.clone(),
            dir: self.dir.clone(),
            config,
            backend: recorded,
            pre: self.pre.clone(),
            post: self.post.clone(),
            metrics: ModelMetrics::detached(&self.name),
            fingerprint: Fingerprint([0; 32]),
        });
        Arc::new(route)
    }
}

/// Runs every sample of the subject's folder, in name order. A sample that can't be read, or
/// whose plugin traps or times out, is a failure with its message; nothing here panics or
/// stops.
pub async fn check_model(subject: &Subject) -> Vec<SampleReport> {
    let mut reports = Vec::new();
    for (name, dir) in sample_dirs(&subject.dir) {
        let report = match Sample::load(&dir) {
            Ok(sample) => run(subject, &name, &sample).await.report(name),
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

/// What a sample run found: the stages it checked, and the differences (none: it passed).
#[derive(Debug, Default)]
struct Findings {
    checked: Vec<String>,
    failures: Vec<String>,
}

impl Findings {
    fn report(self, name: String) -> SampleReport {
        SampleReport {
            name,
            checked: self.checked,
            failures: self.failures,
        }
    }

    /// Compares the client's response with `response.json`. Without one, an error status
    /// fails the sample: nothing said it was expected.
    fn response(&mut self, answer: &Answer, sample: &Sample) {
        let Some(expected) = &sample.response else {
            if !(200..300).contains(&answer.status) {
                self.failures.push(format!(
                    "answered {} {} (no response.json expects it)",
                    answer_status(answer.status),
                    String::from_utf8_lossy(&answer.body)
                ));
            }
            return;
        };
        self.checked.push("response".into());
        self.failures
            .extend(compare::response(expected, answer, sample.tolerance));
    }
}

/// Runs sample `name` through the subject's pipeline, comparing what preprocessing (or REST
/// decoding) gave with `pre.json` and the client's response with `response.json`.
async fn run(subject: &Subject, name: &str, sample: &Sample) -> Findings {
    let mut found = Findings::default();
    let route = subject.route_for(sample);
    let mut prepared: Option<Prepared> = None;
    let result = pipeline::predict_tapped(route, call(subject, name, sample), &mut |p| {
        prepared = Some(p.clone());
    })
    .await;
    let Some(prepared) = prepared else {
        // Refused before any tensors existed: by the pre plugin, or REST decoding.
        match result {
            Err(Error::Plugin(CallError::Rejected(r))) if sample.pre.is_some() => {
                found.failures.push(format!(
                    "preprocess rejected the request, but pre.json expects tensors: {}",
                    CallError::Rejected(r)
                ));
            }
            // A trap, a deadline, a memory cap or malformed output is never a right answer.
            Err(Error::Plugin(e @ CallError::Rejected(_))) => {
                found.response(&answer(Err(Error::Plugin(e))), sample);
            }
            Err(Error::Plugin(e)) => found.failures.push(format!("preprocess: {e}")),
            // The plugin's own "no" or a REST body refused is an answer a sample may expect.
            other => found.response(&answer(other), sample),
        }
        return found;
    };
    if let Some(expected) = &sample.pre {
        found.checked.push("pre".into());
        found.failures.extend(compare::tensors(
            "input",
            &expected.inputs,
            &prepared.inputs,
            sample.tolerance,
        ));
        if let Some(context) = expected
            .context
            .as_ref()
            .filter(|c| **c != prepared.context)
        {
            found.failures.push(format!(
                "context: expected {:?}, got {:?}",
                String::from_utf8_lossy(context),
                String::from_utf8_lossy(&prepared.context)
            ));
        }
    }
    // Without recorded outputs the backend answered an error in place of the model's: the
    // sample checks preprocessing only.
    if sample.outputs.is_none() {
        if sample.response.is_some() {
            found.failures.push(
                "response.json needs outputs.json (the backend's recorded outputs) to run postprocess"
                    .into(),
            );
        }
        return found;
    }
    match result {
        Err(Error::Plugin(e @ CallError::Rejected(_))) => {
            found.checked.push(stage(subject));
            found.response(&answer(Err(Error::Plugin(e))), sample);
        }
        Err(Error::Plugin(e)) => found.failures.push(format!("postprocess: {e}")),
        other => {
            found.checked.push(stage(subject));
            found.response(&answer(other), sample);
        }
    }
    found
}

/// What answered after the backend: the post plugin, or the REST renderer.
fn stage(subject: &Subject) -> String {
    match subject.post {
        Some(_) => "post".into(),
        None => "REST outputs".into(),
    }
}

/// The request a sample sends, as the ingress would have parsed it.
fn call(subject: &Subject, name: &str, sample: &Sample) -> PredictCall {
    let r = &sample.request;
    let version = match (r.version, &r.label) {
        (Some(v), _) => VersionChoice::Number(v),
        (None, Some(l)) => VersionChoice::Label(l.clone()),
        (None, None) => VersionChoice::Latest,
    };
    let path = r.path.clone().unwrap_or_else(|| {
        let version = match &version {
            VersionChoice::Number(v) => format!("/versions/{v}"),
            VersionChoice::Label(l) => format!("/labels/{l}"),
            VersionChoice::Latest => String::new(),
        };
        format!("/v1/models/{}{version}:predict", subject.name)
    });
    PredictCall {
        version,
        method: r.method.clone(),
        path,
        query: r.query.clone(),
        headers: r.headers.clone(),
        body: r.body.clone(),
        request_id: format!("sample-{name}"),
    }
}

/// The response a client would get for `result`.
fn answer(result: Result<crate::reply::Reply, Error>) -> Answer {
    match result {
        Ok(reply) => Answer {
            status: reply.status.as_u16(),
            headers: reply
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect(),
            body: reply.body,
        },
        Err(error) => Answer {
            status: error.status().as_u16(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: error.body(),
        },
    }
}

/// `422 Unprocessable Entity`, as `http` prints a status.
fn answer_status(status: u16) -> String {
    http::StatusCode::from_u16(status).map_or_else(|_| status.to_string(), |s| s.to_string())
}
