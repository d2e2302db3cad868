//! Every way a request can fail, and the one place each becomes an HTTP status. Errors are
//! sorted by source, as a proxy must: the client (4xx), a plugin (its own verdict, or 500/504
//! for traps and deadlines), the backend (its gRPC code), or the gateway itself (500).

use bytes::Bytes;
use http::StatusCode;

use crate::auth::AuthError;
use crate::backend::{BackendError, code_name};
use crate::batch::BatchError;
use crate::plugin::{CallError, Rejection};
use crate::rest::RestError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No route (model folder) of that name.
    #[error("model `{0}` is not served here; GET /v1/models lists the models")]
    UnknownModel(String),
    /// A model folder exists but its last load failed and it has never loaded.
    #[error("model `{model}` is not served: its folder failed to load: {reason}")]
    ModelFailed { model: String, reason: String },
    /// A path outside the HTTP API.
    #[error("no such endpoint: {method} {path}")]
    NoEndpoint { method: String, path: String },
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("request body is larger than the {limit}-byte limit (server.max_body_bytes)")]
    BodyTooLarge { limit: usize },
    /// The body did not arrive whole in time: a `Content-Length` longer than what was sent,
    /// or a body trickled in.
    #[error(
        "the request body did not arrive within {timeout_ms} ms (server.body_timeout_ms): \
         is Content-Length longer than the body sent?"
    )]
    BodyTimeout { timeout_ms: u64 },
    /// `[auth]` refused the request: no key, an unknown key, a model it may not call, or
    /// over its rate.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The request itself is wrong: its URL, headers or body.
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Rest(#[from] RestError),
    #[error("{0}")]
    Plugin(#[from] CallError),
    #[error("{0}")]
    Batch(#[from] BatchError),
    #[error("{0}")]
    Backend(#[from] BackendError),
    /// The backend answered, but not with what the model's signature promised.
    #[error("backend answered with an unusable result: {0}")]
    BadBackendResponse(String),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The status table of DESIGN.md, in one exhaustive match.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::UnknownModel(_) | Error::ModelFailed { .. } | Error::NoEndpoint { .. } => {
                StatusCode::NOT_FOUND
            }
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Error::Auth(e) => match e {
                AuthError::Missing | AuthError::Invalid => StatusCode::UNAUTHORIZED,
                AuthError::Forbidden { .. } | AuthError::GrpcNeedsAllModels { .. } => {
                    StatusCode::FORBIDDEN
                }
                AuthError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            },
            Error::BadRequest(_) | Error::Rest(_) => StatusCode::BAD_REQUEST,
            Error::Plugin(e) => match e {
                CallError::Rejected(Rejection::BadRequest(_)) => StatusCode::BAD_REQUEST,
                CallError::Rejected(Rejection::Unprocessable(_)) => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                CallError::Rejected(Rejection::Internal(_))
                | CallError::Trap(_)
                | CallError::MemoryLimit { .. }
                | CallError::InvalidOutput(_)
                | CallError::NotExported(..) => StatusCode::INTERNAL_SERVER_ERROR,
                CallError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                // The call never started: the model (or the gateway) is at its plugin
                // capacity. 503 rather than 429: it is not this client's rate, nothing ran,
                // so a retry — here later, or on another replica — is safe.
                CallError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
            Error::Batch(e) => match e {
                BatchError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
                BatchError::TooManyRows { .. }
                | BatchError::TooLarge { .. }
                | BatchError::Unbatchable(_) => StatusCode::BAD_REQUEST,
                BatchError::QueueTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
                BatchError::Backend(e) => backend_status(e.code),
                BatchError::BadOutputs(_) => StatusCode::BAD_GATEWAY,
                BatchError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            },
            Error::Backend(e) => backend_status(e.code),
            Error::BadBackendResponse(_) => StatusCode::BAD_GATEWAY,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Headers the status needs: `WWW-Authenticate` with a 401, `Retry-After` with a 429
    /// from a key's rate, `Connection: close` with a 408 (the rest of the body may still come).
    pub fn headers(&self) -> Vec<(http::HeaderName, http::HeaderValue)> {
        use http::{HeaderValue, header};
        match self {
            Error::Auth(AuthError::Missing | AuthError::Invalid) => vec![(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"infergate\""),
            )],
            Error::Auth(AuthError::RateLimited { retry_after_s, .. }) => {
                vec![(header::RETRY_AFTER, HeaderValue::from(*retry_after_s))]
            }
            Error::BodyTimeout { .. } => {
                vec![(header::CONNECTION, HeaderValue::from_static("close"))]
            }
            _ => Vec::new(),
        }
    }

    /// `{"error": "<message>"}`, as TF Serving's REST API answers errors.
    pub fn body(&self) -> Bytes {
        Bytes::from(serde_json::json!({ "error": self.message() }).to_string())
    }
}

impl Error {
    /// The gRPC status code of the same condition, for the gRPC ingress: the row of the HTTP
    /// table above read as gRPC, so the two protocols never disagree on whose fault a failure
    /// is. A backend's own verdict on the client's request (INVALID_ARGUMENT,
    /// FAILED_PRECONDITION, NOT_FOUND, …) passes through as TF Serving would have answered it;
    /// what the backend did wrong itself is the gateway's INTERNAL, naming the backend's code.
    pub fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        if let Error::Backend(e) | Error::Batch(BatchError::Backend(e)) = self {
            return match e.code {
                Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::OutOfRange
                | Code::NotFound
                | Code::ResourceExhausted
                | Code::Unavailable
                | Code::DeadlineExceeded => e.code,
                _ => Code::Internal,
            };
        }
        match self.status() {
            StatusCode::NOT_FOUND => Code::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Code::Unimplemented,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => {
                Code::ResourceExhausted
            }
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Code::InvalidArgument,
            StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
            StatusCode::GATEWAY_TIMEOUT => Code::DeadlineExceeded,
            _ => Code::Internal,
        }
    }

    /// The error as a gRPC status: [`Error::grpc_code`] and the message the JSON body carries.
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::new(self.grpc_code(), self.message())
    }

    /// The message, with a backend's code name in front.
    pub fn message(&self) -> String {
        match self {
            Error::Backend(e) | Error::Batch(BatchError::Backend(e)) => {
                format!("{}: {}", code_name(e.code), e.message)
            }
            other => other.to_string(),
        }
    }
}

/// gRPC code → HTTP status for backend failures. The caller's fault stays the caller's (400,
/// 404); an overloaded backend is backpressure (429) like a full queue here; anything else the
/// backend did wrong is a bad gateway (502), except unavailability (503) and deadlines (504).
fn backend_status(code: tonic::Code) -> StatusCode {
    use tonic::Code::*;
    match code {
        InvalidArgument | FailedPrecondition | OutOfRange => StatusCode::BAD_REQUEST,
        NotFound => StatusCode::NOT_FOUND,
        ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Ok | Cancelled | Unknown | AlreadyExists | PermissionDenied | Aborted | Unimplemented
        | Internal | DataLoss | Unauthenticated => StatusCode::BAD_GATEWAY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn backend(code: Code) -> Error {
        Error::Batch(BatchError::Backend(BackendError::new(code, "x")))
    }

    /// Every HTTP status the table produces has its gRPC code, and a backend's verdict on the
    /// client's request keeps its own code.
    #[test]
    fn grpc_codes_mirror_the_http_table() {
        let cases = [
            (Error::UnknownModel("m".into()), Code::NotFound),
            (Error::BadRequest("x".into()), Code::InvalidArgument),
            (Error::BodyTooLarge { limit: 1 }, Code::ResourceExhausted),
            (
                Error::Batch(BatchError::QueueFull {
                    model: "m".into(),
                    limit: 1,
                }),
                Code::ResourceExhausted,
            ),
            (
                Error::Batch(BatchError::QueueTimeout(std::time::Duration::ZERO)),
                Code::DeadlineExceeded,
            ),
            (Error::Batch(BatchError::Stopped), Code::Unavailable),
            (Error::Internal("x".into()), Code::Internal),
            (Error::BadBackendResponse("x".into()), Code::Internal),
            (backend(Code::FailedPrecondition), Code::FailedPrecondition),
            (backend(Code::Unavailable), Code::Unavailable),
            (backend(Code::DeadlineExceeded), Code::DeadlineExceeded),
            (backend(Code::Unimplemented), Code::Internal),
            (backend(Code::DataLoss), Code::Internal),
        ];
        for (error, code) in cases {
            assert_eq!(error.grpc_code(), code, "{error}");
        }
    }
}
