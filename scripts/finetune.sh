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
# Two stages as LLaVA's: captions of single images (configs/tiny-demo-captions.yaml), then the multi-image
# questions (configs/tiny-demo.yaml); the held-out questions are scored before and after, answers generated.
DEMO=${LLAVA_DEMO_DIR:-$ROOT/demo_run}
BIN=$LLAVA_TRAIN  # build/llava-train unless LLAVA_TRAIN names another (scripts/launch.sh)
STAGE2=configs/tiny-demo.yaml
echo "== demo: synthetic multi-image data, captions and tokenizer in $DEMO/data"
"$BIN" demo-data --output_dir "$DEMO/data" --seed 1
echo "== demo: a small random LLaVA model in $DEMO/model"
"$BIN" init-model --model_config "$DEMO/data/model_config.json" --tokenizer_dir "$DEMO/data/tokenizer" \
  --output_dir "$DEMO/model" --seed 1
"$BIN" check-data --config "$STAGE2" --model_name_or_path "$DEMO/model" --data_path "$DEMO/data/train.json" \
  --image_folder "$DEMO/data/images"

# Held-out loss, token accuracy and exact-match of the generated last answers (one JSON line), then
# three examples: the whole prompt (earlier rounds and their images), reference answer, generated answer.
demo_eval() {
  "$BIN" eval --config "$STAGE2" --model_name_or_path "$1" --data_path "$DEMO/data/eval.json" \
    --image_folder "$DEMO/data/images" --generate true --max_new_tokens 16 --show_examples 3 \
    --output "$2" 2> "$2.log" | tail -n 1
  sed -n '/^example/,/^  generated/p' "$2.log"
}
echo "== demo: held-out evaluation before training"
demo_eval "$DEMO/model" "$DEMO/eval_before.jsonl"
rm -rf "$DEMO/captions" "$DEMO/output"
echo "== demo: stage 1 on CPU, image captions (configs/tiny-demo-captions.yaml)"
launch_llava_train -- train --config configs/tiny-demo-captions.yaml --model_name_or_path "$DEMO/model" \
  --data_path "$DEMO/data/captions.json" --image_folder "$DEMO/data/images" --output_dir "$DEMO/captions"
echo "== demo: stage 2 on CPU, multi-image questions ($STAGE2)"
launch_llava_train -- train --config "$STAGE2" --model_name_or_path "$DEMO/captions" \
  --data_path "$DEMO/data/train.json" --image_folder "$DEMO/data/images" --output_dir "$DEMO/output"
echo "== demo: held-out evaluation after training"
demo_eval "$DEMO/output" "$DEMO/eval_after.jsonl"
