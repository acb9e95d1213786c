#pragma once
// Checkpoint directories and the trainer's own state in them.
//
// output_dir/checkpoint-<step>/ holds an HF LLaVA model directory (config.json, model*.safetensors, tokenizer
// files), the optimizer state (optimizer.json + optimizer.rank<r>.safetensors, one per rank that owns state),
// the RNG state (rng_state.safetensors; rng_state_<r>.safetensors per rank for several ranks) and
// trainer_state.json (HF's fields incl. log_history, plus a "llava_train" section with the data position and
// running sums). It is written as checkpoint-<step>.tmp/ and renamed when complete, so a crash mid-save never
// leaves a checkpoint-<step>/ behind; trainer_state.json is written last inside it as a second marker.
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace llava {

class Optimizer;
class LlavaForCausalLMImpl;

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
  int64_t skipped_samples = 0;  // bad samples left out so far
  int64_t seen_samples = 0;     // samples trained on so far
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

// torch's default CPU (and CUDA, when initialised) generator states: rng_state.safetensors (world_size 1) or
// rng_state_<rank>.safetensors. Loading falls back to rank 0's / the single file when this rank's is missing
// (a resume with another world size).
void save_rng_state(const std::string& dir, int rank, int world_size);
void load_rng_state(const std::string& dir, int rank);

// The optimizer's state in a checkpoint: optimizer.json (rank 0: hyper-parameters, groups, step) and
// optimizer.rank<r>.safetensors with this rank's state_tensors() (ranks with none write no file). Loading
// reads every optimizer.rank*.safetensors of the directory (their headers say which tensors each holds), so
// any world size and ZeRO stage resumes the same state. Checkpoints of the earlier formats
// (optimizer.exp_avg.safetensors, zero_shard_*) are refused with a message saying so.
void save_optimizer_state(const Optimizer& optimizer, const std::string& dir, int rank);
void load_optimizer_state(Optimizer& optimizer, const std::string& dir);

// Writes the final model into output_dir, which also holds checkpoints and metrics (so it cannot be swapped
// as a whole): files go to output_dir/.final.tmp first and are renamed in, config.json last, so the directory
// only looks like a model once the weights are all there. Weights of an older final model are replaced.
void save_final_model(const LlavaForCausalLMImpl& model, const std::string& output_dir,
                      const std::string& tokenizer_source_dir);

}  // namespace llava
