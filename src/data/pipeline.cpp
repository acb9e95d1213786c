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

// The model's config.json, or an empty object when the directory has none.
json model_config(const std::string& model_dir) {
  const fs::path path = fs::path(model_dir) / "config.json";
  return fs::exists(path) ? read_json(path) : json::object();
}

// HF's LlavaNextForConditionalGeneration directory: always anyres + spatial_unpad, pinpoints as (height, width).
bool is_llava_next(const json& config) { return config.value("model_type", "") == "llava_next"; }

// --image_grid_pinpoints, else config.json's image_grid_pinpoints (a JSON list or LLaVA-NeXT's range string;
// llava_next's (height, width) pairs turned into LLaVA's (width, height) here).
std::vector<ImageSize> grid_pinpoints(const Options& o, const json& config, int tile_size) {
  if (o.set_keys.count("image_grid_pinpoints") && !o.image_grid_pinpoints.empty())
    return parse_grid_pinpoints(o.image_grid_pinpoints, tile_size);
  const json* p = config.contains("image_grid_pinpoints") ? &config["image_grid_pinpoints"] : nullptr;
  if (!p || p->is_null())
    throw Error("--image_aspect_ratio anyres needs --image_grid_pinpoints (" + o.model_name_or_path +
                "/config.json has none), e.g. \"[(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)]\"");
  try {
    std::vector<ImageSize> out = parse_grid_pinpoints(p->is_string() ? p->get<std::string>() : p->dump(), tile_size);
    if (is_llava_next(config))
      for (ImageSize& s : out) s = {s.height, s.width};
    return out;
  } catch (const Error& e) {
    throw Error(o.model_name_or_path + "/config.json: image_grid_pinpoints: " + e.what());
  }
}

// --image_aspect_ratio (square | pad | anyres) and, for anyres, the tiling and position arithmetic.
// config.json's values are the defaults of --mm_patch_merge_type and --image_grid_pinpoints, and of
// --image_aspect_ratio when it says anyres (a LLaVA-1.6 checkpoint; "pad" in a v1.5 config stays opt-in).
void configure_images(const Options& o, const VisionFiles& vision, ExampleOptions& ex) {
  const json config = model_config(o.model_name_or_path);
  auto config_string = [&](const char* key) {
    return config.contains(key) && config[key].is_string() ? config[key].get<std::string>() : std::string();
  };
  std::string aspect = o.image_aspect_ratio;
  const std::string config_aspect =
      config.contains("image_aspect_ratio") ? config_string("image_aspect_ratio") : is_llava_next(config) ? "anyres" : "";
  if (!o.set_keys.count("image_aspect_ratio") && config_aspect == "anyres") aspect = "anyres";
  if (aspect.rfind("anyres_max", 0) == 0)
    throw Error("--image_aspect_ratio " + aspect + " (LLaVA-OneVision) is not supported yet; anyres (LLaVA-1.6) is");
  if (aspect != "square" && aspect != "pad" && aspect != "anyres")
    throw Error("--image_aspect_ratio must be square, pad or anyres, got '" + aspect + "'");
  ex.pad_to_square = aspect == "pad";
  if (o.set_keys.count("mm_patch_merge_type")) parse_patch_merge(o.mm_patch_merge_type);  // a bad flag is an error
  if (o.max_tiles_per_sample < 0) throw Error("--max_tiles_per_sample must be >= 0 (0: no limit)");
  if (aspect != "anyres") return;  // one tile per image: the merge type changes nothing (LLaVA's 4-D path)

  std::string merge_name = o.mm_patch_merge_type;
  const std::string config_merge = config.contains("mm_patch_merge_type") ? config_string("mm_patch_merge_type")
                                   : is_llava_next(config)                 ? "spatial_unpad"
                                                                           : "";
  if (!o.set_keys.count("mm_patch_merge_type") && !config_merge.empty()) merge_name = config_merge;
  const PatchMerge merge = parse_patch_merge(merge_name);

  const ImageProcessorConfig& p = vision.processor;
  if (p.crop_width != p.crop_height || p.crop_height != vision.image_size)
    throw Error("--image_aspect_ratio anyres needs square crops of the vision tower's image size " +
                std::to_string(vision.image_size) + ", the processor (" + vision.config_dir + ") crops " +
                std::to_string(p.crop_width) + "x" + std::to_string(p.crop_height));
  if (merge != PatchMerge::kFlat && o.mm_vision_select_feature != "patch")
    throw Error("--mm_patch_merge_type " + merge_name + " needs --mm_vision_select_feature patch (LLaVA asserts it)");
  AnyresConfig a;
  a.tile_size = vision.image_size;
  a.patches_per_side = vision.image_size / vision.patch_size;
  a.tile_positions = ex.image_feature_positions;
  a.merge = merge;
  a.max_tiles_per_sample = o.max_tiles_per_sample;
  a.pinpoints = grid_pinpoints(o, config, a.tile_size);
  ex.anyres = std::move(a);
}

}  // namespace

