#include "llava/pipeline.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "llava/error.h"
#include "llava/prompt_tokens.h"

namespace llava {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw Error(path.string() + ": cannot open");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw Error(path.string() + ": bad JSON: " + e.what());
  }
}

VisionFiles from_vision_config(const json& vc, const fs::path& dir) {
  VisionFiles v;
  v.config_dir = dir.string();
  v.image_size = vc.value("image_size", 224);
  v.patch_size = vc.value("patch_size", 32);
  fs::path pre = dir / "preprocessor_config.json";
  v.processor = fs::exists(pre) ? ImageProcessorConfig::from_json_file(pre.string())
                                : ImageProcessorConfig::clip_defaults(v.image_size);
  return v;
}

VisionFiles from_clip_dir(const fs::path& dir) {
  json c = read_json(dir / "config.json");
  // A CLIPVisionModel config has the fields at the top; a full CLIPModel nests them in vision_config.
  return from_vision_config(c.contains("vision_config") ? c["vision_config"] : c, dir);
}

}  // namespace

VisionFiles find_vision_files(const std::string& model_dir, const std::string& vision_tower_dir) {
  if (!vision_tower_dir.empty()) return from_clip_dir(vision_tower_dir);
  if (model_dir.empty()) throw Error("no model: give --model_name_or_path (and --vision_tower for an LLM directory)");
  fs::path dir(model_dir);
  json c = read_json(dir / "config.json");
  std::string type = c.value("model_type", "");
  if (type == "llava" && c.contains("vision_config")) return from_vision_config(c["vision_config"], dir);
  if (c.contains("mm_vision_tower") && c["mm_vision_tower"].is_string()) {
    fs::path tower = c["mm_vision_tower"].get<std::string>();
    if (tower.is_relative()) tower = dir / tower;
    if (fs::exists(tower / "config.json")) return from_clip_dir(tower);
    throw Error(model_dir + "/config.json: mm_vision_tower '" + c["mm_vision_tower"].get<std::string>() +
                "' is not a local directory: pass --vision_tower DIR (nothing is downloaded)");
  }
  throw Error(model_dir + "/config.json: no vision tower (model_type '" + type +
              "'): pass --vision_tower with a CLIP vision model directory");
}

DatasetOpenOptions dataset_open_options(const Options& o) {
  DatasetOpenOptions open;
  if (o.data_cache_dir != "none")
    open.cache_dir = !o.data_cache_dir.empty() ? o.data_cache_dir
                     : !o.output_dir.empty()   ? (fs::path(o.output_dir) / ".data_cache").string()
                                               : "";
  open.seed = static_cast<uint64_t>(o.seed);
  return open;
}

std::unique_ptr<DataPipeline> make_data_pipeline(const Options& o, bool needs_dataset, const DatasetOpenOptions* open) {
  if (o.model_name_or_path.empty()) throw Error("--model_name_or_path is required (it holds tokenizer.model)");
  if (o.mm_use_im_start_end || o.mm_use_im_patch_token)
    throw Error("--mm_use_im_start_end / --mm_use_im_patch_token are not supported (LLaVA-1.5 uses false)");
  auto p = std::make_unique<DataPipeline>(LlamaTokenizer::from_dir(o.model_name_or_path));
  ExampleOptions& ex = p->example;
  ex.tokenizer = &p->tokenizer;
  ex.prompt_cache = std::make_shared<PromptChunkCache>(p->tokenizer);
  ex.conversation = &ConversationTemplate::get(o.version);
  if (o.image_placement != "front" && o.image_placement != "inline")
    throw Error("--image_placement must be front or inline, got '" + o.image_placement + "'");
  ex.placement = o.image_placement == "front" ? ImagePlacement::kFront : ImagePlacement::kInline;
  if (o.image_aspect_ratio != "square" && o.image_aspect_ratio != "pad")
    throw Error("--image_aspect_ratio must be square or pad, got '" + o.image_aspect_ratio + "' (anyres is not supported)");
  ex.pad_to_square = o.image_aspect_ratio == "pad";
  ex.model_max_length = o.model_max_length;
  VisionFiles vision = find_vision_files(o.model_name_or_path, o.vision_tower);
  ex.image_config = vision.processor;
  int patches = (vision.image_size / vision.patch_size) * (vision.image_size / vision.patch_size);
  if (o.mm_vision_select_feature != "patch" && o.mm_vision_select_feature != "cls_patch")
    throw Error("--mm_vision_select_feature must be patch or cls_patch");
  ex.image_feature_positions = patches + (o.mm_vision_select_feature == "cls_patch" ? 1 : 0);
  if (needs_dataset) {
    if (o.data_path.empty()) throw Error("--data_path is required");
    p->dataset.emplace(Dataset::open(o.data_path, o.image_folder, open ? *open : dataset_open_options(o)));
  }
  return p;
}

}  // namespace llava
