#pragma once
// An optional add-on to one of the LLaMA layers' projections: the layer computes y = proj(x) and then
// adapter->forward(x, y). The model only knows this interface; LoRA (train/lora_linear.h) implements it, so the
// model code has no train/ dependency. An adapter that holds parameters must be registered as a module
// somewhere under the decoder layer that uses it: gradient checkpointing recomputes a layer and differentiates
// it w.r.t. that layer's parameters() only.
namespace at {
class Tensor;
}

namespace llava {

class LinearAdapter {
 public:
  virtual ~LinearAdapter() = default;
  // x: the projection's input, y = proj(x); returns the projection's adapted output.
  virtual at::Tensor forward(const at::Tensor& x, const at::Tensor& y) = 0;
  // Whether forward draws random numbers (dropout in training mode): gradient checkpointing then keeps the
  // generator state so the recomputation draws the same.
  virtual bool draws_random_numbers() const { return false; }
};

}  // namespace llava
