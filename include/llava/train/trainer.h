#pragma once
// `llava-train train`: LLaVA's training run (HF Trainer + LLaVATrainer semantics). The Trainer builds the
// components from a TrainConfig (data, model and stage, optimizer, schedule, checkpoints, logs, process
// group, resume state); train() is the loop; train_step() in src/train/trainer.cpp is the step, top to
// bottom. Outputs: design.md §4.3.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "llava/train/train_config.h"

namespace llava {

class LlavaForCausalLMImpl;

// One optimizer step, as metrics.jsonl records it.
struct StepRecord {
  int64_t step = 0;            // 1-based optimizer step
  double epoch = 0;            // fractional epoch after the step
  double loss = 0;             // the step's loss (unrounded; NaN/inf for a bad step)
  double grad_norm = 0;        // global norm before clipping
  double learning_rate = 0;    // lr applied by this step (base group)
  double projector_learning_rate = -1;  // the projector's, with --mm_projector_lr (-1: none)
  int64_t num_tokens = 0;      // real positions, images expanded
  int64_t num_target_tokens = 0;
  int64_t num_samples = 0;
  int64_t skipped_samples = 0;  // bad samples left out in this step
  double skipped_share = 0;     // of all samples so far (this and resumed runs), the share that was bad
  double step_time_s = 0, data_wait_s = 0;
  bool update_skipped = false;  // non-finite loss/grad, or no supervised token
  std::vector<int64_t> sample_indices;
  std::vector<std::string> sample_ids;  // (not in metrics.jsonl; for messages)
};

// Test seams; all optional.
struct TrainHooks {
  std::function<void(LlavaForCausalLMImpl&)> on_model_ready;  // after loading and stage setup (poison weights...)
  std::function<void(const StepRecord&)> on_step;             // after every optimizer step
  std::function<void(const std::string& part)> on_checkpoint_part;  // inside a checkpoint save, before each part
};

struct TrainResult {
  int exit_code = 0;            // 0 done; 1 stopped by the NaN guard; 2 interrupted by a signal (checkpoint saved)
  std::string message;          // why it stopped, for exit codes != 0
  int64_t global_step = 0;
  double train_loss = 0;
  int64_t skipped_samples = 0;  // bad samples left out over the whole run (this and earlier, resumed, runs)
  std::string last_checkpoint;  // newest checkpoint written by this run ("" if none)
  std::vector<StepRecord> steps;  // the steps run by this process
};

class Trainer {
 public:
  // Builds every component; bad settings or inputs throw llava::Error (exit 1 at the CLI).
  Trainer(TrainConfig config, TrainHooks hooks = {});
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  TrainResult train();  // the loop

  struct Parts;  // the components (trainer.cpp)

 private:
  // set-up, in this order (the constructor)
  void start_processes();
  void build_data();
  void find_resume_point();
  void build_model();
  void build_optimizer();
  void restore_state();
  void print_start() const;
  // the run
  StepRecord train_step();
  void forward_backward_step(const struct Batch& batch, bool last, struct StepSums& sums);
  bool due(const std::string& strategy, int64_t every) const;
  void evaluate_held_out();
  void save_checkpoint(TrainResult& result);
  void save_final_model();
  void report_end(TrainResult& result);

  TrainConfig config_;
  TrainHooks hooks_;
  std::unique_ptr<Parts> parts_;
};

// Trainer(TrainConfig::from_options(options), hooks).train(), as `llava-train train` runs it.
TrainResult train(const Options& options, const TrainHooks& hooks = {});

// What SIGINT/SIGTERM do during train() (the CLI's handler calls it; async-signal-safe): finish the current
// step, save a checkpoint, return exit code 2. The decision is taken by all ranks together.
void request_stop();

}  // namespace llava
