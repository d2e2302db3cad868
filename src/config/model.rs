//! `plugins/<model>/model.toml`: which backend model a route calls, with which plugins, and
//! the bounds on each plugin call. The folder's name is the route's name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{BackendConfig, ConfigError, GatewayConfig, parse_toml};
use crate::plugin::ShareConfig;

/// One model folder's `model.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `backend = "tfs"` — a `[backends.<name>]` of gateway.toml.
    pub backend: String,
    /// `model = "resnet"` — the model's name on the backend (default: the folder's name).
    pub model: Option<String>,
    /// `model_file = "model.onnx"` — for an `onnx` backend (and only there): the model this
    /// folder serves, relative to the folder. Part of the folder's content, so replacing the
    /// file reloads the model.
    pub model_file: Option<PathBuf>,
    /// `signature = "serving_default"` — the signature to call unless a request names one.
    #[serde(default = "default_signature")]
    pub signature: String,
    /// `plugin = "plugin.wasm"` — one component exporting both `preprocess` and `postprocess`.
    pub plugin: Option<PathBuf>,
    /// `pre = "pre.wasm"` — a component exporting `preprocess` (without it: TF Serving REST JSON in).
    pub pre: Option<PathBuf>,
    /// `post = "post.wasm"` — a component exporting `postprocess` (without it: TF Serving REST JSON out).
    pub post: Option<PathBuf>,
    /// `warmup = "warmup.png"` — a request body sent through the whole pipeline (plugins and
    /// backend) before a reloaded version replaces the serving one; it must answer 2xx or the
    /// reload fails and the serving version stays.
    pub warmup: Option<PathBuf>,
    /// `[batching]`
    #[serde(default)]
    pub batching: BatchingConfig,
    /// `[limits]`
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `[reuse]`
    #[serde(default)]
    pub reuse: ReuseConfig,
}

/// `[reuse]` — whether this model's plugin instances serve more than one call (opt-in).
///
/// ```toml
/// [reuse]
/// max_calls = 100
/// ```
///
/// Without it every call gets a fresh instance (the gateway's default guarantee: nothing a
/// call leaves behind reaches the next). With it, an instance whose call returned normally
/// serves up to `max_calls` calls of **this model** — never another model's — and is
/// discarded after a trap, a deadline, a memory-cap hit or its `max_calls`th call (pre and
/// post calls both count; with `plugin = …` one instance serves both). What its
/// earlier calls left in the instance's memory (globals, caches, the heap) is visible to the
/// later ones: turn it on only for plugins that don't keep one request's data for the next
/// (or do so on purpose, e.g. a cached lookup table).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReuseConfig {
    /// `max_calls = 100` — calls one instance may serve (1 = a fresh instance per call, as
    /// without `[reuse]`).
    pub max_calls: Option<u32>,
}

