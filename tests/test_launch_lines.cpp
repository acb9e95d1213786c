// Issue #17: the launch lines of LLaVA's scripts/v1_5 (pretrain, finetune, finetune_lora, finetune_task,
// finetune_task_lora; haotian-liu/LLaVA) and LLaVA-NeXT's scripts/train (pretrain_clip, pretrain_siglip,
// direct_finetune_clip, direct_finetune_siglip_a4, finetune_si, finetune_ov; LLaVA-VL/LLaVA-NeXT), run through
// the real binary flag for flag, every value as the script writes it (quotes, "--flag=value", "(1x1),...,(6x6)").
// Only paths are swapped for test data, the launcher (deepspeed / torchrun) becomes `llava-train train`, and
// --max_steps 1 is appended. Each line must train a step, or, where a value asks for a feature llava-train does not
// have (anyres_max_9), stop on that value with a message saying so; no line may stop on an unknown option.
//
// Test data: the LLaVA-1.5 lines run on llava-tiny (CLIP + LLaMA, Vicuna's tokenizer). The LLaVA-NeXT lines train
// Qwen2 with the qwen_1_5 template, so they run on random CLIP + Qwen2 and SigLIP + Qwen2 models made here with
// init-model from llava-interleave-tiny's Qwen2 sizes and tokenizer (--vision_tower names the same directory,
// which holds its tower); their towers' tiles (112 px CLIP, 192 px
// SigLIP) divide the scripts' pinpoints (multiples of 336 and 384) into a few tiles each, so a step takes a second.
// The lines chain as LLaVA's recipe does: the finetune lines load the projector their pretraining line wrote.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>

#include "test_train_support.h"

using namespace llava::testing;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// LLaVA-NeXT's scripts/zero3.json (LLaVA's own zero3.json has the same keys less the optimizer section).
const char* kZero3 = R"SH({
  "fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16,
           "hysteresis": 2, "min_loss_scale": 1},
  "bf16": {"enabled": "auto"},
  "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
  "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "none", "pin_memory": true},
    "offload_param": {"device": "none", "pin_memory": true}, "overlap_comm": true, "contiguous_gradients": true,
    "sub_group_size": 1e9, "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
    "stage3_param_persistence_threshold": "auto", "stage3_max_live_parameters": 1e9,
    "stage3_max_reuse_distance": 1e9, "stage3_gather_16bit_weights_on_model_save": true},
  "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "steps_per_print": 100,
  "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "wall_clock_breakdown": false})SH";

// LLaVA's scripts/zero2.json.
const char* kZero2 = R"SH({
  "fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16,
           "hysteresis": 2, "min_loss_scale": 1},
  "bf16": {"enabled": "auto"},
  "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto", "gradient_accumulation_steps": "auto",
  "zero_optimization": {"stage": 2, "overlap_comm": true, "contiguous_gradients": true, "sub_group_size": 1e9,
                        "reduce_bucket_size": "auto"}})SH";

json turns(const std::string& question, const std::string& answer) {
  return json::array({{{"from", "human"}, {"value", question}}, {{"from", "gpt"}, {"value", answer}}});
}

// Pretraining data (the plain template: one image, one answer per sample), image files from `images`.
void write_pretrain_data(const std::string& path, const std::vector<std::string>& images) {
  json data = json::array();
  const char* captions[] = {"a red square.", "a green circle.", "a blue triangle.", "two shapes side by side."};
  for (size_t i = 0; i < images.size(); ++i)
    data.push_back({{"id", "c" + std::to_string(i)}, {"image", images[i]}, {"conversations", turns("<image>\n", captions[i % 4])}});
  std::ofstream(path) << data.dump(1);
}

// LLaVA-NeXT finetuning data: an image sample, text samples and a video sample (a bad sample: no video yet).
void write_next_finetune_data(const std::string& path) {
  json data = json::array();
  data.push_back({{"id", "i0"}, {"image", "p0.png"}, {"conversations", turns("<image>\nWhat shape is this?", "A square.")}});
  data.push_back({{"id", "i1"}, {"image", "p3_a.png"}, {"conversations", turns("Describe it.\n<image>", "Stripes.")}});
  data.push_back({{"id", "t2"}, {"conversations", turns("Name a colour.", "Blue.")}});
  data.push_back({{"id", "t3"}, {"conversations", turns("Count to three.", "One, two, three.")}});
  data.push_back({{"id", "v4"}, {"video", "v_ball.mp4"}, {"conversations", turns("<image>\nWhat happens?", "A ball rolls.")}});
  std::ofstream(path) << data.dump(1);
}

