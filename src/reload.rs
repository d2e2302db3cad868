//! Hot reload of `plugins/`: notice changes (filesystem events, or polling), wait for the
//! directory to go quiet, rebuild every changed model folder off the request path, and swap in
//! a complete new route table. Unchanged folders keep their `Arc<Route>` (same plugins, same
//! batcher); a folder that fails to load keeps its last good route and records why; a removed
//! folder's route goes away. Requests in flight finish on the route they started with.
//!
//! Writers should put large files in place atomically ("write elsewhere, then `mv`" on the
//! same filesystem). Partial writes are still handled: the quiet period waits out a copy, and
//! a folder whose files change while it is being compiled is retried rather than swapped in.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::WatchMode;
use crate::loader::{self, RouteLoader};
use crate::routes::{Failure, RouteStore, RouteTable};

/// What one rescan did, by model name.
#[derive(Debug, Default, Serialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub reloaded: Vec<String>,
    pub removed: Vec<String>,
    /// Folders that failed to load in this rescan (their last good route, if any, still
    /// serves).
    pub failed: BTreeMap<String, String>,
    /// Every folder whose last load failed, by name: this rescan's failures and older ones
    /// whose files have not changed since.
    pub failing: BTreeMap<String, String>,
    /// Folders whose files changed while they loaded; the next rescan tries again.
    pub unsettled: Vec<String>,
}

