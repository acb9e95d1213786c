#pragma once
// Attention over [B, H, Tq, D] queries and [B, H, Tk, D] keys/values, the one entry point of every model here.
// `mask` is additive ([B or 1, 1, Tq or 1, Tk], 0 or the dtype's lowest) or undefined. `causal` adds the causal
// mask, aligned bottom-right (query i is position Tk - Tq + i: a KV-cache step sees every earlier key).
//   fused (LibTorch >= 2.0, use_fused): scaled_dot_product_attention (compat::fused_attention).
//   otherwise: written_out_attention, HF's eager attention in query chunks.
#include <torch/torch.h>

#include <cstdint>

namespace llava {

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& mask,
                        bool causal, bool use_fused = true);

// softmax(q k^T / sqrt(D) + mask) v, softmax in fp32 (as HF's eager attention), over chunks of query rows.
// With more than one chunk nothing of size [B, H, Tq, Tk] is kept for backward: it keeps q, k, v (and the
// mask) and recomputes each chunk's probabilities there, so the memory a layer holds between forward and
// backward does not grow with the square of the sequence; one chunk's probabilities autograd keeps.
// chunk_rows <= 0: rows whose fp32 scores fit in 4 MiB (at least 16).
torch::Tensor written_out_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                    const torch::Tensor& mask, bool causal, int64_t chunk_rows = 0);

}  // namespace llava
