#!/usr/bin/python3
"""Benchmark 3, Python side: one LLaVA fine-tuning step (forward, backward, grad-norm clip 1.0, AdamW) in
plain PyTorch (bench/llava_ref.py), float32 on CPU, and its correctness check against the fixtures.

  train_step_py.py check FIXTURE_DIR
      per-sample eval losses vs expected/samples.json (abs 1e-4), and the 6-step finetune trajectory vs
      expected/train_finetune.json (loss abs 2e-3, grad_norm rel 1e-3) -> JSON on stdout
  train_step_py.py bench MODEL_DIR (--fixture FIXTURE_DIR | --preprocessed JSONL --data_path JSON --image_folder DIR)
                   [--batch_size B] [--steps N] [--warmup W] [--threads T]
      the first B samples (file order, as --shuffle false) as one batch; W untimed + N timed steps ->
      JSON: tokens/s (real merged positions per second), step seconds (median), first-step loss.

The batch: --fixture takes input_ids/labels from expected/samples.json and pixels from
expected/pixel_values.safetensors; --preprocessed takes input_ids/labels from `llava-train preprocess`
(the same tokenization the trainer uses) and computes pixels with the LLaVA Python image path
(bench/image_pipeline_py.py) from data.json, with the model dir's preprocessor_config.json.
"""
import argparse
import base64
import json
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llava_ref as L  # noqa: E402


def fixture_samples(fixture):
    with open(os.path.join(fixture, "expected", "samples.json")) as f:
        samples = json.load(f)
    return samples["samples"] if isinstance(samples, dict) else samples


def fixture_batch(fixture, indices):
    samples = fixture_samples(fixture)
    px = L.load_safetensors(os.path.join(fixture, "expected", "pixel_values.safetensors"))
    ids, labels, pixels, expected = [], [], [], []
    for i in indices:
        s = samples[i]
        ids.append(torch.tensor(s["input_ids"], dtype=torch.long))
        labels.append(torch.tensor(s["labels"], dtype=torch.long))
        if f"sample{i}.pixel_values" in px:
            pixels.append(px[f"sample{i}.pixel_values"])
        expected.append(s.get("loss"))
    pv = torch.cat(pixels) if pixels else None
    return ids, labels, pv, expected


def preprocessed_batch(model_dir, jsonl, data_path, image_folder, n, pad):
    import image_pipeline_py as ip
    with open(os.path.join(model_dir, "preprocessor_config.json")) as f:
        pc = json.load(f)
    size = pc["size"]["shortest_edge"] if isinstance(pc["size"], dict) else pc["size"]
    crop = pc["crop_size"]["height"] if isinstance(pc["crop_size"], dict) else pc["crop_size"]
    proc = ip.ClipImageProcessor(size, crop)
    with open(data_path) as f:
        data = json.load(f)
    rows = []
    with open(jsonl) as f:
        for line in f:
            r = json.loads(line)
            if r.get("status") == "ok":
                rows.append(r)
            if len(rows) == n:
                break
    ids, labels, pixels = [], [], []
    for r in rows:
        ids.append(torch.tensor(r["input_ids"], dtype=torch.long))
        labels.append(torch.tensor(r["labels"], dtype=torch.long))
        s = data[r["index"]]
        refs = []
        for key, kind in (("image", "file"), ("images", "base64")):
            v = s.get(key)
            if v is None:
                continue
            for item in (v if isinstance(v, list) else [v]):
                refs.append((kind, os.path.join(image_folder, item) if kind == "file" else item))
        for kind, item in refs:
            from PIL import Image
            from io import BytesIO
            im = Image.open(BytesIO(base64.b64decode(item)) if kind == "base64" else item).convert("RGB")
            if pad:
                im = ip.expand2square(im, tuple(int(x * 255) for x in proc.image_mean))
            pixels.append(proc.preprocess(im)["pixel_values"][0])
    return ids, labels, (torch.stack(pixels) if pixels else None)


def cosine_lr(base, step0, total, warmup):  # get_cosine_schedule_with_warmup, step0 = 0-based
    if step0 < warmup:
        return base * step0 / max(1, warmup)
    progress = (step0 - warmup) / max(1, total - warmup)
    return base * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def train_step(model, opt, params, batch, max_grad_norm=1.0, bf16=False):
    ids, labels, pv = batch
    opt.zero_grad(set_to_none=True)
    # bf16 as HF Trainer's --bf16 does it: autocast over fp32 weights (fp32 gradients and AdamW states)
    with torch.autocast(device_type=ids[0].device.type, dtype=torch.bfloat16, enabled=bf16):
        loss, info = model(ids, labels, pv)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    opt.step()
    return float(loss), float(grad_norm), info


