"""A small baseline JPEG decoder in pure Python, for `ops.decode_image` without native ops.

It follows libjpeg(-turbo), which Pillow uses, step by step: the integer "islow" IDCT,
"fancy" (triangle) chroma upsampling for 2x1 and 2x2 subsampling, and libjpeg's fixed-point
YCbCr → RGB, so gray and common color JPEGs decode to the pixels Pillow gives. Progressive,
arithmetic-coded and 12-bit JPEGs are refused with a message (the native op takes them).
"""

from __future__ import annotations

__all__ = ["JpegError", "decode"]


class JpegError(Exception):
    pass


_ZIGZAG = [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41,
           34, 27, 20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30,
           37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63]


def decode(data: bytes, check_size) -> tuple:
    """(width, height, pixels, channels): 8-bit samples, 1 (gray) or 3 (RGB) per pixel.
    `check_size(width, height)` runs on the frame header, before any pixel is allocated."""
    qt, huff, frame, restart, pos = {}, {}, None, 0, 2
    adobe_transform = None
    while pos < len(data):
        if data[pos] != 0xFF:
            raise JpegError(f"expected a marker at byte {pos}")
        marker = data[pos + 1]
        pos += 2
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue
        if marker == 0xD9:
            break
        if pos + 2 > len(data):
            raise JpegError("truncated segment")
        length = (data[pos] << 8) | data[pos + 1]
        seg = data[pos + 2:pos + length]
        if len(seg) != length - 2:
            raise JpegError("truncated segment")
        pos += length
        if marker == 0xDB:
            _read_dqt(seg, qt)
        elif marker == 0xC4:
            _read_dht(seg, huff)
        elif marker == 0xDD:
            restart = (seg[0] << 8) | seg[1]
        elif marker == 0xEE and seg[:5] == b"Adobe" and len(seg) >= 12:
            adobe_transform = seg[11]
        elif marker in (0xC0, 0xC1):
            frame = _read_sof(seg)
            check_size(frame["width"], frame["height"])
        elif 0xC2 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            raise JpegError("only baseline JPEG is decoded without the gateway's native ops "
                            f"(this one is SOF{marker - 0xC0}: progressive or lossless)")
        elif marker == 0xDA:
            if frame is None:
                raise JpegError("scan before frame header")
            pos = _read_scan(data, pos, seg, frame, qt, huff, restart)
    if frame is None or any("blocks" not in c for c in frame["comps"]):
        raise JpegError("no image data")
    return _output(frame, adobe_transform)


def _read_dqt(seg, qt):
    i = 0
    while i < len(seg):
        precision, tid = seg[i] >> 4, seg[i] & 15
        i += 1
        if precision:
            vals = [(seg[i + 2 * k] << 8) | seg[i + 2 * k + 1] for k in range(64)]
            i += 128
        else:
            vals = list(seg[i:i + 64])
            i += 64
        table = [0] * 64
        for k in range(64):
            table[_ZIGZAG[k]] = vals[k]
        qt[tid] = table


def _read_dht(seg, huff):
    i = 0
    while i < len(seg):
        cls, tid = seg[i] >> 4, seg[i] & 15
        counts = seg[i + 1:i + 17]
        i += 17
        codes, code = {}, 0
        for length in range(1, 17):
            for _ in range(counts[length - 1]):
                codes[(length, code)] = seg[i]
                i += 1
                code += 1
            code <<= 1
        huff[(cls, tid)] = codes


