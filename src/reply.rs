//! An answer to a predict request before it becomes an HTTP response: what a post plugin
//! returned (checked), or the TF Serving REST JSON the gateway rendered itself.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};

/// A valid status, valid header names and values, and the body.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// A 200 with a JSON body.
    pub fn json(body: Bytes) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Reply {
            status: StatusCode::OK,
            headers,
            body,
        }
    }
}