// A random LLaVA directory: llava-interleave-tiny's Qwen2 sizes and tokenizer under the given vision tower.
void init_qwen_model(const std::string& dir, const json& vision_config, const json& preprocessor,
                     const std::string& feature_strategy) {
  const std::string interleave = fixture("llava-interleave-tiny");
  json config = json::parse(read_file(interleave + "/config.json"));
  config["vision_config"] = vision_config;
  config["vision_feature_select_strategy"] = feature_strategy;
  const std::string spec = dir + ".json";
  std::ofstream(spec) << config.dump(1);
  RunResult r = run_binary("init-model --model_config " + spec + " --tokenizer_dir " + interleave + " --output_dir " +
                           dir + " --seed 5");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  std::ofstream(dir + "/preprocessor_config.json") << preprocessor.dump(1);  // the tower's crop, not the tokenizer dir's
}

// Everything the lines read, made once per test binary.
struct LaunchData {
  std::string root, zero2, zero3;
  std::string llava15, llava15_images, llava15_pretrain_data, llava15_finetune_data;
  std::string clip, next_images, next_pretrain_data, next_finetune_data, next_mixture;
};

const LaunchData& launch_data() {
  static const LaunchData d = [] {
    LaunchData x;
    x.root = train_tmp("launch_lines");
    x.zero2 = x.root + "/zero2.json";
    x.zero3 = x.root + "/zero3.json";
    std::ofstream(x.zero2) << kZero2;
    std::ofstream(x.zero3) << kZero3;
    x.llava15 = fixture("llava-tiny");
    x.llava15_images = x.llava15 + "/images";
    x.llava15_finetune_data = x.llava15 + "/data.json";
    x.llava15_pretrain_data = x.root + "/blip_laion_cc_sbu_558k.json";
    write_pretrain_data(x.llava15_pretrain_data, {"s0.png", "s1_a.png", "s1_b.png", "s4_a.png"});

    const std::string interleave = fixture("llava-interleave-tiny");
    x.clip = fixture("llava-next-tiny/clip-vit-tiny-patch14-56");
    x.next_images = interleave + "/images";
    x.next_pretrain_data = x.root + "/blip_558k_plain.json";
    write_pretrain_data(x.next_pretrain_data, {"p0.png", "p3_a.png", "p3_b.png", "p5_a.png"});
    x.next_finetune_data = x.root + "/llava_1_6.json";
    write_next_finetune_data(x.next_finetune_data);
    x.next_mixture = x.root + "/next_ov_stage_july21.yaml";
    std::ofstream(x.next_mixture) << "datasets:\n  - json_path: " << x.next_finetune_data << "\n    sampling_strategy: \"all\"\n";
    return x;
  }();
  return d;
}

// The LLaVA-NeXT lines' models, made on first use (each takes a second).
const std::string& qwen_model(bool siglip) {
  static std::map<bool, std::string> made;
  if (made.count(siglip)) return made.at(siglip);
  const LaunchData& d = launch_data();
  const std::string interleave = fixture("llava-interleave-tiny");
  json vision, processor;
  if (!siglip) {  // CLIP 112 px / 28 (4x4 patches + CLS), the layout of llava-next-tiny's tower at twice the size
    vision = json::parse(read_file(d.clip + "/config.json"));
    vision["image_size"] = 112;
    vision["patch_size"] = 28;
    processor = json::parse(read_file(d.clip + "/preprocessor_config.json"));
    processor["size"] = {{"shortest_edge", 112}};
    processor["crop_size"] = {{"height", 112}, {"width", 112}};
  } else {  // SigLIP 192 px / 48 (4x4 patches, no CLS)
    vision = json::parse(read_file(interleave + "/config.json"))["vision_config"];
    vision["image_size"] = 192;
    vision["patch_size"] = 48;
    processor = json::parse(read_file(interleave + "/preprocessor_config.json"));
    processor["size"] = {{"height", 192}, {"width", 192}};
  }
  const std::string dir = d.root + (siglip ? "/siglip_qwen2" : "/clip_qwen2");
  init_qwen_model(dir, vision, processor, siglip ? "full" : "default");
  return made[siglip] = dir;
}

