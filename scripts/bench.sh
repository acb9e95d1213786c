#!/usr/bin/env bash
# The CPU benchmark suite of issue #6: builds llava-train and the bench/ programs, runs every benchmark,
# prints the table (Markdown, what the README shows) and writes it as JSON (default bench/results.json).
#
#   scripts/bench.sh [--output PATH] [--only 1,3,5] [--quick]
#
#   1 image pipeline      decode + CLIP preprocessing, images/s on one core, vs LLaVA's Python path
#   2 loader vs step      share of a training step spent waiting for data, 1 and 2 loader workers
#   3 training step       tokens/s on CPU, fp32, llava-train vs plain PyTorch, tiny and ~50M models
#   4 padding waste       share of computed positions that are padding, with/without length grouping
#   5 checkpoint load     ~1 GB safetensors model -> model ready to train, vs cat FILE > /dev/null
#   6 GPU                 not here: scripts/bench-gpu.sh (needs a GPU and a CUDA torch)
#   7 memory plan         `llava-train plan`'s estimate vs measured peak RSS of a CPU run (~50M model)
#   8 data at scale       start-up + first step and peak RSS on a 665K-sample LLaVA-mix-like JSON and a 1.5 GB
#                         multi-image base64 JSON (index built / cache mapped) vs Python's json.load; the
#                         per-sample cost of an example besides its image (bench_example)
#
# Environment:
#   LLAVA_BENCH_BUILD_DIR  build folder (default build-bench); its bench-work/ holds generated inputs
#   LLAVA_SHARED_DIR       folder with fixtures/ (default ../shared beside the checkout); without it the
#                          fixture check is skipped and the tiny model is a random one of the same shape
#   BENCH_PYTHON           Python with torch, numpy, PIL (default /usr/bin/python3: Debian's python3-torch,
#                          python3-numpy, python3-pil)
#   BENCH_JOBS             build parallelism (default: all cores)
# Benchmarks that need `llava-train train` (2, and the llava-train half of 3) are reported "pending"
# while the trainer is not in the build.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

