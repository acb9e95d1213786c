#pragma once
// ZeroOptimizer: torch.optim.AdamW with fp32 master weights, optimizer state sharded over ranks (ZeRO).
//
//   stage 0  every rank keeps the whole fp32 master copy and AdamW state; gradients all-reduced (= DDP).
//   stage 1  each rank keeps 1/world of master weights and AdamW state; gradients all-reduced in buckets,
//            each rank updates its part, then the parameters are all-gathered.
//   stage 2  as 1, and gradients are reduce-scattered: each rank keeps only its part (fp32); .grad is
//            released as soon as a parameter's gradient is in its bucket.
//   pg null  one process: stage is ignored, nothing is communicated.
//
// Sharding: the gradient buckets (reverse registration order, --ddp_bucket_cap_mb each, padded to a
// multiple of world_size) are cut into world_size equal parts; rank r owns part r of every bucket, so a
// reduce-scatter of a bucket hands every rank exactly the gradients of what it owns.
//
// AdamW is torch.optim.AdamW's (decoupled decay, amsgrad off), per element in fp32:
//   p *= 1 - lr * wd;  m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g;
//   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// with g = scale * clip * (sum over ranks of the local gradients), and the result written back to the
// model's parameters in their own dtype (bf16 or fp32). Every parameter is updated every step (a parameter
// without a gradient anywhere has g = 0).
//
// Training step (all ranks):
//   ZeroOptimizer opt(pg, params, group_of_param, groups, adamw, zero_stage, ddp_bucket_cap_mb << 20);
//   (once: broadcast_parameters(*pg, params) BEFORE constructing it, so every rank's master copy agrees)
//   for each optimizer step:
//     for (int m = 0; m < accum; ++m) { opt.set_sync(m == accum - 1); loss_m.backward(); }
//     opt.finish_gradients(scale);              // waits for the reductions
//     double norm = opt.clip_grad_norm(max_grad_norm);   // global norm before clipping (NaN: skip the step)
//     opt.set_lr(g, lr_g) for each group;       // the schedule's lr
//     opt.step();                               // AdamW on this rank's part, then all-gather into params
//     opt.zero_grad();
//
// Checkpoints: every rank r < num_shards() saves state().to_tensors() (e.g. "zero_shard_<r>_of_<n>.safetensors");
// load_state() reads them back for any world size (see there).
#include <ATen/core/Tensor.h>

#include <array>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "llava/dist/process_group.h"

namespace llava::dist {

namespace detail {
class GradReducer;
}

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
};

struct ParamGroup {
  double lr = 0.0;  // current learning rate (set_lr changes it)
  double weight_decay = 0.0;
};

// One rank's part of the optimizer state, self-describing so a job with another world size can rebuild
// its own parts from it.
struct ZeroShardState {
  int64_t step = 0;
  int64_t num_shards = 1, shard_rank = 0, stage = 0;
  std::vector<int64_t> param_numels;  // the trainable parameters this state is for, in order
  // Which elements this shard holds: {param_index, param_offset, length, shard_offset}.
  std::vector<std::array<int64_t, 4>> segments;
  at::Tensor master, exp_avg, exp_avg_sq;  // fp32, flat, indexed by shard_offset (CPU copies)

  // Named tensors for a safetensors file: zero.meta, zero.param_numels, zero.segments (int64) and
  // zero.master, zero.exp_avg, zero.exp_avg_sq (fp32).
  std::map<std::string, at::Tensor> to_tensors() const;
  static ZeroShardState from_tensors(const std::map<std::string, at::Tensor>& tensors, const std::string& where);
};

class ZeroOptimizer {
 public:
  // params: trainable parameters in registration order (the same list on every rank).
  // group_of_param[i]: index into groups (empty: every parameter in group 0), e.g. decay / no-decay /
  // projector. stage: 0, 1 or 2. The fp32 master copy starts from the parameters' current values.
  ZeroOptimizer(std::shared_ptr<ProcessGroup> pg, std::vector<at::Tensor> params, std::vector<int> group_of_param,
                std::vector<ParamGroup> groups, AdamWConfig adamw, int stage, size_t bucket_cap_bytes);
  ~ZeroOptimizer();

  int stage() const { return stage_; }
  int num_shards() const;
  int shard_rank() const;
  int64_t step_count() const { return step_; }
  int64_t shard_numel() const;  // elements of master weights (and of each AdamW moment) on this rank

  void set_sync(bool sync);                    // before each backward (see GradientSync)
  void finish_gradients(double scale = 1.0);   // after the last micro-step's backward
  // Global L2 norm of the (scaled) gradient before clipping; when max_norm > 0 and the norm exceeds it, the
  // gradient used by step() is multiplied by max_norm / (norm + 1e-6) (torch.nn.utils.clip_grad_norm_).
  double clip_grad_norm(double max_norm);
  void step();
  void zero_grad();
  void set_lr(size_t group, double lr);
  double lr(size_t group) const;
  const std::vector<ParamGroup>& groups() const { return groups_; }

  // This rank's state (CPU copies). Ranks with rank >= num_shards() (stage 0: every rank but 0) need not save.
  ZeroShardState state() const;
  // Rebuilds this rank's part from a checkpoint written by `saved_num_shards` ranks (any number: the
  // segments say what each file holds). read_shard(k) returns saved shard k; it is called for this rank's
  // own index first and only when that does not cover everything (a different world size or bucket size)
  // for the others, one at a time. Throws llava::Error when the files are for other parameters or do not
  // cover them.
  void load_state(int64_t saved_num_shards, const std::function<ZeroShardState(int64_t)>& read_shard);

  struct Run {  // consecutive shard elements of one group
    int64_t shard_offset, length;
    int group;
  };

 private:
  void write_back_parameters();

  std::shared_ptr<ProcessGroup> pg_;
  std::vector<at::Tensor> params_;
  std::vector<int> group_of_param_;
  std::vector<ParamGroup> groups_;
  AdamWConfig adamw_;
  int stage_ = 0;
  std::unique_ptr<detail::GradReducer> reducer_;
  std::vector<int64_t> bucket_base_;                 // shard offset of each bucket's part
  std::vector<std::array<int64_t, 4>> segments_;     // as ZeroShardState::segments
  std::vector<std::vector<Run>> runs_;               // per bucket
  at::Tensor master_, exp_avg_, exp_avg_sq_;
  int64_t step_ = 0;
  double grad_scale_ = 1.0, clip_coef_ = 1.0;
};

}  // namespace llava::dist