// One launch line: shell variables (the script's own and the swapped paths), then the script's flags.
struct Line {
  std::string variables;   // "NAME=value" lines
  std::string flags;       // the script's flags, " \\\n"-continued, as the script writes them
  std::string output_dir;  // where the run's metrics.jsonl lands (after the variables expand)
};

struct LineRun {
  RunResult result;
  std::string output_dir;
  std::optional<RunResult> zero3_refusal;  // a --deepspeed zero3.json line as written (refused by that value)
};

// Runs the line through sh, `llava-train train` for the launcher, with --max_steps 1 (and `extra`) appended.
LineRun run_line(const std::string& name, const Line& line, const std::string& extra = "") {
  const LaunchData& d = launch_data();
  const std::string script = d.root + "/" + name + ".sh";
  std::ofstream(script) << "ROOT=" << d.root << "\n" << line.variables << "\n\"" << LLAVA_BINARY << "\" train \\\n"
                        << line.flags << " \\\n    --max_steps 1" << extra << "\n";
  LineRun r{run_shell("sh " + script), line.output_dir, std::nullopt};
  std::string shown = extra;  // " \\\n    --flag value" -> " --flag value"
  for (size_t at; (at = shown.find(" \\\n   ")) != std::string::npos;) shown.replace(at, 6, "");
  std::printf("  %s%s: exit %d\n", name.c_str(), shown.c_str(), r.result.code);
  return r;
}

std::string all_output(const RunResult& r) { return r.out + r.err; }

// The run stopped on no option, exited 0 and logged one finite training step.
void expect_trained_step(const LineRun& run) {
  const std::string text = all_output(run.result);
  EXPECT_EQ(text.find("unknown option"), std::string::npos) << text;
  ASSERT_EQ(run.result.code, 0) << text;
  const std::vector<std::string> metrics = lines_of(read_file(run.output_dir + "/metrics.jsonl"));
  ASSERT_FALSE(metrics.empty()) << run.output_dir << "/metrics.jsonl";
  const json step = json::parse(metrics[0]);
  EXPECT_EQ(step.value("step", 0), 1) << metrics[0];
  EXPECT_TRUE(std::isfinite(step.value("loss", NAN))) << metrics[0];
  std::printf("    step 1: loss %.6f, %d samples\n", step.value("loss", NAN), step.value("num_samples", 0));
}

void expect_in(const LineRun& run, const std::string& what) {
  EXPECT_NE(all_output(run.result).find(what), std::string::npos) << "want '" << what << "' in:\n" << all_output(run.result);
}

// ---- LLaVA scripts/v1_5 (haotian-liu/LLaVA): the swapped paths, then the flags as in the scripts

std::string llava15_variables() {
  const LaunchData& d = launch_data();
  return "LLM=" + d.llava15 + "\nCLIP=" + d.clip + "\nIMAGES=" + d.llava15_images + "\nPRETRAIN_DATA=" +
         d.llava15_pretrain_data + "\nDATA=" + d.llava15_finetune_data + "\nZERO2=" + d.zero2 + "\nZERO3=" + d.zero3 +
         "\nPROJECTOR=$ROOT/checkpoints/llava-v1.5-13b-pretrain/mm_projector.safetensors";
}

