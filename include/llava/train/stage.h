#pragma once
// What trains: LLaVA's train() freezing rules, applied to the model's parameters (requires_grad).
#include <optional>
#include <string>

#include "llava/model/llava.h"

namespace llava {

// LLaVA-NeXT's --mm_tunable_parts: the parts that train, everything else frozen.
struct TunableParts {
  bool vision_tower = false;     // mm_vision_tower: every vision_tower.* parameter
  bool mlp_adapter = false;      // mm_mlp_adapter: the projector
  bool language_model = false;   // mm_language_model: everything else (the LLM, lm_head, image_newline)
  bool vision_resampler = false; // mm_vision_resampler: LLaVA-NeXT's resampler, an identity without parameters
                                 // unless --mm_resampler_type (which llava-train has not): trains nothing
  bool projector_only() const { return mlp_adapter && !vision_tower && !language_model && !vision_resampler; }
  std::string describe() const;  // "vision tower + projector + LLM"
};

// "mm_vision_tower,mm_mlp_adapter,mm_language_model" (any order, blanks around names ignored). Throws
// llava::Error naming the flag for an empty list or an unknown part.
TunableParts parse_tunable_parts(const std::string& list);

struct StageOptions {
  bool tune_mm_mlp_adapter = false;      // pretraining: the projector only (also set for mm_tunable_parts
                                         // mm_mlp_adapter alone: the trainer's projector-only save keys on it)
  bool freeze_backbone = false;          // the LLM body (lm_head stays trainable, as LLaVA's model.model)
  bool freeze_mm_mlp_adapter = false;
  bool unfreeze_mm_vision_tower = false;
  bool lora_enable = false;              // the LLM frozen, its LoRA adapters trained
  // --mm_tunable_parts: when set, it alone decides (LLaVA-NeXT's precedence: the four flags above are ignored).
  std::optional<TunableParts> tunable_parts;
  std::string overridden;  // the stage flags that were given too and are ignored ("--freeze_backbone"), for the log
};

// LLaVA's train(), in its order: vision tower frozen unless unfrozen; finetune trains the LLM (embed_tokens,
// layers, norm, lm_head) and the projector; --freeze_backbone freezes the LLM body; LoRA freezes the whole
// LLM and trains the adapters (parameters named *.lora_A / *.lora_B); --tune_mm_mlp_adapter trains the
// projector only; then --freeze_mm_mlp_adapter and --unfreeze_mm_vision_tower adjust. LLaVA-1.6's image_newline
// sits in LLaVA's model.model: it trains in finetune and is frozen by --tune_mm_mlp_adapter (requires_grad_(False)
// before the projector is re-enabled), --freeze_backbone and LoRA (PEFT freezes it).
// With tunable_parts, LLaVA-NeXT's rule instead: everything frozen, then each listed part trains; with LoRA,
// mm_language_model trains the adapters and image_newline (the base weights stay frozen: LLaVA-NeXT would
// unfreeze them too, turning LoRA into a full fine-tune). Returns the stage's name for the log ("finetune",
// "pretrain (projector only)", "mm_tunable_parts: vision tower + projector + LLM", ...).
std::string apply_stage(LlavaForCausalLMImpl& model, const StageOptions& options);

}  // namespace llava