OUTPUT=bench/results.json
ONLY=1,2,3,4,5,6,7,8
QUICK=0
while (( $# )); do
  case "$1" in
    --output) OUTPUT=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
want() { [[ ",$ONLY," == *",$1,"* ]]; }

PY=${BENCH_PYTHON:-/usr/bin/python3}
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in bench/
BUILD=${LLAVA_BENCH_BUILD_DIR:-build-bench}
WORK=$BUILD/bench-work
SHARED=${LLAVA_SHARED_DIR:-$ROOT/../shared}
FIXTURE=$SHARED/fixtures/llava-tiny
JOBS=${BENCH_JOBS:-$(nproc)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
RES=$WORK/results
rm -rf "$RES"
mkdir -p "$RES"
T_START=$(date +%s)

log() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }
# record NAME JSON: one benchmark's result (or status) for report.py
record() { printf '%s\n' "$2" > "$RES/$1.json"; }
fail_json() { "$PY" -c 'import json,sys; print(json.dumps({"status": "failed", "error": sys.argv[1][-2000:]}))' "$1"; }
pin() { taskset -c 0 env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$@"; }

# ------------------------------------------------------------------------------------------------ set-up
if ! "$PY" -c 'import torch, numpy, PIL' 2>/dev/null; then
  if [[ $(id -u) -eq 0 && "$PY" == /usr/bin/python3 ]]; then
    log "installing python3-torch python3-numpy python3-pil"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-torch python3-numpy python3-pil >/dev/null
  else
    echo "bench.sh: $PY needs torch, numpy and PIL: sudo apt-get install python3-torch python3-numpy python3-pil" >&2
    exit 1
  fi
fi

log "building llava-train and bench programs in $BUILD (-j$JOBS)"
T0=$(date +%s)
if grep -q LLAVA_BUILD_BENCH CMakeLists.txt; then
  CFG=(-S . -B "$BUILD" -DLLAVA_BUILD_BENCH=ON -DLLAVA_BUILD_TESTS=OFF)
else  # the top-level project does not add bench/ yet: build it standalone (it pulls the project in)
  CFG=(-S bench -B "$BUILD")
fi
if ! cmake "${CFG[@]}" -DCMAKE_BUILD_TYPE=Release >"$WORK/cmake.log" 2>&1 ||
   ! nice cmake --build "$BUILD" -j"$JOBS" --target llava-train bench_image bench_padding bench_load bench_data_index bench_example bench_torch_floor >>"$WORK/cmake.log" 2>&1; then
  tail -30 "$WORK/cmake.log" >&2
  echo "bench.sh: build failed (missing packages? run scripts/setup.sh first); log: $WORK/cmake.log" >&2
  exit 1
fi
BUILD_S=$(( $(date +%s) - T0 ))
LT=$(find "$BUILD" -maxdepth 2 -type f -name llava-train -perm -u+x | head -1)
BIN=$BUILD/bench
[[ -x "$LT" && -x "$BIN/bench_image" ]] || { echo "bench.sh: built programs not found under $BUILD" >&2; exit 1; }
LT=$(cd "$(dirname "$LT")" && pwd)/llava-train
log "built in ${BUILD_S}s: $LT"

# ------------------------------------------------------------------------------------------------ machine
"$PY" - "$LT" "$BUILD_S" "$QUICK" >"$RES/machine.json" <<'EOF'
import json, os, platform, re, subprocess, sys, datetime
def sh(*c):
    try: return subprocess.run(c, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception: return ""
lscpu = sh("lscpu")
get = lambda k: (re.search(rf"^{k}:\s*(.+)$", lscpu, re.M) or [None, None])[1]
mem = re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read())
import torch
print(json.dumps({
    "cpu_model": get("Model name"), "cores_online": os.cpu_count(), "threads_per_core": get(r"Thread\(s\) per core"),
    "memory_gib": round(int(mem[1]) / 2**20, 1) if mem else None,
    "os": (re.search(r'PRETTY_NAME="(.+)"', open("/etc/os-release").read()) or [None, platform.platform()])[1],
    "kernel": platform.release(), "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    "llava_train_version": sh(sys.argv[1], "--version"),
    "libtorch": (re.search(r"LibTorch ([^ ,)]+)", sh(sys.argv[1], "--version")) or [None, None])[1],
    "python": platform.python_version(),
    "python_torch": torch.__version__, "git_commit": sh("git", "rev-parse", "--short", "HEAD"),
    "git_dirty": bool(sh("git", "status", "--porcelain", "--untracked-files=no")),
    "build_seconds": int(sys.argv[2]), "quick": sys.argv[3] == "1",
    "load_average_at_start": os.getloadavg()[0]}))
EOF

# The trainer: is `llava-train train` in this build?
TRAIN_AVAILABLE=0
"$LT" train --output_dir "$WORK/train-probe" 2>&1 | grep -q "not available in this build" || TRAIN_AVAILABLE=1
rm -rf "$WORK/train-probe"
[[ "${BENCH_NO_TRAIN:-0}" == 1 ]] && TRAIN_AVAILABLE=0  # for testing the pending path
PENDING='{"status": "pending", "reason": "llava-train train is not in this build yet"}'

# Shared inputs: images, demo data (tokenizer), models.
ensure_images() {
  [[ -f "$WORK/images/manifest.json" ]] || "$PY" bench/make_images.py "$WORK/images" >&2
}
ensure_demo() {
  [[ -f "$WORK/demo/train.json" ]] || "$LT" demo-data --output_dir "$WORK/demo" >"$WORK/demo.log" 2>&1
  [[ -f "$WORK/traindata/data_coco.json" ]] || "$PY" bench/make_train_data.py "$WORK/demo" "$WORK/traindata" >&2
}
ensure_model() {  # ensure_model PRESET [make_model.py flags] -> prints its directory
  local dir=$WORK/models/$1
  if [[ ! -f "$dir/model.safetensors" ]]; then
    ensure_demo
    "$PY" bench/make_model.py "$1" "$dir" --tokenizer_dir "$WORK/demo/tokenizer" "${@:2}" >&2 || return 1
  fi
  echo "$dir"
}
if [[ -f "$FIXTURE/model.safetensors" ]]; then HAVE_FIXTURE=1; else HAVE_FIXTURE=0; fi

SECONDS_PER_ROUND=1.0; ROUNDS=3; PASSES=2
(( QUICK )) && { SECONDS_PER_ROUND=0.3; ROUNDS=1; PASSES=1; }

# ------------------------------------------------------------------------------------------------ 1. images
if want 1; then
  log "1. image pipeline (one core)"
  ensure_images
  rm -rf "$WORK/image-dumps"; mkdir -p "$WORK/image-dumps"
  ok=1
  # C++ and Python alternate (PASSES times each), so slow drifts of other load hit both alike.
  for pass in $(seq 1 $PASSES); do
    pin "$BIN/bench_image" "$WORK/images/manifest.json" "$WORK/image-dumps" --seconds $SECONDS_PER_ROUND --rounds $ROUNDS \
      >"$WORK/image_cpp_$pass.json" 2>"$WORK/image_cpp.err" || { ok=0; break; }
    pin "$PY" bench/image_pipeline_py.py bench "$WORK/images/manifest.json" --seconds $SECONDS_PER_ROUND --rounds $ROUNDS \
      >"$WORK/image_py_$pass.json" 2>"$WORK/image_py.err" || { ok=0; break; }
  done
  if (( ok )) && "$PY" bench/image_pipeline_py.py compare "$WORK/images/manifest.json" "$WORK/image-dumps" \
        >"$WORK/image_cmp.json" 2>"$WORK/image_cmp.err"; then
    record image_pipeline "$("$PY" - "$WORK" "$PASSES" <<'EOF2'
import json, sys
work, passes = sys.argv[1], int(sys.argv[2])
def merged(prefix):  # per (case, pad, decode): the best pass, every round kept
    best = {}
    for p in range(1, passes + 1):
        for r in json.load(open(f"{work}/{prefix}_{p}.json"))["results"]:
            k = (r["case"], r["pad"], r["decode"])
            rounds = best.get(k, {}).get("round_images_per_s", []) + r["round_images_per_s"]
            if k not in best or r["images_per_s"] > best[k]["images_per_s"]:
                best[k] = r
            best[k]["round_images_per_s"] = rounds
    return {"results": list(best.values())}
m = json.load(open(f"{work}/images/manifest.json"))
print(json.dumps({"status": "ok", "cpp": merged("image_cpp"), "python": merged("image_py"),
                  "compare": json.load(open(f"{work}/image_cmp.json")),
                  "inputs": [{k: v for k, v in c.items() if k != "items"} | {"images": len(c["items"])} for c in m["cases"]]}))
EOF2
)"
  else
    record image_pipeline "$(fail_json "$(cat "$WORK"/image_*.err)")"
  fi
fi

# ------------------------------------------------------------------------------------------------ 2. loader vs step
if want 2; then
  log "2. loader vs step"
  ensure_demo
  # (a) the loader alone at LLaVA-1.5's preprocessing (336 px, pad) on COCO-like JPEGs: samples/s it can supply
  SHAPE=$WORK/models/llava-v1.5-7b-shape
  [[ -f "$SHAPE/config.json" ]] || "$PY" bench/make_model.py llava-v1.5-7b-shape "$SHAPE" --tokenizer_dir "$WORK/demo/tokenizer" --no_weights >/dev/null
  for w in 1 2; do
    "$LT" bench-data --model_name_or_path "$SHAPE" --data_path "$WORK/traindata/data_coco.json" \
      --image_folder "$WORK/traindata/images" --image_aspect_ratio pad --dataloader_num_workers $w \
      --per_device_train_batch_size 8 --max_samples $(( QUICK ? 48 : 160 )) >"$WORK/loader_w$w.json" 2>"$WORK/loader_w$w.err" ||
      fail_json "$(cat "$WORK/loader_w$w.err")" >"$WORK/loader_w$w.json"
  done
  # (b) data wait inside training (tiny model: the fixture's shape), same images, 1 and 2 workers
  if (( TRAIN_AVAILABLE )); then
    if (( HAVE_FIXTURE )); then M=$FIXTURE; else M=$(ensure_model llava-tiny); fi
    rm -f "$WORK"/run-loader-w*.failed
    for w in 1 2; do
      OD=$WORK/run-loader-w$w; rm -rf "$OD"
      OMP_NUM_THREADS=$JOBS "$LT" train --model_name_or_path "$M" --data_path "$WORK/traindata/data_coco.json" \
        --image_folder "$WORK/traindata/images" --image_aspect_ratio pad --per_device_train_batch_size 8 \
        --max_steps $(( QUICK ? 4 : 9 )) --dataloader_num_workers $w --learning_rate 1e-4 \
        --lr_scheduler_type constant --logging_steps 1000 --save_steps 100000 --output_dir "$OD" >"$OD.log" 2>&1 ||
        echo "train failed: $(tail -5 "$OD.log")" >"$OD.failed"
    done
    if ls "$WORK"/run-loader-w*.failed >/dev/null 2>&1; then
      fail_json "$(cat "$WORK"/run-loader-w*.failed)" >"$WORK/loader_train.json"
    else
      "$PY" bench/metrics_summary.py loader "$WORK/run-loader-w1" "$WORK/run-loader-w2" >"$WORK/loader_train.json"
    fi
  else
    echo "$PENDING" >"$WORK/loader_train.json"
  fi
  rm -f "$WORK"/run-loader-w*.failed
  record loader_vs_step "$("$PY" - "$WORK" <<'EOF2'
import json, sys
w = sys.argv[1]
print(json.dumps({"status": "ok", "loader_alone": {f"workers_{k}": json.load(open(f"{w}/loader_w{k}.json")) for k in (1, 2)},
                  "training": json.load(open(f"{w}/loader_train.json"))}))
EOF2
)"
fi

