// Optimizer: parameter groups, owners, gradient reduction, the global norm, AdamW and its state (optimizer.h).
#include "llava/train/optimizer.h"

#include <algorithm>
#include <cmath>

#include "llava/dist/ddp.h"
#include "llava/dist/grad_reducer.h"
#include "llava/dist/process_group.h"
#include "llava/error.h"
#include "llava/torch_compat.h"

namespace llava {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

// Owners for ZeRO: contiguous runs in bucket (reverse registration) order, about numel / world each: a
// parameter goes to the rank whose share holds its middle element.
std::vector<int> assign_owners(const std::vector<NamedParameter>& params, int world) {
  int64_t total = 0;
  for (const auto& p : params) total += p.tensor.numel();
  std::vector<int> owner(params.size(), 0);
  int64_t seen = 0;
  for (size_t k = params.size(); k-- > 0;) {
    const int64_t n = params[k].tensor.numel();
    owner[k] = static_cast<int>(std::min<int64_t>(world - 1, (2 * seen + n) * world / (2 * std::max<int64_t>(total, 1))));
    seen += n;
  }
  return owner;
}

}  // namespace

bool is_no_decay_parameter(const std::string& name) {
  // every LayerNorm/RMSNorm here has "norm" in its module name (layer_norm1, pre_layrnorm, input_layernorm, norm)
  return ends_with(name, ".bias") || name.find("norm.weight") != std::string::npos ||
         name.find("norm1.weight") != std::string::npos || name.find("norm2.weight") != std::string::npos;
}

std::vector<ParamGroup> make_param_groups(const std::vector<NamedParameter>& params, const OptimizerConfig& c) {
  struct Rule {
    const char* name;
    const char* prefix;  // "" = every parameter no other rule takes
    double lr;
  };
  const std::vector<Rule> rules = {
      {"llm", "", c.learning_rate},
      {"projector", "multi_modal_projector.", c.projector_lr > 0 ? c.projector_lr : c.learning_rate},
      {"vision_tower", "vision_tower.", c.vision_tower_lr > 0 ? c.vision_tower_lr : c.learning_rate},
  };
  std::vector<ParamGroup> groups;
  for (const Rule& rule : rules) {
    for (bool no_decay : {false, true}) {
      ParamGroup g;
      g.name = std::string(rule.name) + (no_decay ? ".no_decay" : "");
      g.base_lr = rule.lr;
      g.weight_decay = no_decay ? 0.0 : c.weight_decay;
      for (size_t i = 0; i < params.size(); ++i) {
        const std::string& n = params[i].name;
        const Rule* taker = &rules[0];
        for (const Rule& r : rules)
          if (*r.prefix && starts_with(n, r.prefix)) taker = &r;
        if (taker == &rule && is_no_decay_parameter(n) == no_decay) g.members.push_back(i);
      }
      if (!g.members.empty()) groups.push_back(std::move(g));
    }
  }
  return groups;
}

double clip_coefficient(double norm, double max_norm) {
  if (max_norm <= 0) return 1.0;
  const double coef = max_norm / (norm + 1e-6);
  return coef < 1.0 ? coef : 1.0;
}

void adamw_update(AdamWTensors& t, double lr, double wd, int64_t step, const OptimizerConfig& c, bool allow_fused) {
  if (t.params.empty()) return;
  torch::NoGradGuard no_grad;
  if (allow_fused && compat::has_fused_adamw(t.params[0].device())) {
    compat::fused_adamw(t.params, t.grads, t.exp_avgs, t.exp_avg_sqs, step, lr, c.beta1, c.beta2, wd, c.eps);
    return;
  }
  // torch 1.13's _single_tensor_adamw term by term (Python floats are doubles), each op over a slice of the
  // list: the update's one temporary (denom) then costs one slice, not a copy of every parameter.
  const double bc1 = 1.0 - std::pow(c.beta1, static_cast<double>(step));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(c.beta2, static_cast<double>(step)));
  constexpr int64_t kSliceElements = int64_t{1} << 20;  // a 4 MiB temporary in fp32
  for (size_t lo = 0, hi = 0; lo < t.params.size(); lo = hi) {
    int64_t elements = 0;
    while (hi < t.params.size() && (hi == lo || elements + t.params[hi].numel() <= kSliceElements))
      elements += t.params[hi++].numel();
    auto slice = [&](const std::vector<torch::Tensor>& v) { return std::vector<torch::Tensor>(v.begin() + lo, v.begin() + hi); };
    std::vector<torch::Tensor> params = slice(t.params), grads = slice(t.grads), exp_avgs = slice(t.exp_avgs),
                               exp_avg_sqs = slice(t.exp_avg_sqs);
    if (wd != 0.0) at::_foreach_mul_(params, 1.0 - lr * wd);
    at::_foreach_mul_(exp_avgs, c.beta1);
    at::_foreach_add_(exp_avgs, grads, 1.0 - c.beta1);
    at::_foreach_mul_(exp_avg_sqs, c.beta2);
    at::_foreach_addcmul_(exp_avg_sqs, grads, grads, 1.0 - c.beta2);
    std::vector<torch::Tensor> denom = at::_foreach_sqrt(exp_avg_sqs);
    at::_foreach_div_(denom, bc2_sqrt);
    at::_foreach_add_(denom, c.eps);
    at::_foreach_addcdiv_(params, exp_avgs, denom, -lr / bc1);
  }
}