/// `[batching]` — how requests for this model are coalesced into one backend call.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    /// `max_batch_size = 32` — rows in one backend call; 1 turns batching off.
    #[serde(default = "default_max_batch_size")]
    pub max_batch_size: usize,
    /// `batch_timeout_us = 1000` — how long the oldest queued request may wait for others.
    #[serde(default = "default_batch_timeout_us")]
    pub batch_timeout_us: u64,
    /// `max_enqueued = 1024` — requests (not rows) waiting in this model's queues; one more
    /// is answered 429 at once.
    #[serde(default = "default_max_enqueued")]
    pub max_enqueued: usize,
    /// `max_concurrent_batches = 2` — backend calls in flight for this model at once.
    #[serde(default = "default_max_concurrent_batches")]
    pub max_concurrent_batches: usize,
    /// `dispatch_when_idle = true` — a batch leaves at once, with whatever is already queued,
    /// when this model has no backend call in flight: waiting for company only pays while
    /// the backend is busy. `false` always waits out `batch_timeout_us` (TF Serving's rule).
    #[serde(default = "default_true")]
    pub dispatch_when_idle: bool,
    /// `allowed_batch_sizes = [1, 2, 4, 8]` — send only these sizes, padding a batch up to the
    /// next one by repeating a real row (the padding is dropped from the outputs). Increasing;
    /// the last must equal `max_batch_size`. Empty: any size.
    #[serde(default)]
    pub allowed_batch_sizes: Vec<usize>,
    /// `pad_variable_length = true` — batch requests whose inputs differ in dims after dim 0
    /// by padding them to the batch's largest with `pad_value` (placed after the data).
    /// Outputs are split by rows only; padded inner dims come back as the model produced them.
    #[serde(default)]
    pub pad_variable_length: bool,
    /// `pad_value = 0.0` — the value padding is filled with (converted to the input's dtype).
    #[serde(default)]
    pub pad_value: f64,
    /// `max_batch_bytes = 268435456` — the largest batch, in tensor bytes as it is sent (after
    /// padding rows and inner dims), that the batcher builds. A request that would take the
    /// batch it joins past it waits for the next batch; a request over it on its own is a
    /// 400. Bounds what a client can make the gateway allocate (padding two requests shaped
    /// `[1, 1, N]` and `[1, N, 1]` would otherwise make `N²` elements).
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
    /// `max_queues = 64` — batch queues this model keeps open at once: one per version,
    /// signature and input shapes after dim 0 (just the ranks with `pad_variable_length`).
    /// A request that would open one more is sent on its own, unbatched; queues idle for
    /// 10 s close. Bounds the tasks and memory that clients sending ever-new shapes or
    /// versions can make the gateway keep.
    #[serde(default = "default_max_queues")]
    pub max_queues: usize,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            max_batch_size: default_max_batch_size(),
            batch_timeout_us: default_batch_timeout_us(),
            max_enqueued: default_max_enqueued(),
            max_concurrent_batches: default_max_concurrent_batches(),
            dispatch_when_idle: true,
            allowed_batch_sizes: Vec::new(),
            pad_variable_length: false,
            pad_value: 0.0,
            max_batch_bytes: default_max_batch_bytes(),
            max_queues: default_max_queues(),
        }
    }
}

/// `[limits]` — bounds on every plugin call of this model.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// `timeout_ms = 1000` — wall-clock deadline of one plugin call; past it, 504.
    #[serde(default = "default_plugin_timeout_ms")]
    pub timeout_ms: u64,
    /// `memory_mb = 64` — linear memory one plugin instance may grow to; past it, 500.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// `max_output_mb = 32` — largest result one plugin call may return (a pre plugin's
    /// tensors and context, a post plugin's body); past it, 500.
    #[serde(default = "default_max_output_mb")]
    pub max_output_mb: u64,
    /// `max_concurrent_calls = 4` — this model's plugin calls that may hold an instance at
    /// once (each up to `memory_mb`). A call that finds them all taken waits for one, first
    /// come first served, for up to `timeout_ms`; none free by then: 503, the call never
    /// started (one that gets a slot then has its whole `timeout_ms` to run). Default:
    /// 4 × `max_running_calls`, at most half of `plugins.max_instances`.
    pub max_concurrent_calls: Option<u32>,
    /// `max_running_calls = 1` — this model's plugin calls that may *execute* at once: its
    /// share of the cores. A running plugin gives its core back at every epoch tick (5 ms) and
    /// queues for one again, so a plugin that loops takes at most this many cores, and the
    /// model's other calls take turns with it. Default: half the machine's cores, rounded up,
    /// kept for calls that run long: while every stretch of the model's calls stays under
    /// 2.5 ms, a call that finds the share taken runs anyway, and the first longer one holds
    /// the model to the share for 1 s. Given explicitly, it is a hard bound (raise it to the
    /// core count on a gateway that serves one model).
    pub max_running_calls: Option<u32>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            timeout_ms: default_plugin_timeout_ms(),
            memory_mb: default_memory_mb(),
            max_output_mb: default_max_output_mb(),
            max_concurrent_calls: None,
            max_running_calls: None,
        }
    }
}

impl LimitsConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn memory_bytes(&self) -> usize {
        (self.memory_mb as usize) << 20
    }

    pub fn max_output_bytes(&self) -> usize {
        (self.max_output_mb as usize) << 20
    }

    /// The model's share of the plugin runtime: the keys given, the rest defaulted from the
    /// machine's cores and the gateway's `plugins.max_instances`.
    pub fn share(&self, max_instances: u32) -> ShareConfig {
        let defaults = ShareConfig::machine_defaults(max_instances);
        let running = self.max_running_calls.unwrap_or(defaults.max_running_calls);
        let slots = self.max_concurrent_calls.unwrap_or_else(|| {
            // Defaulted slots follow an explicit `max_running_calls` up.
            defaults
                .max_concurrent_calls
                .max(running.saturating_mul(4).min((max_instances / 2).max(1)))
        });
        ShareConfig {
            max_concurrent_calls: slots,
            max_running_calls: running.min(slots),
            // A bound the operator wrote is kept to the letter.
            burst: self.max_running_calls.is_none(),
        }
    }
}

