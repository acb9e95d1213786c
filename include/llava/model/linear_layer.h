#pragma once
// The LLM's projections (q/k/v/o, gate/up/down) as replaceable modules. A decoder layer holds each as a
// LinearLayer: a plain Dense (nn.Linear's parameters "weight" [out, in] and "bias" [out], the same forward and
// the same default init), or a module that wraps one (LoRA, train/lora.h) and takes its place through
// replace_module. A wrapper registers the wrapped layer as its child "base_layer" (PEFT's name); its own
// parameters are not part of the base model, whose checkpoint names skip the "base_layer" level
// (base_model_parameters).
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>

namespace llava {

class LinearLayerImpl : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;  // [..., in] -> [..., out]
  // Whether forward draws random numbers (dropout in training mode): gradient checkpointing then keeps the
  // generator state so the recomputation draws the same.
  virtual bool draws_random_numbers() const { return false; }
  // The layer a wrapper wraps (its "base_layer"); null for a plain layer.
  virtual std::shared_ptr<LinearLayerImpl> wrapped() const { return nullptr; }
};

class DenseImpl : public LinearLayerImpl {
 public:
  DenseImpl(int64_t in_features, int64_t out_features, bool bias);  // torch::nn::Linear's init (or none, see param_init.h)
  torch::Tensor forward(const torch::Tensor& x) override { return torch::linear(x, weight, bias); }
  torch::Tensor weight, bias;  // bias undefined without one
};
TORCH_MODULE(Dense);

// A named projection slot of a module: the member that holds it, so a wrapper can be swapped in.
struct ProjectionSlot {
  std::string path;                          // its name from the module that lists it ("self_attn.q_proj")
  std::string name;                          // the child module's name in `owner` ("q_proj")
  torch::nn::Module* owner;                  // the module it is registered in
  std::shared_ptr<LinearLayerImpl>* member;  // its member pointer in that module
};

// Puts `layer` in the slot (replace_module + the member), returning what was there.
std::shared_ptr<LinearLayerImpl> replace_projection(const ProjectionSlot& slot, std::shared_ptr<LinearLayerImpl> layer);

// The model's parameters under their base-model names: "a.q_proj.base_layer.weight" -> "a.q_proj.weight";
// the parameters of wrappers themselves (adapters) are left out.
std::map<std::string, torch::Tensor> base_model_parameters(const torch::nn::Module& model);

}  // namespace llava
