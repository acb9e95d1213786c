#!/usr/bin/python3
"""Benchmark 8: data start-up at real scale. For each generated data set (bench/make_data_scale.py):

  train cold   `llava-train train --max_steps 1 --group_by_modality_length true` in a fresh output dir (the
               index is built, its cache written)
  train warm   the same again in that dir (the index cache is mapped)
  same batch   train cold with --shuffle false, and the same on the file's first 16 samples (the baseline):
               both train on the same first batch, so the difference in peak RSS is what the data set adds
  index alone  bench_data_index DATA: the data index without torch, the model or a training step
  floor        bench_torch_floor: LibTorch loaded and one tensor op, nothing else (what train's peak RSS
               cannot go below with this LibTorch; peak minus floor is llava-train's own)
all under /usr/bin/time -v (wall time and peak RSS), and in the same run Python's json.load of the 665K
file (what LLaVA's LazySupervisedDataset does at start-up). Rounds alternate the programs, so load from
other work hits them alike; times are the best round, RSS the largest.

train runs with --model_max_length 512 (the tiny model's max_position_embeddings; longer samples are
skipped and counted, as any run would) so that the first step stays a tiny model's step.

usage: /usr/bin/python3 bench/data_scale.py LLAVA_TRAIN MODEL_DIR WORK_DIR --mix MIX.json --mix_images DIR
           --multi MULTI.json [--index_bench BENCH_DATA_INDEX] [--floor_bench BENCH_TORCH_FLOOR] [--python PY]
           [--rounds N] [--before OLD]
--before also times an older llava-train binary the same way (a before/after comparison).
Prints one JSON object.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys


def timed(cmd, log_path, env=None):
    """Runs cmd under /usr/bin/time -v; returns wall seconds, peak RSS in MiB and the exit status."""
    with open(log_path, "w") as log:
        p = subprocess.run(["/usr/bin/time", "-v"] + cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    text = open(log_path, errors="replace").read()
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    seconds = None
    if wall:
        parts = [float(x) for x in wall[1].split(":")]
        seconds = sum(v * 60 ** (len(parts) - 1 - k) for k, v in enumerate(parts))
    return {"wall_s": seconds, "peak_rss_mib": round(int(rss[1]) / 1024, 1) if rss else None, "exit": p.returncode,
            "log": log_path}


def train_cmd(lt, model, data, images, out_dir, shuffle=True):
    return [lt, "train", "--model_name_or_path", model, "--data_path", data, "--image_folder", images,
            "--max_steps", "1", "--group_by_modality_length", "true", "--per_device_train_batch_size", "4",
            "--model_max_length", "512", "--logging_steps", "1", "--save_steps", "0", "--output_dir", out_dir,
            "--shuffle", "true" if shuffle else "false"]


def best(runs):
    ok = [r for r in runs if r["exit"] == 0 and r["wall_s"] is not None]
    if not ok:
        return {"status": "failed", "log": runs[-1]["log"], "tail": open(runs[-1]["log"], errors="replace").read()[-1500:]}
    b = min(ok, key=lambda r: r["wall_s"])
    return {"wall_s": b["wall_s"], "peak_rss_mib": max(r["peak_rss_mib"] for r in ok),
            "rounds_wall_s": [r["wall_s"] for r in ok]}


def first_samples(path, n, out_path):
    """The first n samples of a JSON list, read without loading the file (the baseline's data)."""
    dec, buf, samples, pos = json.JSONDecoder(), "", [], None
    with open(path) as f:
        while len(samples) < n:
            chunk = f.read(1 << 22)
            buf += chunk
            if pos is None:
                pos = buf.index("[") + 1
            while len(samples) < n:
                while pos < len(buf) and buf[pos] in " \n\r\t,":
                    pos += 1
                try:
                    s, end = dec.raw_decode(buf, pos)
                except json.JSONDecodeError:
                    if not chunk:
                        raise
                    break  # the sample continues in the next chunk
                samples.append(s)
                pos = end
    with open(out_path, "w") as f:
        json.dump(samples, f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("llava_train")
    ap.add_argument("model")
    ap.add_argument("work")
    ap.add_argument("--mix", required=True)
    ap.add_argument("--mix_images", required=True)
    ap.add_argument("--multi", required=True)
    ap.add_argument("--index_bench")
    ap.add_argument("--floor_bench")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--before")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    binaries = {"llava_train": a.llava_train}
    if a.before:
        binaries["before"] = a.before
    sets = {"mix665k": (a.mix, a.mix_images), "multi_b64": (a.multi, os.path.dirname(os.path.abspath(a.multi)))}
    base_data = {}
    for sname, (data, _) in sets.items():
        base_data[sname] = os.path.join(a.work, f"baseline_16_{sname}.json")
        first_samples(data, 16, base_data[sname])
    runs = {}  # (binary, set, phase) -> [results]
    for r in range(a.rounds):
        def add(key, cmd, log):
            runs.setdefault(key, []).append(timed(cmd, os.path.join(a.work, log), env))
        add(("python", "mix665k", "json_load"),
            [a.python, "-c", "import json, sys; print(len(json.load(open(sys.argv[1]))))", a.mix], f"python_{r}.log")
        if a.floor_bench:
            add(("libtorch_floor", "-", "start"), [a.floor_bench], f"floor_{r}.log")
        for sname, (data, images) in sets.items():
            if a.index_bench:
                add(("index_alone", sname, "cold"), [a.index_bench, data], f"index_{sname}_{r}.log")
            for what, path in (("same_batch", data), ("baseline_16", base_data[sname])):
                out_dir = os.path.join(a.work, f"run-{what}-{sname}")
                shutil.rmtree(out_dir, ignore_errors=True)
                add(("llava_train", sname, what), train_cmd(a.llava_train, a.model, path, images, out_dir, shuffle=False),
                    f"{what}_{sname}_{r}.log")
            for bname, lt in binaries.items():
                out_dir = os.path.join(a.work, f"run-{bname}-{sname}")
                shutil.rmtree(out_dir, ignore_errors=True)
                for phase in ("cold", "warm"):
                    add((bname, sname, phase), train_cmd(lt, a.model, data, images, out_dir), f"{bname}_{sname}_{phase}_{r}.log")
    result = {"status": "ok", "rounds": a.rounds, "python_json_load_mix665k": best(runs[("python", "mix665k", "json_load")]),
              "data_sets": {}}
    floor = best(runs[("libtorch_floor", "-", "start")]) if a.floor_bench else {}
    if a.floor_bench:
        result["libtorch_floor"] = floor
    for sname, (data, _) in sets.items():
        entry = {"file": data, "file_gb": round(os.path.getsize(data) / 1e9, 3)}
        for bname in binaries:
            entry[bname] = {phase: best(runs[(bname, sname, phase)]) for phase in ("cold", "warm")}
            for phase in ("cold", "warm"):
                x = entry[bname][phase]
                if floor.get("peak_rss_mib") and x.get("peak_rss_mib"):
                    x["over_libtorch_floor_mib"] = round(x["peak_rss_mib"] - floor["peak_rss_mib"], 1)
        same, base = best(runs[("llava_train", sname, "same_batch")]), best(runs[("llava_train", sname, "baseline_16")])
        entry["same_first_batch"] = {"whole_file": same, "first_16_samples": base}
        if same.get("peak_rss_mib") and base.get("peak_rss_mib"):
            entry["same_first_batch"]["rss_added_by_data_mib"] = round(same["peak_rss_mib"] - base["peak_rss_mib"], 1)
        if a.index_bench:
            entry["index_alone"] = best(runs[("index_alone", sname, "cold")])
            seconds = []
            for run in runs[("index_alone", sname, "cold")]:
                m = re.search(r'\{"samples": (\d+), "seconds": ([0-9.]+)', open(run["log"]).read())
                if m:
                    entry["samples"] = int(m[1])
                    seconds.append(float(m[2]))
            if seconds:
                entry["index_alone"]["index_seconds"] = min(seconds)
        result["data_sets"][sname] = entry
    py = result["python_json_load_mix665k"].get("wall_s")
    cold = result["data_sets"]["mix665k"]["llava_train"]["cold"].get("wall_s")
    if py and cold:
        result["mix665k_python_over_llava_train_cold"] = round(py / cold, 2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
