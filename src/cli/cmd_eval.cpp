// `llava-train eval`: per-sample loss and token accuracy, then the summary line (design.md §4.2).
#include <cmath>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "llava/dist/process_group.h"
#include "llava/error.h"
#include "llava/model/checkpoint.h"
#include "llava/pipeline.h"
#include "llava/train/evaluate.h"
#include "llava/train/train_config.h"

namespace llava::cli {
using json = nlohmann::ordered_json;

int cmd_eval(const Options& o) {
  auto data = make_data_pipeline(o, /*needs_dataset=*/true);
  LoadOptions lo = model_load_options(o);
  lo.device = dist::resolve_device(o.device, dist::DistEnv::from_environment());
  LoadedLlava loaded = load_llava(o.model_name_or_path, lo);
  for (const auto& note : loaded.model->configure_images(data->example.anyres, image_aspect_ratio_name(data->example),
                                                         lo.seed))
    loaded.notes.push_back(note);
  for (const auto& note : loaded.notes) std::cerr << "model: " << note << "\n";

  std::ofstream file;
  if (!o.output.empty()) {
    file.open(o.output);
    if (!file) throw Error(o.output + ": cannot write");
  }
  std::ostream& lines = file.is_open() ? static_cast<std::ostream&>(file) : std::cout;
  auto dump = [](const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); };
  auto num = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };

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
    lines << dump({{"index", r.index},
                   {"id", r.id},
                   {"loss", num(r.num_target_tokens ? r.loss_sum / n : NAN)},
                   {"num_target_tokens", r.num_target_tokens},
                   {"token_accuracy", num(r.num_target_tokens ? r.num_correct / n : NAN)}})
          << "\n";
  });
  lines.flush();
  std::cout << dump({{"eval_loss", num(s.loss())},
                     {"eval_token_accuracy", num(s.accuracy())},
                     {"eval_samples", s.samples},
                     {"eval_skipped", s.skipped}})
            << "\n";
  return 0;
}

}  // namespace llava::cli
