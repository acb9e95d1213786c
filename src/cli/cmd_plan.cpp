// llava-train plan: per-rank memory estimate for a config and --world_size, for ZeRO stages 0/1/2 with and
// without gradient checkpointing (formulas: src/dist/plan.cpp).
//
// Model sizes come from --model_config (an HF LlavaConfig in JSON or YAML, as for init-model: text_config,
// vision_config, mm_projector_type; transformers' defaults fill the rest), else from --model_name_or_path:
//   a directory   its config.json: HF llava or original llava_llama (vision tower from vision_config, or from
//                 --vision_tower / mm_vision_tower), or an LLM (llama) + --vision_tower (a CLIP directory;
//                 default CLIP ViT-L/14-336) + --mm_projector_type;
//   a preset name llava-v1.5-7b, llava-v1.5-13b (whole LLaVA-1.5), llava-next-interleave-qwen-7b / -0.5b
//                 (whole LLaVA-NeXT-Interleave: Qwen1.5 + SigLIP-so400m), vicuna-7b-v1.5, vicuna-13b-v1.5, llama-2-7b,
//                 llama-2-13b (LLM; tower and projector as for a directory); an "owner/" prefix is ignored,
//                 so liuhaotian/llava-v1.5-7b works without a download.
// The rest from the options (YAML and command line): world_size, per_device_train_batch_size,
// model_max_length, gradient_accumulation_steps, bf16, the tune/freeze/lora flags or --mm_tunable_parts,
// --attn_implementation (eager: the written-out attention's activations), ddp_bucket_cap_mb, and
// LLaVA-1.6's image_aspect_ratio anyres / image_grid_pinpoints / mm_patch_merge_type / max_tiles_per_sample
// (tiles and positions per image; a LLaVA-1.6 directory's config.json gives them too).
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "llava/anyres.h"
#include "llava/dist/plan.h"
#include "llava/error.h"
#include "llava/train/stage.h"
#include "llava/train/train_config.h"
#include "llava/model/config.h"
#include "llava/torch_compat.h"

namespace llava::cli {
namespace fs = std::filesystem;

namespace {

ClipVisionConfig vision_from_option(const std::string& vision_tower) {
  if (!vision_tower.empty() && fs::exists(fs::path(vision_tower) / "config.json"))
    return ClipVisionConfig::from_json_file((fs::path(vision_tower) / "config.json").string());
  ClipVisionConfig v = ClipVisionConfig::clip_vit_large_336();
  if (vision_tower.empty() || vision_tower.find("336") != std::string::npos) return v;
  if (vision_tower.find("clip-vit-large-patch14") != std::string::npos) {
    v.image_size = 224;
    return v;
  }
  throw Error("plan: --vision_tower '" + vision_tower +
              "' is neither a CLIP directory (with config.json) nor openai/clip-vit-large-patch14[-336]");
}

void set_llm(dist::PlanModel& m, const LlamaConfig& t) {
  m.vocab = t.vocab_size;
  m.hidden = t.hidden_size;
  m.intermediate = t.intermediate_size;
  m.layers = t.num_hidden_layers;
  m.heads = t.num_attention_heads;
  m.kv_heads = t.num_key_value_heads;
  m.head_dim = t.head_dim();
  m.tie_embeddings = t.tie_word_embeddings;
  m.qkv_bias = t.qkv_bias();
}

void set_vision(dist::PlanModel& m, const ClipVisionConfig& v) {
  m.v_hidden = v.hidden_size;
  m.v_intermediate = v.intermediate_size;
  m.v_layers = v.num_hidden_layers;
  m.v_heads = v.num_attention_heads;
  m.image_size = v.image_size;
  m.patch_size = v.patch_size;
  m.siglip = v.is_siglip();
  m.siglip_head = v.is_siglip() && v.use_head;
}

// YAML (a superset of JSON) -> JSON, for --model_config.
nlohmann::json to_json(const YAML::Node& n) {
  if (n.IsMap()) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& kv : n) j[kv.first.as<std::string>()] = to_json(kv.second);
    return j;
  }
  if (n.IsSequence()) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& x : n) j.push_back(to_json(x));
    return j;
  }
  if (!n.IsScalar()) return nullptr;
  const std::string s = n.Scalar();
  if (n.Tag() != "!") {
    size_t used = 0;
    try {
      long long v = std::stoll(s, &used);
      if (used == s.size()) return v;
    } catch (...) {
    }
    try {
      double v = std::stod(s, &used);
      if (used == s.size()) return v;
    } catch (...) {
    }
    if (s == "true" || s == "True") return true;
    if (s == "false" || s == "False") return false;
  }
  return s;
}

