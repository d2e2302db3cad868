//! Baseline JPEG (SOF0/SOF1, 8-bit, gray or three components) decoded as libjpeg(-turbo)
//! decodes it, so `decode-image` gives exactly the pixels Pillow gives: a port of the Python
//! SDK's `_jpeg.py`. Every other JPEG (progressive, arithmetic-coded, 12-bit, CMYK, unusual
//! subsampling) is left to the image crate; [`takes`] says which is which from the headers.
//!
//! The bytes are untrusted: every read is checked, and the frame's size is checked against
//! the decode limits and charged to the call's budget before any sample buffer exists.

mod huffman;
mod pixels;
mod scan;

use huffman::Huffman;

use super::{Budget, Fail, OpResult};

/// The decoded samples: `channels` (1: gray, 3: RGB) per pixel, row-major.
pub(super) struct Decoded {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub pixels: Vec<u8>,
}

fn bad(what: impl std::fmt::Display) -> Fail {
    Fail::Invalid(format!("bytes: invalid JPEG: {what}"))
}

fn be16(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(*b.get(at)?) << 8 | usize::from(*b.get(at + 1)?))
}

// Zigzag position → natural (row-major) position of each coefficient.
const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// One marker segment: the marker and its payload (after the length), or a lone marker.
struct Segment<'a> {
    marker: u8,
    body: &'a [u8],
}

/// The next marker at or after `*pos` and its segment. Bytes before a marker that are not one
/// are skipped and 0xFF fill bytes are ignored, as libjpeg does. `Ok(None)` at the end of the
/// input or at a segment it cuts short.
fn next_segment<'a>(data: &'a [u8], pos: &mut usize) -> OpResult<Option<Segment<'a>>> {
    loop {
        while *pos < data.len() && data[*pos] != 0xFF {
            *pos += 1;
        }
        while *pos < data.len() && data[*pos] == 0xFF {
            *pos += 1;
        }
        let Some(&marker) = data.get(*pos) else {
            return Ok(None);
        };
        *pos += 1;
        match marker {
            0x00 => continue, // a stuffed 0xFF outside a scan
            0x01 | 0xD0..=0xD9 => return Ok(Some(Segment { marker, body: &[] })),
            _ => {}
        }
        let Some(len) = be16(data, *pos) else {
            return Ok(None);
        };
        if len < 2 {
            return Err(bad(format!("marker {marker:#04x} has length {len}")));
        }
        let Some(body) = data.get(*pos + 2..*pos + len) else {
            return Ok(None);
        };
        *pos += len;
        return Ok(Some(Segment { marker, body }));
    }
}

/// Whether this module decodes `data` (a JPEG by its SOI): its first frame header is baseline
/// or extended sequential Huffman (SOF0/SOF1), 8-bit, with 1 or 3 components whose chroma is
/// not subsampled, or 2x1 or 2x2. A file with no readable frame header is taken too, so that
/// the error names what is missing.
pub(super) fn takes(data: &[u8]) -> bool {
    let mut pos = 2;
    while let Ok(Some(seg)) = next_segment(data, &mut pos) {
        match seg.marker {
            0xC0 | 0xC1 => return Sof::parse(seg.body).is_ok(),
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return false,
            0xD9 | 0xDA => return true,
            _ => {}
        }
    }
    true
}

/// A frame header's fields: size and each component's (id, h, v, quantization table).
struct Sof {
    width: usize,
    height: usize,
    comps: Vec<(u8, usize, usize, usize)>,
}

