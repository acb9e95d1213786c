// `llava-train eval`: per-sample loss and token accuracy, then the summary line (design.md §4.2); with
// --generate true each sample's last answer is also generated and compared (eval_exact_match).
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "llava/dist/process_group.h"
#include "llava/error.h"
#include "llava/model/checkpoint.h"
#include "llava/pipeline.h"
#include "llava/tokenizer.h"
#include "llava/train/evaluate.h"
#include "llava/train/train_config.h"

namespace llava::cli {
using json = nlohmann::ordered_json;

LoadedLlava load_model_from_options(const Options& o, const ExampleOptions& example) {
  LoadOptions lo = model_load_options(o);
  lo.device = dist::resolve_device(o.device, dist::DistEnv::from_environment());
  LoadedLlava loaded = load_llava(o.model_name_or_path, lo);
  for (const auto& note : loaded.model->configure_images(example.anyres, image_aspect_ratio_name(example), lo.seed))
    loaded.notes.push_back(note);
  for (const auto& note : loaded.notes) std::cerr << "model: " << note << "\n";
  return loaded;
}

namespace {

// The first --show_examples generated samples, readable (stderr: stdout stays one JSON object a line): the
// whole prompt the model answered (earlier rounds and every image marker included), the reference, the answer.
void show_example(const GeneratedSample& s) {
  const auto images = std::count(s.input_ids.begin(), s.input_ids.end(), kImageTokenIndex);
  std::string prompt;
  for (char c : s.prompt) prompt += c == '\n' ? std::string("\n             ") : std::string(1, c);
  std::cerr << "example " << s.index << " (id '" << s.id << "'), " << images << (images == 1 ? " image" : " images")
            << "\n"
            << "  prompt:    " << prompt << "\n"
            << "  reference: " << s.reference << "\n"
            << "  generated: " << s.text << (s.exact_match ? "   [exact match]" : "   [differs]") << "\n";
}

}  // namespace

int cmd_eval(const Options& o) {
  auto data = make_data_pipeline(o, /*needs_dataset=*/true);
  LoadedLlava loaded = load_model_from_options(o, data->example);

  std::ofstream file;
  if (!o.output.empty()) {
    file.open(o.output);
    if (!file) throw Error(o.output + ": cannot write");
  }
  std::ostream& lines = file.is_open() ? static_cast<std::ostream&>(file) : std::cout;
  auto dump = [](const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); };
  auto num = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };

  // --generate: the answers first (kept by sample index), then the loss pass writes one line per sample.
  std::map<int64_t, GeneratedSample> generated;
  GenerationSummary gen_summary;
  if (o.generate) {
    GenerateOptions go = generate_options_from(o, data->tokenizer, loaded.config);
    int shown = 0;
    gen_summary = generate_and_score(*loaded.model, *data->dataset, data->example, go, [&](const GeneratedSample& s) {
      if (s.ok && shown < o.show_examples) show_example(s), ++shown;
      generated.emplace(s.index, s);
    });
  }

  EvalOptions eo;
  eo.batch_size = o.per_device_eval_batch_size;
  eo.max_samples = o.max_samples;
  eo.num_workers = o.dataloader_num_workers;
  eo.pad_id = data->tokenizer.pad_id();
  EvalSummary s = evaluate(*loaded.model, *data->dataset, data->example, eo, [&](const EvalSample& r) {
    if (!r.ok) {
      std::cerr << "warning: skipping bad sample: " << r.error << "\n";
      lines << dump({{"index", r.index}, {"id", r.id}, {"status", "error"}, {"error", r.error}}) << "\n";
      return;
    }
    const double n = static_cast<double>(r.num_target_tokens);
    json line = {{"index", r.index},
                 {"id", r.id},
                 {"loss", num(r.num_target_tokens ? r.loss_sum / n : NAN)},
                 {"num_target_tokens", r.num_target_tokens},
                 {"token_accuracy", num(r.num_target_tokens ? r.num_correct / n : NAN)}};
    auto g = generated.find(r.index);
    if (g != generated.end() && g->second.ok) {
      line["generated_text"] = g->second.text;
      line["reference"] = g->second.reference;
      line["exact_match"] = g->second.exact_match;
    }
    lines << dump(line) << "\n";
  });
  lines.flush();
  json summary = {{"eval_loss", num(s.loss())},
                  {"eval_token_accuracy", num(s.accuracy())},
                  {"eval_samples", s.samples},
                  {"eval_skipped", s.skipped}};
  if (o.generate) summary["eval_exact_match"] = num(gen_summary.exact_match());
  std::cout << dump(summary) << "\n";
  return 0;
}

}  // namespace llava::cli
