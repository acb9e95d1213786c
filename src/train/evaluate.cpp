#include "llava/train/evaluate.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "llava/train/loader.h"

namespace llava {

double EvalSummary::loss() const {
  return num_target_tokens > 0 ? loss_sum / static_cast<double>(num_target_tokens)
                               : std::numeric_limits<double>::quiet_NaN();
}

double EvalSummary::accuracy() const {
  return num_target_tokens > 0 ? static_cast<double>(num_correct) / static_cast<double>(num_target_tokens)
                               : std::numeric_limits<double>::quiet_NaN();
}

EvalSummary evaluate(LlavaForCausalLMImpl& model, const Dataset& dataset, const ExampleOptions& example,
                     const EvalOptions& o, const std::function<void(const EvalSample&)>& on_sample) {
  const int64_t n = o.max_samples >= 0 ? std::min<int64_t>(o.max_samples, dataset.size()) : dataset.size();
  const int64_t bs = std::max(1, o.batch_size);
  std::vector<std::vector<int64_t>> batches;
  for (int64_t i = 0; i < n; i += bs) {
    std::vector<int64_t> b;
    for (int64_t j = i; j < std::min(n, i + bs); ++j) b.push_back(j);
    batches.push_back(std::move(b));
  }
  LoaderOptions lo;
  lo.num_workers = o.num_workers;
  lo.pad_id = o.pad_id;
  DataLoader loader(dataset, example, batches, lo);

  torch::NoGradGuard no_grad;
  model.eval();
  EvalSummary total;
  Batch batch;
  for (int64_t k = 0; loader.next(batch); ++k) {
    LlavaOutput out;
    if (batch.size() > 0) {
      out = model.forward(batch.inputs);  // lm_head only at supervised positions
    }
    torch::Tensor loss = out.per_sample_loss_sum.defined() ? out.per_sample_loss_sum.to(torch::kCPU, torch::kDouble)
                                                           : torch::Tensor();
    torch::Tensor targets = out.per_sample_targets.defined() ? out.per_sample_targets.cpu() : torch::Tensor();
    torch::Tensor correct = out.per_sample_correct.defined() ? out.per_sample_correct.cpu() : torch::Tensor();
    // The loader keeps good samples in order and one error per skipped sample, in order.
    size_t good = 0, bad = 0;
    for (int64_t index : batches[k]) {
      EvalSample s;
      s.index = index;
      s.id = dataset.id(static_cast<size_t>(index));
      if (good < batch.sample_indices.size() && batch.sample_indices[good] == index) {
        s.loss_sum = loss[good].item<double>();
        s.num_target_tokens = targets[good].item<int64_t>();
        s.num_correct = correct[good].item<int64_t>();
        ++good;
        total.loss_sum += s.loss_sum;
        total.num_target_tokens += s.num_target_tokens;
        total.num_correct += s.num_correct;
        ++total.samples;
      } else {
        s.ok = false;
        s.error = bad < batch.errors.size() ? batch.errors[bad] : "skipped";
        ++bad;
        ++total.skipped;
      }
      on_sample(s);
    }
  }
  return total;
}

}  // namespace llava