# ------------------------------------------------------------------------------------------------ 3. training step
if want 3; then
  log "3. training step (CPU, fp32, $JOBS threads)"
  STEPS=3; (( QUICK )) && STEPS=2
  # Reference check first: the Python step must reproduce the fixture's losses to be a fair reference.
  if (( HAVE_FIXTURE )); then
    "$PY" bench/train_step_py.py check "$FIXTURE" >"$WORK/ref_check.json" 2>"$WORK/ref_check.err" ||
      log "reference check FAILED (see $WORK/ref_check.json)"
  fi
  ensure_demo
  rows=()
  # tiny: the fixture model and its 6-sample data set as one batch (a random model of the same shape without it)
  if (( HAVE_FIXTURE )); then
    TINY=$FIXTURE; TINY_DATA=$FIXTURE/data.json; TINY_IMAGES=$FIXTURE/images
  else
    TINY=$(ensure_model llava-tiny); TINY_DATA=$WORK/traindata/data_demo_b6.json; TINY_IMAGES=$WORK/demo/images
  fi
  M50=$(ensure_model llava-50m)
  for spec in "tiny|$TINY|$TINY_DATA|$TINY_IMAGES|6|5" "50m|$M50|$WORK/traindata/data_demo_b4.json|$WORK/demo/images|4|$STEPS"; do
    IFS='|' read -r name model data images bs steps <<<"$spec"
    (( QUICK )) && steps=2
    pre=$WORK/pre_$name.jsonl
    "$LT" preprocess --model_name_or_path "$model" --data_path "$data" --image_folder "$images" --output "$pre" \
      2>"$WORK/pre_$name.err" >/dev/null
    OMP_NUM_THREADS=$JOBS "$PY" bench/train_step_py.py bench "$model" --preprocessed "$pre" --data_path "$data" \
      --image_folder "$images" --batch_size "$bs" --steps "$steps" --warmup 1 --threads "$JOBS" \
      >"$WORK/step_py_$name.json" 2>"$WORK/step_py_$name.err" || fail_json "$(cat "$WORK/step_py_$name.err")" >"$WORK/step_py_$name.json"
    if (( TRAIN_AVAILABLE )); then
      OD=$WORK/run-step-$name; rm -rf "$OD"
      OMP_NUM_THREADS=$JOBS "$LT" train --model_name_or_path "$model" --data_path "$data" --image_folder "$images" \
        --per_device_train_batch_size "$bs" --max_steps $(( steps + 1 )) --shuffle false --dataloader_num_workers 1 \
        --learning_rate 1e-5 --lr_scheduler_type constant --logging_steps 1000 --save_steps 100000 \
        --output_dir "$OD" >"$OD.log" 2>&1 &&
        "$PY" bench/metrics_summary.py step "$OD" --warmup 1 >"$WORK/step_lt_$name.json" ||
        fail_json "$(tail -20 "$OD.log")" >"$WORK/step_lt_$name.json"
    else
      echo "$PENDING" >"$WORK/step_lt_$name.json"
    fi
    rows+=("$name|$WORK/step_py_$name.json|$WORK/step_lt_$name.json")
  done
  record train_step "$("$PY" - "$WORK/ref_check.json" "${rows[@]}" <<'EOF'
