#pragma once
// LoRA on the LLM's q,k,v,o,gate,up,down projections (LLaVA's finetune_lora: every nn.Linear of the LLM
// except lm_head), without touching the model's code.
//
// How: the model's Linear modules compute F::linear(x, weight) with their `weight` member. Before each forward,
// apply() points that member at W0 + (alpha/r) * B @ A (a differentiable expression of the adapters), while
// the registered parameter stays the frozen W0. So the forward is exactly the LoRA function (up to rounding),
// gradients reach A and B, and named_parameters() still lists W0. The adapters are registered as a child
// module "lora" of each decoder layer (names like language_model.model.layers.0.lora.q_proj.lora_A), so the
// model's gradient checkpointing, which differentiates w.r.t. the layer's parameters, sees them too.
//
// Limits of this approach (what a model-side hook would fix, see the trainer report):
//  - lora_dropout cannot be applied (dropout acts on the adapter's input x, which a weight cannot express);
//  - the merged weight is materialised per layer per forward (one weight-sized temporary per projection,
//    kept for backward unless gradient checkpointing is on) and its gradient is computed in backward;
//  - in bf16 the sum W0 + delta is rounded to bf16, i.e. the forward sees what the merged bf16 model will.
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "llava/model/llava.h"

namespace llava {

struct LoraOptions {
  int r = 64;
  int alpha = 16;
  double dropout = 0.0;  // recorded in adapter_config.json; not applied (see above)
};

class Lora {
 public:
  // Attaches zero-effect adapters (A ~ kaiming-uniform as PEFT, B = 0) in the weights' dtype and device; uses
  // torch's global RNG (seed it first).
  Lora(LlavaForCausalLMImpl& model, LoraOptions options);
  ~Lora();
  Lora(const Lora&) = delete;
  Lora& operator=(const Lora&) = delete;

  // Before every forward: weight := W0 + scale * B @ A (with a graph to A, B when grad mode is on).
  void apply();
  // Folds the adapters into W0 for good (in fp32, rounded once to the weight's dtype), points the weights
  // back at W0 and detaches the adapters: the model is a plain LLaVA model again.
  void merge();
  bool merged() const { return merged_; }

  // Scope in which the adapters are not among the model's parameters (saving a plain model directory).
  class Detached {
   public:
    explicit Detached(Lora& lora);
    ~Detached();

   private:
    Lora& lora_;
  };

  // PEFT layout: adapter_model.safetensors (base_model.model.<name>.lora_A.weight / lora_B.weight, as PEFT
  // names them on LlavaForConditionalGeneration) + adapter_config.json.
  void save_adapter(const std::string& dir, const std::string& base_model) const;
  void load_adapter(const std::string& dir);

  int64_t numel() const;
  double scale() const { return scale_; }

 private:
  struct Target {
    std::string name;             // language_model.model.layers.0.self_attn.q_proj
    torch::nn::LinearImpl* linear;
    torch::Tensor w0;             // the registered (frozen) weight
    torch::Tensor a, b;           // [r, in], [out, r]
  };
  void attach_children();
  void detach_children();

  LlavaForCausalLMImpl& model_;
  LoraOptions opt_;
  double scale_;
  std::vector<Target> targets_;
  std::vector<std::shared_ptr<torch::nn::Module>> children_;  // one "lora" module per decoder layer
  bool merged_ = false;
};

}  // namespace llava
