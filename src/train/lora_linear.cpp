#include "llava/train/lora_linear.h"

#include <cmath>

namespace llava {

LoraLinearImpl::LoraLinearImpl(int64_t in_features, int64_t out_features, int64_t r, double scale, double dropout,
                               const torch::TensorOptions& options)
    : scale_(scale), dropout_(dropout) {
  torch::NoGradGuard no_grad;
  // A drawn in fp32 on the CPU whatever the model's dtype and device: the same init (and the same draws from
  // the default CPU generator) for every run with the same seed.
  torch::Tensor a = torch::empty({r, in_features}, torch::kFloat);
  torch::nn::init::kaiming_uniform_(a, std::sqrt(5.0));
  lora_A = register_parameter("lora_A", a.to(options));
  lora_B = register_parameter("lora_B", torch::zeros({out_features, r}, options));
}

torch::Tensor LoraLinearImpl::forward(const torch::Tensor& x, const torch::Tensor& y) {
  // PEFT: result + lora_B(lora_A(dropout(x))) * scaling; the frozen path y never sees the dropout.
  torch::Tensor h = draws_random_numbers() ? torch::dropout(x, dropout_, /*train=*/true) : x;
  return y + torch::linear(torch::linear(h, lora_A), lora_B) * scale_;
}

torch::Tensor LoraLinearImpl::delta_weight() const {
  return scale_ * torch::mm(lora_B.to(torch::kFloat), lora_A.to(torch::kFloat));
}

}  // namespace llava
