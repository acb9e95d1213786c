#!/usr/bin/env bash
# Stage 2 with LoRA (LLaVA's scripts/v1_5/finetune_lora.sh): LoRA on the LLM's linear layers + the projector.
#   scripts/finetune_lora.sh [--nproc_per_node N ...] --config configs/llava-v1.5-7b-lora.yaml \
#       --model_name_or_path ./vicuna-7b-v1.5 --vision_tower ./clip-vit-large-patch14-336 \
#       --pretrain_mm_mlp_adapter ./checkpoints/llava-v1.5-7b-pretrain/mm_projector.safetensors \
#       --data_path ./playground/data/llava_v1_5_mix665k.json --image_folder ./playground/data \
#       --output_dir ./checkpoints/llava-v1.5-7b-lora
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/scripts/setup.sh" >&2
source "$ROOT/scripts/launch.sh"
[[ $# -gt 0 ]] || { sed -n '2,7p' "$0"; exit 1; }
launch_llava_train "$@"
