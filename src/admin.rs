//! The operator listener, on its own address (loopback by default): reload, the route table,
//! plugin status, metrics, health and readiness. Kept off the public port so operators' endpoints are
//! never exposed to API consumers by accident; with a token configured (required off
//! loopback) every endpoint but `/healthz` and `/readyz` needs `Authorization: Bearer <token>`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::auth::{bearer_token, constant_time_eq};
use crate::gateway::Gateway;
use crate::ingress::Body;
use crate::views;

pub async fn handle(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path();
    // Probes carry no credentials: liveness and readiness answer without the token.
    let open = matches!(path, "/healthz" | "/readyz");
    if !open && !authorized(&gateway, &request) {
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
        // Probes often point at the admin port: it answers readiness as the public one does.
        ("GET", "/readyz") => gateway.readiness(),
        ("GET", "/metrics") => return Ok(crate::ingress::metrics_response(&gateway)),
        ("GET", "/admin/plugins") => {
            let table = gateway.routes().snapshot();
            let allocator = gateway.host().allocator();
            (StatusCode::OK, views::plugins(&table, allocator))
        }
        ("POST", "/admin/reload") => {
            let report = gateway.reload().await;
            (
                StatusCode::OK,
                serde_json::to_value(&report).unwrap_or_default(),
            )
        }
        ("GET", "/admin/routes") => {
            let table = gateway.routes().snapshot();
            (
                StatusCode::OK,
                views::list_models(&table, &views::Paths::Full),
            )
        }
        (method, path) if ENDPOINTS.iter().any(|(_, p)| *p == path) => {
            let allowed: Vec<&str> = ENDPOINTS
                .iter()
                .filter(|(_, p)| *p == path)
                .map(|(m, _)| *m)
                .collect();
            let mut response = json(
                StatusCode::METHOD_NOT_ALLOWED,
                serde_json::json!({ "error": format!("{method} is not allowed on {path}") }),
            );
            if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            return Ok(response);
        }
        (method, path) => (
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": format!("no such endpoint: {method} {path}") }),
        ),
    };
    Ok(json(status, body))
}

/// Every (method, path) the admin listener serves.
const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/admin/plugins"),
    ("POST", "/admin/reload"),
    ("GET", "/admin/routes"),
];

fn json(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(crate::ingress::full(Bytes::from(body.to_string())));
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
        .and_then(bearer_token)
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), token.as_bytes())
}
