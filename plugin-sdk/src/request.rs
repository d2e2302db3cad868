//! [`Request`]: the client's HTTP request as a preprocessor sees it, with header and query
//! lookups.

use crate::error::PluginError;

/// The HTTP request as the client sent it to `POST /v1/models/{model}…:predict`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    /// The model name from the URL.
    pub model: String,
    /// `/versions/{v}` from the URL, if given.
    pub version: Option<i64>,
    /// `/labels/{l}` from the URL, if given.
    pub label: Option<String>,
    /// `POST`, normally.
    pub method: String,
    /// The URL path, without the query.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    /// Headers in the order received; names as the client spelled them.
    pub headers: Vec<(String, String)>,
    /// The body bytes, exactly as received.
    pub body: Vec<u8>,
}

impl Request {
    /// A `POST` to `model`'s predict URL with this body: handy in a plugin's unit tests.
    pub fn new(model: impl Into<String>, body: impl Into<Vec<u8>>) -> Request {
        let model = model.into();
        Request {
            path: format!("/v1/models/{model}:predict"),
            model,
            method: "POST".into(),
            body: body.into(),
            ..Request::default()
        }
    }

    /// Sets the raw query string (without `?`), for tests: `Request::new(..).with_query("k=5")`.
    pub fn with_query(mut self, query: impl Into<String>) -> Request {
        self.query = query.into();
        self
    }

    /// Adds a header, for tests.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The first header called `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter called `name`, percent-decoded (`+` is a space). A parameter
    /// given without `=` has the value `""`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_params()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// Every query parameter in order, names and values percent-decoded.
    pub fn query_params(&self) -> Vec<(String, String)> {
        self.query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }

    /// The body as UTF-8 text; a 400 error if it is not.
    pub fn body_str(&self) -> Result<&str, PluginError> {
        std::str::from_utf8(&self.body).map_err(|e| {
            PluginError::bad_request(format!("the request body is not UTF-8 text: {e}"))
        })
    }

    /// The body parsed as JSON into `T`; a 400 error naming the problem if it does not parse.
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, PluginError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            PluginError::bad_request(format!("the request body is not valid JSON: {e}"))
        })
    }
}

/// Decodes `application/x-www-form-urlencoded` text; malformed escapes are kept as written and
/// invalid UTF-8 becomes U+FFFD.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) => hex(hi).zip(hex(lo)).map(|(hi, lo)| hi << 4 | lo),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 2;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_match_case_insensitively() {
        let req = Request::new("m", "").with_header("Content-Type", "image/png");
        assert_eq!(req.header("content-type"), Some("image/png"));
        assert_eq!(req.header("CONTENT-TYPE"), Some("image/png"));
        assert_eq!(req.header("accept"), None);
    }

    #[test]
    fn query_params_are_decoded() {
        let req = Request::new("m", "").with_query("k=5&name=a+b%21&flag&k=6&bad=%zz%4");
        assert_eq!(req.query_param("k").as_deref(), Some("5"));
        assert_eq!(req.query_param("name").as_deref(), Some("a b!"));
        assert_eq!(req.query_param("flag").as_deref(), Some(""));
        assert_eq!(req.query_param("bad").as_deref(), Some("%zz%4"));
        assert_eq!(req.query_param("missing"), None);
        assert_eq!(Request::new("m", "").query_params(), vec![]);
    }

    #[test]
    fn body_text_and_json() {
        assert_eq!(Request::new("m", "hi").body_str().unwrap(), "hi");
        assert_eq!(
            Request::new("m", vec![0xff])
                .body_str()
                .unwrap_err()
                .status(),
            400
        );
        #[cfg(feature = "json")]
        {
            let v: serde_json::Value = Request::new("m", r#"{"a":1}"#).json().unwrap();
            assert_eq!(v["a"], 1);
            let err = Request::new("m", "{")
                .json::<serde_json::Value>()
                .unwrap_err();
            assert!(
                err.message()
                    .starts_with("the request body is not valid JSON"),
                "{err}"
            );
        }
    }

    #[test]
    fn new_fills_in_a_predict_call() {
        let req = Request::new("digits", "x");
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("POST", "/v1/models/digits:predict")
        );
    }
}
