// RunLog: metrics.jsonl, HF's log lines, the progress bar (run_log.h).
#include "llava/train/run_log.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <limits>

#include "llava/train/trainer.h"

namespace llava {
namespace fs = std::filesystem;

nlohmann::ordered_json step_line(const StepRecord& r) {
  using ojson = nlohmann::ordered_json;
  auto num = [](double v) { return std::isfinite(v) ? ojson(v) : ojson(nullptr); };
  ojson j = {{"step", r.step},
             {"epoch", r.epoch},
             {"loss", num(r.loss)},
             {"grad_norm", num(r.grad_norm)},
             {"learning_rate", r.learning_rate},
             {"num_tokens", r.num_tokens},
             {"num_target_tokens", r.num_target_tokens},
             {"num_samples", r.num_samples},
             {"step_time_s", r.step_time_s},
             {"data_wait_s", r.data_wait_s},
             {"tokens_per_s", r.step_time_s > 0 ? r.num_tokens / r.step_time_s : 0.0},
             {"samples_per_s", r.step_time_s > 0 ? r.num_samples / r.step_time_s : 0.0},
             {"skipped_samples", r.skipped_samples},
             {"skipped_share", r.skipped_share},
             {"update_skipped", r.update_skipped}};
  if (r.projector_learning_rate >= 0) j["projector_learning_rate"] = r.projector_learning_rate;
  return j;
}

RunLog::RunLog(bool active, const std::string& output_dir, int64_t total_steps, int64_t first_step,
               int64_t resume_step)
    : active_(active) {
  if (!active_) return;
  metrics_.open((fs::path(output_dir) / "metrics.jsonl").string(), resume_step);
  progress_.emplace(total_steps, first_step, ::isatty(STDERR_FILENO) != 0);
}

void RunLog::step(const StepRecord& rec, TrainerState& state, int64_t logging_steps, double next_lr) {
  if (!active_) return;
  metrics_.write(step_line(rec).dump());
  progress_->update(state.global_step);
  if (logging_steps <= 0 || state.global_step % logging_steps != 0) return;
  LogDict d;
  d.add("loss", state.window_steps ? py_round(state.window_loss / state.window_steps, 4)
                                   : std::numeric_limits<double>::quiet_NaN());
  d.add("grad_norm", rec.grad_norm);
  d.add("learning_rate", next_lr);
  d.add("epoch", py_round(state.epoch, 2));
  progress_->print_line(d.to_python());
  nlohmann::json entry = nlohmann::json::object();
  for (const auto& [k, v] : d.items()) entry[k] = std::get<double>(v);
  entry["step"] = state.global_step;
  state.log_history.push_back(entry);
  state.window_loss = 0;
  state.window_steps = 0;
}

void RunLog::warning(const std::string& line) {
  if (active_) std::cerr << line << "\n";
}

void RunLog::end(TrainerState& state, const LogDict& summary) {
  nlohmann::json entry = nlohmann::json::object();
  for (const auto& [k, v] : summary.items()) entry[k] = std::get<double>(v);
  entry["step"] = state.global_step;
  entry["total_flos"] = 0;
  state.log_history.push_back(entry);
  if (!active_) return;
  close();
  std::cout << summary.to_python() << "\n" << std::flush;
}

void RunLog::close() {
  if (progress_) progress_->close();
}

}  // namespace llava