LlavaConfig config_from_spec(const Options& o) {
  nlohmann::json spec;
  try {
    spec = to_json(YAML::LoadFile(o.model_config));
  } catch (const YAML::Exception& e) {
    throw Error(o.model_config + ": cannot read as JSON/YAML: " + e.what());
  }
  if (!spec.is_object()) throw Error(o.model_config + ": expected an object with text_config and vision_config");
  if (!spec.contains("model_type")) spec["model_type"] = "llava";
  if (o.set_keys.count("mm_projector_type")) spec["mm_projector_type"] = o.mm_projector_type;
  const fs::path tmp = fs::temp_directory_path() / ("llava_plan_" + std::to_string(::getpid()) + ".json");
  std::ofstream(tmp) << spec.dump(2);
  try {
    LlavaConfig c = LlavaConfig::from_json_file(tmp.string());
    fs::remove(tmp);
    return c;
  } catch (const Error& e) {
    fs::remove(tmp);
    throw Error(std::string(e.what()) + " (from " + o.model_config + ")");
  }
}

// anyres tiles and positions per image: from --image_aspect_ratio anyres + --image_grid_pinpoints /
// --mm_patch_merge_type / --max_tiles_per_sample when given, else from the model's config.json (a LLaVA-1.6
// directory), else what the preset says.
void set_anyres(dist::PlanModel& m, const Options& o, const LlavaConfig* config) {
  const bool from_options = o.set_keys.count("image_aspect_ratio") && o.image_aspect_ratio == "anyres";
  if (o.set_keys.count("image_aspect_ratio") && o.image_aspect_ratio != "anyres") {
    m.tiles_per_image = 1;
    m.positions_per_image = 0;
    return;
  }
  if (!from_options && !(config && config->anyres())) return;
  AnyresConfig a;
  a.tile_size = static_cast<int>(m.image_size);
  a.patches_per_side = static_cast<int>(m.image_size / m.patch_size);
  a.tile_positions = static_cast<int>(m.image_tokens());
  a.merge = parse_patch_merge(o.set_keys.count("mm_patch_merge_type") ? o.mm_patch_merge_type
                              : config                                ? config->mm_patch_merge_type
                                                                      : "spatial_unpad");
  if (o.set_keys.count("image_grid_pinpoints")) a.pinpoints = parse_grid_pinpoints(o.image_grid_pinpoints, a.tile_size);
  else if (config && config->anyres()) a.pinpoints = config->image_grid_pinpoints;
  else a.pinpoints = {{336, 672}, {672, 336}, {672, 672}, {1008, 336}, {336, 1008}};  // LLaVA-1.6's
  int tiles = 1;
  for (const ImageSize& p : a.pinpoints) tiles = std::max(tiles, 1 + (p.width / a.tile_size) * (p.height / a.tile_size));
  if (o.max_tiles_per_sample > 0) tiles = std::min(tiles, std::max(1, o.max_tiles_per_sample));
  m.tiles_per_image = tiles;
  m.positions_per_image = anyres_max_image_positions(a);
}

