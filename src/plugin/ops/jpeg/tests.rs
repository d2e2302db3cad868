//! The JPEG decoder on hostile bytes: mangled files (every truncation, random byte changes)
//! never panic and end in a decoded image or a clean error; the frame's size is refused
//! before anything is allocated; a scan past the deadline stops. Its match with Pillow is in
//! `ops/tests.rs` (the recorded cases).

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use super::super::{Array, Budget, Color, Fail, Layout, OpResult, decode_image};
use super::takes;

const GOLDEN: &str = include_str!("../../../../tests/ops/golden.json");
const PHOTO_224: &[u8] = include_bytes!("../../../../tests/ops/photo-224.jpg");
const DIGIT: &[u8] = include_bytes!("../../../../examples/images/digit-7.jpg");

/// The JPEG bytes of the recorded case labelled `what`.
fn recorded(what: &str) -> Vec<u8> {
    let golden: Value = serde_json::from_str(GOLDEN).unwrap();
    let case = golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["args"]["what"] == what)
        .unwrap_or_else(|| panic!("no case {what}"));
    base64::engine::general_purpose::STANDARD
        .decode(case["input"]["bytes"].as_str().unwrap())
        .unwrap()
}

fn budget(bytes: usize) -> Budget {
    Budget::new(bytes, bytes, Instant::now() + Duration::from_secs(60))
}

/// A decoded image whose shape and data agree, or an error that names JPEG or a limit.
fn clean(result: OpResult<Array>, what: &str) {
    match result {
        Ok(a) => {
            let n: i64 = a.shape.iter().product();
            assert_eq!(a.data.len() as i64, n, "{what}: {:?}", a.shape);
        }
        Err(Fail::Invalid(m)) => assert!(m.starts_with("bytes: "), "{what}: {m}"),
        Err(Fail::Limit(m)) => assert!(
            m.starts_with("bytes: ") || m.contains("memory"),
            "{what}: {m}"
        ),
        Err(Fail::Deadline) => panic!("{what}: deadline"),
    }
}

/// xorshift64*: a fixed sequence, so a failure is reproducible from its case number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Small files, so that thousands of decodes stay quick in a debug build: each subsampling,
/// gray, restart markers, the standard tables, RGB without the transform.
fn files() -> Vec<(&'static str, Vec<u8>)> {
    [
        "JPEG gray 13x7",
        "JPEG 4:2:0 17x13",
        "JPEG 4:2:2 9x31",
        "JPEG 4:4:4 3x2",
        "JPEG 4:2:0 restart every 3 MCUs",
        "JPEG 4:2:2 without DHT (standard tables)",
        "JPEG RGB (Adobe, no YCbCr transform)",
    ]
    .into_iter()
    .map(|w| (w, recorded(w)))
    .chain([("digit-7.jpg", DIGIT.to_vec())])
    .collect()
}

#[test]
fn every_truncation_of_a_valid_jpeg_decodes_or_fails_cleanly() {
    for (what, data) in files()
        .into_iter()
        .take(5)
        .chain([("digit-7.jpg", DIGIT.to_vec())])
    {
        for len in 0..data.len() {
            let result = decode_image(
                &data[..len],
                Color::Rgb,
                Layout::Hwc,
                None,
                &mut budget(16 << 20),
            );
            clean(result, &format!("{what} cut at {len}"));
        }
    }
}

#[test]
fn random_byte_changes_decode_or_fail_cleanly() {
    let mut rng = Rng(0x15_1ead_beef);
    let files = files();
    for case in 0..3000 {
        let (what, data) = &files[case % files.len()];
        let mut bytes = data.clone();
        // Half the cases change the headers (tables, frame, scan header), half anywhere.
        let span = if case % 2 == 0 {
            bytes.len().min(700)
        } else {
            bytes.len()
        };
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(span);
            bytes[at] = match rng.below(3) {
                0 => bytes[at] ^ (1 << rng.below(8)),
                1 => 0xFF,
                _ => rng.next() as u8,
            };
        }
        let color = if case % 3 == 0 {
            Color::Gray
        } else {
            Color::Rgb
        };
        let result = decode_image(&bytes, color, Layout::Hwc, None, &mut budget(16 << 20));
        clean(result, &format!("case {case} ({what})"));
    }
}

/// A frame header with `width` x `height`, 3 components at 2x2/1x1/1x1, and nothing after it.
fn header(width: u16, height: u16) -> Vec<u8> {
    let mut b = b"\xff\xd8\xff\xc0\x00\x11\x08".to_vec();
    b.extend_from_slice(&height.to_be_bytes());
    b.extend_from_slice(&width.to_be_bytes());
    b.extend_from_slice(b"\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01");
    b
}

