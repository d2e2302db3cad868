//! The native ops against Pillow/numpy outputs recorded by `tests/ops/make_golden.py` (the
//! JSON is read here; no Python at test time), and each op's refusals and limits.

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use super::*;

const GOLDEN: &str = include_str!("../../../tests/ops/golden.json");
const BOMB: &[u8] = include_bytes!("../../../tests/ops/bomb-30000.png");

fn roomy() -> Budget {
    Budget::new(1 << 30, 1 << 30, Instant::now() + Duration::from_secs(60))
}

fn b64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("base64 string"))
        .expect("base64")
}

fn dtype(name: &str) -> DType {
    use DType::*;
    [
        F16, BF16, F32, F64, I8, I16, I32, I64, U8, U16, U32, U64, Bool,
    ]
    .into_iter()
    .find(|d| d.name() == name)
    .unwrap_or_else(|| panic!("dtype {name}"))
}

fn array(v: &Value) -> Array {
    Array {
        dtype: dtype(v["dtype"].as_str().unwrap()),
        shape: v["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_i64().unwrap())
            .collect(),
        data: b64(&v["data"]),
    }
}

fn layout(v: &Value) -> Layout {
    match v["layout"].as_str().unwrap() {
        "hwc" => Layout::Hwc,
        _ => Layout::Chw,
    }
}

fn floats(a: &Array) -> Vec<f64> {
    (0..a.data.len() / a.dtype.size().unwrap())
        .map(|i| match elementwise::read(a.dtype, &a.data, i) {
            elementwise::Scalar::Float(f) => f,
            elementwise::Scalar::Int(i) => i as f64,
        })
        .collect()
}

/// Compares `got` with `want` as the case says: bit for bit, within `levels` (u8) or within
/// `tol` relative (floats; NaN must meet NaN).
fn compare(case: &Value, got: &Array, want: &Array) -> Result<(), String> {
    if got.dtype != want.dtype || got.shape != want.shape {
        return Err(format!(
            "got {} {:?}, want {} {:?}",
            got.dtype.name(),
            got.shape,
            want.dtype.name(),
            want.shape
        ));
    }
    if case["exact"].as_bool() == Some(true) {
        if got.data != want.data {
            let first = got.data.iter().zip(&want.data).position(|(a, b)| a != b);
            return Err(format!("bytes differ, first at byte {first:?}"));
        }
        return Ok(());
    }
    if let Some(levels) = case["levels"].as_i64() {
        let worst = got
            .data
            .iter()
            .zip(&want.data)
            .map(|(&a, &b)| (i64::from(a) - i64::from(b)).abs())
            .max()
            .unwrap_or(0);
        if worst > levels {
            return Err(format!("off by {worst} levels (allowed {levels})"));
        }
        return Ok(());
    }
    // Relative to the larger of the element and the tensor's largest magnitude: an element
    // near 0 after cancellation keeps the absolute error of its neighbours.
    let tol = case["tol"].as_f64().expect("exact, levels or tol");
    let want_values = floats(want);
    let scale = want_values
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in floats(got).iter().zip(want_values).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= tol * w.abs().max(scale);
        if !ok {
            return Err(format!("element {i}: got {g}, want {w} (tol {tol})"));
        }
    }
    Ok(())
}

