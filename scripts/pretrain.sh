#!/usr/bin/env bash
# Stage 1 (feature alignment: only the projector trains), in the shape of LLaVA's scripts/v1_5/pretrain.sh.
#   scripts/pretrain.sh [--nproc_per_node N ...] --config configs/llava-v1.5-7b-pretrain.yaml \
#       --model_name_or_path ./vicuna-7b-v1.5 --vision_tower ./clip-vit-large-patch14-336 \
#       --data_path ./playground/data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json \
#       --image_folder ./playground/data/LLaVA-Pretrain/images --output_dir ./checkpoints/llava-v1.5-7b-pretrain
# Writes output_dir/mm_projector.safetensors for --pretrain_mm_mlp_adapter of the fine-tune.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/scripts/setup.sh" >&2
source "$ROOT/scripts/launch.sh"
[[ $# -gt 0 ]] || { sed -n '2,8p' "$0"; exit 1; }
launch_llava_train "$@"
