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
                AuthError::Forbidden { .. } => StatusCode::FORBIDDEN,
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
            },
            Error::Batch(e) => match e {
                BatchError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
                BatchError::TooManyRows { .. } | BatchError::Unbatchable(_) => {
                    StatusCode::BAD_REQUEST
                }
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
        let message = match self {
            Error::Backend(e) | Error::Batch(BatchError::Backend(e)) => {
                format!("{}: {}", code_name(e.code), e.message)
            }
            other => other.to_string(),
        };
        Bytes::from(serde_json::json!({ "error": message }).to_string())
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
