#pragma once
// Loss and token accuracy of a model over a data set, without training (design.md §4.2): samples in file
// order, batches of batch_size, bad samples skipped and reported.
#include <cstdint>
#include <functional>
#include <string>

#include "llava/dataset.h"
#include "llava/example.h"
#include "llava/model/llava.h"

namespace llava {

struct EvalSample {
  int64_t index = 0;
  std::string id;
  bool ok = true;
  std::string error;             // when !ok
  double loss_sum = 0;           // summed CE over the sample's supervised tokens
  int64_t num_target_tokens = 0;
  int64_t num_correct = 0;       // argmax == label among them
};

struct EvalSummary {
  double loss_sum = 0;
  int64_t num_target_tokens = 0, num_correct = 0;
  int64_t samples = 0, skipped = 0;
  double loss() const;      // mean over all supervised tokens (NaN when there are none)
  double accuracy() const;
};

struct EvalOptions {
  int batch_size = 8;
  int64_t max_samples = -1;  // < 0: all
  int num_workers = 0;
  int pad_id = 0;
};

// Calls on_sample for every sample in file order (evaluated or skipped) and returns the totals.
EvalSummary evaluate(LlavaForCausalLMImpl& model, const Dataset& dataset, const ExampleOptions& example,
                     const EvalOptions& options, const std::function<void(const EvalSample&)>& on_sample);

}  // namespace llava
