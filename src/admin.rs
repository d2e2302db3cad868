//! The operator listener, on its own address (loopback by default): the route table with
//! plugin digests, and health. Kept off the public port so operators' endpoints are never
//! exposed to API consumers by accident.

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
    let (status, body) = match (request.method().as_str(), request.uri().path()) {
        ("GET", "/healthz") => (StatusCode::OK, serde_json::json!({ "status": "ok" })),
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
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
