//! `decode-image`: PNG or JPEG bytes (sniffed from the bytes) to a u8 image tensor, gray or RGB,
//! HWC or CHW. The size comes from the header and is checked against the limits and the memory
//! cap before a pixel is allocated; the decoder then runs under `image::Limits` as well.

use std::io::Cursor;

use image::{ColorType, ImageDecoder, ImageFormat, ImageReader};

use super::{Array, Budget, Color, Fail, Layout, OpResult, invalid, jpeg};
use crate::tensor::DType;

/// Widest and tallest image decoded unless a plugin asks for less.
pub const DEFAULT_MAX_SIDE: u32 = 16384;
/// Most pixels decoded unless a plugin asks for less (64 Mi).
pub const DEFAULT_MAX_PIXELS: u64 = 64 << 20;

/// A plugin's decode bounds; each only tightens the host's default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_width: u32,
    pub max_height: u32,
    pub max_pixels: u64,
}

impl Limits {
    /// The smaller of each bound and the host's default.
    pub(super) fn tightened(limits: Option<Limits>) -> Limits {
        let l = limits.unwrap_or(Limits {
            max_width: DEFAULT_MAX_SIDE,
            max_height: DEFAULT_MAX_SIDE,
            max_pixels: DEFAULT_MAX_PIXELS,
        });
        Limits {
            max_width: l.max_width.min(DEFAULT_MAX_SIDE),
            max_height: l.max_height.min(DEFAULT_MAX_SIDE),
            max_pixels: l.max_pixels.min(DEFAULT_MAX_PIXELS),
        }
    }
}

impl Limits {
    /// `Limit` for a `width` x `height` image over these bounds, `Invalid` for an empty one.
    fn check(&self, width: u32, height: u32) -> OpResult<()> {
        let pixels = u64::from(width) * u64::from(height);
        if width > self.max_width || height > self.max_height || pixels > self.max_pixels {
            return Err(Fail::Limit(format!(
                "bytes: the image is {width}x{height} pixels, over the decode limits ({}x{}, {} \
                 pixels)",
                self.max_width, self.max_height, self.max_pixels
            )));
        }
        if pixels == 0 {
            return invalid(format!("bytes: the image is {width}x{height} pixels"));
        }
        Ok(())
    }
}

/// Decodes `bytes` as `np.asarray(Image.open(..).convert("L" | "RGB"))` would (CHW: transposed).
/// Baseline JPEGs go through [`jpeg`], libjpeg's arithmetic, exactly Pillow's pixels; PNG and
/// the JPEGs it does not take through the image crate.
pub fn decode_image(
    bytes: &[u8],
    color: Color,
    layout: Layout,
    limits: Option<Limits>,
    budget: &mut Budget,
) -> OpResult<Array> {
    let limits = Limits::tightened(limits);
    let native = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        with_image_crate(bytes, ImageFormat::Png, "PNG", &limits, budget)?
    } else if bytes.starts_with(b"\xff\xd8\xff") {
        if jpeg::takes(bytes) {
            let d = jpeg::decode(bytes, |w, h| limits.check(w, h), budget)?;
            Native {
                width: d.width,
                height: d.height,
                channels: d.channels,
                wide: false,
                samples: d.pixels,
            }
        } else {
            with_image_crate(bytes, ImageFormat::Jpeg, "JPEG", &limits, budget)?
        }
    } else {
        return invalid(
            "bytes: neither PNG nor JPEG (no PNG signature or JPEG SOI marker at the start)",
        );
    };
    let hwc = native.into_color(color, budget)?;
    budget.check()?;
    Ok(match layout {
        Layout::Hwc => hwc,
        Layout::Chw => hwc_to_chw(hwc),
    })
}

/// Decoded samples in the file's own pixel format: `channels` (1 to 4: gray, gray + alpha,
/// RGB, RGBA) per pixel, each a byte or (`wide`) a native-endian u16.
pub(super) struct Native {
    width: usize,
    height: usize,
    channels: usize,
    wide: bool,
    samples: Vec<u8>,
}