fn run_case(case: &Value) -> Result<(), String> {
    let args = &case["args"];
    let mut budget = roomy();
    let fail = |f: Fail| format!("{f:?}");
    let u = |k: &str| args[k].as_u64().unwrap() as u32;
    let got = match case["op"].as_str().unwrap() {
        "decode_image" => {
            let color = match args["color"].as_str().unwrap() {
                "gray" => Color::Gray,
                _ => Color::Rgb,
            };
            let bytes = b64(&case["input"]["bytes"]);
            vec![decode_image(&bytes, color, layout(args), None, &mut budget).map_err(fail)?]
        }
        "resize" => {
            let filter = match args["filter"].as_str().unwrap() {
                "nearest" => Filter::Nearest,
                "bilinear" => Filter::Bilinear,
                "bicubic" => Filter::Bicubic,
                _ => Filter::Lanczos,
            };
            let input = array(&case["input"]);
            vec![
                resize(
                    input,
                    layout(args),
                    u("width"),
                    u("height"),
                    filter,
                    &mut budget,
                )
                .map_err(fail)?,
            ]
        }
        "crop" => {
            let window = [u("left"), u("top"), u("width"), u("height")];
            vec![crop(&array(&case["input"]), layout(args), window, &mut budget).map_err(fail)?]
        }
        "center_crop" => vec![
            center_crop(
                &array(&case["input"]),
                layout(args),
                u("width"),
                u("height"),
                &mut budget,
            )
            .map_err(fail)?,
        ],
        "normalize" => {
            let list = |k: &str| -> Vec<f32> {
                args[k]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect()
            };
            let scale = args["scale"].as_f64().unwrap() as f32;
            vec![
                normalize(
                    &array(&case["input"]),
                    layout(args),
                    scale,
                    &list("mean"),
                    &list("std"),
                    &mut budget,
                )
                .map_err(fail)?,
            ]
        }
        "cast" => {
            let to = dtype(args["to"].as_str().unwrap());
            vec![cast(array(&case["input"]), to, &mut budget).map_err(fail)?]
        }
        "softmax" => vec![softmax(&array(&case["input"]), &mut budget).map_err(fail)?],
        "argmax" => vec![argmax(&array(&case["input"]), &mut budget).map_err(fail)?],
        "top_k" => {
            let (v, i) = top_k(&array(&case["input"]), u("k"), &mut budget).map_err(fail)?;
            vec![v, i]
        }
        other => return Err(format!("unknown op {other}")),
    };
    let want: Vec<Array> = match &case["want"] {
        Value::Array(many) => many.iter().map(array).collect(),
        one => vec![array(one)],
    };
    for (g, w) in got.iter().zip(&want) {
        compare(case, g, w)?;
    }
    Ok(())
}

