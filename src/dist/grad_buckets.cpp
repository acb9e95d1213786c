// GradReducer: bucketed gradient reduction from AccumulateGrad post-hooks (see grad_buckets.h).
#include "dist/grad_buckets.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include <deque>
#include <mutex>

namespace llava::dist::detail {

std::vector<Bucket> make_buckets(const std::vector<at::Tensor>& params, size_t cap_bytes, int shards) {
  if (shards < 1) throw Error("make_buckets: shards must be >= 1");
  std::vector<Bucket> buckets;
  size_t bytes = 0;
  for (size_t k = params.size(); k-- > 0;) {  // reverse registration order
    const at::Tensor& p = params[k];
    const size_t p_bytes = static_cast<size_t>(p.numel()) * p.element_size();
    bool fresh = buckets.empty() || buckets.back().dtype != p.scalar_type() ||
                 (bytes > 0 && bytes + p_bytes > cap_bytes);
    if (fresh) {
      buckets.emplace_back();
      buckets.back().dtype = p.scalar_type();
      bytes = 0;
    }
    Bucket& b = buckets.back();
    b.slots.push_back({k, b.numel, p.numel()});
    b.numel += p.numel();
    bytes += p_bytes;
  }
  for (Bucket& b : buckets) {
    b.padded = (b.numel + shards - 1) / shards * shards;
    b.part = b.padded / shards;
  }
  return buckets;
}

struct GradReducer::State {
  std::mutex mu;
  std::shared_ptr<ProcessGroup> pg;
  std::vector<at::Tensor> params;
  Mode mode = Mode::AllReduce;
  int shards = 1, shard_rank = 0;
  std::vector<Bucket> buckets;
  std::vector<std::pair<size_t, size_t>> where;  // param -> (bucket, slot)

  std::vector<at::Tensor> buffers;      // AllReduce: persistent; ReduceScatter: only while in flight
  std::vector<at::Tensor> shard_grads;  // ReduceScatter: fp32 [part] accumulators
  std::vector<at::Tensor> rs_out;       // ReduceScatter: [part] outputs in flight
  std::vector<PendingOp> ops;
  std::deque<size_t> in_flight;  // ReduceScatter: launched, not yet retired (bounds the bucket buffers alive)
  static constexpr size_t kMaxInFlight = 2;

  bool sync = true;
  std::vector<char> ready;       // per parameter, this round
  std::vector<int64_t> missing;  // per bucket: parameters not ready yet
  size_t next_launch = 0;

  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;
  std::vector<uintptr_t> hook_keys;

  at::Tensor slot_view(size_t b, const BucketSlot& s) const {
    return buffers[b].narrow(0, s.offset, s.numel).view(params[s.param].sizes());
  }

  // AllReduce: make .grad the bucket view again (autograd replaces an undefined .grad with its own tensor).
  void bind_view(size_t i) {
    auto [b, k] = where[i];
    at::Tensor view = slot_view(b, buckets[b].slots[k]);
    at::Tensor& grad = params[i].mutable_grad();
    if (!grad.defined()) {
      view.zero_();
    } else if (grad.data_ptr() != view.data_ptr()) {
      view.copy_(grad);
    } else {
      return;
    }
    grad = view;
  }

  void ensure_buffer(size_t b) {
    if (!buffers[b].defined())
      buffers[b] = at::zeros({buckets[b].padded}, params[buckets[b].slots[0].param].options());
  }

  // ReduceScatter: move parameter i's gradient into its bucket slot.
  void take_grad(size_t i) {
    auto [b, k] = where[i];
    ensure_buffer(b);
    at::Tensor view = slot_view(b, buckets[b].slots[k]);
    at::Tensor& grad = params[i].mutable_grad();
    if (grad.defined()) view.copy_(grad);
    else view.zero_();
    grad = at::Tensor();
  }

  // ReduceScatter: wait for the oldest bucket in flight, add this rank's part, free the bucket.
  void retire_oldest() {
    size_t b = in_flight.front();
    ops[b].wait();
    shard_grads[b].add_(rs_out[b].to(at::kFloat));
    rs_out[b] = at::Tensor();
    buffers[b] = at::Tensor();
    in_flight.pop_front();
  }

  void launch(size_t b) {
    if (!pg) return;
    if (mode == Mode::AllReduce) {
      ops[b] = pg->allreduce_sum_async(buffers[b]);
    } else {
      while (in_flight.size() >= kMaxInFlight) retire_oldest();
      rs_out[b] = at::empty({buckets[b].part}, buffers[b].options());
      ops[b] = pg->reduce_scatter_sum_async(buffers[b], rs_out[b]);
      in_flight.push_back(b);
    }
  }

  void launch_ready() {
    while (next_launch < buckets.size() && missing[next_launch] == 0) launch(next_launch++);
  }

  void on_grad_ready(size_t i) {
    std::lock_guard<std::mutex> lock(mu);
    if (mode == Mode::AllReduce) bind_view(i);
    if (!sync) return;
    if (ready[i])
      throw Error("parameter " + std::to_string(i) +
                  " got its gradient twice before the gradients were reduced: call finish() after the backward of "
                  "every sync micro-step (set_sync(false) for the others)");
    if (mode == Mode::ReduceScatter) take_grad(i);
    ready[i] = 1;
    if (--missing[where[i].first] == 0) launch_ready();
  }

