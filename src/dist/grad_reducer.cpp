// GradReducer: bucketed gradient reduction from AccumulateGrad post-hooks (see grad_reducer.h).
#include "llava/dist/grad_reducer.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include <deque>
#include <mutex>

namespace llava::dist {

std::vector<Bucket> make_buckets(const std::vector<at::Tensor>& params, const std::vector<int>& owner,
                                 size_t cap_bytes) {
  std::vector<Bucket> buckets;
  size_t bytes = 0;
  for (size_t k = params.size(); k-- > 0;) {  // reverse registration order
    const at::Tensor& p = params[k];
    const size_t p_bytes = static_cast<size_t>(p.numel()) * p.element_size();
    const int o = owner.empty() ? -1 : owner[k];
    const bool fresh = buckets.empty() || buckets.back().dtype != p.scalar_type() || buckets.back().owner != o ||
                       (bytes > 0 && bytes + p_bytes > cap_bytes);
    if (fresh) {
      buckets.emplace_back();
      buckets.back().dtype = p.scalar_type();
      buckets.back().owner = o;
      bytes = 0;
    }
    Bucket& b = buckets.back();
    b.slots.push_back({k, b.numel, p.numel()});
    b.numel += p.numel();
    bytes += p_bytes;
  }
  return buckets;
}

struct GradReducer::State {
  std::mutex mu;
  std::shared_ptr<ProcessGroup> pg;
  std::vector<at::Tensor> params, accumulators;
  Mode mode = Mode::AllReduce;
  int rank = 0;
  std::vector<Bucket> buckets;
  std::vector<std::pair<size_t, size_t>> where;  // param -> (bucket, slot)

  std::vector<at::Tensor> buffers;  // AllReduce: persistent; ReduceToOwner: only while in flight
  std::vector<PendingOp> ops;
  std::deque<size_t> in_flight;  // ReduceToOwner: launched, not yet retired
  static constexpr size_t kMaxInFlight = 2;

  bool sync = true;
  std::vector<char> ready;       // per parameter, this round
  std::vector<int64_t> missing;  // per bucket: parameters not ready yet
  size_t next_launch = 0;

  std::vector<std::shared_ptr<torch::autograd::Node>> grad_accumulators;
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
      buffers[b] = at::zeros({buckets[b].numel}, params[buckets[b].slots[0].param].options());
  }

  // ReduceToOwner: move parameter i's gradient into its bucket slot.
  void take_grad(size_t i) {
    auto [b, k] = where[i];
    ensure_buffer(b);
    at::Tensor view = slot_view(b, buckets[b].slots[k]);
    at::Tensor& grad = params[i].mutable_grad();
    if (grad.defined()) view.copy_(grad);
    else view.zero_();
    grad = at::Tensor();
  }

  // The reduced bucket's slots into their accumulators (where this rank keeps one).
  void accumulate(size_t b) {
    for (const BucketSlot& s : buckets[b].slots) {
      at::Tensor& acc = accumulators[s.param];
      if (!acc.defined()) continue;
      at::Tensor view = slot_view(b, s);
      acc.add_(view);
      if (mode == Mode::AllReduce) view.zero_();
    }
  }

  // ReduceToOwner: wait for the oldest bucket in flight; the owner keeps its sum, every rank frees the buffer.
  void retire_oldest() {
    const size_t b = in_flight.front();
    ops[b].wait();
    if (buckets[b].owner == rank) accumulate(b);
    buffers[b] = at::Tensor();
    in_flight.pop_front();
  }

