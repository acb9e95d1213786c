// Replaceable projections: Dense (nn.Linear), slot replacement, base-model parameter names (linear_layer.h).
#include "llava/model/linear_layer.h"

#include <set>

#include "llava/model/param_init.h"

namespace llava {

DenseImpl::DenseImpl(int64_t in_features, int64_t out_features, bool has_bias) {
  // Built as torch::nn::Linear builds its parameters (the same init and random draws), then adopted.
  torch::nn::Linear linear = make_linear(torch::nn::LinearOptions(in_features, out_features).bias(has_bias));
  weight = register_parameter("weight", linear->weight);
  if (has_bias) bias = register_parameter("bias", linear->bias);
}

std::shared_ptr<LinearLayerImpl> replace_projection(const ProjectionSlot& slot, std::shared_ptr<LinearLayerImpl> layer) {
  std::shared_ptr<LinearLayerImpl> old = *slot.member;
  *slot.member = slot.owner->replace_module(slot.name, std::move(layer));
  return old;
}

std::map<std::string, torch::Tensor> base_model_parameters(const torch::nn::Module& model) {
  std::set<std::string> adapter_params;
  for (const auto& item : model.named_modules()) {
    const auto* layer = dynamic_cast<const LinearLayerImpl*>(item.value().get());
    if (!layer || !layer->wrapped()) continue;
    const std::string prefix = item.key().empty() ? "" : item.key() + ".";
    for (const auto& p : item.value()->named_parameters(/*recurse=*/false)) adapter_params.insert(prefix + p.key());
  }
  static const std::string kLevel = ".base_layer";
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : model.named_parameters()) {
    if (adapter_params.count(item.key())) continue;
    std::string name = item.key();
    for (size_t at; (at = name.find(kLevel + ".")) != std::string::npos;) name.erase(at, kLevel.size());
    out[name] = item.value();
  }
  return out;
}

}  // namespace llava
