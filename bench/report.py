#!/usr/bin/python3
"""Assembles scripts/bench.sh's per-benchmark results (RESULTS_DIR/*.json) into one JSON file and prints
the Markdown table the README shows.

usage: report.py RESULTS_DIR OUTPUT_JSON [--total_seconds S]
"""
import argparse
import glob
import json
import os
import sys

TARGET_IMAGE_SPEEDUP = 3.0
TARGET_PAD_SHARE = 0.05
TARGET_LOAD_RATIO = 1.5
TARGET_DATA_SPEEDUP = 4.0     # 8: start-up + first step vs Python's json.load of the 665K file
TARGET_TRAIN_RSS_MIB = 256    # 8: peak RSS of train start + first step, on each data set
TARGET_NON_IMAGE_MS = 0.3     # 8: building an example besides its image, ms per sample


def fmt_rate(x, unit):
    if x is None:
        return "–"
    return f"{x:,.0f} {unit}" if x >= 100 else f"{x:,.1f} {unit}"


def status_cell(ok):
    return "**met**" if ok else "**missed**"


def image_breakdown(r):
    """Markdown lines: ms per image by stage, square mode, exact decode."""
    py = {x["case"]: x.get("breakdown_ms") for x in r["python"]["results"] if not x["pad"]}
    lines = []
    for x in r["cpp"]["results"]:
        if x["pad"] or x["decode"] != "exact" or not x.get("breakdown_ms") or not py.get(x["case"]):
            continue
        c, p = x["breakdown_ms"], py[x["case"]]
        cells = " | ".join(f"{c[k]:.2f} / {p[k]:.2f}" for k in ("read_bytes", "decode", "resize", "crop", "rescale_normalize"))
        stages = ("read_bytes", "decode", "resize", "crop", "rescale_normalize")
        fused = f" (fused: {c['read_bytes'] + c['decode'] + c['preprocess_fused']:.2f})" if "preprocess_fused" in c else ""
        lines.append(f"| {x['case']} | {cells} | {sum(c[k] for k in stages):.2f}{fused} / {sum(p[k] for k in stages):.2f} |")
    if not lines:
        return []
    return ["", "Where the time goes, square mode, ms per image, llava-train / Python (stages timed one by one; "
            "Python's resize includes HF's numpy <-> PIL conversions; llava-train's pipeline fuses resize, crop and "
            "rescale + normalize, its real sum is the fused one):", "",
            "| case | read bytes | decode | resize | crop | rescale + normalize | sum |", "|---|---|---|---|---|---|---|"] + lines


def image_rows(r, rows, details):
    py = {(x["case"], x["pad"]): x["images_per_s"] for x in r["python"]["results"]}
    cmp = {(x["case"], x["pad"], x["decode"]): x for x in r["compare"]["comparisons"]}
    summary = {}
    for x in r["cpp"]["results"]:
        key = (x["case"], x["pad"])
        p = py.get(key)
        ratio = x["images_per_s"] / p if p else None
        c = cmp.get((x["case"], x["pad"], x["decode"]), {})
        label = f"Image {x['case'].replace('_', ' ')}, {'pad' if x['pad'] else 'square'}"
        if x["decode"] == "trainer":
            label += " (loader's DCT-scaled decode)"
        is_target = x["case"].startswith("jpeg_640x480") and x["decode"] == "exact"
        target = f">= {TARGET_IMAGE_SPEEDUP:g}x" if is_target else "–"
        status = status_cell(ratio is not None and ratio >= TARGET_IMAGE_SPEEDUP) if is_target else "info"
        rows.append(["1", label + ", 1 core", fmt_rate(x["images_per_s"], "img/s"), fmt_rate(p, "img/s"),
                     f"{ratio:.2f}x" if ratio else "–", target, status])
        summary[f"{x['case']}.{'pad' if x['pad'] else 'square'}.{x['decode']}"] = {
            "llava_train_images_per_s": x["images_per_s"], "python_images_per_s": p, "speedup": ratio,
            "mean_abs_diff": c.get("mean_abs_diff"), "max_abs_diff": c.get("max_abs_diff"),
            "rgb_max_level_diff": c.get("rgb_max_level_diff"), "within_tolerance": c.get("within_tolerance")}
        if c:
            rgb = c.get("rgb_max_level_diff")
            rgb = f"{rgb}" if rgb is not None else c.get("rgb_decoded_size", "–")
            details.append(f"| {x['case']} | {'pad' if x['pad'] else 'square'} | {x['decode']} | "
                           f"{c['mean_abs_diff']:.5f} | {c['max_abs_diff']:.4f} | {rgb} | "
                           f"{'yes' if c['within_tolerance'] else 'NO'} |")
    return summary


