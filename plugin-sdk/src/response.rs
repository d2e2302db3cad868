//! [`Response`]: the HTTP response a postprocessor builds.

#[cfg(feature = "json")]
use crate::error::PluginError;

/// The HTTP response sent to the client. The gateway rejects a status outside 100..=599
/// (the client then gets a 500).
///
/// ```
/// use infergate_sdk::Response;
///
/// let resp = Response::new(200, "7").header("content-type", "text/plain");
/// assert_eq!((resp.status, resp.body.as_slice()), (200, &b"7"[..]));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// Headers to send, in order.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with this status and body and no headers.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A 200 `text/plain; charset=utf-8` response.
    pub fn text(body: impl Into<String>) -> Response {
        Response::new(200, body.into()).header("content-type", "text/plain; charset=utf-8")
    }

    /// A 200 `application/json` response with `value` serialized as its body. Failing to
    /// serialize (a map with non-string keys, say) is an internal error.
    #[cfg(feature = "json")]
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Response, PluginError> {
        let body = serde_json::to_vec(value).map_err(|e| {
            PluginError::internal(format!("could not serialize the JSON response: {e}"))
        })?;
        Ok(Response::new(200, body).header("content-type", "application/json"))
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces the status code.
    pub fn with_status(mut self, status: u16) -> Response {
        self.status = status;
        self
    }

    /// The first header called `name`, compared case-insensitively (for tests).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_set_status_headers_and_body() {
        let resp = Response::text("ok").with_status(201).header("x-a", "1");
        assert_eq!(resp.status, 201);
        assert_eq!(
            resp.header_value("Content-Type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(resp.header_value("X-A"), Some("1"));
        assert_eq!(resp.body, b"ok");
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_sets_the_content_type() {
        let resp = Response::json(&serde_json::json!({"a": [1, 2]})).unwrap();
        assert_eq!(
            (resp.status, resp.header_value("content-type")),
            (200, Some("application/json"))
        );
        assert_eq!(resp.body, br#"{"a":[1,2]}"#);
    }
}
