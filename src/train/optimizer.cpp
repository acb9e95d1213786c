#include "llava/train/optimizer.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "llava/error.h"
#include "llava/safetensors.h"

namespace llava {
namespace fs = std::filesystem;
using nlohmann::json;

void AdamW::add_param(const std::string& name, torch::Tensor param, double base_lr, double weight_decay) {
  torch::NoGradGuard no_grad;
  Entry e;
  e.name = name;
  e.param = param;
  e.base_lr = base_lr;
  e.weight_decay = weight_decay;
  const auto fp32 = param.options().dtype(torch::kFloat);
  if (param.scalar_type() == torch::kFloat) {
    e.master = param;
  } else {
    e.master = param.detach().to(torch::kFloat).clone();
    e.grad_fp32 = torch::zeros(param.sizes(), fp32);
  }
  e.exp_avg = torch::zeros(param.sizes(), fp32);
  e.exp_avg_sq = torch::zeros(param.sizes(), fp32);
  entries_.push_back(std::move(e));
}

int64_t AdamW::numel() const {
  int64_t n = 0;
  for (const auto& e : entries_) n += e.param.numel();
  return n;
}

int64_t AdamW::master_numel() const {
  int64_t n = 0;
  for (const auto& e : entries_)
    if (e.separate_master()) n += e.master.numel();
  return n;
}

void AdamW::accumulate_grads() {
  torch::NoGradGuard no_grad;
  for (auto& e : entries_) {
    if (!e.separate_master() || !e.param.grad().defined()) continue;
    e.grad_fp32.add_(e.param.grad());  // bf16 -> fp32 accumulation
    e.param.mutable_grad().reset();
  }
}

std::vector<torch::Tensor> AdamW::grads() const {
  std::vector<torch::Tensor> out;
  out.reserve(entries_.size());
  for (const auto& e : entries_) out.push_back(e.separate_master() ? e.grad_fp32 : e.param.grad());
  return out;
}

void AdamW::zero_grad() {
  torch::NoGradGuard no_grad;
  for (auto& e : entries_) {
    if (e.separate_master()) e.grad_fp32.zero_();
    e.param.mutable_grad().reset();  // set_to_none: the next backward allocates
  }
}

void AdamW::step(double lr_multiplier) {
  torch::NoGradGuard no_grad;
  ++step_;
  // torch 1.13 _single_tensor_adamw, term by term (Python floats are doubles).
  const double bias_correction1 = 1.0 - std::pow(opt_.beta1, static_cast<double>(step_));
  const double bias_correction2 = 1.0 - std::pow(opt_.beta2, static_cast<double>(step_));
  const double bias_correction2_sqrt = std::sqrt(bias_correction2);
  for (auto& e : entries_) {
    const double lr = e.base_lr * lr_multiplier;
    torch::Tensor grad = e.separate_master() ? e.grad_fp32 : e.param.grad();
    torch::Tensor& p = e.master;
    if (e.weight_decay != 0.0) p.mul_(1.0 - lr * e.weight_decay);
    if (grad.defined()) {
      e.exp_avg.mul_(opt_.beta1).add_(grad, 1.0 - opt_.beta1);
      e.exp_avg_sq.mul_(opt_.beta2).addcmul_(grad, grad, 1.0 - opt_.beta2);
    } else {
      e.exp_avg.mul_(opt_.beta1);
      e.exp_avg_sq.mul_(opt_.beta2);
    }
    const double step_size = lr / bias_correction1;
    torch::Tensor denom = (e.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(opt_.eps);
    p.addcdiv_(e.exp_avg, denom, -step_size);
    if (e.separate_master()) e.param.copy_(p);  // fp32 master -> bf16 compute weights
  }
}

namespace {

const char* kKinds[] = {"exp_avg", "exp_avg_sq", "master"};

std::string kind_file(const std::string& dir, const std::string& kind) {
  return (fs::path(dir) / ("optimizer." + kind + ".safetensors")).string();
}

}  // namespace

void AdamW::save(const std::string& dir) const {
  const bool any_master = master_numel() > 0;
  for (const std::string kind : kKinds) {
    if (kind == "master" && !any_master) continue;
    std::vector<torch::Tensor> host;  // keeps the host copies alive until written
    std::vector<TensorToWrite> items;
    for (const auto& e : entries_) {
      if (kind == "master" && !e.separate_master()) continue;
      const torch::Tensor& t = kind == "exp_avg" ? e.exp_avg : kind == "exp_avg_sq" ? e.exp_avg_sq : e.master;
      host.push_back(t.detach().to(torch::kCPU).contiguous());
      const auto& h = host.back();
      items.push_back({e.name, DType::F32, h.sizes().vec(), h.data_ptr(), static_cast<size_t>(h.nbytes())});
    }
    write_safetensors(kind_file(dir, kind), std::move(items), {{"format", "pt"}, {"step", std::to_string(step_)}});
  }
  json params = json::array();
  for (const auto& e : entries_)
    params.push_back({{"name", e.name}, {"lr", e.base_lr}, {"weight_decay", e.weight_decay},
                      {"master_fp32", e.separate_master()}});
  json j = {{"type", "AdamW"}, {"step", step_}, {"betas", {opt_.beta1, opt_.beta2}}, {"eps", opt_.eps},
            {"params", params}};
  std::ofstream(fs::path(dir) / "optimizer.json") << j.dump(1) << "\n";
}

void AdamW::load(const std::string& dir) {
  torch::NoGradGuard no_grad;
  const fs::path meta_path = fs::path(dir) / "optimizer.json";
  std::ifstream in(meta_path);
  if (!in) throw Error(meta_path.string() + ": cannot open (not a checkpoint of this trainer?)");
  json meta;
  try {
    meta = json::parse(in);
  } catch (const json::exception& e) {
    throw Error(meta_path.string() + ": bad JSON: " + e.what());
  }
  step_ = meta.at("step").get<int64_t>();
  for (const std::string kind : kKinds) {
    const bool needed = kind != "master" || master_numel() > 0;
    if (!needed) continue;
    const std::string path = kind_file(dir, kind);
    auto file = SafetensorsFile::open(path);
    for (auto& e : entries_) {
      if (kind == "master" && !e.separate_master()) continue;
      const TensorInfo* info = file->find(e.name);
      if (!info)
        throw Error(path + ": no state for trainable tensor '" + e.name +
                    "' (was the checkpoint made with other trainable parameters, e.g. another stage or LoRA setting?)");
      torch::Tensor& dst = kind == "exp_avg" ? e.exp_avg : kind == "exp_avg_sq" ? e.exp_avg_sq : e.master;
      if (info->dtype != DType::F32 || info->shape != dst.sizes().vec())
        throw Error(path + ": tensor '" + e.name + "' has dtype " + dtype_name(info->dtype) + " shape " +
                    c10::str(info->shape) + ", expected F32 " + c10::str(dst.sizes()));
      torch::Tensor src = torch::from_blob(const_cast<uint8_t*>(file->data(*info)), info->shape, torch::kFloat);
      dst.copy_(src);
    }
  }
  for (auto& e : entries_)
    if (e.separate_master()) e.param.copy_(e.master);
}

double global_grad_norm(const std::vector<torch::Tensor>& grads) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> norms;
  for (const auto& g : grads)
    if (g.defined()) norms.push_back(g.norm(2).to(torch::kFloat));
  if (norms.empty()) return 0.0;
  return torch::stack(norms).norm(2).item<double>();
}

void scale_grads(const std::vector<torch::Tensor>& grads, double factor) {
  torch::NoGradGuard no_grad;
  for (const auto& g : grads)
    if (g.defined()) g.mul_(factor);
}

}  // namespace llava