// Per parameter: what this rank keeps for it.
struct Optimizer::Entry {
  bool updates = false;      // this rank runs AdamW on it (its owner, or every rank at stage 0)
  bool has_gradient = false; // this rank holds its whole reduced gradient
  torch::Tensor accumulator; // fp32 gradient where .grad is not one (bf16 parameters; owned at ZeRO-2)
  torch::Tensor master;      // fp32 weights; the parameter itself when it is fp32
  torch::Tensor exp_avg, exp_avg_sq;
  // The reduced fp32 gradient (valid after reduce_gradients on ranks with has_gradient).
  torch::Tensor gradient(const torch::Tensor& param) const { return accumulator.defined() ? accumulator : param.grad(); }
};

Optimizer::Optimizer(std::vector<NamedParameter> params, const OptimizerConfig& config,
                     std::shared_ptr<dist::ProcessGroup> pg)
    : params_(std::move(params)), config_(config), pg_(std::move(pg)) {
  if (params_.empty()) throw Error("nothing to train: every parameter is frozen by the stage flags");
  if (config_.zero_stage < 0 || config_.zero_stage > 2)
    throw Error("--zero_stage must be 0, 1 or 2, got " + std::to_string(config_.zero_stage));
  groups_ = make_param_groups(params_, config_);
  const int world = pg_ ? pg_->world_size() : 1, rank = pg_ ? pg_->rank() : 0;
  const bool sharded = world > 1 && config_.zero_stage >= 1;
  owner_ = sharded ? assign_owners(params_, world) : std::vector<int>(params_.size(), -1);
  gradients_sharded_ = world > 1 && config_.zero_stage == 2;
  const auto mode = gradients_sharded_ ? dist::GradReducer::Mode::ReduceToOwner : dist::GradReducer::Mode::AllReduce;
  entries_.resize(params_.size());
  std::vector<torch::Tensor> tensors, accumulators(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    Entry& e = entries_[i];
    const torch::Tensor& p = params_[i].tensor;
    e.updates = owner_[i] < 0 || owner_[i] == rank;
    e.has_gradient = mode == dist::GradReducer::Mode::AllReduce || e.updates;
    if (e.has_gradient && (p.scalar_type() != torch::kFloat || mode == dist::GradReducer::Mode::ReduceToOwner))
      e.accumulator = torch::zeros(p.sizes(), p.options().dtype(torch::kFloat));
    accumulators[i] = e.accumulator;
    tensors.push_back(p);
  }
  make_state();
  reducer_ = std::make_unique<dist::GradReducer>(pg_, tensors, owner_, accumulators, config_.bucket_cap_bytes, mode);
}

Optimizer::~Optimizer() = default;

void Optimizer::make_state() {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    Entry& e = entries_[i];
    if (!e.updates) continue;
    const torch::Tensor& p = params_[i].tensor;
    const auto fp32 = p.options().dtype(torch::kFloat);
    e.master = p.scalar_type() == torch::kFloat ? p.detach() : p.detach().to(torch::kFloat).clone();
    e.exp_avg = torch::zeros(p.sizes(), fp32);
    e.exp_avg_sq = torch::zeros(p.sizes(), fp32);
  }
}

int64_t Optimizer::trainable_numel() const {
  int64_t n = 0;
  for (const auto& p : params_) n += p.tensor.numel();
  return n;
}

void Optimizer::begin_backward(bool last) {
  // One process: nothing to wait for, so every micro-batch "syncs" (and bf16 gradients move to fp32 at once).
  reducer_->set_sync(!pg_ || last);
}

void Optimizer::end_backward() {
  if (!pg_) reducer_->finish();
}

void Optimizer::reduce_gradients(double scale) {
  if (pg_) reducer_->finish();  // every rank, even one without a backward in this step (collective order)
  if (scale == 1.0) return;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> grads;
  for (size_t i = 0; i < params_.size(); ++i)
    if (entries_[i].has_gradient) grads.push_back(entries_[i].gradient(params_[i].tensor));
  at::_foreach_mul_(grads, scale);
}

