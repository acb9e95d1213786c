// TrainConfig::from_options: every training flag checked once, turned into the components' settings.
#include "llava/train/train_config.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "llava/error.h"
#include "llava/pipeline.h"

namespace llava {

namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw Error(message);
}

// The stage: LLaVA's four flags, or LLaVA-NeXT's --mm_tunable_parts over them.
StageOptions stage_options(const Options& o) {
  StageOptions s;
  s.tune_mm_mlp_adapter = o.tune_mm_mlp_adapter;
  s.freeze_backbone = o.freeze_backbone;
  s.freeze_mm_mlp_adapter = o.freeze_mm_mlp_adapter;
  s.unfreeze_mm_vision_tower = o.unfreeze_mm_vision_tower;
  s.lora_enable = o.lora_enable;
  if (!o.set_keys.count("mm_tunable_parts") && o.mm_tunable_parts.empty()) return s;
  const TunableParts parts = parse_tunable_parts(o.mm_tunable_parts);
  require(!o.lora_enable || parts.language_model,
          "--lora_enable with --mm_tunable_parts " + o.mm_tunable_parts +
              ": the LoRA adapters train only when mm_language_model is listed (LLaVA-NeXT freezes them otherwise); "
              "add it or drop --lora_enable");
  for (const auto& [flag, on] : {std::pair<const char*, bool>{"tune_mm_mlp_adapter", o.tune_mm_mlp_adapter},
                                 {"freeze_backbone", o.freeze_backbone},
                                 {"freeze_mm_mlp_adapter", o.freeze_mm_mlp_adapter},
                                 {"unfreeze_mm_vision_tower", o.unfreeze_mm_vision_tower}})
    if (on) s.overridden += (s.overridden.empty() ? "--" : ", --") + std::string(flag);
  s.tunable_parts = parts;
  s.tune_mm_mlp_adapter = parts.projector_only();  // LLaVA-NeXT then saves the projector alone, as pretraining
  s.freeze_backbone = s.freeze_mm_mlp_adapter = s.unfreeze_mm_vision_tower = false;
  return s;
}

}  // namespace

bool fused_attention(const std::string& attn_implementation) {
  const std::string& a = attn_implementation;
  if (a == "sdpa" || a == "flash_attention_2") return true;
  if (a == "eager") return false;
  throw Error("--attn_implementation must be sdpa, flash_attention_2 or eager, got '" + a + "'");
}

LoadOptions model_load_options(const Options& o) {
  const ConfigOverrides flags = config_overrides(o);  // the same the data side counts image positions with
  LoadOptions l;
  l.vision_tower = flags.vision_tower;
  l.mm_projector_type = flags.mm_projector_type;
  l.mm_vision_select_layer = flags.mm_vision_select_layer;
  l.mm_vision_select_feature = flags.mm_vision_select_feature;
  l.pretrain_mm_mlp_adapter = o.pretrain_mm_mlp_adapter;
  l.dtype = o.bf16 ? torch::kBFloat16 : torch::kFloat32;
  l.seed = static_cast<uint64_t>(o.seed);
  l.fused_attention = fused_attention(o.attn_implementation);
  return l;
}

namespace {

// --report_to as HF takes it (one name, or several separated by commas or spaces). TensorBoard files are
// written here; wandb is an online service (no network on a training node is the common case, and no
// account here): its request falls back to TensorBoard files with a note. Other integrations are named in a
// note and left out.
LogConfig log_config(const Options& o) {
  LogConfig l;
  l.logging_steps = o.logging_steps;
  l.logging_dir = o.logging_dir;
  l.run_name = o.run_name.empty() ? o.output_dir : o.run_name;
  std::string names = o.report_to;
  std::replace(names.begin(), names.end(), ',', ' ');
  std::stringstream words(names);
  for (std::string name; words >> name;) {
    if (name == "none") continue;
    if (name == "tensorboard" || name == "all") {
      l.tensorboard = true;
    } else if (name == "wandb") {
      l.tensorboard = true;
      l.report_notes.push_back("--report_to wandb: Weights & Biases is an online service llava-train does not "
                               "talk to; writing TensorBoard files instead (view them with tensorboard --logdir)");
    } else {
      l.report_notes.push_back("--report_to " + name + ": not available in llava-train, left out "
                               "(tensorboard and none are; metrics.jsonl is always written)");
    }
  }
  return l;
}

}  // namespace

