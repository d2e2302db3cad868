//! libjpeg's arithmetic from coefficients to pixels, step for step, so that the results are
//! Pillow's: the integer "islow" IDCT (jidctint.c), "fancy" triangle upsampling of 2x1 and 2x2
//! subsampled chroma (jdsample.c, with the edge columns libjpeg-turbo's SIMD code replicates),
//! and the fixed-point YCbCr → RGB conversion (jdcolor.c); and the frame's planes to the image.

use super::{Budget, Component, Decoded, Frame, OpResult, bad};

// jidctint.c: CONST_BITS = 13, PASS1_BITS = 2; FIX(x) = round(x * 2^13).
const F0298: i32 = 2446;
const F0390: i32 = 3196;
const F0541: i32 = 4433;
const F0765: i32 = 6270;
const F0899: i32 = 7373;
const F1175: i32 = 9633;
const F1501: i32 = 12299;
const F1847: i32 = 15137;
const F1961: i32 = 16069;
const F2053: i32 = 16819;
const F2562: i32 = 20995;
const F3072: i32 = 25172;

/// One 8-point pass of the islow IDCT on `s`, descaled by `shift` with rounding. The
/// arithmetic wraps, as libjpeg's C `int`s do in practice: on a valid file nothing overflows;
/// a corrupt file's coefficients (up to 2^31 dequantized) cannot panic.
#[inline(always)]
fn idct_1d(s: [i32; 8], shift: u32) -> [i32; 8] {
    let m = |a: i32, k: i32| a.wrapping_mul(k);
    let z1 = m(s[2].wrapping_add(s[6]), F0541);
    let tmp2 = z1.wrapping_sub(m(s[6], F1847));
    let tmp3 = z1.wrapping_add(m(s[2], F0765));
    let tmp0 = s[0].wrapping_add(s[4]).wrapping_shl(13);
    let tmp1 = s[0].wrapping_sub(s[4]).wrapping_shl(13);
    let (t10, t13) = (tmp0.wrapping_add(tmp3), tmp0.wrapping_sub(tmp3));
    let (t11, t12) = (tmp1.wrapping_add(tmp2), tmp1.wrapping_sub(tmp2));
    let (z1, z2) = (s[7].wrapping_add(s[1]), s[5].wrapping_add(s[3]));
    let (z3, z4) = (s[7].wrapping_add(s[3]), s[5].wrapping_add(s[1]));
    let z5 = m(z3.wrapping_add(z4), F1175);
    let (z1, z2) = (m(z1, -F0899), m(z2, -F2562));
    let (z3, z4) = (
        m(z3, -F1961).wrapping_add(z5),
        m(z4, -F0390).wrapping_add(z5),
    );
    let o0 = m(s[7], F0298).wrapping_add(z1).wrapping_add(z3);
    let o1 = m(s[5], F2053).wrapping_add(z2).wrapping_add(z4);
    let o2 = m(s[3], F3072).wrapping_add(z2).wrapping_add(z3);
    let o3 = m(s[1], F1501).wrapping_add(z1).wrapping_add(z4);
    let r = 1i32 << (shift - 1);
    let d = |a: i32| a.wrapping_add(r) >> shift;
    [
        d(t10.wrapping_add(o3)),
        d(t11.wrapping_add(o2)),
        d(t12.wrapping_add(o1)),
        d(t13.wrapping_add(o0)),
        d(t13.wrapping_sub(o0)),
        d(t12.wrapping_sub(o1)),
        d(t11.wrapping_sub(o2)),
        d(t10.wrapping_sub(o3)),
    ]
}

#[inline(always)]
fn sample(v: i32) -> u8 {
    clamp(v.wrapping_add(128))
}

/// `v` limited to 0..=255 without branches, which a textured image mispredicts.
#[inline(always)]
fn clamp(v: i32) -> u8 {
    let v = v & !(v >> 31); // negative → 0
    (v | ((255 - v) >> 31)) as u8 // over 255 → all ones
}

