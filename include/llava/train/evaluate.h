#pragma once
// Loss and token accuracy of a model over a data set, without training (design.md §4.2): samples in file
// order, batches of batch_size, bad samples skipped and reported. And generation over a data set, scored
// against each sample's final answer (eval --generate, generate, and the trainer's evaluation).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "llava/dataset.h"
#include "llava/example.h"
#include "llava/model/generate.h"
#include "llava/model/llava.h"
#include "llava/options.h"

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

// One sample's generation. The prompt is the sample up to its last question (build_generation_example).
struct GeneratedSample {
  int64_t index = 0;
  std::string id;
  bool ok = true;
  std::string error;                    // when !ok
  std::string prompt, question;         // rendered prompt; the last human turn as written
  std::string reference;                // the sample's final answer (has_reference)
  bool has_reference = false;
  std::vector<int32_t> input_ids;       // the prompt's, -200 per image
  std::vector<int64_t> generated_ids;   // new tokens only (ends with EOS when stopped_on_eos)
  std::string text;                     // tokenizer decode(generated_ids, skip_special_tokens=true)
  bool stopped_on_eos = false;
  bool exact_match = false;             // has_reference and strip(text) == strip(reference)
};

struct GenerationSummary {
  int64_t samples = 0, skipped = 0;
  int64_t scored = 0;         // generated samples that have a reference answer
  int64_t exact_matches = 0;  // of those, the ones whose text equals it after stripping surrounding whitespace
  double exact_match() const;  // exact_matches / scored (NaN when nothing was scored)
};

struct GenerateOptions {
  int batch_size = 8;        // prompts per generate() batch (left-padded: ids as one at a time)
  int64_t max_samples = -1;  // < 0: all
  GenerationConfig generation;
  uint64_t seed = 42;        // sampling: one CPU generator for the whole pass
};

// --max_new_tokens, --do_sample, --temperature, --top_p, --top_k, --seed, --per_device_eval_batch_size,
// --max_samples; EOS is the tokenizer's (else the model config's). Validated (llava::Error naming the flag).
GenerateOptions generate_options_from(const Options& options, const Tokenizer& tokenizer, const LlavaConfig& model);

// Generates for every sample in file order (bad samples skipped and reported through on_sample) and scores
// each against its final answer. The model's training flag is kept. example.tokenizer decodes.
GenerationSummary generate_and_score(LlavaForCausalLMImpl& model, const Dataset& dataset, const ExampleOptions& example,
                                     const GenerateOptions& options,
                                     const std::function<void(const GeneratedSample&)>& on_sample);

}  // namespace llava