/// Largest per-call memory cap a model may ask for; it must fit the engine's memory slots.
pub const MAX_MEMORY_MB: u64 = 4096;

fn default_signature() -> String {
    "serving_default".to_string()
}
fn default_max_batch_size() -> usize {
    32
}
fn default_batch_timeout_us() -> u64 {
    1000
}
fn default_max_enqueued() -> usize {
    1024
}
fn default_max_batch_bytes() -> usize {
    256 << 20
}
fn default_max_queues() -> usize {
    64
}
fn default_true() -> bool {
    true
}

fn default_max_concurrent_batches() -> usize {
    2
}
fn default_plugin_timeout_ms() -> u64 {
    1000
}
fn default_max_output_mb() -> u64 {
    32
}
fn default_memory_mb() -> u64 {
    64
}

impl ModelConfig {
    /// Reads `<dir>/model.toml`, resolves file paths against `<dir>` and validates it against
    /// the gateway config (the backend must exist and fit the folder).
    pub fn load(dir: &Path, gateway: &GatewayConfig) -> Result<Self, ConfigError> {
        let config = Self::read(dir)?;
        config.validate_backend(&dir.join("model.toml"), gateway)?;
        config.validate_share(&dir.join("model.toml"), gateway.plugins.max_instances)?;
        Ok(config)
    }

    /// Reads and validates `<dir>/model.toml` on its own: everything but what depends on
    /// gateway.toml (which backend it names, and whether that backend takes a `model_file`,
    /// which must then exist).
    /// `infergate check --model` checks a folder this way.
    pub fn read(dir: &Path) -> Result<Self, ConfigError> {
        let path = dir.join("model.toml");
        // model.toml may itself be a link (a ConfigMap's are); it must stay in the folder
        // too, or a parse error would quote another file's lines.
        if let Err(message) = confined(dir, "model.toml", Path::new("model.toml")) {
            return Err(ConfigError::invalid(&path, message));
        }
        let text = std::fs::read_to_string(&path).map_err(|cause| ConfigError::Read {
            path: path.clone(),
            cause,
        })?;
        Self::parse(dir, &text)
    }

    /// [`ModelConfig::read`] from the text of `<dir>/model.toml`: parses it, confines every
    /// file it names to the folder, resolves them against it, and validates.
    pub fn parse(dir: &Path, text: &str) -> Result<Self, ConfigError> {
        let path = dir.join("model.toml");
        let mut config: ModelConfig = parse_toml(&path, text)?;
        for (key, file) in [
            ("plugin", &mut config.plugin),
            ("pre", &mut config.pre),
            ("post", &mut config.post),
            ("warmup", &mut config.warmup),
            ("model_file", &mut config.model_file),
        ] {
            if let Some(file) = file {
                *file = confined(dir, key, file).map_err(|m| ConfigError::invalid(&path, m))?;
            }
        }
        config.validate(&path)?;
        Ok(config)
    }