// scripts/v1_5/pretrain.sh
Line llava15_pretrain() {
  return {llava15_variables(), R"SH(    --deepspeed $ZERO2 \
    --model_name_or_path $LLM \
    --version plain \
    --data_path $PRETRAIN_DATA \
    --image_folder $IMAGES \
    --vision_tower $CLIP \
    --mm_projector_type mlp2x_gelu \
    --tune_mm_mlp_adapter True \
    --mm_vision_select_layer -2 \
    --mm_use_im_start_end False \
    --mm_use_im_patch_token False \
    --bf16 True \
    --output_dir $ROOT/checkpoints/llava-v1.5-13b-pretrain \
    --num_train_epochs 1 \
    --per_device_train_batch_size 32 \
    --per_device_eval_batch_size 4 \
    --gradient_accumulation_steps 1 \
    --evaluation_strategy "no" \
    --save_strategy "steps" \
    --save_steps 24000 \
    --save_total_limit 1 \
    --learning_rate 1e-3 \
    --weight_decay 0. \
    --warmup_ratio 0.03 \
    --lr_scheduler_type "cosine" \
    --logging_steps 1 \
    --tf32 True \
    --model_max_length 2048 \
    --gradient_checkpointing True \
    --dataloader_num_workers 4 \
    --lazy_preprocess True \
    --report_to wandb)SH",
          launch_data().root + "/checkpoints/llava-v1.5-13b-pretrain"};
}

// The flags finetune.sh, finetune_lora.sh, finetune_task.sh and finetune_task_lora.sh share after --version.
std::string llava15_finetune_tail(const std::string& output_dir, const std::string& batch, const std::string& accum,
                                  const std::string& lr) {
  return R"SH(    --data_path $DATA \
    --image_folder $IMAGES \
    --vision_tower $CLIP \
)SH" + std::string("%PROJECTOR%") + R"SH(    --mm_projector_type mlp2x_gelu \
    --mm_vision_select_layer -2 \
    --mm_use_im_start_end False \
    --mm_use_im_patch_token False \
    --image_aspect_ratio pad \
    --group_by_modality_length True \
    --bf16 True \
    --output_dir )SH" + output_dir + R"SH( \
    --num_train_epochs 1 \
    --per_device_train_batch_size )SH" + batch + R"SH( \
    --per_device_eval_batch_size 4 \
    --gradient_accumulation_steps )SH" + accum + R"SH( \
    --evaluation_strategy "no" \
    --save_strategy "steps" \
    --save_steps 50000 \
    --save_total_limit 1 \
    --learning_rate )SH" + lr + R"SH( \
    --weight_decay 0. \
    --warmup_ratio 0.03 \
    --lr_scheduler_type "cosine" \
    --logging_steps 1 \
    --tf32 True \
    --model_max_length 2048 \
    --gradient_checkpointing True \
    --dataloader_num_workers 4 \
    --lazy_preprocess True \
    --report_to wandb)SH";
}

Line llava15_finetune(const std::string& head, const std::string& out, bool projector, const std::string& batch,
                      const std::string& accum, const std::string& lr) {
  std::string tail = llava15_finetune_tail("$ROOT/checkpoints/" + out, batch, accum, lr);
  tail.replace(tail.find("%PROJECTOR%"), 11, projector ? "    --pretrain_mm_mlp_adapter $PROJECTOR \\\n" : "");
  return {llava15_variables(), head + tail, launch_data().root + "/checkpoints/" + out};
}

const char* kLoraHead = "    --lora_enable True --lora_r 128 --lora_alpha 256 --mm_projector_lr 2e-5 \\\n";

// finetune.sh / finetune_lora.sh start from vicuna + the pretrained projector, the task lines from llava-v1.5-13b.
Line llava15_finetune_sh() {
  return llava15_finetune("    --deepspeed $ZERO3 \\\n    --model_name_or_path $LLM \\\n    --version v1 \\\n",
                          "llava-v1.5-13b", true, "16", "1", "2e-5");
}
Line llava15_finetune_lora_sh() {
  return llava15_finetune(std::string(kLoraHead) + "    --deepspeed $ZERO3 \\\n    --model_name_or_path $LLM \\\n    --version v1 \\\n",
                          "llava-v1.5-13b-lora", true, "16", "1", "2e-4");
}
Line llava15_finetune_task_sh() {
  return llava15_finetune("    --deepspeed $ZERO3 \\\n    --model_name_or_path $LLM \\\n    --version v1 \\\n",
                          "llava-v1.5-13b-task", false, "16", "1", "2e-5");
}
Line llava15_finetune_task_lora_sh() {
  return llava15_finetune(std::string(kLoraHead) + "    --deepspeed $ZERO3 \\\n    --model_name_or_path $LLM \\\n    --version v1 \\\n",
                          "llava-v1.5-13b-task-lora", false, "16", "1", "2e-4");
}

