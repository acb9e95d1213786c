#!/usr/bin/python3
"""Summaries of `llava-train train` runs from OUTPUT_DIR/metrics.jsonl (one object per optimizer step with
step, num_tokens, step_time_s, data_wait_s, tokens_per_s, loss: design.md §4.3).

  metrics_summary.py step RUN_DIR [--warmup W]     -> tokens/s of the steps after the first W
  metrics_summary.py loader RUN_W1 RUN_W2 [...]    -> data_wait_s / step_time_s per run (workers read from
                                                      the directory name's -wN suffix)
"""
import argparse
import json
import os
import re
import statistics
import sys


def read(run):
    rows = []
    with open(os.path.join(run, "metrics.jsonl")) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    if not rows:
        raise SystemExit(f"{run}/metrics.jsonl: no steps")
    return rows


def step_summary(run, warmup):
    rows = read(run)
    timed = rows[warmup:] or rows
    step_s = statistics.median(r["step_time_s"] for r in timed)
    tokens = statistics.median(r["num_tokens"] for r in timed)
    return {"implementation": "llava-train", "steps": len(rows), "timed_steps": len(timed), "step_seconds": step_s,
            "step_seconds_all": [r["step_time_s"] for r in timed], "real_positions": tokens,
            "tokens_per_s": tokens / step_s, "first_step_loss": rows[0].get("loss"),
            "data_wait_seconds": statistics.median(r.get("data_wait_s", 0.0) for r in timed)}


def loader_summary(runs, warmup):
    out = []
    for run in runs:
        rows = read(run)
        timed = rows[warmup:] or rows
        wait = sum(r["data_wait_s"] for r in timed)
        total = sum(r["step_time_s"] for r in timed)
        m = re.search(r"-w(\d+)$", run.rstrip("/"))
        out.append({"workers": int(m[1]) if m else None, "steps": len(timed), "data_wait_s": wait, "step_time_s": total,
                    "wait_share": wait / total if total else None,
                    "tokens_per_s": sum(r["num_tokens"] for r in timed) / total if total else None})
    return {"status": "ok", "runs": out}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["step", "loader"])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--warmup", type=int, default=1)
    a = ap.parse_args()
    res = step_summary(a.runs[0], a.warmup) if a.mode == "step" else loader_summary(a.runs, a.warmup)
    json.dump(res, sys.stdout)
    print()


if __name__ == "__main__":
    main()
