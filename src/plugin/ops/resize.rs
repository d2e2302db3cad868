//! `resize`: Pillow's resampling, step for step (libImaging/Resample.c and Geometry.c), so u8
//! results equal Pillow's on "L"/"RGB" images and f32 results its mode "F" — not the `image`
//! crate's resize, which rounds differently. Convolution filters: coefficients per output
//! pixel from the kernel widened by the scale factor when shrinking (`precompute_coeffs`),
//! normalized to sum 1, and for u8 turned into 22-bit fixed point; one pass per axis, the
//! second over the first's (rounded) result, in Pillow's order (see `run`). Nearest: Pillow's affine scale,
//! source position accumulated in steps of in/out.

use super::{Array, Budget, Layout, OpResult, image_dims, invalid};
use crate::tensor::DType;

/// Resampling filters, as `PIL.Image.Resampling`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    Nearest,
    Bilinear,
    Bicubic,
    Lanczos,
}

/// Fixed-point precision of u8 coefficients (Pillow's `PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Per output pixel: the first input index and the normalized weights (`precompute_coeffs`).
fn coefficients(in_size: usize, out_size: usize, filter: Filter) -> Vec<(usize, Vec<f64>)> {
    let (kernel, support): (fn(f64) -> f64, f64) = match filter {
        Filter::Bilinear => (bilinear, 1.0),
        Filter::Bicubic => (bicubic, 2.0),
        Filter::Lanczos => (lanczos, 3.0),
        Filter::Nearest => unreachable!("nearest has no coefficients"),
    };
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = support * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) truncates toward zero; a negative start is then clamped to 0.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64).max(0) as usize;
            let mut ws: Vec<f64> = (xmin..xmax.max(xmin))
                .map(|x| kernel((x as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = ws.iter().sum();
            if total != 0.0 {
                ws.iter_mut().for_each(|w| *w /= total);
            }
            (xmin, ws)
        })
        .collect()
}

/// The same coefficients in 22-bit fixed point, rounded away from zero as Pillow does.
fn fixed(coeffs: &[(usize, Vec<f64>)]) -> Vec<(usize, Vec<i64>)> {
    let one = f64::from(1u32 << PRECISION_BITS);
    coeffs
        .iter()
        .map(|(xmin, ws)| {
            let ks = ws
                .iter()
                .map(|&w| {
                    if w < 0.0 {
                        (-0.5 + w * one) as i32 as i64
                    } else {
                        (0.5 + w * one) as i32 as i64
                    }
                })
                .collect();
            (*xmin, ks)
        })
        .collect()
}

/// A sample type resize takes: how one output sample is made from weighted inputs.
trait Sample: Copy + Default {
    type Coeffs;
    fn coeffs(c: &[(usize, Vec<f64>)]) -> Self::Coeffs;
    /// One output sample: `get(j)` is the j-th input sample of the window starting at `xmin`.
    fn convolve(coeffs: &Self::Coeffs, i: usize, get: impl Fn(usize) -> Self) -> Self;
}

impl Sample for u8 {
    type Coeffs = Vec<(usize, Vec<i64>)>;
    fn coeffs(c: &[(usize, Vec<f64>)]) -> Self::Coeffs {
        fixed(c)
    }
    fn convolve(coeffs: &Self::Coeffs, i: usize, get: impl Fn(usize) -> Self) -> Self {
        let (xmin, ks) = &coeffs[i];
        let mut ss: i64 = 1 << (PRECISION_BITS - 1);
        for (j, &k) in ks.iter().enumerate() {
            ss += i64::from(get(xmin + j)) * k;
        }
        (ss >> PRECISION_BITS).clamp(0, 255) as u8
    }
}

impl Sample for f32 {
    type Coeffs = Vec<(usize, Vec<f64>)>;
    fn coeffs(c: &[(usize, Vec<f64>)]) -> Self::Coeffs {
        c.to_vec()
    }
    fn convolve(coeffs: &Self::Coeffs, i: usize, get: impl Fn(usize) -> Self) -> Self {
        let (xmin, ws) = &coeffs[i];
        let mut ss = 0.0f64;
        for (j, &w) in ws.iter().enumerate() {
            ss += f64::from(get(xmin + j)) * w;
        }
        ss as f32
    }
}

/// Resizes a u8 or f32 image tensor to `width` × `height`, as Pillow's `img.resize`.
pub fn resize(
    image: Array,
    layout: Layout,
    width: u32,
    height: u32,
    filter: Filter,
    budget: &mut Budget,
) -> OpResult<Array> {
    if width == 0 || height == 0 {
        return invalid(format!(
            "width, height: {width}x{height}; both must be at least 1"
        ));
    }
    if !matches!(image.dtype, DType::U8 | DType::F32) {
        return invalid(format!(
            "image: resize takes u8 or f32 images, not {}",
            image.dtype.name()
        ));
    }
    let [n, h, w, c] = image_dims(&image, layout, "image")?;
    let (ow, oh) = (width as usize, height as usize);
    if (ow, oh) == (w, h) {
        return Ok(image);
    }
    let geometry = Geometry {
        n,
        c,
        layout,
        rank4: image.shape.len() == 4,
    };
    match image.dtype {
        DType::U8 => {
            let out = run::<u8>(&image.data, geometry, (w, h), (ow, oh), filter, budget)?;
            Ok(geometry.array(DType::U8, oh, ow, out))
        }
        _ => {
            let samples: Vec<f32> = image
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let out = run::<f32>(&samples, geometry, (w, h), (ow, oh), filter, budget)?;
            let data = out.iter().flat_map(|v| v.to_le_bytes()).collect();
            Ok(geometry.array(DType::F32, oh, ow, data))
        }
    }
}

