// linear_cross_entropy: chunked output layer + cross entropy with gradients formed in the forward pass.
#include "llava/model/lm_loss.h"

#include <algorithm>

namespace llava {

namespace {

// fp32 logits per chunk. On a GPU a chunk must be large for the output layer's matmul to be efficient; on
// a CPU 64+ rows already are, and a small chunk keeps the step's peak memory near the model's own.
int64_t chunk_logit_bytes(const torch::Device& device) { return device.is_cpu() ? int64_t{8} << 20 : int64_t{256} << 20; }
constexpr int64_t kMinChunkRows = 64;

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
      // One [rows, V] fp32 buffer per chunk, worked on in place: logits z -> exp(z - max) -> softmax - one_hot.
      // -log p_t = max + log(sum exp(z - max)) - z_t, HF's log_softmax + NLL written out.
      torch::Tensor z = torch::linear(h, weight).to(torch::kFloat);  // [rows, V]
      torch::Tensor z_t = z.gather(1, t).view({rows});
      correct.narrow(0, lo, rows).copy_(z.argmax(-1).eq(t.view({rows})));
      torch::Tensor max = std::get<0>(z.max(-1, /*keepdim=*/true));
      torch::Tensor sum = z.sub_(max).exp_().sum(-1, /*keepdim=*/true);
      losses.narrow(0, lo, rows).copy_(sum.log().add_(max).view({rows}).sub_(z_t));
      if (!want_h && !want_w) continue;
      torch::Tensor g = z.div_(sum);  // d(-log p_t)/d logits = softmax - one_hot(t)
      g.scatter_add_(1, t, torch::full({rows, 1}, -1.0f, g.options()));
      g = g.to(weight.scalar_type());
      if (want_h) {
        torch::Tensor rows_of_grad_h = grad_h.narrow(0, lo, rows);
        torch::mm_out(rows_of_grad_h, g, weight);
      }
      if (want_w) {  // accumulated in place: no [V, D] temporary per chunk
        if (g.scalar_type() == torch::kFloat) grad_w.addmm_(g.t(), h);
        else grad_w.add_(g.t().mm(h));
      }
    }
    // Kept outside save_for_backward: backward takes them out and scales them in place, so no second copy
    // of the [V, D] gradient is made and the weight's AccumulateGrad can take the tensor over.
    if (grad_h.defined()) ctx->saved_data["grad_h"] = grad_h;
    if (grad_w.defined()) ctx->saved_data["grad_w"] = grad_w;
    ctx->saved_data["weight_dtype"] = static_cast<int64_t>(weight.scalar_type());
    ctx->mark_non_differentiable({losses, correct});
    return {losses.sum(), losses, correct};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto take = [&](const char* key) {
      auto it = ctx->saved_data.find(key);
      if (it == ctx->saved_data.end()) return torch::Tensor();
      torch::Tensor t = it->second.toTensor();
      ctx->saved_data.erase(it);
      return t;
    };
    TORCH_CHECK(!ctx->saved_data.count("consumed"), "linear_cross_entropy: a second backward through one forward");
    ctx->saved_data["consumed"] = true;
    const torch::Tensor& g = grad_outputs[0];  // scalar
    const auto wdt = static_cast<torch::ScalarType>(ctx->saved_data["weight_dtype"].toInt());
    torch::Tensor grad_h = take("grad_h"), grad_w = take("grad_w");
    if (grad_h.defined()) grad_h.mul_(g.to(grad_h.scalar_type()));
    if (grad_w.defined()) grad_w = grad_w.mul_(g.to(torch::kFloat)).to(wdt);
    return {grad_h, grad_w, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

TokenLosses linear_cross_entropy(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& targets,
                                 int64_t chunk_rows) {
  if (chunk_rows <= 0)
    chunk_rows = std::max(kMinChunkRows, chunk_logit_bytes(hidden.device()) / (4 * std::max<int64_t>(1, weight.size(0))));
  auto out = LinearCrossEntropy::apply(hidden, weight, targets, chunk_rows);
  return {out[0], out[1], out[2]};
}

}  // namespace llava
