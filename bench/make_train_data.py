#!/usr/bin/python3
"""Data sets for benchmarks 2 and 3, from `llava-train demo-data` output (its data.json, images/ and
tokenizer/ are what a fresh clone has):

  OUT/data_coco.json     every demo sample, each image replaced by one of 16 COCO-like 640x480 JPEGs
                         (OUT/images/coco_K.jpg), for the loader-vs-step benchmark (2): real decode and
                         resize work per image instead of the demo's 56x56 PNGs
  OUT/data_demo_bB.json  the first B demo samples (B = 4, 6, 8), image paths unchanged (relative to the demo's
                         images/): a data set that is exactly one batch, so with --shuffle false every
                         training step of llava-train sees the batch the Python reference repeats (3)

usage: /usr/bin/python3 bench/make_train_data.py DEMO_DIR OUT_DIR
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_images import jpeg_bytes, synth  # noqa: E402


def main():
    demo, out = sys.argv[1], sys.argv[2]
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    data_path = os.path.join(demo, "data.json")
    if not os.path.exists(data_path):
        data_path = os.path.join(demo, "train.json")
    with open(data_path) as f:
        data = json.load(f)
    n_jpegs = 16
    for k in range(n_jpegs):
        with open(os.path.join(out, "images", f"coco_{k}.jpg"), "wb") as f:
            f.write(jpeg_bytes(synth(640, 480, 500 + k), 90))
    coco, k = [], 0
    for s in data:
        s = dict(s)
        imgs = s.get("image")
        if imgs is not None:
            n = len(imgs) if isinstance(imgs, list) else 1
            s["image"] = [f"coco_{(k + i) % n_jpegs}.jpg" for i in range(n)]
            k += n
        coco.append(s)
    with open(os.path.join(out, "data_coco.json"), "w") as f:
        json.dump(coco, f)
    for b in (4, 6, 8):
        with open(os.path.join(out, f"data_demo_b{b}.json"), "w") as f:
            json.dump(data[:b], f)
    print(f"make_train_data: {len(data)} samples from {data_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
