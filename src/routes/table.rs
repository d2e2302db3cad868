//! The route table: an immutable map of model name → [`Route`], plus the folders whose last
//! load failed, and the [`RouteStore`] that readers snapshot and reloads swap whole.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::Route;

/// An immutable set of routes by name, and the model folders that failed to (re)load.
#[derive(Default)]
pub struct RouteTable {
    pub routes: BTreeMap<String, Arc<Route>>,
    /// The last load failure per folder. A failed reload keeps the folder's last good route
    /// in `routes` and records why here; a folder that never loaded is only here.
    pub failures: BTreeMap<String, Failure>,
}

impl RouteTable {
    pub fn get(&self, name: &str) -> Option<Arc<Route>> {
        self.routes.get(name).cloned()
    }
}

/// Why a model folder's last load failed, and what it was loading.
#[derive(Clone, Debug)]
pub struct Failure {
    pub message: String,
    pub at: SystemTime,
    pub fingerprint: Fingerprint,
}

/// A content hash of a model folder's inputs: `model.toml` and every file it names (plugins,
/// warm-up request, model file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

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