double Optimizer::grad_norm() const {
  torch::NoGradGuard no_grad;
  // clip_grad_norm_: torch.norm(torch.stack([torch.norm(g, 2) for g in grads]), 2), in registration order.
  // Where gradients live on their owners only (ZeRO-2), each fills its own entries and the vector is summed
  // (every other entry is an exact 0).
  std::vector<torch::Tensor> norms;
  norms.reserve(params_.size());
  for (size_t i = 0; i < params_.size(); ++i)
    norms.push_back(entries_[i].has_gradient ? entries_[i].gradient(params_[i].tensor).norm(2)
                                             : torch::zeros({}, params_[i].tensor.options().dtype(torch::kFloat)));
  torch::Tensor stacked = torch::stack(norms);
  if (gradients_sharded_) pg_->allreduce_sum(stacked);
  return stacked.norm(2).item<double>();
}

void Optimizer::step(double lr_multiplier, double clip_coef) {
  torch::NoGradGuard no_grad;
  ++step_;
  for (const ParamGroup& g : groups_) {
    AdamWTensors t;
    for (size_t i : g.members) {
      Entry& e = entries_[i];
      if (!e.updates) continue;
      t.params.push_back(e.master);
      t.grads.push_back(e.gradient(params_[i].tensor));
      t.exp_avgs.push_back(e.exp_avg);
      t.exp_avg_sqs.push_back(e.exp_avg_sq);
    }
    if (t.params.empty()) continue;
    if (clip_coef != 1.0) at::_foreach_mul_(t.grads, clip_coef);
    adamw_update(t, g.base_lr * lr_multiplier, g.weight_decay, step_, config_);
  }
  write_back();
}

void Optimizer::write_back() {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Entry& e = entries_[i];
    if (e.updates && e.master.data_ptr() != params_[i].tensor.data_ptr()) params_[i].tensor.copy_(e.master);
  }
  if (!pg_ || owner_[0] < 0) return;
  // ZeRO: every owner sends its updated parameters to the others, owner by owner (the same order everywhere).
  for (int r = 0; r < pg_->world_size(); ++r) {
    std::vector<at::Tensor> owned;
    for (size_t i = 0; i < params_.size(); ++i)
      if (owner_[i] == r) owned.push_back(params_[i].tensor);
    if (!owned.empty()) dist::broadcast_parameters(*pg_, owned, r);
  }
}

void Optimizer::zero_grad() { reducer_->zero_grad(); }

std::vector<std::pair<std::string, torch::Tensor>> Optimizer::state_tensors() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  if (owner_[0] < 0 && pg_ && pg_->rank() != 0) return out;  // stage 0: rank 0 writes the (identical) state
  for (size_t i = 0; i < params_.size(); ++i) {
    const Entry& e = entries_[i];
    if (!e.updates) continue;
    const std::string& n = params_[i].name;
    out.emplace_back(n + ".exp_avg", e.exp_avg.to(torch::kCPU, false, true));
    out.emplace_back(n + ".exp_avg_sq", e.exp_avg_sq.to(torch::kCPU, false, true));
    if (params_[i].tensor.scalar_type() != torch::kFloat) out.emplace_back(n + ".master", e.master.to(torch::kCPU, false, true));
  }
  return out;
}

void Optimizer::load_state(int64_t step, const std::function<torch::Tensor(const std::string&)>& find) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    Entry& e = entries_[i];
    if (!e.updates) continue;
    const std::string& n = params_[i].name;
    auto take = [&](const std::string& kind, torch::Tensor& dst) {
      torch::Tensor src = find(n + "." + kind);
      if (!src.defined())
        throw Error("optimizer state: no '" + n + "." + kind + "' in the checkpoint (was it made with other trainable "
                    "parameters, e.g. another stage or LoRA setting?)");
      if (src.sizes() != dst.sizes())
        throw Error("optimizer state: '" + n + "." + kind + "' has shape " + c10::str(src.sizes()) + ", this run's "
                    "parameter needs " + c10::str(dst.sizes()));
      dst.copy_(src);
    };
    take("exp_avg", e.exp_avg);
    take("exp_avg_sq", e.exp_avg_sq);
    if (params_[i].tensor.scalar_type() != torch::kFloat) take("master", e.master);
  }
  step_ = step;
  write_back();
}

nlohmann::json Optimizer::describe() const {
  nlohmann::json groups = nlohmann::json::array();
  for (const ParamGroup& g : groups_) {
    nlohmann::json names = nlohmann::json::array();
    for (size_t i : g.members) names.push_back(params_[i].name);
    groups.push_back({{"name", g.name}, {"lr", g.base_lr}, {"weight_decay", g.weight_decay}, {"params", names}});
  }
  return {{"type", "AdamW"},
          {"step", step_},
          {"betas", {config_.beta1, config_.beta2}},
          {"eps", config_.eps},
          {"zero_stage", config_.zero_stage},
          {"world_size", pg_ ? pg_->world_size() : 1},
          {"groups", groups}};
}

}  // namespace llava