#[test]
fn the_frame_size_is_refused_before_anything_is_allocated() {
    let bomb = header(30000, 30000);
    assert!(takes(&bomb));
    // 1 MiB of budget: had a plane been allocated first, the failure would be the memory cap.
    let err = decode_image(&bomb, Color::Rgb, Layout::Hwc, None, &mut budget(1 << 20)).unwrap_err();
    assert!(
        matches!(&err, Fail::Limit(m) if m.contains("30000x30000") && m.contains("16384x16384")),
        "{err:?}"
    );
    // Inside the limits but over the memory the cap leaves: refused by the budget.
    let err = decode_image(
        &header(4000, 4000),
        Color::Rgb,
        Layout::Hwc,
        None,
        &mut budget(1 << 20),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Fail::Limit(m) if m.contains("limits.memory_mb")),
        "{err:?}"
    );
    let err = decode_image(
        &header(0, 16),
        Color::Rgb,
        Layout::Hwc,
        None,
        &mut budget(1 << 20),
    )
    .unwrap_err();
    assert_eq!(err, Fail::Invalid("bytes: the image is 0x16 pixels".into()));
}

#[test]
fn what_is_wrong_is_named() {
    let good = recorded("JPEG gray 13x7");
    let sos = good.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    let run = |bytes: &[u8]| match decode_image(
        bytes,
        Color::Gray,
        Layout::Hwc,
        None,
        &mut budget(1 << 20),
    ) {
        Err(Fail::Invalid(m)) => m,
        other => panic!("{other:?}"),
    };
    // The scan asks for Huffman tables 2/2, which neither the file nor the standard defines.
    let mut bad_tables = good.clone();
    bad_tables[sos + 6] = 0x22;
    assert!(
        run(&bad_tables).contains("Huffman table never defined"),
        "{}",
        run(&bad_tables)
    );
    // The frame's component uses quantization table 3, never defined.
    let sof = good.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    let mut bad_quant = good.clone();
    bad_quant[sof + 12] = 3;
    assert!(
        run(&bad_quant).contains("quantization table 3"),
        "{}",
        run(&bad_quant)
    );
    // Cut inside the scan: Pillow refuses a truncated file, so does the op.
    assert!(run(&good[..good.len() - 20]).contains("the data ends inside a scan"));
    let msg = run(&good[..sos + 8]);
    assert!(msg.starts_with("bytes: invalid JPEG: "), "{msg}");
    // A scan before any frame header.
    let mut no_frame = good[..2].to_vec();
    no_frame.extend_from_slice(&good[sos..]);
    assert!(run(&no_frame).contains("a scan before the frame header"));
}

#[test]
fn a_decode_past_the_deadline_stops() {
    let mut late = Budget::new(1 << 30, 1 << 30, Instant::now());
    let result = decode_image(PHOTO_224, Color::Rgb, Layout::Hwc, None, &mut late);
    assert_eq!(result, Err(Fail::Deadline));
}

#[test]
fn what_the_decoder_takes_and_leaves_to_the_image_crate() {
    assert!(takes(PHOTO_224));
    assert!(takes(DIGIT));
    let progressive = recorded("JPEG 4:2:0 progressive (image crate, not exact)");
    assert!(!takes(&progressive));
    // 12-bit samples, 4 components, 1x2 chroma: the image crate's.
    let mut twelve = header(8, 8);
    twelve[6] = 12;
    assert!(!takes(&twelve));
    let mut cmyk = header(8, 8);
    cmyk[11] = 4;
    assert!(!takes(&cmyk));
    let mut tall = header(8, 8);
    tall[13] = 0x12;
    assert!(!takes(&tall));
}

/// Times the decoder against the image crate's (zune-jpeg) on the same bytes, in the same run:
/// `cargo test --release --lib plugin::ops::jpeg -- --ignored --nocapture`.
#[test]
#[ignore]
fn decode_time_against_the_image_crate() {
    use super::super::decode::{Native, with_image_crate};
    use image::ImageFormat;
    for (what, data, iters) in [
        ("digit-7.jpg 28x28", DIGIT, 20_000),
        ("photo-224.jpg 224x224", PHOTO_224, 2_000),
    ] {
        let limits = super::super::decode::Limits::tightened(None);
        let time = |f: &dyn Fn() -> Array| {
            let mut best = Duration::MAX;
            for _ in 0..5 {
                let start = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(f());
                }
                best = best.min(start.elapsed() / iters);
            }
            best
        };
        let ours = time(&|| {
            decode_image(data, Color::Rgb, Layout::Hwc, None, &mut budget(1 << 30)).unwrap()
        });
        let zune = time(&|| {
            let mut b = budget(1 << 30);
            let n: Native =
                with_image_crate(data, ImageFormat::Jpeg, "JPEG", &limits, &mut b).unwrap();
            n.into_color(Color::Rgb, &mut b).unwrap()
        });
        println!(
            "{what}: this decoder {:.1} us, image crate (zune-jpeg) {:.1} us, ratio {:.2}",
            ours.as_secs_f64() * 1e6,
            zune.as_secs_f64() * 1e6,
            ours.as_secs_f64() / zune.as_secs_f64()
        );
    }
}
