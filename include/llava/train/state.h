#pragma once
// Checkpoint directories and the trainer's own state in them.
//
// output_dir/checkpoint-<step>/ holds an HF LLaVA model directory (config.json, model*.safetensors, tokenizer
// files), the optimizer state (optimizer.*.safetensors + optimizer.json), rng_state.safetensors and
// trainer_state.json (HF's fields incl. log_history, plus a "llava_train" section with the data position and
// running sums). It is written as checkpoint-<step>.tmp/ and renamed when complete, so a crash mid-save never
// leaves a checkpoint-<step>/ behind; trainer_state.json is written last inside it as a second marker.
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace llava {

// What trainer_state.json records (HF TrainerState's fields + ours).
struct TrainerState {
  int64_t global_step = 0;      // optimizer steps done (skipped updates included)
  double epoch = 0.0;           // fractional epoch after global_step
  int64_t max_steps = 0;
  double num_train_epochs = 0;
  int64_t logging_steps = 0, save_steps = 0;
  int64_t train_batch_size = 0;
  nlohmann::json log_history = nlohmann::json::array();
  // ours ("llava_train"): where the data continues and what the logs need to continue identically
  int64_t next_epoch = 0;        // data position: the next micro-batch is batch `next_batch` of epoch `next_epoch`
  int64_t next_batch = 0;
  double loss_total = 0.0;       // sum of finite step losses (train_loss = loss_total / loss_steps)
  int64_t loss_steps = 0;
  double window_loss = 0.0;      // the current logging window (HF's tr_loss since the last log)
  int64_t window_steps = 0;
  int64_t consecutive_bad_steps = 0;
  int64_t skipped_samples = 0;
  nlohmann::json run;            // settings that must match on resume (batch size, accumulation, seed, ...)

  nlohmann::json to_json() const;
  static TrainerState from_json(const nlohmann::json& j, const std::string& where);
  static TrainerState read(const std::string& path);  // throws llava::Error naming the file
  void write(const std::string& path) const;         // atomically (tmp + rename)
};

std::string checkpoint_dir_name(int64_t step);  // "checkpoint-<step>"

// Writes output_dir/checkpoint-<step>.tmp/ through fill(tmp_dir), then renames it to checkpoint-<step>/ (an
// existing one of that step is replaced). If fill throws, the .tmp directory is removed and the exception
// propagates. Returns the final directory.
std::string save_checkpoint_atomic(const std::string& output_dir, int64_t step,
                                   const std::function<void(const std::string& tmp_dir)>& fill);
// Complete checkpoints (checkpoint-<N>/ with trainer_state.json) in output_dir, by step ascending.
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& output_dir);
// The newest complete checkpoint, "" when there is none.
std::string find_latest_checkpoint(const std::string& output_dir);
// Deletes the oldest complete checkpoints so that at most `limit` remain (limit <= 0: keep all).
void rotate_checkpoints(const std::string& output_dir, int limit);
// Removes checkpoint-*.tmp leftovers of interrupted saves.
void remove_partial_checkpoints(const std::string& output_dir);

// torch's default CPU (and CUDA, when initialised) generator states, as rng_state.safetensors.
void save_rng_state(const std::string& dir);
void load_rng_state(const std::string& dir);

}  // namespace llava
