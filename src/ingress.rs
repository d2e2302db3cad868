//! The public HTTP listener (hyper): parses a request — its [`path::Endpoint`], its body
//! within the limit — hands it to the pipeline or a view, and answers: every result (a
//! [`Reply`], a view's JSON, or an [`Error`]) becomes an HTTP response carrying the request id.
//! HTTP/2 requests with `content-type: application/grpc` go to the gRPC services instead
//! ([`crate::protocol::grpc`]), on the same port.

pub mod path;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use tracing::Instrument;
use tracing::field::Empty;

use crate::backend::VersionChoice;
use crate::error::Error;
use crate::gateway::Gateway;
use crate::pipeline::{self, PredictCall};
use crate::protocol::v2::rest as v2;
use crate::reply::Reply;
use crate::routes::RouteTable;
use crate::views;
use path::{Endpoint, PathError};

/// A response body: a whole buffer for REST answers, or a gRPC answer's frames and trailers.
pub type Body = tonic::body::Body;

/// A response body holding `bytes`.
pub fn full(bytes: Bytes) -> Body {
    Body::new(Full::new(bytes))
}

/// Handles one HTTP request. Never fails: errors become JSON error responses.
pub async fn handle(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let request_id = request_id(&request);
    // Stage timings are recorded into this span as the request moves through the pipeline;
    // plugin log lines emitted inside it carry its id and model.
    let span = tracing::info_span!(
        "request",
        id = %request_id,
        method = %request.method(),
        path = %request.uri().path(),
        model = Empty,
        key = Empty,
        pre_us = Empty,
        queue_us = Empty,
        backend_us = Empty,
        batch_rows = Empty,
        post_us = Empty,
    );
    let result = if crate::protocol::grpc::is_grpc(&request) {
        match gateway
            .auth()
            .map(|auth| auth.check_grpc(request.headers()))
        {
            Some(Err(e)) => Ok(crate::auth::grpc_status(&e).into_http()),
            key => {
                if let Some(Ok(key)) = key {
                    span.record("key", key.as_str());
                }
                Ok(crate::protocol::grpc::handle(gateway.clone(), request)
                    .instrument(span.clone())
                    .await)
            }
        }
    } else {
        route(&gateway, request, &request_id)
            .instrument(span.clone())
            .await
    };
    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(parent: &span, status = error.status().as_u16(), "{error}");
            // Messages may name files (a folder's load error, a plugin's path): on the public
            // listener, relative to the plugins directory. The log above has them in full.
            let paths = views::Paths::relative_to(&gateway.config().plugins.dir);
            let body = paths.text(&String::from_utf8_lossy(&error.body()));
            let mut response = json_response(error.status(), Bytes::from(body));
            response.headers_mut().extend(error.headers());
            response
        }
    };
    // Debug, not info: a synchronous log line per request is a real cost at 10k req/s, so
    // access logs are opt-in (`RUST_LOG=info,infergate::access=debug`).
    tracing::debug!(
        target: "infergate::access",
        parent: &span,
        status = response.status().as_u16(),
        total_us = started.elapsed().as_micros() as u64,
        "done"
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    Ok(response)
}

async fn route(
    gateway: &Gateway,
    request: Request<Incoming>,
    request_id: &str,
) -> Result<Response<Body>, Error> {
    let endpoint = path::parse(request.method(), request.uri().path()).map_err(|e| match e {
        PathError::NotFound => Error::NoEndpoint {
            method: request.method().to_string(),
            path: request.uri().path().to_string(),
        },
        PathError::MethodNotAllowed => Error::MethodNotAllowed {
            method: request.method().to_string(),
            path: request.uri().path().to_string(),
        },
        PathError::Invalid(message) => Error::BadRequest(message),
    })?;
    authorize(gateway, &request, &endpoint)?;
    let table = gateway.routes().snapshot();
    match endpoint {
        Endpoint::Healthz => Ok(json_response(
            StatusCode::OK,
            Bytes::from_static(b"{\"status\":\"ok\"}"),
        )),
        // Not ready once draining (load balancers stop sending while in-flight work finishes)
        // or while a routed model has no healthy backend endpoint.
        Endpoint::Readyz => {
            let (status, body) = gateway.readiness();
            Ok(json_response(status, Bytes::from(body.to_string())))
        }
        Endpoint::Metrics => Ok(metrics_response(gateway)),
        Endpoint::OpenApi => Ok(json_response(
            StatusCode::OK,
            Bytes::from_static(OPENAPI.as_bytes()),
        )),
        Endpoint::ListModels => Ok(json_response(
            StatusCode::OK,
            Bytes::from(views::list_models(&table, &public_paths(gateway)).to_string()),
        )),
        Endpoint::Status { model, version } => {
            let route = table
                .get(&model)
                .ok_or_else(|| unknown_model(&table, model.clone()))?;
            let versions = route.backend.status(&route.target(version, None)).await?;
            let failure = table.failures.get(&model);
            let body = views::model_status(&route, &versions, failure, &public_paths(gateway));
            Ok(json_response(StatusCode::OK, Bytes::from(body.to_string())))
        }
        Endpoint::Metadata { model, version } => {
            let route = table
                .get(&model)
                .ok_or_else(|| unknown_model(&table, model))?;
            let metadata = route.backend.metadata(&route.target(version, None)).await?;
            Ok(json_response(
                StatusCode::OK,
                Bytes::from(metadata.to_json().to_string()),
            ))
        }
        Endpoint::V2Server => Ok(v2::server_metadata()),
        Endpoint::V2Live => Ok(v2::server_live()),
        Endpoint::V2Ready => Ok(v2::server_ready(gateway)),
        Endpoint::V2Metadata { model, version } => {
            v2::model_metadata(gateway, &model, version).await
        }
        Endpoint::V2ModelReady { model, version } => {
            v2::model_ready(gateway, &model, version).await
        }
        Endpoint::V2Infer { model, version } => {
            drop(table);
            let (parts, body) = read_body(gateway, request).await?;
            v2::infer(gateway, &model, version, &parts.headers, body).await
        }
        Endpoint::Predict { model, version } => {
            let route = table
                .get(&model)
                .ok_or_else(|| unknown_model(&table, model))?;
            drop(table);
            tracing::Span::current().record("model", route.name.as_str());
            let read = predict_call(gateway, request, version.clone(), request_id);
            let reply = pipeline::serve(route, version, read).await?;
            Ok(reply_response(reply))
        }
    }
}

