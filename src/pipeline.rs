//! One predict request, start to finish: pre plugin (or TF Serving REST JSON) → batcher and
//! backend → post plugin (or REST JSON). Runs against the route snapshot the request started
//! with. [`serve`] also accounts for the request in the model's series; every ingress and
//! `infergate check` run requests through here, so there is one pipeline.

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
    let _in_flight = InFlight::enter(&metrics.in_flight);
    let started = Instant::now();
    let label = version_label(&version);
    let result = match read.await {
        Ok(call) => predict(route, call).await,
        Err(e) => Err(e),
    };
    let status = match &result {
        Ok(reply) => reply.status,
        Err(error) => error.status(),
    };
    // Versions a client made up would each become a series; count them together.
    let label = if status == StatusCode::NOT_FOUND {
        "unknown".to_string()
    } else {
        label
    };
    metrics.request(&label, status.as_u16());
    observe(&metrics.request_seconds, started.elapsed());
    result
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
