//! Plugins: a model's `.wasm` components, loaded once (compiled and pre-instantiated, never on
//! the request path) by the [`Host`], each call run in a fresh, sandboxed, bounded `Store` (or,
//! for a model with `[reuse]`, a warm one of that model's, re-armed per call).
//!
//! A plugin file may export `preprocess`, `postprocess` or both (the worlds of
//! `plugin-sdk/wit/plugin.wit`); loading checks the exports the model needs.
//!
//! - `types`: what a call takes and gives (request, prepared tensors, rejection, errors).
//! - `host`: the shared engine, linker and epoch ticker.
//! - `sandbox`: one call's state (WASI context, memory cap, captured output, host imports).
//! - `call`: one call, bounded and classified.
//! - `share`: a model's share of the runtime (instance slots, cores, its warm instances when
//!   it opts into `[reuse]`), so no model can starve another.
//! - `convert`: the gateway's types to and from the generated WIT types, checked.
//! - [`ops`]: the native image and tensor ops of contract 0.2.0 (`ops` interface), bounded by
//!   the calling plugin's deadline and memory cap; public so tests and benches run the kernels.
//! - `bindings`: the generated WIT bindings; `cache`: compiled plugins on disk.

mod bindings;
mod cache;
mod call;
mod convert;
mod host;
pub mod ops;
mod sandbox;
mod share;
mod types;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

pub use convert::{RawTensor, check_prepared, check_response};
pub use host::{
    Allocator, DEFAULT_MAX_INSTANCES, DEFAULT_MAX_PLUGIN_MB, EPOCH_TICK, Host, HostError,
};
pub use sandbox::CallTag;
pub use share::{Share, ShareConfig, cores};
pub use types::{CallError, CallLimits, PluginRequest, Prepared, Rejection};

use bindings::{post::PostprocessorPre, pre::PreprocessorPre};
use sandbox::Sandbox;

/// Which exports a model needs from a plugin file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needs {
    pub pre: bool,
    pub post: bool,
}

/// Why a plugin file can't be used. The message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct LoadError {
    pub path: PathBuf,
    pub reason: String,
}

/// A compiled, type-checked plugin file, ready to instantiate on the host that loaded it.
pub struct Plugin {
    host: Host,
    path: PathBuf,
    digest: String,
    loaded_at: SystemTime,
    pre: Option<PreprocessorPre<Sandbox>>,
    post: Option<PostprocessorPre<Sandbox>>,
    /// The model's share of the runtime, which every call of this plugin runs in.
    share: Share,
    /// Tells this load's warm instances from any other plugin's (`[reuse]`).
    key: share::PluginKey,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.path)
            .field("digest", &self.digest)
            .finish()
    }
}

impl Plugin {
    /// Compiles `path` and checks it exports what `needs` asks for. CPU-heavy (Cranelift):
    /// call it from a blocking thread, never on the async runtime.
    pub fn load(host: &Host, path: &Path, needs: Needs) -> Result<Plugin, LoadError> {
        let fail = |reason: String| LoadError {
            path: path.to_path_buf(),
            reason,
        };
        // The size first, from the file's metadata, so an oversized file is never read.
        let size = std::fs::metadata(path)
            .map_err(|e| fail(format!("cannot read: {e}")))?
            .len();
        check_size(host, size).map_err(fail)?;
        let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        Self::from_bytes(host, path, &bytes, needs)
    }

    /// Like [`Plugin::load`] for bytes already read; `path` only names them in errors.
    pub fn from_bytes(
        host: &Host,
        path: &Path,
        bytes: &[u8],
        needs: Needs,
    ) -> Result<Plugin, LoadError> {
        let fail = |reason: String| LoadError {
            path: path.to_path_buf(),
            reason,
        };
        check_size(host, bytes.len() as u64).map_err(fail)?;
        if !bytes.starts_with(b"\0asm") {
            return Err(fail(
                "not a WebAssembly file (build plugins with `--target wasm32-wasip2`)".into(),
            ));
        }
        let digest = hex::encode(Sha256::digest(bytes));
        let component = cache::component(host.engine(), host.cache_dir(), &digest, bytes).map_err(|e| {
            let text = format!("{e:#}");
            if text.contains("core module") || text.contains("component") && text.contains("expected") {
                fail(format!("not a WebAssembly component (a core module? build with `--target wasm32-wasip2`): {text}"))
            } else {
                fail(format!("invalid WebAssembly component: {text}"))
            }
        })?;
        let instance_pre = host.linker().instantiate_pre(&component).map_err(|e| {
            fail(format!(
                "needs an import the gateway does not provide: {e:#}"
            ))
        })?;
        let pre = needs
            .pre
            .then(|| PreprocessorPre::new(instance_pre.clone()))
            .transpose()
            .map_err(|e| {
                fail(format!(
                    "does not export `preprocess` as contract infergate:plugin (0.1.0 or 0.2.0) defines it: {e:#}"
                ))
            })?;
        let post = needs
            .post
            .then(|| PostprocessorPre::new(instance_pre))
            .transpose()
            .map_err(|e| {
                fail(format!(
                    "does not export `postprocess` as contract infergate:plugin (0.1.0 or 0.2.0) defines it: {e:#}"
                ))
            })?;
        Ok(Plugin {
            host: host.clone(),
            path: path.to_path_buf(),
            digest,
            loaded_at: SystemTime::now(),
            pre,
            post,
            share: Share::unbounded(),
            key: next_key(),
        })
    }

    /// Runs this plugin's calls in `share` (its model's: the pre and post plugins of one
    /// model hold the same share). Without it only the host's instance pool bounds them.
    pub fn with_share(mut self, share: Share) -> Plugin {
        self.host.idlers().register(&share);
        self.share = share;
        self
    }

    /// The share this plugin's calls run in.
    pub fn share(&self) -> &Share {
        &self.share
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `sha256:<hex>` of the file's bytes.
    pub fn digest(&self) -> String {
        format!("sha256:{}", self.digest)
    }

    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }
}

/// Refuses a plugin file bigger than `plugins.max_plugin_mb`, saying by how much.
fn check_size(host: &Host, size: u64) -> Result<(), String> {
    let limit = host.max_plugin_bytes();
    if size <= limit {
        return Ok(());
    }
    #[allow(clippy::cast_precision_loss)] // a size shown to one decimal
    let mib = |bytes: u64| bytes as f64 / f64::from(1u32 << 20);
    Err(format!(
        "is {:.1} MiB, over the {:.0} MiB a plugin may be (plugins.max_plugin_mb in \
         gateway.toml); compiling it would take memory and time in proportion",
        mib(size),
        mib(limit)
    ))
}

/// A key no other plugin load has had.
fn next_key() -> share::PluginKey {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
