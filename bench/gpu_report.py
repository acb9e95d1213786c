#!/usr/bin/python3
"""GPU benchmark report (scripts/bench-gpu.sh): tokens/s and MFU of llava-train and the plain-PyTorch
reference on the same model and batch, one GPU, bf16.

  gpu_report.py OUT.json NAME:MODEL_DIR:PY_JSON:LT_JSON [...]

Model FLOPs of one training step (fine-tuning: LLM + projector train, vision tower frozen and forward only),
counted from config.json and the batch the Python reference reports (real positions R, padded length T,
images I of P patches each):
  LLM        6 * N_llm * R  +  12 * n_layers * d_attn * T * R     (matmul weights incl. lm_head; attention as
                                                                   PaLM's appendix B counts it, over T)
  projector  6 * N_proj * I * P
  vision     2 * N_vis * I * (P + 1)  +  4 * n_layers_v * d_v * (P + 1)^2 * I     (forward only)
MFU = FLOPs per step / step seconds / the card's dense bf16 peak (datasheet: 989 TFLOP/s for H100/H200 SXM;
set GPU_PEAK_TFLOPS to override). Padding positions are computed by both implementations but not counted.
"""
import json
import os
import sys

PEAKS_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


def step_flops(cfg, real, padded_len, images):
    t, v = cfg["text_config"], cfg["vision_config"]
    d, ff, nl, heads = t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"], t["num_attention_heads"]
    kv = t.get("num_key_value_heads", heads)
    hd = d // heads
    n_llm = nl * (d * heads * hd + 2 * d * kv * hd + heads * hd * d + 3 * d * ff) + d * t["vocab_size"]
    vd, vff, vl = v["hidden_size"], v["intermediate_size"], v["num_hidden_layers"]
    patches = (v["image_size"] // v["patch_size"]) ** 2
    n_proj = vd * d + d * d
    n_vis = vl * (4 * vd * vd + 2 * vd * vff) + 3 * v["patch_size"] ** 2 * vd
    llm = 6 * n_llm * real + 12 * nl * heads * hd * padded_len * real
    proj = 6 * n_proj * images * patches
    vis = 2 * n_vis * images * (patches + 1) + 4 * vl * vd * (patches + 1) ** 2 * images
    return {"total": llm + proj + vis, "llm": llm, "projector": proj, "vision": vis,
            "llm_matmul_parameters": n_llm, "vision_matmul_parameters": n_vis, "projector_parameters": n_proj}


def peak_for(device_name):
    if os.environ.get("GPU_PEAK_TFLOPS"):
        return float(os.environ["GPU_PEAK_TFLOPS"])
    for key, tf in PEAKS_TFLOPS.items():
        if device_name and key in device_name:
            return tf
    return None


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def main():
    out_path, specs = sys.argv[1], sys.argv[2:]
    rows = []
    for spec in specs:
        name, model_dir, py_path, lt_path = spec.split(":")
        py, lt = load(py_path), load(lt_path)
        row = {"model": name, "python": py, "llava_train": lt}
        if py and py.get("real_positions"):
            with open(os.path.join(model_dir, "config.json")) as f:
                cfg = json.load(f)
            fl = step_flops(cfg, py["real_positions"], py["padded_positions"] // py["batch_size"], py["images"])
            peak = peak_for(py.get("device_name"))
            row["flops_per_step"] = fl
            row["peak_tflops"] = peak
            for impl, res in (("python", py), ("llava_train", lt)):
                if res and res.get("step_seconds"):
                    res["model_tflops"] = fl["total"] / res["step_seconds"] / 1e12
                    res["mfu"] = res["model_tflops"] / peak if peak else None
            if lt and lt.get("step_seconds"):
                row["speedup_vs_python"] = py["step_seconds"] / lt["step_seconds"]
        rows.append(row)
    with open(out_path, "w") as f:
        json.dump({"status": "ok", "models": rows}, f, indent=1)
    print("| model | params | batch (real tok) | Python tok/s | llava-train tok/s | speed-up | MFU Python | MFU llava-train |")
    print("|---|---|---|---|---|---|---|---|")
    fmt = lambda x, f: f.format(x) if isinstance(x, (int, float)) else "n/a"
    for r in rows:
        py, lt = r["python"] or {}, r["llava_train"] or {}
        print(f"| {r['model']} | {fmt(py.get('parameters', 0) / 1e6, '{:.0f} M')} | "
              f"{py.get('batch_size', '?')} ({py.get('real_positions', '?')}) | {fmt(py.get('tokens_per_s'), '{:.0f}')} | "
              f"{fmt(lt.get('tokens_per_s'), '{:.0f}')} | {fmt(r.get('speedup_vs_python'), '{:.2f}x')} | "
              f"{fmt(py.get('mfu'), '{:.1%}')} | {fmt(lt.get('mfu'), '{:.1%}')} |")


if __name__ == "__main__":
    main()
