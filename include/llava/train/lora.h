#pragma once
// LoRA on the LLM's q,k,v,o,gate,up,down projections (LLaVA's finetune_lora: every nn.Linear of the LLM
// except lm_head), computed as PEFT's lora.Linear does: y = W0 x + (alpha/r) * B A dropout(x).
//
// How: each projection of the LLaMA layers has an optional adapter (model/linear_adapter.h); Lora puts a
// LoraLinear (train/lora_linear.h) there. The adapters are registered as a child module "lora" of each
// decoder layer (names like language_model.model.layers.0.lora.q_proj.lora_A), so the model's gradient
// checkpointing, which recomputes a layer and differentiates it w.r.t. the layer's parameters, sees them
// (and restores the RNG state, so a recomputed dropout mask is the forward's), and so do the optimizer,
// ZeRO and DDP, which iterate the model's parameters. The frozen W0 are never touched until merge().
// Cost per projection and forward: A's output [.., r] (and, with dropout, the dropped input and its mask);
// no weight-sized W0 + scale * B A temporary is formed.
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "llava/model/llava.h"
#include "llava/train/lora_linear.h"

namespace llava {

struct LoraOptions {
  int r = 64;
  int alpha = 16;
  double dropout = 0.0;  // on the adapters' input, in training mode only
};

class Lora {
 public:
  // Attaches zero-effect adapters (A ~ kaiming-uniform as PEFT, B = 0) in the weights' dtype and device; uses
  // torch's global RNG (seed it first). From then on the model's forward includes them.
  Lora(LlavaForCausalLMImpl& model, LoraOptions options);
  // Takes the adapters off the model (unless merged): it computes the base model again.
  ~Lora();
  Lora(const Lora&) = delete;
  Lora& operator=(const Lora&) = delete;

  // Folds the adapters into W0 for good (in fp32, rounded once to the weight's dtype) and takes them off the
  // model: it is a plain LLaVA model again.
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
    std::string name;                        // language_model.model.layers.0.self_attn.q_proj
    torch::nn::LinearImpl* linear;           // the frozen projection (W0)
    std::shared_ptr<LinearAdapter>* slot;    // the model's adapter member for it
    std::shared_ptr<LoraLinearImpl> adapter;
  };
  void attach_children();
  void detach_children();
  void detach_adapters();

  LlavaForCausalLMImpl& model_;
  LoraOptions opt_;
  double scale_;
  std::vector<Target> targets_;
  std::vector<std::shared_ptr<torch::nn::Module>> children_;  // one "lora" module per decoder layer
  bool merged_ = false;
};

}  // namespace llava
