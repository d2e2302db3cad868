//! One scan of a baseline JPEG: its header checked against the frame and the tables, then its
//! blocks Huffman-decoded, dequantized and inverse-transformed into the component planes, one
//! MCU (or, in a scan of one component, one block) at a time, with restart intervals.

use super::huffman::{Bits, Huffman};
use super::{Budget, Frame, OpResult, Tables, ZIGZAG, bad, pixels};

/// What a scan decodes one component with.
struct ScanComp<'t> {
    index: usize,
    dc: &'t Huffman,
    ac: &'t Huffman,
    quant: [i32; 64],
    pred: i32,
}

/// Decodes the scan whose header is `header` and whose data starts at `pos`; returns where
/// the next marker after its data is.
pub(super) fn read_scan(
    data: &[u8],
    pos: usize,
    header: &[u8],
    frame: &mut Frame,
    tables: &mut Tables,
    budget: &Budget,
) -> OpResult<usize> {
    let ns = usize::from(*header.first().ok_or_else(|| bad("an empty scan header"))?);
    if !(1..=4).contains(&ns) || header.len() < 1 + 2 * ns {
        return Err(bad(format!("a scan header for {ns} components")));
    }
    // Undefined tables 0 and 1 are the standard ones (libjpeg-turbo); others are an error.
    for k in 0..ns {
        let sel = header[2 + 2 * k];
        let (d, a) = (usize::from(sel >> 4), usize::from(sel & 15));
        if d < 4 && tables.dc[d].is_none() {
            tables.dc[d] = Huffman::standard(true, d);
        }
        if a < 4 && tables.ac[a].is_none() {
            tables.ac[a] = Huffman::standard(false, a);
        }
    }
    let tables = &*tables;
    let mut comps: Vec<ScanComp> = Vec::with_capacity(ns);
    for k in 0..ns {
        let (id, sel) = (header[1 + 2 * k], header[2 + 2 * k]);
        let Some(index) = frame.comps.iter().position(|c| c.id == id) else {
            return Err(bad(format!(
                "a scan names component {id}, not in the frame"
            )));
        };
        if comps.iter().any(|c| c.index == index) {
            return Err(bad(format!("a scan names component {id} twice")));
        }
        let (Some(dc), Some(ac)) = (table(&tables.dc, sel >> 4), table(&tables.ac, sel & 15))
        else {
            return Err(bad(format!(
                "a scan uses a Huffman table never defined ({sel:#04x})"
            )));
        };
        let q = frame.comps[index].quant;
        let Some(Some(quant)) = tables.quant.get(q) else {
            return Err(bad(format!("quantization table {q} is never defined")));
        };
        comps.push(ScanComp {
            index,
            dc,
            ac,
            quant: quant.map(i32::from),
            pred: 0,
        });
    }
    let mut bits = Bits::new(data, pos);
    let mut coef = [0i32; 64];
    let restart = tables.restart;
    let mut unit = 0usize;
    let mut next_unit = |bits: &mut Bits, comps: &mut [ScanComp]| {
        if restart > 0 && unit > 0 && unit.is_multiple_of(restart) {
            bits.restart();
            comps.iter_mut().for_each(|c| c.pred = 0);
        }
        unit += 1;
    };
    if ns == 1 {
        // A non-interleaved scan covers the component's own blocks, not the MCU padding.
        let sc = &mut comps[0];
        let c = &mut frame.comps[sc.index];
        let (bw, bh, stride) = (c.width.div_ceil(8), c.height.div_ceil(8), c.stride());
        for by in 0..bh {
            budget.check()?;
            for bx in 0..bw {
                next_unit(&mut bits, std::slice::from_mut(sc));
                let out = &mut c.plane[by * 8 * stride + bx * 8..];
                block(&mut bits, sc, &mut coef, out, stride)?;
            }
        }
    } else {
        let blocks: usize = comps
            .iter()
            .map(|s| frame.comps[s.index].h * frame.comps[s.index].v)
            .sum();
        if blocks > 10 {
            return Err(bad(format!("{blocks} blocks in an MCU (10 at most)")));
        }
        for my in 0..frame.mcuy {
            budget.check()?;
            for mx in 0..frame.mcux {
                next_unit(&mut bits, &mut comps);
                for sc in &mut comps {
                    let c = &mut frame.comps[sc.index];
                    let stride = c.stride();
                    for y in 0..c.v {
                        for x in 0..c.h {
                            let (by, bx) = (my * c.v + y, mx * c.h + x);
                            let out = &mut c.plane[by * 8 * stride + bx * 8..];
                            block(&mut bits, sc, &mut coef, out, stride)?;
                        }
                    }
                }
            }
        }
    }
    for sc in &comps {
        frame.comps[sc.index].scanned = true;
    }
    // Resume at the next marker after the data that is not a restart marker.
    let marker = |p: usize| data[p] == 0xFF && !matches!(data[p + 1], 0x00 | 0xD0..=0xD7);
    let mut p = bits.pos;
    while p + 1 < data.len() && !marker(p) {
        p += 1;
    }
    Ok(p)
}

fn table(tables: &[Option<Huffman>; 4], id: u8) -> Option<&Huffman> {
    tables.get(usize::from(id))?.as_ref()
}

/// One block: Huffman-decoded, dequantized, inverse-transformed into `out`.
#[inline]
fn block(
    bits: &mut Bits,
    sc: &mut ScanComp,
    coef: &mut [i32; 64],
    out: &mut [u8],
    stride: usize,
) -> OpResult<()> {
    let t = u32::from(
        bits.symbol(sc.dc)
            .ok_or_else(|| bad("a bad Huffman code"))?,
    );
    if t > 15 {
        return Err(bad(format!("a DC difference of {t} bits")));
    }
    sc.pred = sc.pred.wrapping_add(bits.value(t));
    // libjpeg keeps a coefficient in 16 bits.
    let dc = i32::from(sc.pred as i16) * sc.quant[0];
    let mut k = 1;
    let mut any_ac = false;
    while k < 64 {
        let rs = bits
            .symbol(sc.ac)
            .ok_or_else(|| bad("a bad Huffman code"))?;
        let (r, s) = (usize::from(rs >> 4), u32::from(rs & 15));
        if s == 0 {
            if r != 15 {
                break;
            }
            k += 16;
            continue;
        }
        k += r;
        if k > 63 {
            return Err(bad("an AC coefficient past the 64th"));
        }
        if !any_ac {
            coef.fill(0);
            any_ac = true;
        }
        let z = ZIGZAG[k];
        coef[z] = bits.value(s) * sc.quant[z];
        k += 1;
    }
    if bits.overran() {
        return Err(bad("the data ends inside a scan (a truncated file)"));
    }
    if any_ac {
        coef[0] = dc;
        pixels::idct_islow(coef, out, stride);
    } else {
        pixels::idct_dc(dc, out, stride);
    }
    Ok(())
}
