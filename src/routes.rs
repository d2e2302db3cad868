//! The route table: model name → [`Route`] (its config, plugins and backend). The table is an
//! immutable snapshot swapped whole ([`RouteStore`]); a request holds the `Arc<Route>` it
//! started with, so a reload never changes a request midway.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::backend::{Backend, ModelTarget, VersionChoice};
use crate::batch::Batcher;
use crate::config::{ConfigError, GatewayConfig, ModelConfig};
use crate::metrics::{Metrics, ModelMetrics};
use crate::plugin::{CallLimits, LoadError, Needs, Plugin, Runtime};
use crate::rest::InputSpec;

/// Everything needed to serve one model.
pub struct Route {
    /// The folder's name: `/v1/models/{name}`.
    pub name: String,
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub backend_name: String,
    pub backend: Arc<Backend>,
    pub pre: Option<Arc<Plugin>>,
    pub post: Option<Arc<Plugin>>,
    /// Requests reach the backend through here, batched with their peers.
    pub batcher: Batcher,
    /// The model's series in the gateway's metrics.
    pub metrics: ModelMetrics,
    pub loaded_at: SystemTime,
    /// Hash of what the route was built from (model.toml and plugin files); a rescan that
    /// finds the same fingerprint keeps this route as it is.
    pub fingerprint: Fingerprint,
    /// Signature inputs per (version, signature), fetched from the backend the first time a
    /// REST JSON request needs them to type its values.
    input_specs: Mutex<HashMap<(VersionChoice, String), Arc<BTreeMap<String, InputSpec>>>>,
}

impl Route {
    /// The model's name on the backend.
    pub fn backend_model(&self) -> &str {
        self.config.model.as_deref().unwrap_or(&self.name)
    }

    pub fn target(&self, version: VersionChoice, signature: Option<String>) -> ModelTarget {
        ModelTarget {
            name: self.backend_model().to_string(),
            version,
            signature: signature.unwrap_or_else(|| self.config.signature.clone()),
        }
    }

    pub fn limits(&self) -> CallLimits {
        CallLimits {
            timeout: self.config.limits.timeout(),
            memory_bytes: self.config.limits.memory_bytes(),
            max_output_bytes: self.config.limits.max_output_bytes(),
        }
    }

    pub fn cached_inputs(
        &self,
        key: &(VersionChoice, String),
    ) -> Option<Arc<BTreeMap<String, InputSpec>>> {
        // A std mutex: held for one map lookup or insert, never across an await.
        self.input_specs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    pub fn cache_inputs(
        &self,
        key: (VersionChoice, String),
        specs: Arc<BTreeMap<String, InputSpec>>,
    ) {
        self.input_specs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, specs);
    }
}

/// An immutable set of routes by name, and the model folders that failed to (re)load.
#[derive(Default)]
pub struct RouteTable {
    pub routes: BTreeMap<String, Arc<Route>>,
    /// The last load failure per folder. A failed reload keeps the folder's last good route
    /// in `routes` and records why here; a folder that never loaded is only here.
    pub failures: BTreeMap<String, Failure>,
}

/// Why a model folder's last load failed, and what it was loading.
#[derive(Clone, Debug)]
pub struct Failure {
    pub message: String,
    pub at: SystemTime,
    pub fingerprint: Fingerprint,
}

/// A content hash of a model folder's inputs: `model.toml` and every plugin file it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

/// Hashes `dir/model.toml` and the plugin files it names (following symlinks, so a
/// Kubernetes `..data` swap counts as a change). A model.toml that doesn't parse is hashed
/// alone; loading it will report why.
pub fn fingerprint(dir: &Path, gateway: &GatewayConfig) -> Fingerprint {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    let toml = std::fs::read(dir.join("model.toml")).unwrap_or_default();
    hash.update((toml.len() as u64).to_le_bytes());
    hash.update(&toml);
    if let Ok(config) = ModelConfig::load(dir, gateway) {
        for file in [&config.plugin, &config.pre, &config.post, &config.warmup]
            .into_iter()
            .flatten()
        {
            let bytes = std::fs::read(file).unwrap_or_default();
            hash.update(file.as_os_str().as_encoded_bytes());
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(&bytes);
        }
    }
    Fingerprint(hash.finalize().into())
}

impl RouteTable {
    pub fn get(&self, name: &str) -> Option<Arc<Route>> {
        self.routes.get(name).cloned()
    }
}

/// The live table. Readers take a snapshot; a reload stores a complete new one.
pub struct RouteStore {
    current: ArcSwap<RouteTable>,
}

impl RouteStore {
    pub fn new(table: RouteTable) -> Self {
        Self {
            current: ArcSwap::from_pointee(table),
        }
    }

    pub fn snapshot(&self) -> Arc<RouteTable> {
        self.current.load_full()
    }

    pub fn swap(&self, table: RouteTable) {
        self.current.store(Arc::new(table));
    }
}

/// Why a model folder could not become a route.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Plugin(#[from] LoadError),
}

/// Model folders under `dir`: subdirectories holding a `model.toml`, by name. Hidden folders
/// (editor and ConfigMap internals such as `..data`) are skipped.
pub fn model_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, ConfigError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ConfigError::Read {
        path: dir.to_path_buf(),
        source,
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

/// Builds one route: reads its `model.toml` and compiles its plugins. CPU-heavy; run it on
/// a blocking thread.
pub fn load_route(
    name: &str,
    dir: &Path,
    gateway: &GatewayConfig,
    backends: &BTreeMap<String, Arc<Backend>>,
    runtime: &Runtime,
    metrics: &Metrics,
) -> Result<Route, RouteError> {
    let fingerprint = fingerprint(dir, gateway);
    let config = ModelConfig::load(dir, gateway)?;
    let backend = backends.get(&config.backend).cloned().ok_or_else(|| {
        ConfigError::invalid(
            &dir.join("model.toml"),
            format!("backend `{}` is not defined", config.backend),
        )
    })?;
    let (pre, post) = load_plugins(&config, runtime)?;
    let metrics = metrics.model(name);
    let batcher = Batcher::new(
        name,
        config.batching.clone(),
        backend.clone(),
        backend.timeout(),
        metrics.clone(),
    );
    Ok(Route {
        batcher,
        metrics,
        name: name.to_string(),
        dir: dir.to_path_buf(),
        backend_name: config.backend.clone(),
        config,
        backend,
        pre,
        post,
        loaded_at: SystemTime::now(),
        fingerprint,
        input_specs: Mutex::new(HashMap::new()),
    })
}

/// Compiles the model's plugin files; one file named by `plugin` serves both roles.
pub fn load_plugins(
    config: &ModelConfig,
    runtime: &Runtime,
) -> Result<(Option<Arc<Plugin>>, Option<Arc<Plugin>>), LoadError> {
    if let Some(path) = &config.plugin {
        let both = Arc::new(Plugin::load(
            runtime,
            path,
            Needs {
                pre: true,
                post: true,
            },
        )?);
        return Ok((Some(both.clone()), Some(both)));
    }
    let pre = config
        .pre
        .as_deref()
        .map(|p| {
            Plugin::load(
                runtime,
                p,
                Needs {
                    pre: true,
                    post: false,
                },
            )
        })
        .transpose()?;
    let post = config
        .post
        .as_deref()
        .map(|p| {
            Plugin::load(
                runtime,
                p,
                Needs {
                    pre: false,
                    post: true,
                },
            )
        })
        .transpose()?;
    Ok((pre.map(Arc::new), post.map(Arc::new)))
}