import json, os, sys
load = lambda p: json.load(open(p)) if os.path.exists(p) and os.path.getsize(p) else None
out = {"status": "ok", "reference_check": load(sys.argv[1]), "models": []}
for spec in sys.argv[2:]:
    name, py, lt = spec.split("|")
    out["models"].append({"model": name, "python": load(py), "llava_train": load(lt)})
print(json.dumps(out))
EOF
)"
fi

# ------------------------------------------------------------------------------------------------ 4. padding
if want 4; then
  log "4. padding waste"
  # Two synthetic mixes: ours (with 2-4-image samples) and LLaVA-1.5's own 665K shape (no multi-image).
  if "$PY" bench/length_mix.py "$WORK/mix_multi.txt" --n 20000 >/dev/null &&
     "$PY" bench/length_mix.py "$WORK/mix_llava15.txt" --n 20000 --no_multi_image >/dev/null &&
     "$BIN/bench_padding" --lengths "$WORK/mix_multi.txt" --batch 16 --epochs 2 >"$WORK/padding_multi.json" 2>"$WORK/padding.err" &&
     "$BIN/bench_padding" --lengths "$WORK/mix_llava15.txt" --batch 16 --epochs 2 >"$WORK/padding_llava15.json" 2>>"$WORK/padding.err"; then
    record padding "$("$PY" -c 'import json,sys; print(json.dumps({"status": "ok", "mixes": {"multi_image_mix": json.load(open(sys.argv[1])), "llava15_mix": json.load(open(sys.argv[2]))}}))' "$WORK/padding_multi.json" "$WORK/padding_llava15.json")"
  else
    record padding "$(fail_json "$(cat "$WORK/padding.err")")"
  fi
