#!/usr/bin/python3
"""Benchmark 1, Python side: the image path of LLaVA's training data loader, images/s on one core, and
the pixel comparison against bench_image's dumps.

The path is LLaVA's LazySupervisedDataset.__getitem__ (llava/train/train.py) per image:
    image = Image.open(path | BytesIO(base64.b64decode(s))).convert('RGB')
    if image_aspect_ratio == 'pad': image = expand2square(image, tuple(int(x*255) for x in processor.image_mean))
    image = processor.preprocess(image, return_tensors='pt')['pixel_values'][0]
with processor = transformers 4.37.2 CLIPImageProcessor (openai/clip-vit-large-patch14-336). transformers
is not installed here (not a Debian package), so ClipImageProcessor below re-does its preprocess() step by
step with the same PIL / numpy / torch calls (convert_to_rgb, to_numpy_array, resize via
to_pil_image + PIL resize(BICUBIC, reducing_gap=None) + np.array, center_crop in CHW, rescale
(image * scale).astype(float32), normalize (image - mean) / std, channels first, BatchFeature -> torch.tensor).
Validation/logging code of transformers that does no pixel work is left out (it would only make Python slower).

usage:
  image_pipeline_py.py bench MANIFEST [--seconds S] [--rounds R]      -> JSON on stdout
  image_pipeline_py.py compare MANIFEST CPP_DUMP_DIR                   -> JSON on stdout
"""
import argparse
import base64
import json
import os
import statistics
import sys
import time
from io import BytesIO

import numpy as np
import torch
from PIL import Image


class ClipImageProcessor:
    """transformers 4.37.2 CLIPImageProcessor.preprocess for one PIL image (the pixel work only)."""

    def __init__(self, shortest_edge=336, crop=336):
        self.shortest_edge, self.crop = shortest_edge, crop
        self.resample = Image.BICUBIC  # 3
        self.rescale_factor = 1 / 255
        self.image_mean = [0.48145466, 0.4578275, 0.40821073]
        self.image_std = [0.26862954, 0.26130258, 0.27577711]

    def preprocess(self, image):
        image = image.convert("RGB")          # convert_to_rgb (a copy when already RGB, as in PIL)
        image = np.array(image)               # to_numpy_array (HWC uint8); channel dim inferred LAST
        # resize: get_resize_output_image_size(default_to_square=False) + image_transforms.resize
        h, w = image.shape[:2]
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
        out_h, out_w = (new_long, new_short) if w <= h else (new_short, new_long)
        pil = Image.fromarray(image.astype(np.uint8))  # to_pil_image (uint8: no rescale; astype copies)
        image = np.array(pil.resize((out_w, out_h), resample=self.resample, reducing_gap=None))
        # center_crop: to CHW, slice, back to the input format (HWC)
        image = image.transpose(2, 0, 1)
        top, left = (out_h - self.crop) // 2, (out_w - self.crop) // 2
        image = image[..., top:top + self.crop, left:left + self.crop].transpose(1, 2, 0)
        # rescale (float64 product, then float32) and normalize (float32)
        image = (image * self.rescale_factor).astype(np.float32)
        mean = np.array(self.image_mean, dtype=image.dtype)
        std = np.array(self.image_std, dtype=image.dtype)
        image = (image - mean) / std
        image = image.transpose(2, 0, 1)      # to_channel_dimension_format(FIRST)
        # BatchFeature(return_tensors='pt'): list of arrays -> np.array -> torch.tensor
        return {"pixel_values": torch.tensor(np.array([image]))}


