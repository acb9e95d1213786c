#!/usr/bin/python3
"""Benchmark 4 input: a synthetic length mix shaped like LLaVA-1.5's 665K instruction mix, one sample per
line: `modality_length positions category images`, where modality_length is what LLaVA's sampler sorts by
(whitespace word count of all turns, + with images, - text-only; llava-reference.md §8) and positions is
the sequence the model computes (text tokens + 576 rows per image - the <image> token), capped at 2048
(--model_max_length; LLaVA truncates there).

Categories (shares of the 665K mix, by the paper's table; multi-image is our extension):
  vqa_short     52 %  VQAv2 / GQA / OKVQA / A-OKVQA / OCR-VQA / RefCOCO / VG: 1 image, 1-12 short QA
                      turns (LLaVA-1.5 merges the questions of one image into one conversation)
  instruct      22 %  LLaVA-Instruct-158K: 1 image, conversation / detailed description / reasoning,
                      1-5 turns with 20-250-word answers
  caption        4 %  TextCaps: 1 image, one short caption
  multi_image   12 %  2-4 images (our multi-image data), 1-4 turns, 10-120-word answers
  sharegpt      10 %  text-only ShareGPT: 1-12 turns, 20-500-word answers (heavy tail)

Tokens per word ~ 1.3 (LLaMA SentencePiece on English), template overhead: vicuna_v1 system prompt 34
tokens + ~7 per round ("USER: ", " ASSISTANT: ", "</s>").

usage: /usr/bin/python3 bench/length_mix.py OUT_FILE [--n 20000] [--seed 0] [--no_multi_image]
"""
import argparse
import collections
import numpy as np

SHARES = {"vqa_short": 0.52, "instruct": 0.22, "caption": 0.04, "multi_image": 0.12, "sharegpt": 0.10}
IMAGE_ROWS = 576
MAX_LEN = 2048


def sample(cat, rng):
    """-> (n_images, list of (question_words, answer_words))"""
    lognorm = lambda mu, sigma, lo, hi: int(np.clip(rng.lognormal(np.log(mu), sigma), lo, hi))
    if cat == "vqa_short":
        turns = int(rng.choice(np.arange(1, 13), p=np.array([30, 12, 10, 9, 8, 7, 6, 5, 4, 3, 3, 3]) / 100))
        return 1, [(lognorm(9, 0.35, 3, 30), lognorm(2, 0.6, 1, 15)) for _ in range(turns)]
    if cat == "instruct":
        turns = int(rng.choice([1, 2, 3, 4, 5], p=[0.55, 0.15, 0.12, 0.1, 0.08]))
        return 1, [(lognorm(12, 0.4, 4, 50), lognorm(70, 0.6, 15, 260)) for _ in range(turns)]
    if cat == "caption":
        return 1, [(lognorm(10, 0.2, 5, 20), lognorm(12, 0.4, 4, 40))]
    if cat == "multi_image":
        n = int(rng.choice([2, 3, 4], p=[0.6, 0.3, 0.1]))
        turns = int(rng.choice([1, 2, 3, 4], p=[0.5, 0.25, 0.15, 0.1]))
        return n, [(lognorm(14, 0.4, 5, 60), lognorm(30, 0.8, 2, 150)) for _ in range(turns)]
    turns = int(rng.choice(np.arange(1, 13), p=np.array([35, 20, 12, 9, 6, 5, 3, 3, 2, 2, 2, 1]) / 100))
    return 0, [(lognorm(25, 0.9, 2, 400), lognorm(150, 0.8, 10, 700)) for _ in range(turns)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no_multi_image", action="store_true", help="LLaVA-1.5's own mix: no multi-image samples")
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    if a.no_multi_image:
        SHARES.pop("multi_image")
        total = sum(SHARES.values())
        for k in SHARES:
            SHARES[k] /= total
    cats = list(SHARES)
    counts = collections.Counter()
    with open(a.out, "w") as f:
        for c in rng.choice(cats, size=a.n, p=[SHARES[c] for c in cats]):
            n_img, turns = sample(c, rng)
            words = sum(q + a_ for q, a_ in turns) + n_img  # "<image>" counts as a word in LLaVA's split()
            tokens = 34 + sum(int(round(1.3 * (q + a_))) + 7 for q, a_ in turns) + n_img * 2
            positions = min(MAX_LEN, tokens + n_img * (IMAGE_ROWS - 1))
            f.write(f"{words if n_img else -words} {positions} {c} {n_img}\n")
            counts[c] += 1
    print(dict(counts))


if __name__ == "__main__":
    main()