fi

# ------------------------------------------------------------------------------------------------ 5. checkpoint load
if want 5; then
  log "5. checkpoint load (~1 GB)"
  if M1G=$(ensure_model llava-1g --init tile); then
    F=$M1G/model.safetensors
    cat "$F" >/dev/null; cat "$F" >/dev/null  # into the page cache
    CAT_S=$("$PY" - "$F" <<'EOF'
import subprocess, sys, time
best = 1e9
for _ in range(3):
    t = time.perf_counter(); subprocess.run(f"cat '{sys.argv[1]}' > /dev/null", shell=True, check=True)
    best = min(best, time.perf_counter() - t)
print(best)
EOF
)
    if OMP_NUM_THREADS=$JOBS "$BIN/bench_load" "$M1G" --repeats 3 >"$WORK/load.json" 2>"$WORK/load.err"; then
      record checkpoint_load "$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); d.update(status="ok", cat_seconds=float(sys.argv[2])); print(json.dumps(d))' "$WORK/load.json" "$CAT_S")"
    else
      record checkpoint_load "$(fail_json "$(cat "$WORK/load.err")")"
    fi
  else
    record checkpoint_load "$(fail_json "could not generate the 1 GB model")"
  fi
fi

# ------------------------------------------------------------------------------------------------ 6. GPU
if want 6; then
  # The GPU benchmark needs a CUDA LibTorch build of its own: scripts/bench-gpu.sh (README, bench/README.md).
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    record gpu '{"status": "skipped", "reason": "a GPU is here: run scripts/bench-gpu.sh (builds against a CUDA torch)"}'
  else
    record gpu '{"status": "skipped", "reason": "no CUDA device on this machine (scripts/bench-gpu.sh runs it where there is one)"}'
  fi