async fn predict_call(
    gateway: &Gateway,
    request: Request<Incoming>,
    version: VersionChoice,
    request_id: &str,
) -> Result<PredictCall, Error> {
    let (parts, body) = read_body(gateway, request).await?;
    let headers = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    Ok(PredictCall {
        version,
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers,
        body,
        request_id: request_id.to_string(),
    })
}

/// With `[auth]`, every endpoint but the probes and the API description needs a key, and a
/// model's endpoints a key that may call that model; the key id goes into the request span.
fn authorize(
    gateway: &Gateway,
    request: &Request<Incoming>,
    endpoint: &Endpoint,
) -> Result<(), Error> {
    let Some(auth) = gateway.auth() else {
        return Ok(());
    };
    let model = match endpoint {
        Endpoint::Healthz
        | Endpoint::Readyz
        | Endpoint::OpenApi
        | Endpoint::V2Live
        | Endpoint::V2Ready => return Ok(()),
        Endpoint::ListModels | Endpoint::Metrics | Endpoint::V2Server => None,
        Endpoint::Predict { model, .. }
        | Endpoint::Status { model, .. }
        | Endpoint::Metadata { model, .. }
        | Endpoint::V2Metadata { model, .. }
        | Endpoint::V2ModelReady { model, .. }
        | Endpoint::V2Infer { model, .. } => Some(model.as_str()),
    };
    let key = auth.check(request.headers(), model)?;
    tracing::Span::current().record("key", key.as_str());
    Ok(())
}

/// The request's head and its whole body, refused with 413 past `server.max_body_bytes`:
/// at once when `content-length` says so, else as soon as that many bytes have arrived.
async fn read_body(
    gateway: &Gateway,
    request: Request<Incoming>,
) -> Result<(http::request::Parts, Bytes), Error> {
    let (parts, body) = request.into_parts();
    let limit = gateway.config().server.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::BodyTooLarge { limit });
    }
    // A deadline for the whole body: a Content-Length longer than what is sent, or a body
    // trickled in, must not hold the request (and its connection) forever.
    let timeout = gateway.config().server.body_timeout();
    let read = tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await;
    let read = read.map_err(|_| Error::BodyTimeout {
        timeout_ms: timeout.as_millis() as u64,
    })?;
    match read {
        Ok(collected) => Ok((parts, collected.to_bytes())),
        Err(e) if e.is::<LengthLimitError>() => Err(Error::BodyTooLarge { limit }),
        Err(e) => Err(Error::BadRequest(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// The OpenAPI 3 description of this listener's API, served at `GET /openapi.json`.
pub const OPENAPI: &str = include_str!("../docs/openapi.json");

/// `GET /metrics`: every series, in OpenMetrics text.
pub fn metrics_response(gateway: &Gateway) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from(gateway.encode_metrics())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    response
}

/// The route serving `model` in `table`, or the 404 saying why there is none.
pub fn find_route(table: &RouteTable, model: &str) -> Result<Arc<crate::routes::Route>, Error> {
    table
        .get(model)
        .ok_or_else(|| unknown_model(table, model.to_string()))
}

/// How the public listener shows paths: relative to the plugins directory.
fn public_paths(gateway: &Gateway) -> views::Paths {
    views::Paths::relative_to(&gateway.config().plugins.dir)
}

/// 404 for a model that isn't served, saying why when its folder failed to load.
fn unknown_model(table: &RouteTable, model: String) -> Error {
    match table.failures.get(&model) {
        Some(failure) => Error::ModelFailed {
            model,
            reason: failure.message.clone(),
        },
        None => Error::UnknownModel(model),
    }
}

fn reply_response(reply: Reply) -> Response<Body> {
    let mut out = Response::new(full(reply.body));
    *out.status_mut() = reply.status;
    *out.headers_mut() = reply.headers;
    out
}

pub fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The client's `x-request-id` if it is a sane header value, else a new one.
fn request_id<B>(request: &Request<B>) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    if let Some(id) = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        && !id.is_empty()
        && id.len() <= 128
    {
        return id.to_string();
    }
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:08x}-{n:08x}", std::process::id())
}
