//! [`PluginError`]: how a plugin refuses a request, and the HTTP status each refusal becomes.

use std::fmt;

use crate::tensor::TensorError;

/// How a plugin says no. The gateway answers `{"error": "<message>"}` with the status below.
///
/// A panic is not a `PluginError`: it traps the plugin and the gateway answers 500 (and logs
/// the panic message, which the SDK forwards to the gateway's log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginError {
    /// 400: the caller sent something wrong (bad image bytes, a malformed parameter).
    BadRequest(String),
    /// 422: well-formed, but not something this model can answer.
    Unprocessable(String),
    /// 500: a bug or broken invariant in the plugin or model (a missing output, say).
    Internal(String),
}

impl PluginError {
    /// A 400 error. Takes anything printable, so `.map_err(PluginError::bad_request)` works
    /// on any error type.
    pub fn bad_request(msg: impl fmt::Display) -> PluginError {
        PluginError::BadRequest(msg.to_string())
    }

    /// A 422 error.
    pub fn unprocessable(msg: impl fmt::Display) -> PluginError {
        PluginError::Unprocessable(msg.to_string())
    }

    /// A 500 error.
    pub fn internal(msg: impl fmt::Display) -> PluginError {
        PluginError::Internal(msg.to_string())
    }

    /// The message the caller will see.
    pub fn message(&self) -> &str {
        match self {
            PluginError::BadRequest(m)
            | PluginError::Unprocessable(m)
            | PluginError::Internal(m) => m,
        }
    }

    /// The HTTP status the gateway answers with: 400, 422 or 500.
    pub fn status(&self) -> u16 {
        match self {
            PluginError::BadRequest(_) => 400,
            PluginError::Unprocessable(_) => 422,
            PluginError::Internal(_) => 500,
        }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for PluginError {}

/// A tensor the plugin built or read wrongly is the plugin's bug: `?` makes it a 500. When the
/// bad data came from the caller, say so with `.map_err(PluginError::bad_request)`.
impl From<TensorError> for PluginError {
    fn from(err: TensorError) -> PluginError {
        PluginError::internal(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_status() {
        assert_eq!(PluginError::bad_request("x").status(), 400);
        assert_eq!(PluginError::unprocessable("x").status(), 422);
        assert_eq!(PluginError::internal("x").status(), 500);
        assert_eq!(
            PluginError::bad_request(format_args!("k={}", 11)).to_string(),
            "k=11"
        );
    }

    #[test]
    fn tensor_errors_become_internal() {
        let err: PluginError = TensorError::Malformed("broken".into()).into();
        assert_eq!(err, PluginError::Internal("broken".into()));
    }
}
