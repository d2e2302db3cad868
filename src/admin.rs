//! The operator listener, on its own address (loopback by default): reload, the route table,
//! plugin status, metrics and health. Kept off the public port so operators' endpoints are
//! never exposed to API consumers by accident; with a token configured (required off
//! loopback) every endpoint but `/healthz` needs `Authorization: Bearer <token>`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::gateway::Gateway;
use crate::ingress::Body;

pub async fn handle(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path();
    if path != "/healthz" && !authorized(&gateway, &request) {
        let mut response = json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({ "error": "the admin API needs `Authorization: Bearer <token>` (server.admin_token)" }),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"infergate-admin\""),
        );
        return Ok(response);
    }
    let (status, body) = match (request.method().as_str(), path) {
        ("GET", "/healthz") => (StatusCode::OK, serde_json::json!({ "status": "ok" })),
        ("GET", "/metrics") => return Ok(crate::ingress::metrics_response(&gateway)),
        ("GET", "/admin/plugins") => (StatusCode::OK, plugins(&gateway)),
        ("POST", "/admin/reload") => {
            let report = gateway.reload().await;
            (
                StatusCode::OK,
                serde_json::to_value(&report).unwrap_or_default(),
            )
        }
        ("GET", "/admin/routes") => {
            let table = gateway.routes().snapshot();
            (StatusCode::OK, crate::ingress::list_models(&table))
        }
        (method, path) => (
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": format!("no such endpoint: {method} {path}") }),
        ),
    };
    Ok(json(status, body))
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// True when no token is configured, or the request carries it as a bearer token.
fn authorized<B>(gateway: &Gateway, request: &Request<B>) -> bool {
    let Some(token) = gateway.admin_token() else {
        return true;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

/// Compares without stopping at the first difference, so response time says nothing about
/// how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

/// Each model's plugins: file, digest, exports, load time, and the folder's last load error.
fn plugins(gateway: &Gateway) -> serde_json::Value {
    let table = gateway.routes().snapshot();
    let mut models = serde_json::Map::new();
    for (name, route) in &table.routes {
        let plugin = |p: &Option<Arc<crate::plugin::Plugin>>| {
            p.as_ref().map(|p| {
                serde_json::json!({
                    "path": p.path().display().to_string(),
                    "digest": p.digest(),
                    "loaded_at": crate::ingress::unix_seconds(p.loaded_at()),
                })
            })
        };
        models.insert(
            name.clone(),
            serde_json::json!({
                "pre": plugin(&route.pre),
                "post": plugin(&route.post),
                "limits": {
                    "timeout_ms": route.config.limits.timeout_ms,
                    "memory_mb": route.config.limits.memory_mb,
                    "max_output_mb": route.config.limits.max_output_mb,
                },
                "last_reload_error": table.failures.get(name).map(|f| f.message.clone()),
            }),
        );
    }
    for (name, failure) in &table.failures {
        models.entry(name.clone()).or_insert_with(|| {
            serde_json::json!({ "pre": null, "post": null, "last_reload_error": failure.message })
        });
    }
    serde_json::json!({
        "allocator": format!("{:?}", gateway.runtime().allocator()),
        "models": models,
    })
}
