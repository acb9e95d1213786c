#pragma once
// What trains: LLaVA's train() freezing rules, applied to the model's parameters (requires_grad).
#include <string>

#include "llava/model/llava.h"

namespace llava {

struct StageOptions {
  bool tune_mm_mlp_adapter = false;      // pretraining: the projector only
  bool freeze_backbone = false;          // the LLM body (lm_head stays trainable, as LLaVA's model.model)
  bool freeze_mm_mlp_adapter = false;
  bool unfreeze_mm_vision_tower = false;
  bool lora_enable = false;              // the LLM frozen, its LoRA adapters trained
};

// LLaVA's train(), in its order: vision tower frozen unless unfrozen; finetune trains the LLM (embed_tokens,
// layers, norm, lm_head) and the projector; --freeze_backbone freezes the LLM body; LoRA freezes the whole
// LLM and trains the adapters (parameters named *.lora_A / *.lora_B); --tune_mm_mlp_adapter trains the
// projector only; then --freeze_mm_mlp_adapter and --unfreeze_mm_vision_tower adjust. LLaVA-1.6's image_newline
// sits in LLaVA's model.model: it trains in finetune and is frozen by --tune_mm_mlp_adapter (requires_grad_(False)
// before the projector is re-enabled), --freeze_backbone and LoRA (PEFT freezes it). Returns the stage's
// name for the log ("finetune", "pretrain (projector only)", ...).
std::string apply_stage(LlavaForCausalLMImpl& model, const StageOptions& options);

}  // namespace llava
