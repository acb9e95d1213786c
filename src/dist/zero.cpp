// ZeroOptimizer: AdamW over this rank's parts of the gradient buckets, fp32 master weights (see zero.h).
#include "llava/dist/zero.h"

#include <torch/torch.h>

#include <cmath>

#include "dist/grad_buckets.h"

namespace llava::dist {

namespace {

constexpr int64_t kChunk = int64_t{1} << 24;  // elements per AdamW kernel batch (bounds the fp32 temporaries)

template <typename F>
void for_chunks(int64_t length, F&& f) {
  for (int64_t c = 0; c < length; c += kChunk) f(c, std::min(kChunk, length - c));
}

at::Tensor int64_tensor(const std::vector<int64_t>& v) {
  return torch::tensor(v, torch::kLong).clone();
}

}  // namespace

// ---------------------------------------------------------------- ZeroShardState

std::map<std::string, at::Tensor> ZeroShardState::to_tensors() const {
  std::map<std::string, at::Tensor> out;
  out["zero.meta"] = int64_tensor({step, num_shards, shard_rank, stage});
  out["zero.param_numels"] = int64_tensor(param_numels.empty() ? std::vector<int64_t>{} : param_numels);
  at::Tensor seg = torch::zeros({static_cast<int64_t>(segments.size()), 4}, torch::kLong);
  auto acc = seg.accessor<int64_t, 2>();
  for (size_t i = 0; i < segments.size(); ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = segments[i][j];
  out["zero.segments"] = seg;
  out["zero.master"] = master;
  out["zero.exp_avg"] = exp_avg;
  out["zero.exp_avg_sq"] = exp_avg_sq;
  return out;
}

ZeroShardState ZeroShardState::from_tensors(const std::map<std::string, at::Tensor>& t, const std::string& where) {
  auto get = [&](const char* name) {
    auto it = t.find(name);
    if (it == t.end() || !it->second.defined()) throw Error(where + ": optimizer shard has no tensor '" + name + "'");
    return it->second;
  };
  ZeroShardState s;
  at::Tensor meta = get("zero.meta").to(torch::kLong).contiguous();
  if (meta.numel() != 4) throw Error(where + ": zero.meta must have 4 elements");
  s.step = meta[0].item<int64_t>();
  s.num_shards = meta[1].item<int64_t>();
  s.shard_rank = meta[2].item<int64_t>();
  s.stage = meta[3].item<int64_t>();
  at::Tensor numels = get("zero.param_numels").to(torch::kLong).contiguous();
  s.param_numels.assign(numels.data_ptr<int64_t>(), numels.data_ptr<int64_t>() + numels.numel());
  at::Tensor seg = get("zero.segments").to(torch::kLong).contiguous();
  if (seg.numel() > 0 && (seg.dim() != 2 || seg.size(1) != 4)) throw Error(where + ": zero.segments must be [n, 4]");
  for (int64_t i = 0; i < (seg.numel() ? seg.size(0) : 0); ++i) {
    const int64_t* r = seg.data_ptr<int64_t>() + 4 * i;
    s.segments.push_back({r[0], r[1], r[2], r[3]});
  }
  s.master = get("zero.master").to(torch::kFloat);
  s.exp_avg = get("zero.exp_avg").to(torch::kFloat);
  s.exp_avg_sq = get("zero.exp_avg_sq").to(torch::kFloat);
  for (const auto& r : s.segments) {
    if (r[0] < 0 || r[0] >= static_cast<int64_t>(s.param_numels.size()) || r[1] < 0 || r[2] < 0 ||
        r[1] + r[2] > s.param_numels[r[0]] || r[3] < 0 || r[3] + r[2] > s.master.numel() ||
        s.exp_avg.numel() != s.master.numel() || s.exp_avg_sq.numel() != s.master.numel())
      throw Error(where + ": optimizer shard has a segment outside its tensors");
  }
  return s;
}

// ---------------------------------------------------------------- ZeroOptimizer

ZeroOptimizer::ZeroOptimizer(std::shared_ptr<ProcessGroup> pg, std::vector<at::Tensor> params,
                             std::vector<int> group_of_param, std::vector<ParamGroup> groups, AdamWConfig adamw,
                             int stage, size_t bucket_cap_bytes)
    : pg_(std::move(pg)), params_(std::move(params)), group_of_param_(std::move(group_of_param)),
      groups_(std::move(groups)), adamw_(adamw), stage_(stage) {
  if (stage < 0 || stage > 2) throw Error("--zero_stage " + std::to_string(stage) + ": expected 0, 1 or 2");
  if (groups_.empty()) throw Error("ZeroOptimizer: no parameter groups");
  if (group_of_param_.empty()) group_of_param_.assign(params_.size(), 0);
  if (group_of_param_.size() != params_.size())
    throw Error("ZeroOptimizer: group_of_param has " + std::to_string(group_of_param_.size()) + " entries for " +
                std::to_string(params_.size()) + " parameters");
  for (int g : group_of_param_)
    if (g < 0 || g >= static_cast<int>(groups_.size())) throw Error("ZeroOptimizer: group index out of range");

  const bool sharded = pg_ && stage_ >= 1;
  const int shards = sharded ? pg_->world_size() : 1;
  auto mode = pg_ && stage_ == 2 ? detail::GradReducer::Mode::ReduceScatter : detail::GradReducer::Mode::AllReduce;
  reducer_ = std::make_unique<detail::GradReducer>(pg_, params_, bucket_cap_bytes, mode, shards);

  const auto& buckets = reducer_->buckets();
  const int64_t r = reducer_->shard_rank();
  int64_t total = 0;
  runs_.resize(buckets.size());
  for (size_t b = 0; b < buckets.size(); ++b) {
    bucket_base_.push_back(total);
    const int64_t lo = buckets[b].part * r, hi = lo + buckets[b].part;
    for (const auto& slot : buckets[b].slots) {
      const int64_t a = std::max(slot.offset, lo), e = std::min(slot.offset + slot.numel, hi);
      if (a >= e) continue;
      const int64_t soff = total + (a - lo);
      segments_.push_back({static_cast<int64_t>(slot.param), a - slot.offset, e - a, soff});
      const int g = group_of_param_[slot.param];
      auto& runs = runs_[b];
      if (!runs.empty() && runs.back().group == g && runs.back().shard_offset + runs.back().length == soff)
        runs.back().length += e - a;
      else
        runs.push_back({soff, e - a, g});
    }
    total += buckets[b].part;
  }

  torch::NoGradGuard no_grad;
  auto opts = params_[0].options().dtype(torch::kFloat);
  master_ = torch::zeros({total}, opts);
  exp_avg_ = torch::zeros({total}, opts);
  exp_avg_sq_ = torch::zeros({total}, opts);
  for (const auto& s : segments_)
    master_.narrow(0, s[3], s[2]).copy_(params_[s[0]].detach().reshape({-1}).narrow(0, s[1], s[2]));
}

ZeroOptimizer::~ZeroOptimizer() = default;

int ZeroOptimizer::num_shards() const { return reducer_->shards(); }
int ZeroOptimizer::shard_rank() const { return reducer_->shard_rank(); }
int64_t ZeroOptimizer::shard_numel() const { return master_.numel(); }

void ZeroOptimizer::set_sync(bool sync) { reducer_->set_sync(sync); }

void ZeroOptimizer::finish_gradients(double scale) {
  reducer_->finish();
  grad_scale_ = scale;
  clip_coef_ = 1.0;
}

double ZeroOptimizer::clip_grad_norm(double max_norm) {
  torch::NoGradGuard no_grad;
  at::Tensor sq = torch::zeros({1}, params_[0].options().dtype(torch::kDouble));
  for (size_t b = 0; b < runs_.size(); ++b) {
    at::Tensor g = reducer_->grad_part(b);
    for_chunks(g.numel(), [&](int64_t c, int64_t n) {
      sq.add_(at::sum(g.narrow(0, c, n).to(torch::kFloat).square(), torch::kDouble));
    });
  }
  if (num_shards() > 1) pg_->allreduce_sum(sq);
  const double norm = std::sqrt(sq.item<double>()) * std::abs(grad_scale_);
  clip_coef_ = 1.0;
  if (max_norm > 0.0) {
    const double coef = max_norm / (norm + 1e-6);
    if (!(coef >= 1.0)) clip_coef_ = coef;  // NaN norm: NaN coefficient (the trainer skips such steps)
  }
  return norm;
}

void ZeroOptimizer::step() {
  torch::NoGradGuard no_grad;
  ++step_;
  const double b1 = adamw_.beta1, b2 = adamw_.beta2;
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(step_));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(b2, static_cast<double>(step_)));
  const double coef = grad_scale_ * clip_coef_;
  for (size_t b = 0; b < runs_.size(); ++b) {
    at::Tensor gpart = reducer_->grad_part(b);
    for (const Run& run : runs_[b]) {
      const double lr = groups_[run.group].lr, wd = groups_[run.group].weight_decay;
      const int64_t local = run.shard_offset - bucket_base_[b];
      for_chunks(run.length, [&](int64_t c, int64_t n) {
        at::Tensor g = gpart.narrow(0, local + c, n).to(torch::kFloat);
        if (coef != 1.0) g = g * coef;
        at::Tensor p = master_.narrow(0, run.shard_offset + c, n);
        at::Tensor m = exp_avg_.narrow(0, run.shard_offset + c, n);
        at::Tensor v = exp_avg_sq_.narrow(0, run.shard_offset + c, n);
        if (wd != 0.0) p.mul_(1.0 - lr * wd);
        m.lerp_(g, 1.0 - b1);
        v.mul_(b2).addcmul_(g, g, 1.0 - b2);
        at::Tensor denom = (v.sqrt() / bc2_sqrt).add_(adamw_.eps);
        p.addcdiv_(m, denom, -lr / bc1);
      });
    }
  }
  write_back_parameters();
  clip_coef_ = 1.0;
}

