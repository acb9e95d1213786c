#pragma once
// `llava-train train`: LLaVA's training run (HF Trainer + LLaVATrainer semantics) in one loop, see
// src/train/trainer.cpp. Outputs: design.md §4.3.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "llava/options.h"

namespace llava {

class LlavaForCausalLMImpl;

// One optimizer step, as metrics.jsonl records it.
struct StepRecord {
  int64_t step = 0;            // 1-based optimizer step
  double epoch = 0;            // fractional epoch after the step
  double loss = 0;             // the step's loss (unrounded; NaN/inf for a bad step)
  double grad_norm = 0;        // global norm before clipping
  double learning_rate = 0;    // lr applied by this step (base group)
  int64_t num_tokens = 0;      // real positions, images expanded
  int64_t num_target_tokens = 0;
  int64_t num_samples = 0;
  int64_t skipped_samples = 0;  // bad samples left out in this step
  double step_time_s = 0, data_wait_s = 0;
  bool update_skipped = false;  // non-finite loss/grad, or no supervised token
  std::vector<int64_t> sample_indices;
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
  std::string last_checkpoint;  // newest checkpoint written by this run ("" if none)
  std::vector<StepRecord> steps;  // the steps run by this process
};

// Runs training as `llava-train train` does. Bad options/inputs throw llava::Error (exit 1 at the CLI).
TrainResult train(const Options& options, const TrainHooks& hooks = {});

// What SIGINT/SIGTERM do during train(): finish the current step, save a checkpoint, return exit code 2.
void request_stop();

}  // namespace llava
