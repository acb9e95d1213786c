#pragma once
// Every difference between LibTorch 1.13 (Debian 12) and 2.x lives here, and nothing else does.
#include <torch/torch.h>
#include <torch/version.h>

#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>
#include <utility>

#define LLAVA_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace c10d {
class ProcessGroup;
class Backend;
}  // namespace c10d

namespace llava::compat {

// c10d: the class ProcessGroupGloo / ProcessGroupNCCL derive from, whose collectives (allreduce, reduce,
// broadcast) src/dist calls: c10d::ProcessGroup in 1.13,
// c10d::Backend in 2.x (where c10d::ProcessGroup became a dispatching wrapper). Everything else src/dist uses
// (TCPStore(host, TCPStoreOptions) but for useLibUV below, ProcessGroupGloo::Options::create(timeout),
// ProcessGroupNCCL::Options, Work::wait/isCompleted, autograd grad_accumulator post-hooks) has the same signature
// in both. LibTorch 1.13's Gloo also lacks bfloat16: src/dist sends bf16 as fp32 on Gloo.
#if LLAVA_TORCH_AT_LEAST(2, 0)
using C10dBackend = ::c10d::Backend;
#else
using C10dBackend = ::c10d::ProcessGroup;
#endif

// c10d::TCPStoreOptions: 2.x (>= 2.2) has `useLibUV`, true by default since 2.4, and a LibTorch built without
// libuv (Debian's 2.6) then refuses to start the store; 1.13 has no such member. Ask for the classic server
// wherever the member exists.
template <typename Options, typename = void>
struct has_use_libuv : std::false_type {};
template <typename Options>
struct has_use_libuv<Options, std::void_t<decltype(std::declval<Options&>().useLibUV)>> : std::true_type {};
template <typename Options>
inline void tcp_store_without_libuv(Options& options) {
  if constexpr (has_use_libuv<Options>::value) options.useLibUV = false;
}

// ProcessGroupNCCL::shutdown() (2.x): stops NCCL's watchdog threads and destroys the communicators. Without
// it a group destroyed before exit leaves those threads running into CUDA's teardown (seen: a segfault at
// exit with LibTorch 2.11). Where the member does not exist this does nothing.
template <typename Backend>
inline auto shutdown_backend(Backend& backend, int) -> decltype(backend.shutdown(), void()) {
  backend.shutdown();
}
template <typename Backend>
inline void shutdown_backend(Backend&, long) {}
template <typename Backend>
inline void shutdown_backend(Backend& backend) {
  shutdown_backend(backend, 0);
}

// The fused scaled_dot_product_attention (2.x) for model/attention.h's attention(): with no `mask` and
// Tq == Tk it gets is_causal and no mask tensor, which lets it pick flash attention; otherwise the causal mask
// (bottom-right aligned) joins the additive mask.
inline at::Tensor fused_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                                  bool causal) {
#if LLAVA_TORCH_AT_LEAST(2, 0)
  const int64_t tq = q.size(-2), tk = k.size(-2);
  if (causal && !mask.defined() && tq == tk) return at::scaled_dot_product_attention(q, k, v, c10::nullopt, 0.0, true);
  at::Tensor m = mask;
  if (causal) {
    at::Tensor c = at::zeros({tq, tk}, q.options())
                       .masked_fill(at::ones({tq, tk}, q.options().dtype(at::kBool)).triu(tk - tq + 1),
                                    -std::numeric_limits<float>::infinity());
    m = m.defined() ? m + c : c;  // [B,1,1,Tk] + [Tq,Tk] -> [B,1,Tq,Tk]
  }
  return at::scaled_dot_product_attention(q, k, v, m.defined() ? c10::optional<at::Tensor>(m) : c10::nullopt);
#else
  (void)q, (void)k, (void)v, (void)mask, (void)causal;
  TORCH_CHECK(false, "fused attention needs LibTorch >= 2.0");
#endif
}

// torch.optim.AdamW(fused=True)'s kernel, at::_fused_adamw_: CUDA since 2.0, CPU since 2.4.
inline bool has_fused_adamw(const c10::Device& device) {
#if LLAVA_TORCH_AT_LEAST(2, 4)
  return device.is_cuda() || device.is_cpu();
#elif LLAVA_TORCH_AT_LEAST(2, 0)
  return device.is_cuda();
#else
  (void)device;
  return false;
#endif
}
// One fused AdamW step over lists of fp32 tensors (amsgrad off); `step` is the step being taken (1-based).
inline void fused_adamw(std::vector<at::Tensor>& params, std::vector<at::Tensor>& grads,
                        std::vector<at::Tensor>& exp_avgs, std::vector<at::Tensor>& exp_avg_sqs, int64_t step,
                        double lr, double beta1, double beta2, double weight_decay, double eps) {
#if LLAVA_TORCH_AT_LEAST(2, 0)
  std::vector<at::Tensor> steps;
  steps.reserve(params.size());
  for (const auto& p : params) steps.push_back(at::full({}, static_cast<double>(step), p.options().dtype(at::kFloat)));
  at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, {}, steps, lr, beta1, beta2, weight_decay, eps,
                    /*amsgrad=*/false, /*maximize=*/false);
#else
  (void)params, (void)grads, (void)exp_avgs, (void)exp_avg_sqs, (void)step, (void)lr, (void)beta1, (void)beta2;
  (void)weight_decay, (void)eps;
  TORCH_CHECK(false, "fused AdamW needs LibTorch >= 2.0");
#endif
}

inline constexpr bool has_fused_attention() { return LLAVA_TORCH_AT_LEAST(2, 0); }

inline std::string torch_version_string() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

}  // namespace llava::compat
