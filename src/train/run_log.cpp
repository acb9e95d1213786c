// RunLog: metrics.jsonl, HF's log lines, the progress bar (run_log.h).
#include "llava/train/run_log.h"

#include <unistd.h>

#include <cmath>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <limits>
#include <variant>

#include "llava/train/trainer.h"

namespace llava {
namespace fs = std::filesystem;

namespace {

double number(const LogDict::Value& v) {
  return std::visit([](auto x) { return static_cast<double>(x); }, v);
}

// A logged dict as HF's log_history entry: its values, then "step".
nlohmann::json history_entry(const LogDict& d, int64_t step) {
  nlohmann::json entry = nlohmann::json::object();
  for (const auto& [k, v] : d.items()) entry[k] = number(v);
  entry["step"] = step;
  return entry;
}

}  // namespace

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

RunLog::RunLog(bool active, const std::string& output_dir, const LogConfig& config, int64_t total_steps,
               int64_t first_step, int64_t resume_step, const nlohmann::json& settings)
    : active_(active) {
  if (!active_) return;
  metrics_.open((fs::path(output_dir) / "metrics.jsonl").string(), resume_step);
  for (const auto& note : config.report_notes) std::cerr << "warning: " << note << "\n";
  if (config.tensorboard) {
    const std::string dir = config.logging_dir.empty()
                                ? default_logging_dir(output_dir, std::time(nullptr), local_hostname())
                                : config.logging_dir;
    tensorboard_ = std::make_unique<TensorBoardWriter>(dir);
    tensorboard_->add_session_start(resume_step >= 0 ? resume_step + 1 : 1);
    nlohmann::json args = settings;
    args["run_name"] = config.run_name;
    tensorboard_->add_text("args", args.dump(2), 0);
    tensorboard_->flush();
    std::cerr << "TensorBoard: " << tensorboard_->path() << " (run '" << config.run_name << "')\n";
  }
  progress_.emplace(total_steps, first_step, ::isatty(STDERR_FILENO) != 0);
}

void RunLog::step(const StepRecord& rec, TrainerState& state, int64_t logging_steps, double next_lr) {
  if (!active_) return;
  metrics_.write(step_line(rec).dump());
  progress_->update(state.global_step);
  window_.seconds += rec.step_time_s;
  window_.data_wait += rec.data_wait_s;
  window_.tokens += rec.num_tokens;
  window_.samples += rec.num_samples;
  window_.skipped += rec.skipped_samples;
  if (logging_steps <= 0 || state.global_step % logging_steps != 0) return;
  LogDict d;
  d.add("loss", state.window_steps ? py_round(state.window_loss / state.window_steps, 4)
                                   : std::numeric_limits<double>::quiet_NaN());
  d.add("grad_norm", rec.grad_norm);
  d.add("learning_rate", next_lr);
  d.add("epoch", py_round(state.epoch, 2));
  progress_->print_line(d.to_python());
  state.log_history.push_back(history_entry(d, state.global_step));
  state.window_loss = 0;
  state.window_steps = 0;
  if (tensorboard_) tensorboard_step(rec, d, state.global_step);
  window_ = Window();
}

void RunLog::tensorboard_step(const StepRecord& rec, const LogDict& logged, int64_t step) {
  for (const auto& [name, value] : logged.items())
    tensorboard_->add_scalar("train/" + name, static_cast<float>(number(value)), step);
  const double seconds = window_.seconds > 0 ? window_.seconds : std::numeric_limits<double>::quiet_NaN();
  tensorboard_->add_scalar("train/tokens_per_second", static_cast<float>(window_.tokens / seconds), step);
  tensorboard_->add_scalar("train/samples_per_second", static_cast<float>(window_.samples / seconds), step);
  tensorboard_->add_scalar("train/data_wait_share", static_cast<float>(window_.data_wait / seconds), step);
  tensorboard_->add_scalar("train/skipped_samples", static_cast<float>(window_.skipped), step);
  tensorboard_->add_scalar("train/skipped_share", static_cast<float>(rec.skipped_share), step);
  tensorboard_->flush();
}

void RunLog::eval(TrainerState& state, const LogDict& metrics) {
  LogDict d = metrics;
  d.add("epoch", py_round(state.epoch, 2));
  state.log_history.push_back(history_entry(d, state.global_step));
  if (!active_) return;
  progress_->print_line(d.to_python());
  nlohmann::ordered_json line = {{"step", state.global_step}};
  for (const auto& [k, v] : d.items()) {
    const double x = number(v);
    line[k] = std::isfinite(x) ? nlohmann::ordered_json(x) : nlohmann::ordered_json(nullptr);
  }
  metrics_.write(line.dump());
  if (!tensorboard_) return;
  for (const auto& [k, v] : metrics.items())  // HF's rewrite_logs: eval_loss -> eval/loss
    tensorboard_->add_scalar(k.rfind("eval_", 0) == 0 ? "eval/" + k.substr(5) : "eval/" + k,
                             static_cast<float>(number(v)), state.global_step);
  tensorboard_->flush();
}

void RunLog::warning(const std::string& line) {
  if (active_) std::cerr << line << "\n";
}

void RunLog::end(TrainerState& state, const LogDict& summary) {
  nlohmann::json entry = history_entry(summary, state.global_step);
  entry["total_flos"] = 0;
  state.log_history.push_back(entry);
  if (!active_) return;
  close();
  std::cout << summary.to_python() << "\n" << std::flush;
}

void RunLog::close() {
  if (progress_) progress_->close();
  if (tensorboard_) tensorboard_->close();
}

}  // namespace llava
