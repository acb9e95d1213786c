#pragma once
// The language-model loss over supervised positions without materialising [tokens, vocab] logits: the
// positions go through the output layer in chunks, and each chunk's gradient w.r.t. the hidden states and
// the output weight is computed right away (softmax - one-hot), so the backward pass needs no logits at all
// (the idea of "fused linear cross entropy"). Per chunk it holds one [rows, vocab] fp32 buffer (logits, then
// softmax, then the logits' gradient, in place); in all it keeps one [n, D] and, when the weight trains, one
// fp32 [V, D] gradient until backward. Numerics follow HF: logits in the weight's dtype, upcast to fp32, then
// log_softmax + NLL's arithmetic (max, log-sum-exp) written out.
#include <torch/torch.h>

#include <cstdint>

namespace llava {

struct TokenLosses {
  torch::Tensor loss_sum;  // scalar fp32, differentiable w.r.t. hidden and weight
  torch::Tensor losses;    // [n] fp32, detached: each position's cross entropy
  torch::Tensor correct;   // [n] bool: argmax == target
};

// hidden [n, D] (the positions to score), weight [V, D] (lm_head), targets [n] int64 in [0, V).
// chunk_rows <= 0: as many rows as fit in 256 MiB of fp32 logits on a GPU, 8 MiB on a CPU (at least 64).
TokenLosses linear_cross_entropy(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& targets,
                                 int64_t chunk_rows = 0);

}  // namespace llava
