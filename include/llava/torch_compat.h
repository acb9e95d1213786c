#pragma once
// Every difference between LibTorch 1.13 (Debian 12) and 2.x lives here, and nothing else does.
#include <torch/torch.h>
#include <torch/version.h>

#define LLAVA_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace llava::compat {

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
