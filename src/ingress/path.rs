//! The HTTP API's URL grammar. TF Serving's: `/v1/models/{m}[/versions/{v}|/labels/{l}]`
//! followed by `:predict` (POST), `/metadata` (GET) or nothing (GET status); the `/v1/models`
//! prefix is case-insensitive and names are percent-decoded, as TF Serving does. The Open
//! Inference Protocol's (KServe v2): `/v2`, `/v2/health/{live,ready}`, and
//! `/v2/models/{m}[/versions/{v}]` followed by nothing (GET metadata), `/ready` (GET) or
//! `/infer` (POST); names are percent-decoded.

use crate::backend::VersionChoice;

#[derive(Debug, PartialEq, Eq)]
pub enum Endpoint {
    Predict {
        model: String,
        version: VersionChoice,
    },
    Status {
        model: String,
        version: VersionChoice,
    },
    Metadata {
        model: String,
        version: VersionChoice,
    },
    ListModels,
    /// `GET /v2`: server metadata.
    V2Server,
    V2Live,
    V2Ready,
    V2Metadata {
        model: String,
        version: VersionChoice,
    },
    V2ModelReady {
        model: String,
        version: VersionChoice,
    },
    V2Infer {
        model: String,
        version: VersionChoice,
    },
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
}

/// Why a path is not part of the API.
#[derive(Debug, PartialEq, Eq)]
pub enum PathError {
    NotFound,
    MethodNotAllowed,
    Invalid(String),
}

pub fn parse(method: &http::Method, path: &str) -> Result<Endpoint, PathError> {
    use http::Method;
    let get = |e: Endpoint| {
        if method == Method::GET || method == Method::HEAD {
            Ok(e)
        } else {
            Err(PathError::MethodNotAllowed)
        }
    };
    match path {
        "/healthz" => return get(Endpoint::Healthz),
        "/readyz" => return get(Endpoint::Readyz),
        "/metrics" => return get(Endpoint::Metrics),
        "/openapi.json" => return get(Endpoint::OpenApi),
        _ => {}
    }
    if path == "/v2" || path.starts_with("/v2/") {
        return parse_v2(method, &path[3..]);
    }
    const PREFIX: &str = "/v1/models";
    let Some(head) = path
        .get(..PREFIX.len())
        .filter(|h| h.eq_ignore_ascii_case(PREFIX))
    else {
        return Err(PathError::NotFound);
    };
    let _ = head;
    let rest = &path[PREFIX.len()..];
    if rest.is_empty() || rest == "/" {
        return get(Endpoint::ListModels);
    }
    let rest = rest.strip_prefix('/').ok_or(PathError::NotFound)?;
    let (model, rest) = split_name(rest)?;
    let (version, rest) = parse_version(rest)?;
    if let Some(verb) = rest.strip_prefix(':') {
        return match verb.to_ascii_lowercase().as_str() {
            "predict" if method == Method::POST => Ok(Endpoint::Predict { model, version }),
            "predict" => Err(PathError::MethodNotAllowed),
            "classify" | "regress" => Err(PathError::Invalid(format!(
                "`:{verb}` is not supported; use `:predict`"
            ))),
            _ => Err(PathError::NotFound),
        };
    }
    if rest.is_empty() {
        return get(Endpoint::Status { model, version });
    }
    if rest.eq_ignore_ascii_case("/metadata") {
        return get(Endpoint::Metadata { model, version });
    }
    Err(PathError::NotFound)
}

/// The longest model name, version or label a path may carry, in bytes before decoding.
/// Names come from folder names and TF Serving labels, far shorter; a longer segment is a
/// client's mistake or an attack on whatever keys on it (logs, metric labels, caches).
pub const MAX_SEGMENT_BYTES: usize = 256;

/// The Open Inference Protocol's paths, after `/v2`.
fn parse_v2(method: &http::Method, rest: &str) -> Result<Endpoint, PathError> {
    use http::Method;
    let get = |e: Endpoint| {
        if method == Method::GET || method == Method::HEAD {
            Ok(e)
        } else {
            Err(PathError::MethodNotAllowed)
        }
    };
    match rest {
        "" | "/" => return get(Endpoint::V2Server),
        "/health/live" => return get(Endpoint::V2Live),
        "/health/ready" => return get(Endpoint::V2Ready),
        _ => {}
    }
    let rest = rest.strip_prefix("/models/").ok_or(PathError::NotFound)?;
    let end = rest.find('/').unwrap_or(rest.len());
    let model = decode_segment(&rest[..end])?;
    let mut rest = &rest[end..];
    let mut version = VersionChoice::Latest;
    if let Some(after) = rest.strip_prefix("/versions/") {
        let end = after.find('/').unwrap_or(after.len());
        let v = decode_segment(&after[..end])?;
        let number = v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0 && v.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| PathError::Invalid(format!("version `{v}` is not a number")))?;
        version = VersionChoice::Number(number);
        rest = &after[end..];
    }
    match rest {
        "" => get(Endpoint::V2Metadata { model, version }),
        "/ready" => get(Endpoint::V2ModelReady { model, version }),
        "/infer" if method == Method::POST => Ok(Endpoint::V2Infer { model, version }),
        "/infer" => Err(PathError::MethodNotAllowed),
        _ => Err(PathError::NotFound),
    }
}