#[test]
fn every_op_matches_pillow_and_numpy_on_the_recorded_cases() {
    let golden: Value = serde_json::from_str(GOLDEN).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    let mut failures = Vec::new();
    let mut per_op = std::collections::BTreeMap::<&str, usize>::new();
    for case in cases {
        *per_op.entry(case["op"].as_str().unwrap()).or_default() += 1;
        if let Err(e) = run_case(case) {
            failures.push(format!("{} {}: {e}", case["op"], case["args"]));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Every op of the interface has recorded cases.
    for op in [
        "decode_image",
        "resize",
        "crop",
        "center_crop",
        "normalize",
        "cast",
        "softmax",
        "argmax",
        "top_k",
    ] {
        assert!(
            per_op.get(op).copied().unwrap_or(0) > 0,
            "no cases for {op}"
        );
    }
}

fn u8_image(shape: &[i64]) -> Array {
    let n: i64 = shape.iter().product();
    Array {
        dtype: DType::U8,
        shape: shape.to_vec(),
        data: (0..n).map(|i| (i * 7 % 256) as u8).collect(),
    }
}

fn f32_array(shape: &[i64], values: &[f32]) -> Array {
    Array {
        dtype: DType::F32,
        shape: shape.to_vec(),
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn invalid_message(r: OpResult<impl std::fmt::Debug>) -> String {
    match r {
        Err(Fail::Invalid(m)) => m,
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn a_30000x30000_png_header_is_refused_before_its_pixels_are_allocated() {
    // 74 bytes that declare 2.7 GB of RGB pixels. The budget would allow only 1 MiB, so had
    // the decoder allocated first, the failure would be the memory cap, not the limit.
    let mut budget = Budget::new(1 << 20, 64 << 20, Instant::now() + Duration::from_secs(5));
    let err = decode_image(BOMB, Color::Rgb, Layout::Hwc, None, &mut budget).unwrap_err();
    let Fail::Limit(message) = err else {
        panic!("expected limit, got {err:?}")
    };
    assert!(message.contains("30000x30000"), "{message}");
    assert!(message.contains("16384x16384"), "{message}");
    // A guest's own limits only tighten the host's.
    let png = {
        let golden: Value = serde_json::from_str(GOLDEN).unwrap();
        let case = golden["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["args"]["what"] == "PNG RGB")
            .unwrap()
            .clone();
        b64(&case["input"]["bytes"])
    };
    let tight = Limits {
        max_width: 4,
        max_height: 100,
        max_pixels: u64::MAX,
    };
    let err = decode_image(&png, Color::Rgb, Layout::Hwc, Some(tight), &mut roomy()).unwrap_err();
    assert!(
        matches!(&err, Fail::Limit(m) if m.contains("5x6") && m.contains("4x100")),
        "{err:?}"
    );
    let loose = Limits {
        max_width: u32::MAX,
        max_height: u32::MAX,
        max_pixels: u64::MAX,
    };
    let err = decode_image(BOMB, Color::Gray, Layout::Hwc, Some(loose), &mut roomy()).unwrap_err();
    assert!(
        matches!(&err, Fail::Limit(m) if m.contains("30000x30000")),
        "{err:?}"
    );
}

#[test]
fn bad_image_bytes_are_invalid_naming_the_format() {
    let msg = invalid_message(decode_image(
        b"GIF89a...",
        Color::Gray,
        Layout::Hwc,
        None,
        &mut roomy(),
    ));
    assert!(msg.starts_with("bytes: neither PNG nor JPEG"), "{msg}");
    let truncated = &BOMB[..30];
    let msg = invalid_message(decode_image(
        truncated,
        Color::Gray,
        Layout::Hwc,
        None,
        &mut roomy(),
    ));
    assert!(msg.starts_with("bytes: invalid PNG"), "{msg}");
    let msg = invalid_message(decode_image(
        b"\xff\xd8\xff\xe0 not really",
        Color::Gray,
        Layout::Hwc,
        None,
        &mut roomy(),
    ));
    assert!(msg.starts_with("bytes: invalid JPEG"), "{msg}");
}

#[test]
fn results_count_against_the_memory_the_cap_leaves() {
    // 100x100x3 u8 → 300x300x3 = 270,000 bytes of result (plus the horizontal pass).
    let img = u8_image(&[100, 100, 3]);
    let mut tight = Budget::new(200_000, 64 << 20, Instant::now() + Duration::from_secs(5));
    let err = resize(
        img.clone(),
        Layout::Hwc,
        300,
        300,
        Filter::Bilinear,
        &mut tight,
    )
    .unwrap_err();
    let Fail::Limit(m) = err else {
        panic!("{err:?}")
    };
    assert!(m.contains("limits.memory_mb"), "{m}");
    let mut enough = Budget::new(400_000, 64 << 20, Instant::now() + Duration::from_secs(5));
    assert!(
        resize(
            img.clone(),
            Layout::Hwc,
            300,
            300,
            Filter::Bilinear,
            &mut enough
        )
        .is_ok()
    );
    // Every op with a result charges it.
    let none = || Budget::new(10, 64 << 20, Instant::now() + Duration::from_secs(5));
    assert!(matches!(
        cast(img.clone(), DType::F32, &mut none()),
        Err(Fail::Limit(_))
    ));
    assert!(matches!(
        normalize(&img, Layout::Hwc, 1.0, &[], &[], &mut none()),
        Err(Fail::Limit(_))
    ));
    assert!(matches!(
        crop(&img, Layout::Hwc, [0, 0, 50, 50], &mut none()),
        Err(Fail::Limit(_))
    ));
    let logits = f32_array(&[8, 4], &[0.5; 32]);
    assert!(matches!(softmax(&logits, &mut none()), Err(Fail::Limit(_))));
    assert!(matches!(argmax(&logits, &mut none()), Err(Fail::Limit(_))));
    assert!(matches!(
        top_k(&logits, 2, &mut none()),
        Err(Fail::Limit(_))
    ));
}

#[test]
fn an_op_past_the_deadline_stops() {
    let img = u8_image(&[64, 64, 1]);
    let mut late = Budget::new(1 << 30, 1 << 30, Instant::now());
    for result in [
        resize(
            img.clone(),
            Layout::Hwc,
            128,
            128,
            Filter::Lanczos,
            &mut late,
        )
        .map(|_| ()),
        resize(img.clone(), Layout::Hwc, 10, 10, Filter::Nearest, &mut late).map(|_| ()),
        cast(img.clone(), DType::F64, &mut late).map(|_| ()),
        normalize(
            &cast(img.clone(), DType::F32, &mut roomy()).unwrap(),
            Layout::Hwc,
            1.0,
            &[],
            &[],
            &mut late,
        )
        .map(|_| ()),
        crop(&img, Layout::Hwc, [0, 0, 8, 8], &mut late).map(|_| ()),
        softmax(&f32_array(&[2, 2], &[1.0; 4]), &mut late).map(|_| ()),
        argmax(&img, &mut late).map(|_| ()),
        top_k(&img, 3, &mut late).map(|_| ()),
    ] {
        assert_eq!(result, Err(Fail::Deadline));
    }
}

#[test]
fn each_bad_argument_is_invalid_and_named() {
    let img = u8_image(&[4, 6, 3]);
    let cases: Vec<(OpResult<Array>, &str)> = vec![
        (
            resize(
                img.clone(),
                Layout::Hwc,
                0,
                5,
                Filter::Bilinear,
                &mut roomy(),
            ),
            "width, height",
        ),
        (
            resize(
                cast(img.clone(), DType::I32, &mut roomy()).unwrap(),
                Layout::Hwc,
                3,
                3,
                Filter::Bilinear,
                &mut roomy(),
            ),
            "image: resize takes u8 or f32",
        ),
        (
            resize(
                u8_image(&[4, 6]),
                Layout::Hwc,
                3,
                3,
                Filter::Bilinear,
                &mut roomy(),
            ),
            "image: an image tensor has rank 3 or 4",
        ),
        (
            resize(
                Array {
                    data: vec![0; 5],
                    ..img.clone()
                },
                Layout::Hwc,
                3,
                3,
                Filter::Bilinear,
                &mut roomy(),
            ),
            "image: shape [4, 6, 3] of u8 needs 72 bytes of data, not 5",
        ),
        (
            crop(&img, Layout::Hwc, [4, 0, 3, 2], &mut roomy()),
            "left, top, width, height: the window 3x2 at (4, 0) is not inside the 6x4 image",
        ),
        (
            crop(&img, Layout::Hwc, [0, 0, 0, 2], &mut roomy()),
            "left, top, width, height",
        ),
        (
            center_crop(&img, Layout::Hwc, 7, 2, &mut roomy()),
            "width, height: 7x2 does not fit in the 6x4 image",
        ),
        (
            normalize(&img, Layout::Hwc, 1.0, &[0.0, 1.0], &[], &mut roomy()),
            "mean: 2 values; give 0, 1 or 3",
        ),
        (
            normalize(&img, Layout::Hwc, 1.0, &[], &[1.0, 0.0, 2.0], &mut roomy()),
            "std: must not contain 0",
        ),
        (
            cast(img.clone(), DType::Str, &mut roomy()),
            "to: cast does not convert",
        ),
        (
            softmax(&img, &mut roomy()),
            "t: softmax takes f16, bf16, f32 or f64, not u8",
        ),
        (
            softmax(&f32_array(&[], &[1.0]), &mut roomy()),
            "t: softmax needs a tensor with a non-empty last axis",
        ),
        (
            argmax(&f32_array(&[3, 0], &[]), &mut roomy()),
            "t: argmax needs a tensor with a non-empty last axis",
        ),
        (
            top_k(&img, 0, &mut roomy()).map(|(v, _)| v),
            "k: must be at least 1",
        ),
        (
            top_k(
                &Array {
                    shape: vec![-1, 2],
                    ..img.clone()
                },
                1,
                &mut roomy(),
            )
            .map(|(v, _)| v),
            "t: negative dimension",
        ),
    ];
    for (result, want) in cases {
        let msg = invalid_message(result);
        assert!(msg.starts_with(want), "{msg:?} should start with {want:?}");
    }
}

#[test]
fn resize_to_the_same_size_returns_the_image_bit_for_bit() {
    let img = f32_array(&[2, 2, 1], &[f32::NAN, -0.0, 1e-40, 3.5]);
    let same = resize(
        img.clone(),
        Layout::Hwc,
        2,
        2,
        Filter::Lanczos,
        &mut roomy(),
    )
    .unwrap();
    assert_eq!(same.data, img.data);
}

#[test]
fn cast_edges_follow_ops_wit() {
    let weird = f32_array(&[5], &[f32::NAN, f32::INFINITY, -1e20, 1e20, -0.9]);
    let to_i32 = cast(weird.clone(), DType::I32, &mut roomy()).unwrap();
    let got: Vec<i32> = to_i32
        .data
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(got, [0, i32::MAX, i32::MIN, i32::MAX, 0]);
    let to_u8 = cast(weird, DType::U8, &mut roomy()).unwrap();
    assert_eq!(to_u8.data, [0, 255, 0, 255, 0]);
    // bf16 rounds to nearest even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7.
    let halfway = f32_array(&[2], &[1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0]);
    let bf = cast(halfway, DType::BF16, &mut roomy()).unwrap();
    assert_eq!(bf.data, [0x80, 0x3f, 0x82, 0x3f]);
}
