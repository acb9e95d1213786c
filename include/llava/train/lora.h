#pragma once
// LoRA on the LLM's q,k,v,o,gate,up,down projections (LLaVA's finetune_lora: every nn.Linear of the LLM
// except lm_head), as PEFT's lora.Linear computes it: y = W0 x + (alpha/r) * B A dropout(x).
//
// Installed by module replacement: each projection of every decoder layer is swapped (replace_module) for a
// LoraLinear that wraps it as "base_layer" (PEFT's names: ...q_proj.base_layer.weight, ...q_proj.lora_A,
// ...q_proj.lora_B). So the adapters are ordinary parameters of the decoder layer (gradient checkpointing,
// the optimizer and the gradient reducer see them), and the base model's checkpoint names skip them
// (model/linear_layer.h). The frozen W0 is never touched until merge_lora().
// Cost per projection and forward: A's output [.., r] (and, with dropout, the dropped input and its mask).
#include <torch/torch.h>

#include <memory>
#include <string>

#include "llava/model/linear_layer.h"
#include "llava/model/llava.h"

namespace llava {

struct LoraOptions {
  int r = 64;
  int alpha = 16;
  double dropout = 0.0;  // on the adapters' input, in training mode only
};

class LoraLinearImpl : public LinearLayerImpl {
 public:
  // A ~ kaiming-uniform(a=sqrt(5)) (PEFT's init, drawn in fp32 on the CPU from torch's default generator),
  // B = 0: the adapter starts with no effect. Parameters in the base weight's dtype and device.
  LoraLinearImpl(std::shared_ptr<DenseImpl> base, const LoraOptions& options);

  // base(x) + scale * B(A(dropout(x))); dropout draws from torch's default generator of x's device, so it
  // is reproducible under torch::manual_seed and resumes exactly with the saved RNG state.
  torch::Tensor forward(const torch::Tensor& x) override;
  bool draws_random_numbers() const override { return dropout_ > 0 && is_training(); }
  std::shared_ptr<LinearLayerImpl> wrapped() const override { return base_layer; }
  torch::Tensor delta_weight() const;  // scale * B @ A in fp32: what merging adds to W0

  std::shared_ptr<DenseImpl> base_layer;
  torch::Tensor lora_A, lora_B;  // [r, in], [out, r]

 private:
  double scale_, dropout_;
};

// Wraps every projection of every decoder layer (torch's global RNG draws the A matrices: seed it first).
void install_lora(LlavaForCausalLMImpl& model, const LoraOptions& options);
// Folds the adapters into W0 (in fp32, rounded once to the weight's dtype) and puts the plain projections
// back: the model is a plain LLaVA model again.
void merge_lora(LlavaForCausalLMImpl& model);
int64_t lora_numel(const LlavaForCausalLMImpl& model);  // parameters of the installed adapters

// PEFT layout: adapter_model.safetensors (base_model.model.<projection>.lora_A.weight / lora_B.weight, as
// PEFT names them on LlavaForConditionalGeneration) + adapter_config.json.
void save_lora_adapter(const LlavaForCausalLMImpl& model, const std::string& dir, const std::string& base_model,
                       const LoraOptions& options);
void load_lora_adapter(LlavaForCausalLMImpl& model, const std::string& dir);

}  // namespace llava
