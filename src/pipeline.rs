//! One predict request, start to finish: pre plugin (or TF Serving REST JSON) → batcher and
//! backend → post plugin (or REST JSON). Runs against the route snapshot the request started
//! with. [`serve`] also accounts for the request in the model's series; every ingress and
//! `infergate check` run requests through here, so there is one pipeline.
//!
//! Requests that arrive as tensors (TF Serving's gRPC `Predict`, the Open Inference
//! Protocol's `infer` over REST or gRPC) enter at [`serve_tensors`]: the same batch queues,
//! limits and accounting, without the plugins, which turn HTTP bodies into tensors and back.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::StatusCode;

use crate::backend::VersionChoice;
use crate::error::Error;
use crate::metrics::observe;
use crate::plugin::{CallTag, PluginRequest, Prepared};
use crate::reply::Reply;
use crate::rest::{self, Format, InputSpec};
use crate::routes::Route;
use crate::tensor::NamedTensors;

/// A predict call as the ingress parsed it.
pub struct PredictCall {
    pub version: VersionChoice,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub request_id: String,
}

/// How the request's tensors were produced, which decides how outputs become a response.
enum Source {
    Plugin { context: Bytes },
    Rest { format: Format },
}

/// Serves one predict request for `route` and accounts for it: in flight while it runs,
/// then counted by version and status, with its duration. `read` produces the call (reading
/// the body, which may fail with 413 or 400; those are counted too).
pub async fn serve(
    route: Arc<Route>,
    version: VersionChoice,
    read: impl Future<Output = Result<PredictCall, Error>>,
) -> Result<Reply, Error> {
    let metrics = route.metrics.clone();
    let work = async move {
        match read.await {
            Ok(call) => predict(route, call).await,
            Err(e) => Err(e),
        }
    };
    account(&metrics, &version, Protocol::Rest, work, |reply| {
        reply.status
    })
    .await
}

/// The protocol a request came in on: the `protocol` label of `infergate_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// TF Serving's REST API (`/v1/models/…:predict`), plugins included.
    Rest,
    /// TF Serving's gRPC API (`tensorflow.serving.PredictionService/Predict`).
    Grpc,
    /// The Open Inference Protocol over REST (`/v2/models/…/infer`).
    V2,
    /// The Open Inference Protocol over gRPC (`inference.GRPCInferenceService/ModelInfer`).
    V2Grpc,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Rest => "rest",
            Protocol::Grpc => "grpc",
            Protocol::V2 => "v2",
            Protocol::V2Grpc => "v2_grpc",
        }
    }
}

/// A request whose client sent tensors, as a tensor protocol decoded them.
pub struct TensorCall {
    pub version: VersionChoice,
    /// `None`: the route's signature.
    pub signature: Option<String>,
    pub inputs: NamedTensors,
}

/// Serves a tensor request for `route` and accounts for it as [`serve`] does: the inputs are
/// checked against the signature (so a wrong dtype or shape is the client's 400 naming the
/// input, not a batch failure), join the model's batch queue beside REST requests of the same
/// shapes, and the request's own rows of the outputs come back, sorted by name. Plugins don't
/// run: they turn HTTP bodies into tensors and back, and here the client already speaks
/// tensors.
pub async fn serve_tensors(
    route: Arc<Route>,
    protocol: Protocol,
    call: TensorCall,
) -> Result<NamedTensors, Error> {
    let metrics = route.metrics.clone();
    let version = call.version.clone();
    let work = async move {
        let specs = input_specs(&route, &call.version, call.signature.clone()).await?;
        check_inputs(&route.name, &specs, &call.inputs)?;
        let target = route.target(call.version, call.signature);
        let batched = route.batcher.submit_timed(target, call.inputs).await?;
        let span = tracing::Span::current();
        span.record("queue_us", batched.queued.as_micros() as u64);
        span.record("backend_us", batched.backend.as_micros() as u64);
        span.record("batch_rows", batched.batch_rows);
        Ok(batched.outputs)
    };
    account(&metrics, &version, protocol, work, |_| StatusCode::OK).await
}

