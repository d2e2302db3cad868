//! JSON views of the route table, shared by the public listener (`GET /v1/models`, a model's
//! status) and the admin listener (`GET /admin/routes`, `GET /admin/plugins`).

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::backend::VersionStatus;
use crate::backend::metadata::status_json;
use crate::plugin::{Allocator, Plugin, Share};
use crate::routes::{Failure, Route, RouteTable};

/// The route table: every served model with its plugins, and every folder whose last load
/// failed.
pub fn list_models(table: &RouteTable) -> Value {
    let models: Vec<Value> = table
        .routes
        .values()
        .map(|route| {
            let mut entry = route_json(route);
            entry["name"] = json!(route.name);
            entry
        })
        .collect();
    let failures: serde_json::Map<String, Value> = table
        .failures
        .iter()
        .map(|(name, f)| (name.clone(), failure_json(f)))
        .collect();
    json!({ "models": models, "failures": failures })
}

/// `GET /v1/models/{m}[/versions/{v}]`: TF Serving's version status, plus what the gateway
/// knows of the route and the folder's last reload error.
pub fn model_status(route: &Route, versions: &[VersionStatus], failure: Option<&Failure>) -> Value {
    let mut body = status_json(versions);
    body["infergate"] = route_json(route);
    body["infergate"]["last_reload_error"] = failure.map(failure_json).into();
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
                "pre": plugin_json(route.pre.as_ref()),
                "post": plugin_json(route.post.as_ref()),
                "limits": {
                    "timeout_ms": route.config.limits.timeout_ms,
                    "memory_mb": route.config.limits.memory_mb,
                    "max_output_mb": route.config.limits.max_output_mb,
                    "max_concurrent_calls": config.map(|c| c.max_concurrent_calls),
                    "max_running_calls": config.map(|c| c.max_running_calls),
                },
                "reuse": { "max_calls": share.and_then(Share::reuse) },
                "calls": {
                    "in_slots": in_use,
                    "waiting": waiting,
                    "idle": share.map_or(0, Share::idle),
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
fn route_json(route: &Route) -> Value {
    json!({
        "backend": route.backend_name,
        "backend_model": route.backend_model(),
        "signature": route.config.signature,
        "pre": plugin_json(route.pre.as_ref()),
        "post": plugin_json(route.post.as_ref()),
        "model_file": route.backend.model_file(),
        "loaded_at": unix_seconds(route.loaded_at),
    })
}

fn plugin_json(plugin: Option<&Arc<Plugin>>) -> Value {
    plugin.map_or(Value::Null, |p| {
        json!({
            "path": p.path().display().to_string(),
            "digest": p.digest(),
            "loaded_at": unix_seconds(p.loaded_at()),
        })
    })
}

fn failure_json(failure: &Failure) -> Value {
    json!({ "error": failure.message, "at": unix_seconds(failure.at) })
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
