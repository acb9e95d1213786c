#!/usr/bin/python3
"""Benchmark 1 inputs: deterministic synthetic photos (smooth gradients + shapes + band-limited texture +
sensor-like noise, so JPEG sizes are COCO-like), written as

  jpeg_640x480_base64   8 JPEGs (quality 90, 4:2:0), 640x480, kept only as base64 strings (as in our
                        multi-image data sets: "images": [<base64>, ...])
  jpeg_2000x1500_file   2 JPEGs (quality 92), 2000x1500, files
  png_640x480_file      4 PNGs, 640x480 files: 3 RGB + 1 RGBA (alpha dropped by convert('RGB'))

and OUT/manifest.json for bench_image and image_pipeline_py.py.

usage: /usr/bin/python3 bench/make_images.py OUT_DIR
"""
import base64
import io
import json
import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def synth(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    for c in range(3):
        a, b = rng.uniform(-1, 1, 2)
        fx, fy, ph = rng.uniform(0.5, 3), rng.uniform(0.5, 3), rng.uniform(0, 6.28)
        img[..., c] = 128 + 70 * (a * x / w + b * y / h) + 35 * np.sin(6.283 * (fx * x / w + fy * y / h) + ph)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    # Objects with hard edges (what makes real photos expensive to compress), slightly defocused.
    draw = ImageDraw.Draw(im)
    for _ in range(14):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        x1, y1 = x0 + rng.uniform(0.05, 0.35) * w, y0 + rng.uniform(0.05, 0.35) * h
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.uniform() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=color)
    im = im.filter(ImageFilter.GaussianBlur(radius=1.0 * max(1, w // 1000)))
    arr = np.asarray(im).astype(np.float32)
    # Band-limited texture (foliage/fabric-like): small noise upsampled bicubically, and sensor noise.
    for scale, amp in ((2, 14), (8, 18), (32, 30)):
        small = rng.normal(0, 1, (h // scale + 2, w // scale + 2, 3)).astype(np.float32)
        arr += amp * np.stack([np.asarray(Image.fromarray(small[..., c], mode="F").resize((w, h), Image.BICUBIC))
                               for c in range(3)], axis=-1)
    arr += rng.normal(0, 4.0, (h, w, 3)).astype(np.float32)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))


def jpeg_bytes(im, quality):
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)  # Pillow default subsampling 4:2:0
    return buf.getvalue()


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    cases = []

    b64 = []
    for i in range(8):
        data = jpeg_bytes(synth(640, 480, 100 + i), 90)
        b64.append(base64.b64encode(data).decode("ascii"))
    cases.append({"name": "jpeg_640x480_base64", "kind": "base64", "items": b64, "decode_modes": ["exact"],
                  "bytes_per_image": int(np.mean([len(base64.b64decode(s)) for s in b64]))})

    files = []
    for i in range(2):
        path = os.path.join(out, f"large_{i}.jpg")
        with open(path, "wb") as f:
            f.write(jpeg_bytes(synth(2000, 1500, 200 + i), 92))
        files.append(os.path.abspath(path))
    cases.append({"name": "jpeg_2000x1500_file", "kind": "file", "items": files,
                  "decode_modes": ["exact", "trainer"],
                  "bytes_per_image": int(np.mean([os.path.getsize(p) for p in files]))})

    files = []
    for i in range(4):
        im = synth(640, 480, 300 + i)
        if i == 3:
            alpha = Image.fromarray(np.tile(np.linspace(40, 255, 640, dtype=np.float32).astype(np.uint8), (480, 1)))
            im = im.convert("RGBA")
            im.putalpha(alpha)
        path = os.path.join(out, f"png_{i}.png")
        im.save(path, format="PNG")
        files.append(os.path.abspath(path))
    cases.append({"name": "png_640x480_file", "kind": "file", "items": files, "decode_modes": ["exact"],
                  "bytes_per_image": int(np.mean([os.path.getsize(p) for p in files]))})

    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump({"cases": cases}, f)
    for c in cases:
        print(f"{c['name']}: {len(c['items'])} images, {c['bytes_per_image'] / 1024:.0f} KiB each", file=sys.stderr)


if __name__ == "__main__":
    main()
