#pragma once
// LLaVA's multimodal projector: `linear` or `mlp{N}x_gelu` = Linear, GELU(erf), Linear, ... (builder.py).
// Registered with HF LlavaMultiModalProjector names linear_1, linear_2, ... (original LLaVA's
// mm_projector.0 / .2 / ... are mapped by the checkpoint code).
#include <torch/torch.h>

#include <string>
#include <vector>

namespace llava {

class ProjectorImpl : public torch::nn::Module {
 public:
  ProjectorImpl(const std::string& type, int64_t vision_hidden, int64_t text_hidden);
  torch::Tensor forward(const torch::Tensor& x);  // [..., vision_hidden] -> [..., text_hidden]
  const std::string& type() const { return type_; }
  // PyTorch's default Linear init (kaiming-uniform a=sqrt(5), bias U(+-1/sqrt(fan_in))), as LLaVA stage 1 starts.
  void reset_parameters();

  std::vector<torch::nn::Linear> linears;  // "linear_1", "linear_2", ...

 private:
  std::string type_;
};
TORCH_MODULE(Projector);

}  // namespace llava
