//! The entropy-coded side of a baseline JPEG: Huffman tables as libjpeg derives them (with the
//! standard tables of Annex K for a scan that names one the file never defined, as
//! libjpeg-turbo does for motion-JPEG frames), and the bit reader over a scan's bytes.

/// Codes up to this long are looked up in one step; longer ones walk `maxcode`.
const FAST_BITS: u32 = 9;

/// One DHT table, derived for decoding (jdhuff.c `jpeg_make_d_derived_tbl`).
pub(super) struct Huffman {
    /// The next `FAST_BITS` bits → `(code length << 8) | symbol`; 0 when the code is longer.
    fast: [u16; 1 << FAST_BITS],
    /// The largest code of each length, -1 where there is none; `[17]` is a sentinel.
    maxcode: [i32; 18],
    /// Index in `symbols` of each length's first code, minus that code.
    valoffset: [i32; 17],
    symbols: [u8; 256],
}

impl Huffman {
    /// From a DHT's 16 counts (codes of each length) and its symbols. A table whose codes do
    /// not fit their lengths (or use an all-ones code) is refused, as libjpeg refuses it.
    pub(super) fn new(counts: &[u8; 16], symbols: &[u8]) -> Result<Huffman, &'static str> {
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total > 256 || symbols.len() != total {
            return Err("bad Huffman table (more than 256 codes)");
        }
        let mut table = Huffman {
            fast: [0; 1 << FAST_BITS],
            maxcode: [-1; 18],
            valoffset: [0; 17],
            symbols: [0; 256],
        };
        table.symbols[..total].copy_from_slice(symbols);
        let (mut code, mut k) = (0u32, 0usize);
        for len in 1..=16u32 {
            let n = u32::from(counts[len as usize - 1]);
            if n > 0 {
                if code + n >= 1 << len {
                    return Err("bad Huffman table (its codes do not fit their lengths)");
                }
                table.valoffset[len as usize] = k as i32 - code as i32;
                for _ in 0..n {
                    if len <= FAST_BITS {
                        let shift = FAST_BITS - len;
                        let first = (code << shift) as usize;
                        let entry = ((len as u16) << 8) | u16::from(table.symbols[k]);
                        table.fast[first..first + (1 << shift)].fill(entry);
                    }
                    code += 1;
                    k += 1;
                }
                table.maxcode[len as usize] = code as i32 - 1;
            }
            code <<= 1;
        }
        table.maxcode[17] = i32::MAX;
        Ok(table)
    }

    /// The standard table libjpeg-turbo installs for a scan naming an undefined table 0 or 1.
    pub(super) fn standard(dc: bool, id: usize) -> Option<Huffman> {
        let (counts, symbols): (&[u8; 16], &[u8]) = match (dc, id) {
            (true, 0) => (&DC_LUMA_COUNTS, &DC_LUMA_SYMBOLS),
            (true, 1) => (&DC_CHROMA_COUNTS, &DC_CHROMA_SYMBOLS),
            (false, 0) => (&AC_LUMA_COUNTS, &AC_LUMA_SYMBOLS),
            (false, 1) => (&AC_CHROMA_COUNTS, &AC_CHROMA_SYMBOLS),
            _ => return None,
        };
        Huffman::new(counts, symbols).ok()
    }
}

/// MSB-first bits of one scan's entropy-coded bytes: `0xFF 0x00` is a data byte 0xFF; at a
/// marker the reader feeds zero bits, as libjpeg does (a scan cut short by a marker decodes,
/// the rest of it gray); at the end of the input it feeds zeros too but remembers, and a block
/// that used them is refused ([`Bits::overran`]): Pillow refuses a truncated file.
pub(super) struct Bits<'a> {
    data: &'a [u8],
    /// The next byte to read.
    pub(super) pos: usize,
    /// `nbits` valid bits, left-aligned.
    acc: u64,
    nbits: u32,
    /// How many of the bits pushed past the end of the input are still in `acc` or were used.
    past_end: u32,
}

impl<'a> Bits<'a> {
    pub(super) fn new(data: &'a [u8], pos: usize) -> Self {
        Bits {
            data,
            pos,
            acc: 0,
            nbits: 0,
            past_end: 0,
        }
    }