impl Sof {
    fn parse(b: &[u8]) -> OpResult<Sof> {
        let (Some(&precision), Some(height), Some(width), Some(&n)) =
            (b.first(), be16(b, 1), be16(b, 3), b.get(5))
        else {
            return Err(bad("the frame header is cut short"));
        };
        if precision != 8 {
            return Err(bad(format!("{precision}-bit samples (8-bit only)")));
        }
        if n != 1 && n != 3 {
            return Err(bad(format!("{n} components (1 or 3)")));
        }
        let mut comps = Vec::new();
        for k in 0..usize::from(n) {
            let Some(c) = b.get(6 + 3 * k..9 + 3 * k) else {
                return Err(bad("the frame header is cut short"));
            };
            let (h, v) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
            if !(1..=4).contains(&h) || !(1..=4).contains(&v) {
                return Err(bad(format!("sampling factors {h}x{v} (1 to 4 each)")));
            }
            comps.push((c[0], h, v, usize::from(c[2])));
        }
        let sof = Sof {
            width,
            height,
            comps,
        };
        let (hmax, vmax) = sof.max_factors();
        for &(_, h, v, _) in &sof.comps {
            let ratio = (hmax / h, vmax / v);
            if hmax % h != 0 || vmax % v != 0 || !matches!(ratio, (1 | 2, 1) | (2, 2)) {
                return Err(bad(format!(
                    "subsampling {h}x{v} of {hmax}x{vmax} (only none, 2x1 or 2x2)"
                )));
            }
        }
        Ok(sof)
    }

    fn max_factors(&self) -> (usize, usize) {
        let hmax = self.comps.iter().map(|c| c.1).max().unwrap_or(1);
        let vmax = self.comps.iter().map(|c| c.2).max().unwrap_or(1);
        (hmax, vmax)
    }
}

/// A frame component and its samples, the whole padded block grid.
struct Component {
    id: u8,
    h: usize,
    v: usize,
    quant: usize,
    /// The samples it has: its share of the image, rounded up.
    width: usize,
    height: usize,
    /// Blocks per row of `plane`, which holds whole MCUs (rows of `blocks_w * 8` samples).
    blocks_w: usize,
    plane: Vec<u8>,
    scanned: bool,
}

impl Component {
    fn stride(&self) -> usize {
        self.blocks_w * 8
    }
}

struct Frame {
    width: usize,
    height: usize,
    hmax: usize,
    vmax: usize,
    mcux: usize,
    mcuy: usize,
    comps: Vec<Component>,
}

/// Tables defined so far (DQT, DHT, DRI), which later scans use.
struct Tables {
    /// Natural order.
    quant: [Option<[u16; 64]>; 4],
    dc: [Option<Huffman>; 4],
    ac: [Option<Huffman>; 4],
    restart: usize,
}

/// Decodes `data`, a JPEG that [`takes`] took. `check_size(width, height)` runs on the frame
/// header (the decode limits); then the sample planes and the result are charged to `budget`,
/// before they are allocated. The deadline is checked between rows of blocks.
pub(super) fn decode(
    data: &[u8],
    check_size: impl Fn(u32, u32) -> OpResult<()>,
    budget: &mut Budget,
) -> OpResult<Decoded> {
    let mut tables = Tables {
        quant: [None; 4],
        dc: Default::default(),
        ac: Default::default(),
        restart: 0,
    };
    let (mut frame, mut jfif, mut adobe) = (None::<Frame>, false, None::<u8>);
    let mut pos = 2;
    loop {
        let at = pos;
        let Some(seg) = next_segment(data, &mut pos)? else {
            // The input ends (no EOI): complete if every component was scanned.
            if frame
                .as_ref()
                .is_some_and(|f| f.comps.iter().all(|c| c.scanned))
            {
                break;
            }
            return Err(bad(format!(
                "the data ends in the headers (after byte {at})"
            )));
        };
        let b = seg.body;
        match seg.marker {
            0xD9 => break,
            0xDB => read_dqt(b, &mut tables.quant)?,
            0xC4 => read_dht(b, &mut tables)?,
            0xDD => tables.restart = be16(b, 0).ok_or_else(|| bad("a DRI segment is short"))?,
            0xE0 => jfif |= b.len() >= 14 && b.starts_with(b"JFIF\0"),
            0xEE if b.len() >= 12 && b.starts_with(b"Adobe") => adobe = Some(b[11]),
            0xC0 | 0xC1 => {
                if frame.is_some() {
                    return Err(bad("more than one frame header"));
                }
                frame = Some(new_frame(Sof::parse(b)?, &check_size, budget)?);
            }
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                return Err(bad(format!(
                    "a second, non-baseline frame (SOF{})",
                    seg.marker - 0xC0
                )));
            }
            0xDA => {
                let Some(frame) = frame.as_mut() else {
                    return Err(bad("a scan before the frame header"));
                };
                pos = scan::read_scan(data, pos, b, frame, &mut tables, budget)?;
            }
            _ => {} // APPn, COM, RSTn and the like carry nothing for the pixels
        }
    }
    let Some(frame) = frame else {
        return Err(bad("no frame header"));
    };
    if frame.comps.iter().any(|c| !c.scanned) {
        return Err(bad("a component has no scan (no image data)"));
    }
    pixels::output(&frame, jfif, adobe, budget)
}

