#!/usr/bin/python3
"""Reference decodes for tests/test_image_formats.cpp: writes test images of every mode LLaVA may meet into
DIR, then decodes every file in DIR (these and any the C++ test put there first) the way LLaVA does:
PIL Image.open(f).convert('RGB'), then transformers' CLIPImageProcessor (re-done in numpy, the steps of
bench/image_pipeline_py.py) with and without LLaVA's expand2square ("pad" / "square").

  pil_reference.py DIR EDGE      (EDGE: shortest_edge = crop size of the CLIP preprocessing)

Every file is also written cut at 60% of its bytes (cut60_<file>): where PIL refuses those, so must we.
Writes DIR/ref/<file>.rgb (H x W x 3 uint8), .square / .pad (3 x EDGE x EDGE float32) and DIR/manifest.json
{"pillow": version, "cases": [{"file", "ok", "error", "width", "height", "mode"}]}.
Images are built with PIL where PIL can write the layout, else by the small PNG / TIFF writers and the GIF
block editor below (16-bit RGB PNG, interlaced PNG, palettes shorter than the indices, planar / tiled /
16-bit / associated-alpha TIFF, GIF frames off the screen, ...). File names carry misleading extensions
on purpose: the format must come from the content.
"""
import io
import json
import os
import struct
import sys
import zlib

import numpy as np
import PIL
from PIL import Image

MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]