  void launch(size_t b) {
    if (mode == Mode::AllReduce) {
      if (pg) ops[b] = pg->allreduce_sum_async(buffers[b]);
      return;
    }
    while (in_flight.size() >= kMaxInFlight) retire_oldest();
    ops[b] = pg->reduce_sum_async(buffers[b], buckets[b].owner);
    in_flight.push_back(b);
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
    if (mode == Mode::ReduceToOwner) take_grad(i);
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

void check_params(const std::vector<at::Tensor>& params, const ProcessGroup* pg) {
  if (params.empty()) throw Error("gradient buckets: no parameters");
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
}

}  // namespace

GradReducer::GradReducer(std::shared_ptr<ProcessGroup> pg, std::vector<at::Tensor> params, std::vector<int> owner,
                         std::vector<at::Tensor> accumulators, size_t cap_bytes, Mode mode)
    : state_(std::make_shared<State>()) {
  State& s = *state_;
  check_params(params, pg.get());
  if (mode == Mode::ReduceToOwner && !pg) throw Error("gradient buckets: reducing to owners needs a process group");
  if (mode == Mode::AllReduce) owner.assign(params.size(), -1);
  if (owner.size() != params.size() || (!accumulators.empty() && accumulators.size() != params.size()))
    throw Error("gradient buckets: owner/accumulator lists do not match the parameters");
  accumulators.resize(params.size());
  s.rank = pg ? pg->rank() : 0;
  for (size_t i = 0; i < params.size(); ++i) {
    if (mode == Mode::ReduceToOwner && (owner[i] < 0 || owner[i] >= pg->world_size()))
      throw Error("gradient buckets: parameter " + std::to_string(i) + " has no owner rank");
    if (mode == Mode::ReduceToOwner && owner[i] == s.rank && !accumulators[i].defined())
      throw Error("gradient buckets: owned parameter " + std::to_string(i) + " has no accumulator");
  }
  s.pg = std::move(pg);
  s.params = std::move(params);
  s.accumulators = std::move(accumulators);
  s.mode = mode;
  s.buckets = make_buckets(s.params, owner, cap_bytes);
  s.where.resize(s.params.size());
  for (size_t b = 0; b < s.buckets.size(); ++b)
    for (size_t k = 0; k < s.buckets[b].slots.size(); ++k) s.where[s.buckets[b].slots[k].param] = {b, k};
  s.buffers.resize(s.buckets.size());
  s.ready.resize(s.params.size());
  s.missing.resize(s.buckets.size());
  s.reset_round();

  torch::NoGradGuard no_grad;
  if (mode == Mode::AllReduce) {
    for (size_t b = 0; b < s.buckets.size(); ++b) s.ensure_buffer(b);
    for (size_t i = 0; i < s.params.size(); ++i) s.bind_view(i);  // keeps gradients already there
  }
  std::weak_ptr<State> weak = state_;
  for (size_t i = 0; i < s.params.size(); ++i) {
    std::shared_ptr<torch::autograd::Node> acc = torch::autograd::impl::grad_accumulator(s.params[i]);
    s.hook_keys.push_back(acc->add_post_hook(std::make_unique<ReadyHook>(weak, i)));
    s.grad_accumulators.push_back(std::move(acc));
  }
}

GradReducer::~GradReducer() {
  if (!state_) return;
  for (size_t i = 0; i < state_->grad_accumulators.size(); ++i)
    state_->grad_accumulators[i]->del_post_hook(state_->hook_keys[i]);
}

void GradReducer::set_sync(bool sync) {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->sync = sync;
}

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
  if (s.mode == Mode::ReduceToOwner) {
    while (!s.in_flight.empty()) s.retire_oldest();
  } else {
    for (size_t b = 0; b < s.buckets.size(); ++b) {
      s.ops[b].wait();
      s.accumulate(b);
    }
  }
  s.reset_round();
}

void GradReducer::zero_grad() {
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mu);
  torch::NoGradGuard no_grad;
  for (auto& a : s.accumulators)
    if (a.defined()) a.zero_();
  if (s.mode == Mode::AllReduce) {
    for (auto& t : s.buffers) t.zero_();
    for (size_t i = 0; i < s.params.size(); ++i) s.bind_view(i);
  } else {
    for (auto& p : s.params) p.mutable_grad() = at::Tensor();
  }
  s.reset_round();
}

const std::vector<Bucket>& GradReducer::buckets() const { return state_->buckets; }

}  // namespace llava::dist
