#pragma once
// What a training run reports, in the shapes LLaVA users know (rank 0 only: the other ranks' RunLog is
// inactive and does nothing):
//   output_dir/metrics.jsonl  one JSON line per optimizer step (step_line)
//   stdout                    HF's dict every logging_steps ({'loss': ..., 'grad_norm': ...}), the summary
//   stderr                    the tqdm bar on a terminal, plain progress lines otherwise
//   trainer_state.json        the same dicts in HF's log_history (kept in TrainerState)
#include <cstdint>
#include <optional>
#include <string>

#include "llava/train/log.h"
#include "llava/train/state.h"

namespace llava {

struct StepRecord;

class RunLog {
 public:
  // resume_step >= 0: metrics.jsonl continues after dropping lines past that step.
  RunLog(bool active, const std::string& output_dir, int64_t total_steps, int64_t first_step, int64_t resume_step);

  // After each optimizer step: the metrics line, the bar, and every `logging_steps` steps HF's dict (its
  // loss the window's mean, rounded to 4 digits; lr = the one the next step uses, as HF logs it).
  void step(const StepRecord& rec, TrainerState& state, int64_t logging_steps, double next_lr);
  void warning(const std::string& line);  // stderr (rank 0)
  // The end: HF's summary dict (stdout and log_history).
  void end(TrainerState& state, const LogDict& summary);
  void close();  // the bar (before messages that end the run)

 private:
  bool active_;
  MetricsWriter metrics_;
  std::optional<Progress> progress_;
};

// metrics.jsonl's line for a step (keys in this order; non-finite numbers as null).
nlohmann::ordered_json step_line(const StepRecord& rec);

}  // namespace llava