ConfigOverrides config_overrides(const Options& o) {
  ConfigOverrides c;
  c.vision_tower = o.vision_tower;
  if (o.set_keys.count("mm_projector_type")) c.mm_projector_type = o.mm_projector_type;
  if (o.set_keys.count("mm_vision_select_layer")) c.mm_vision_select_layer = o.mm_vision_select_layer;
  if (o.set_keys.count("mm_vision_select_feature")) c.mm_vision_select_feature = o.mm_vision_select_feature;
  return c;
}

VisionFiles find_vision_files(const Options& o) {
  if (o.model_name_or_path.empty()) throw Error("no model: give --model_name_or_path (and --vision_tower for an LLM directory)");
  std::string kind;
  const LlavaConfig c = resolve_llava_config(o.model_name_or_path, config_overrides(o), nullptr, &kind);
  VisionFiles v;
  v.image_size = static_cast<int>(c.vision.image_size);
  v.patch_size = static_cast<int>(c.vision.patch_size);
  v.positions = static_cast<int>(c.num_image_tokens());
  fs::path dir = o.model_name_or_path;
  // --vision_tower is the tower of an LLM directory or of an original LLaVA checkpoint; an HF LLaVA directory
  // embeds its own (the model ignores the flag), and its preprocessor must match that tower.
  const bool model_uses_tower_flag = kind == "llama" || kind == "llava_llama";
  if (!o.vision_tower.empty() && model_uses_tower_flag) {
    dir = o.vision_tower;
  } else if (kind == "llava_llama" && !c.mm_vision_tower.empty()) {
    fs::path tower = c.mm_vision_tower;
    if (tower.is_relative()) tower = fs::path(o.model_name_or_path) / tower;
    if (fs::exists(tower / "config.json")) dir = tower;
  }
  v.config_dir = dir.string();
  const fs::path pre = dir / "preprocessor_config.json";
  if (fs::exists(pre)) v.processor = ImageProcessorConfig::from_json_file(pre.string());
  else if (c.vision.is_siglip()) v.processor = ImageProcessorConfig::siglip_defaults(v.image_size);
  else v.processor = ImageProcessorConfig::clip_defaults(v.image_size);
  return v;
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
  if (o.model_name_or_path.empty())
    throw Error("--model_name_or_path is required (it holds tokenizer.model or tokenizer.json)");
  if (o.mm_use_im_start_end || o.mm_use_im_patch_token)
    throw Error("--mm_use_im_start_end / --mm_use_im_patch_token are not supported (LLaVA-1.5 uses false)");
  auto p = std::make_unique<DataPipeline>(load_tokenizer(o.model_name_or_path));
  ExampleOptions& ex = p->example;
  ex.tokenizer = &p->tokenizer;
  ex.prompt_cache = std::make_shared<PromptChunkCache>(p->tokenizer);
  ex.conversation = &ConversationTemplate::get(o.version);
  if (o.image_placement != "front" && o.image_placement != "inline" && o.image_placement != "next")
    throw Error("--image_placement must be front, inline or next, got '" + o.image_placement + "'");
  ex.placement = o.image_placement == "front"    ? ImagePlacement::kFront
                 : o.image_placement == "inline" ? ImagePlacement::kInline
                                                 : ImagePlacement::kNext;
  ex.model_max_length = o.model_max_length;
  VisionFiles vision = find_vision_files(o);
  ex.image_config = vision.processor;
  ex.image_feature_positions = vision.positions;
  if (vision.positions > o.model_max_length)
    throw Error("--model_max_length " + std::to_string(o.model_max_length) + " is shorter than one image (" +
                std::to_string(vision.positions) + " positions): no sample with an image could be trained");
  configure_images(o, vision, ex);
  if (needs_dataset) {
    if (o.data_path.empty()) throw Error("--data_path is required");
    p->dataset.emplace(Dataset::open(o.data_path, o.image_folder, open ? *open : dataset_open_options(o)));
  }
  return p;
}

}  // namespace llava