/// The 8x8 samples of dequantized coefficients `coef` (natural order) into `out`, rows
/// `stride` apart. Columns and rows whose AC terms are all zero take libjpeg's shortcut, which
/// gives the same values as the full pass.
pub(super) fn idct_islow(coef: &[i32; 64], out: &mut [u8], stride: usize) {
    let mut ws = [0i32; 64];
    for x in 0..8 {
        let col: [i32; 8] = std::array::from_fn(|y| coef[y * 8 + x]);
        // OR-ed, not compared as a slice: a vector load of just-stored lanes stalls.
        let ac = col[1] | col[2] | col[3] | col[4] | col[5] | col[6] | col[7];
        let v = if ac == 0 {
            [col[0].wrapping_shl(2); 8]
        } else {
            idct_1d(col, 11)
        };
        for (y, v) in v.into_iter().enumerate() {
            ws[y * 8 + x] = v;
        }
    }
    for (y, row) in ws.chunks_exact(8).enumerate() {
        let row: [i32; 8] = std::array::from_fn(|x| row[x]);
        let dst = &mut out[y * stride..][..8];
        if row[1] | row[2] | row[3] | row[4] | row[5] | row[6] | row[7] == 0 {
            dst.fill(sample(row[0].wrapping_add(16) >> 5));
            continue;
        }
        for (d, v) in dst.iter_mut().zip(idct_1d(row, 18)) {
            *d = sample(v);
        }
    }
}

/// A block whose only coefficient is the (dequantized) DC: every sample the same.
pub(super) fn idct_dc(dc: i32, out: &mut [u8], stride: usize) {
    let v = sample(dc.wrapping_mul(4).wrapping_add(16) >> 5);
    for y in 0..8 {
        out[y * stride..y * stride + 8].fill(v);
    }
}

/// `row` (at least one sample) upsampled 2x horizontally into `out` (h2v1_fancy_upsample).
pub(super) fn fancy_h2(row: &[u8], out: &mut Vec<u8>) {
    let n = row.len();
    out.resize(2 * n, 0);
    if n == 1 {
        out.fill(row[0]);
        return;
    }
    let at = |i: usize| u32::from(row[i]);
    out[0] = row[0];
    out[1] = ((at(0) * 3 + at(1) + 2) >> 2) as u8;
    for (o, w) in out[2..2 * n - 2].chunks_exact_mut(2).zip(row.windows(3)) {
        let v = u32::from(w[1]) * 3;
        o[0] = ((v + u32::from(w[0]) + 1) >> 2) as u8;
        o[1] = ((v + u32::from(w[2]) + 2) >> 2) as u8;
    }
    out[2 * n - 2] = ((at(n - 1) * 3 + at(n - 2) + 1) >> 2) as u8;
    out[2 * n - 1] = row[n - 1];
}

/// One output row of 2x2 upsampling (h2v2_fancy_upsample): `row` is the nearest input row,
/// `near` the next nearest (above for an even output row, below for an odd one); `sums` is
/// scratch for the column sums.
pub(super) fn fancy_h2v2(row: &[u8], near: &[u8], sums: &mut Vec<u32>, out: &mut Vec<u8>) {
    let n = row.len();
    sums.clear();
    sums.extend(
        row.iter()
            .zip(near)
            .map(|(&a, &b)| u32::from(a) * 3 + u32::from(b)),
    );
    out.resize(2 * n, 0);
    let s = &sums[..];
    if n == 1 {
        out[0] = ((s[0] * 4 + 8) >> 4) as u8;
        out[1] = ((s[0] * 4 + 7) >> 4) as u8;
        return;
    }
    out[0] = ((s[0] * 4 + 8) >> 4) as u8;
    out[1] = ((s[0] * 3 + s[1] + 7) >> 4) as u8;
    for (o, w) in out[2..2 * n - 2].chunks_exact_mut(2).zip(s.windows(3)) {
        let v = w[1] * 3;
        o[0] = ((v + w[0] + 8) >> 4) as u8;
        o[1] = ((v + w[2] + 7) >> 4) as u8;
    }
    out[2 * n - 2] = ((s[n - 1] * 3 + s[n - 2] + 8) >> 4) as u8;
    out[2 * n - 1] = ((s[n - 1] * 4 + 7) >> 4) as u8;
}

