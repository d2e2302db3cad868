//! The example `digits` plugin: a PNG or JPEG of a handwritten digit in, the top-k digits out.
//!
//! ```sh
//! curl -s --data-binary @examples/images/digit-7-0.png \
//!     'http://127.0.0.1:8080/v1/models/digits:predict?k=3'
//! # {"model":"digits","predictions":[{"label":"7","score":0.98},{"label":"9","score":0.01},…]}
//! ```
//!
//! - preprocess: decodes the body (any size), converts it to 8-bit grayscale, resizes it to
//!   28x28 with a bilinear filter when it is not already that size, and sends input `image`,
//!   f32 `[1, 28, 28, 1]` = pixel / 255 — exactly what the model was trained on
//!   (Pillow-decoded pixels divided by 255). Query parameter `k` (1..=10, default 3) and the
//!   model name travel to postprocess in the context. In the gateway (wasm) the decode,
//!   resize and normalize are the gateway's native ops (`infergate_sdk::ops`, Pillow's
//!   bilinear exactly); compiled natively (unit tests, `bench/micro.rs`) the SDK's `image`
//!   feature does the same steps.
//! - postprocess: reads output `probabilities`, f32 `[rows, 10]`, and answers
//!   `{"model": …, "predictions": [{"label": "7", "score": 0.98}, …]}` with the k best labels,
//!   highest score first. Scores are the f32 values widened to f64, so they print exactly.
//!   For more than one row, `predictions` holds one such list per row.

use infergate_sdk::serde_json::{self, Value, json};
use infergate_sdk::{Outputs, PluginError, Prepared, Request, Response, Tensor};

/// Class names in the model's output order; the same list as `models/digits/labels.txt`.
const LABELS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
/// The model's input is SIZE x SIZE grayscale.
const SIZE: u32 = 28;
/// Labels returned when the request has no `k`.
const DEFAULT_K: usize = 3;

/// The `preprocess` export; public so `bench/micro.rs` can time it compiled natively.
pub fn preprocess(req: Request) -> Result<Prepared, PluginError> {
    let k = requested_k(&req)?;
    let input = pixels(&req.body)?;
    let context = json!({ "model": req.model, "k": k }).to_string();
    Ok(Prepared::new().input("image", input).context(context))
}

/// The body as the model's input, f32 `[1, 28, 28, 1]` = pixel / 255, by the gateway's native
/// ops. `resize` leaves an image that is already 28x28 untouched, so the pixels of a 28x28
/// upload reach the model exactly.
#[cfg(target_arch = "wasm32")]
fn pixels(body: &[u8]) -> Result<Tensor, PluginError> {
    use infergate_sdk::ops::{self, Color, DecodeLimits, Filter, Layout};
    // The bounds the SDK's `image` decoder applies natively, so both builds refuse alike.
    let limits = DecodeLimits {
        max_width: 8192,
        max_height: 8192,
        max_pixels: 8192 * 8192,
    };
    let img =
        ops::decode_image(body, Color::Gray, Layout::Hwc, Some(limits)).map_err(undecodable)?;
    let img = ops::resize(&img, Layout::Hwc, SIZE, SIZE, Filter::Bilinear)?;
    Ok(ops::normalize(&img, Layout::Hwc, 1.0, &[], &[255.0])?.reshape([1, 28, 28, 1])?)
}

/// The same steps compiled natively (the ops exist only inside the gateway), with the SDK's
/// `image` feature: Pillow's decode; a bilinear resize that may round one level differently.
#[cfg(not(target_arch = "wasm32"))]
fn pixels(body: &[u8]) -> Result<Tensor, PluginError> {
    use infergate_sdk::image::{self, Normalize};
    let img = image::decode_gray(body).map_err(undecodable)?;
    img.resize(SIZE, SIZE)
        .to_tensor(&Normalize::unit())
        .map_err(PluginError::internal)
}

fn undecodable(e: impl std::fmt::Display) -> PluginError {
    PluginError::bad_request(format!(
        "could not decode the image: {e}; send a PNG or JPEG image as the request body"
    ))
}

/// The `postprocess` export.
pub fn postprocess(outputs: Outputs, context: Vec<u8>) -> Result<Response, PluginError> {
    let (model, k) = read_context(&context)?;
    let probs = outputs.get("probabilities")?;
    let classes = LABELS.len() as i64;
    if probs.shape().len() != 2 || probs.shape()[1] != classes {
        return Err(PluginError::internal(format!(
            "output 'probabilities' has shape {:?}; the digits plugin expects [rows, {classes}]",
            probs.shape()
        )));
    }
    let values = probs
        .as_f32()
        .map_err(|e| PluginError::internal(format!("output 'probabilities': {e}")))?;
    let mut rows: Vec<Value> = values
        .chunks_exact(LABELS.len())
        .map(|row| top_k(row, k))
        .collect();
    let predictions = if rows.len() == 1 {
        rows.remove(0)
    } else {
        Value::Array(rows)
    };
    Response::json(&json!({ "model": model, "predictions": predictions }))
}

infergate_sdk::plugin!(preprocess, postprocess);

/// `?k=N`: how many labels to return, 1 to 10.
fn requested_k(req: &Request) -> Result<usize, PluginError> {
    let Some(raw) = req.query_param("k") else {
        return Ok(DEFAULT_K);
    };
    match raw.parse::<usize>() {
        Ok(k) if (1..=LABELS.len()).contains(&k) => Ok(k),
        _ => Err(PluginError::bad_request(format!(
            "query parameter k must be a whole number from 1 to {}, not '{raw}'",
            LABELS.len()
        ))),
    }
}