// ---- LLaVA-NeXT scripts/train (LLaVA-VL/LLaVA-NeXT): the script's variables, the swapped paths, the flags

std::string next_variables(bool siglip, const std::string& prompt_version) {
  const LaunchData& d = launch_data();
  const std::string vision = siglip ? "google/siglip-so400m-patch14-384" : "openai/clip-vit-large-patch14-336";
  return "LLM_VERSION=" + qwen_model(siglip) + "\nLLM_VERSION_CLEAN=Qwen_Qwen2-7B-Instruct" +
         "\nVISION_MODEL_VERSION=" + qwen_model(siglip) + "\nVISION_MODEL_VERSION_CLEAN=" +
         vision.substr(0, vision.find('/')) + "_" + vision.substr(vision.find('/') + 1) + "\nPROMPT_VERSION=" +
         prompt_version +
         "\nBASE_RUN_NAME=\"llavanext-${VISION_MODEL_VERSION_CLEAN}-${LLM_VERSION_CLEAN}-mlp2x_gelu-pretrain_blip558k_plain\"" +
         "\nMID_RUN_NAME=\"llavanext-${VISION_MODEL_VERSION_CLEAN}-${LLM_VERSION_CLEAN}-mid\"" + "\nPRETRAIN_DATA=" +
         d.next_pretrain_data + "\nDATA=" + d.next_finetune_data + "\nMIXTURE=" + d.next_mixture +
         "\nIMAGES=" + d.next_images + "\nVIDEOS=$ROOT/llava_video\nZERO3=" + d.zero3;
}

std::string next_base_run_name(bool siglip) {
  return std::string("llavanext-") + (siglip ? "google_siglip-so400m-patch14-384" : "openai_clip-vit-large-patch14-336") +
         "-Qwen_Qwen2-7B-Instruct-mlp2x_gelu-pretrain_blip558k_plain";
}

// scripts/train/pretrain_clip.sh and pretrain_siglip.sh (the same flags)
Line next_pretrain(bool siglip) {
  return {next_variables(siglip, "plain"), R"SH(    --deepspeed $ZERO3 \
    --model_name_or_path ${LLM_VERSION} \
    --version ${PROMPT_VERSION} \
    --data_path $PRETRAIN_DATA \
    --image_folder $IMAGES \
    --vision_tower ${VISION_MODEL_VERSION} \
    --mm_tunable_parts="mm_mlp_adapter" \
    --mm_vision_select_layer -2 \
    --mm_projector_type mlp2x_gelu \
    --mm_use_im_start_end False \
    --mm_use_im_patch_token False \
    --bf16 True \
    --output_dir $ROOT/checkpoints/projectors/${BASE_RUN_NAME} \
    --num_train_epochs 1 \
    --per_device_train_batch_size 16 \
    --per_device_eval_batch_size 4 \
    --gradient_accumulation_steps 1 \
    --evaluation_strategy "no" \
    --save_strategy "no" \
    --save_steps 50000 \
    --learning_rate 1e-3 \
    --weight_decay 0. \
    --warmup_ratio 0.03 \
    --lr_scheduler_type "cosine" \
    --logging_steps 1 \
    --tf32 True \
    --model_max_length 8192 \
    --gradient_checkpointing True \
    --dataloader_num_workers 16 \
    --lazy_preprocess True \
    --report_to wandb \
    --run_name $BASE_RUN_NAME \
    --attn_implementation sdpa)SH",
          launch_data().root + "/checkpoints/projectors/" + next_base_run_name(siglip)};
}

