#include "llava/model/projector.h"

#include "llava/model/config.h"
#include "llava/model/param_init.h"

namespace llava {

ProjectorImpl::ProjectorImpl(const std::string& type, int64_t vision_hidden, int64_t text_hidden) : type_(type) {
  const int64_t n = parse_projector_type(type, "projector");
  for (int64_t i = 0; i < n; ++i) {
    const int64_t in = i == 0 ? vision_hidden : text_hidden;
    linears.push_back(
        register_module("linear_" + std::to_string(i + 1), make_linear(torch::nn::LinearOptions(in, text_hidden))));
  }
}

torch::Tensor ProjectorImpl::forward(const torch::Tensor& x) {
  if (linears.empty()) return x;  // identity
  torch::Tensor h = linears[0](x.to(linears[0]->weight.scalar_type()));
  for (size_t i = 1; i < linears.size(); ++i) h = linears[i](torch::gelu(h));
  return h;
}

void ProjectorImpl::reset_parameters() {
  for (auto& l : linears) l->reset_parameters();
}

}  // namespace llava
