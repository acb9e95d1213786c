#!/usr/bin/python3
"""Data sets at real scale for benchmark 8 (data start-up: index time and peak RSS), generated, never committed:

  llava_mix OUT_DIR [--n 665000]   OUT_DIR/mix665k.json: a LLaVA-1.5-mix-665K-like JSON list (90% of the samples
                                   name an image path, 1-8 rounds of human/gpt turns, ~1.07 GB at 665,000 samples)
                                   and OUT_DIR/images/<source>/NNNN.jpg, the 16 small JPEGs per source folder the
                                   paths cycle through (so the first training step finds its images)
  multi_b64 OUT_DIR [--n 4400]     OUT_DIR/multi_b64.json: samples of 3 base64 JPEGs each in the multi-image
                                   fork's `images` list (~1.5 GB at 4,400 samples)
  one_b64 OUT_DIR [--n 200]        OUT_DIR/one_b64.json: samples of one base64 640x480 JPEG (quality 90, as
      [--conversations DEMO.json]  benchmark 1's) for bench_example; the turns are those of DEMO.json's samples
                                   (`llava-train demo-data`, its markers moved to the front), else two
                                   generated rounds

The files are written one sample at a time (the generator's memory does not grow with the data set).
Deterministic for a seed. usage: /usr/bin/python3 bench/make_data_scale.py KIND OUT_DIR [--n N] [--seed S]
"""
import argparse
import base64
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_images import jpeg_bytes, synth  # noqa: E402

WORDS = ("the a of in on with is are what where which how many color shape person man woman table car street dog "
         "cat sitting standing holding near behind front image picture scene shows there two three small large red "
         "blue green white black wooden building sky water food plate people group room window light could would "
         "describe detail answer question brief provide visible background foreground left right top bottom").split()
SOURCES = ("coco/train2017", "gqa/images", "ocr_vqa/images", "textvqa/train_images", "vg/VG_100K")
IMAGES_PER_SOURCE = 16


def text(rng, lo, hi):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def mix_sample(rng, i):
    rounds = rng.choice((1, 1, 1, 2, 2, 3, 4, 5, 6, 8))
    with_image = rng.random() < 0.9
    conv = []
    for r in range(rounds):
        q = text(rng, 6, 24) + "?"
        if r == 0 and with_image:
            q = "<image>\n" + q if rng.random() < 0.7 else q + "\n<image>"
        conv.append({"from": "human", "value": q})
        conv.append({"from": "gpt", "value": text(rng, 4, 100) + "."})
    s = {"id": f"{i:012d}" if rng.random() < 0.8 else f"{rng.choice(('gqa', 'ocr', 'sharegpt'))}_{i}"}
    if with_image:
        s["image"] = f"{rng.choice(SOURCES)}/{rng.randrange(IMAGES_PER_SOURCE):04d}.jpg"
    s["conversations"] = conv
    return s


def write_list(path, samples):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("[\n")
        for k, s in enumerate(samples):
            f.write((",\n" if k else "") + json.dumps(s))
        f.write("\n]\n")
    os.replace(tmp, path)
    print(f"make_data_scale: {path}: {os.path.getsize(path) / 1e9:.2f} GB", file=sys.stderr)


def llava_mix(out, n, seed):
    for k, src in enumerate(SOURCES):
        folder = os.path.join(out, "images", src)
        os.makedirs(folder, exist_ok=True)
        for j in range(IMAGES_PER_SOURCE):
            with open(os.path.join(folder, f"{j:04d}.jpg"), "wb") as f:
                f.write(jpeg_bytes(synth(160, 120, 1000 + k * 100 + j), 85))
    rng = random.Random(seed)
    write_list(os.path.join(out, "mix665k.json"), (mix_sample(rng, i) for i in range(n)))


def multi_b64(out, n, seed, per_sample=3):
    os.makedirs(out, exist_ok=True)
    # 24 distinct 640x480 JPEGs (quality 85, base64 ~113 KB each), reused across samples
    pool = [base64.b64encode(jpeg_bytes(synth(640, 480, 2000 + j), 85)).decode("ascii") for j in range(24)]
    rng = random.Random(seed)

    def samples():
        for i in range(n):
            q = " ".join("<image>" for _ in range(per_sample)) + "\n" + text(rng, 8, 30) + "?"
            yield {"id": f"multi_{i}", "images": [rng.choice(pool) for _ in range(per_sample)],
                   "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": text(rng, 10, 80) + "."}]}

    write_list(os.path.join(out, "multi_b64.json"), samples())


def one_b64(out, n, seed, conversations=None):
    os.makedirs(out, exist_ok=True)
    pool = [base64.b64encode(jpeg_bytes(synth(640, 480, 100 + j), 90)).decode("ascii") for j in range(8)]
    rng = random.Random(seed)
    demo = json.load(open(conversations)) if conversations else None

    def turns(i):
        if demo is None:
            return [{"from": "human", "value": "<image>\n" + text(rng, 6, 12) + "?"}, {"from": "gpt", "value": text(rng, 2, 6) + "."},
                    {"from": "human", "value": text(rng, 6, 12) + "?"}, {"from": "gpt", "value": text(rng, 1, 4) + "."}]
        conv = [dict(t) for t in demo[i % len(demo)]["conversations"]]
        for t in conv:
            t["value"] = t["value"].replace("<image>\n", "").replace("<image>", "")
        conv[0]["value"] = "<image>\n" + conv[0]["value"]
        return conv

    def samples():
        for i in range(n):
            yield {"id": f"one_{i}", "images": [pool[i % len(pool)]], "conversations": turns(i)}

    write_list(os.path.join(out, "one_b64.json"), samples())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=("llava_mix", "multi_b64", "one_b64"))
    ap.add_argument("out")
    ap.add_argument("--n", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--conversations")
    a = ap.parse_args()
    if a.kind == "llava_mix":
        llava_mix(a.out, a.n or 665000, a.seed)
    elif a.kind == "multi_b64":
        multi_b64(a.out, a.n or 4400, a.seed)
    else:
        one_b64(a.out, a.n or 200, a.seed, a.conversations)


if __name__ == "__main__":
    main()