/// The model name and k that preprocess put in the context.
fn read_context(context: &[u8]) -> Result<(String, usize), PluginError> {
    let bad = || PluginError::internal("the digits plugin's context is missing or malformed");
    let value: Value = serde_json::from_slice(context).map_err(|_| bad())?;
    let model = value["model"].as_str().ok_or_else(bad)?.to_string();
    let k = value["k"].as_u64().ok_or_else(bad)? as usize;
    Ok((model, k.clamp(1, LABELS.len())))
}

/// The `k` best labels of one row, highest score first (ties: lower label first).
fn top_k(row: &[f32], k: usize) -> Value {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    let best = order
        .into_iter()
        .take(k)
        .map(|i| json!({ "label": LABELS[i], "score": f64::from(row[i]) }))
        .collect();
    Value::Array(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use infergate_sdk::Tensor;
    use infergate_sdk::image::{Channels, Image};

    fn png(width: u32, height: u32, pixels: Vec<u8>) -> Vec<u8> {
        Image::from_raw(width, height, Channels::Gray, pixels)
            .unwrap()
            .to_png()
            .unwrap()
    }

    #[test]
    fn a_28x28_png_becomes_pixels_over_255() {
        let pixels: Vec<u8> = (0..28 * 28).map(|i| (i % 256) as u8).collect();
        let prepared = preprocess(Request::new("digits", png(28, 28, pixels.clone()))).unwrap();
        let image = prepared.get("image").unwrap();
        assert_eq!(image.shape(), &[1, 28, 28, 1]);
        let want: Vec<f32> = pixels.iter().map(|&p| p as f32 / 255.0).collect();
        assert_eq!(image.as_f32().unwrap(), want.as_slice());
        assert_eq!(prepared.context, br#"{"k":3,"model":"digits"}"#);
    }

    #[test]
    fn other_sizes_and_color_are_converted() {
        let rgb = Image::from_raw(3, 2, Channels::Rgb, vec![255; 18])
            .unwrap()
            .to_png()
            .unwrap();
        let prepared = preprocess(Request::new("digits", rgb).with_query("k=10")).unwrap();
        let image = prepared.get("image").unwrap();
        assert_eq!(image.shape(), &[1, 28, 28, 1]);
        assert!(image.as_f32().unwrap().iter().all(|&v| v == 1.0));
        assert_eq!(
            read_context(&prepared.context).unwrap(),
            ("digits".to_string(), 10)
        );
    }

    #[test]
    fn bad_bodies_and_bad_k_are_400s() {
        let err = preprocess(Request::new("digits", "not an image")).unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(
            err.message().starts_with("could not decode the image: "),
            "{err}"
        );
        assert!(err.message().contains("send a PNG or JPEG"), "{err}");
        for k in ["0", "11", "x", "", "-1"] {
            let req =
                Request::new("digits", png(28, 28, vec![0; 784])).with_query(format!("k={k}"));
            let err = preprocess(req).unwrap_err();
            assert_eq!(err.status(), 400, "k={k}");
            assert!(err.message().contains("query parameter k"), "{err}");
        }
    }

    fn probabilities(rows: i64, values: Vec<f32>) -> Outputs {
        Outputs::new(vec![(
            "probabilities".into(),
            Tensor::f32([rows, 10], values).unwrap(),
        )])
    }

    #[test]
    fn one_row_answers_the_top_k_sorted() {
        let row = vec![0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.6, 0.08, 0.04];
        let ctx = br#"{"model":"digits","k":3}"#.to_vec();
        let resp = postprocess(probabilities(1, row), ctx).unwrap();
        assert_eq!(
            (resp.status, resp.header_value("content-type")),
            (200, Some("application/json"))
        );
        let body: Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(
            body,
            json!({"model": "digits", "predictions": [
                {"label": "7", "score": f64::from(0.6f32)},
                {"label": "8", "score": f64::from(0.08f32)},
                {"label": "6", "score": f64::from(0.07f32)},
            ]})
        );
    }

    #[test]
    fn several_rows_answer_a_list_per_row() {
        let mut values = vec![0.0; 20];
        values[3] = 1.0;
        values[10 + 9] = 1.0;
        let resp =
            postprocess(probabilities(2, values), br#"{"model":"m","k":1}"#.to_vec()).unwrap();
        let body: Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(
            body["predictions"],
            json!([[{"label": "3", "score": 1.0}], [{"label": "9", "score": 1.0}]])
        );
    }

    #[test]
    fn a_wrong_output_is_a_500_that_says_what_was_expected() {
        let ctx = br#"{"model":"digits","k":3}"#.to_vec();
        let wrong = Outputs::new(vec![(
            "probabilities".into(),
            Tensor::f32([1, 5], vec![0.2; 5]).unwrap(),
        )]);
        let err = postprocess(wrong, ctx.clone()).unwrap_err();
        assert_eq!(err.status(), 500);
        assert_eq!(
            err.message(),
            "output 'probabilities' has shape [1, 5]; the digits plugin expects [rows, 10]"
        );
        let missing = Outputs::new(vec![(
            "logits".into(),
            Tensor::f32([1, 10], vec![0.1; 10]).unwrap(),
        )]);
        assert!(
            postprocess(missing, ctx.clone())
                .unwrap_err()
                .message()
                .contains("'logits'")
        );
        let ints = Outputs::new(vec![(
            "probabilities".into(),
            Tensor::i64([1, 10], vec![0; 10]).unwrap(),
        )]);
        assert_eq!(postprocess(ints, ctx).unwrap_err().status(), 500);
    }
}
