//! The Open Inference Protocol (KServe v2), served over REST ([`rest`]) and gRPC ([`grpc`]):
//! what both share — resolving a model and version, running an inference through the
//! model's batch queue, a model's metadata and readiness. A route with plugins answers v2 by
//! skipping them (v2 clients send tensors).
//!
//! - `tensor`: datatypes, raw bytes, typed contents and JSON data ↔ the gateway's tensors.
//! - `rest`: `/v2/health/*`, `/v2/models/{m}[/versions/{v}]`, `…/ready`, `…/infer` (JSON and
//!   the binary tensor extension).
//! - `grpc`: `inference.GRPCInferenceService`.

pub mod grpc;
pub mod rest;
pub mod tensor;

use std::sync::Arc;

use crate::backend::VersionChoice;
use crate::error::Error;
use crate::gateway::Gateway;
use crate::pipeline::{self, Protocol, TensorCall};
use crate::routes::Route;
use crate::tensor::NamedTensors;

/// What the server calls itself in server metadata.
pub const SERVER_NAME: &str = "infergate";

/// Protocol extensions served: the binary tensor data extension over REST.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data"];

/// The version a v2 request names: empty for the latest, else a number.
pub fn version(text: &str) -> Result<VersionChoice, Error> {
    if text.is_empty() {
        return Ok(VersionChoice::Latest);
    }
    match text.parse::<i64>() {
        Ok(n) if n >= 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(VersionChoice::Number(n)),
        _ => Err(Error::BadRequest(format!(
            "model version `{text}` is not a number (leave it empty for the latest)"
        ))),
    }
}

/// The route serving `model`.
pub fn route(gateway: &Gateway, model: &str) -> Result<Arc<Route>, Error> {
    let table = gateway.routes().snapshot();
    let route = crate::ingress::find_route(&table, model)?;
    tracing::Span::current().record("model", route.name.as_str());
    Ok(route)
}

/// An inference request, decoded from either transport.
pub struct Infer {
    pub version: VersionChoice,
    /// In the request's order.
    pub inputs: NamedTensors,
    /// Outputs asked for, in the order wanted; empty: all of them.
    pub outputs: Vec<String>,
}

/// Runs `infer` on `route` through its batch queue; outputs in the order asked for (else by
/// name).
pub async fn infer(
    route: Arc<Route>,
    protocol: Protocol,
    infer: Infer,
) -> Result<NamedTensors, Error> {
    let mut inputs = infer.inputs;
    for (i, (name, _)) in inputs.iter().enumerate() {
        if inputs[..i].iter().any(|(n, _)| n == name) {
            return Err(Error::BadRequest(format!("input `{name}` is given twice")));
        }
    }
    inputs.sort_by(|a, b| a.0.cmp(&b.0));
    let call = TensorCall {
        version: infer.version,
        signature: None,
        inputs,
    };
    let mut outputs = pipeline::serve_tensors(route, protocol, call).await?;
    if infer.outputs.is_empty() {
        return Ok(outputs);
    }
    infer
        .outputs
        .iter()
        .map(|name| {
            let at = outputs.iter().position(|(n, _)| n == name).ok_or_else(|| {
                let known: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
                Error::BadRequest(format!(
                    "output `{name}` was asked for but the model outputs only: {}",
                    known.join(", ")
                ))
            })?;
            Ok(outputs.swap_remove(at))
        })
        .collect()
}

/// One input or output in model metadata.
pub struct TensorMeta {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

/// A model's metadata: what `GET /v2/models/{m}` and `ModelMetadata` answer.
pub struct Metadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMeta>,
    pub outputs: Vec<TensorMeta>,
}

/// The route's signature (from the backend) and available versions, under the route's name.
pub async fn metadata(
    gateway: &Gateway,
    route: &Route,
    version: VersionChoice,
) -> Result<Metadata, Error> {
    let target = route.target(version.clone(), None);
    let signatures = route.backend.metadata(&target).await?;
    let signature = signatures
        .signatures
        .get(&route.config.signature)
        .ok_or_else(|| {
            Error::BadBackendResponse(format!(
                "the backend has no signature `{}` for model `{}`",
                route.config.signature, route.name
            ))
        })?;
    let versions = route
        .backend
        .status(&route.target(version, None))
        .await?
        .into_iter()
        .filter(|v| v.state == "AVAILABLE")
        .map(|v| v.version.to_string())
        .collect();
    let meta = |specs: &std::collections::BTreeMap<String, crate::backend::TensorSpec>| {
        specs
            .iter()
            .map(|(name, spec)| TensorMeta {
                name: name.clone(),
                datatype: spec
                    .dtype
                    .map_or_else(|| spec.dtype_name.clone(), |d| tensor::datatype(d).into()),
                shape: spec.shape.clone().unwrap_or_default(),
            })
            .collect()
    };
    Ok(Metadata {
        name: route.name.clone(),
        versions,
        platform: gateway
            .config()
            .backends
            .get(&route.backend_name)
            .map_or("", |b| b.kind())
            .to_string(),
        inputs: meta(&signature.inputs),
        outputs: meta(&signature.outputs),
    })
}

/// Whether the route's backend reports the version (or any version, for the latest)
/// AVAILABLE. A backend that can't be asked is not ready.
pub async fn ready(route: &Route, version: VersionChoice) -> bool {
    match route.backend.status(&route.target(version, None)).await {
        Ok(versions) => versions.iter().any(|v| v.state == "AVAILABLE"),
        Err(e) => {
            tracing::debug!(model = %route.name, "not ready: {e}");
            false
        }
    }
}

/// The version a response names: the one asked for, or empty for the latest.
pub fn version_text(version: &VersionChoice) -> String {
    match version {
        VersionChoice::Number(n) => n.to_string(),
        VersionChoice::Latest | VersionChoice::Label(_) => String::new(),
    }
}
