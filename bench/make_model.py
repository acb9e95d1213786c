#!/usr/bin/python3
"""Writes a randomly initialised HF LLaVA model directory (config.json model_type llava,
model.safetensors with LlavaForConditionalGeneration names, float32, preprocessor_config.json) for the
benchmarks, from a preset:

  llava-tiny  the architecture of shared/fixtures/llava-tiny (CLIP 56px, hidden 32 x 3; LLaMA 64 x 2,
              vocab 32000; ~4.2 M parameters), for checkouts without the fixtures
  llava-50m   CLIP 112px/14 (64 patches), hidden 256 x 4 layers  + LLaMA hidden 512 x 6 layers,
              8 heads / 4 kv heads, SwiGLU 1408, vocab 32000, untied lm_head           (~51 M parameters)
  llava-1g    CLIP 224px/14 (256 patches), hidden 768 x 8 layers + LLaMA hidden 1024 x 12 layers,
              16 heads / 8 kv heads, SwiGLU 2816, vocab 32000                          (~1.04 GiB float32)
  llava-1b    CLIP 224px/14, hidden 768 x 12 layers + LLaMA hidden 2048 x 16 layers, 16 heads, SwiGLU 5632,
              vocab 32000                                                         (~1.04 B parameters, GPU bench)

Init like HF _init_weights: Linear/Conv/Embedding ~ N(0, 0.02), biases 0, norms 1 (LayerNorm bias 0).
  llava-v1.5-7b-shape  LLaVA-1.5-7B's config (CLIP ViT-L/14-336, Vicuna-7B), with --no_weights only: for the
              data pipeline benchmark, which reads the config and 336 px preprocessing but no weights

--tokenizer_dir DIR copies tokenizer.model / tokenizer_config.json / special_tokens_map.json from DIR.

usage: /usr/bin/python3 bench/make_model.py PRESET OUT_DIR [--tokenizer_dir DIR] [--seed N] [--no_weights]
"""
import argparse
import json
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llava_ref  # noqa: E402

PRESETS = {
    # the fixture's architecture (shared/fixtures/llava-tiny), for checkouts without the fixtures
    "llava-tiny": dict(vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                   image_size=56, patch_size=14),
                       text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, max_position_embeddings=2048)),
    "llava-50m": dict(vision=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                                  image_size=112, patch_size=14),
                      text=dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=6, num_attention_heads=8,
                                num_key_value_heads=4, max_position_embeddings=2048)),
    "llava-1g": dict(vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=8, num_attention_heads=12,
                                 image_size=224, patch_size=14),
                     text=dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=12, num_attention_heads=16,
                               num_key_value_heads=8, max_position_embeddings=4096)),
    # ~1.04 B parameters for the GPU benchmark: CLIP ViT-B/14 at 224 px (256 patches) + a LLaMA of 2048 x 16
    "llava-1b": dict(vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                                 image_size=224, patch_size=14),
                     text=dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=16,
                               num_key_value_heads=16, max_position_embeddings=4096)),
    # LLaVA-1.5-7B's shapes (CLIP ViT-L/14-336 + Vicuna-7B); only with --no_weights (the data pipeline benchmark
    # needs its config and 336 px preprocessing, not 7B parameters)
    "llava-v1.5-7b-shape": dict(vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                            num_attention_heads=16, image_size=336, patch_size=14),
                                text=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                          num_attention_heads=32, num_key_value_heads=32,
                                          max_position_embeddings=4096)),
}


def config_json(preset):
    p = PRESETS[preset]
    vision = dict(model_type="clip_vision_model", hidden_act="quick_gelu", layer_norm_eps=1e-5, num_channels=3,
                  projection_dim=768, initializer_range=0.02, **p["vision"])
    text = dict(model_type="llama", vocab_size=32000, hidden_act="silu", rms_norm_eps=1e-5, rope_theta=10000.0,
                rope_scaling=None, tie_word_embeddings=False, attention_bias=False, initializer_range=0.02,
                bos_token_id=1, eos_token_id=2, pad_token_id=0, **p["text"])
    return dict(architectures=["LlavaForConditionalGeneration"], model_type="llava", ignore_index=-100,
                image_token_index=32000, projector_hidden_act="gelu", vision_feature_layer=-2,
                vision_feature_select_strategy="default", vocab_size=32000, pad_token_id=0,
                tie_word_embeddings=False, torch_dtype="float32", transformers_version="4.37.2",
                text_config=text, vision_config=vision)


def preprocessor_json(image_size):
    return {"crop_size": {"height": image_size, "width": image_size}, "do_center_crop": True, "do_convert_rgb": True,
            "do_normalize": True, "do_rescale": True, "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor", "image_processor_type": "CLIPImageProcessor",
            "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
            "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": image_size}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("preset", choices=sorted(PRESETS))
    ap.add_argument("out_dir")
    ap.add_argument("--tokenizer_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no_weights", action="store_true", help="config, preprocessor and tokenizer files only")
    ap.add_argument("--init", choices=["normal", "tile"], default="normal",
                    help="tile: repeat one random block of N(0, 0.02) values (fast; for load benchmarks, where "
                         "the values do not matter)")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    os.makedirs(a.out_dir, exist_ok=True)
    cfg = config_json(a.preset)
    with open(os.path.join(a.out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(a.out_dir, "preprocessor_config.json"), "w") as f:
        json.dump(preprocessor_json(cfg["vision_config"]["image_size"]), f, indent=2)
    if a.tokenizer_dir:
        for fn in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"):
            if os.path.exists(os.path.join(a.tokenizer_dir, fn)):
                shutil.copy(os.path.join(a.tokenizer_dir, fn), os.path.join(a.out_dir, fn))
    if a.no_weights:
        print(json.dumps({"preset": a.preset, "weights": False}))
        return
    with torch.no_grad():
        model = llava_ref.Llava(llava_ref.Cfg(a.out_dir))
        block = torch.empty(1 << 20).normal_(0, 0.02)
        tensors = {}
        for name, t in model.state_dict().items():
            if name.endswith("bias"):
                t = torch.zeros_like(t)
            elif "norm" in name:  # LayerNorm / RMSNorm weights
                t = torch.ones_like(t)
            elif a.init == "tile":
                n = t.numel()
                t = block[:n].repeat((n + len(block) - 1) // len(block))[:n].view_as(t).clone() if n > len(block) \
                    else block[:n].view_as(t).clone()
            else:
                t = torch.empty_like(t).normal_(0, 0.02)
            tensors[name] = t
    llava_ref.save_safetensors(tensors, os.path.join(a.out_dir, "model.safetensors"), {"format": "pt"})
    n = sum(t.numel() for t in tensors.values())
    print(json.dumps({"preset": a.preset, "parameters": n,
                      "bytes": os.path.getsize(os.path.join(a.out_dir, "model.safetensors"))}))


if __name__ == "__main__":
    main()
