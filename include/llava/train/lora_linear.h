#pragma once
// One LoRA adapter, as PEFT's lora.Linear computes it on top of the frozen projection:
//   y + scale * B(A(dropout(x)))    (scale = alpha / r; dropout with probability p only in training mode)
// Its parameters are "lora_A" [r, in] and "lora_B" [out, r] (PEFT's lora_A.weight / lora_B.weight). Dropout
// draws from torch's default generator of x's device, so it is reproducible under torch::manual_seed and
// resumes exactly with the saved RNG state.
#include <torch/torch.h>

#include "llava/model/linear_adapter.h"

namespace llava {

class LoraLinearImpl : public torch::nn::Module, public LinearAdapter {
 public:
  // A ~ kaiming-uniform(a=sqrt(5)) (PEFT's init, drawn in fp32 on the CPU from torch's default generator),
  // B = 0: the adapter starts with no effect. Parameters in `options`' dtype and device.
  LoraLinearImpl(int64_t in_features, int64_t out_features, int64_t r, double scale, double dropout,
                 const torch::TensorOptions& options);

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& y) override;
  bool draws_random_numbers() const override { return dropout_ > 0 && is_training(); }
  // scale * B @ A in fp32: what merging adds to the projection's weight.
  torch::Tensor delta_weight() const;

  double scale() const { return scale_; }
  double dropout() const { return dropout_; }

  torch::Tensor lora_A, lora_B;

 private:
  double scale_, dropout_;
};

}  // namespace llava
