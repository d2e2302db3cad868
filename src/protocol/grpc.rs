//! gRPC on the public port: an HTTP/2 request with `content-type: application/grpc` is handed
//! to the tonic service its path names (TF Serving's `PredictionService` / `ModelService`,
//! the Open Inference Protocol's `GRPCInferenceService`). Here are what every call shares: the
//! message size limit (`server.max_body_bytes`, checked on the 5-byte frame header before a
//! byte of the message is buffered), the client's deadline (`grpc-timeout`), and the statuses
//! for what tonic itself rejects, rewritten to say what to fix.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Version, header};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tonic::codegen::Service;
use tonic::{Code, Status};

use super::tfserving::TfServingApi;
use super::v2::grpc::InferenceApi;
use crate::gateway::Gateway;
use crate::ingress::Body;
use crate::proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use crate::proto::tensorflow::serving::model_service_server::ModelServiceServer;
use crate::proto::tensorflow::serving::prediction_service_server::PredictionServiceServer;

/// Largest answer a gRPC call may send back (the backends' own limit on what they return).
const MAX_RESPONSE_BYTES: usize = crate::backend::tfserving::MAX_MESSAGE_BYTES;

/// Whether `request` is a gRPC call: HTTP/2 and a gRPC content type.
pub fn is_grpc<B>(request: &Request<B>) -> bool {
    request.version() == Version::HTTP_2
        && request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Answers one gRPC call. Never fails: every error is a gRPC status.
pub async fn handle(gateway: Arc<Gateway>, request: Request<Incoming>) -> Response<Body> {
    let deadline = match request.headers().get("grpc-timeout").map(parse_timeout) {
        None => None,
        Some(Ok(deadline)) => Some(deadline),
        Some(Err(status)) => return status.into_http(),
    };
    let limit = gateway.config().server.max_body_bytes;
    let path = request.uri().path().to_string();
    let request = request.map(|body| Body::new(FrameLimit::new(body, limit)));
    let call = dispatch(gateway, &path, limit, request);
    let response = match deadline {
        None => call.await,
        // Dropping the call on the deadline drops its place in the batch queue too: a request
        // whose client gave up is never sent to the backend.
        Some(deadline) => match tokio::time::timeout(deadline, call).await {
            Ok(response) => response,
            Err(_) => Status::deadline_exceeded(format!(
                "the call's deadline ({}ms, from grpc-timeout) passed before the model answered; \
                 give the call a longer timeout",
                deadline.as_millis()
            ))
            .into_http(),
        },
    };
    refine(response, &path)
}

async fn dispatch(
    gateway: Arc<Gateway>,
    path: &str,
    limit: usize,
    request: Request<Body>,
) -> Response<Body> {
    let (service, method) = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .unwrap_or((path, ""));
    let answer = match (service, method) {
        ("tensorflow.serving.PredictionService", "Classify" | "Regress" | "MultiInference") => {
            return Status::unimplemented(format!(
                "{method} is not supported: infergate serves tensors only; call Predict with the \
                 model's signature inputs"
            ))
            .into_http();
        }
        ("tensorflow.serving.PredictionService", _) => {
            PredictionServiceServer::new(TfServingApi::new(gateway))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(MAX_RESPONSE_BYTES)
                .call(request)
                .await
        }
        ("tensorflow.serving.ModelService", "GetModelStatus") => {
            ModelServiceServer::new(TfServingApi::new(gateway))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(MAX_RESPONSE_BYTES)
                .call(request)
                .await
        }
        ("tensorflow.serving.ModelService", _) => {
            return Status::unimplemented(format!(
                "ModelService/{method} is not supported: models are configured by folders in \
                 plugins/ (POST /admin/reload on the admin listener rescans them)"
            ))
            .into_http();
        }
        ("inference.GRPCInferenceService", _) => {
            GrpcInferenceServiceServer::new(InferenceApi::new(gateway))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(MAX_RESPONSE_BYTES)
                .call(request)
                .await
        }
        _ => {
            return Status::unimplemented(format!(
                "unknown gRPC service `{service}`: infergate serves \
                 tensorflow.serving.PredictionService, tensorflow.serving.ModelService and \
                 inference.GRPCInferenceService"
            ))
            .into_http();
        }
    };
    // The generated servers never fail: an error is already a response.
    answer.unwrap_or_else(|never| match never {})
}

/// Rewrites what tonic rejects on its own into statuses that mirror the HTTP table and say what
/// to fix: an undecodable message is the client's INVALID_ARGUMENT (tonic says INTERNAL), and
/// a method the service doesn't have names the service's methods.
fn refine(mut response: Response<Body>, path: &str) -> Response<Body> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    let better = match status.code() {
        Code::Internal
            if status
                .message()
                .starts_with("failed to decode Protobuf message") =>
        {
            Status::invalid_argument(format!(
                "the request to {path} is not a valid protobuf message of its type ({}); check \
                 that the client's stubs match the service",
                status.message()
            ))
        }
        Code::Unimplemented if status.message().is_empty() => Status::unimplemented(format!(
            "no such method: {path}; see the service's .proto in infergate's proto/ folder"
        )),
        _ => return response,
    };
    let headers = response.headers_mut();
    headers.remove(Status::GRPC_STATUS);
    headers.remove(Status::GRPC_MESSAGE);
    if better.add_header(headers).is_err() {
        tracing::debug!("could not encode a gRPC status");
    }
    response
}