fn read_dqt(mut b: &[u8], quant: &mut [Option<[u16; 64]>; 4]) -> OpResult<()> {
    while let Some((&pq_tq, rest)) = b.split_first() {
        let (precision, id) = (pq_tq >> 4, usize::from(pq_tq & 15));
        let size = if precision == 0 { 64 } else { 128 };
        if precision > 1 || id > 3 {
            return Err(bad(format!("a quantization table {precision}/{id}")));
        }
        let Some(values) = rest.get(..size) else {
            return Err(bad("a quantization table is cut short"));
        };
        let mut table = [0u16; 64];
        for (k, &z) in ZIGZAG.iter().enumerate() {
            table[z] = if precision == 0 {
                u16::from(values[k])
            } else {
                u16::from_be_bytes([values[2 * k], values[2 * k + 1]])
            };
        }
        quant[id] = Some(table);
        b = &rest[size..];
    }
    Ok(())
}

fn read_dht(mut b: &[u8], tables: &mut Tables) -> OpResult<()> {
    while let Some(&tc_th) = b.first() {
        let (class, id) = (tc_th >> 4, usize::from(tc_th & 15));
        if class > 1 || id > 3 {
            return Err(bad(format!("a Huffman table {class}/{id}")));
        }
        let Some(counts) = b.get(1..17) else {
            return Err(bad("a Huffman table is cut short"));
        };
        let counts = <[u8; 16]>::try_from(counts).map_err(|_| bad("a Huffman table"))?;
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        let Some(symbols) = b.get(17..17 + total) else {
            return Err(bad("a Huffman table is cut short"));
        };
        let table = Huffman::new(&counts, symbols).map_err(bad)?;
        if class == 0 {
            tables.dc[id] = Some(table);
        } else {
            tables.ac[id] = Some(table);
        }
        b = &b[17 + total..];
    }
    Ok(())
}

/// The frame from its header: the limits checked, then its planes charged and allocated.
fn new_frame(
    sof: Sof,
    check_size: &impl Fn(u32, u32) -> OpResult<()>,
    budget: &mut Budget,
) -> OpResult<Frame> {
    check_size(sof.width as u32, sof.height as u32)?;
    let (hmax, vmax) = sof.max_factors();
    let mcux = sof.width.div_ceil(8 * hmax);
    let mcuy = sof.height.div_ceil(8 * vmax);
    // Checked sizes first, all charged, then allocated.
    // The result, and a row of each component upsampled.
    let mut total = (sof.width * sof.height + sof.width + 2) * sof.comps.len();
    for &(_, h, v, _) in &sof.comps {
        let plane = (mcux * h * 8).checked_mul(mcuy * v * 8);
        total = plane
            .and_then(|p| total.checked_add(p))
            .ok_or_else(|| bad("the frame is too large"))?;
    }
    budget.charge(total, 1, "decoding the image")?;
    let comps = sof
        .comps
        .iter()
        .map(|&(id, h, v, quant)| Component {
            id,
            h,
            v,
            quant,
            width: (sof.width * h).div_ceil(hmax),
            height: (sof.height * v).div_ceil(vmax),
            blocks_w: mcux * h,
            plane: vec![0; mcux * h * 8 * mcuy * v * 8],
            scanned: false,
        })
        .collect();
    Ok(Frame {
        width: sof.width,
        height: sof.height,
        hmax,
        vmax,
        mcux,
        mcuy,
        comps,
    })
}

#[cfg(test)]
mod tests;
