//! What a plugin call takes and gives, in the gateway's own types: the request a preprocessor
//! sees, the tensors it prepares, a plugin's own rejection, every way a call can fail, and the
//! bounds on one call. `call` and `convert` both build on these; neither knows the other's.

use std::time::Duration;

use bytes::Bytes;

use crate::tensor::NamedTensors;

/// Bounds on one call, from the model's `[limits]`.
#[derive(Clone, Copy, Debug)]
pub struct CallLimits {
    pub timeout: Duration,
    pub memory_bytes: usize,
    /// Largest result accepted from the plugin, in bytes.
    pub max_output_bytes: usize,
}

/// The HTTP request as a preprocessor sees it.
#[derive(Clone, Debug, Default)]
pub struct PluginRequest {
    pub model: String,
    pub version: Option<i64>,
    pub label: Option<String>,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// A preprocessor's result: model inputs sharing one dim 0, and context for the postprocessor.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub inputs: NamedTensors,
    pub context: Bytes,
}

/// A plugin's own "no", with its message for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    BadRequest(String),
    Unprocessable(String),
    Internal(String),
}

/// Why a plugin call gave no usable result. Each costs the one request it was for.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{}", match .0 { Rejection::BadRequest(m) | Rejection::Unprocessable(m) | Rejection::Internal(m) => m })]
    Rejected(Rejection),
    #[error("plugin trapped: {0}")]
    Trap(String),
    #[error("plugin exceeded its {}ms deadline", .0.as_millis())]
    Timeout(Duration),
    #[error("plugin exceeded its memory limit of {} MiB (limits.memory_mb)", .limit_bytes >> 20)]
    MemoryLimit { limit_bytes: usize },
    #[error("plugin returned an invalid result: {0}")]
    InvalidOutput(String),
    #[error("plugin {0} does not export `{1}`")]
    NotExported(String, &'static str),
    /// No instance slot freed up within the call's deadline (the model's share, or the
    /// gateway's pool): the call never started. The message names the limit.
    #[error("{0}")]
    Busy(String),
}
