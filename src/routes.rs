//! Routes: what serves one model ([`Route`]: its config, plugins, backend and batcher, built
//! by [`Route::build`]) and the table of them by name ([`RouteTable`]), an immutable snapshot
//! swapped whole ([`RouteStore`]). A request holds the `Arc<Route>` it started with, so a
//! reload never changes a request midway. Reading model folders into routes is the loader's
//! job (`crate::loader`).

mod specs;
mod table;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

pub use specs::{MAX_CACHED_VERSIONS, Signature, Signatures, SpecCache};
pub use table::{Failure, Fingerprint, RouteStore, RouteTable};

use crate::backend::{Backend, Counted, ModelTarget, VersionChoice};
use crate::batch::Batcher;
use crate::config::ModelConfig;
use crate::metrics::ModelMetrics;
use crate::plugin::{CallLimits, Plugin};

/// Everything needed to serve one model.
pub struct Route {
    /// The folder's name: `/v1/models/{name}`.
    pub name: String,
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub backend_name: String,
    /// The model's backend, its failures counted in the model's series.
    pub backend: Arc<dyn Backend>,
    pub pre: Option<Arc<Plugin>>,
    pub post: Option<Arc<Plugin>>,
    /// Requests reach the backend through here, batched with their peers.
    pub batcher: Batcher,
    /// The model's series in the gateway's metrics.
    pub metrics: ModelMetrics,
    pub loaded_at: SystemTime,
    /// Hash of what the route was built from (model.toml and the files it names); a rescan
    /// that finds the same fingerprint keeps this route as it is.
    pub fingerprint: Fingerprint,
    /// Signature metadata per version, fetched from the backend the first time a REST JSON
    /// or tensor request needs it to type or check its values.
    pub specs: SpecCache,
}

/// The parts a [`Route`] is built from, each already loaded and checked.
pub struct Parts {
    pub name: String,
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub backend: Arc<dyn Backend>,
    pub pre: Option<Arc<Plugin>>,
    pub post: Option<Arc<Plugin>>,
    pub metrics: ModelMetrics,
    pub fingerprint: Fingerprint,
}

impl Route {
    /// Assembles a route: wraps its backend to count failures and starts its batcher (whose
    /// queues spawn tasks on first use, so this needs no runtime).
    pub fn build(parts: Parts) -> Route {
        let Parts {
            name,
            dir,
            config,
            backend,
            pre,
            post,
            metrics,
            fingerprint,
        } = parts;
        let backend: Arc<dyn Backend> = Arc::new(Counted::new(backend, metrics.clone()));
        let batcher = Batcher::new(
            &name,
            config.batching.clone(),
            backend.clone(),
            backend.timeout(),
            metrics.clone(),
        );
        Route {
            batcher,
            metrics,
            name,
            dir,
            backend_name: config.backend.clone(),
            config,
            backend,
            pre,
            post,
            loaded_at: SystemTime::now(),
            fingerprint,
            specs: SpecCache::default(),
        }
    }

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
}
