//! JSON views of the route table, shared by the public listener (`GET /v1/models`, a model's
//! status) and the admin listener (`GET /admin/routes`, `GET /admin/plugins`), and how each
//! listener shows filesystem paths ([`Paths`]).

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::backend::VersionStatus;
use crate::backend::metadata::status_json;
use crate::plugin::{Allocator, Plugin, Share};
use crate::routes::{Failure, Route, RouteTable};

/// How a view shows filesystem paths: in full (the admin listener, like the log), or
/// relative to the plugins directory (the public listener: a client has no business learning
/// the host's layout, and a model's folder name says all it needs).
#[derive(Clone, Debug)]
pub enum Paths {
    Full,
    /// The plugins directory's spellings (as configured and resolved), each ending in `/`,
    /// longest first.
    RelativeTo(Vec<String>),
}

impl Paths {
    /// Paths under `plugins_dir` shown relative to it.
    pub fn relative_to(plugins_dir: &Path) -> Paths {
        let mut roots: Vec<String> = [
            Some(plugins_dir.to_path_buf()),
            plugins_dir.canonicalize().ok(),
        ]
        .into_iter()
        .flatten()
        .map(|p| p.display().to_string().trim_end_matches('/').to_string())
        .filter(|p| !p.is_empty())
        .map(|p| format!("{p}/"))
        .collect();
        // Longest first, so a spelling that contains another is cut whole.
        roots.sort_by_key(|r| std::cmp::Reverse(r.len()));
        roots.dedup();
        Paths::RelativeTo(roots)
    }

    /// `text` (a message, a path) with every path under the plugins directory made relative
    /// to it.
    pub fn text(&self, text: &str) -> String {
        match self {
            Paths::Full => text.to_string(),
            Paths::RelativeTo(roots) => roots.iter().fold(text.to_string(), |text, root| {
                text.replace(root.as_str(), "")
            }),
        }
    }

    pub fn path(&self, path: &Path) -> String {
        self.text(&path.display().to_string())
    }
}

/// The route table: every served model with its plugins, and every folder whose last load
/// failed.
pub fn list_models(table: &RouteTable, paths: &Paths) -> Value {
    let models: Vec<Value> = table
        .routes
        .values()
        .map(|route| {
            let mut entry = route_json(route, paths);
            entry["name"] = json!(route.name);
            entry
        })
        .collect();
    let failures: serde_json::Map<String, Value> = table
        .failures
        .iter()
        .map(|(name, f)| (name.clone(), failure_json(f, paths)))
        .collect();
    json!({ "models": models, "failures": failures })
}

/// `GET /v1/models/{m}[/versions/{v}]`: TF Serving's version status, plus what the gateway
/// knows of the route and the folder's last reload error.
pub fn model_status(
    route: &Route,
    versions: &[VersionStatus],
    failure: Option<&Failure>,
    paths: &Paths,
) -> Value {
    let mut body = status_json(versions);
    body["infergate"] = route_json(route, paths);
    body["infergate"]["last_reload_error"] = failure.map(|f| failure_json(f, paths)).into();
    body
}

/// Each model's plugins (file, digest, load time), limits and last load error, and which
/// instance allocator the plugin host runs on.
pub fn plugins(table: &RouteTable, allocator: Allocator) -> Value {
    let mut models = serde_json::Map::new();
    for (name, route) in &table.routes {
        // The share in effect (defaults filled in), and how loaded it is now.
        let share = route
            .pre
            .as_ref()
            .or(route.post.as_ref())
            .map(|p| p.share());
        let config = share.and_then(Share::config);
        let (waiting, in_use) = share.map_or((0, 0), Share::load);
        models.insert(
            name.clone(),
            json!({
                "pre": plugin_json(route.pre.as_ref(), &Paths::Full),
                "post": plugin_json(route.post.as_ref(), &Paths::Full),
                "limits": {
                    "timeout_ms": route.config.limits.timeout_ms,
                    "memory_mb": route.config.limits.memory_mb,
                    "max_output_mb": route.config.limits.max_output_mb,
                    "max_concurrent_calls": config.map(|c| c.max_concurrent_calls),
                    "max_running_calls": config.map(|c| c.max_running_calls),
                    "running_calls_burst": config.map(|c| c.burst),
                },
                "reuse": { "max_calls": share.and_then(Share::reuse) },
                "calls": {
                    "in_slots": in_use,
                    "waiting": waiting,
                    "idle": share.map_or(0, Share::idle),
                    "strict_cores": share.is_some_and(Share::strict),
                },
                "last_reload_error": table.failures.get(name).map(|f| f.message.clone()),
            }),
        );
    }
    for (name, failure) in &table.failures {
        models.entry(name.clone()).or_insert_with(
            || json!({ "pre": null, "post": null, "last_reload_error": failure.message }),
        );
    }
    json!({ "allocator": allocator.name(), "models": models })
}

/// What the gateway knows of a route: backend, plugins (path, digest, load time), and what
/// the backend loaded from the folder (an onnx model file).
fn route_json(route: &Route, paths: &Paths) -> Value {
    let mut model_file = route.backend.model_file();
    if let Some(Value::String(path)) = model_file.as_mut().and_then(|f| f.get_mut("path")) {
        *path = paths.text(path);
    }
    json!({
        "backend": route.backend_name,
        "backend_model": route.backend_model(),
        "signature": route.config.signature,
        "pre": plugin_json(route.pre.as_ref(), paths),
        "post": plugin_json(route.post.as_ref(), paths),
        "model_file": model_file,
        "loaded_at": unix_seconds(route.loaded_at),
    })
}

fn plugin_json(plugin: Option<&Arc<Plugin>>, paths: &Paths) -> Value {
    plugin.map_or(Value::Null, |p| {
        json!({
            "path": paths.path(p.path()),
            "digest": p.digest(),
            "loaded_at": unix_seconds(p.loaded_at()),
        })
    })
}

fn failure_json(failure: &Failure, paths: &Paths) -> Value {
    json!({ "error": paths.text(&failure.message), "at": unix_seconds(failure.at) })
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