def data_scale_rows(r, rows, pending_row):
    py = r["python_json_load_mix665k"]
    floor = r.get("libtorch_floor") or {}
    if floor.get("peak_rss_mib"):
        rows.append(["8", "LibTorch alone (bench_torch_floor: the libraries train links, one tensor op), peak RSS",
                     f"{floor['peak_rss_mib']:.0f} MiB", "–", "–", "report", "info"])
    names = {"mix665k": "LLaVA-mix-like JSON", "multi_b64": "multi-image base64 JSON (3 JPEGs per sample)"}
    for sname, e in r["data_sets"].items():
        what = (f"{e['samples']:,} samples, " if isinstance(e.get("samples"), int) else "") + \
            f"{e['file_gb']:.2f} GB {names.get(sname, sname)}"
        lt = e["llava_train"]
        for phase, how in (("cold", "first start: index built, cache written"), ("warm", "restart: index cache mapped")):
            x = lt[phase]
            if x.get("status") == "failed":
                pending_row("8", f"train --max_steps 1, {what}, {how}", x)
                continue
            label = f"`train --max_steps 1` start + first step, {what}, {how}"
            if sname == "mix665k":
                ratio = py["wall_s"] / x["wall_s"]
                rows.append(["8", label, f"{x['wall_s']:.2f} s, {x['peak_rss_mib']:.0f} MiB",
                             f"json.load: {py['wall_s']:.2f} s, {py['peak_rss_mib']:.0f} MiB", f"{ratio:.1f}x",
                             f">= {TARGET_DATA_SPEEDUP:g}x", status_cell(ratio >= TARGET_DATA_SPEEDUP)])
            else:
                rows.append(["8", label, f"{x['wall_s']:.2f} s, {x['peak_rss_mib']:.0f} MiB", "–", "–", "report", "info"])
            own = x.get("over_libtorch_floor_mib")
            rows.append(["8", f"Peak RSS of that run, {what}, {how}", f"{x['peak_rss_mib']:.0f} MiB",
                         f"LibTorch alone: {floor['peak_rss_mib']:.0f} MiB" if floor.get("peak_rss_mib") else "–",
                         f"llava-train's own: {own:.0f} MiB" if own is not None else "–",
                         f"< {TARGET_TRAIN_RSS_MIB} MiB", status_cell(x["peak_rss_mib"] < TARGET_TRAIN_RSS_MIB)])
        before = e.get("before")
        if before and before["cold"].get("wall_s"):
            rows.append(["8", f"Same, first start, before this change (JSON tree index), {what}",
                         f"{before['cold']['wall_s']:.2f} s, {before['cold']['peak_rss_mib']:.0f} MiB", "–", "–",
                         "report", "info"])
        sb = e.get("same_first_batch", {})
        added = sb.get("rss_added_by_data_mib")
        if added is not None:
            rows.append(["8", f"Peak RSS the data set adds: `train --shuffle false` on the whole file vs on its first 16 "
                              f"samples (the same first batch), {what}",
                         f"+{added:.0f} MiB ({sb['whole_file']['peak_rss_mib']:.0f} MiB)",
                         f"16 samples: {sb['first_16_samples']['peak_rss_mib']:.0f} MiB", "–", "report", "info"])
        ia = e.get("index_alone")
        if ia and ia.get("wall_s") is not None:
            rows.append(["8", f"Data index alone (bench_data_index, no torch), {what}",
                         f"{ia.get('index_seconds', ia['wall_s']):.2f} s, {ia['peak_rss_mib']:.0f} MiB", "–", "–",
                         "report", "info"])
    ex = r.get("example")
    if ex and ex.get("status") != "failed":
        rows.append(["8", f"Building an example besides its image (bench_example: {ex['samples']} samples of one 640x480 "
                          f"base64 JPEG, pad; full {ex['full_ms_per_sample']:.2f} ms - image alone "
                          f"{ex['images_ms_per_sample']:.2f} ms, one core)",
                     f"{ex['non_image_ms_per_sample']:.2f} ms/sample", "–", "–", f"< {TARGET_NON_IMAGE_MS:g} ms",
                     status_cell(ex["non_image_ms_per_sample"] < TARGET_NON_IMAGE_MS)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results_dir")
    ap.add_argument("output")
    ap.add_argument("--total_seconds", type=float)
    a = ap.parse_args()
    res = {}
    for p in sorted(glob.glob(os.path.join(a.results_dir, "*.json"))):
        with open(p) as f:
            res[os.path.basename(p)[:-5]] = json.load(f)
    machine = res.pop("machine", {})
    machine["bench_seconds"] = a.total_seconds
    rows, details, summary = [], [], {}

    def pending_row(num, label, r):
        rows.append([num, label, r.get("status", "?") + (": " + r["reason"] if r.get("reason") else "")
                     + (": " + r["error"].splitlines()[-1][:120] if r.get("error") else ""), "", "", "", r.get("status", "?")])

    # 1. images
    r = res.get("image_pipeline")
    if r and r.get("status") == "ok":
        summary["image_pipeline"] = image_rows(r, rows, details)
    elif r:
        pending_row("1", "Image pipeline", r)

    # 2. loader vs step
    r = res.get("loader_vs_step")
    if r and r.get("status") == "ok":
        tr = r.get("training", {})
        if tr.get("status") == "ok":
            for run in tr["runs"]:
                rows.append(["2", f"Share of the training step spent waiting for data, {run['workers']} loader "
                                  f"worker(s) (tiny model, batch 8 of 2-3 COCO-like JPEGs, pad)",
                             f"{100 * run['wait_share']:.1f} %", "–", "–", "report", "info"])
        else:
            pending_row("2", "Share of the training step spent waiting for data (1 and 2 workers)", tr)
        for k, d in sorted(r.get("loader_alone", {}).items()):
            if d.get("status") == "failed":
                pending_row("2", f"Loader alone, {k}", d)
                continue
            rows.append(["2", f"Loader alone (bench-data), {k.split('_')[1]} worker(s): LLaVA-1.5 preprocessing "
                              f"(336, pad) of 640x480 JPEGs, {d['images'] / max(1, d['samples']):.1f} images/sample",
                         f"{d['samples_per_s']:.1f} samples/s ({d['images_per_s']:.0f} img/s)",
                         "LLaVA-1.5-7B FT uses ~2.3 samples/s/GPU", "–", "report", "info"])
    elif r:
        pending_row("2", "Loader vs step", r)

    # 3. training step
    r = res.get("train_step")
    if r:
        chk = r.get("reference_check")
        if chk:
            traj = chk.get("finetune_trajectory") or {}
            rows.append(["3", "Python reference vs fixture: per-sample loss max abs diff; 6-step finetune loss / grad-norm",
                         "–", f"{chk['max_loss_abs_diff']:.1e}; {traj.get('max_loss_abs_diff', float('nan')):.1e} / "
                         f"{traj.get('max_grad_norm_rel_diff', float('nan')):.1e} rel", "–", "<= 1e-4",
                         status_cell(chk.get("ok"))])
        for m in r.get("models", []):
            py, lt = m.get("python") or {}, m.get("llava_train") or {}
            if py.get("status") == "failed":
                pending_row("3", f"Training step {m['model']}", py)
                continue
            params = py.get("parameters")
            label = (f"Training step, {m['model']} ({params / 1e6:.1f}M params), batch {py.get('batch_size')}, "
                     f"{py.get('real_positions')} positions ({py.get('padded_positions')} padded), fp32, "
                     f"{py.get('threads')} threads")
            ptok = py.get("tokens_per_s")
            ltok = lt.get("tokens_per_s") if lt.get("status", "ok") == "ok" else None
            ratio = ltok / ptok if ltok and ptok else None
            lcell = fmt_rate(ltok, "tok/s") if ltok else lt.get("status", "?")
            rows.append(["3", label, lcell, fmt_rate(ptok, "tok/s"), f"{ratio:.2f}x" if ratio else "–", "> 1x",
                         (status_cell(ratio > 1.0) if ratio else lt.get("status", "?"))])
            if ltok and lt.get("first_step_loss") is not None and py.get("first_step_loss") is not None:
                lt["first_step_loss_diff_vs_python"] = abs(lt["first_step_loss"] - py["first_step_loss"])
                rows[-1][1] += f"; step-1 loss abs diff vs Python {lt['first_step_loss_diff_vs_python']:.1e}"

    # 4. padding
    r = res.get("padding")
    if r and r.get("status") == "ok":
        names = {"multi_image_mix": "our multi-image mix", "llava15_mix": "LLaVA-1.5 665K-like mix"}
        for mix, d in r["mixes"].items():
            for s in d["scenarios"]:
                grouped = s["name"].startswith("grouped")
                target = f"< {100 * TARGET_PAD_SHARE:g} %" if grouped else "–"
                st = status_cell(s["padding_share"] < TARGET_PAD_SHARE) if grouped else "info"
                rows.append(["4", f"Padding share, {names.get(mix, mix)}, batch {s['batch']}: {s['description']}",
                             f"{100 * s['padding_share']:.1f} %", "–", "–", target, st])
    elif r:
        pending_row("4", "Padding waste", r)

    # 5. checkpoint load
    r = res.get("checkpoint_load")
    if r and r.get("status") == "ok":
        ratio = r["seconds_min"] / r["cat_seconds"]
        r["ratio_vs_cat"] = ratio
        rows.append(["5", f"Checkpoint load, {r['safetensors_bytes'] / 2**30:.2f} GiB safetensors "
                          f"({r['parameters'] / 1e6:.0f}M params) -> model ready to train, page cache warm",
                     f"{r['seconds_min']:.2f} s", f"cat: {r['cat_seconds']:.2f} s", f"{ratio:.2f}x",
                     f"<= {TARGET_LOAD_RATIO:g}x", status_cell(ratio <= TARGET_LOAD_RATIO)])
        if "mapped_seconds_min" in r:  # LoadOptions::map_weights: no copy at load, one per page on first write
            mratio = r["mapped_seconds_min"] / r["cat_seconds"]
            mw = r.get("mapped_load_then_first_write_seconds") or [None, None]
            cw = r.get("copied_load_then_first_write_seconds") or [None, None]
            extra = (f"; first write of every parameter afterwards {mw[1]:.2f} s (copied load: {cw[1]:.2f} s)"
                     if mw[1] is not None and cw[1] is not None else "")
            rows.append(["5", "Same, weights mapped copy-on-write (map_weights, opt-in)" + extra,
                         f"{r['mapped_seconds_min']:.2f} s", f"cat: {r['cat_seconds']:.2f} s", f"{mratio:.2f}x",
                         "–", "info"])
    elif r:
        pending_row("5", "Checkpoint load", r)

    r = res.get("gpu")
    if r:
        pending_row("6", "GPU", r)

    # 7. plan vs measured
    r = res.get("plan_check")
    if r and r.get("status") == "ok":
        for run in r["runs"]:
            ck = "with" if run["gradient_checkpointing"] else "without"
            rows.append(["7", f"`plan` estimate vs measured peak RSS above the process baseline, CPU fp32, batch "
                              f"{r['batch']} x {r['seq']} tokens, {ck} gradient checkpointing",
                         f"measured {run['measured_gib']:.2f} GiB", f"plan {run['predicted_gib']:.2f} GiB",
                         f"{run['predicted_over_measured']:.2f}x", "close to 1x", "info"])
    elif r:
        pending_row("7", "plan vs measured memory", r)

    # 8. data at scale
    r = res.get("data_scale")
    if r and r.get("status") == "ok":
        data_scale_rows(r, rows, pending_row)
    elif r:
        pending_row("8", "Data at scale", r)

    m = machine
    head = (f"Machine: {m.get('cpu_model')}, {m.get('cores_online')} cores, {m.get('memory_gib')} GiB, {m.get('os')}; "
            f"{m.get('llava_train_version')}; Python {m.get('python')} + torch {m.get('python_torch')}; {m.get('date')}; "
            f"commit {m.get('git_commit')}{' (dirty)' if m.get('git_dirty') else ''}; "
            f"load average at start {m.get('load_average_at_start', 0):.2f}")
    lines = [head, "", "| # | Benchmark | llava-train | Python / baseline | Ratio | Target | Status |",
             "|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    if details:
        lines += ["", "Image pixels, llava-train vs the Python path (normalized units; decoded RGB in levels):", "",
                  "| case | mode | decode | mean abs diff | max abs diff | RGB max level diff | within tolerance |",
                  "|---|---|---|---|---|---|---|"] + details
    r = res.get("image_pipeline")
    if r and r.get("status") == "ok":
        lines += image_breakdown(r)
    table = "\n".join(lines)
    print(table)
    out = {"machine": machine, "table_markdown": table, "summary": summary, "benchmarks": res}
    with open(a.output, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
