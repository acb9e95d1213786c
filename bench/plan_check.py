#!/usr/bin/python3
"""Benchmark 7: `llava-train plan`'s per-rank memory estimate against the peak memory of a real run.

  plan_check.py LLAVA_TRAIN MODEL_DIR WORK_DIR [--batch B] [--seq T] [--steps N]

On CPU (fp32, one process, ZeRO 0) for a small model, with and without --gradient_checkpointing:
  measured  = peak RSS of `llava-train train` (B samples of T tokens each, N steps)
            - peak RSS of `llava-train check-data` on the same data (the process without model, optimizer
              and activations: libtorch, tokenizer, data index)
  predicted = plan's total for the same settings - its 1 GiB runtime allowance (CUDA context and allocator
              slack, which a CPU run does not have)
Every sample is the same text-only conversation of just under --seq positions (its length T is measured with
`llava-train preprocess`), so each micro-batch is exactly B x T positions, the shape plan assumes. Peak RSS comes from GNU time's %M (kilobytes). Prints one JSON object.
"""
import argparse
import json
import os
import re
import subprocess
import sys

GIB = 1024 ** 3


def peak_rss(cmd, ok_codes=(0,)):
    r = subprocess.run(["/usr/bin/time", "-f", "PEAK_RSS_KB %M"] + cmd, capture_output=True, text=True)
    m = re.search(r"PEAK_RSS_KB (\d+)", r.stderr)
    if r.returncode not in ok_codes or not m:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return int(m[1]) * 1024


def write_data(path, n, words, n_words):
    # Human: a short question; gpt: a long answer (every sample the same, so a batch has no padding).
    answer = " ".join(words[i % len(words)] for i in range(n_words))
    data = [{"id": f"long_{i}", "conversations": [{"from": "human", "value": f"Describe item {i}."},
                                                  {"from": "gpt", "value": answer}]} for i in range(n)]
    with open(path, "w") as f:
        json.dump(data, f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("llava_train")
    ap.add_argument("model_dir")
    ap.add_argument("work")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=2)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    data = os.path.join(a.work, "long_text.json")
    lt, model = a.llava_train, a.model_dir
    words = ["red", "blue", "green", "yellow", "circle", "square", "triangle", "image"]

    def sample_length(n_words):  # positions of one sample, from `llava-train preprocess` (the trainer's tokens)
        write_data(data, a.batch * a.steps, words, n_words)
        pre = os.path.join(a.work, "pre.jsonl")
        subprocess.run([lt, "preprocess", "--model_name_or_path", model, "--data_path", data, "--output", pre,
                        "--model_max_length", "100000"], capture_output=True, check=True)
        with open(pre) as f:
            return json.loads(f.readline())["length_with_images"]

    # Scale the answer until a sample is just under T positions; plan then gets T = that exact length.
    n_words = 100
    for _ in range(3):
        n_words = max(1, int(n_words * a.seq / sample_length(n_words) * 0.98))
    seq = sample_length(n_words)
    common = ["--model_name_or_path", model, "--data_path", data, "--model_max_length", str(seq)]
    baseline = peak_rss([lt, "check-data"] + common)
    rows = []
    for ckpt in ("false", "true"):
        out = os.path.join(a.work, f"run-ckpt-{ckpt}")
        measured = peak_rss([lt, "train"] + common + [
            "--per_device_train_batch_size", str(a.batch), "--max_steps", str(a.steps), "--shuffle", "false",
            "--gradient_checkpointing", ckpt, "--learning_rate", "1e-5", "--save_steps", "100000",
            "--logging_steps", "1000", "--dataloader_num_workers", "1", "--output_dir", out])
        with open(os.path.join(out, "metrics.jsonl")) as f:
            steps = [json.loads(line) for line in f if line.strip()]
        tokens = max(s["num_tokens"] for s in steps)
        plan = subprocess.run([lt, "plan"] + common + ["--per_device_train_batch_size", str(a.batch),
                                                       "--world_size", "1", "--gradient_checkpointing", ckpt],
                              capture_output=True, text=True, check=True).stdout
        est = json.loads(re.search(r"this config, bytes: (\{.*\})", plan)[1])
        predicted = est["total"] - GIB
        rows.append({"gradient_checkpointing": ckpt == "true", "tokens_per_micro_batch": tokens,
                     "measured_gib": (measured - baseline) / GIB, "predicted_gib": predicted / GIB,
                     "predicted_over_measured": predicted / (measured - baseline),
                     "plan_parts_gib": {k: v / GIB for k, v in est.items()},
                     "peak_rss_train_gib": measured / GIB})
    print(json.dumps({"status": "ok", "model": model, "batch": a.batch, "seq": seq, "steps": a.steps,
                      "baseline_peak_rss_gib": baseline / GIB, "runs": rows}))


if __name__ == "__main__":
    sys.exit(main())