// scripts/train/direct_finetune_clip.sh and direct_finetune_siglip_a4.sh (CKPT_PATH=$LLM_VERSION; pinpoints)
Line next_direct_finetune(bool siglip) {
  const std::string pinpoints = siglip ? "[(384, 768), (768, 384), (768, 768), (1152, 384), (384, 1152)]"
                                       : "[(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)]";
  return {next_variables(siglip, "\"qwen_1_5\"") + "\nCKPT_PATH=$LLM_VERSION", std::string(R"SH(    --deepspeed $ZERO3 \
    --model_name_or_path )SH") + (siglip ? "${CKPT_PATH}" : "${LLM_VERSION}") + R"SH( \
    --version ${PROMPT_VERSION} \
    --data_path=$DATA \
    --image_folder $IMAGES \
    --pretrain_mm_mlp_adapter="$ROOT/checkpoints/projectors/${BASE_RUN_NAME}/mm_projector.safetensors" \
    --mm_tunable_parts="mm_vision_tower,mm_mlp_adapter,mm_language_model" \
    --mm_vision_tower_lr=2e-6 \
    --vision_tower ${VISION_MODEL_VERSION} \
    --mm_projector_type mlp2x_gelu \
    --mm_vision_select_layer -2 \
    --mm_use_im_start_end False \
    --mm_use_im_patch_token False \
    --group_by_modality_length True \
    --image_aspect_ratio anyres \
    --image_grid_pinpoints ")SH" + pinpoints + R"SH(" \
    --mm_patch_merge_type spatial_unpad \
    --bf16 True \
    --run_name $MID_RUN_NAME \
    --output_dir "$ROOT/checkpoints/${MID_RUN_NAME}" \
    --num_train_epochs 1 \
    --per_device_train_batch_size 4 \
    --per_device_eval_batch_size 4 \
    --gradient_accumulation_steps 1 \
    --evaluation_strategy "no" \
    --save_strategy "steps" \
    --save_steps 3000 \
    --save_total_limit 1 \
    --learning_rate 1e-5 \
    --weight_decay 0. \
    --warmup_ratio 0.03 \
    --lr_scheduler_type "cosine" \
    --logging_steps 1 \
    --tf32 True \
    --model_max_length 32768 \
    --gradient_checkpointing True \
    --dataloader_num_workers 16 \
    --lazy_preprocess True \
    --report_to wandb \
    --torch_compile True \
    --torch_compile_backend "inductor" \
    --dataloader_drop_last True \
    --attn_implementation sdpa)SH",
          launch_data().root + "/checkpoints/llavanext-" +
              (siglip ? "google_siglip-so400m-patch14-384" : "openai_clip-vit-large-patch14-336") +
              "-Qwen_Qwen2-7B-Instruct-mid"};
}

// scripts/train/finetune_si.sh and finetune_ov.sh (the same flags; si reads the single-image mixture)
Line next_onevision(const std::string& stage, const std::string& previous_checkpoint) {
  const std::string run_name =
      "llava-onevision-google_siglip-so400m-patch14-384-Qwen_Qwen2-7B-Instruct-" + stage + "_stage_am9";
  return {next_variables(true, "\"qwen_1_5\"") + "\nRUN_NAME=\"llava-onevision-${VISION_MODEL_VERSION_CLEAN}-${LLM_VERSION_CLEAN}-" +
              stage + "_stage_am9\"\nPREV_STAGE_CHECKPOINT=\"" + previous_checkpoint + "\"",
          R"SH(    --deepspeed $ZERO3 \
    --model_name_or_path $PREV_STAGE_CHECKPOINT \
    --version $PROMPT_VERSION \
    --data_path $MIXTURE \
    --image_folder $IMAGES \
    --video_folder $VIDEOS \
    --mm_tunable_parts="mm_vision_tower,mm_mlp_adapter,mm_language_model" \
    --mm_vision_tower_lr=2e-6 \
    --vision_tower ${VISION_MODEL_VERSION} \
    --mm_projector_type mlp2x_gelu \
    --mm_vision_select_layer -2 \
    --mm_use_im_start_end False \
    --mm_use_im_patch_token False \
    --group_by_modality_length True \
    --image_aspect_ratio anyres_max_9 \
    --image_grid_pinpoints  "(1x1),...,(6x6)" \
    --mm_patch_merge_type spatial_unpad \
    --bf16 True \
    --run_name $RUN_NAME \
    --output_dir $ROOT/checkpoints/onevision/$RUN_NAME \
    --num_train_epochs 1 \
    --per_device_train_batch_size 1 \
    --per_device_eval_batch_size 4 \
    --gradient_accumulation_steps 2 \
    --evaluation_strategy "no" \
    --save_strategy "steps" \
    --save_steps 1000 \
    --save_total_limit 1 \
    --learning_rate 1e-5 \
    --weight_decay 0. \
    --warmup_ratio 0.03 \
    --lr_scheduler_type "cosine" \
    --logging_steps 1 \
    --tf32 True \
    --model_max_length 32768 \
    --gradient_checkpointing True \
    --dataloader_num_workers 4 \
    --lazy_preprocess True \
    --report_to wandb \
    --torch_compile True \
    --torch_compile_backend "inductor" \
    --dataloader_drop_last True \
    --frames_upbound 32)SH",
          launch_data().root + "/checkpoints/onevision/" + run_name};
}

