#pragma once
// Every difference between LibTorch 1.13 (Debian 12) and 2.x lives here, and nothing else does.
#include <torch/torch.h>
#include <torch/version.h>

#include <type_traits>
#include <utility>

#define LLAVA_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace c10d {
class ProcessGroup;
class Backend;
}  // namespace c10d

namespace llava::compat {

// c10d: the class ProcessGroupGloo / ProcessGroupNCCL derive from, whose collectives (allreduce, broadcast,
// allgather, _allgather_base, _reduce_scatter_base) src/dist calls: c10d::ProcessGroup in 1.13,
// c10d::Backend in 2.x (where c10d::ProcessGroup became a dispatching wrapper). Everything else src/dist uses
// (TCPStore(host, TCPStoreOptions) but for useLibUV below, ProcessGroupGloo::Options::create(timeout),
// ProcessGroupNCCL::Options, Work::wait/isCompleted, autograd grad_accumulator post-hooks) has the same signature
// in both. LibTorch 1.13's Gloo also lacks bfloat16 and reduce_scatter: src/dist avoids both on every version.
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

// Attention over [B, H, T, D] tensors. `mask` is additive ([B or 1, 1, T, T], 0 or -inf) or undefined.
// 2.x: fused scaled_dot_product_attention; 1.13: the same math written out (tests check they agree).
inline at::Tensor scaled_dot_product_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                               const at::Tensor& mask, bool use_fused = true) {
#if LLAVA_TORCH_AT_LEAST(2, 0)
  if (use_fused) {
    return at::scaled_dot_product_attention(q, k, v, mask.defined() ? c10::optional<at::Tensor>(mask) : c10::nullopt);
  }
#endif
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1)) * scale;
  if (mask.defined()) scores = scores + mask;
  // softmax in fp32 for low-precision inputs, as HF's eager attention does
  at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  return at::matmul(probs, v);
}

inline constexpr bool has_fused_attention() { return LLAVA_TORCH_AT_LEAST(2, 0); }

inline std::string torch_version_string() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

}  // namespace llava::compat
