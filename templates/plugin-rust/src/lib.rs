//! The `{{name}}` plugin: JSON features in, the best label out.
//!
//! - preprocess: `{"features": [0.1, 0.2, …]}` → input `features`, f32 `[1, n]`.
//! - postprocess: output `scores`, f32 `[1, classes]` → `{"label": "dog", "score": 0.7}`.
//!
//! Scores print as the f32 widened to f64 (`0.699999988079071` for 0.7f32): every f32 is
//! exactly a f64, so the JSON carries the model's value unchanged; rounding it for display
//! would make it differ from what the model returned.

use infergate_sdk::serde_json::{Value, json};
use infergate_sdk::{Outputs, PluginError, Prepared, Request, Response, Tensor};

/// Class names, in the order of the model's `scores`.
const LABELS: [&str; 3] = ["cat", "dog", "bird"];

pub fn preprocess(req: Request) -> Result<Prepared, PluginError> {
    let body: Value = req.json()?;
    let features: Vec<f32> = body["features"]
        .as_array()
        .and_then(|a| a.iter().map(|v| v.as_f64().map(|f| f as f32)).collect())
        .ok_or_else(|| PluginError::bad_request(r#"send {"features": [numbers]}"#))?;
    let n = features.len() as i64;
    Ok(Prepared::new().input("features", Tensor::f32([1, n], features)?))
}

pub fn postprocess(outputs: Outputs, _context: Vec<u8>) -> Result<Response, PluginError> {
    let scores = outputs.get("scores")?.as_f32()?;
    let best = (0..scores.len().min(LABELS.len()))
        .max_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(b.cmp(&a)))
        .ok_or_else(|| PluginError::internal("the model returned no scores"))?;
    Response::json(&json!({ "label": LABELS[best], "score": f64::from(scores[best]) }))
}

infergate_sdk::plugin!(preprocess, postprocess);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_become_a_row() {
        let prepared = preprocess(Request::new("{{name}}", r#"{"features": [1, 2.5]}"#)).unwrap();
        let features = prepared.get("features").unwrap();
        assert_eq!((features.shape(), features.as_f32().unwrap()), (&[1, 2][..], &[1.0, 2.5][..]));
        assert_eq!(preprocess(Request::new("{{name}}", "{}")).unwrap_err().status(), 400);
    }
}