// A zero3.json line is refused by that value (ZeRO-3 does not exist yet), after every flag was read; the same
// line with --zero_stage 2 appended trains.
const char* kZero3Refusal = "ZeRO stage 3 (parameter partitioning) is not supported yet: add --zero_stage 2";
const char* kZero2Appended = " \\\n    --zero_stage 2";
// Each line runs once per test binary (the finetune lines need their pretraining line's projector). A line
// with --deepspeed zero3.json runs as written first, which ZeRO-3's refusal ends, then with --zero_stage 2.
const LineRun& run_once(const std::string& name, const std::function<Line()>& line, const std::string& extra = "") {
  static std::map<std::string, LineRun> done;
  const std::string key = name + extra;
  if (!done.count(key)) {
    const Line l = line();
    if (l.flags.find("--deepspeed $ZERO3") == std::string::npos) {
      done.emplace(key, run_line(name, l, extra));
    } else {
      const LineRun as_written = run_line(name, l, extra);
      LineRun run = run_line(name, l, kZero2Appended + extra);
      run.zero3_refusal = as_written.result;
      done.emplace(key, std::move(run));
    }
  }
  return done.at(key);
}

void expect_zero3_refused(const LineRun& run) {
  ASSERT_TRUE(run.zero3_refusal.has_value()) << "not a zero3.json line";
  const std::string text = all_output(*run.zero3_refusal);
  EXPECT_EQ(text.find("unknown option"), std::string::npos) << text;
  EXPECT_EQ(run.zero3_refusal->code, 1) << text;
  EXPECT_NE(text.find(kZero3Refusal), std::string::npos) << text;
}

const LineRun& llava15_pretrain_run() { return run_once("pretrain", llava15_pretrain); }
const LineRun& next_pretrain_run(bool siglip) {
  return run_once(siglip ? "pretrain_siglip" : "pretrain_clip", [siglip] { return next_pretrain(siglip); });
}
const LineRun& next_direct_finetune_run(bool siglip) {
  next_pretrain_run(siglip);
  return run_once(siglip ? "direct_finetune_siglip_a4" : "direct_finetune_clip",
                  [siglip] { return next_direct_finetune(siglip); });
}

const char* kCompileNote = "the C++ path needs no compilation step";

}  // namespace

// ---------------------------------------------------------------------------- LLaVA scripts/v1_5

TEST(LaunchLines, LlavaPretrain) {
  LLAVA_REQUIRE_FIXTURES();
  const LineRun& run = llava15_pretrain_run();
  expect_trained_step(run);
  expect_in(run, "Stage = pretrain (projector only)");
  EXPECT_TRUE(fs::exists(run.output_dir + "/mm_projector.safetensors"));
}

TEST(LaunchLines, LlavaFinetune) {
  LLAVA_REQUIRE_FIXTURES();
  ASSERT_EQ(llava15_pretrain_run().result.code, 0);
  const LineRun& run = run_once("finetune", llava15_finetune_sh);
  expect_trained_step(run);
  expect_zero3_refused(run);
  expect_in(run, "projector loaded from");
  expect_in(run, "Stage = finetune");
}

TEST(LaunchLines, LlavaFinetuneLora) {
  LLAVA_REQUIRE_FIXTURES();
  ASSERT_EQ(llava15_pretrain_run().result.code, 0);
  const LineRun& run = run_once("finetune_lora", llava15_finetune_lora_sh);
  expect_trained_step(run);
  expect_zero3_refused(run);
  expect_in(run, "Stage = finetune with LoRA");
}

TEST(LaunchLines, LlavaFinetuneTask) {
  LLAVA_REQUIRE_FIXTURES();
  const LineRun& run = run_once("finetune_task", llava15_finetune_task_sh);
  expect_trained_step(run);
  expect_zero3_refused(run);
}