TrainConfig TrainConfig::from_options(const Options& o) {
  require(!o.output_dir.empty(), "train: --output_dir is required");
  require(!o.model_name_or_path.empty(), "train: --model_name_or_path is required");
  require(o.per_device_train_batch_size >= 1, "--per_device_train_batch_size must be >= 1");
  require(o.gradient_accumulation_steps >= 1, "--gradient_accumulation_steps must be >= 1");
  require(o.max_steps > 0 || o.num_train_epochs > 0, "give --num_train_epochs > 0 or --max_steps > 0");
  require(o.on_bad_sample == "skip" || o.on_bad_sample == "fail",
          "--on_bad_sample must be skip or fail, got '" + o.on_bad_sample + "'");
  require(o.max_bad_steps >= 1, "--max_bad_steps must be >= 1");
  require(o.max_skipped_share >= 0 && o.max_skipped_share <= 1,
          "--max_skipped_share must be in [0, 1], got " + std::to_string(o.max_skipped_share));
  require(o.zero_stage >= 0 && o.zero_stage <= 2, "--zero_stage must be 0, 1 or 2, got " + std::to_string(o.zero_stage));
  require(o.ddp_timeout >= 1, "--ddp_timeout must be >= 1 (seconds)");
  require(o.ddp_bucket_cap_mb >= 1, "--ddp_bucket_cap_mb must be >= 1");
  require(o.dataloader_num_workers >= 0,
          "--dataloader_num_workers must be >= 0, got " + std::to_string(o.dataloader_num_workers));
  require(o.learning_rate >= 0 && std::isfinite(o.learning_rate), "--learning_rate must be a finite number >= 0");
  require(o.max_grad_norm >= 0, "--max_grad_norm must be >= 0 (0: no clipping)");
  require(o.warmup_ratio >= 0 && o.warmup_ratio <= 1, "--warmup_ratio must be in [0, 1]");
  require(o.warmup_steps >= 0, "--warmup_steps must be >= 0");
  require(o.logging_steps >= 0, "--logging_steps must be >= 0");
  require(o.save_steps >= 0, "--save_steps must be >= 0 (0: final model only)");
  require(o.adam_beta1 >= 0 && o.adam_beta1 < 1 && o.adam_beta2 >= 0 && o.adam_beta2 < 1,
          "--adam_beta1 / --adam_beta2 must be in [0, 1)");
  require(o.adam_epsilon > 0, "--adam_epsilon must be > 0");
  require(o.mm_projector_lr >= 0 && std::isfinite(o.mm_projector_lr), "--mm_projector_lr must be a finite number >= 0");
  require(o.mm_vision_tower_lr >= 0 && std::isfinite(o.mm_vision_tower_lr),
          "--mm_vision_tower_lr must be a finite number >= 0 (0: --learning_rate)");
  require(o.frames_upbound >= 0, "--frames_upbound must be >= 0, got " + std::to_string(o.frames_upbound));

  TrainConfig c;
  c.data = o;
  c.model_dir = o.model_name_or_path;
  c.bf16 = o.bf16;
  c.tf32 = o.tf32;
  c.load = model_load_options(o);

  c.stage = stage_options(o);
  c.lora_enable = o.lora_enable;
  c.lora = {o.lora_r, o.lora_alpha, o.lora_dropout};
  if (o.lora_enable) {
    require(o.lora_r >= 1, "--lora_r must be >= 1, got " + std::to_string(o.lora_r));
    require(o.lora_dropout >= 0 && o.lora_dropout < 1, "--lora_dropout must be in [0, 1)");
  }

  OptimizerConfig& opt = c.optimizer;
  opt.learning_rate = o.learning_rate;
  opt.weight_decay = o.weight_decay;
  opt.projector_lr = o.mm_projector_lr;
  opt.vision_tower_lr = o.mm_vision_tower_lr;
  opt.beta1 = o.adam_beta1;
  opt.beta2 = o.adam_beta2;
  opt.eps = o.adam_epsilon;
  opt.zero_stage = o.zero_stage;
  opt.bucket_cap_bytes = static_cast<size_t>(o.ddp_bucket_cap_mb) << 20;

  c.schedule = {o.lr_scheduler_type, o.warmup_steps, o.warmup_ratio};

  LoopConfig& l = c.loop;
  l.num_train_epochs = o.num_train_epochs;
  l.max_steps = o.max_steps;
  l.per_device_train_batch_size = o.per_device_train_batch_size;
  l.gradient_accumulation_steps = o.gradient_accumulation_steps;
  l.average_tokens_across_devices = o.average_tokens_across_devices;
  l.max_grad_norm = o.max_grad_norm;
  l.max_bad_steps = o.max_bad_steps;
  l.fail_on_bad_sample = o.on_bad_sample == "fail";
  l.max_skipped_share = o.max_skipped_share;
  l.seed = static_cast<uint64_t>(o.seed);
  l.shuffle = o.shuffle;
  l.group_by_modality_length = o.group_by_modality_length;
  l.group_by_length_window = o.group_by_length_window;
  l.dataloader_num_workers = o.dataloader_num_workers;
  l.gradient_checkpointing = o.gradient_checkpointing;
  l.dataloader_drop_last = o.dataloader_drop_last;

  c.log = log_config(o);
  // --eval_strategy is transformers >= 4.41's name of --evaluation_strategy; given both, they must agree.
  std::string eval_strategy = o.evaluation_strategy;
  if (o.set_keys.count("eval_strategy")) {
    require(!o.set_keys.count("evaluation_strategy") || o.eval_strategy == o.evaluation_strategy,
            "--eval_strategy '" + o.eval_strategy + "' and --evaluation_strategy '" + o.evaluation_strategy +
                "' disagree (they are one setting)");
    eval_strategy = o.eval_strategy;
  }
  require(eval_strategy == "no" || eval_strategy == "steps" || eval_strategy == "epoch",
          "--evaluation_strategy must be no, steps or epoch, got '" + eval_strategy + "'");
  require(eval_strategy == "no" || !o.eval_data_path.empty(),
          "--evaluation_strategy " + eval_strategy + " needs --eval_data_path (the held-out samples)");
  require(o.eval_steps >= 0, "--eval_steps must be >= 0 (0: --logging_steps)");
  require(o.per_device_eval_batch_size >= 1, "--per_device_eval_batch_size must be >= 1");
  require(!o.eval_generate || o.max_new_tokens >= 1, "--max_new_tokens must be >= 1");
  c.eval = {eval_strategy, o.eval_steps, o.eval_data_path, o.eval_generate, o.per_device_eval_batch_size};
  require(o.save_strategy == "no" || o.save_strategy == "steps" || o.save_strategy == "epoch",
          "--save_strategy must be no, steps or epoch, got '" + o.save_strategy + "'");
  c.checkpoint = {o.output_dir,           o.save_strategy,         o.save_steps, o.save_total_limit,
                  o.resume_from_checkpoint, o.model_name_or_path};
  c.dist = {o.device, o.ddp_backend, o.ddp_timeout, o.zero_stage};
  return c;
}

}  // namespace llava
