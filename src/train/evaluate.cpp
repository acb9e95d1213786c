#include "llava/train/evaluate.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "llava/error.h"
#include "llava/text_util.h"
#include "llava/train/batch.h"
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

double GenerationSummary::exact_match() const {
  return scored > 0 ? static_cast<double>(exact_matches) / static_cast<double>(scored)
                    : std::numeric_limits<double>::quiet_NaN();
}

GenerateOptions generate_options_from(const Options& o, const Tokenizer& tokenizer, const LlavaConfig& model) {
  GenerateOptions g;
  g.batch_size = o.per_device_eval_batch_size;
  if (g.batch_size < 1) throw Error("--per_device_eval_batch_size must be >= 1, got " + std::to_string(g.batch_size));
  g.max_samples = o.max_samples;
  g.seed = static_cast<uint64_t>(o.seed);
  GenerationConfig& c = g.generation;
  c.max_new_tokens = o.max_new_tokens;
  c.do_sample = o.do_sample;
  c.temperature = o.temperature;
  c.top_p = o.top_p;
  c.top_k = o.top_k;
  c.eos_token_id = tokenizer.eos_id() >= 0 ? tokenizer.eos_id() : model.text.eos_token_id;
  c.validate();
  return g;
}

namespace {

// The prompts of one batch: good samples as examples (their text kept aside), bad ones as errors, in order.
struct PromptBatch {
  std::vector<GeneratedSample> samples;  // every index of the batch, in order (ok == false: skipped)
  std::vector<Example> examples;         // one per ok sample
};

PromptBatch build_prompts(const Dataset& dataset, const ExampleOptions& example, const std::vector<int64_t>& indices) {
  PromptBatch batch;
  for (int64_t i : indices) {
    GeneratedSample s;
    s.index = i;
    s.id = dataset.id(static_cast<size_t>(i));
    try {
      Example ex = build_generation_example(dataset.sample(static_cast<size_t>(i)), example);
      s.prompt = ex.prompt;
      s.question = ex.question;
      s.reference = ex.reference;
      s.has_reference = ex.has_reference;
      s.input_ids = ex.input_ids;
      batch.examples.push_back(std::move(ex));
    } catch (const std::exception& e) {  // a bad sample, or an allocation an absurd input asked for
      s.ok = false;
      s.error = dynamic_cast<const Error*>(&e) ? e.what() : sample_context(i, s.id) + ": " + e.what();
    }
    batch.samples.push_back(std::move(s));
  }
  return batch;
}

}  // namespace

GenerationSummary generate_and_score(LlavaForCausalLMImpl& model, const Dataset& dataset, const ExampleOptions& example,
                                     const GenerateOptions& o,
                                     const std::function<void(const GeneratedSample&)>& on_sample) {
  const Tokenizer& tok = *example.tokenizer;
  const int64_t n = o.max_samples >= 0 ? std::min<int64_t>(o.max_samples, dataset.size()) : dataset.size();
  const int64_t bs = std::max(1, o.batch_size);
  at::Generator generator = at::detail::createCPUGenerator(o.seed);
  GenerationSummary total;
  for (int64_t first = 0; first < n; first += bs) {
    std::vector<int64_t> indices;
    for (int64_t i = first; i < std::min(n, first + bs); ++i) indices.push_back(i);
    PromptBatch batch = build_prompts(dataset, example, indices);
    std::vector<GenerationOutput> outputs;
    if (!batch.examples.empty()) {
      Batch prompts = collate(std::move(batch.examples), tok.pad_id());
      outputs = generate(model, prompts.inputs, o.generation, &generator);
    }
    size_t next_output = 0;
    for (GeneratedSample& s : batch.samples) {
      if (s.ok) {
        GenerationOutput& g = outputs[next_output++];
        s.generated_ids = std::move(g.ids);
        s.stopped_on_eos = g.stopped_on_eos;
        s.text = tok.decode(std::vector<int>(s.generated_ids.begin(), s.generated_ids.end()),
                            /*skip_special_tokens=*/true);
        s.exact_match = s.has_reference && python_strip(s.text) == python_strip(s.reference);
        ++total.samples;
        total.scored += s.has_reference;
        total.exact_matches += s.exact_match;
      } else {
        ++total.skipped;
      }
      on_sample(s);
    }
  }
  return total;
}

}  // namespace llava