def expand2square(pil_img, background_color):  # llava/mm_utils.py
    width, height = pil_img.size
    if width == height:
        return pil_img
    elif width > height:
        result = Image.new(pil_img.mode, (width, width), background_color)
        result.paste(pil_img, (0, (width - height) // 2))
        return result
    else:
        result = Image.new(pil_img.mode, (height, height), background_color)
        result.paste(pil_img, ((height - width) // 2, 0))
        return result


PROCESSOR = ClipImageProcessor()


def open_image(kind, item):
    if kind == "base64":
        return Image.open(BytesIO(base64.b64decode(item))).convert("RGB")
    return Image.open(item).convert("RGB")


def llava_image(kind, item, pad):
    image = open_image(kind, item)
    if pad:
        image = expand2square(image, tuple(int(x * 255) for x in PROCESSOR.image_mean))
    return PROCESSOR.preprocess(image)["pixel_values"][0]


def bench(manifest, seconds, rounds):
    """images_per_s = the best round (least disturbed by other load); median and all rounds kept."""
    results = []
    for case in manifest["cases"]:
        for pad in (False, True):
            for item in case["items"]:  # warm-up
                llava_image(case["kind"], item, pad)
            ips = []
            for _ in range(rounds):
                n, t0 = 0, time.perf_counter()
                while True:
                    for item in case["items"]:
                        llava_image(case["kind"], item, pad)
                    n += len(case["items"])
                    el = time.perf_counter() - t0
                    if el >= seconds:
                        break
                ips.append(n / el)
            row = {"case": case["name"], "pad": pad, "decode": "pil", "images_per_s": max(ips),
                   "median_images_per_s": statistics.median(ips), "round_images_per_s": ips}
            if not pad:
                row["breakdown_ms"] = breakdown(case["kind"], case["items"], max(1, 32 // len(case["items"])))
            results.append(row)
    return {"results": results}


def breakdown(kind, items, reps):
    """ms per image by stage (square mode), the same stages as bench_image's breakdown."""
    p = PROCESSOR
    t = dict(read_bytes=0.0, decode=0.0, resize=0.0, crop=0.0, rescale_normalize=0.0)
    for _ in range(reps):
        for item in items:
            t0 = time.perf_counter()
            src = BytesIO(base64.b64decode(item)) if kind == "base64" else open(item, "rb")
            t1 = time.perf_counter()
            image = Image.open(src).convert("RGB")
            t2 = time.perf_counter()
            arr = np.array(image.convert("RGB"))
            h, w = arr.shape[:2]
            short, long = (w, h) if w <= h else (h, w)
            new_long = int(p.shortest_edge * long / short)
            out_h, out_w = (new_long, p.shortest_edge) if w <= h else (p.shortest_edge, new_long)
            arr = np.array(Image.fromarray(arr.astype(np.uint8)).resize((out_w, out_h), resample=p.resample,
                                                                       reducing_gap=None))
            t3 = time.perf_counter()
            arr = arr.transpose(2, 0, 1)
            top, left = (out_h - p.crop) // 2, (out_w - p.crop) // 2
            arr = arr[..., top:top + p.crop, left:left + p.crop].transpose(1, 2, 0)
            t4 = time.perf_counter()
            arr = (arr * p.rescale_factor).astype(np.float32)
            arr = (arr - np.array(p.image_mean, dtype=arr.dtype)) / np.array(p.image_std, dtype=arr.dtype)
            torch.tensor(np.array([arr.transpose(2, 0, 1)]))
            t5 = time.perf_counter()
            if kind != "base64":
                src.close()
            for k, a, b in (("read_bytes", t0, t1), ("decode", t1, t2), ("resize", t2, t3), ("crop", t3, t4),
                            ("rescale_normalize", t4, t5)):
                t[k] += b - a
    n = reps * len(items)
    return {k: 1e3 * v / n for k, v in t.items()}


def compare(manifest, dump_dir):
    """Per case / pad / decode mode: pixel diffs (normalized units) and decoded-RGB diffs (levels)."""
    cases = {c["name"]: c for c in manifest["cases"]}
    with open(os.path.join(dump_dir, "dumps.json")) as f:
        dumps = json.load(f)
    groups = {}
    for d in dumps:
        case = cases[d["case"]]
        item = case["items"][d["index"]]
        ref = llava_image(case["kind"], item, d["pad"]).numpy()
        got = np.fromfile(os.path.join(dump_dir, d["pixels"]), dtype=np.float32).reshape(d["shape"])
        diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
        g = groups.setdefault((d["case"], d["pad"], d["decode"]),
                              {"case": d["case"], "pad": d["pad"], "decode": d["decode"], "sum": 0.0, "n": 0,
                               "max_abs_diff": 0.0, "rgb_max_level_diff": None, "rgb_mean_level_diff": None})
        g["sum"] += float(diff.sum())
        g["n"] += diff.size
        g["max_abs_diff"] = max(g["max_abs_diff"], float(diff.max()))
        if "rgb" in d:
            rgb_ref = np.asarray(open_image(case["kind"], item)).astype(np.int32)
            rgb = np.fromfile(os.path.join(dump_dir, d["rgb"]), dtype=np.uint8).reshape(d["rgb_shape"]).astype(np.int32)
            if rgb.shape == rgb_ref.shape:
                lv = np.abs(rgb - rgb_ref)
                g["rgb_max_level_diff"] = max(g["rgb_max_level_diff"] or 0, int(lv.max()))
                g["rgb_mean_level_diff"] = max(g["rgb_mean_level_diff"] or 0.0, float(lv.mean()))
            else:
                g["rgb_decoded_size"] = f"{rgb.shape[1]}x{rgb.shape[0]} (PIL {rgb_ref.shape[1]}x{rgb_ref.shape[0]})"
    out = []
    for g in groups.values():
        g["mean_abs_diff"] = g.pop("sum") / g.pop("n")
        g["within_tolerance"] = g["mean_abs_diff"] <= 0.01 and g["max_abs_diff"] <= 0.15 and \
            (g["rgb_max_level_diff"] is None or g["rgb_max_level_diff"] <= 3)
        out.append(g)
    return {"comparisons": out}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["bench", "compare"])
    ap.add_argument("manifest")
    ap.add_argument("dump_dir", nargs="?")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)  # one core: the loader's per-image work runs on one thread
    with open(a.manifest) as f:
        manifest = json.load(f)
    if a.mode == "bench":
        res = bench(manifest, a.seconds, a.rounds)
    else:
        res = compare(manifest, a.dump_dir)
    res["versions"] = {"python": sys.version.split()[0], "pillow": Image.__version__, "numpy": np.__version__,
                       "torch": torch.__version__}
    json.dump(res, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
