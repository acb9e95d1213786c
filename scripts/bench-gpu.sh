#!/usr/bin/env bash
# GPU checks and benchmark (issue #6 item 6), for a machine with an NVIDIA GPU and a CUDA LibTorch
# (python3's torch, or LIBTORCH / Torch_DIR):
#   1. builds llava-train and the CUDA tests against that LibTorch (CUDA + NCCL where found);
#   2. runs the CUDA tests (tests/test_cuda.cpp: fixture trajectories on the GPU, GPU vs CPU, bf16, NCCL);
#   3. trains the tiny fixture model (or a random one of its shape) and a ~1 B-parameter model for a few
#      steps in bf16 with llava-train and with the plain-PyTorch reference (bench/train_step_py.py, autocast
#      bf16, SDPA attention) on the same batch, and reports tokens/s and MFU (bench/gpu_report.py).
# Writes bench/results-gpu.json (or --output) and prints a table.
#
# usage: scripts/bench-gpu.sh [--output FILE] [--skip-tests] [--skip-1b] [--steps N]
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

OUTPUT=bench/results-gpu.json
SKIP_TESTS=0; SKIP_1B=0; STEPS=10
while (( $# )); do
  case "$1" in
    --output) OUTPUT=$2; shift 2 ;;
    --skip-tests) SKIP_TESTS=1; shift ;;
    --skip-1b) SKIP_1B=1; shift ;;
    --steps) STEPS=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "bench-gpu.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

PY=${BENCH_PYTHON:-python3}
export PYTHONDONTWRITEBYTECODE=1
BUILD=${LLAVA_BENCH_BUILD_DIR:-build-gpu}
WORK=$BUILD/bench-work
SHARED=${LLAVA_SHARED_DIR:-$ROOT/../shared}
FIXTURE=$SHARED/fixtures/llava-tiny
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
log() { echo "[bench-gpu $(date +%H:%M:%S)] $*" >&2; }

"$PY" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null ||
  { echo "bench-gpu.sh: $PY's torch sees no CUDA device" >&2; exit 1; }
GPU=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))')
log "GPU: $GPU; torch $("$PY" -c 'import torch; print(torch.__version__)')"

# ---- 1. build
GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
T0=$(date +%s)
if ! cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DLLAVA_SHARED_DIR="$SHARED" \
       ${CMAKE_EXTRA_ARGS:-} >"$WORK/cmake.log" 2>&1 ||
   ! cmake --build "$BUILD" -j"$(nproc)" --target llava-train test_cuda >>"$WORK/cmake.log" 2>&1; then
  grep -E "error|Error" -A3 "$WORK/cmake.log" | head -60 >&2
  echo "bench-gpu.sh: build failed; log: $WORK/cmake.log" >&2
  exit 1
fi
LT=$(cd "$BUILD" && pwd)/llava-train
log "built in $(( $(date +%s) - T0 )) s: $("$LT" --version)"

# ---- 2. CUDA tests
if (( ! SKIP_TESTS )); then
  log "CUDA tests"
  "$BUILD/tests/test_cuda" 2>&1 | tee "$WORK/test_cuda.log" | grep -E "^\[ *(OK|FAILED|SKIPPED|PASSED) *\]|step|Failure" >&2
fi

# ---- 3. benchmark: tiny and ~1 B
"$LT" demo-data --output_dir "$WORK/demo" >"$WORK/demo.log" 2>&1 || { log "demo-data failed"; cat "$WORK/demo.log" >&2; exit 1; }
"$PY" bench/make_train_data.py "$WORK/demo" "$WORK/traindata" >/dev/null || exit 1
if [[ -f "$FIXTURE/model.safetensors" ]]; then
  TINY=$FIXTURE; TINY_DATA=$FIXTURE/data.json; TINY_IMAGES=$FIXTURE/images; TINY_BS=6
else
  TINY=$WORK/models/llava-tiny
  "$PY" bench/make_model.py llava-tiny "$TINY" --tokenizer_dir "$WORK/demo/tokenizer" >/dev/null || exit 1
  TINY_DATA=$WORK/traindata/data_demo_b6.json; TINY_IMAGES=$WORK/demo/images; TINY_BS=6
fi
SPECS=("tiny|$TINY|$TINY_DATA|$TINY_IMAGES|$TINY_BS|$(( STEPS * 3 ))")
if (( ! SKIP_1B )); then
  M1B=$WORK/models/llava-1b
  if [[ ! -f "$M1B/model.safetensors" ]]; then
    log "writing a random ~1 B-parameter model"
    "$PY" bench/make_model.py llava-1b "$M1B" --tokenizer_dir "$WORK/demo/tokenizer" --init tile >/dev/null || exit 1
  fi
  SPECS+=("1b|$M1B|$WORK/traindata/data_demo_b8.json|$WORK/demo/images|8|$STEPS")
fi

REPORT=()
for spec in "${SPECS[@]}"; do
  IFS='|' read -r name model data images bs steps <<<"$spec"
  log "$name: batch $bs, $steps timed steps (bf16)"
  pre=$WORK/pre_$name.jsonl
  "$LT" preprocess --model_name_or_path "$model" --data_path "$data" --image_folder "$images" --output "$pre" \
    >/dev/null 2>"$WORK/pre_$name.err" || { cat "$WORK/pre_$name.err" >&2; continue; }
  "$PY" bench/train_step_py.py bench "$model" --preprocessed "$pre" --data_path "$data" --image_folder "$images" \
    --batch_size "$bs" --steps "$steps" --warmup 3 --device cuda --bf16 --attention sdpa \
    >"$WORK/gpu_py_$name.json" 2>"$WORK/gpu_py_$name.err" || tail -5 "$WORK/gpu_py_$name.err" >&2
  OD=$WORK/run-gpu-$name; rm -rf "$OD"
  "$LT" train --model_name_or_path "$model" --data_path "$data" --image_folder "$images" --device cuda --bf16 \
    --per_device_train_batch_size "$bs" --max_steps $(( steps + 3 )) --shuffle false --dataloader_num_workers 2 \
    --learning_rate 1e-5 --lr_scheduler_type constant --logging_steps 1000 --save_steps 100000 \
    --output_dir "$OD" >"$OD.log" 2>&1 &&
    "$PY" bench/metrics_summary.py step "$OD" --warmup 3 >"$WORK/gpu_lt_$name.json" || tail -5 "$OD.log" >&2
  REPORT+=("$name:$model:$WORK/gpu_py_$name.json:$WORK/gpu_lt_$name.json")
done
"$PY" bench/gpu_report.py "$WORK/report.json" "${REPORT[@]}" | tee "$WORK/table.md"
"$PY" - "$WORK/report.json" "$OUTPUT" "$GPU" <<'EOF'
import datetime, json, subprocess, sys
rep = json.load(open(sys.argv[1]))
rep["machine"] = {"gpu": sys.argv[3], "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                  "git_commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                               text=True).stdout.strip()}
json.dump(rep, open(sys.argv[2], "w"), indent=1)
EOF
log "wrote $OUTPUT"
