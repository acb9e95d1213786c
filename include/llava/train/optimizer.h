#pragma once
// The optimizer of every training run: AdamW (torch.optim.AdamW) over the trainable parameters, in named
// parameter groups, with fp32 master weights, the gradient summed over ranks while backward runs, and its
// state optionally sharded over the ranks (ZeRO). One process, DDP, ZeRO-1 and ZeRO-2 are this one object:
//
//   one process   no process group; nothing is communicated.
//   zero_stage 0  (DDP) every rank holds all of the state and makes the same update; gradients all-reduced.
//   zero_stage 1  each parameter has one owner rank, which alone keeps its fp32 master and AdamW state and
//                 updates it; gradients all-reduced; owners then broadcast the updated parameters.
//   zero_stage 2  as 1, and each gradient bucket is reduced to its owner only (no rank keeps the whole
//                 gradient).
// Owners: contiguous runs of parameters in bucket (reverse registration) order, balanced by size, so a
// parameter is never split: every rank that computes a parameter's gradient norm has the whole reduced
// gradient, and the norm is torch.nn.utils.clip_grad_norm_'s arithmetic whatever the parallelism (per-tensor
// fp32 2-norms in registration order, then the 2-norm of those).
//
// The step (trainer.cpp):
//   for each micro-batch: begin_backward(last); loss.backward(); end_backward();
//   reduce_gradients(1 / step_tokens);          // waits for the reductions; gradients scaled
//   norm = grad_norm();                          // before clipping; the same on every rank
//   step(lr_multiplier, clip_coefficient(norm)); // AdamW; or skip it (NaN guard)
//   zero_grad();
//
// bf16 parameters: gradients are accumulated into fp32 buffers (every micro-batch in one process, at the
// sync micro-batch otherwise), the update runs on the fp32 master and is cast back into the parameter.
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace llava {

namespace dist {
class ProcessGroup;
class GradReducer;
}  // namespace dist

// The one hyper-parameter set of the run's optimizer.
struct OptimizerConfig {
  double learning_rate = 5e-5;
  double weight_decay = 0.0;      // not on biases and norm weights (is_no_decay_parameter)
  double projector_lr = 0.0;      // --mm_projector_lr; 0: learning_rate
  double vision_tower_lr = 0.0;   // --mm_vision_tower_lr; 0: learning_rate
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  int zero_stage = 0;
  size_t bucket_cap_bytes = size_t{25} << 20;
};

struct NamedParameter {
  std::string name;  // the model's parameter name ("multi_modal_projector.linear_1.weight")
  torch::Tensor tensor;
};

// One parameter group: its rule's name, base lr, weight decay, and members (indices into the parameter list).
struct ParamGroup {
  std::string name;  // "llm", "llm.no_decay", "projector", "projector.no_decay", "vision_tower", ...
  double base_lr = 0.0, weight_decay = 0.0;
  std::vector<size_t> members;
};

// HF Trainer's weight-decay rule (get_decay_parameter_names with ALL_LAYERNORM_LAYERS incl. LlamaRMSNorm):
// biases and LayerNorm/RMSNorm weights get no weight decay; everything else does.
bool is_no_decay_parameter(const std::string& name);

// LLaVATrainer.create_optimizer: groups from the rules {projector: mm_projector_lr, vision_tower:
// mm_vision_tower_lr, everything else: learning_rate} x {decay, no decay}; empty groups are dropped.
std::vector<ParamGroup> make_param_groups(const std::vector<NamedParameter>& params, const OptimizerConfig& config);

class Optimizer {
 public:
  // params: the trainable parameters in registration order (the same list on every rank). pg: null for
  // one process. Several ranks must hold equal parameters already (broadcast them first).
  Optimizer(std::vector<NamedParameter> params, const OptimizerConfig& config, std::shared_ptr<dist::ProcessGroup> pg);
  ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // Around every micro-batch's backward. `last`: the step's last micro-batch (several ranks: its backward
  // reduces the gradients; the others only accumulate locally). The same sequence on every rank.
  void begin_backward(bool last);
  void end_backward();
  // After the step's micro-batches: waits for every reduction; the step's gradient (sum over micro-batches
  // and ranks) times `scale` is then what grad_norm() and step() see.
  void reduce_gradients(double scale);
  // torch.nn.utils.clip_grad_norm_'s total norm (before clipping); identical on every rank.
  double grad_norm() const;
  // One AdamW update with lr = group base lr x lr_multiplier, gradients first multiplied by clip_coef
  // (clip_coefficient()); then the parameters hold the new weights on every rank.
  void step(double lr_multiplier, double clip_coef = 1.0);
  void zero_grad();

  int64_t step_count() const { return step_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }
  const std::vector<NamedParameter>& parameters() const { return params_; }
  int64_t trainable_numel() const;

  // Checkpoint state. state_tensors(): this rank's part, named "<parameter>.exp_avg", "<parameter>.exp_avg_sq"
  // and (bf16 parameters) "<parameter>.master", as CPU copies; empty on ranks whose state another rank also
  // writes (zero_stage 0: every rank's state is rank 0's). load_state(): reads the entries this rank needs
  // through find(name) (undefined when no file has it: an error naming the tensor), for any world size.
  std::vector<std::pair<std::string, torch::Tensor>> state_tensors() const;
  void load_state(int64_t step, const std::function<torch::Tensor(const std::string&)>& find);
  // Hyper-parameters, groups (names, lrs, members), zero stage and world size, for optimizer.json.
  nlohmann::json describe() const;

 private:
  struct Entry;
  void make_state();
  void write_back();

  std::vector<NamedParameter> params_;
  OptimizerConfig config_;
  std::shared_ptr<dist::ProcessGroup> pg_;
  std::vector<ParamGroup> groups_;
  std::vector<int> owner_;          // per parameter: rank that updates it, -1 = every rank
  std::vector<Entry> entries_;      // per parameter
  std::unique_ptr<dist::GradReducer> reducer_;
  bool gradients_sharded_ = false;  // ZeRO-2 on several ranks: each rank holds its owned gradients only
  int64_t step_ = 0;
};

// torch.nn.utils.clip_grad_norm_'s factor: max_norm / (norm + 1e-6) when that is < 1, else 1 (max_norm <= 0: 1).
double clip_coefficient(double norm, double max_norm);

// The AdamW update of one parameter group (torch.optim.AdamW, amsgrad off): for each i,
//   p *= 1 - lr wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// on fp32 tensors, as one fused kernel where LibTorch has one for the device, else foreach ops.
struct AdamWTensors {
  std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs;
};
void adamw_update(AdamWTensors& t, double lr, double weight_decay, int64_t step, const OptimizerConfig& config,
                  bool allow_fused = true);

}  // namespace llava