void ZeroOptimizer::write_back_parameters() {
  if (num_shards() == 1) {
    for (const auto& s : segments_)
      params_[s[0]].detach().view({-1}).narrow(0, s[1], s[2]).copy_(master_.narrow(0, s[3], s[2]));
    return;
  }
  // All-gather every bucket's parts in the parameters' dtype, one bucket ahead.
  const auto& buckets = reducer_->buckets();
  const size_t n = buckets.size();
  std::vector<at::Tensor> local(n), gathered(n);
  std::vector<PendingOp> ops(n);
  auto start = [&](size_t b) {
    local[b] = master_.narrow(0, bucket_base_[b], buckets[b].part).to(buckets[b].dtype).contiguous();
    gathered[b] = at::empty({buckets[b].padded}, master_.options().dtype(buckets[b].dtype));
    ops[b] = pg_->all_gather_async(local[b], gathered[b]);
  };
  start(0);
  for (size_t b = 0; b < n; ++b) {
    if (b + 1 < n) start(b + 1);
    ops[b].wait();
    for (const auto& slot : buckets[b].slots)
      params_[slot.param].detach().view({-1}).copy_(gathered[b].narrow(0, slot.offset, slot.numel));
    local[b] = gathered[b] = at::Tensor();
  }
}

void ZeroOptimizer::zero_grad() {
  reducer_->zero_grad();
  grad_scale_ = 1.0;
  clip_coef_ = 1.0;
}