    /// Tops the buffer up to at least 57 bits: enough for a symbol and its value.
    #[inline(always)]
    fn fill(&mut self) {
        if self.nbits > 56 {
            return;
        }
        // Fast path: the next 8 bytes hold no 0xFF (no stuffing, no marker), so they are data.
        if let Some(next) = self.data.get(self.pos..self.pos + 8) {
            let word = u64::from_be_bytes(next.try_into().unwrap_or([0xFF; 8]));
            // A 0xFF byte of `word` is a zero byte of `!word`.
            let has_ff = (!word).wrapping_sub(0x0101_0101_0101_0101) & word & 0x8080_8080_8080_8080;
            if has_ff == 0 {
                let bytes = (64 - self.nbits) / 8;
                let bits = bytes * 8;
                let taken = if bits == 64 {
                    word
                } else {
                    word >> (64 - bits)
                };
                self.acc |= taken << (64 - self.nbits - bits);
                self.nbits += bits;
                self.pos += bytes as usize;
                return;
            }
        }
        self.fill_bytewise();
    }

    /// Byte by byte, for stuffing, markers and the end of the input.
    #[cold]
    #[inline(never)]
    fn fill_bytewise(&mut self) {
        while self.nbits <= 56 {
            let byte = match self.data.get(self.pos) {
                Some(&0xFF) => match self.data.get(self.pos + 1) {
                    Some(0) => {
                        self.pos += 2;
                        0xFF
                    }
                    Some(_) => 0, // a marker: stay on it
                    None => {
                        self.past_end += 8;
                        0
                    }
                },
                Some(&b) => {
                    self.pos += 1;
                    b
                }
                None => {
                    self.past_end += 8;
                    0
                }
            };
            self.acc |= u64::from(byte) << (56 - self.nbits);
            self.nbits += 8;
        }
    }

    #[inline(always)]
    fn consume(&mut self, n: u32) {
        self.acc <<= n;
        self.nbits -= n;
    }

    /// Whether bits from past the end of the input were used.
    pub(super) fn overran(&self) -> bool {
        self.past_end > self.nbits
    }

    /// The next Huffman symbol (jdhuff.c `HUFF_DECODE`), or `None` for a code not in `table`.
    #[inline(always)]
    pub(super) fn symbol(&mut self, table: &Huffman) -> Option<u8> {
        self.fill();
        let entry = table.fast[(self.acc >> (64 - FAST_BITS)) as usize];
        if entry != 0 {
            self.consume(u32::from(entry >> 8));
            return Some(entry as u8);
        }
        self.long_symbol(table)
    }

    /// A code longer than `FAST_BITS`.
    #[inline(never)]
    fn long_symbol(&mut self, table: &Huffman) -> Option<u8> {
        for len in FAST_BITS + 1..=16 {
            let code = (self.acc >> (64 - len)) as i32;
            if code <= table.maxcode[len as usize] {
                self.consume(len);
                let index = table.valoffset[len as usize] + code;
                return table.symbols.get(index as usize).copied();
            }
        }
        None
    }

    /// `s` (at most 15) more bits as a signed coefficient (F.12 EXTEND); right after
    /// [`Bits::symbol`], which left enough bits in the buffer.
    #[inline(always)]
    pub(super) fn value(&mut self, s: u32) -> i32 {
        if s == 0 {
            return 0;
        }
        let v = (self.acc >> (64 - s)) as i32;
        self.consume(s);
        if v < 1 << (s - 1) {
            v - (1 << s) + 1
        } else {
            v
        }
    }

    /// At a restart interval's end: drops the partial byte and moves past the next RSTn marker
    /// (wherever it is: the bytes before it are skipped, as the SDK's decoder does).
    pub(super) fn restart(&mut self) {
        self.acc = 0;
        self.nbits = 0;
        while self.pos + 1 < self.data.len()
            && !(self.data[self.pos] == 0xFF && (0xD0..=0xD7).contains(&self.data[self.pos + 1]))
        {
            self.pos += 1;
        }
        self.pos = (self.pos + 2).min(self.data.len());
        // Whatever was read past the end is gone with the buffer; reading on reads past it.
        self.past_end = 0;
    }
}
const DC_LUMA_COUNTS: [u8; 16] = [
    0x00, 0x01, 0x05, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];
const DC_LUMA_SYMBOLS: [u8; 12] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b,
];
const DC_CHROMA_COUNTS: [u8; 16] = [
    0x00, 0x03, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
];
const DC_CHROMA_SYMBOLS: [u8; 12] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b,
];
const AC_LUMA_COUNTS: [u8; 16] = [
    0x00, 0x02, 0x01, 0x03, 0x03, 0x02, 0x04, 0x03, 0x05, 0x05, 0x04, 0x04, 0x00, 0x00, 0x01, 0x7d,
];
const AC_LUMA_SYMBOLS: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
    0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];
const AC_CHROMA_COUNTS: [u8; 16] = [
    0x00, 0x02, 0x01, 0x02, 0x04, 0x04, 0x03, 0x04, 0x07, 0x05, 0x04, 0x04, 0x00, 0x01, 0x02, 0x77,
];
const AC_CHROMA_SYMBOLS: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0,
    0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26,
    0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5,
    0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
    0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];
