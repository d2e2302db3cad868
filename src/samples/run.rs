//! Runs one sample through a model's plugins as the pipeline would, with the recorded outputs
//! standing in for the backend, and lists every way the result differs from the expectations.

use bytes::Bytes;
use http::StatusCode;

use super::compare;
use super::files::{ExpectedBody, ExpectedResponse, Sample};
use crate::error::Error;
use crate::plugin::{CallError, CallLimits, CallTag, Plugin, PluginRequest, Runtime};
use crate::rest::{self, Format};
use crate::tensor::NamedTensors;

/// What a sample runs against: one model's plugins and call limits.
pub struct Subject<'a> {
    /// The route name, which the pre plugin sees as `request.model`.
    pub model: &'a str,
    pub pre: Option<&'a Plugin>,
    pub post: Option<&'a Plugin>,
    pub limits: CallLimits,
}

/// What a sample run found: the stages it checked, and the differences (none: it passed).
#[derive(Debug, Default)]
pub struct Findings {
    pub checked: Vec<String>,
    pub failures: Vec<String>,
}

/// The response a client would get, from a post plugin, the REST renderer or an error.
struct Answer {
    status: StatusCode,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl From<Error> for Answer {
    fn from(error: Error) -> Self {
        Answer {
            status: error.status(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: error.body(),
        }
    }
}

/// Runs sample `name` against the subject's plugins — preprocess, then postprocess on the
/// recorded outputs — comparing each stage's result with what the sample expects.
pub async fn run(
    runtime: &Runtime,
    subject: &Subject<'_>,
    name: &str,
    sample: &Sample,
) -> Findings {
    let mut found = Findings::default();
    let tag = CallTag {
        model: subject.model.to_string(),
        request_id: format!("sample-{name}"),
        metrics: None,
    };
    // Stage 1: the request → tensors (or the client's error).
    let (context, format) = match pre_stage(runtime, subject, sample, tag.clone(), &mut found).await
    {
        Ok(next) => next,
        Err(Stop::Answer(answer)) => {
            check_response(&answer, sample, &mut found);
            return found;
        }
        Err(Stop::Failed) => return found,
    };
    // Stage 2: recorded outputs → response, when the sample recorded them.
    let Some(outputs) = &sample.outputs else {
        if sample.response.is_some() {
            found.failures.push(
                "response.json needs outputs.json (the backend's recorded outputs) to run postprocess"
                    .into(),
            );
        }
        return found;
    };
    let answer = match post_stage(runtime, subject, outputs, &context, format, tag).await {
        Ok(answer) => answer,
        Err(failure) => {
            found.failures.push(failure);
            return found;
        }
    };
    found.checked.push(match subject.post {
        Some(_) => "post".into(),
        None => "REST outputs".into(),
    });
    check_response(&answer, sample, &mut found);
    found
}

/// Why the run stops after the first stage.
enum Stop {
    /// The client would get this response without the backend being called.
    Answer(Answer),
    /// A failure is recorded; nothing further can be checked.
    Failed,
}

/// Runs the pre plugin (or reads the REST JSON body) and compares its tensors. Returns the
/// context for postprocess and the REST layout a rendered response would use.
async fn pre_stage(
    runtime: &Runtime,
    subject: &Subject<'_>,
    sample: &Sample,
    tag: CallTag,
    found: &mut Findings,
) -> Result<(Bytes, Format), Stop> {
    let Some(pre) = subject.pre else {
        if sample.pre.is_some() {
            found
                .failures
                .push("pre.json is given but the model has no pre plugin".into());
            return Err(Stop::Failed);
        }
        // Typing REST JSON needs the backend's signature; only its layout is read here.
        return match rest::parse_predict_body(&sample.request.body) {
            Ok(body) => Ok((Bytes::new(), body.format)),
            Err(e) => Err(Stop::Answer(Error::Rest(e).into())),
        };
    };
    let request = plugin_request(subject.model, sample);
    let prepared = match pre.preprocess(runtime, &request, subject.limits, tag).await {
        Ok(prepared) => prepared,
        // The plugin's own "no" is an answer a sample may expect (a 400 for a bad upload).
        Err(CallError::Rejected(r)) => {
            if sample.pre.is_some() {
                found.failures.push(format!(
                    "preprocess rejected the request, but pre.json expects tensors: {}",
                    CallError::Rejected(r.clone())
                ));
                return Err(Stop::Failed);
            }
            return Err(Stop::Answer(Error::Plugin(CallError::Rejected(r)).into()));
        }
        // A trap, a deadline, a memory cap or malformed output is never a right answer.
        Err(e) => {
            found.failures.push(format!("preprocess: {e}"));
            return Err(Stop::Failed);
        }
    };
    if let Some(expected) = &sample.pre {
        found.checked.push("pre".into());
        found.failures.extend(compare::tensors(
            "input",
            &expected.inputs,
            &prepared.inputs,
            sample.tolerance,
        ));
        if let Some(context) = expected
            .context
            .as_ref()
            .filter(|c| **c != prepared.context)
        {
            found.failures.push(format!(
                "context: expected {:?}, got {:?}",
                String::from_utf8_lossy(context),
                String::from_utf8_lossy(&prepared.context)
            ));
        }
    }
    // A pre plugin without a post plugin is answered in the columnar layout.
    Ok((prepared.context, Format::Columnar))
}

/// Runs the post plugin on the recorded outputs, or renders them as REST JSON without one.
/// A trap, deadline or malformed result is the failure's message.
async fn post_stage(
    runtime: &Runtime,
    subject: &Subject<'_>,
    outputs: &NamedTensors,
    context: &[u8],
    format: Format,
    tag: CallTag,
) -> Result<Answer, String> {
    let Some(post) = subject.post else {
        return Ok(render(format, outputs));
    };
    match post
        .postprocess(runtime, outputs, context, subject.limits, tag)
        .await
    {
        Ok(response) => Ok(Answer {
            status: response.status,
            headers: response
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect(),
            body: response.body,
        }),
        Err(CallError::Rejected(r)) => Ok(Error::Plugin(CallError::Rejected(r)).into()),
        Err(e) => Err(format!("postprocess: {e}")),
    }
}

fn plugin_request(model: &str, sample: &Sample) -> PluginRequest {
    let r = &sample.request;
    let path = r.path.clone().unwrap_or_else(|| {
        let version = match (r.version, &r.label) {
            (Some(v), _) => format!("/versions/{v}"),
            (None, Some(l)) => format!("/labels/{l}"),
            (None, None) => String::new(),
        };
        format!("/v1/models/{model}{version}:predict")
    });
    PluginRequest {
        model: model.to_string(),
        version: r.version,
        label: r.label.clone(),
        method: r.method.clone(),
        path,
        query: r.query.clone(),
        headers: r.headers.clone(),
        body: r.body.clone(),
    }
}

/// The TF Serving REST JSON a model without a post plugin answers.
fn render(format: Format, outputs: &NamedTensors) -> Answer {
    match rest::render_outputs(format, outputs) {
        Ok(body) => Answer {
            status: StatusCode::OK,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
        },
        Err(e) => Error::BadBackendResponse(e.to_string()).into(),
    }
}

/// Compares the client's response with `response.json`. Without one, an error status fails
/// the sample: nothing said it was expected.
fn check_response(answer: &Answer, sample: &Sample, found: &mut Findings) {
    let Some(expected) = &sample.response else {
        if !answer.status.is_success() {
            found.failures.push(format!(
                "answered {} {} (no response.json expects it)",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ));
        }
        return;
    };
    found.checked.push("response".into());
    found
        .failures
        .extend(response_diffs(expected, answer, sample));
}

fn response_diffs(expected: &ExpectedResponse, got: &Answer, sample: &Sample) -> Vec<String> {
    let mut diffs = Vec::new();
    if expected.status != got.status.as_u16() {
        diffs.push(format!(
            "status: expected {}, got {}",
            expected.status,
            got.status.as_u16()
        ));
    }
    for (name, want) in &expected.headers {
        match got
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            None => diffs.push(format!("header `{name}`: missing (expected {want:?})")),
            Some((_, have)) if have != want => {
                diffs.push(format!("header `{name}`: expected {want:?}, got {have:?}"))
            }
            Some(_) => {}
        }
    }
    match &expected.body {
        ExpectedBody::Any => {}
        ExpectedBody::Text(want) => {
            let have = String::from_utf8_lossy(&got.body);
            if *want != have {
                diffs.push(format!("body: expected {want:?}, got {have:?}"));
            }
        }
        ExpectedBody::Json(want) => match serde_json::from_slice(&got.body) {
            Ok(have) => diffs.extend(
                compare::json(want, &have, sample.tolerance)
                    .into_iter()
                    .map(|d| format!("body {d}")),
            ),
            Err(e) => diffs.push(format!(
                "body: expected JSON, got {:?} ({e})",
                String::from_utf8_lossy(&got.body)
            )),
        },
    }
    diffs
}