  void reset_round() {
    std::fill(ready.begin(), ready.end(), 0);
    for (size_t b = 0; b < buckets.size(); ++b) missing[b] = static_cast<int64_t>(buckets[b].slots.size());
    next_launch = 0;
    ops.assign(buckets.size(), PendingOp());
    in_flight.clear();
  }
};

namespace {

struct ReadyHook : public torch::autograd::FunctionPostHook {
  ReadyHook(std::weak_ptr<GradReducer::State> state, size_t index) : state_(std::move(state)), index_(index) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    if (auto s = state_.lock()) s->on_grad_ready(index_);
    return outputs;
  }
  std::weak_ptr<GradReducer::State> state_;
  size_t index_;
};

}  // namespace

GradReducer::GradReducer(std::shared_ptr<ProcessGroup> pg, std::vector<at::Tensor> params, size_t cap_bytes, Mode mode,
                         int shards)
    : state_(std::make_shared<State>()) {
  State& s = *state_;
  if (params.empty()) throw Error("gradient buckets: no parameters");
  if (mode == Mode::ReduceScatter && !pg) throw Error("gradient buckets: reduce-scatter needs a process group");
  if (shards != 1 && (!pg || shards != pg->world_size()))
    throw Error("gradient buckets: shards must be 1 or the world size");
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i];
    if (!p.defined() || !p.requires_grad() || !p.is_leaf())
      throw Error("gradient buckets: parameter " + std::to_string(i) + " is not a leaf that requires grad");
    if (!p.is_contiguous()) throw Error("gradient buckets: parameter " + std::to_string(i) + " is not contiguous");
    if (p.device() != params[0].device()) throw Error("gradient buckets: parameters on more than one device");
    if (pg && p.device() != pg->device())
      throw Error("gradient buckets: parameters are on " + p.device().str() + " but the " + pg->backend() +
                  " group communicates on " + pg->device().str());
  }
  s.pg = std::move(pg);
  s.params = std::move(params);
  s.mode = mode;
  s.shards = shards;
  s.shard_rank = shards > 1 ? s.pg->rank() : 0;
  s.buckets = make_buckets(s.params, cap_bytes, shards);
  s.where.resize(s.params.size());
  for (size_t b = 0; b < s.buckets.size(); ++b)
    for (size_t k = 0; k < s.buckets[b].slots.size(); ++k) s.where[s.buckets[b].slots[k].param] = {b, k};
  s.buffers.resize(s.buckets.size());
  s.rs_out.resize(s.buckets.size());
  s.ready.resize(s.params.size());
  s.missing.resize(s.buckets.size());
  s.reset_round();

  torch::NoGradGuard no_grad;
  if (mode == Mode::AllReduce) {
    for (size_t b = 0; b < s.buckets.size(); ++b) s.ensure_buffer(b);
    for (size_t i = 0; i < s.params.size(); ++i) s.bind_view(i);  // keeps gradients already there
  } else {
    for (size_t b = 0; b < s.buckets.size(); ++b)
      s.shard_grads.push_back(
          at::zeros({s.buckets[b].part}, s.params[0].options().dtype(at::kFloat)));
  }
  std::weak_ptr<State> weak = state_;
  for (size_t i = 0; i < s.params.size(); ++i) {
    std::shared_ptr<torch::autograd::Node> acc = torch::autograd::impl::grad_accumulator(s.params[i]);
    s.hook_keys.push_back(acc->add_post_hook(std::make_unique<ReadyHook>(weak, i)));
    s.accumulators.push_back(std::move(acc));
  }
}

GradReducer::~GradReducer() {
  if (!state_) return;
  for (size_t i = 0; i < state_->accumulators.size(); ++i) state_->accumulators[i]->del_post_hook(state_->hook_keys[i]);
}

void GradReducer::set_sync(bool sync) {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->sync = sync;
}

bool GradReducer::sync() const { return state_->sync; }

void GradReducer::finish() {
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mu);
  torch::NoGradGuard no_grad;
  for (size_t b = s.next_launch; b < s.buckets.size(); ++b) {
    for (const BucketSlot& slot : s.buckets[b].slots) {
      if (s.ready[slot.param]) continue;
      if (s.mode == Mode::AllReduce) s.bind_view(slot.param);
      else s.take_grad(slot.param);
      s.ready[slot.param] = 1;
    }
    s.missing[b] = 0;
  }
  s.launch_ready();
  if (s.mode == Mode::ReduceScatter) {
    while (!s.in_flight.empty()) s.retire_oldest();
  } else {
    for (size_t b = 0; b < s.buckets.size(); ++b) s.ops[b].wait();
  }
  s.reset_round();
}

void GradReducer::scale(double factor) {
  if (factor == 1.0) return;
  torch::NoGradGuard no_grad;
  for (auto& t : state_->mode == Mode::AllReduce ? state_->buffers : state_->shard_grads) t.mul_(factor);
}

void GradReducer::zero_grad() {
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mu);
  torch::NoGradGuard no_grad;
  if (s.mode == Mode::AllReduce) {
    for (auto& t : s.buffers) t.zero_();
    for (size_t i = 0; i < s.params.size(); ++i) s.bind_view(i);
  } else {
    for (auto& t : s.shard_grads) t.zero_();
    for (auto& p : s.params) p.mutable_grad() = at::Tensor();
  }
  s.reset_round();
}

const std::vector<Bucket>& GradReducer::buckets() const { return state_->buckets; }
int GradReducer::shards() const { return state_->shards; }
int GradReducer::shard_rank() const { return state_->shard_rank; }

at::Tensor GradReducer::grad_part(size_t b) const {
  const State& s = *state_;
  if (s.mode == Mode::ReduceScatter) return s.shard_grads[b];
  return s.buffers[b].narrow(0, s.buckets[b].part * s.shard_rank, s.buckets[b].part);
}

}  // namespace llava::dist::detail