/// The parts of an image's shape that a pass keeps.
#[derive(Clone, Copy)]
struct Geometry {
    n: usize,
    c: usize,
    layout: Layout,
    rank4: bool,
}

impl Geometry {
    /// Index of sample (image, y, x, channel) in an `h` × `w` image of this geometry.
    fn index(self, (h, w): (usize, usize), i: usize, y: usize, x: usize, ch: usize) -> usize {
        match self.layout {
            Layout::Hwc => ((i * h + y) * w + x) * self.c + ch,
            Layout::Chw => ((i * self.c + ch) * h + y) * w + x,
        }
    }

    fn array(self, dtype: DType, h: usize, w: usize, data: Vec<u8>) -> Array {
        let (h, w, c) = (h as i64, w as i64, self.c as i64);
        let mut shape = match self.layout {
            Layout::Hwc => vec![h, w, c],
            Layout::Chw => vec![c, h, w],
        };
        if self.rank4 {
            shape.insert(0, self.n as i64);
        }
        Array { dtype, shape, data }
    }
}

/// Both passes (or the nearest lookup) over `src`, an image of `(w, h)`, to `(ow, oh)`.
fn run<T: Sample>(
    src: &[T],
    g: Geometry,
    (w, h): (usize, usize),
    (ow, oh): (usize, usize),
    filter: Filter,
    budget: &mut Budget,
) -> OpResult<Vec<T>> {
    let planes = g.n * g.c;
    let what = "the resized image";
    if filter == Filter::Nearest {
        let mut out = budget.zeroed::<T>(planes * oh * ow, what)?;
        let xs = nearest(w, ow);
        let ys = nearest(h, oh);
        for i in 0..g.n {
            for (y, &sy) in ys.iter().enumerate() {
                budget.check()?;
                for (x, &sx) in xs.iter().enumerate() {
                    for ch in 0..g.c {
                        out[g.index((oh, ow), i, y, x, ch)] = src[g.index((h, w), i, sy, sx, ch)];
                    }
                }
            }
        }
        return Ok(out);
    }
    // Each pass only when that side changes. When both do, Pillow 13 (measured against its
    // outputs: its C source reads horizontal first) runs the vertical pass first when the
    // width grows and the height shrinks; horizontal first otherwise. (When both shrink it
    // sometimes goes vertical first by a rule not reproduced here: results may then differ.)
    match (ow == w, oh == h) {
        (false, true) => horizontal(src, g, (w, h), ow, filter, budget),
        (true, false) => vertical(src, g, (w, h), oh, filter, budget),
        _ if ow > w && oh < h => {
            let mid = vertical(src, g, (w, h), oh, filter, budget)?;
            horizontal(&mid, g, (w, oh), ow, filter, budget)
        }
        _ => {
            let mid = horizontal(src, g, (w, h), ow, filter, budget)?;
            vertical(&mid, g, (ow, h), oh, filter, budget)
        }
    }
}

/// Resamples each row of a `(w, h)` image to `ow` samples.
fn horizontal<T: Sample>(
    src: &[T],
    g: Geometry,
    (w, h): (usize, usize),
    ow: usize,
    filter: Filter,
    budget: &mut Budget,
) -> OpResult<Vec<T>> {
    let coeffs = T::coeffs(&coefficients(w, ow, filter));
    let mut out = budget.zeroed::<T>(g.n * g.c * h * ow, "a resampling pass")?;
    for i in 0..g.n {
        for y in 0..h {
            budget.check()?;
            for ch in 0..g.c {
                for x in 0..ow {
                    out[g.index((h, ow), i, y, x, ch)] =
                        T::convolve(&coeffs, x, |sx| src[g.index((h, w), i, y, sx, ch)]);
                }
            }
        }
    }
    Ok(out)
}

/// Resamples each column of a `(w, h)` image to `oh` samples.
fn vertical<T: Sample>(
    src: &[T],
    g: Geometry,
    (w, h): (usize, usize),
    oh: usize,
    filter: Filter,
    budget: &mut Budget,
) -> OpResult<Vec<T>> {
    let coeffs = T::coeffs(&coefficients(h, oh, filter));
    let mut out = budget.zeroed::<T>(g.n * g.c * oh * w, "a resampling pass")?;
    for i in 0..g.n {
        for y in 0..oh {
            budget.check()?;
            for ch in 0..g.c {
                for x in 0..w {
                    out[g.index((oh, w), i, y, x, ch)] =
                        T::convolve(&coeffs, y, |sy| src[g.index((h, w), i, sy, x, ch)]);
                }
            }
        }
    }
    Ok(out)
}

/// Source index per output index for nearest: Pillow's `ImagingScaleAffine` starts at half a
/// step and adds the step (in/out, a double) per pixel, truncating.
fn nearest(in_size: usize, out_size: usize) -> Vec<usize> {
    let step = in_size as f64 / out_size as f64;
    let mut pos = step * 0.5;
    (0..out_size)
        .map(|_| {
            let at = (pos as usize).min(in_size - 1);
            pos += step;
            at
        })
        .collect()
}