fi

# ------------------------------------------------------------------------------------------------ 7. plan vs measured
if want 7; then
  log "7. plan's memory estimate vs measured peak RSS (CPU, fp32, ~50M model)"
  if M50=$(ensure_model llava-50m) &&
     OMP_NUM_THREADS=$JOBS "$PY" bench/plan_check.py "$LT" "$M50" "$WORK/plan-check" >"$WORK/plan_check.json" 2>"$WORK/plan_check.err"; then
    record plan_check "$(cat "$WORK/plan_check.json")"
  else
    record plan_check "$(fail_json "$(cat "$WORK/plan_check.err")")"
  fi
fi

# ------------------------------------------------------------------------------------------------ 8. data at scale
if want 8; then
  log "8. data start-up at scale (665K-sample LLaVA-mix-like JSON, 1.5 GB multi-image base64 JSON)"
  DS=$WORK/data-scale; N_MIX=665000; N_MULTI=4400; ROUNDS8=1
  (( QUICK )) && { DS=$WORK/data-scale-quick; N_MIX=66500; N_MULTI=440; ROUNDS8=1; }
  ok=1
  [[ -f "$DS/mix665k.json" ]] || "$PY" bench/make_data_scale.py llava_mix "$DS" --n $N_MIX >&2 || ok=0
  [[ -f "$DS/multi_b64.json" ]] || "$PY" bench/make_data_scale.py multi_b64 "$DS" --n $N_MULTI >&2 || ok=0
  ensure_demo
  [[ -f "$DS/one_b64.json" ]] || "$PY" bench/make_data_scale.py one_b64 "$DS" --n 200 --conversations "$WORK/demo/train.json" >&2 || ok=0
  SHAPE=$WORK/models/llava-v1.5-7b-shape
  [[ -f "$SHAPE/config.json" ]] || "$PY" bench/make_model.py llava-v1.5-7b-shape "$SHAPE" --tokenizer_dir "$WORK/demo/tokenizer" --no_weights >/dev/null
  if (( HAVE_FIXTURE )); then M=$FIXTURE; else M=$(ensure_model llava-tiny); fi
  if (( ok && TRAIN_AVAILABLE )); then
    "$PY" bench/data_scale.py "$LT" "$M" "$WORK/data-scale-runs" --mix "$DS/mix665k.json" --mix_images "$DS/images" \
      --multi "$DS/multi_b64.json" --index_bench "$BIN/bench_data_index" --floor_bench "$BIN/bench_torch_floor" --python "$PY" --rounds $ROUNDS8 \
      >"$WORK/data_scale.json" 2>"$WORK/data_scale.err" || fail_json "$(cat "$WORK/data_scale.err")" >"$WORK/data_scale.json"
  elif (( ok )); then
    echo "$PENDING" >"$WORK/data_scale.json"
  else
    fail_json "could not generate the data sets" >"$WORK/data_scale.json"
  fi
  pin "$BIN/bench_example" "$SHAPE" "$DS/one_b64.json" --pad --rounds 5 --samples 120 >"$WORK/example.json" 2>"$WORK/example.err" ||
    fail_json "$(cat "$WORK/example.err")" >"$WORK/example.json"
  record data_scale "$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); d["example"]=json.load(open(sys.argv[2])); print(json.dumps(d))' "$WORK/data_scale.json" "$WORK/example.json")"
fi

TOTAL_S=$(( $(date +%s) - T_START ))
mkdir -p "$(dirname "$OUTPUT")"
"$PY" bench/report.py "$RES" "$OUTPUT" --total_seconds "$TOTAL_S"
log "done in ${TOTAL_S}s (build ${BUILD_S}s); JSON: $OUTPUT"