TEST(LaunchLines, LlavaFinetuneTaskLora) {
  LLAVA_REQUIRE_FIXTURES();
  const LineRun& run = run_once("finetune_task_lora", llava15_finetune_task_lora_sh);
  expect_trained_step(run);
  expect_in(run, "Stage = finetune with LoRA");
}

// ---------------------------------------------------------------------------- LLaVA-NeXT scripts/train

TEST(LaunchLines, NextPretrainClip) {
  LLAVA_REQUIRE_FIXTURES();
  const LineRun& run = next_pretrain_run(false);
  expect_trained_step(run);
  expect_in(run, "Stage = mm_tunable_parts: projector");
  expect_zero3_refused(run);
  EXPECT_TRUE(fs::exists(run.output_dir + "/mm_projector.safetensors"));  // the projector alone, as LLaVA-NeXT
}

TEST(LaunchLines, NextPretrainSiglip) {
  LLAVA_REQUIRE_FIXTURES();
  const LineRun& run = next_pretrain_run(true);
  expect_trained_step(run);
  expect_in(run, "Stage = mm_tunable_parts: projector");
  EXPECT_TRUE(fs::exists(run.output_dir + "/mm_projector.safetensors"));
}

TEST(LaunchLines, NextDirectFinetuneClip) {
  LLAVA_REQUIRE_FIXTURES();
  const LineRun& run = next_direct_finetune_run(false);
  expect_trained_step(run);
  expect_in(run, "Stage = mm_tunable_parts: vision tower + projector + LLM");
  expect_in(run, kCompileNote);
  expect_in(run, "projector loaded from");
}

TEST(LaunchLines, NextDirectFinetuneSiglipA4) {
  LLAVA_REQUIRE_FIXTURES();
  const LineRun& run = next_direct_finetune_run(true);
  expect_trained_step(run);
  expect_in(run, "Stage = mm_tunable_parts: vision tower + projector + LLM");
  expect_in(run, kCompileNote);
}

// finetune_si.sh / finetune_ov.sh ask for anyres_max_9 (LLaVA-OneVision's tiling): refused by that value, after
// every flag was read. The same lines with --image_aspect_ratio anyres appended train a step (the last value of
// a repeated flag wins), so every other flag of theirs is accepted with its value.
TEST(LaunchLines, NextFinetuneSi) {
  LLAVA_REQUIRE_FIXTURES();
  const LineRun& mid = next_direct_finetune_run(true);
  ASSERT_EQ(mid.result.code, 0);
  const auto line = [&] { return next_onevision("si", mid.output_dir); };
  const LineRun& refused = run_once("finetune_si", line);
  const std::string text = all_output(refused.result);
  EXPECT_EQ(text.find("unknown option"), std::string::npos) << text;
  EXPECT_EQ(refused.result.code, 1) << text;
  expect_in(refused, "--image_aspect_ratio anyres_max_9 (LLaVA-OneVision) is not supported yet");
  const LineRun& run = run_once("finetune_si", line, " \\\n    --image_aspect_ratio anyres");
  expect_trained_step(run);
  expect_in(run, kCompileNote);
}

TEST(LaunchLines, NextFinetuneOv) {
  LLAVA_REQUIRE_FIXTURES();
  const LineRun& mid = next_direct_finetune_run(true);
  ASSERT_EQ(mid.result.code, 0);
  const auto si = [&] { return next_onevision("si", mid.output_dir); };
  const LineRun& single_image = run_once("finetune_si", si, " \\\n    --image_aspect_ratio anyres");
  ASSERT_EQ(single_image.result.code, 0);
  const auto line = [&] { return next_onevision("ov", single_image.output_dir); };
  const LineRun& refused = run_once("finetune_ov", line);
  EXPECT_EQ(all_output(refused.result).find("unknown option"), std::string::npos) << all_output(refused.result);
  EXPECT_EQ(refused.result.code, 1);
  expect_in(refused, "anyres_max_9 (LLaVA-OneVision) is not supported yet");
  expect_trained_step(run_once("finetune_ov", line, " \\\n    --image_aspect_ratio anyres"));
}
