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
use crate::gateway::Gateway;
use crate::routes::{self, Failure, RouteTable};

/// What one rescan did, by model name.
#[derive(Debug, Default, Serialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub reloaded: Vec<String>,
    pub removed: Vec<String>,
    /// Folders that failed to load (their last good route, if any, still serves).
    pub failed: BTreeMap<String, String>,
    /// Folders whose files changed while they loaded; the next rescan tries again.
    pub unsettled: Vec<String>,
}

impl ReloadReport {
    pub fn changed(&self) -> bool {
        !(self.added.is_empty()
            && self.reloaded.is_empty()
            && self.removed.is_empty()
            && self.failed.is_empty())
    }
}

/// Rescans the plugin directory and swaps in the result. Runs on a blocking thread (it hashes
/// files and compiles plugins); concurrent calls are serialized by the gateway.
pub fn rescan(gateway: &Gateway) -> ReloadReport {
    let mut report = ReloadReport::default();
    let config = gateway.config();
    let dirs = match routes::model_dirs(&config.plugins.dir) {
        Ok(dirs) => dirs,
        Err(e) => {
            // An unreadable plugin dir (mid-swap, unmounted) changes nothing: keep serving.
            tracing::warn!("reload skipped: {e}");
            return report;
        }
    };
    let current = gateway.routes().snapshot();
    let mut next = RouteTable::default();
    for (name, dir) in dirs {
        let print = routes::fingerprint(&dir, config);
        let old = current.routes.get(&name);
        if let Some(route) = old.filter(|r| r.fingerprint == print) {
            next.routes.insert(name.clone(), route.clone());
            if let Some(f) = current
                .failures
                .get(&name)
                .filter(|f| f.fingerprint == print)
            {
                next.failures.insert(name, f.clone());
            }
            continue;
        }
        if let Some(failure) = current
            .failures
            .get(&name)
            .filter(|f| f.fingerprint == print)
        {
            // Same broken inputs as last time: keep what serves, don't recompile or re-log.
            if let Some(route) = old {
                next.routes.insert(name.clone(), route.clone());
            }
            next.failures.insert(name, failure.clone());
            continue;
        }
        let built = routes::load_route(
            &name,
            &dir,
            config,
            gateway.backends(),
            gateway.runtime(),
            gateway.metrics(),
        )
        .map(Arc::new)
        .map_err(|e| e.to_string());
        let route = match built {
            Ok(route) if routes::fingerprint(&dir, config) != route.fingerprint => {
                report.unsettled.push(name.clone());
                if let Some(route) = old {
                    next.routes.insert(name, route.clone());
                }
                continue;
            }
            Ok(route) => warm_up(gateway.runtime(), &route)
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
                list.push(name.clone());
                tracing::info!(model = %name, "loaded");
                next.routes.insert(name, route);
            }
            Err(message) => {
                let keeping = if old.is_some() {
                    "keeping the last good version"
                } else {
                    "not serving it"
                };
                tracing::warn!(model = %name, "load failed, {keeping}: {message}");
                report.failed.insert(name.clone(), message.clone());
                if let Some(route) = old {
                    next.routes.insert(name.clone(), route.clone());
                }
                let failure = Failure {
                    message,
                    at: SystemTime::now(),
                    fingerprint: print,
                };
                next.failures.insert(name, failure);
            }
        }
    }
    for name in current
        .routes
        .keys()
        .filter(|n| !next.routes.contains_key(*n) && !next.failures.contains_key(*n))
    {
        tracing::info!(model = %name, "removed");
        report.removed.push(name.clone());
    }
    gateway.routes().swap(next);
    report
}

/// Sends the model's declared warm-up request (`warmup = "<file>"`, a request body) through
/// the new route's whole pipeline. Runs on a blocking thread, which may wait on the runtime.
pub fn warm_up(
    runtime: &crate::plugin::Runtime,
    route: &Arc<crate::routes::Route>,
) -> Result<(), String> {
    let Some(path) = &route.config.warmup else {
        return Ok(());
    };
    let body = std::fs::read(path).map_err(|e| format!("warmup file {}: {e}", path.display()))?;
    let call = crate::pipeline::PredictCall {
        version: crate::backend::VersionChoice::Latest,
        method: "POST".into(),
        path: format!("/v1/models/{}:predict", route.name),
        query: String::new(),
        headers: Vec::new(),
        body: body.into(),
        request_id: format!("warmup-{}", route.name),
    };
    // `infergate check` loads without a runtime and makes no backend calls.
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return Ok(());
    };
    match handle.block_on(crate::pipeline::predict(runtime, route.clone(), call)) {
        Ok(response) if response.status.is_success() => Ok(()),
        Ok(response) => Err(format!(
            "warmup request ({}) answered {}",
            path.display(),
            response.status
        )),
        Err(e) => Err(format!(
            "warmup request ({}) failed with {}: {e}",
            path.display(),
            e.status()
        )),
    }
}

/// Watches the plugin directory until `shutdown` resolves, rescanning after each quiet period
/// (or every poll interval). Owned by [`crate::run`].
pub async fn watch(gateway: Arc<Gateway>, shutdown: impl Future<Output = ()>) {
    let plugins = &gateway.config().plugins;
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
                        std::future::pending::<()>().await
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
        let report = gateway.reload().await;
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