/// PNG, or a JPEG [`jpeg`] does not take, through the image crate: the size read from the
/// header and checked, the buffers charged, then the pixels decoded under `image::Limits`.
pub(super) fn with_image_crate(
    bytes: &[u8],
    format: ImageFormat,
    name: &str,
    limits: &Limits,
    budget: &mut Budget,
) -> OpResult<Native> {
    let bad = |e: image::ImageError| Fail::Invalid(format!("bytes: invalid {name}: {e}"));
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // Reading the header allocates no pixels; the bounds are checked here, below, with a
    // message naming the image's size, and then handed to the decoder for the pixels.
    reader.no_limits();
    let mut decoder = reader.into_decoder().map_err(bad)?;
    let (width, height) = decoder.dimensions();
    limits.check(width, height)?;
    let native = decoder.total_bytes();
    let Ok(native) = usize::try_from(native) else {
        return Err(Fail::Limit(format!(
            "bytes: the decoded image would take {native} bytes"
        )));
    };
    let mut raw = budget.zeroed::<u8>(native, "decoding the image")?;
    let mut image_limits = image::Limits::default();
    image_limits.max_image_width = Some(limits.max_width);
    image_limits.max_image_height = Some(limits.max_height);
    // Its own buffers and at most an RGB result's worth more.
    image_limits.max_alloc = Some(native as u64 + u64::from(width) * u64::from(height) * 3);
    decoder.set_limits(image_limits).map_err(|e| match e {
        image::ImageError::Limits(l) => Fail::Limit(format!("bytes: {l}")),
        other => bad(other),
    })?;
    let color_type = decoder.color_type();
    budget.check()?;
    decoder.read_image(&mut raw).map_err(bad)?;
    budget.check()?;
    let (channels, wide) = match color_type {
        ColorType::L8 => (1, false),
        ColorType::La8 => (2, false),
        ColorType::Rgb8 => (3, false),
        ColorType::Rgba8 => (4, false),
        ColorType::L16 => (1, true),
        ColorType::La16 => (2, true),
        ColorType::Rgb16 => (3, true),
        ColorType::Rgba16 => (4, true),
        other => return invalid(format!("bytes: unsupported {name} pixel format {other:?}")),
    };
    Ok(Native {
        width: width as usize,
        height: height as usize,
        channels,
        wide,
        samples: raw,
    })
}

impl Native {
    /// The `[h, w, c]` u8 image in `color`: the samples themselves when they already are.
    pub(super) fn into_color(self, color: Color, budget: &mut Budget) -> OpResult<Array> {
        let (w, h, channels, wide) = (self.width, self.height, self.channels, self.wide);
        let c = match color {
            Color::Gray => 1,
            Color::Rgb => 3,
        };
        let shape = vec![h as i64, w as i64, c as i64];
        if c == channels && !wide {
            return Ok(Array {
                dtype: DType::U8,
                shape,
                data: self.samples,
            });
        }
        let raw = self.samples;
        let out_len = w * h * c;
        let mut out = budget.with_capacity::<u8>(out_len, "the decoded image")?;
        // 16-bit samples (native-endian in `raw`) become round(v / 257), as ops.wit says.
        let sample = |i: usize| -> u32 {
            if wide {
                let v = u16::from_ne_bytes([raw[2 * i], raw[2 * i + 1]]);
                (u32::from(v) * 255 + 32767) / 65535
            } else {
                u32::from(raw[i])
            }
        };
        for p in 0..w * h {
            let base = p * channels;
            match (color, channels) {
                // Gray (and gray + alpha) keeps its values; alpha is dropped, not composited.
                (Color::Gray, 1 | 2) => out.push(sample(base) as u8),
                // Pillow's convert("L"): L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16.
                (Color::Gray, _) => {
                    let (r, g, b) = (sample(base), sample(base + 1), sample(base + 2));
                    out.push(((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16) as u8);
                }
                (Color::Rgb, 1 | 2) => {
                    let v = sample(base) as u8;
                    out.extend_from_slice(&[v, v, v]);
                }
                (Color::Rgb, _) => {
                    out.extend_from_slice(&[
                        sample(base) as u8,
                        sample(base + 1) as u8,
                        sample(base + 2) as u8,
                    ]);
                }
            }
        }
        Ok(Array {
            dtype: DType::U8,
            shape,
            data: out,
        })
    }
}

/// `[h, w, c]` u8 → `[c, h, w]`.
fn hwc_to_chw(t: Array) -> Array {
    let (h, w, c) = (
        t.shape[0] as usize,
        t.shape[1] as usize,
        t.shape[2] as usize,
    );
    let data = if c == 1 {
        t.data
    } else {
        let mut out = vec![0u8; t.data.len()];
        for (i, px) in t.data.chunks_exact(c).enumerate() {
            for (ch, &v) in px.iter().enumerate() {
                out[ch * h * w + i] = v;
            }
        }
        out
    };
    Array {
        dtype: DType::U8,
        shape: vec![c as i64, h as i64, w as i64],
        data,
    }
}