def picture(w, h, seed, channels=3):
    """Smooth gradients, hard-edged blocks and noise: every value range, both sides of rounding points."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    out = np.empty((h, w, channels), np.int64)
    for c in range(channels):
        out[..., c] = (x * (255 // max(w - 1, 1)) * (c + 1) + y * 7 + c * 50) % 256
    bx, by = rng.integers(0, w), rng.integers(0, h)
    out[(x < bx) != (y < by)] = 250
    noise = rng.integers(0, 256, out.shape)
    mask = rng.random(out.shape) < 0.15
    out[mask] = noise[mask]
    return out.astype(np.uint8)


# ---- PNG writer (layouts PIL cannot save: 16-bit RGB/LA/RGBA, 2/4-bit grey, interlaced, short PLTE) ----

def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def pack_row(samples, bits):
    if bits == 16:
        return samples.astype(">u2").tobytes()
    if bits == 8:
        return samples.astype(np.uint8).tobytes()
    per = 8 // bits
    padded = np.zeros(-(-len(samples) // per) * per, np.uint8)
    padded[: len(samples)] = samples
    out = np.zeros(len(padded) // per, np.uint8)
    for k in range(per):
        out |= (padded[k::per] << (8 - bits * (k + 1))).astype(np.uint8)
    return out.tobytes()


def png(arr, bits, color_type, extra=(), interlace=False):
    """arr: (h, w) or (h, w, c) sample values."""
    arr = arr if arr.ndim == 3 else arr[..., None]
    h, w = arr.shape[:2]
    head = struct.pack(">IIBBBBB", w, h, bits, color_type, 0, 0, 1 if interlace else 0)
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes if interlace else [(0, 0, 1, 1)]:
        sub = arr[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        for row in sub:
            raw += b"\0" + pack_row(row.reshape(-1), bits)
    body = png_chunk(b"IHDR", head)
    for kind, data in extra:
        body += png_chunk(kind, data)
    return b"\x89PNG\r\n\x1a\n" + body + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")


# ---- TIFF writer: uncompressed or Deflate (zlib), strips or tiles, contiguous or planar ----

def tiff(arr, photometric, bits, order="<", compression=1, planar=1, extra=(), colormap=None, tile=None,
         rows_per_strip=None, orientation=None, sample_format=None, predictor=None):
    arr = arr if arr.ndim == 3 else arr[..., None]
    h, w, spp = arr.shape
    dtype = np.dtype(order + "u2") if bits == 16 else np.uint8
    if sample_format == 2 and bits == 16:
        dtype = np.dtype(order + "i2")

    def encode(block):  # block: (rows, cols, samples) -> bytes
        rows = block
        if predictor == 2:
            rows = block.astype(np.int64)
            rows[:, 1:] = rows[:, 1:] - block[:, :-1].astype(np.int64)
            rows = (rows % (1 << bits)).astype(block.dtype)
        data = b"".join(pack_row(r.reshape(-1), bits) if bits < 8 else r.astype(dtype).tobytes() for r in rows)
        return zlib.compress(data) if compression == 8 else data

    chunks = []
    planes = [arr[..., p:p + 1] for p in range(spp)] if planar == 2 else [arr]
    if tile:
        tw, th = tile
        for plane in planes:
            for ty in range(0, h, th):
                for tx in range(0, w, tw):
                    block = np.zeros((th, tw, plane.shape[2]), plane.dtype)
                    part = plane[ty:ty + th, tx:tx + tw]
                    block[: part.shape[0], : part.shape[1]] = part
                    chunks.append(encode(block))
    else:
        rps = rows_per_strip or h
        for plane in planes:
            for y in range(0, h, rps):
                chunks.append(encode(plane[y:y + rps]))
    tags = {256: (4, [w]), 257: (4, [h]), 258: (3, [bits] * spp), 259: (3, [compression]), 262: (3, [photometric]),
            277: (3, [spp]), 284: (3, [planar])}
    if tile:
        tags.update({322: (4, [tile[0]]), 323: (4, [tile[1]]), 324: (4, None), 325: (4, [len(c) for c in chunks])})
    else:
        tags.update({273: (4, None), 278: (4, [rows_per_strip or h]), 279: (4, [len(c) for c in chunks])})
    if orientation:
        tags[274] = (3, [orientation])
    if colormap is not None:
        tags[320] = (3, list(colormap))
    if extra:
        tags[338] = (3, list(extra))
    if sample_format:
        tags[339] = (3, [sample_format] * spp)
    if predictor:
        tags[317] = (3, [predictor])
    entries = sorted(tags)
    ifd_size = 2 + 12 * len(entries) + 4
    sizes = {3: 2, 4: 4}
    values_at = 8 + ifd_size
    offsets_tag = 324 if tile else 273
    value_area = b""
    # out-of-line values first, then the image data
    for t in entries:
        kind, vals = tags[t]
        n = len(chunks) if vals is None else len(vals)
        if n * sizes[kind] > 4:
            value_area += b"\0" * (n * sizes[kind])
    data_at = values_at + len(value_area)
    data_offsets, pos = [], data_at
    for c in chunks:
        data_offsets.append(pos)
        pos += len(c)
    tags[offsets_tag] = (4, data_offsets)
    ifd, value_area, cursor = struct.pack(order + "H", len(entries)), b"", values_at
    for t in entries:
        kind, vals = tags[t]
        packed = b"".join(struct.pack(order + ("H" if kind == 3 else "I"), v) for v in vals)
        if len(packed) <= 4:
            ifd += struct.pack(order + "HHI", t, kind, len(vals))[:8] + packed.ljust(4, b"\0")
        else:
            ifd += struct.pack(order + "HHII", t, kind, len(vals), cursor)
            value_area += packed
            cursor += len(packed)
    ifd += b"\0\0\0\0"
    head = (b"II*\0" if order == "<" else b"MM\0*") + struct.pack(order + "I", 8)
    return head + ifd + value_area + b"".join(chunks)


# ---- GIF block editor (frames off the screen, local tables, short tables, no table) ----

def gif_parse(b):
    lsd = bytearray(b[6:13])
    pos = 13
    gct = b""
    if lsd[4] & 0x80:
        n = 3 << ((lsd[4] & 7) + 1)
        gct, pos = b[pos:pos + n], pos + n
    blocks = []
    while pos < len(b) and b[pos] != 0x3B:
        start = pos
        if b[pos] == 0x21:
            pos += 2
        else:
            desc = bytearray(b[pos + 1:pos + 10])
            pos += 10
            if desc[8] & 0x80:
                pos += 3 << ((desc[8] & 7) + 1)
            pos += 1  # LZW minimum code size
        while b[pos]:
            pos += b[pos] + 1
        pos += 1
        blocks.append(bytearray(b[start:pos]))
    return lsd, gct, blocks


def gif_join(lsd, gct, blocks):
    return b"GIF89a" + bytes(lsd) + gct + b"".join(bytes(x) for x in blocks) + b";"


def gif_edit(data, screen=None, offset=None, table_to_local=False, table_entries=None, drop_table=False,
             drop_transparency=False):
    lsd, gct, blocks = gif_parse(data)
    image = next(i for i, blk in enumerate(blocks) if blk[0] == 0x2C)
    if screen:
        lsd[0:4] = struct.pack("<HH", *screen)
    if offset:
        blocks[image][1:5] = struct.pack("<HH", *offset)
    if drop_transparency:
        for blk in blocks[:image]:
            if blk[1] == 0xF9:
                blk[3] &= 0xFE
    if table_entries is not None:  # keep only the first 2^k entries
        bits = max(table_entries.bit_length() - 1, 1)
        gct = gct[: 3 << bits]
        lsd[4] = (lsd[4] & 0xF8) | (bits - 1)
    if drop_table:
        gct, lsd[4] = b"", lsd[4] & 0x78
    if table_to_local:
        flags = lsd[4]
        lsd[4] &= 0x78
        blk = blocks[image]
        blk[9] |= 0x80 | (flags & 7)
        blocks[image] = blk[:10] + gct + blk[10:]
        gct = b""
    return gif_join(lsd, gct, blocks)


def pil_bytes(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


class Sources:
    """The pictures every case is made from."""

    def __init__(self):
        self.rgb = picture(61, 43, 1)
        self.im = Image.fromarray(self.rgb)
        self.rgba = np.dstack([self.rgb, picture(61, 43, 2, 1)])
        self.rgba[::3, ::2, 3] = 0  # fully transparent pixels keep their colour in the file
        self.grey = picture(43, 61, 3, 1)[..., 0]
        self.pal = Image.fromarray(self.rgb).quantize(colors=200)
        self.pal16 = Image.fromarray(self.rgb).quantize(colors=16)
        self.idx = picture(40, 30, 4, 1)[..., 0]
        i16 = (picture(50, 30, 5, 1)[..., 0].astype(np.uint16) * 3) + np.arange(30)[:, None] * 5
        i16[0, :5] = [0, 1, 255, 256, 65535]
        self.i16 = i16
        self.r16 = self.rgb.astype(np.uint16) * 257 + picture(61, 43, 6).astype(np.uint16)


def png_cases(s):
    """PNG: every bit depth and colour type, tRNS, short palettes, interlacing."""
    cases = {}
    cases["png_rgb8.jpg"] = pil_bytes(s.im, "PNG")
    cases["png_rgba8.png"] = pil_bytes(Image.fromarray(s.rgba, "RGBA"), "PNG")
    cases["png_l8.png"] = pil_bytes(Image.fromarray(s.grey), "PNG")
    cases["png_la8.png"] = pil_bytes(Image.fromarray(np.dstack([s.grey, s.grey[::-1]]), "LA"), "PNG")
    cases["png_1bit.png"] = pil_bytes(Image.fromarray(s.grey).convert("1"), "PNG")
    cases["png_l2.png"] = png(s.grey >> 6, 2, 0)
    cases["png_l4.png"] = png(s.grey >> 4, 4, 0)
    cases["png_p8.png"] = pil_bytes(s.pal, "PNG")
    cases["png_p4.png"] = pil_bytes(s.pal16, "PNG", bits=4)
    cases["png_p8_trns_bytes.png"] = pil_bytes(s.pal, "PNG", transparency=bytes(range(0, 200)))
    cases["png_p8_trns_index.png"] = pil_bytes(s.pal, "PNG", transparency=5)
    cases["png_p_short_plte.png"] = png(s.idx, 8, 3, [(b"PLTE", bytes([200, 10, 20, 30, 200, 40, 1, 2, 3]))])
    cases["png_p2_short_plte.png"] = png(s.idx >> 6, 2, 3, [(b"PLTE", bytes([200, 10, 20]))])
    cases["png_i16.png"] = pil_bytes(Image.fromarray(s.i16.astype(np.uint16)), "PNG")
    cases["png_i16_trns.png"] = png(s.i16, 16, 0, [(b"tRNS", struct.pack(">H", 300))])
    cases["png_rgb16.png"] = png(s.r16, 16, 2)
    cases["png_rgba16.png"] = png(np.dstack([s.r16, s.r16[..., :1] ^ 0x5555]), 16, 6)
    cases["png_la16.png"] = png(np.dstack([s.r16[..., 0], s.r16[..., 1]]), 16, 4)
    cases["png_rgb8_interlaced.png"] = png(s.rgb, 8, 2, interlace=True)
    cases["png_p4_interlaced.png"] = png(s.idx >> 4, 4, 3, [(b"PLTE", bytes(range(48)))], interlace=True)
    cases["png_l8_trns.png"] = pil_bytes(Image.fromarray(s.grey), "PNG", transparency=17)
    cases["png_rgb8_trns.png"] = pil_bytes(s.im, "PNG", transparency=(250, 250, 250))
    return cases


def jpeg_cases(s):
    """JPEG: subsamplings, progressive, grey, Adobe CMYK, an EXIF orientation PIL does not apply."""
    cases = {}
    cases["jpeg_420.png"] = pil_bytes(s.im, "JPEG", quality=90)
    cases["jpeg_444.jpg"] = pil_bytes(s.im, "JPEG", quality=95, subsampling=0)
    cases["jpeg_422.jpg"] = pil_bytes(s.im, "JPEG", quality=85, subsampling=1)
    cases["jpeg_progressive.jpg"] = pil_bytes(s.im, "JPEG", quality=80, progressive=True)
    cases["jpeg_grey.jpg"] = pil_bytes(Image.fromarray(s.grey), "JPEG", quality=90)
    cases["jpeg_cmyk_adobe.jpg"] = pil_bytes(s.im.convert("CMYK"), "JPEG", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display: PIL (and so LLaVA) does not
    cases["jpeg_exif_orientation6.jpg"] = pil_bytes(s.im, "JPEG", quality=90, exif=exif.tobytes())
    return cases


def gif_cases(s):
    """GIF: first frames of animations, frames off the screen, local / short / missing colour tables."""
    cases = {}
    frames = [Image.fromarray(picture(40, 30, s)).quantize(colors=64) for s in (7, 8, 9)]
    cases["gif_static_small.gif"] = pil_bytes(s.pal16.resize((12, 9)), "GIF")  # < 16 px: not interlaced
    cases["gif_static_interlaced.gif"] = pil_bytes(frames[0], "GIF")
    anim = pil_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=[50, 60, 70], loop=0)
    cases["gif_animated.gif"] = anim
    trns = pil_bytes(frames[0], "GIF", transparency=3)
    cases["gif_transparency.gif"] = trns
    cases["gif_frame_inside_screen_trns.gif"] = gif_edit(trns, screen=(70, 50), offset=(9, 7))
    cases["gif_frame_inside_screen.gif"] = gif_edit(anim, screen=(70, 50), offset=(9, 7), drop_transparency=True)
    cases["gif_frame_outside_screen.gif"] = gif_edit(anim, screen=(20, 10), offset=(3, 5))
    cases["gif_local_table.gif"] = gif_edit(anim, table_to_local=True)
    cases["gif_short_table.gif"] = gif_edit(pil_bytes(s.pal16.resize((40, 30)), "GIF"), table_entries=4)
    cases["gif_no_table.gif"] = gif_edit(pil_bytes(s.pal16.resize((40, 30)), "GIF"), drop_table=True)
    cases["gif_grey_identity.gif"] = pil_bytes(Image.fromarray(s.grey), "GIF")
    return cases


def webp_cases(s):
    """WebP: lossy, lossless, alpha (exact), animated."""
    cases = {}
    cases["webp_lossy.webp"] = pil_bytes(s.im, "WEBP", quality=80)
    cases["webp_lossless.png"] = pil_bytes(s.im, "WEBP", lossless=True)
    cases["webp_lossy_alpha.webp"] = pil_bytes(Image.fromarray(s.rgba, "RGBA"), "WEBP", quality=70)
    cases["webp_lossless_alpha_exact.webp"] = pil_bytes(Image.fromarray(s.rgba, "RGBA"), "WEBP", lossless=True, exact=True)
    wf = [Image.fromarray(picture(40, 30, s)) for s in (10, 11, 12)]
    cases["webp_animated.webp"] = pil_bytes(wf[0], "WEBP", save_all=True, append_images=wf[1:], duration=80, quality=75)
    wa = [Image.fromarray(np.dstack([picture(40, 30, s), picture(40, 30, s + 1, 1)]), "RGBA") for s in (13, 15)]
    cases["webp_animated_alpha.webp"] = pil_bytes(wa[0], "WEBP", save_all=True, append_images=wa[1:], lossless=True)
    return cases


def tiff_pil_cases(s):
    """TIFF as PIL writes it: every mode x compression."""
    cases = {}
    for mode, source in [("1", Image.fromarray(s.grey).convert("1")), ("L", Image.fromarray(s.grey)),
                         ("LA", Image.fromarray(np.dstack([s.grey, s.grey[::-1]]), "LA")), ("P", s.pal),
                         ("RGB", s.im), ("RGBA", Image.fromarray(s.rgba, "RGBA")), ("CMYK", s.im.convert("CMYK")),
                         ("I16", Image.fromarray(s.i16.astype(np.uint16)))]:
        for comp in ["raw", "tiff_lzw", "tiff_adobe_deflate", "packbits"]:
            cases[f"tiff_pil_{mode}_{comp}.tif"] = pil_bytes(source, "TIFF", compression=comp)
    cases["tiff_pil_1_group4.tif"] = pil_bytes(Image.fromarray(s.grey).convert("1"), "TIFF", compression="group4")
    cases["tiff_pil_RGB_jpeg.tif"] = pil_bytes(s.im, "TIFF", compression="jpeg", quality=90)
    cases["tiff_pil_L_jpeg.tif"] = pil_bytes(Image.fromarray(s.grey), "TIFF", compression="jpeg", quality=90)
    cases["tiff_pil_RGBX.tif"] = pil_bytes(s.im.convert("RGBX"), "TIFF")
    cases["tiff_pil_I16B.tif"] = pil_bytes(Image.fromarray(s.i16.astype(np.uint16)).convert("I;16B"), "TIFF")
    cases["tiff_pil_multipage.tif"] = pil_bytes(s.im, "TIFF", save_all=True, append_images=[Image.fromarray(s.rgb[::-1])])
    return cases


def tiff_own_cases(s):
    """TIFF layouts PIL does not write: 16-bit RGB(A), associated alpha, planes, tiles, orientation, ..."""
    cases = {}
    cmap = np.concatenate([np.arange(16) * 4000 + 100, 65535 - np.arange(16) * 3000, np.arange(16) * 257])
    cases["tiff_rgb16_le.tif"] = tiff(s.r16, 2, 16)
    cases["tiff_rgb16_be_deflate.tif"] = tiff(s.r16, 2, 16, order=">", compression=8)
    cases["tiff_rgba16_unassoc.tif"] = tiff(np.dstack([s.r16, s.r16[..., :1]]), 2, 16, extra=[2])
    cases["tiff_rgba16_assoc.tif"] = tiff(np.dstack([s.r16 // 2, np.full(s.r16.shape[:2], 40000)]), 2, 16, extra=[1])
    assoc = np.dstack([s.rgb // 2, np.where(s.rgb[..., :1] > 128, 128, 255)]).astype(np.uint8)
    assoc[::4, ::3, 3] = 0
    cases["tiff_rgba_assoc.tif"] = tiff(assoc, 2, 8, extra=[1])
    cases["tiff_rgba_assoc_deflate.tif"] = tiff(assoc, 2, 8, extra=[1], compression=8)
    cases["tiff_rgbax_extra.tif"] = tiff(np.dstack([s.rgba, s.grey.T[:43, :61]]), 2, 8, extra=[2, 0])
    cases["tiff_rgba_no_extrasamples.tif"] = tiff(s.rgba, 2, 8)
    cases["tiff_planar_rgb.tif"] = tiff(s.rgb, 2, 8, planar=2)
    cases["tiff_planar_rgb_deflate.tif"] = tiff(s.rgb, 2, 8, planar=2, compression=8, rows_per_strip=10)
    cases["tiff_planar_rgba_deflate.tif"] = tiff(s.rgba, 2, 8, planar=2, extra=[2], compression=8)
    cases["tiff_tiled_rgb_deflate.tif"] = tiff(s.rgb, 2, 8, compression=8, tile=(16, 16))
    cases["tiff_tiled_l.tif"] = tiff(s.grey, 1, 8, tile=(32, 16))
    cases["tiff_strips_predictor.tif"] = tiff(s.rgb, 2, 8, compression=8, rows_per_strip=7, predictor=2)
    cases["tiff_miniswhite_8.tif"] = tiff(s.grey, 0, 8)
    cases["tiff_miniswhite_4.tif"] = tiff(s.grey >> 4, 0, 4)
    cases["tiff_grey_2.tif"] = tiff(s.grey >> 6, 1, 2)
    cases["tiff_grey_4_deflate.tif"] = tiff(s.grey >> 4, 1, 4, compression=8)
    cases["tiff_palette_4.tif"] = tiff(s.idx >> 4, 3, 4, colormap=cmap)
    cases["tiff_i16_signed.tif"] = tiff((s.i16.astype(np.int32) - 200).astype(np.int16).view(np.uint16), 1, 16,
                                        sample_format=2)
    cases["tiff_i16_miniswhite.tif"] = tiff(s.i16, 0, 16)
    cases["tiff_cmyk16.tif"] = tiff(np.asarray(s.im.convert("CMYK")).astype(np.uint16) * 257, 5, 16)
    for orientation in range(1, 9):  # PIL applies the TIFF tag (TiffImageFile.load_end), unlike EXIF in JPEG
        cases[f"tiff_orientation{orientation}.tif"] = tiff(s.rgb, 2, 8, orientation=orientation)
    cases["tiff_big_endian_rgb.tif"] = tiff(s.rgb, 2, 8, order=">", compression=8)

    cases["tiff_orientation6_ycbcr_jpeg.tif"] = pil_bytes(s.im, "TIFF", compression="jpeg", quality=90,
                                                          tiffinfo={0x0112: 6})
    cases["tiff_orientation8_planar.tif"] = tiff(s.rgb, 2, 8, planar=2, orientation=8)
    return cases


def stb_cases(s):
    """BMP, PNM and TGA."""
    cases = {}
    cases["bmp_rgb.bmp"] = pil_bytes(s.im, "BMP")
    cases["bmp_p8.bmp"] = pil_bytes(s.pal, "BMP")
    cases["bmp_l.bmp"] = pil_bytes(Image.fromarray(s.grey), "BMP")
    cases["bmp_1bit.bmp"] = pil_bytes(Image.fromarray(s.grey).convert("1"), "BMP")
    cases["bmp_rgba.bmp"] = pil_bytes(Image.fromarray(s.rgba, "RGBA"), "BMP")

    # PNM and TGA (stb_image)
    cases["ppm_rgb.ppm"] = pil_bytes(s.im, "PPM")
    cases["pgm_l.pgm"] = pil_bytes(Image.fromarray(s.grey), "PPM")
    cases["pbm_1bit.pbm"] = pil_bytes(Image.fromarray(s.grey).convert("1"), "PPM")
    cases["pgm_16bit.pgm"] = b"P5 50 30 65535\n" + s.i16.astype(">u2").tobytes()
    small = s.rgb[:9, :13]
    cases["ppm_16bit.ppm"] = b"P6\n# a comment\n13 9\n65535\n" + (small.astype(np.uint16) * 257 + 3).astype(">u2").tobytes()
    cases["pgm_maxval1000.pgm"] = b"P5 13 9 1000\n" + (small[..., 0].astype(np.uint16) * 4).astype(">u2").tobytes()
    over = small[..., 0] // 2  # 0..127 with maxval 100: values above maxval are clamped (PIL's PpmDecoder)
    cases["pgm_maxval100.pgm"] = b"P5 13 9 100 " + over.astype(np.uint8).tobytes()
    cases["ppm_maxval15.ppm"] = b"P6 13 9 15\n" + (small >> 4).astype(np.uint8).tobytes()
    text = lambda a: " ".join(str(int(v)) for v in a.reshape(-1)).encode()
    cases["pbm_plain.pbm"] = b"P1\n# plain\n13 9\n" + b"".join(
        b"".join(b"1" if v else b"0" for v in row) + b"\n" for row in (small[..., 0] > 128))
    cases["pgm_plain.pgm"] = b"P2 13 9 255\n" + text(small[..., 0]) + b"\n"
    cases["ppm_plain_maxval1023.ppm"] = b"P3 13 9 1023 # comment\n" + text(small.astype(np.int64) * 4) + b"\n"
    cases["pgm_plain_maxval4095.pgm"] = b"P2 13 9 4095\n" + text(small[..., 1].astype(np.int64) * 16) + b"\n"
    for mode, source in [("RGB", s.im), ("RGBA", Image.fromarray(s.rgba, "RGBA")), ("L", Image.fromarray(s.grey)),
                         ("P", s.pal), ("LA", Image.fromarray(np.dstack([s.grey, s.grey[::-1]]), "LA"))]:
        cases[f"tga_{mode}.tga"] = pil_bytes(source, "TGA")
        cases[f"tga_{mode}_rle.tga"] = pil_bytes(source, "TGA", compression="tga_rle")
    return cases


def make_cases():
    s = Sources()
    cases = {}
    for make in (png_cases, jpeg_cases, gif_cases, webp_cases, tiff_pil_cases, tiff_own_cases, stb_cases):
        cases.update(make(s))
    return cases


def expand2square(img, background):  # llava/mm_utils.py
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new(img.mode, (side, side), background)
    out.paste(img, (0, (side - h) // 2) if w > h else ((side - w) // 2, 0))
    return out


def clip_preprocess(img, edge, pad):
    """transformers 4.37.2 CLIPImageProcessor.preprocess (resize shortest edge, center crop, rescale,
    normalize), as bench/image_pipeline_py.py, without torch."""
    if pad:
        img = expand2square(img, tuple(int(x * 255) for x in MEAN))
    arr = np.array(img)
    h, w = arr.shape[:2]
    short, long = (w, h) if w <= h else (h, w)
    out_h, out_w = (int(edge * long / short), edge) if w <= h else (edge, int(edge * long / short))
    arr = np.array(Image.fromarray(arr).resize((out_w, out_h), resample=Image.BICUBIC, reducing_gap=None))
    top, left = (out_h - edge) // 2, (out_w - edge) // 2
    arr = arr[top:top + edge, left:left + edge]
    x = (arr * (1 / 255)).astype(np.float32)
    x = (x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1), np.float32)


def main():
    out_dir, edge = sys.argv[1], int(sys.argv[2])
    os.makedirs(os.path.join(out_dir, "ref"), exist_ok=True)
    for name, data in make_cases().items():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
    for name in sorted(os.listdir(out_dir)):  # and every file cut at 60%: PIL's verdict on truncated data
        path = os.path.join(out_dir, name)
        # Not plain PNM: PIL 9.4's PpmPlainDecoder pads a file cut inside a number by repeating that partial
        # number to the end (its half_token is never cleared); we call such a file truncated.
        if os.path.isfile(path) and "plain" not in name:
            with open(path, "rb") as f:
                data = f.read()
            with open(os.path.join(out_dir, "cut60_" + name), "wb") as f:
                f.write(data[: len(data) * 6 // 10])
    manifest = {"pillow": PIL.__version__, "edge": edge, "cases": []}
    for name in sorted(os.listdir(out_dir)):
        path = os.path.join(out_dir, name)
        if not os.path.isfile(path) or name == "manifest.json":
            continue
        case = {"file": name}
        try:
            with Image.open(path) as opened:
                case["mode"] = opened.mode
                rgb = opened.convert("RGB")
            case.update(ok=True, width=rgb.width, height=rgb.height)
            np.asarray(rgb, np.uint8).tofile(os.path.join(out_dir, "ref", name + ".rgb"))
            for pad in (False, True):
                clip_preprocess(rgb, edge, pad).tofile(os.path.join(out_dir, "ref", name + (".pad" if pad else ".square")))
        except Exception as e:  # noqa: BLE001 - PIL's refusal is part of the reference
            case.update(ok=False, error=f"{type(e).__name__}: {e}")
        manifest["cases"].append(case)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
