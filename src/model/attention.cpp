// attention: the fused kernel where LibTorch has one, else the written-out attention with recomputation (attention.h).
#include "llava/model/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "llava/torch_compat.h"

namespace llava {

namespace {

constexpr int64_t kChunkScoreBytes = int64_t{4} << 20;
constexpr int64_t kMinChunkRows = 16;

double softmax_scale(const torch::Tensor& q) { return 1.0 / std::sqrt(static_cast<double>(q.size(-1))); }

// The fp32 probabilities of query rows [lo, lo + rows): softmax(q_c k^T * scale + mask_c + causal_c).
torch::Tensor chunk_probabilities(const torch::Tensor& q_c, const torch::Tensor& k, const torch::Tensor& mask,
                                  bool causal, int64_t lo, int64_t tq, double scale) {
  const int64_t rows = q_c.size(-2), tk = k.size(-2);
  // in place on the fresh matmul output (none of these ops keeps its input)
  torch::Tensor scores = torch::matmul(q_c, k.transpose(-2, -1)).mul_(scale);
  if (mask.defined()) scores.add_(mask.size(-2) == 1 ? mask : mask.narrow(-2, lo, rows));
  if (causal)  // key j is hidden from query row i when j > Tk - Tq + i
    scores.masked_fill_(torch::ones({rows, tk}, q_c.options().dtype(torch::kBool)).triu(tk - tq + lo + 1),
                        -std::numeric_limits<float>::infinity());
  return torch::softmax(scores, -1, torch::kFloat);
}

// The mask is no differentiable input (and may be undefined, which Function inputs may not): it travels wrapped.
struct MaskArg {
  torch::Tensor mask;
};

struct WrittenOutAttention : public torch::autograd::Function<WrittenOutAttention> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, const MaskArg& mask_arg, bool causal, int64_t chunk_rows) {
    const torch::Tensor& mask = mask_arg.mask;
    const int64_t tq = q.size(-2);
    const double scale = softmax_scale(q);
    torch::Tensor out = torch::empty(q.sizes().vec(), q.options().dtype(v.scalar_type()));
    for (int64_t lo = 0; lo < tq; lo += chunk_rows) {
      const int64_t rows = std::min(chunk_rows, tq - lo);
      torch::Tensor probs = chunk_probabilities(q.narrow(-2, lo, rows), k, mask, causal, lo, tq, scale);
      out.narrow(-2, lo, rows).copy_(torch::matmul(probs.to(v.scalar_type()), v));
    }
    ctx->save_for_backward({q, k, v});
    if (mask.defined()) ctx->saved_data["mask"] = mask;
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["chunk_rows"] = chunk_rows;
    return out;
  }

  // Per chunk, the gradients of the written-out ops: dV += P^T dO; dP = dO V^T; dS = P (dP - rowsum(P dP));
  // dQ_c = dS K scale; dK += dS^T Q_c scale (masked positions have P = 0, so they get no gradient).
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &q = saved[0], &k = saved[1], &v = saved[2];
    const auto it = ctx->saved_data.find("mask");
    const torch::Tensor mask = it == ctx->saved_data.end() ? torch::Tensor() : it->second.toTensor();
    const bool causal = ctx->saved_data["causal"].toBool();
    const int64_t chunk_rows = ctx->saved_data["chunk_rows"].toInt(), tq = q.size(-2);
    const double scale = softmax_scale(q);
    const torch::Tensor grad_out = grad_outputs[0].contiguous();
    torch::Tensor dq = torch::empty_like(q), dk = torch::zeros(k.sizes().vec(), k.options().dtype(torch::kFloat)),
                  dv = torch::zeros(v.sizes().vec(), v.options().dtype(torch::kFloat));
    for (int64_t lo = 0; lo < tq; lo += chunk_rows) {
      const int64_t rows = std::min(chunk_rows, tq - lo);
      const torch::Tensor q_c = q.narrow(-2, lo, rows), do_c = grad_out.narrow(-2, lo, rows);
      torch::Tensor probs = chunk_probabilities(q_c, k, mask, causal, lo, tq, scale);  // fp32
      dv.add_(torch::matmul(probs.to(v.scalar_type()).transpose(-2, -1), do_c));
      torch::Tensor ds = torch::matmul(do_c, v.transpose(-2, -1)).to(torch::kFloat);  // dP
      ds.sub_((ds * probs).sum(-1, /*keepdim=*/true)).mul_(probs).mul_(scale);       // dS, scaled
      ds = ds.to(q.scalar_type());
      dq.narrow(-2, lo, rows).copy_(torch::matmul(ds, k));
      dk.add_(torch::matmul(ds.transpose(-2, -1), q_c));
    }
    return {dq, dk.to(k.scalar_type()), dv.to(v.scalar_type()), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor written_out_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                    const torch::Tensor& mask, bool causal, int64_t chunk_rows) {
  if (chunk_rows <= 0) {
    const int64_t row_bytes = 4 * q.size(0) * q.size(1) * k.size(-2);
    chunk_rows = std::max(kMinChunkRows, kChunkScoreBytes / std::max<int64_t>(row_bytes, 1));
  }
  // Probabilities that fit in one chunk are small: autograd keeps them (recomputing would cost ~20% of the
  // attention's time for a few MiB).
  if (q.size(-2) <= chunk_rows)
    return torch::matmul(chunk_probabilities(q, k, mask, causal, 0, q.size(-2), softmax_scale(q)).to(v.scalar_type()), v);
  return WrittenOutAttention::apply(q, k, v, MaskArg{mask}, causal, chunk_rows);
}

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& mask,
                        bool causal, bool use_fused) {
  if (use_fused && compat::has_fused_attention()) return compat::fused_attention(q, k, v, mask, causal);
  return written_out_attention(q, k, v, mask, causal);
}

}  // namespace llava
