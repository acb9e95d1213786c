// linear_cross_entropy: chunked output layer + cross entropy with gradients formed in the forward pass.
#include "llava/model/lm_loss.h"

#include <algorithm>

namespace llava {

namespace {

constexpr int64_t kChunkLogitBytes = int64_t{256} << 20;

// forward: (hidden, weight, targets) -> (loss_sum, losses, correct); d loss_sum / d hidden and / d weight are
// computed here and scaled by the incoming gradient in backward.
struct LinearCrossEntropy : public torch::autograd::Function<LinearCrossEntropy> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& hidden,
                                                const torch::Tensor& weight, const torch::Tensor& targets,
                                                int64_t chunk_rows) {
    const int64_t n = hidden.size(0), d = hidden.size(1), vocab = weight.size(0);
    const bool want_h = hidden.requires_grad(), want_w = weight.requires_grad();
    torch::Tensor grad_h, grad_w;
    if (want_h) grad_h = torch::empty({n, d}, hidden.options());
    if (want_w) grad_w = torch::zeros({vocab, d}, weight.options().dtype(torch::kFloat));
    torch::Tensor losses = torch::empty({n}, hidden.options().dtype(torch::kFloat));
    torch::Tensor correct = torch::empty({n}, hidden.options().dtype(torch::kBool));
    for (int64_t lo = 0; lo < n; lo += chunk_rows) {
      const int64_t rows = std::min(chunk_rows, n - lo);
      torch::Tensor h = hidden.narrow(0, lo, rows), t = targets.narrow(0, lo, rows).view({rows, 1});
      torch::Tensor logp = torch::log_softmax(torch::linear(h, weight).to(torch::kFloat), -1);  // [rows, V]
      losses.narrow(0, lo, rows).copy_(logp.gather(1, t).view({rows}).neg());
      correct.narrow(0, lo, rows).copy_(logp.argmax(-1).eq(t.view({rows})));
      if (!want_h && !want_w) continue;
      torch::Tensor g = logp.exp_();  // d(-log p_t)/d logits = softmax - one_hot(t)
      g.scatter_add_(1, t, torch::full({rows, 1}, -1.0f, g.options()));
      g = g.to(weight.scalar_type());
      if (want_h) grad_h.narrow(0, lo, rows).copy_(g.mm(weight));
      if (want_w) grad_w.add_(g.t().mm(h));
    }
    ctx->save_for_backward({grad_h, grad_w});
    ctx->saved_data["weight_dtype"] = static_cast<int64_t>(weight.scalar_type());
    ctx->mark_non_differentiable({losses, correct});
    return {losses.sum(), losses, correct};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    const torch::Tensor& g = grad_outputs[0];  // scalar
    const auto wdt = static_cast<torch::ScalarType>(ctx->saved_data["weight_dtype"].toInt());
    torch::Tensor grad_h = saved[0].defined() ? saved[0] * g.to(saved[0].scalar_type()) : torch::Tensor();
    torch::Tensor grad_w = saved[1].defined() ? (saved[1] * g.to(torch::kFloat)).to(wdt) : torch::Tensor();
    return {grad_h, grad_w, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

TokenLosses linear_cross_entropy(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& targets,
                                 int64_t chunk_rows) {
  if (chunk_rows <= 0) chunk_rows = std::max<int64_t>(1, kChunkLogitBytes / (4 * std::max<int64_t>(1, weight.size(0))));
  auto out = LinearCrossEntropy::apply(hidden, weight, targets, chunk_rows);
  return {out[0], out[1], out[2]};
}

}  // namespace llava
