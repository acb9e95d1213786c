#pragma once
// The settings of a training run, one small struct per component, made from the command line's Options and
// validated in one place (TrainConfig::from_options). The components never see Options; the data pipeline
// still takes them (make_data_pipeline), as `data`.
#include <cstdint>
#include <string>
#include <vector>

#include "llava/model/checkpoint.h"
#include "llava/options.h"
#include "llava/train/lora.h"
#include "llava/train/optimizer.h"
#include "llava/train/stage.h"

namespace llava {

struct LoopConfig {
  double num_train_epochs = 3.0;
  int64_t max_steps = -1;                  // > 0 overrides the epochs
  int per_device_train_batch_size = 8;
  int gradient_accumulation_steps = 1;
  bool average_tokens_across_devices = true;
  double max_grad_norm = 1.0;              // 0: no clipping
  int max_bad_steps = 10;                  // non-finite steps in a row that stop the run
  bool fail_on_bad_sample = false;         // --on_bad_sample fail
  double max_skipped_share = 0.05;         // more skipped samples than this share: a loud warning at the end
  uint64_t seed = 42;
  bool shuffle = true, group_by_modality_length = false;
  int group_by_length_window = 0;
  int dataloader_num_workers = 0;
  bool gradient_checkpointing = false;
  bool dataloader_drop_last = false;       // the sampler drops the epoch's last incomplete global batch
};

struct ScheduleConfig {
  std::string type = "linear";
  int64_t warmup_steps = 0;
  double warmup_ratio = 0.0;
};

struct LogConfig {
  double logging_steps = 500;   // < 1: a fraction of the run's steps (HF)
  bool tensorboard = false;     // --report_to tensorboard | all | wandb (no network here: TensorBoard files)
  std::vector<std::string> report_notes;  // what --report_to asked for that is not there (printed by rank 0)
  std::string logging_dir;      // TensorBoard files ("": HF's output_dir/runs/<date>_<host>)
  std::string run_name;         // "": output_dir, as HF
};

// Held-out evaluation during training (HF's evaluation_strategy).
struct EvalConfig {
  std::string strategy = "no";  // no | steps | epoch
  double steps = 0;             // --eval_steps; 0: logging_steps (HF); < 1: a fraction of the run's steps
  std::string data_path;        // --eval_data_path (required unless strategy is no)
  bool generate = false;        // --eval_generate: also eval_exact_match (generation flags: TrainConfig::data)
  int batch_size = 8;           // --per_device_eval_batch_size
};

struct CheckpointConfig {
  std::string output_dir;
  std::string save_strategy = "steps";  // no | steps | epoch
  double save_steps = 500;      // < 1: a fraction of the run's steps; 0: final model only
  int save_total_limit = -1;
  std::string resume_from_checkpoint;  // a directory, "latest", or ""
  std::string tokenizer_source_dir;    // copied into every saved model directory
};

struct DistConfig {
  std::string device = "auto";  // resolved to cpu | cuda by the trainer
  std::string ddp_backend;      // "" : nccl on cuda, gloo on cpu
  int ddp_timeout_s = 1800;
  int zero_stage = 0;
};

struct TrainConfig {
  Options data;  // for make_data_pipeline (tokenizer, template, images, dataset)
  std::string model_dir;
  LoadOptions load;  // model loading (dtype, vision tower, projector); device and seed are set by the trainer
  StageOptions stage;
  bool lora_enable = false;
  LoraOptions lora;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  LoopConfig loop;
  LogConfig log;
  EvalConfig eval;
  CheckpointConfig checkpoint;
  DistConfig dist;
  bool bf16 = false, tf32 = false;

  // Checks every training option (a clear llava::Error naming the flag) and fills the structs.
  static TrainConfig from_options(const Options& options);
};

// How --model_name_or_path is to be loaded under the run's flags (train, eval, generate): the model flags,
// the projector file, dtype (--bf16) and seed; the device is the caller's.
LoadOptions model_load_options(const Options& options);
// --attn_implementation: sdpa and flash_attention_2 -> true (the fused SDPA kernel), eager -> false (written
// out); anything else is an error naming the flag.
bool fused_attention(const std::string& attn_implementation);

}  // namespace llava
