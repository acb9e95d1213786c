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

namespace {

const std::vector<std::string> kTargetModules = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                 "gate_proj", "up_proj", "down_proj"};

std::string peft_name(const std::string& target, const char* which) {
  return "base_model.model." + target + "." + which + ".weight";
}

}  // namespace

Lora::Lora(LlavaForCausalLMImpl& model, LoraOptions options)
    : model_(model), opt_(options), scale_(static_cast<double>(options.alpha) / options.r) {
  if (opt_.r <= 0) throw Error("--lora_r must be positive, got " + std::to_string(opt_.r));
  if (!(opt_.dropout >= 0 && opt_.dropout < 1))
    throw Error("--lora_dropout must be in [0, 1), got " + std::to_string(opt_.dropout));
  auto& layers = model_.language_model->model->layers;
  for (size_t i = 0; i < layers.size(); ++i) {
    auto& layer = layers[i];
    auto& attn = layer->self_attn;
    auto& mlp = layer->mlp;
    const std::string prefix = "language_model.model.layers." + std::to_string(i) + ".";
    struct Projection {
      const char* name;
      torch::nn::Linear& linear;
      std::shared_ptr<LinearAdapter>& slot;
    };
    const std::vector<Projection> projections = {
        {"self_attn.q_proj", attn->q_proj, attn->q_adapter}, {"self_attn.k_proj", attn->k_proj, attn->k_adapter},
        {"self_attn.v_proj", attn->v_proj, attn->v_adapter}, {"self_attn.o_proj", attn->o_proj, attn->o_adapter},
        {"mlp.gate_proj", mlp->gate_proj, mlp->gate_adapter},  {"mlp.up_proj", mlp->up_proj, mlp->up_adapter},
        {"mlp.down_proj", mlp->down_proj, mlp->down_adapter}};
    auto child = std::make_shared<torch::nn::Module>();
    for (const auto& p : projections) {
      const std::string rel = p.name;
      if (p.slot) throw Error(prefix + rel + " already has an adapter (a second Lora on the same model?)");
      const torch::Tensor& w0 = p.linear->weight;
      Target t;
      t.name = prefix + rel;
      t.linear = p.linear.get();
      t.slot = &p.slot;
      t.adapter = std::make_shared<LoraLinearImpl>(w0.size(1), w0.size(0), opt_.r, scale_, opt_.dropout, w0.options());
      child->register_module(rel.substr(rel.find('.') + 1), t.adapter);  // "q_proj", ..., "down_proj"
      targets_.push_back(std::move(t));
    }
    child->train(layer->is_training());  // then follows the model's train() / eval()
    children_.push_back(child);
  }
  attach_children();
  for (auto& t : targets_) *t.slot = t.adapter;
}

Lora::~Lora() {
  // Leave a usable model behind: the base model, without the adapters' parameters.
  if (merged_) return;
  detach_adapters();
  detach_children();
}

void Lora::attach_children() {
  auto& layers = model_.language_model->model->layers;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i]->named_children().contains("lora")) layers[i]->replace_module("lora", children_[i]);
    else layers[i]->register_module("lora", children_[i]);
  }
}

void Lora::detach_children() {
  // LibTorch cannot unregister a module; an empty module in its place has no parameters.
  for (auto& layer : model_.language_model->model->layers)
    layer->replace_module("lora", std::make_shared<torch::nn::Module>());
}

void Lora::detach_adapters() {
  for (auto& t : targets_) t.slot->reset();
}

void Lora::merge() {
  if (merged_) return;
  torch::NoGradGuard no_grad;
  for (auto& t : targets_) {
    torch::Tensor& w0 = t.linear->weight;
    w0.copy_(w0.to(torch::kFloat) + t.adapter->delta_weight());
  }
  detach_adapters();
  detach_children();
  merged_ = true;
}

Lora::Detached::Detached(Lora& lora) : lora_(lora) {
  if (!lora_.merged_) lora_.detach_children();
}

Lora::Detached::~Detached() {
  if (!lora_.merged_) lora_.attach_children();
}

int64_t Lora::numel() const {
  int64_t n = 0;
  for (const auto& t : targets_) n += t.adapter->lora_A.numel() + t.adapter->lora_B.numel();
  return n;
}

void Lora::save_adapter(const std::string& dir, const std::string& base_model) const {
  std::vector<torch::Tensor> host;
  std::vector<TensorToWrite> items;
  host.reserve(targets_.size() * 2);
  for (const auto& t : targets_) {
    for (const char* which : {"lora_A", "lora_B"}) {
      const torch::Tensor& src = std::string(which) == "lora_A" ? t.adapter->lora_A : t.adapter->lora_B;
      host.push_back(src.detach().to(torch::kCPU, torch::kFloat).contiguous());
      items.push_back({peft_name(t.name, which), DType::F32, host.back().sizes().vec(), host.back().data_ptr(),
                       static_cast<size_t>(host.back().nbytes())});
    }
  }
  write_safetensors((fs::path(dir) / "adapter_model.safetensors").string(), std::move(items));
  json config = {{"peft_type", "LORA"},         {"task_type", "CAUSAL_LM"},
                 {"r", opt_.r},                 {"lora_alpha", opt_.alpha},
                 {"lora_dropout", opt_.dropout}, {"bias", "none"},
                 {"target_modules", kTargetModules}, {"fan_in_fan_out", false},
                 {"init_lora_weights", true},   {"inference_mode", true},
                 {"modules_to_save", nullptr},  {"base_model_name_or_path", base_model}};
  std::ofstream(fs::path(dir) / "adapter_config.json") << config.dump(2) << "\n";
}

void Lora::load_adapter(const std::string& dir) {
  torch::NoGradGuard no_grad;
  const std::string path = (fs::path(dir) / "adapter_model.safetensors").string();
  auto file = SafetensorsFile::open(path);
  for (auto& t : targets_) {
    for (const char* which : {"lora_A", "lora_B"}) {
      torch::Tensor& dst = std::string(which) == "lora_A" ? t.adapter->lora_A : t.adapter->lora_B;
      const std::string name = peft_name(t.name, which);
      const TensorInfo* info = file->find(name);
      if (!info) throw Error(path + ": no tensor '" + name + "' (checkpoint made without --lora_enable?)");
      if (info->shape != dst.sizes().vec())
        throw Error(path + ": '" + name + "' has shape " + c10::str(info->shape) + ", this run's --lora_r gives " +
                    c10::str(dst.sizes()));
      std::vector<float> v = file->to_float(*info);
      dst.copy_(torch::from_blob(v.data(), info->shape, torch::kFloat));
    }
  }
}

}  // namespace llava
