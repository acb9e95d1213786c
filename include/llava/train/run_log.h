#pragma once
// What a training run reports, in the shapes LLaVA users know (rank 0 only: the other ranks' RunLog is
// inactive and does nothing):
//   output_dir/metrics.jsonl  one JSON line per optimizer step (step_line), one per evaluation (eval_* keys)
//   stdout                    HF's dict every logging_steps ({'loss': ..., 'grad_norm': ...}), each
//                             evaluation's ({'eval_loss': ...}), the summary
//   stderr                    the tqdm bar on a terminal, plain progress lines otherwise
//   trainer_state.json        the same dicts in HF's log_history (kept in TrainerState)
//   TensorBoard (--report_to tensorboard): at every logging step the scalars train/loss, train/grad_norm,
//                             train/learning_rate, train/epoch, train/tokens_per_second, train/samples_per_second,
//                             train/data_wait_share (share of the window's time spent waiting for batches),
//                             train/skipped_samples (in the window) and train/skipped_share (of the run); each
//                             evaluation's eval/<name> (HF's TensorBoardCallback names); the run's settings as
//                             the text "args".
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "llava/tensorboard.h"
#include "llava/train/log.h"
#include "llava/train/state.h"
#include "llava/train/train_config.h"

namespace llava {

struct StepRecord;

class RunLog {
 public:
  // resume_step >= 0: metrics.jsonl continues after dropping lines past that step, and TensorBoard drops the
  // events an interrupted run wrote after it (SessionLog START at resume_step + 1). `settings`: the "args" text.
  RunLog(bool active, const std::string& output_dir, const LogConfig& config, int64_t total_steps, int64_t first_step,
         int64_t resume_step, const nlohmann::json& settings);

  // After each optimizer step: the metrics line, the bar, and every `logging_steps` steps HF's dict (its
  // loss the window's mean, rounded to 4 digits; lr = the one the next step uses, as HF logs it).
  void step(const StepRecord& rec, TrainerState& state, int64_t logging_steps, double next_lr);
  // An evaluation's HF dict (eval_loss, ...; epoch added): stdout, log_history, metrics.jsonl, TensorBoard.
  void eval(TrainerState& state, const LogDict& metrics);
  void warning(const std::string& line);  // stderr (rank 0)
  // The end: HF's summary dict (stdout and log_history).
  void end(TrainerState& state, const LogDict& summary);
  void close();  // the bar (before messages that end the run)
  std::string tensorboard_path() const { return tensorboard_ ? tensorboard_->path() : ""; }

 private:
  struct Window {  // the steps since the last logging step (TensorBoard's rates)
    double seconds = 0, data_wait = 0;
    int64_t tokens = 0, samples = 0, skipped = 0;
  };
  void tensorboard_step(const StepRecord& rec, const LogDict& logged, int64_t step);

  bool active_;
  MetricsWriter metrics_;
  std::optional<Progress> progress_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
  Window window_;
};

// metrics.jsonl's line for a step (keys in this order; non-finite numbers as null).
nlohmann::ordered_json step_line(const StepRecord& rec);

}  // namespace llava
