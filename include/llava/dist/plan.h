#pragma once
// Per-rank memory estimate of a LLaVA training run (llava-train plan). No torch here.
#include <cstdint>
#include <string>
#include <vector>

namespace llava::dist {

// The sizes that decide memory. Filled from model configs (cmd_plan) or a preset.
struct PlanModel {
  std::string name;
  // LLM (LLaMA; Qwen2: qkv_bias)
  int64_t vocab = 32000, hidden = 4096, intermediate = 11008, layers = 32, heads = 32, kv_heads = 32, head_dim = 128;
  bool tie_embeddings = false;
  bool qkv_bias = false;  // Qwen2: biases on q, k, v
  // vision tower (CLIP ViT; SigLIP: no CLS / pre-LayerNorm, patch bias, optional pooling head)
  int64_t v_hidden = 1024, v_intermediate = 4096, v_layers = 24, v_heads = 16, image_size = 336, patch_size = 14;
  bool siglip = false, siglip_head = false;
  // projector: number of linear layers (mlp2x_gelu = 2, linear = 1, identity = 0)
  int64_t projector_linears = 2;
  // LLaVA-1.6 anyres: an image is up to `tiles_per_image` tiles through the tower and projector and takes up
  // to `positions_per_image` LLM positions (part of model_max_length); 1 / 0 = one tile of image_tokens().
  int64_t tiles_per_image = 1, positions_per_image = 0;

  int64_t image_tokens() const { return (image_size / patch_size) * (image_size / patch_size); }
  int64_t image_positions() const { return positions_per_image > 0 ? positions_per_image : image_tokens(); }
  int64_t llm_params() const;
  int64_t vision_params() const;
  int64_t projector_params() const;
  int64_t lora_params(int64_t r) const;  // LoRA A and B on q, k, v, o, gate, up, down of every LLM layer
};

// Known models, so `plan` needs no model directory: llava-v1.5-7b, llava-v1.5-13b (vicuna + CLIP-L/336 +
// mlp2x_gelu), llava-v1.6-vicuna-7b / -13b and llava-v1.6-mistral-7b (the same tower, anyres at 336 px with
// LLaVA-1.6's pinpoints: up to 5 tiles and 2,928 positions per image), llava-next-interleave-qwen-7b / -0.5b
// (Qwen1.5-7B/0.5B + SigLIP-so400m/14-384 with its last layer and head dropped, as LLaVA-NeXT and llava-hf use
// it, + mlp2x_gelu; also under the llava-hf names llava-interleave-qwen-7b-hf / -0.5b-hf), vicuna-7b-v1.5 /
// vicuna-13b-v1.5 / llama-2-7b / llama-2-13b / mistral-7b-instruct-v0.2 (the LLM, with the default vision
// tower and projector). Matching ignores case and any "owner/" prefix; false for other names.
bool plan_preset(const std::string& name, PlanModel& out);
std::vector<std::string> plan_preset_names();

struct PlanSettings {
  int world_size = 1;
  int64_t batch = 16;          // per_device_train_batch_size
  int64_t seq = 2048;          // model_max_length (image tokens included)
  int gradient_accumulation_steps = 1;
  bool bf16 = true;            // weights and gradients in bf16 (else fp32)
  bool fused_attention = true; // flash / memory-efficient SDPA (LibTorch >= 2.0) vs eager attention (1.13)
  // what trains (LLaVA's flags)
  bool tune_mm_mlp_adapter = false, freeze_backbone = false, freeze_mm_mlp_adapter = false;
  bool unfreeze_mm_vision_tower = false, lora_enable = false;
  int64_t lora_r = 64;
  int64_t bucket_bytes = 25ll << 20;
};

// Bytes per rank; see plan.cpp for the formulas.
struct MemoryEstimate {
  double weights = 0, grads = 0, master = 0, adam = 0, buffers = 0, activations = 0;
  double total() const { return weights + grads + master + adam + buffers + activations; }
};

struct ParamCounts {
  int64_t llm = 0, vision = 0, projector = 0, lora = 0, trainable = 0, total = 0;
  std::string trainable_what;  // "LLM + projector", ...
};
ParamCounts count_params(const PlanModel& m, const PlanSettings& s);

MemoryEstimate estimate_memory(const PlanModel& m, const PlanSettings& s, int zero_stage, bool gradient_checkpointing);

// The report `llava-train plan` prints: model summary, one row per ZeRO stage x checkpointing, totals, and
// whether each fits a GPU of gpu_gib GiB.
std::string plan_report(const PlanModel& m, const PlanSettings& s, double gpu_gib = 80.0);

}  // namespace llava::dist
