#include "llava/model/param_init.h"

#include <ATen/CPUGeneratorImpl.h>

namespace llava {

namespace {
thread_local bool skip_init = false;
}  // namespace

SkipParameterInit::SkipParameterInit() : previous_(skip_init) { skip_init = true; }
SkipParameterInit::~SkipParameterInit() { skip_init = previous_; }
bool parameter_init_skipped() { return skip_init; }

// The stock modules always run reset_parameters() in their constructor. Built with zero output rows their
// init touches no elements and draws no random numbers (the fan-in, hence every bound, stays finite); the
// real-shaped uninitialised tensors are swapped in afterwards (set_data keeps the registered parameter and
// its requires_grad) and the options corrected, so the module is indistinguishable from a normal one.

torch::nn::Linear make_linear(const torch::nn::LinearOptions& options) {
  if (!skip_init) return torch::nn::Linear(options);
  torch::nn::Linear l(torch::nn::LinearOptions(options.in_features(), 0).bias(options.bias()));
  l->options = options;
  l->weight.set_data(torch::empty({options.out_features(), options.in_features()}));
  if (options.bias()) l->bias.set_data(torch::empty({options.out_features()}));
  return l;
}

torch::nn::Embedding make_embedding(const torch::nn::EmbeddingOptions& options) {
  if (!skip_init) return torch::nn::Embedding(options);
  // An Embedding given its weight registers it as is, without init.
  torch::nn::EmbeddingOptions o = options;
  o._weight(torch::empty({options.num_embeddings(), options.embedding_dim()}));
  torch::nn::Embedding e(o);
  e->options._weight(torch::Tensor());  // else clone() would share this tensor with the copy
  return e;
}

torch::nn::Conv2d make_conv2d(const torch::nn::Conv2dOptions& options) {
  if (!skip_init) return torch::nn::Conv2d(options);
  // Zero output channels would break the fan computation of kaiming_uniform_ (it indexes weight[0][0]), so
  // this init runs on groups x ... elements; the RNG state is put back so the guard still draws nothing.
  torch::nn::Conv2dOptions tiny = options;
  tiny.out_channels(options.groups());
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  const torch::Tensor rng_state = gen.get_state();
  torch::nn::Conv2d c(tiny);
  gen.set_state(rng_state);
  c->options.out_channels(options.out_channels());  // the only field tiny changed
  std::vector<int64_t> w = {options.out_channels(), options.in_channels() / options.groups()};
  for (int64_t k : *options.kernel_size()) w.push_back(k);
  c->weight.set_data(torch::empty(w));
  if (options.bias()) c->bias.set_data(torch::empty({options.out_channels()}));
  return c;
}

torch::Tensor init_or_empty(c10::IntArrayRef sizes, const std::function<torch::Tensor()>& init) {
  return skip_init ? torch::empty(sizes) : init();
}

}  // namespace llava