    /// Every file this folder's config names: plugins, warm-up request, model file.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        [
            &self.plugin,
            &self.pre,
            &self.post,
            &self.warmup,
            &self.model_file,
        ]
        .into_iter()
        .flatten()
        .map(PathBuf::as_path)
    }

    /// The plugin file that runs `preprocess`, if any.
    pub fn pre_path(&self) -> Option<&Path> {
        self.plugin.as_deref().or(self.pre.as_deref())
    }

    /// The plugin file that runs `postprocess`, if any.
    pub fn post_path(&self) -> Option<&Path> {
        self.plugin.as_deref().or(self.post.as_deref())
    }

    /// The backend must be one gateway.toml defines, and take this folder's `model_file`
    /// (or its absence).
    fn validate_backend(&self, path: &Path, gateway: &GatewayConfig) -> Result<(), ConfigError> {
        let Some(backend) = gateway.backends.get(&self.backend) else {
            let known: Vec<&str> = gateway.backends.keys().map(String::as_str).collect();
            return Err(ConfigError::invalid(
                path,
                format!(
                    "backend `{}` is not defined in gateway.toml (defined: {})",
                    self.backend,
                    known.join(", ")
                ),
            ));
        };
        self.validate_model_file(path, backend)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        if self.plugin.is_some() && (self.pre.is_some() || self.post.is_some()) {
            return Err(ConfigError::invalid(
                path,
                "`plugin` sets both pre and post; use it or `pre`/`post`, not both",
            ));
        }
        if let Some(warmup) = self.warmup.as_ref().filter(|w| !w.is_file()) {
            return Err(ConfigError::invalid(
                path,
                format!("warmup file {} does not exist", warmup.display()),
            ));
        }
        for file in [&self.plugin, &self.pre, &self.post].into_iter().flatten() {
            if !file.is_file() {
                return Err(ConfigError::invalid(
                    path,
                    format!("plugin file {} does not exist", file.display()),
                ));
            }
        }
        if self.model.as_deref() == Some("") || self.signature.is_empty() {
            return Err(ConfigError::invalid(
                path,
                "`model` and `signature` must not be empty",
            ));
        }
        let b = &self.batching;
        if b.max_batch_size == 0 || b.max_enqueued == 0 {
            return Err(ConfigError::invalid(
                path,
                "batching.max_batch_size and batching.max_enqueued must be at least 1",
            ));
        }
        if b.max_concurrent_batches == 0 || b.max_queues == 0 || b.max_batch_bytes == 0 {
            return Err(ConfigError::invalid(
                path,
                "batching.max_concurrent_batches, batching.max_queues and batching.max_batch_bytes \
                 must be at least 1",
            ));
        }
        if !b.allowed_batch_sizes.is_empty() {
            let increasing = b.allowed_batch_sizes.windows(2).all(|w| w[0] < w[1])
                && b.allowed_batch_sizes[0] > 0;
            if !increasing || b.allowed_batch_sizes.last() != Some(&b.max_batch_size) {
                return Err(ConfigError::invalid(
                    path,
                    format!(
                        "batching.allowed_batch_sizes must increase and end with max_batch_size ({})",
                        b.max_batch_size
                    ),
                ));
            }
        }
        self.validate_limits(path)
    }

    /// An `onnx` backend needs `model_file`, naming a file that exists; other kinds take none.
    fn validate_model_file(&self, path: &Path, backend: &BackendConfig) -> Result<(), ConfigError> {
        match (backend, &self.model_file) {
            (BackendConfig::Onnx(_), None) => Err(ConfigError::invalid(
                path,
                format!(
                    "backend `{}` is an onnx backend: set `model_file = \"model.onnx\"`",
                    self.backend
                ),
            )),
            (BackendConfig::Onnx(_), Some(file)) if !file.is_file() => Err(ConfigError::invalid(
                path,
                format!("model file {} does not exist", file.display()),
            )),
            (BackendConfig::Onnx(_), Some(_)) | (_, None) => Ok(()),
            (other, Some(_)) => Err(ConfigError::invalid(
                path,
                format!(
                    "`model_file` is for onnx backends; backend `{}` is {}",
                    self.backend,
                    other.kind()
                ),
            )),
        }
    }

    /// A model can't have more slots than the gateway's whole pool.
    fn validate_share(&self, path: &Path, max_instances: u32) -> Result<(), ConfigError> {
        match self.limits.max_concurrent_calls {
            Some(slots) if slots > max_instances => Err(ConfigError::invalid(
                path,
                format!(
                    "limits.max_concurrent_calls ({slots}) is more than the gateway's \
                     plugins.max_instances ({max_instances}); lower it or raise max_instances"
                ),
            )),
            _ => Ok(()),
        }
    }

    fn validate_limits(&self, path: &Path) -> Result<(), ConfigError> {
        if self.reuse.max_calls == Some(0) {
            return Err(ConfigError::invalid(
                path,
                "reuse.max_calls must be at least 1 (1, or no [reuse], is a fresh instance per call)",
            ));
        }
        let l = &self.limits;
        if l.max_concurrent_calls == Some(0) || l.max_running_calls == Some(0) {
            return Err(ConfigError::invalid(
                path,
                "limits.max_concurrent_calls and limits.max_running_calls must be at least 1",
            ));
        }
        if let (Some(slots), Some(running)) = (l.max_concurrent_calls, l.max_running_calls)
            && running > slots
        {
            return Err(ConfigError::invalid(
                path,
                format!(
                    "limits.max_running_calls ({running}) is more than \
                     limits.max_concurrent_calls ({slots}): a call runs in one of the slots"
                ),
            ));
        }
        if l.timeout_ms == 0 {
            return Err(ConfigError::invalid(
                path,
                "limits.timeout_ms must be greater than 0",
            ));
        }
        if l.max_output_mb == 0 {
            return Err(ConfigError::invalid(
                path,
                "limits.max_output_mb must be at least 1",
            ));
        }
        if l.memory_mb == 0 || l.memory_mb > MAX_MEMORY_MB {
            return Err(ConfigError::invalid(
                path,
                format!("limits.memory_mb must be between 1 and {MAX_MEMORY_MB}"),
            ));
        }
        Ok(())
    }
}

