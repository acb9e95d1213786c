#pragma once
// Every flag of llava-train in ONE table: name, type, default, help. Flag names follow LLaVA's and HF
// TrainingArguments' names; every flag is also a key of the YAML file given by --config.
// Precedence: built-in defaults < YAML < command line. Unknown keys are errors that name the closest key.
#include <set>
#include <string>
#include <vector>

namespace llava {

// Which subcommands take a flag on the command line (a YAML --config may hold keys of other subcommands:
// one recipe serves train, eval and plan). kModel: every subcommand that loads a model or builds examples.
namespace scope {
enum : unsigned {
  kTrain = 1u << 0, kEval = 1u << 1, kGenerate = 1u << 2, kPreprocess = 1u << 3, kCheckData = 1u << 4,
  kBench = 1u << 5, kTokenize = 1u << 6, kInit = 1u << 7, kPlan = 1u << 8, kDemo = 1u << 9,
  kData = kTrain | kEval | kGenerate | kPreprocess | kCheckData | kBench,  // reads --data_path
  kModel = kData | kPlan,
  kAll = ~0u,
};
}  // namespace scope

// A flag that may be repeated (--image A --image B); in YAML a list or one value. The command line replaces
// the YAML's list.
using StringList = std::vector<std::string>;

// X(type, name, default, scope, help)
#define LLAVA_OPTIONS(X)                                                                                          \
  /* model */                                                                                                     \
  X(std::string, model_name_or_path, "", kModel|kTokenize|kInit, "model directory: HF LLaVA, original LLaVA, or an LLM (with --vision_tower)") \
  X(std::string, version, "v1", kModel,                                                                                   \
    "conversation template: v1|vicuna_v1|llava_v1|llama_2|llava_llama_2|mistral_instruct|chatml_direct|qwen_1_5|plain|mmtag") \
  X(std::string, vision_tower, "", kModel, "CLIP or SigLIP vision model directory (when --model_name_or_path is an LLM)")          \
  X(std::string, pretrain_mm_mlp_adapter, "", kModel, "pretrained projector (mm_projector.safetensors or .bin)")          \
  X(std::string, mm_projector_type, "mlp2x_gelu", kModel, "projector: linear | mlpNx_gelu")                                \
  X(int, mm_vision_select_layer, -2, kModel, "vision hidden state fed to the projector (-2: second to last)")             \
  X(std::string, mm_vision_select_feature, "patch", kModel, "patch (drop CLS) | cls_patch (SigLIP: all patches either way)")                              \
  X(std::string, mm_patch_merge_type, "flat", kModel,                                                                     \
    "anyres feature layout: flat | spatial | spatial_unpad (+ image_newline); default: config.json's, else flat") \
  X(bool, mm_use_im_start_end, false, kModel, "not supported (LLaVA-1.5 uses false)")                                    \
  X(bool, mm_use_im_patch_token, false, kModel, "not supported (LLaVA-1.5 uses false)")                                  \
  X(bool, tune_mm_mlp_adapter, false, kTrain|kPlan, "pretraining stage: train only the projector")                             \
  X(bool, freeze_backbone, false, kTrain|kPlan, "freeze the LLM")                                                              \
  X(bool, freeze_mm_mlp_adapter, false, kTrain|kPlan, "freeze the projector")                                                  \
  X(bool, unfreeze_mm_vision_tower, false, kTrain|kPlan, "train the vision tower too")                                         \
  X(std::string, mm_tunable_parts, "", kTrain|kPlan,                                                                      \
    "LLaVA-NeXT: what trains, e.g. mm_vision_tower,mm_mlp_adapter,mm_language_model (overrides the four flags above)") \
  X(double, mm_projector_lr, 0.0, kTrain, "learning rate of the projector (0: --learning_rate)")                         \
  X(double, mm_vision_tower_lr, 0.0, kTrain, "learning rate of the vision tower (0: --learning_rate)")                 \
  X(bool, lora_enable, false, kTrain|kPlan, "LoRA on the LLM's linear layers")                                                 \
  X(int, lora_r, 64, kTrain|kPlan, "LoRA rank")                                                                                \
  X(int, lora_alpha, 16, kTrain, "LoRA alpha (scale = alpha / r)")                                                       \
  X(double, lora_dropout, 0.05, kTrain, "LoRA dropout")                                                                  \
  /* data */                                                                                                      \
  X(std::string, data_path, "", kData, "LLaVA-format JSON list, JSON Lines (.jsonl) or a data mixture (.yaml)")       \
  X(std::string, data_cache_dir, "", kData, "index caches of the data files (default <output_dir>/.data_cache; none: off)") \
  X(std::string, image_folder, "", kData, "folder that relative image paths are joined to")                             \
  X(std::string, image_aspect_ratio, "square", kModel,                                                                    \
    "square (center crop) | pad (expand to square first) | anyres (LLaVA-1.6 tiles; default when config.json says so)") \
  X(std::string, image_grid_pinpoints, "", kModel,                                                                        \
    "anyres canvases (width, height): \"[(336, 672), ...]\", [[336, 672], ...] or \"(1x1),...,(3x3)\"; default: config.json's") \
  X(int, max_tiles_per_sample, 0, kModel,                                                                                 \
    "anyres: at most N tiles per sample (0: no limit); later images beyond it use their base tile only")          \
  X(std::string, image_placement, "front", kData,                                                                  \
    "front: <image> markers moved to the turn's start | inline | next: LLaVA-NeXT's rule (a lone marker moves)")   \
  X(bool, group_by_modality_length, false, kTrain, "length-grouped sampling by modality, as LLaVA")                      \
  X(int, group_by_length_window, 0, kTrain, "N > 0: sort by length within windows of N global batches, shuffle batches") \
  X(bool, lazy_preprocess, true, kTrain, "accepted for LLaVA compatibility; always lazy")                                \
  X(bool, shuffle, true, kTrain, "shuffle samples each epoch (false: file order)")                                       \
  X(std::string, on_bad_sample, "skip", kTrain, "skip (count and go on) | fail (stop with the error)")                    \
  X(int, model_max_length, 2048, kModel, "maximum sequence length, images expanded")                                     \
  X(int, dataloader_num_workers, 0, kData, "worker threads building examples (0: in the training thread)")              \
  X(bool, dataloader_drop_last, false, kTrain, "drop the epoch's last incomplete batch (of world_size x batch samples)") \
  X(std::string, video_folder, "", kData, "LLaVA-NeXT video folder: accepted; samples with a 'video' are bad samples (no video yet)") \
  X(int, frames_upbound, 0, kData, "LLaVA-NeXT frames per video: accepted (>= 0); video samples are not supported yet") \
  /* training */                                                                                                  \
  X(std::string, output_dir, "", kTrain|kInit|kDemo, "where checkpoints, metrics and the final model go")                            \
  X(double, num_train_epochs, 3.0, kTrain, "epochs")                                                                     \
  X(long, max_steps, -1, kTrain, "optimizer steps (overrides epochs when > 0)")                                         \
  X(int, per_device_train_batch_size, 8, kTrain|kPlan|kBench, "samples per device per micro-batch")                                   \
  X(int, per_device_eval_batch_size, 8, kTrain|kEval|kGenerate, "samples per device in eval")                                            \
  X(int, gradient_accumulation_steps, 1, kTrain|kPlan, "micro-batches per optimizer step")                                     \
  X(double, learning_rate, 5e-5, kTrain, "peak learning rate")                                                           \
  X(double, weight_decay, 0.0, kTrain, "AdamW weight decay (not on biases and norms)")                                   \
  X(double, adam_beta1, 0.9, kTrain, "AdamW beta1")                                                                      \
  X(double, adam_beta2, 0.999, kTrain, "AdamW beta2")                                                                    \
  X(double, adam_epsilon, 1e-8, kTrain, "AdamW epsilon")                                                                 \
  X(double, max_grad_norm, 1.0, kTrain, "gradient clipping (0: off)")                                                    \
  X(double, warmup_ratio, 0.0, kTrain, "warmup as a fraction of the steps")                                              \
  X(long, warmup_steps, 0, kTrain, "warmup steps (overrides warmup_ratio)")                                              \
  X(std::string, lr_scheduler_type, "linear", kTrain, "cosine | linear | constant | constant_with_warmup")               \
  X(double, logging_steps, 500, kTrain, "log every N optimizer steps")                                                   \
  X(double, save_steps, 500, kTrain, "checkpoint every N steps (0: final model only)")                                   \
  X(std::string, save_strategy, "steps", kTrain, "no | steps (every --save_steps) | epoch: when checkpoints are written") \
  X(int, save_total_limit, -1, kTrain, "keep at most N checkpoints (-1: all)")                                           \
  X(std::string, evaluation_strategy, "no", kTrain, "no | steps (every --eval_steps) | epoch: held-out evaluation")     \
  X(std::string, eval_strategy, "", kTrain, "the newer name of --evaluation_strategy (transformers >= 4.41)")          \
  X(double, eval_steps, 0, kTrain, "evaluate every N optimizer steps (0: --logging_steps, as HF; < 1: a fraction)")    \
  X(std::string, eval_data_path, "", kTrain, "held-out data for --evaluation_strategy (same format as --data_path)")   \
  X(bool, eval_generate, false, kTrain, "evaluation during training also generates answers (eval_exact_match)")        \
  X(bool, bf16, false, kTrain|kEval|kGenerate|kPlan, "bf16 compute, fp32 master weights")                                                      \
  X(bool, tf32, false, kTrain|kEval|kGenerate, "allow TF32 matmuls on CUDA")                                                             \
  X(std::string, attn_implementation, "sdpa", kTrain|kEval|kGenerate|kPlan,                                             \
    "sdpa | flash_attention_2 (both: the fused SDPA kernel) | eager (attention written out)")                       \
  X(bool, torch_compile, false, kTrain, "accepted for LLaVA-NeXT's scripts: the C++ path needs no compilation step")   \
  X(std::string, torch_compile_backend, "", kTrain, "accepted (e.g. inductor); nothing to compile")                    \
  X(std::string, torch_compile_mode, "", kTrain, "accepted; nothing to compile")                                        \
  X(bool, gradient_checkpointing, false, kTrain|kPlan, "recompute LLM layers in backward")                                     \
  X(long, seed, 42, kTrain|kEval|kGenerate|kInit|kDemo, "random seed")                                                                               \
  X(std::string, resume_from_checkpoint, "", kTrain, "checkpoint dir or 'latest'")                                       \
  X(std::string, report_to, "none", kTrain, "tensorboard | none | wandb (offline here: TensorBoard files) | all")     \
  X(std::string, logging_dir, "", kTrain, "TensorBoard event files (default: output_dir/runs/<date>_<host>)")           \
  X(std::string, run_name, "", kTrain, "a name for the run in logs and TensorBoard")                                     \
  X(int, max_bad_steps, 10, kTrain, "stop after N non-finite steps in a row")                                            \
  X(double, max_skipped_share, 0.05, kTrain, "warn loudly at the end when more than this share of samples was bad")     \
  X(bool, average_tokens_across_devices, true, kTrain, "normalise the loss over all tokens of the optimizer step")      \
  /* distributed */                                                                                               \
  X(std::string, deepspeed, "", kTrain|kPlan, "DeepSpeed JSON config: its ZeRO stage, batch, accumulation, clipping, bf16 map") \
  X(int, zero_stage, 0, kTrain|kPlan, "0: DDP | 1: shard optimizer state | 2: also gradients")                                 \
  X(std::string, ddp_backend, "", kTrain, "nccl | gloo (default: nccl on cuda, gloo on cpu)")                            \
  X(int, ddp_timeout, 1800, kTrain, "seconds before a missing peer is an error")                                         \
  X(int, ddp_bucket_cap_mb, 25, kTrain|kPlan, "gradient all-reduce bucket size")                                               \
  X(std::string, device, "auto", kTrain|kEval|kGenerate, "auto (CUDA when available, else CPU) | cpu | cuda")                           \
  /* subcommand inputs/outputs */                                                                                 \
  X(std::string, config, "", kAll, "YAML file with any of these keys")                                                 \
  X(std::string, output, "", kData|kEval|kGenerate|kTokenize, "output file (preprocess, eval, tokenize, generate)")                                         \
  X(std::string, text, "", kTokenize, "tokenize: the text")                                                                 \
  X(std::string, input, "", kTokenize, "tokenize: JSONL input with {\"text\", \"image_token\"} lines")                      \
  X(std::string, legacy, "", kTokenize, "tokenize: override tokenizer_config.json's legacy (true|false)")                   \
  X(bool, add_special_tokens, true, kTokenize, "tokenize: add the tokenizer's BOS/EOS (HF's add_special_tokens)")          \
  X(long, max_samples, -1, kData|kEval|kGenerate, "preprocess/check-data/eval/bench-data: stop after N samples")                       \
  X(std::string, save_pixels, "", kData, "preprocess: FILE.safetensors with each sample's pixel_values (float32)")        \
  X(int, world_size, 1, kPlan, "plan: number of ranks")                                                              \
  X(std::string, model_config, "", kInit, "init-model: JSON/YAML file with the model's sizes")                           \
  X(std::string, tokenizer_dir, "", kInit, "init-model: directory whose tokenizer files are copied")                    \
  /* generation (generate, eval --generate) */                                                                    \
  X(std::string, prompt, "", kGenerate, "generate: one question instead of --data_path (its text goes to stdout)")           \
  X(StringList, image, {}, kGenerate, "generate: an image of --prompt; repeat the flag for several (k-th <image> = k-th)")    \
  X(bool, generate, false, kTrain|kEval, "eval: also generate each sample's last answer and report eval_exact_match")         \
  X(int, show_examples, 0, kTrain|kEval, "eval --generate: print the first N questions, reference and generated answers")       \
  X(int, max_new_tokens, 128, kTrain|kEval|kGenerate, "generate: at most N new tokens per sample (stops earlier at EOS)")                 \
  X(bool, do_sample, false, kEval|kGenerate, "generate: sample (default: greedy)")                                                \
  X(double, temperature, 1.0, kEval|kGenerate, "generate --do_sample: temperature (> 0)")                                         \
  X(double, top_p, 1.0, kEval|kGenerate, "generate --do_sample: nucleus sampling mass (1: off)")                                  \
  X(int, top_k, 50, kEval|kGenerate, "generate --do_sample: keep the k most likely tokens (0: off)")

struct Options {
#define LLAVA_OPTION_FIELD(type, name, def, scope, help) type name = def;
  LLAVA_OPTIONS(LLAVA_OPTION_FIELD)
#undef LLAVA_OPTION_FIELD
  std::set<std::string> set_keys;  // keys given by YAML or command line
};

struct Command {
  std::string name;  // train, preprocess, eval, tokenize, check-data, init-model, plan, bench-data
  Options options;
  bool help = false, version = false;
  std::vector<std::string> notes;     // to print once (e.g. --deepspeed keys without an equivalent)
  std::vector<std::string> warnings;  // to print once, as warnings (e.g. a ZeRO-3 config run as ZeRO-2)
};

// argv -> Command. Throws llava::Error for unknown keys (with the closest known key), bad values,
// unreadable YAML.
Command parse_command_line(int argc, char** argv);
// Applies YAML keys from a file onto options (used by parse_command_line; public for tests).
void apply_yaml(Options& options, const std::string& path);
// Sets one option from its text form ("--name value" or YAML); throws naming the key.
void set_option(Options& options, const std::string& key, const std::string& value, const std::string& source);
std::vector<std::string> option_names();
// An option's current value as text (as the start-up table shows it); throws for an unknown key.
std::string option_value(const Options& options, const std::string& key);
// --deepspeed FILE (applied by parse_command_line after YAML and flags): zero_optimization.stage ->
// --zero_stage (3 runs as 2, with a warning: parameters are not partitioned), reduce_bucket_size ->
// --ddp_bucket_cap_mb, train_micro_batch_size_per_gpu, gradient_accumulation_steps, gradient_clipping,
// bf16.enabled and the optimizer's lr/betas/eps/weight_decay -> their flags ("auto": the flag's value; an
// explicit value fills an unset flag and must agree with a given one).
struct DeepSpeedMapping {
  std::vector<std::string> unmapped;  // keys that have no equivalent
  std::vector<std::string> warnings;  // what runs differently from DeepSpeed (stage 3 under an explicit --zero_stage)
};
DeepSpeedMapping apply_deepspeed_config(Options& options, const std::string& path);
std::string closest_option(const std::string& key);
std::string help_text();
// The resolved settings as an aligned two-column table (printed at startup, like llm.c).
std::string options_table(const Options& options);

}  // namespace llava
