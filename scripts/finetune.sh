#!/usr/bin/env bash
# Stage 2 (visual instruction tuning), in the shape of LLaVA's scripts/v1_5/finetune.sh.
#
#   scripts/finetune.sh                      the built-in multi-image demo on CPU: sets up, builds, makes a
#                                            synthetic data set and a small model, trains, evaluates held-out
#   scripts/finetune.sh [launcher flags] [llava-train flags]
#                                            LLaVA-1.5 fine-tuning with your data; launcher flags as torchrun's:
#                                            --nproc_per_node N --nnodes N --node_rank R --master_addr A --master_port P
# Example (8 GPUs, LLaVA-1.5-7B, the recipe of configs/llava-v1.5-7b-finetune.yaml):
#   scripts/finetune.sh --nproc_per_node 8 --config configs/llava-v1.5-7b-finetune.yaml \
#       --model_name_or_path ./vicuna-7b-v1.5 --vision_tower ./clip-vit-large-patch14-336 \
#       --pretrain_mm_mlp_adapter ./checkpoints/llava-v1.5-7b-pretrain/mm_projector.safetensors \
#       --data_path ./playground/data/llava_v1_5_mix665k.json --image_folder ./playground/data \
#       --output_dir ./checkpoints/llava-v1.5-7b
#
# Environment: LLAVA_TRAIN=PATH runs that binary; LLAVA_SKIP_SETUP=1 skips scripts/setup.sh (install + build),
# for a binary built already (the data-parallel tests start this script that way).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
[[ "${LLAVA_SKIP_SETUP:-0}" == 1 ]] || "$ROOT/scripts/setup.sh" >&2
source "$ROOT/scripts/launch.sh"

if [[ $# -gt 0 ]]; then
  launch_llava_train "$@"
  exit $?
fi

# ---- the built-in demo ----
DEMO=${LLAVA_DEMO_DIR:-$ROOT/demo_run}
BIN=$LLAVA_TRAIN  # build/llava-train unless LLAVA_TRAIN names another (scripts/launch.sh)
echo "== demo: synthetic multi-image data and tokenizer in $DEMO/data"
"$BIN" demo-data --output_dir "$DEMO/data" --seed 1
echo "== demo: a small random LLaVA model in $DEMO/model"
"$BIN" init-model --model_config "$DEMO/data/model_config.json" --tokenizer_dir "$DEMO/data/tokenizer" \
  --output_dir "$DEMO/model" --seed 1
"$BIN" check-data --model_name_or_path "$DEMO/model" --data_path "$DEMO/data/train.json" \
  --image_folder "$DEMO/data/images" --model_max_length 512
echo "== demo: training on CPU (configs/tiny-demo.yaml)"
rm -rf "$DEMO/output"
launch_llava_train -- train --config configs/tiny-demo.yaml --model_name_or_path "$DEMO/model" \
  --data_path "$DEMO/data/train.json" --image_folder "$DEMO/data/images" --output_dir "$DEMO/output"
echo "== demo: held-out evaluation (before and after training)"
"$BIN" eval --model_name_or_path "$DEMO/model" --data_path "$DEMO/data/eval.json" \
  --image_folder "$DEMO/data/images" --model_max_length 512 --output "$DEMO/eval_before.jsonl" | tail -n 1
"$BIN" eval --model_name_or_path "$DEMO/output" --data_path "$DEMO/data/eval.json" \
  --image_folder "$DEMO/data/images" --model_max_length 512 --output "$DEMO/eval_after.jsonl" | tail -n 1
