#pragma once
// Every flag of llava-train in ONE table: name, type, default, help. Flag names follow LLaVA's and HF
// TrainingArguments' names; every flag is also a key of the YAML file given by --config.
// Precedence: built-in defaults < YAML < command line. Unknown keys are errors that name the closest key.
#include <set>
#include <string>
#include <vector>

namespace llava {

// X(type, name, default, help)
#define LLAVA_OPTIONS(X)                                                                                          \
  /* model */                                                                                                     \
  X(std::string, model_name_or_path, "", "model directory: HF LLaVA, original LLaVA, or an LLM (with --vision_tower)") \
  X(std::string, version, "v1", "conversation template: v1|vicuna_v1|llava_v1|llama_2|llava_llama_2|plain|mmtag")  \
  X(std::string, vision_tower, "", "CLIP vision model directory (when --model_name_or_path is an LLM)")          \
  X(std::string, pretrain_mm_mlp_adapter, "", "pretrained projector (mm_projector.safetensors or .bin)")          \
  X(std::string, mm_projector_type, "mlp2x_gelu", "projector: linear | mlpNx_gelu")                                \
  X(int, mm_vision_select_layer, -2, "vision hidden state fed to the projector (-2: second to last)")             \
  X(std::string, mm_vision_select_feature, "patch", "patch (drop CLS) | cls_patch")                              \
  X(bool, mm_use_im_start_end, false, "not supported (LLaVA-1.5 uses false)")                                    \
  X(bool, mm_use_im_patch_token, false, "not supported (LLaVA-1.5 uses false)")                                  \
  X(bool, tune_mm_mlp_adapter, false, "pretraining stage: train only the projector")                             \
  X(bool, freeze_backbone, false, "freeze the LLM")                                                              \
  X(bool, freeze_mm_mlp_adapter, false, "freeze the projector")                                                  \
  X(bool, unfreeze_mm_vision_tower, false, "train the vision tower too")                                         \
  X(double, mm_projector_lr, 0.0, "learning rate of the projector (0: --learning_rate)")                         \
  X(bool, lora_enable, false, "LoRA on the LLM's linear layers")                                                 \
  X(int, lora_r, 64, "LoRA rank")                                                                                \
  X(int, lora_alpha, 16, "LoRA alpha (scale = alpha / r)")                                                       \
  X(double, lora_dropout, 0.05, "LoRA dropout")                                                                  \
  /* data */                                                                                                      \
  X(std::string, data_path, "", "LLaVA-format JSON list, JSON Lines (.jsonl) or a data mixture (.yaml)")       \
  X(std::string, data_cache_dir, "", "index caches of the data files (default <output_dir>/.data_cache; none: off)") \
  X(std::string, image_folder, "", "folder that relative image paths are joined to")                             \
  X(std::string, image_aspect_ratio, "square", "square (center crop) | pad (expand to square first)")            \
  X(std::string, image_placement, "front", "front: <image> markers moved to the turn's start | inline")          \
  X(bool, group_by_modality_length, false, "length-grouped sampling by modality, as LLaVA")                      \
  X(int, group_by_length_window, 0, "N > 0: sort by length within windows of N global batches, shuffle batches") \
  X(bool, lazy_preprocess, true, "accepted for LLaVA compatibility; always lazy")                                \
  X(bool, shuffle, true, "shuffle samples each epoch (false: file order)")                                       \
  X(std::string, on_bad_sample, "skip", "skip (count and go on) | fail (stop with the error)")                    \
  X(int, model_max_length, 2048, "maximum sequence length, images expanded")                                     \
  X(int, dataloader_num_workers, 0, "worker threads building examples (0: in the training thread)")              \
  /* training */                                                                                                  \
  X(std::string, output_dir, "", "where checkpoints, metrics and the final model go")                            \
  X(double, num_train_epochs, 3.0, "epochs")                                                                     \
  X(long, max_steps, -1, "optimizer steps (overrides epochs when > 0)")                                         \
  X(int, per_device_train_batch_size, 8, "samples per device per micro-batch")                                   \
  X(int, per_device_eval_batch_size, 8, "samples per device in eval")                                            \
  X(int, gradient_accumulation_steps, 1, "micro-batches per optimizer step")                                     \
  X(double, learning_rate, 5e-5, "peak learning rate")                                                           \
  X(double, weight_decay, 0.0, "AdamW weight decay (not on biases and norms)")                                   \
  X(double, adam_beta1, 0.9, "AdamW beta1")                                                                      \
  X(double, adam_beta2, 0.999, "AdamW beta2")                                                                    \
  X(double, adam_epsilon, 1e-8, "AdamW epsilon")                                                                 \
  X(double, max_grad_norm, 1.0, "gradient clipping (0: off)")                                                    \
  X(double, warmup_ratio, 0.0, "warmup as a fraction of the steps")                                              \
  X(long, warmup_steps, 0, "warmup steps (overrides warmup_ratio)")                                              \
  X(std::string, lr_scheduler_type, "linear", "cosine | linear | constant | constant_with_warmup")               \
  X(double, logging_steps, 500, "log every N optimizer steps")                                                   \
  X(double, save_steps, 500, "checkpoint every N steps (0: final model only)")                                   \
  X(int, save_total_limit, -1, "keep at most N checkpoints (-1: all)")                                           \
  X(bool, bf16, false, "bf16 compute, fp32 master weights")                                                      \
  X(bool, tf32, false, "allow TF32 matmuls on CUDA")                                                             \
  X(bool, gradient_checkpointing, false, "recompute LLM layers in backward")                                     \
  X(long, seed, 42, "random seed")                                                                               \
  X(std::string, resume_from_checkpoint, "", "checkpoint dir or 'latest'")                                       \
  X(std::string, report_to, "none", "accepted for compatibility (metrics.jsonl is always written)")              \
  X(int, max_bad_steps, 10, "stop after N non-finite steps in a row")                                            \
  X(bool, average_tokens_across_devices, true, "normalise the loss over all tokens of the optimizer step")      \
  /* distributed */                                                                                               \
  X(std::string, deepspeed, "", "accepted with a warning: use --zero_stage")                                     \
  X(int, zero_stage, 0, "0: DDP | 1: shard optimizer state | 2: also gradients")                                 \
  X(std::string, ddp_backend, "", "nccl | gloo (default: nccl on cuda, gloo on cpu)")                            \
  X(int, ddp_timeout, 1800, "seconds before a missing peer is an error")                                         \
  X(int, ddp_bucket_cap_mb, 25, "gradient all-reduce bucket size")                                               \
  X(std::string, device, "cpu", "cpu | cuda")                                                                    \
  /* subcommand inputs/outputs */                                                                                 \
  X(std::string, config, "", "YAML file with any of these keys")                                                 \
  X(std::string, output, "", "output file (preprocess, eval, tokenize)")                                         \
  X(std::string, text, "", "tokenize: the text")                                                                 \
  X(std::string, input, "", "tokenize: JSONL input with {\"text\", \"image_token\"} lines")                      \
  X(std::string, legacy, "", "tokenize: override tokenizer_config.json's legacy (true|false)")                   \
  X(long, max_samples, -1, "preprocess/check-data/eval/bench-data: stop after N samples")                       \
  X(int, world_size, 1, "plan: number of ranks")                                                              \
  X(std::string, model_config, "", "init-model: JSON/YAML file with the model's sizes")                           \
  X(std::string, tokenizer_dir, "", "init-model: directory whose tokenizer files are copied")

struct Options {
#define LLAVA_OPTION_FIELD(type, name, def, help) type name = def;
  LLAVA_OPTIONS(LLAVA_OPTION_FIELD)
#undef LLAVA_OPTION_FIELD
  std::set<std::string> set_keys;  // keys given by YAML or command line
};

struct Command {
  std::string name;  // train, preprocess, eval, tokenize, check-data, init-model, plan, bench-data
  Options options;
  bool help = false, version = false;
};

// argv -> Command. Throws llava::Error for unknown keys (with the closest known key), bad values,
// unreadable YAML.
Command parse_command_line(int argc, char** argv);
// Applies YAML keys from a file onto options (used by parse_command_line; public for tests).
void apply_yaml(Options& options, const std::string& path);
// Sets one option from its text form ("--name value" or YAML); throws naming the key.
void set_option(Options& options, const std::string& key, const std::string& value, const std::string& source);
std::vector<std::string> option_names();
std::string closest_option(const std::string& key);
std::string help_text();
// The resolved settings as an aligned two-column table (printed at startup, like llm.c).
std::string options_table(const Options& options);

}  // namespace llava
