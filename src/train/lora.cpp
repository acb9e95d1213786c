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
  torch::NoGradGuard no_grad;
  auto& layers = model_.language_model->model->layers;
  for (size_t i = 0; i < layers.size(); ++i) {
    auto& layer = layers[i];
    const std::string prefix = "language_model.model.layers." + std::to_string(i) + ".";
    std::vector<std::pair<std::string, torch::nn::Linear*>> linears = {
        {"self_attn.q_proj", &layer->self_attn->q_proj}, {"self_attn.k_proj", &layer->self_attn->k_proj},
        {"self_attn.v_proj", &layer->self_attn->v_proj}, {"self_attn.o_proj", &layer->self_attn->o_proj},
        {"mlp.gate_proj", &layer->mlp->gate_proj},       {"mlp.up_proj", &layer->mlp->up_proj},
        {"mlp.down_proj", &layer->mlp->down_proj}};
    auto child = std::make_shared<torch::nn::Module>();
    for (auto& [rel, lin] : linears) {
      Target t;
      t.name = prefix + rel;
      t.linear = lin->get();
      t.w0 = t.linear->weight;
      const int64_t out = t.w0.size(0), in = t.w0.size(1);
      auto opts = t.w0.options().requires_grad(false);
      // PEFT's init: A kaiming-uniform(a=sqrt(5)) (= U(+-1/sqrt(in))), B zeros, so training starts at W0.
      torch::Tensor a = torch::empty({opt_.r, in}, opts.dtype(torch::kFloat).device(torch::kCPU));
      torch::nn::init::kaiming_uniform_(a, std::sqrt(5.0));
      auto pair = std::make_shared<torch::nn::Module>();
      t.a = pair->register_parameter("lora_A", a.to(t.w0.options()));
      t.b = pair->register_parameter("lora_B", torch::zeros({out, opt_.r}, opts));
      child->register_module(rel.substr(rel.find('.') + 1), pair);  // "q_proj", ..., "down_proj"
      targets_.push_back(std::move(t));
    }
    children_.push_back(child);
  }
  attach_children();
}

Lora::~Lora() {
  // Leave a usable model behind: weights pointing at the registered tensors.
  for (auto& t : targets_) t.linear->weight = t.w0;
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

void Lora::apply() {
  if (merged_) return;
  for (auto& t : targets_) t.linear->weight = t.w0 + scale_ * torch::mm(t.b, t.a);
}

void Lora::merge() {
  if (merged_) return;
  torch::NoGradGuard no_grad;
  for (auto& t : targets_) {
    torch::Tensor merged = t.w0.to(torch::kFloat) + scale_ * torch::mm(t.b.to(torch::kFloat), t.a.to(torch::kFloat));
    t.w0.copy_(merged);
    t.linear->weight = t.w0;
  }
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
  for (const auto& t : targets_) n += t.a.numel() + t.b.numel();
  return n;
}

void Lora::save_adapter(const std::string& dir, const std::string& base_model) const {
  std::vector<torch::Tensor> host;
  std::vector<TensorToWrite> items;
  host.reserve(targets_.size() * 2);
  for (const auto& t : targets_) {
    for (const char* which : {"lora_A", "lora_B"}) {
      const torch::Tensor& src = std::string(which) == "lora_A" ? t.a : t.b;
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
      torch::Tensor& dst = std::string(which) == "lora_A" ? t.a : t.b;
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