void ZeroOptimizer::set_lr(size_t group, double lr) {
  if (group >= groups_.size()) throw Error("ZeroOptimizer::set_lr: no group " + std::to_string(group));
  groups_[group].lr = lr;
}

double ZeroOptimizer::lr(size_t group) const {
  if (group >= groups_.size()) throw Error("ZeroOptimizer::lr: no group " + std::to_string(group));
  return groups_[group].lr;
}

ZeroShardState ZeroOptimizer::state() const {
  ZeroShardState s;
  s.step = step_;
  s.num_shards = num_shards();
  s.shard_rank = shard_rank();
  s.stage = stage_;
  for (const auto& p : params_) s.param_numels.push_back(p.numel());
  s.segments = segments_;
  s.master = master_.to(torch::kCPU, /*non_blocking=*/false, /*copy=*/true);
  s.exp_avg = exp_avg_.to(torch::kCPU, false, true);
  s.exp_avg_sq = exp_avg_sq_.to(torch::kCPU, false, true);
  return s;
}

void ZeroOptimizer::load_state(int64_t saved_num_shards, const std::function<ZeroShardState(int64_t)>& read_shard) {
  if (saved_num_shards < 1) throw Error("optimizer state: saved shard count must be >= 1");
  std::vector<int64_t> numels;
  for (const auto& p : params_) numels.push_back(p.numel());
  auto check = [&](const ZeroShardState& s, int64_t k) {
    if (s.param_numels != numels)
      throw Error("optimizer state shard " + std::to_string(k) + " is for " + std::to_string(s.param_numels.size()) +
                  " trainable parameters of other sizes than this model's " + std::to_string(numels.size()) +
                  " (different --tune_mm_mlp_adapter / freeze / lora settings?)");
    if (s.num_shards != saved_num_shards || s.shard_rank != k)
      throw Error("optimizer state shard " + std::to_string(k) + " says it is shard " + std::to_string(s.shard_rank) +
                  " of " + std::to_string(s.num_shards) + ", expected of " + std::to_string(saved_num_shards));
  };
  torch::NoGradGuard no_grad;
  const int64_t first = shard_rank() < saved_num_shards ? shard_rank() : 0;
  ZeroShardState s0 = read_shard(first);
  check(s0, first);
  if (s0.segments == segments_ && s0.master.numel() == master_.numel()) {  // same layout: this rank's own file
    master_.copy_(s0.master);
    exp_avg_.copy_(s0.exp_avg);
    exp_avg_sq_.copy_(s0.exp_avg_sq);
    step_ = s0.step;
    return;
  }
  // Another layout: take the overlap of every saved segment with every segment of ours.
  std::vector<std::vector<size_t>> mine_by_param(params_.size());
  for (size_t i = 0; i < segments_.size(); ++i) mine_by_param[segments_[i][0]].push_back(i);
  std::vector<int64_t> covered(segments_.size(), 0);
  const int64_t step = s0.step;
  for (int64_t k = 0; k < saved_num_shards; ++k) {
    ZeroShardState s = k == first ? std::move(s0) : read_shard(k);
    if (k != first) check(s, k);
    if (s.step != step)
      throw Error("optimizer state: shard " + std::to_string(k) + " is from step " + std::to_string(s.step) +
                  ", shard " + std::to_string(first) + " from step " + std::to_string(step));
    for (const auto& seg : s.segments) {
      for (size_t i : mine_by_param[seg[0]]) {
        const auto& my = segments_[i];
        const int64_t a = std::max(seg[1], my[1]), e = std::min(seg[1] + seg[2], my[1] + my[2]);
        if (a >= e) continue;
        const int64_t dst = my[3] + (a - my[1]), src = seg[3] + (a - seg[1]);
        master_.narrow(0, dst, e - a).copy_(s.master.narrow(0, src, e - a));
        exp_avg_.narrow(0, dst, e - a).copy_(s.exp_avg.narrow(0, src, e - a));
        exp_avg_sq_.narrow(0, dst, e - a).copy_(s.exp_avg_sq.narrow(0, src, e - a));
        covered[i] += e - a;
      }
    }
  }
  step_ = step;
  for (size_t i = 0; i < segments_.size(); ++i)
    if (covered[i] != segments_[i][2])
      throw Error("optimizer state: the " + std::to_string(saved_num_shards) + " saved shard(s) cover " +
                  std::to_string(covered[i]) + " of " + std::to_string(segments_[i][2]) + " elements of parameter " +
                  std::to_string(segments_[i][0]) + " held by this rank (a shard file missing or from another run?)");
}

}  // namespace llava::dist