/// `file` (the value of `key` in `<dir>/model.toml`) as a path in `dir`, if it stays inside
/// the folder: the folder is what a model's author ships, and it must not reach the host's
/// files. So the path must be relative, must not climb out with `..`, and once symbolic links
/// are resolved must still lie inside the folder (itself resolved: the folder may be a link,
/// as in a ConfigMap holding several folders). Kubernetes' ConfigMap layout — files linked
/// into `..data/`, itself a link to a timestamped folder beside it — stays inside and works.
/// A file that doesn't exist passes here; `validate` reports it. The message never shows
/// where a link leads (it may be read on the public listener); the log does.
fn confined(dir: &Path, key: &str, file: &Path) -> Result<PathBuf, String> {
    use std::path::Component;
    let written = file.display();
    if file.has_root() || file.is_absolute() {
        return Err(format!(
            "`{key} = \"{written}\"` is an absolute path; name a file inside the model folder, \
             relative to it"
        ));
    }
    let normal = lexically_normal(file);
    if normal.components().next() == Some(Component::ParentDir) {
        return Err(format!(
            "`{key} = \"{written}\"` climbs out of the model folder with `..`; name a file \
             inside it"
        ));
    }
    let joined = dir.join(&normal);
    if let (Ok(real), Ok(root)) = (joined.canonicalize(), dir.canonicalize())
        && !real.starts_with(&root)
    {
        tracing::warn!(
            folder = %dir.display(),
            "`{key} = \"{written}\"` resolves to {}, outside the model folder",
            real.display()
        );
        return Err(format!(
            "`{key} = \"{written}\"` leads outside the model folder through a symbolic link; \
             put the file itself in the folder"
        ));
    }
    Ok(joined)
}

/// `a/b/../c` as `a/c`: the path a person would write, for messages and status output.
/// Lexical, so a `..` after a symlinked folder means its parent as written, not the link
/// target's.
fn lexically_normal(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(slots: Option<u32>, running: Option<u32>) -> LimitsConfig {
        LimitsConfig {
            max_concurrent_calls: slots,
            max_running_calls: running,
            ..LimitsConfig::default()
        }
    }

    /// Keys given are kept; missing ones follow the machine, and defaulted slots follow a
    /// raised `max_running_calls` up (four each), within half the gateway's pool.
    #[test]
    fn the_share_fills_in_what_is_not_given() {
        let defaults = ShareConfig::machine_defaults(1000);
        assert_eq!(limits(None, None).share(1000), defaults);
        let given = limits(Some(3), Some(2)).share(1000);
        assert_eq!(
            (given.max_concurrent_calls, given.max_running_calls),
            (3, 2)
        );
        assert!(
            !given.burst,
            "an explicit max_running_calls is a hard bound"
        );
        assert!(
            limits(Some(3), None).share(1000).burst,
            "the default share bursts"
        );
        let raised = limits(None, Some(16)).share(1000);
        assert_eq!(
            (raised.max_concurrent_calls, raised.max_running_calls),
            (64, 16)
        );
        let small_pool = limits(None, Some(16)).share(10);
        assert_eq!(
            (
                small_pool.max_concurrent_calls,
                small_pool.max_running_calls
            ),
            (5, 5),
            "half of the 10 slots, and no more running calls than slots"
        );
    }
}
