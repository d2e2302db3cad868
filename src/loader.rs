//! The route loader: turns a model folder into a [`Route`] — reads its `model.toml`, hashes
//! its inputs (the fingerprint a rescan compares), compiles its plugins, asks the named
//! backend for the model's [`Backend`], and sends its warm-up request. Start-up and the
//! reloader both load through here, so a folder means the same thing to both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::{LoadError as ModelLoadError, Provider, VersionChoice, code_name};
use crate::config::{ConfigError, GatewayConfig, ModelConfig};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::pipeline::{self, PredictCall};
use crate::plugin::{Host, LoadError, Needs, Plugin, Share};
use crate::routes::{Fingerprint, Parts, Route};

/// Why a model folder could not become a route.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Plugin(#[from] LoadError),
    #[error(transparent)]
    Model(#[from] ModelLoadError),
}

/// What loading a folder needs: the gateway's config, its backends, the plugin host and the
/// metrics each route registers its series on.
pub struct RouteLoader {
    config: Arc<GatewayConfig>,
    backends: BTreeMap<String, Arc<dyn Provider>>,
    host: Host,
    metrics: Metrics,
}

impl RouteLoader {
    pub fn new(
        config: Arc<GatewayConfig>,
        backends: BTreeMap<String, Arc<dyn Provider>>,
        host: Host,
        metrics: Metrics,
    ) -> Self {
        Self {
            config,
            backends,
            host,
            metrics,
        }
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The model folders of the plugin directory, by name.
    pub fn model_dirs(&self) -> Result<Vec<(String, PathBuf)>, ConfigError> {
        model_dirs(&self.config.plugins.dir)
    }

    /// Builds one route: reads its `model.toml`, compiles its plugins, gets its backend.
    /// CPU-heavy; run it on a blocking thread.
    pub fn load(&self, name: &str, dir: &Path) -> Result<Route, RouteError> {
        let fingerprint = fingerprint(dir);
        let config = ModelConfig::load(dir, &self.config)?;
        let provider = self.backends.get(&config.backend).cloned().ok_or_else(|| {
            ConfigError::invalid(
                &dir.join("model.toml"),
                format!("backend `{}` is not defined", config.backend),
            )
        })?;
        let backend = provider.for_route(name, &config)?;
        let (pre, post) = load_plugins(&config, &self.host)?;
        Ok(Route::build(Parts {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            metrics: self.metrics.model(name),
            config,
            backend,
            pre,
            post,
            fingerprint,
        }))
    }

    /// Sends the model's declared warm-up request (`warmup = "<file>"`, a request body)
    /// through the route's whole pipeline. Blocks on the async runtime: call it from a
    /// blocking thread. Outside a runtime (`infergate check`) there is nothing to call.
    ///
    /// A failure says which file, the status and a short reason, never the error's own text:
    /// that can quote the body (a JSON error shows the text near it), and the message is
    /// shown on the public listener. The full error goes to the log.
    pub fn warm_up(&self, route: &Arc<Route>) -> Result<(), String> {
        let Some(path) = &route.config.warmup else {
            return Ok(());
        };
        let file = path.strip_prefix(&route.dir).unwrap_or(path).display();
        let body = std::fs::read(path).map_err(|e| {
            tracing::warn!(model = %route.name, "warmup file {}: {e}", path.display());
            format!("warmup file {file} can't be read ({:?})", e.kind())
        })?;
        let call = PredictCall {
            version: VersionChoice::Latest,
            method: "POST".into(),
            path: format!("/v1/models/{}:predict", route.name),
            query: String::new(),
            headers: Vec::new(),
            body: body.into(),
            request_id: format!("warmup-{}", route.name),
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return Ok(());
        };
        match handle.block_on(pipeline::predict(route.clone(), call)) {
            Ok(reply) if reply.status.is_success() => Ok(()),
            Ok(reply) => Err(format!(
                "warmup request ({file}) answered {}: the post plugin's answer",
                reply.status
            )),
            Err(e) => {
                tracing::warn!(model = %route.name, "warmup request ({file}) failed: {e}");
                Err(format!(
                    "warmup request ({file}) answered {}: {} (the log has the details)",
                    e.status(),
                    short_reason(&e)
                ))
            }
        }
    }
}

/// What failed a request, in a few words that never quote the request: for warm-up
/// failures, which are shown on the public listener.
fn short_reason(error: &Error) -> String {
    use crate::batch::BatchError;
    use crate::plugin::CallError;
    match error {
        Error::Rest(_) | Error::BadRequest(_) => "the body is not a valid REST JSON request".into(),
        Error::Plugin(CallError::Rejected(_)) => "a plugin refused it".into(),
        Error::Plugin(CallError::Timeout(_)) => "a plugin ran past its deadline".into(),
        Error::Plugin(CallError::MemoryLimit { .. }) => "a plugin ran out of memory".into(),
        Error::Plugin(_) => "a plugin failed".into(),
        Error::Backend(e) | Error::Batch(BatchError::Backend(e)) => {
            format!("the backend failed it ({})", code_name(e.code))
        }
        Error::Batch(_) => "the batcher refused it".into(),
        Error::BadBackendResponse(_) => "the backend's answer was unusable".into(),
        _ => "the gateway failed it".into(),
    }
}

/// Model folders under `dir`: subdirectories holding a `model.toml`, by name. Hidden folders
/// (editor and ConfigMap internals such as `..data`) are skipped.
pub fn model_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, ConfigError> {
    let entries = std::fs::read_dir(dir).map_err(|cause| ConfigError::Read {
        path: dir.to_path_buf(),
        cause,
    })?;
    let mut dirs = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if name.starts_with('.') || !path.join("model.toml").is_file() {
            continue;
        }
        dirs.push((name, path));
    }
    dirs.sort();
    Ok(dirs)
}

/// Hashes `dir/model.toml` and the files it names (following symlinks, so a Kubernetes
/// `..data` swap counts as a change). A model.toml that doesn't parse is hashed alone;
/// loading it will report why.
pub fn fingerprint(dir: &Path) -> Fingerprint {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    let toml = std::fs::read(dir.join("model.toml")).unwrap_or_default();
    hash.update((toml.len() as u64).to_le_bytes());
    hash.update(&toml);
    if let Ok(config) = ModelConfig::read(dir) {
        for file in config.files() {
            let bytes = std::fs::read(file).unwrap_or_default();
            hash.update(file.as_os_str().as_encoded_bytes());
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(&bytes);
        }
    }
    Fingerprint(hash.finalize().into())
}

/// A model's (pre, post) plugins; one file may be both.
pub type PluginPair = (Option<Arc<Plugin>>, Option<Arc<Plugin>>);

/// Compiles the model's plugin files; one file named by `plugin` serves both roles. Both
/// run in one share of the runtime, the model's (`[limits]` `max_concurrent_calls`,
/// `max_running_calls`).
pub fn load_plugins(config: &ModelConfig, host: &Host) -> Result<PluginPair, LoadError> {
    let share =
        Share::new(config.limits.share(host.max_instances())).with_reuse(config.reuse.max_calls);
    let load = |path: &Path, pre: bool, post: bool| {
        Plugin::load(host, path, Needs { pre, post }).map(|p| Arc::new(p.with_share(share.clone())))
    };
    if let Some(path) = &config.plugin {
        let both = load(path, true, true)?;
        return Ok((Some(both.clone()), Some(both)));
    }
    let pre = config
        .pre
        .as_deref()
        .map(|p| load(p, true, false))
        .transpose()?;
    let post = config
        .post
        .as_deref()
        .map(|p| load(p, false, true))
        .transpose()?;
    Ok((pre, post))
}