/// Rescans the plugin directory on demand (watcher, `POST /admin/reload`) and swaps the
/// result into the route store. Holds only what that needs: the loader and the store.
pub struct Reloader {
    loader: Arc<RouteLoader>,
    routes: Arc<RouteStore>,
    /// One rescan at a time (watcher and `POST /admin/reload` may ask together). A tokio
    /// mutex: it is held across the await of the blocking rescan.
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(loader: Arc<RouteLoader>, routes: Arc<RouteStore>) -> Self {
        Self {
            loader,
            routes,
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// Rescans now (off the async workers), swaps in the result and counts the outcomes.
    pub async fn reload(self: &Arc<Self>) -> ReloadReport {
        let _one_at_a_time = self.one_at_a_time.lock().await;
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.rescan()).await {
            Ok(report) => {
                self.count(&report);
                report
            }
            Err(e) => {
                tracing::error!("reload task failed: {e}");
                ReloadReport::default()
            }
        }
    }

    fn count(&self, report: &ReloadReport) {
        let metrics = self.loader.metrics();
        let outcomes = [
            ("added", &report.added),
            ("reloaded", &report.reloaded),
            ("removed", &report.removed),
        ];
        for (outcome, models) in outcomes {
            for model in models {
                metrics.reload(model, outcome);
            }
        }
        for model in report.failed.keys() {
            metrics.reload(model, "failed");
        }
    }

    /// Rescans the plugin directory and swaps in the result. Runs on a blocking thread (it
    /// hashes files and compiles plugins).
    fn rescan(&self) -> ReloadReport {
        let mut report = ReloadReport::default();
        let dirs = match self.loader.model_dirs() {
            Ok(dirs) => dirs,
            Err(e) => {
                // An unreadable plugin dir (mid-swap, unmounted) changes nothing: keep serving.
                tracing::warn!("reload skipped: {e}");
                return report;
            }
        };
        let current = self.routes.snapshot();
        let mut next = RouteTable::default();
        for (name, dir) in dirs {
            self.rescan_folder(&name, &dir, &current, &mut next, &mut report);
        }
        for name in current
            .routes
            .keys()
            .filter(|n| !next.routes.contains_key(*n) && !next.failures.contains_key(*n))
        {
            tracing::info!(model = %name, "removed");
            report.removed.push(name.clone());
        }
        // Every folder still broken, whether it failed this time or before and is unchanged.
        report.failing = next
            .failures
            .iter()
            .map(|(name, f)| (name.clone(), f.message.clone()))
            .collect();
        self.routes.swap(next);
        report
    }

    /// Decides one folder's entry in the next table: kept as it is (same fingerprint), its
    /// known failure kept (same broken inputs), or loaded anew.
    fn rescan_folder(
        &self,
        name: &str,
        dir: &Path,
        current: &RouteTable,
        next: &mut RouteTable,
        report: &mut ReloadReport,
    ) {
        let print = loader::fingerprint(dir);
        let old = current.routes.get(name);
        let known_failure = current
            .failures
            .get(name)
            .filter(|f| f.fingerprint == print);
        if let Some(route) = old.filter(|r| r.fingerprint == print) {
            next.routes.insert(name.to_string(), route.clone());
            if let Some(f) = known_failure {
                next.failures.insert(name.to_string(), f.clone());
            }
            return;
        }
        if let Some(failure) = known_failure {
            // Same broken inputs as last time: keep what serves, don't recompile or re-log.
            if let Some(route) = old {
                next.routes.insert(name.to_string(), route.clone());
            }
            next.failures.insert(name.to_string(), failure.clone());
            return;
        }
        let built = self
            .loader
            .load(name, dir)
            .map(Arc::new)
            .map_err(|e| e.to_string());
        let route = match built {
            Ok(route) if loader::fingerprint(dir) != route.fingerprint => {
                report.unsettled.push(name.to_string());
                if let Some(route) = old {
                    next.routes.insert(name.to_string(), route.clone());
                }
                return;
            }
            Ok(route) => self
                .loader
                .warm_up(&route)
                .map(|()| route)
                .map_err(|e| format!("warm-up failed: {e}")),
            Err(message) => Err(message),
        };
        match route {
            Ok(route) => {
                let list = if old.is_some() {
                    &mut report.reloaded
                } else {
                    &mut report.added
                };
                list.push(name.to_string());
                tracing::info!(model = %name, "loaded");
                next.routes.insert(name.to_string(), route);
            }
            Err(message) => {
                let keeping = if old.is_some() {
                    "keeping the last good version"
                } else {
                    "not serving it"
                };
                tracing::warn!(model = %name, "load failed, {keeping}: {message}");
                report.failed.insert(name.to_string(), message.clone());
                if let Some(route) = old {
                    next.routes.insert(name.to_string(), route.clone());
                }
                let failure = Failure {
                    message,
                    at: SystemTime::now(),
                    fingerprint: print,
                };
                next.failures.insert(name.to_string(), failure);
            }
        }
    }
}

/// Watches the plugin directory until `shutdown` resolves, rescanning after each quiet period
/// (or every poll interval). Owned by [`crate::run`].
pub async fn watch(reloader: Arc<Reloader>, shutdown: impl Future<Output = ()>) {
    let plugins = &reloader.loader.config().plugins;
    let quiet = Duration::from_millis(plugins.debounce_ms);
    let (tx, mut events) = mpsc::unbounded_channel::<()>();
    // Keeps the OS watcher alive for the life of this task.
    let _watcher = match plugins.watch {
        WatchMode::Notify => match start_watcher(&plugins.dir, tx.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    "cannot watch {} ({e}); set plugins.watch = \"poll\"",
                    plugins.dir.display()
                );
                None
            }
        },
        WatchMode::Poll | WatchMode::Off => None,
    };
    if _watcher.is_some() {
        // Anything that changed between the initial load and the watch starting had no
        // event to report it: look once now.
        let _ = tx.send(());
    }
    let poll = (plugins.watch == WatchMode::Poll)
        .then(|| Duration::from_millis(plugins.poll_interval_ms.max(10)));
    tokio::pin!(shutdown);
    loop {
        let woke = async {
            match poll {
                Some(period) => tokio::time::sleep(period).await,
                None => {
                    if events.recv().await.is_none() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        tokio::select! {
            _ = &mut shutdown => return,
            _ = woke => {}
        }
        // Wait for the directory to go quiet: every event restarts the wait.
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                more = events.recv() => if more.is_none() { break },
                _ = tokio::time::sleep(quiet) => break,
            }
        }
        let report = reloader.reload().await;
        if !report.unsettled.is_empty() {
            // Files were still changing: look again after another quiet period.
            let _ = tx.send(());
        }
    }
}

fn start_watcher(
    dir: &Path,
    tx: mpsc::UnboundedSender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Any event, or a watcher error, just means "look again"; the rescan decides by
        // content what changed.
        if event.as_ref().map_or(true, |e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })?;
    // Recursive: model folders, files inside them and Kubernetes' `..data` symlink swaps.
    watcher.watch(dir, RecursiveMode::Recursive)?;
    Ok(watcher)
}