// jdcolor.c: FIX(x) = round(x * 2^16); tables indexed by the chroma sample.
const fn table(mul: i32, half: bool, shift: bool) -> [i32; 256] {
    let mut t = [0; 256];
    let mut i = 0;
    while i < 256 {
        let mut v = mul * (i as i32 - 128);
        if half {
            v += 1 << 15;
        }
        t[i] = if shift { v >> 16 } else { v };
        i += 1;
    }
    t
}
const CR_R: [i32; 256] = table(91881, true, true);
const CB_B: [i32; 256] = table(116130, true, true);
const CR_G: [i32; 256] = table(-46802, false, false);
const CB_G: [i32; 256] = table(-22554, true, false);

/// YCbCr rows → interleaved RGB (ycc_rgb_convert).
pub(super) fn ycc_to_rgb(y: &[u8], cb: &[u8], cr: &[u8], out: &mut [u8]) {
    for (((px, &y), &cb), &cr) in out.chunks_exact_mut(3).zip(y).zip(cb).zip(cr) {
        let (y, cb, cr) = (i32::from(y), usize::from(cb), usize::from(cr));
        px[0] = clamp(y + CR_R[cr]);
        px[1] = clamp(y + ((CB_G[cb] + CR_G[cr]) >> 16));
        px[2] = clamp(y + CB_B[cb]);
    }
}

/// The planes upsampled and converted: gray, or RGB from YCbCr (or copied when the file says
/// its components are RGB, as libjpeg decides from the JFIF and Adobe markers and the ids).
pub(super) fn output(
    frame: &Frame,
    jfif: bool,
    adobe: Option<u8>,
    budget: &Budget,
) -> OpResult<Decoded> {
    let (w, h) = (frame.width, frame.height);
    let n = frame.comps.len();
    let mut pixels = vec![0u8; w * h * n];
    let mut scratch: [Scratch; 3] = Default::default();
    match &frame.comps[..] {
        [gray] => {
            for (y, out) in pixels.chunks_exact_mut(w).enumerate() {
                if y % 64 == 0 {
                    budget.check()?;
                }
                out.copy_from_slice(&component_row(frame, gray, y, &mut scratch[0])[..w]);
            }
        }
        [c0, c1, c2] => {
            let rgb = !jfif && adobe.map_or([c0.id, c1.id, c2.id] == *b"RGB", |t| t == 0);
            let [s0, s1, s2] = &mut scratch;
            for (y, out) in pixels.chunks_exact_mut(w * 3).enumerate() {
                if y % 64 == 0 {
                    budget.check()?;
                }
                let a = &component_row(frame, c0, y, s0)[..w];
                let b = &component_row(frame, c1, y, s1)[..w];
                let c = &component_row(frame, c2, y, s2)[..w];
                if rgb {
                    for (((px, &a), &b), &c) in out.chunks_exact_mut(3).zip(a).zip(b).zip(c) {
                        px.copy_from_slice(&[a, b, c]);
                    }
                } else {
                    ycc_to_rgb(a, b, c, out);
                }
            }
        }
        _ => return Err(bad(format!("{n} components"))),
    }
    Ok(Decoded {
        width: w,
        height: h,
        channels: n,
        pixels,
    })
}

/// A component's upsampled row and the column sums behind it.
#[derive(Default)]
struct Scratch {
    row: Vec<u8>,
    sums: Vec<u32>,
}

/// Output row `y` of component `c` at full resolution (at least the image's width).
fn component_row<'a>(frame: &Frame, c: &'a Component, y: usize, s: &'a mut Scratch) -> &'a [u8] {
    let stride = c.stride();
    let row = move |i: usize| -> &'a [u8] { &c.plane[i * stride..i * stride + c.width] };
    match (frame.hmax / c.h, frame.vmax / c.v) {
        (2, 1) => {
            fancy_h2(row(y), &mut s.row);
            &s.row
        }
        (2, 2) => {
            let (i, below) = (y / 2, y % 2 == 1);
            let near = if below {
                (i + 1).min(c.height - 1)
            } else {
                i.saturating_sub(1)
            };
            fancy_h2v2(row(i), row(near), &mut s.sums, &mut s.row);
            &s.row
        }
        _ => row(y),
    }
}
