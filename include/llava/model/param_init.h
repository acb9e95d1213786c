#pragma once
// Parameter creation for our modules, with an opt-out of the default random init.
//
// While a SkipParameterInit is alive on this thread, the helpers below (used by every module constructor
// in model/) create parameters with torch::empty: no random init, no RNG draws, no memory touched. That is
// for models whose every parameter is loaded (or explicitly initialised) right after construction, where
// the init would be overwritten: it dominated checkpoint loading. Without the guard the helpers build the
// stock torch::nn modules, so construction (and the RNG stream it consumes) is unchanged.
#include <torch/torch.h>

namespace llava {

class SkipParameterInit {
 public:
  SkipParameterInit();
  ~SkipParameterInit();
  SkipParameterInit(const SkipParameterInit&) = delete;
  SkipParameterInit& operator=(const SkipParameterInit&) = delete;

 private:
  bool previous_;
};

bool parameter_init_skipped();  // a SkipParameterInit is alive on this thread

torch::nn::Linear make_linear(const torch::nn::LinearOptions& options);
torch::nn::Embedding make_embedding(const torch::nn::EmbeddingOptions& options);
torch::nn::Conv2d make_conv2d(const torch::nn::Conv2dOptions& options);
// init() when initialising, else torch::empty(sizes) (float32, CPU, as the init would give).
torch::Tensor init_or_empty(c10::IntArrayRef sizes, const std::function<torch::Tensor()>& init);

}  // namespace llava
