// `llava-train generate`: answers each sample's last question (--data_path, --image_folder) or one question
// (--prompt TEXT [--image F ...]) with the model: greedy, or sampled with --do_sample. --output F.jsonl gets
// one line per sample {"index", "id", "prompt", "input_ids", "generated_ids", "text", "stopped_on_eos"}
// (stdout without --output); with --prompt the generated text goes to stdout.
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "commands.h"
#include "llava/error.h"
#include "llava/model/checkpoint.h"
#include "llava/pipeline.h"
#include "llava/train/evaluate.h"

namespace llava::cli {
using json = nlohmann::ordered_json;

namespace {

// --prompt and its --image files as a one-sample data set, so they take the data path's rules (markers,
// templates, preprocessing): the k-th <image> is the k-th --image; without a marker the images go in front.
Dataset prompt_dataset(const Options& o) {
  json sample = {{"id", "prompt"}};
  if (!o.image.empty()) sample["image"] = o.image;
  sample["conversations"] = json::array({{{"from", "human"}, {"value", o.prompt}}});
  return Dataset::from_text(json::array({sample}).dump(), o.image_folder, "--prompt");
}

}  // namespace

int cmd_generate(const Options& o) {
  const bool one_prompt = o.set_keys.count("prompt") > 0;
  if (one_prompt && !o.data_path.empty()) throw Error("generate: give --prompt or --data_path, not both");
  if (!one_prompt && !o.image.empty())
    throw Error("generate: --image goes with --prompt (the samples of --data_path name their own images)");
  auto data = make_data_pipeline(o, /*needs_dataset=*/!one_prompt);
  std::optional<Dataset> prompt_set;
  if (one_prompt) prompt_set.emplace(prompt_dataset(o));
  Dataset& dataset = one_prompt ? *prompt_set : *data->dataset;
  dataset.set_allow_unanswered(true);  // prompts may be a question alone
  LoadedLlava loaded = load_model_from_options(o, data->example);
  GenerateOptions go = generate_options_from(o, data->tokenizer, loaded.config);

  std::ofstream file;
  if (!o.output.empty()) {
    file.open(o.output);
    if (!file) throw Error(o.output + ": cannot write");
  }
  std::ostream* lines = file.is_open() ? &file : one_prompt ? nullptr : &std::cout;
  auto dump = [](const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); };
  GenerationSummary summary = generate_and_score(*loaded.model, dataset, data->example, go, [&](const GeneratedSample& s) {
    if (!s.ok) {
      if (one_prompt) throw Error(s.error);
      std::cerr << "warning: skipping bad sample: " << s.error << "\n";
      if (lines) *lines << dump({{"index", s.index}, {"id", s.id}, {"status", "error"}, {"error", s.error}}) << "\n";
      return;
    }
    if (lines)
      *lines << dump({{"index", s.index},
                      {"id", s.id},
                      {"prompt", s.prompt},
                      {"input_ids", s.input_ids},
                      {"generated_ids", s.generated_ids},
                      {"text", s.text},
                      {"stopped_on_eos", s.stopped_on_eos}})
             << "\n";
    if (one_prompt) std::cout << s.text << "\n";
  });
  if (lines) lines->flush();
  if (!one_prompt)
    std::cerr << "generate: " << summary.samples << " sample(s) generated, " << summary.skipped << " skipped\n";
  return 0;
}

}  // namespace llava::cli