def _read_sof(seg):
    if seg[0] != 8:
        raise JpegError(f"{seg[0]}-bit samples are not supported (8-bit only)")
    height, width, n = (seg[1] << 8) | seg[2], (seg[3] << 8) | seg[4], seg[5]
    if n not in (1, 3):
        raise JpegError(f"{n} components are not supported (1 or 3)")
    comps = []
    for k in range(n):
        cid, hv, tq = seg[6 + 3 * k:9 + 3 * k]
        comps.append({"id": cid, "h": hv >> 4, "v": hv & 15, "tq": tq})
    hmax, vmax = max(c["h"] for c in comps), max(c["v"] for c in comps)
    mcux, mcuy = -(-width // (8 * hmax)), -(-height // (8 * vmax))
    for c in comps:
        c["bw"], c["bh"] = mcux * c["h"], mcuy * c["v"]
    return {"width": width, "height": height, "comps": comps, "hmax": hmax, "vmax": vmax,
            "mcux": mcux, "mcuy": mcuy}


class _Bits:
    def __init__(self, data, pos):
        self.data, self.pos, self.acc, self.n = data, pos, 0, 0

    def bit(self):
        if self.n == 0:
            b = self.data[self.pos] if self.pos < len(self.data) else 0
            if b == 0xFF:
                nxt = self.data[self.pos + 1] if self.pos + 1 < len(self.data) else 0
                if nxt == 0:
                    self.pos += 2
                else:  # a marker: feed zeros, as libjpeg does on a truncated scan
                    b = 0
            else:
                self.pos += 1
            self.acc, self.n = b, 8
        self.n -= 1
        return (self.acc >> self.n) & 1

    def bits(self, k):
        v = 0
        for _ in range(k):
            v = (v << 1) | self.bit()
        return v

    def symbol(self, codes):
        code = 0
        for length in range(1, 17):
            code = (code << 1) | self.bit()
            sym = codes.get((length, code))
            if sym is not None:
                return sym
        raise JpegError("bad Huffman code")

    def restart(self):
        self.n = 0
        while self.pos + 1 < len(self.data) and not (
                self.data[self.pos] == 0xFF and 0xD0 <= self.data[self.pos + 1] <= 0xD7):
            self.pos += 1
        self.pos += 2


def _extend(v, k):
    return v - (1 << k) + 1 if k and v < (1 << (k - 1)) else v


def _read_scan(data, pos, seg, frame, qt, huff, restart):
    ns = seg[0]
    byid = {c["id"]: c for c in frame["comps"]}
    scomps = []
    for k in range(ns):
        c = byid.get(seg[1 + 2 * k])
        if c is None or (0, seg[2 + 2 * k] >> 4) not in huff or (1, seg[2 + 2 * k] & 15) not in huff:
            raise JpegError("scan names an unknown component or Huffman table")
        if c["tq"] not in qt:
            raise JpegError("missing quantization table")
        c["dc"], c["ac"] = huff[(0, seg[2 + 2 * k] >> 4)], huff[(1, seg[2 + 2 * k] & 15)]
        c["blocks"] = [None] * (c["bw"] * c["bh"])
        c["pred"] = 0
        scomps.append(c)
    bits = _Bits(data, pos)
    single = ns == 1
    if single:
        c = scomps[0]
        # A non-interleaved scan covers only the component's own blocks, not the MCU padding.
        bw = -(-(-(-frame["width"] * c["h"] // frame["hmax"])) // 8)
        bh = -(-(-(-frame["height"] * c["v"] // frame["vmax"])) // 8)
        units = [(c, [(by, bx)]) for by in range(bh) for bx in range(bw)]
    else:
        units = [[(c, [(my * c["v"] + y, mx * c["h"] + x) for y in range(c["v"]) for x in range(c["h"])])
                  for c in scomps] for my in range(frame["mcuy"]) for mx in range(frame["mcux"])]
    for i, unit in enumerate(units):
        if restart and i and i % restart == 0:
            bits.restart()
            for c in scomps:
                c["pred"] = 0
        for c, blocks in ([unit] if single else unit):
            q = qt[c["tq"]]
            for by, bx in blocks:
                coef = [0] * 64
                t = bits.symbol(c["dc"])
                c["pred"] += _extend(bits.bits(t), t)
                coef[0] = c["pred"] * q[0]
                k = 1
                while k < 64:
                    rs = bits.symbol(c["ac"])
                    r, s = rs >> 4, rs & 15
                    if s == 0:
                        if r != 15:
                            break
                        k += 16
                        continue
                    k += r
                    if k > 63:
                        raise JpegError("bad AC coefficient run")
                    z = _ZIGZAG[k]
                    coef[z] = _extend(bits.bits(s), s) * q[z]
                    k += 1
                c["blocks"][by * c["bw"] + bx] = _idct_islow(coef)
    # Resume after the entropy-coded data: the next marker that is not a restart or stuffing.
    p = bits.pos
    while p + 1 < len(data) and not (data[p] == 0xFF and data[p + 1] not in (0, *range(0xD0, 0xD8))):
        p += 1
    return p


# libjpeg's jidctint.c (islow), CONST_BITS = 13, PASS1_BITS = 2.
_F0298, _F0390, _F0541, _F0765, _F0899, _F1175 = 2446, 3196, 4433, 6270, 7373, 9633
_F1501, _F1847, _F1961, _F2053, _F2562, _F3072 = 12299, 15137, 16069, 16819, 20995, 25172


def _idct_1d(s0, s1, s2, s3, s4, s5, s6, s7, shift):
    z1 = (s2 + s6) * _F0541
    tmp2 = z1 - s6 * _F1847
    tmp3 = z1 + s2 * _F0765
    tmp0 = (s0 + s4) << 13
    tmp1 = (s0 - s4) << 13
    t10, t13, t11, t12 = tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2
    z1, z2, z3, z4 = s7 + s1, s5 + s3, s7 + s3, s5 + s1
    z5 = (z3 + z4) * _F1175
    o0, o1, o2, o3 = s7 * _F0298, s5 * _F2053, s3 * _F3072, s1 * _F1501
    z1, z2, z3, z4 = -z1 * _F0899, -z2 * _F2562, -z3 * _F1961 + z5, -z4 * _F0390 + z5
    o0 += z1 + z3
    o1 += z2 + z4
    o2 += z2 + z3
    o3 += z1 + z4
    r = 1 << (shift - 1)
    return ((t10 + o3 + r) >> shift, (t11 + o2 + r) >> shift, (t12 + o1 + r) >> shift,
            (t13 + o0 + r) >> shift, (t13 - o0 + r) >> shift, (t12 - o1 + r) >> shift,
            (t11 - o2 + r) >> shift, (t10 - o3 + r) >> shift)


def _idct_islow(c):
    ws = [0] * 64
    for x in range(8):
        col = c[x::8]
        if not any(col[1:]):
            dc = col[0] << 2
            for y in range(8):
                ws[y * 8 + x] = dc
            continue
        for y, v in enumerate(_idct_1d(*col, 11)):
            ws[y * 8 + x] = v
    out = []
    for y in range(8):
        row = _idct_1d(*ws[y * 8:y * 8 + 8], 18)
        out.append([0 if v < -128 else 255 if v > 127 else v + 128 for v in row])
    return out


def _plane(c, frame):
    """The component's samples, rows of its (downsampled) width and height."""
    w = -(-frame["width"] * c["h"] // frame["hmax"])
    h = -(-frame["height"] * c["v"] // frame["vmax"])
    rows = []
    for y in range(h):
        by, yy = divmod(y, 8)
        row = []
        for bx in range(-(-w // 8)):
            blk = c["blocks"][by * c["bw"] + bx]
            row.extend(blk[yy] if blk is not None else [128] * 8)
        rows.append(row[:w])
    return rows


def _fancy_h2(row):
    n = len(row)
    if n == 1:
        return [row[0], row[0]]
    out = [row[0], (row[0] * 3 + row[1] + 2) >> 2]
    for i in range(1, n - 1):
        v = row[i] * 3
        out += [(v + row[i - 1] + 1) >> 2, (v + row[i + 1] + 2) >> 2]
    out += [(row[-1] * 3 + row[-2] + 1) >> 2, row[-1]]
    return out


def _fancy_h2v2(rows):
    out = []
    n = len(rows)
    for y in range(n):
        for near in (rows[max(y - 1, 0)], rows[min(y + 1, n - 1)]):
            s = [a * 3 + b for a, b in zip(rows[y], near)]
            w = len(s)
            if w == 1:
                r = [(s[0] * 4 + 8) >> 4, (s[0] * 4 + 7) >> 4]
            else:
                r = [(s[0] * 4 + 8) >> 4, (s[0] * 3 + s[1] + 7) >> 4]
                for i in range(1, w - 1):
                    r += [(s[i] * 3 + s[i - 1] + 8) >> 4, (s[i] * 3 + s[i + 1] + 7) >> 4]
                r += [(s[-1] * 3 + s[-2] + 8) >> 4, (s[-1] * 4 + 7) >> 4]
            out.append(r)
    return out


def _upsample(rows, hf, vf):
    if (hf, vf) == (1, 1):
        return rows
    if (hf, vf) == (2, 1):
        return [_fancy_h2(r) for r in rows]
    if (hf, vf) == (2, 2):
        return _fancy_h2v2(rows)
    return [[v for v in r for _ in range(hf)] for r in rows for _ in range(vf)]


def _fix(x):
    return int(x * 65536 + 0.5)


_HALF = 1 << 15
_CR_R = [(_fix(1.40200) * (i - 128) + _HALF) >> 16 for i in range(256)]
_CB_B = [(_fix(1.77200) * (i - 128) + _HALF) >> 16 for i in range(256)]
_CR_G = [-_fix(0.71414) * (i - 128) for i in range(256)]
_CB_G = [-_fix(0.34414) * (i - 128) + _HALF for i in range(256)]


def _clamp(v):
    return 0 if v < 0 else 255 if v > 255 else v


def _output(frame, adobe_transform):
    w, h = frame["width"], frame["height"]
    comps = frame["comps"]
    planes = [_upsample(_plane(c, frame), frame["hmax"] // c["h"], frame["vmax"] // c["v"])
              for c in comps]
    if len(comps) == 1:
        out = bytearray()
        for row in planes[0][:h]:
            out.extend(row[:w])
        return w, h, out, 1
    rgb = adobe_transform == 0 or [c["id"] for c in comps] == [ord("R"), ord("G"), ord("B")]
    out = bytearray(w * h * 3)
    i = 0
    for y in range(h):
        ys, cbs, crs = planes[0][y], planes[1][y], planes[2][y]
        for x in range(w):
            if rgb:
                out[i:i + 3] = bytes((ys[x], cbs[x], crs[x]))
            else:
                yy, cb, cr = ys[x], cbs[x], crs[x]
                out[i] = _clamp(yy + _CR_R[cr])
                out[i + 1] = _clamp(yy + ((_CB_G[cb] + _CR_G[cr]) >> 16))
                out[i + 2] = _clamp(yy + _CB_B[cb])
            i += 3
    return w, h, out, 3
