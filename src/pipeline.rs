//! One predict request, start to finish: pre plugin (or TF Serving REST JSON) → backend →
//! post plugin (or REST JSON). Runs against the route snapshot the request started with.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

use crate::backend::VersionChoice;
use crate::error::Error;
use crate::metrics::observe;
use crate::plugin::{CallTag, PluginRequest, PluginResponse, Runtime};
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

pub async fn predict(
    runtime: &Runtime,
    route: Arc<Route>,
    call: PredictCall,
) -> Result<PluginResponse, Error> {
    let tag = CallTag {
        model: route.name.clone(),
        request_id: call.request_id.clone(),
        metrics: Some(route.metrics.clone()),
    };
    let (signature, inputs, source) = match &route.pre {
        Some(pre) => {
            let request = plugin_request(&route, &call);
            let started = Instant::now();
            let prepared = pre
                .preprocess(runtime, &request, route.limits(), tag.clone())
                .await;
            stage_done(&route.metrics.pre_seconds, "pre_us", started);
            let prepared = prepared?;
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
            (
                signature,
                body.into_tensors(&specs)?,
                Source::Rest { format },
            )
        }
    };
    let target = route.target(call.version.clone(), signature);
    let batched = route.batcher.submit_timed(target, inputs).await?;
    let span = tracing::Span::current();
    span.record("queue_us", batched.queued.as_micros() as u64);
    span.record("backend_us", batched.backend.as_micros() as u64);
    span.record("batch_rows", batched.batch_rows);
    let started = Instant::now();
    let response = respond(runtime, &route, batched.outputs, source, tag).await;
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
    runtime: &Runtime,
    route: &Route,
    outputs: NamedTensors,
    source: Source,
    tag: CallTag,
) -> Result<PluginResponse, Error> {
    match (&route.post, source) {
        (Some(post), Source::Plugin { context }) => Ok(post
            .postprocess(runtime, &outputs, &context, route.limits(), tag)
            .await?),
        (Some(post), Source::Rest { .. }) => Ok(post
            .postprocess(runtime, &outputs, &[], route.limits(), tag)
            .await?),
        (None, source) => {
            let format = match source {
                Source::Rest { format } => format,
                // A pre plugin without a post plugin: answer in the columnar shape.
                Source::Plugin { .. } => Format::Columnar,
            };
            let body = rest::render_outputs(format, &outputs)
                .map_err(|e| Error::BadBackendResponse(e.to_string()))?;
            let mut headers = http::HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(PluginResponse {
                status: StatusCode::OK,
                headers,
                body: Bytes::from(body),
            })
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
    let metadata = route.backend.metadata(&target).await.inspect_err(|e| {
        route
            .metrics
            .backend_error(crate::backend::code_name(e.code))
    })?;
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
