// apply_stage: LLaVA's freezing rules (stage.h).
#include "llava/train/stage.h"

namespace llava {

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

}  // namespace

std::string apply_stage(LlavaForCausalLMImpl& model, const StageOptions& o) {
  for (auto& item : model.named_parameters()) {
    const std::string& name = item.key();
    const bool vision = starts_with(name, "vision_tower.");
    const bool projector = starts_with(name, "multi_modal_projector.");
    const bool adapter = ends_with(name, ".lora_A") || ends_with(name, ".lora_B");
    bool train = false;
    if (o.tune_mm_mlp_adapter) train = projector;
    else if (name == "image_newline") train = !o.lora_enable && !o.freeze_backbone;  // part of LLaVA's model.model
    else if (adapter || projector) train = true;
    else if (!vision) train = !o.lora_enable && !(o.freeze_backbone && starts_with(name, "language_model.model."));
    if (projector && o.freeze_mm_mlp_adapter) train = false;
    if (vision && o.unfreeze_mm_vision_tower) train = true;
    item.value().set_requires_grad(train);
  }
  if (o.tune_mm_mlp_adapter) return "pretrain (projector only)";
  if (o.lora_enable) return "finetune with LoRA";
  return o.freeze_backbone ? "finetune (LLM body frozen)" : "finetune";
}

}  // namespace llava