def cmd_check(a):
    fixture = a.target
    model = L.Llava.from_dir(fixture)
    model.eval()
    n = len(fixture_samples(fixture))
    per_sample = []
    with torch.no_grad():
        for i in range(n):
            ids, labels, pv, exp = fixture_batch(fixture, [i])
            loss, _ = model(ids, labels, pv)
            per_sample.append({"sample": i, "loss": float(loss), "expected": exp[0],
                               "abs_diff": abs(float(loss) - exp[0])})
    losses_ok = all(s["abs_diff"] <= 1e-4 for s in per_sample)

    traj = None
    tf = os.path.join(fixture, "expected", "train_finetune.json")
    if os.path.exists(tf):
        with open(tf) as f:
            ref = json.load(f)
        model = L.Llava.from_dir(fixture)
        model.train()
        params = L.trainable_parameters(model, "finetune")
        opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        steps = ref["steps"]
        total = len(steps)
        rows = []
        for k, st in enumerate(steps):
            for g in opt.param_groups:
                g["lr"] = cosine_lr(1e-3, k, total, 1)
            batch = fixture_batch(fixture, st["batch_sample_indices"])[:3]
            loss, gn, _ = train_step(model, opt, params, batch)
            rows.append({"step": st["step"], "loss": loss, "expected_loss": st["loss"], "grad_norm": gn,
                         "expected_grad_norm": st["grad_norm"]})
        traj = {"steps": rows,
                "max_loss_abs_diff": max(abs(r["loss"] - r["expected_loss"]) for r in rows),
                "max_grad_norm_rel_diff": max(abs(r["grad_norm"] - r["expected_grad_norm"]) / r["expected_grad_norm"]
                                              for r in rows)}
        traj["ok"] = traj["max_loss_abs_diff"] <= 2e-3 and traj["max_grad_norm_rel_diff"] <= 1e-3
    out = {"per_sample": per_sample, "max_loss_abs_diff": max(s["abs_diff"] for s in per_sample),
           "losses_ok": losses_ok, "finetune_trajectory": traj,
           "ok": losses_ok and (traj is None or traj["ok"])}
    return out


def cmd_bench(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    L.ATTENTION = a.attention
    device = torch.device(a.device)
    t0 = time.perf_counter()
    model = L.Llava.from_dir(a.target).to(device)
    load_s = time.perf_counter() - t0
    model.train()
    if a.fixture:
        batch = fixture_batch(a.fixture, list(range(a.batch_size)))[:3]
    else:
        batch = preprocessed_batch(a.target, a.preprocessed, a.data_path, a.image_folder, a.batch_size,
                                   a.image_aspect_ratio == "pad")
    to_dev = lambda t: None if t is None else [x.to(device) for x in t] if isinstance(t, list) else t.to(device)
    batch = tuple(to_dev(t) for t in batch)
    params = L.trainable_parameters(model, "finetune")
    opt = torch.optim.AdamW(params, lr=a.learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    times, losses, info = [], [], None
    for k in range(a.warmup + a.steps):
        t = time.perf_counter()
        loss, gn, info = train_step(model, opt, params, batch, bf16=a.bf16)  # float(loss) synchronises
        el = time.perf_counter() - t
        losses.append(loss)
        if k >= a.warmup:
            times.append(el)
    step_s = statistics.median(times)
    n_params = sum(p.numel() for p in model.parameters())
    return {"implementation": "python-pytorch", "model_dir": a.target, "parameters": n_params,
            "trainable_parameters": sum(p.numel() for p in params), "batch_size": len(batch[0]),
            "images": 0 if batch[2] is None else int(batch[2].shape[0]),
            "real_positions": info["real_positions"], "padded_positions": info["padded_positions"],
            "step_seconds": step_s, "step_seconds_all": times, "tokens_per_s": info["real_positions"] / step_s,
            "first_step_loss": losses[0], "losses": losses, "threads": torch.get_num_threads(),
            "load_seconds": load_s, "torch": torch.__version__, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "precision": "bf16 autocast, fp32 weights" if a.bf16 else "fp32", "attention": a.attention,
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["check", "bench"])
    ap.add_argument("target", help="fixture dir (check) or model dir (bench)")
    ap.add_argument("--fixture")
    ap.add_argument("--preprocessed")
    ap.add_argument("--data_path")
    ap.add_argument("--image_folder", default="")
    ap.add_argument("--image_aspect_ratio", default="square")
    ap.add_argument("--batch_size", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--learning_rate", type=float, default=1e-5)
    ap.add_argument("--device", default="cpu", help="cpu | cuda (bench)")
    ap.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (bench)")
    ap.add_argument("--attention", choices=["eager", "sdpa"], default="eager", help="(bench)")
    a = ap.parse_args()
    res = cmd_check(a) if a.mode == "check" else cmd_bench(a)
    json.dump(res, sys.stdout, indent=1)
    print()
    if a.mode == "check" and not res["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
