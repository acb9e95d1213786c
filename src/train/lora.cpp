// LoRA: LoraLinear and its installation, merge and PEFT files (lora.h).
#include "llava/train/lora.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "llava/error.h"
#include "llava/safetensors.h"

namespace llava {
namespace fs = std::filesystem;
using nlohmann::json;

LoraLinearImpl::LoraLinearImpl(std::shared_ptr<DenseImpl> base, const LoraOptions& o)
    : scale_(static_cast<double>(o.alpha) / o.r), dropout_(o.dropout) {
  if (o.r <= 0) throw Error("--lora_r must be positive, got " + std::to_string(o.r));
  if (!(o.dropout >= 0 && o.dropout < 1)) throw Error("--lora_dropout must be in [0, 1), got " + std::to_string(o.dropout));
  torch::NoGradGuard no_grad;
  const torch::Tensor& w0 = base->weight;
  base_layer = register_module("base_layer", std::move(base));
  // A drawn in fp32 on the CPU whatever the model's dtype and device: the same init (and the same draws from
  // the default CPU generator) for every run with the same seed.
  torch::Tensor a = torch::empty({o.r, w0.size(1)}, torch::kFloat);
  torch::nn::init::kaiming_uniform_(a, std::sqrt(5.0));
  lora_A = register_parameter("lora_A", a.to(w0.options()));
  lora_B = register_parameter("lora_B", torch::zeros({w0.size(0), o.r}, w0.options()));
}

torch::Tensor LoraLinearImpl::forward(const torch::Tensor& x) {
  // PEFT: result + lora_B(lora_A(dropout(x))) * scaling; the frozen path never sees the dropout.
  torch::Tensor h = draws_random_numbers() ? torch::dropout(x, dropout_, /*train=*/true) : x;
  return base_layer->forward(x) + torch::linear(torch::linear(h, lora_A), lora_B) * scale_;
}

torch::Tensor LoraLinearImpl::delta_weight() const {
  return scale_ * torch::mm(lora_B.to(torch::kFloat), lora_A.to(torch::kFloat));
}

namespace {

struct Installed {
  std::string name;  // language_model.model.layers.0.self_attn.q_proj
  ProjectionSlot slot;
};

std::vector<Installed> projection_slots(LlavaForCausalLMImpl& model) {
  std::vector<Installed> out;
  auto& layers = model.language_model->model->layers;
  for (size_t i = 0; i < layers.size(); ++i)
    for (ProjectionSlot s : layers[i]->projections())
      out.push_back({"language_model.model.layers." + std::to_string(i) + "." + s.path, s});
  return out;
}

std::string peft_name(const std::string& projection, const char* which) {
  return "base_model.model." + projection + "." + which + ".weight";
}

// The installed adapters by projection name (an error when LoRA is not installed).
std::vector<std::pair<std::string, LoraLinearImpl*>> adapters(const LlavaForCausalLMImpl& model) {
  std::vector<std::pair<std::string, LoraLinearImpl*>> out;
  for (const Installed& p : projection_slots(const_cast<LlavaForCausalLMImpl&>(model)))
    if (auto* l = dynamic_cast<LoraLinearImpl*>(p.slot.member->get())) out.emplace_back(p.name, l);
  if (out.empty()) throw Error("LoRA: no adapters are installed on this model");
  return out;
}

}  // namespace

void install_lora(LlavaForCausalLMImpl& model, const LoraOptions& options) {
  for (const Installed& p : projection_slots(model)) {
    auto dense = std::dynamic_pointer_cast<DenseImpl>(*p.slot.member);
    if (!dense) throw Error(p.name + " is not a plain projection (LoRA installed twice?)");
    auto lora = std::make_shared<LoraLinearImpl>(dense, options);
    lora->train(dense->is_training());
    replace_projection(p.slot, lora);
  }
}

void merge_lora(LlavaForCausalLMImpl& model) {
  torch::NoGradGuard no_grad;
  for (const Installed& p : projection_slots(model)) {
    auto lora = std::dynamic_pointer_cast<LoraLinearImpl>(*p.slot.member);
    if (!lora) continue;
    torch::Tensor& w0 = lora->base_layer->weight;
    w0.copy_(w0.to(torch::kFloat) + lora->delta_weight());
    replace_projection(p.slot, lora->base_layer);
  }
}

int64_t lora_numel(const LlavaForCausalLMImpl& model) {
  int64_t n = 0;
  for (const auto& [name, a] : adapters(model)) n += a->lora_A.numel() + a->lora_B.numel();
  return n;
}

void save_lora_adapter(const LlavaForCausalLMImpl& model, const std::string& dir, const std::string& base_model,
                       const LoraOptions& o) {
  std::vector<torch::Tensor> host;
  std::vector<TensorToWrite> items;
  const auto list = adapters(model);
  host.reserve(list.size() * 2);
  for (const auto& [name, a] : list) {
    for (const char* which : {"lora_A", "lora_B"}) {
      const torch::Tensor& src = std::string(which) == "lora_A" ? a->lora_A : a->lora_B;
      host.push_back(src.detach().to(torch::kCPU, torch::kFloat).contiguous());
      items.push_back({peft_name(name, which), DType::F32, host.back().sizes().vec(), host.back().data_ptr(),
                       static_cast<size_t>(host.back().nbytes())});
    }
  }
  write_safetensors((fs::path(dir) / "adapter_model.safetensors").string(), std::move(items));
  const std::vector<std::string> targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  json config = {{"peft_type", "LORA"},         {"task_type", "CAUSAL_LM"},
                 {"r", o.r},                    {"lora_alpha", o.alpha},
                 {"lora_dropout", o.dropout},   {"bias", "none"},
                 {"target_modules", targets},   {"fan_in_fan_out", false},
                 {"init_lora_weights", true},   {"inference_mode", true},
                 {"modules_to_save", nullptr},  {"base_model_name_or_path", base_model}};
  std::ofstream(fs::path(dir) / "adapter_config.json") << config.dump(2) << "\n";
}

void load_lora_adapter(LlavaForCausalLMImpl& model, const std::string& dir) {
  torch::NoGradGuard no_grad;
  const std::string path = (fs::path(dir) / "adapter_model.safetensors").string();
  auto file = SafetensorsFile::open(path);
  for (const auto& [name, a] : adapters(model)) {
    for (const char* which : {"lora_A", "lora_B"}) {
      torch::Tensor& dst = std::string(which) == "lora_A" ? a->lora_A : a->lora_B;
      const std::string key = peft_name(name, which);
      const TensorInfo* info = file->find(key);
      if (!info) throw Error(path + ": no tensor '" + key + "' (checkpoint made without --lora_enable?)");
      if (info->shape != dst.sizes().vec())
        throw Error(path + ": '" + key + "' has shape " + c10::str(info->shape) + ", this run's --lora_r gives " +
                    c10::str(dst.sizes()));
      std::vector<float> v = file->to_float(*info);
      dst.copy_(torch::from_blob(v.data(), info->shape, torch::kFloat));
    }
  }
}

}  // namespace llava
