// apply_stage: LLaVA's freezing rules and LLaVA-NeXT's mm_tunable_parts (stage.h).
#include "llava/train/stage.h"

#include <sstream>

#include "llava/error.h"

namespace llava {

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

std::string trimmed(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

struct ParameterPart {
  bool vision, projector, adapter;  // the vision tower's, the projector's, a LoRA adapter matrix
};

// Which part of the model a parameter belongs to, by its name.
ParameterPart part_of(const std::string& name) {
  return {starts_with(name, "vision_tower."), starts_with(name, "multi_modal_projector."),
          ends_with(name, ".lora_A") || ends_with(name, ".lora_B")};
}

// LLaVA-NeXT's train(): model.requires_grad_(False), then each listed part's parameters.
void apply_tunable_parts(LlavaForCausalLMImpl& model, const TunableParts& parts, bool lora_enable) {
  for (auto& item : model.named_parameters()) {
    const std::string& name = item.key();
    const auto [vision, projector, adapter] = part_of(name);
    bool train = false;
    if (vision) train = parts.vision_tower;
    else if (projector) train = parts.mlp_adapter;
    else if (lora_enable) train = parts.language_model && (adapter || name == "image_newline");
    else train = parts.language_model;
    item.value().set_requires_grad(train);
  }
}

}  // namespace

std::string TunableParts::describe() const {
  std::string out;
  auto add = [&](bool on, const char* what) {
    if (on) out += (out.empty() ? "" : " + ") + std::string(what);
  };
  add(vision_tower, "vision tower");
  add(mlp_adapter, "projector");
  add(language_model, "LLM");
  add(vision_resampler, "vision resampler (none: no parameters)");
  return out;
}

TunableParts parse_tunable_parts(const std::string& list) {
  TunableParts p;
  std::stringstream in(list);
  std::string part;
  bool any = false;
  while (std::getline(in, part, ',')) {
    part = trimmed(part);
    if (part.empty()) continue;
    any = true;
    if (part == "mm_vision_tower") p.vision_tower = true;
    else if (part == "mm_mlp_adapter") p.mlp_adapter = true;
    else if (part == "mm_language_model") p.language_model = true;
    else if (part == "mm_vision_resampler") p.vision_resampler = true;
    else
      throw Error("--mm_tunable_parts: unknown part '" + part +
                  "' (parts: mm_vision_tower, mm_mlp_adapter, mm_language_model, mm_vision_resampler)");
  }
  if (!any) throw Error("--mm_tunable_parts is empty: list the parts that train, e.g. mm_mlp_adapter");
  return p;
}

std::string apply_stage(LlavaForCausalLMImpl& model, const StageOptions& o) {
  if (o.tunable_parts) {
    apply_tunable_parts(model, *o.tunable_parts, o.lora_enable);
    return "mm_tunable_parts: " + o.tunable_parts->describe() + (o.lora_enable ? " (LLM via LoRA)" : "") +
           (o.overridden.empty() ? "" : " (overrides " + o.overridden + ", as LLaVA-NeXT)");
  }
  for (auto& item : model.named_parameters()) {
    const std::string& name = item.key();
    const auto [vision, projector, adapter] = part_of(name);
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