/// `grpc-timeout`: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn parse_timeout(value: &http::HeaderValue) -> Result<Duration, Status> {
    let bad = || {
        Status::invalid_argument(format!(
            "grpc-timeout `{}` is not a gRPC timeout (up to 8 digits and a unit: H, M, S, m, u \
             or n)",
            String::from_utf8_lossy(value.as_bytes())
        ))
    };
    let text = value.to_str().map_err(|_| bad())?;
    if text.len() < 2 || text.len() > 9 {
        return Err(bad());
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let n: u64 = digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse().ok())
        .flatten()
        .ok_or_else(bad)?;
    Ok(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return Err(bad()),
    })
}

/// The request body, read through the gRPC framing: a message whose 5-byte header declares
/// more than `limit` bytes fails the call with RESOURCE_EXHAUSTED as soon as the header
/// arrives, so a huge message is never buffered.
struct FrameLimit {
    inner: Incoming,
    limit: usize,
    /// Bytes of the current frame header seen so far, and the header itself.
    header: [u8; 5],
    header_len: usize,
    /// Bytes of the current message still to come.
    message_left: usize,
}

impl FrameLimit {
    fn new(inner: Incoming, limit: usize) -> Self {
        Self {
            inner,
            limit,
            header: [0; 5],
            header_len: 0,
            message_left: 0,
        }
    }

    fn scan(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.message_left > 0 {
                let n = self.message_left.min(data.len());
                self.message_left -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
            self.header_len += n;
            data = &data[n..];
            if self.header_len == 5 {
                self.header_len = 0;
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]) as usize;
                if len > self.limit {
                    return Err(Status::resource_exhausted(format!(
                        "the request message is {len} bytes, larger than the {}-byte limit \
                         (server.max_body_bytes); send fewer rows per call",
                        self.limit
                    )));
                }
                self.message_left = len;
            }
        }
        Ok(())
    }
}

impl HttpBody for FrameLimit {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Status::from_error(Box::new(e))))),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Err(status) = this.scan(data)
                {
                    return Poll::Ready(Some(Err(status)));
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every unit of `grpc-timeout` parses; malformed values are refused with the format.
    #[test]
    fn timeouts_parse() {
        let parse = |s: &'static str| parse_timeout(&http::HeaderValue::from_static(s));
        assert_eq!(parse("1m").unwrap(), Duration::from_millis(1));
        assert_eq!(parse("5S").unwrap(), Duration::from_secs(5));
        assert_eq!(parse("2H").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse("300u").unwrap(), Duration::from_micros(300));
        assert_eq!(
            parse("99999999n").unwrap(),
            Duration::from_nanos(99_999_999)
        );
        for bad in ["", "m", "10", "1x", "123456789S", "-1S", "1.5S"] {
            let status = parse(bad).unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{bad}");
            assert!(status.message().contains("up to 8 digits"), "{bad}");
        }
    }
}