/// A non-empty path segment, percent-decoded.
fn decode_segment(s: &str) -> Result<String, PathError> {
    if s.is_empty() {
        return Err(PathError::NotFound);
    }
    check_segment_length(s.len())?;
    percent_decode(s)
        .ok_or_else(|| PathError::Invalid(format!("`{s}` is not valid percent-encoding")))
}

fn check_segment_length(len: usize) -> Result<(), PathError> {
    if len > MAX_SEGMENT_BYTES {
        return Err(PathError::Invalid(format!(
            "a path segment is {len} bytes long; model names, versions and labels may be at \
             most {MAX_SEGMENT_BYTES}"
        )));
    }
    Ok(())
}

/// A `[^/:]+` segment, percent-decoded.
fn split_name(s: &str) -> Result<(String, &str), PathError> {
    let end = s.find(['/', ':']).unwrap_or(s.len());
    if end == 0 {
        return Err(PathError::NotFound);
    }
    check_segment_length(end)?;
    let name = percent_decode(&s[..end]).ok_or_else(|| {
        PathError::Invalid(format!("`{}` is not valid percent-encoding", &s[..end]))
    })?;
    Ok((name, &s[end..]))
}

fn parse_version(s: &str) -> Result<(VersionChoice, &str), PathError> {
    let lower = s.get(..10).map(str::to_ascii_lowercase);
    if lower.as_deref() == Some("/versions/") {
        let (v, rest) = split_name(&s[10..])?;
        let number = v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0 && v.bytes().all(|b| b.is_ascii_digit()));
        let number =
            number.ok_or_else(|| PathError::Invalid(format!("version `{v}` is not a number")))?;
        return Ok((VersionChoice::Number(number), rest));
    }
    if s.get(..8).map(str::to_ascii_lowercase).as_deref() == Some("/labels/") {
        let (label, rest) = split_name(&s[8..])?;
        return Ok((VersionChoice::Label(label), rest));
    }
    Ok((VersionChoice::Latest, s))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Two hex digits exactly: from_str_radix alone would take a sign (`%+5`).
            let hex = s.get(i + 1..i + 3)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn predict(model: &str, version: VersionChoice) -> Result<Endpoint, PathError> {
        Ok(Endpoint::Predict {
            model: model.into(),
            version,
        })
    }

    /// Every form of TF Serving's predict URL parses, including case-insensitive prefixes.
    #[test]
    fn predict_paths() {
        assert_eq!(
            parse(&Method::POST, "/v1/models/digits:predict"),
            predict("digits", VersionChoice::Latest)
        );
        assert_eq!(
            parse(&Method::POST, "/v1/models/digits/versions/2:predict"),
            predict("digits", VersionChoice::Number(2))
        );
        assert_eq!(
            parse(&Method::POST, "/V1/Models/digits/labels/stable:predict"),
            predict("digits", VersionChoice::Label("stable".into()))
        );
        assert_eq!(
            parse(&Method::POST, "/v1/models/my%20model:predict"),
            predict("my model", VersionChoice::Latest)
        );
    }

    /// Status, metadata and the route list are GET endpoints.
    #[test]
    fn get_paths() {
        assert_eq!(parse(&Method::GET, "/v1/models"), Ok(Endpoint::ListModels));
        assert_eq!(
            parse(&Method::GET, "/v1/models/digits/versions/1"),
            Ok(Endpoint::Status {
                model: "digits".into(),
                version: VersionChoice::Number(1)
            })
        );
        assert_eq!(
            parse(&Method::GET, "/v1/models/digits/metadata"),
            Ok(Endpoint::Metadata {
                model: "digits".into(),
                version: VersionChoice::Latest
            })
        );
        assert_eq!(parse(&Method::GET, "/healthz"), Ok(Endpoint::Healthz));
    }

    /// A model name, version or label of up to MAX_SEGMENT_BYTES parses; one byte more is a
    /// 400 (not a lookup), whichever segment it is in.
    #[test]
    fn segment_length_both_ways() {
        let ok = "a".repeat(MAX_SEGMENT_BYTES);
        let long = "a".repeat(MAX_SEGMENT_BYTES + 1);
        assert_eq!(
            parse(
                &Method::POST,
                &format!("/v1/models/{ok}/labels/{ok}:predict")
            ),
            predict(&ok, VersionChoice::Label(ok.clone()))
        );
        for path in [
            format!("/v1/models/{long}:predict"),
            format!("/v1/models/m/labels/{long}:predict"),
            format!(
                "/v1/models/m/versions/{}:predict",
                "1".repeat(MAX_SEGMENT_BYTES + 1)
            ),
            format!("/v1/models/m/labels/{}:predict", "x".repeat(10 * 1024)),
        ] {
            assert!(
                matches!(parse(&Method::POST, &path), Err(PathError::Invalid(m)) if m.contains("at most 256")),
                "{}",
                &path[..40]
            );
        }
    }

    /// Wrong methods, bad versions and unknown paths are told apart.
    #[test]
    fn rejected_paths() {
        assert_eq!(
            parse(&Method::GET, "/v1/models/digits:predict"),
            Err(PathError::MethodNotAllowed)
        );
        assert_eq!(
            parse(&Method::POST, "/v1/models/digits"),
            Err(PathError::MethodNotAllowed)
        );
        assert!(matches!(
            parse(&Method::POST, "/v1/models/digits/versions/x:predict"),
            Err(PathError::Invalid(_))
        ));
        assert!(matches!(
            parse(&Method::POST, "/v1/models/digits:classify"),
            Err(PathError::Invalid(_))
        ));
        assert_eq!(
            parse(&Method::GET, "/v2/models/digits/other"),
            Err(PathError::NotFound)
        );
        assert_eq!(parse(&Method::GET, "/v2x"), Err(PathError::NotFound));
        assert_eq!(
            parse(&Method::GET, "/v1/models/digits/other"),
            Err(PathError::NotFound)
        );
        assert_eq!(parse(&Method::GET, "/v1/modelsx"), Err(PathError::NotFound));
        // A percent sign takes exactly two hex digits; a sign is not one.
        for path in [
            "/v1/models/a%+5:predict",
            "/v1/models/a%-1:predict",
            "/v1/models/a%zz:predict",
        ] {
            assert!(
                matches!(parse(&Method::POST, path), Err(PathError::Invalid(m)) if m.contains("percent-encoding")),
                "{path}"
            );
        }
    }

    /// Every Open Inference Protocol path parses; wrong methods and bad versions are told
    /// apart.
    #[test]
    fn v2_paths() {
        let m = || "digits".to_string();
        assert_eq!(parse(&Method::GET, "/v2"), Ok(Endpoint::V2Server));
        assert_eq!(parse(&Method::GET, "/v2/health/live"), Ok(Endpoint::V2Live));
        assert_eq!(
            parse(&Method::GET, "/v2/health/ready"),
            Ok(Endpoint::V2Ready)
        );
        assert_eq!(
            parse(&Method::GET, "/v2/models/digits"),
            Ok(Endpoint::V2Metadata {
                model: m(),
                version: VersionChoice::Latest
            })
        );
        assert_eq!(
            parse(&Method::GET, "/v2/models/digits/versions/2/ready"),
            Ok(Endpoint::V2ModelReady {
                model: m(),
                version: VersionChoice::Number(2)
            })
        );
        assert_eq!(
            parse(&Method::POST, "/v2/models/my%20model/infer"),
            Ok(Endpoint::V2Infer {
                model: "my model".into(),
                version: VersionChoice::Latest
            })
        );
        assert_eq!(
            parse(&Method::GET, "/v2/models/digits/infer"),
            Err(PathError::MethodNotAllowed)
        );
        assert_eq!(
            parse(&Method::POST, "/v2/health/live"),
            Err(PathError::MethodNotAllowed)
        );
        assert!(matches!(
            parse(&Method::POST, "/v2/models/digits/versions/x/infer"),
            Err(PathError::Invalid(_))
        ));
        assert_eq!(parse(&Method::GET, "/v2/models/"), Err(PathError::NotFound));
        assert_eq!(
            parse(&Method::GET, "/v2/repository/index"),
            Err(PathError::NotFound)
        );
    }
}