// The sizes from --model_config, a model directory or a preset; *config_out = the LLaVA config when there is one.
dist::PlanModel plan_model_sizes(const Options& o, const LlavaConfig** config_out, LlavaConfig& config_store) {
  dist::PlanModel m;
  if (!o.model_config.empty()) {
    config_store = config_from_spec(o);
    *config_out = &config_store;
    const LlavaConfig& c = config_store;
    m.name = o.model_config;
    set_llm(m, c.text);
    set_vision(m, c.vision);
    m.projector_linears = c.projector_num_linears();
    return m;
  }
  const std::string& path = o.model_name_or_path;
  if (path.empty()) {
    std::string names;
    for (const auto& n : dist::plan_preset_names()) names += (names.empty() ? "" : ", ") + n;
    throw Error("plan: --model_config FILE or --model_name_or_path (a model directory or a preset: " + names +
                ") is required");
  }
  if (fs::is_directory(path)) {
    const std::string config = (fs::path(path) / "config.json").string();
    const std::string kind = detect_model_dir_kind(path);
    m.name = path;
    if (kind == "llava" || kind == "llava_llama") {
      config_store = LlavaConfig::from_json_file(config, o.vision_tower);
      *config_out = &config_store;
      const LlavaConfig& c = config_store;
      set_llm(m, c.text);
      set_vision(m, c.vision);
      m.projector_linears = c.projector_num_linears();
      return m;
    }
    if (kind == "llama") {
      set_llm(m, LlamaConfig::from_json_file(config));
      set_vision(m, vision_from_option(o.vision_tower));
      m.projector_linears = parse_projector_type(o.mm_projector_type, "--mm_projector_type");
      return m;
    }
    throw Error("plan: " + path + " is a " + kind + " directory; expected a LLaVA or LLaMA model");
  }
  if (!dist::plan_preset(path, m)) {
    std::string names;
    for (const auto& n : dist::plan_preset_names()) names += (names.empty() ? "" : ", ") + n;
    throw Error("plan: --model_name_or_path '" + path + "' is neither a directory nor a preset (" + names + ")");
  }
  m.name = path + " (preset)";
  if (path.find("llava") == std::string::npos) {  // an LLM preset: tower and projector from the options
    // (the llava presets, LLaVA-1.5 and LLaVA-NeXT-Interleave, carry their own)
    set_vision(m, vision_from_option(o.vision_tower));
    m.projector_linears = parse_projector_type(o.mm_projector_type, "--mm_projector_type");
  }
  return m;
}

dist::PlanModel plan_model(const Options& o) {
  LlavaConfig store;
  const LlavaConfig* config = nullptr;
  dist::PlanModel m = plan_model_sizes(o, &config, store);
  set_anyres(m, o, config);
  return m;
}

}  // namespace

int cmd_plan(const Options& o) {
  if (o.world_size < 1) throw Error("plan: --world_size must be >= 1");
  if (o.per_device_train_batch_size < 1 || o.model_max_length < 1)
    throw Error("plan: per_device_train_batch_size and model_max_length must be >= 1");
  dist::PlanModel m = plan_model(o);
  dist::PlanSettings s;
  s.world_size = o.world_size;
  s.batch = o.per_device_train_batch_size;
  s.seq = o.model_max_length;
  s.gradient_accumulation_steps = o.gradient_accumulation_steps;
  s.bf16 = o.bf16;
  s.fused_attention = compat::has_fused_attention() && fused_attention(o.attn_implementation);
  s.tune_mm_mlp_adapter = o.tune_mm_mlp_adapter;
  s.freeze_backbone = o.freeze_backbone;
  s.freeze_mm_mlp_adapter = o.freeze_mm_mlp_adapter;
  s.unfreeze_mm_vision_tower = o.unfreeze_mm_vision_tower;
  if (o.set_keys.count("mm_tunable_parts") || !o.mm_tunable_parts.empty()) {
    // LLaVA-NeXT's list, in the plan's terms (its freeze_backbone is the whole LLM)
    const TunableParts parts = parse_tunable_parts(o.mm_tunable_parts);
    s.tune_mm_mlp_adapter = parts.projector_only();
    s.freeze_backbone = !parts.language_model;
    s.freeze_mm_mlp_adapter = !parts.mlp_adapter;
    s.unfreeze_mm_vision_tower = parts.vision_tower;
  }
  s.lora_enable = o.lora_enable;
  s.lora_r = o.lora_r;
  s.bucket_bytes = static_cast<int64_t>(o.ddp_bucket_cap_mb) << 20;
  std::cout << dist::plan_report(m, s);
  if (o.zero_stage >= 0 && o.zero_stage <= 2) {
    dist::MemoryEstimate e = dist::estimate_memory(m, s, o.zero_stage, o.gradient_checkpointing);
    std::printf("this config: zero_stage %d, gradient_checkpointing %s -> %.1f GiB per rank\n", o.zero_stage,
                o.gradient_checkpointing ? "true" : "false", e.total() / (1024.0 * 1024 * 1024));
    // the same in bytes, for scripts (bench/plan_check.py compares it with a measured run)
    nlohmann::json j = {{"weights", e.weights},         {"grads", e.grads},   {"master", e.master},
                        {"adam", e.adam},               {"buffers", e.buffers}, {"activations", e.activations},
                        {"total", e.total()}};
    std::printf("this config, bytes: %s\n", j.dump().c_str());
  }
  return 0;
}

}  // namespace llava::cli