/// Runs `work` as one request of the model: in flight while it runs, then counted by version,
/// status (for every protocol the HTTP status of the outcome, so one error-ratio query covers
/// them all) and protocol, with its duration.
async fn account<T>(
    metrics: &crate::metrics::ModelMetrics,
    version: &VersionChoice,
    protocol: Protocol,
    work: impl Future<Output = Result<T, Error>>,
    status_of: impl Fn(&T) -> StatusCode,
) -> Result<T, Error> {
    let _in_flight = InFlight::enter(&metrics.in_flight);
    let started = Instant::now();
    let result = work.await;
    let status = match &result {
        Ok(ok) => status_of(ok),
        Err(error) => error.status(),
    };
    // Versions a client made up would each become a series; count them together.
    let label = if status == StatusCode::NOT_FOUND {
        "unknown".to_string()
    } else {
        version_label(version)
    };
    metrics.request(&label, status.as_u16(), protocol.label());
    observe(&metrics.request_seconds, started.elapsed());
    result
}

/// A tensor request's inputs against the signature: every input known and present, dtypes
/// equal, ranks equal, fixed dimensions equal (-1 takes any size).
fn check_inputs(
    model: &str,
    specs: &BTreeMap<String, InputSpec>,
    inputs: &NamedTensors,
) -> Result<(), Error> {
    let known = || {
        specs
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (name, tensor) in inputs {
        let Some(spec) = specs.get(name) else {
            return Err(Error::BadRequest(format!(
                "model `{model}` has no input `{name}` (its inputs: {})",
                known()
            )));
        };
        if tensor.dtype() != spec.dtype {
            return Err(Error::BadRequest(format!(
                "input `{name}` of model `{model}` takes {} tensors, not {}",
                spec.dtype,
                tensor.dtype()
            )));
        }
        if let Some(shape) = &spec.shape {
            let fits = shape.len() == tensor.shape().len()
                && shape
                    .iter()
                    .zip(tensor.shape())
                    .all(|(&want, &got)| want < 0 || want == got);
            if !fits {
                return Err(Error::BadRequest(format!(
                    "input `{name}` of model `{model}` must have shape {shape:?} (-1: any size), not {:?}",
                    tensor.shape()
                )));
            }
        }
    }
    if let Some(missing) = specs.keys().find(|n| !inputs.iter().any(|(m, _)| m == *n)) {
        return Err(Error::BadRequest(format!(
            "input `{missing}` of model `{model}` is missing (its inputs: {})",
            known()
        )));
    }
    Ok(())
}

/// Runs one predict request through the route's pipeline.
pub async fn predict(route: Arc<Route>, call: PredictCall) -> Result<Reply, Error> {
    run(route, call, None).await
}

/// [`predict`], showing `tap` what preprocess returned before it goes on: how
/// `infergate check` compares a sample's expected tensors with the real pipeline's.
pub async fn predict_tapped(
    route: Arc<Route>,
    call: PredictCall,
    tap: &mut (dyn FnMut(&Prepared) + Send),
) -> Result<Reply, Error> {
    run(route, call, Some(tap)).await
}

async fn run(
    route: Arc<Route>,
    call: PredictCall,
    tap: Option<&mut (dyn FnMut(&Prepared) + Send)>,
) -> Result<Reply, Error> {
    let tag = CallTag {
        model: route.name.clone(),
        request_id: call.request_id.clone(),
        metrics: Some(route.metrics.clone()),
    };
    let (signature, inputs, source) = match &route.pre {
        Some(pre) => {
            let request = plugin_request(&route, &call);
            let started = Instant::now();
            let prepared = pre.preprocess(&request, route.limits(), tag.clone()).await;
            stage_done(&route.metrics.pre_seconds, "pre_us", started);
            let prepared = prepared?;
            if let Some(tap) = tap {
                tap(&prepared);
            }
            (
                None,
                prepared.inputs,
                Source::Plugin {
                    context: prepared.context,
                },
            )
        }
        None => {
            let body = rest::parse_predict_body(&call.body)?;
            let signature = body.signature_name.clone();
            let format = body.format;
            let specs = input_specs(&route, &call.version, signature.clone()).await?;
            let inputs = body.into_tensors(&specs)?;
            if let Some(tap) = tap {
                tap(&Prepared {
                    inputs: inputs.clone(),
                    context: Bytes::new(),
                });
            }
            (signature, inputs, Source::Rest { format })
        }
    };
    let target = route.target(call.version.clone(), signature);
    let batched = route.batcher.submit_timed(target, inputs).await?;
    let span = tracing::Span::current();
    span.record("queue_us", batched.queued.as_micros() as u64);
    span.record("backend_us", batched.backend.as_micros() as u64);
    span.record("batch_rows", batched.batch_rows);
    let started = Instant::now();
    let response = respond(&route, batched.outputs, source, tag).await;
    if route.post.is_some() {
        stage_done(&route.metrics.post_seconds, "post_us", started);
    }
    response
}

/// Observes a plugin stage in the model's histogram and the request's span.
fn stage_done(
    histogram: &prometheus_client::metrics::histogram::Histogram,
    field: &str,
    started: Instant,
) {
    let elapsed = started.elapsed();
    observe(histogram, elapsed);
    tracing::Span::current().record(field, elapsed.as_micros() as u64);
}

async fn respond(
    route: &Route,
    outputs: NamedTensors,
    source: Source,
    tag: CallTag,
) -> Result<Reply, Error> {
    match (&route.post, source) {
        (Some(post), Source::Plugin { context }) => Ok(post
            .postprocess(&outputs, &context, route.limits(), tag)
            .await?),
        (Some(post), Source::Rest { .. }) => {
            Ok(post.postprocess(&outputs, &[], route.limits(), tag).await?)
        }
        (None, source) => {
            let format = match source {
                Source::Rest { format } => format,
                // A pre plugin without a post plugin: answer in the columnar shape.
                Source::Plugin { .. } => Format::Columnar,
            };
            let body = rest::render_outputs(format, &outputs)
                .map_err(|e| Error::BadBackendResponse(e.to_string()))?;
            Ok(Reply::json(Bytes::from(body)))
        }
    }
}

fn plugin_request(route: &Route, call: &PredictCall) -> PluginRequest {
    let (version, label) = match &call.version {
        VersionChoice::Latest => (None, None),
        VersionChoice::Number(v) => (Some(*v), None),
        VersionChoice::Label(l) => (None, Some(l.clone())),
    };
    PluginRequest {
        model: route.name.clone(),
        version,
        label,
        method: call.method.clone(),
        path: call.path.clone(),
        query: call.query.clone(),
        headers: call.headers.clone(),
        body: call.body.clone(),
    }
}

/// The signature's inputs, which type REST JSON values; asked of the backend once per
/// (version, signature) and cached on the route.
async fn input_specs(
    route: &Route,
    version: &VersionChoice,
    signature: Option<String>,
) -> Result<Arc<BTreeMap<String, InputSpec>>, Error> {
    let signature = signature.unwrap_or_else(|| route.config.signature.clone());
    let key = (version.clone(), signature.clone());
    if let Some(specs) = route.cached_inputs(&key) {
        return Ok(specs);
    }
    let target = route.target(version.clone(), Some(signature.clone()));
    let metadata = route.backend.metadata(&target).await?;
    let Some(info) = metadata.signatures.get(&signature) else {
        let known: Vec<&str> = metadata.signatures.keys().map(String::as_str).collect();
        return Err(Error::BadRequest(format!(
            "model `{}` has no signature `{signature}` (it has: {})",
            route.name,
            known.join(", ")
        )));
    };
    let mut specs = BTreeMap::new();
    for (name, spec) in &info.inputs {
        let dtype = spec.dtype.ok_or_else(|| {
            Error::BadRequest(format!(
                "input `{name}` has dtype {}, which REST JSON can't carry",
                spec.dtype_name
            ))
        })?;
        specs.insert(
            name.clone(),
            InputSpec {
                dtype,
                shape: spec.shape.clone(),
            },
        );
    }
    let specs = Arc::new(specs);
    route.cache_inputs(key, specs.clone());
    Ok(specs)
}

/// Counts a request in flight until dropped (answered, failed, or its client went away).
struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl InFlight {
    fn enter(gauge: &prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The `version` label of a request: `latest`, the number, or `label:<name>`.
fn version_label(version: &VersionChoice) -> String {
    match version {
        VersionChoice::Latest => "latest".to_string(),
        VersionChoice::Number(n) => n.to_string(),
        VersionChoice::Label(l) => format!("label:{l}"),
    }
}
