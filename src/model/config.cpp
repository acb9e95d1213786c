#include "llava/model/config.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "llava/error.h"
#include "model/config_json.h"

namespace llava {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

template <typename T>
T get_or(const json& j, const char* key, T fallback, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception& e) {
    throw Error(where + ": key '" + key + "' has the wrong type (" + it->dump() + ")");
  }
}

std::string normalize_act(const std::string& act, const std::string& where, bool vision) {
  if (vision && (act == "quick_gelu" || act == "gelu" || act == "gelu_pytorch_tanh")) return act;
  if (!vision && (act == "silu" || act == "gelu")) return act;
  if (!vision && act == "swish") return "silu";
  throw Error(where + ": unsupported hidden_act '" + act + "' (supported: " +
              (vision ? "quick_gelu, gelu, gelu_pytorch_tanh" : "silu, gelu") + ")");
}

bool is_siglip_type(const std::string& type) { return type == "siglip_vision_model" || type == "siglip"; }

}  // namespace

json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot open");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw Error(path + ": bad JSON: " + e.what());
  }
  if (!j.is_object()) throw Error(path + ": expected a JSON object, got " + std::string(j.type_name()));
  return j;
}

void write_text_file_atomic(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    out << text;
    out.flush();
    if (!out) throw Error(tmp + ": write failed");
  }
  fs::rename(tmp, path);
}

// ---------------------------------------------------------------- CLIP

ClipVisionConfig ClipVisionConfig::clip_vit_large_336() {
  ClipVisionConfig c;
  c.hidden_size = 1024;
  c.intermediate_size = 4096;
  c.num_hidden_layers = 24;
  c.num_attention_heads = 16;
  c.image_size = 336;
  c.patch_size = 14;
  c.projection_dim = 768;
  return c;
}

ClipVisionConfig ClipVisionConfig::siglip_defaults() {
  ClipVisionConfig c;
  c.tower = VisionTowerType::kSiglip;
  c.patch_size = 16;
  c.layer_norm_eps = 1e-6;
  c.hidden_act = "gelu_pytorch_tanh";
  c.projection_dim = 0;  // SigLIP has none
  return c;
}

ClipVisionConfig clip_vision_config_from_json(const json& j, const std::string& where) {
  if (!j.is_object()) throw Error(where + ": vision config is not a JSON object");
  // HF LlavaConfig's rule: a vision_config without model_type is CLIP's
  const std::string type = get_or<std::string>(j, "model_type", "clip_vision_model", where);
  if (type != "clip_vision_model" && !is_siglip_type(type))
    throw Error(where + ": vision model_type '" + type + "' is not supported (clip_vision_model, siglip_vision_model)");
  ClipVisionConfig c = is_siglip_type(type) ? ClipVisionConfig::siglip_defaults() : ClipVisionConfig();
  c.hidden_size = get_or<int64_t>(j, "hidden_size", c.hidden_size, where);
  c.intermediate_size = get_or<int64_t>(j, "intermediate_size", c.intermediate_size, where);
  c.num_hidden_layers = get_or<int64_t>(j, "num_hidden_layers", c.num_hidden_layers, where);
  c.num_attention_heads = get_or<int64_t>(j, "num_attention_heads", c.num_attention_heads, where);
  c.num_channels = get_or<int64_t>(j, "num_channels", c.num_channels, where);
  c.image_size = get_or<int64_t>(j, "image_size", c.image_size, where);
  c.patch_size = get_or<int64_t>(j, "patch_size", c.patch_size, where);
  c.projection_dim = get_or<int64_t>(j, "projection_dim", c.projection_dim, where);
  c.layer_norm_eps = get_or<double>(j, "layer_norm_eps", c.layer_norm_eps, where);
  c.initializer_range = get_or<double>(j, "initializer_range", c.initializer_range, where);
  c.hidden_act = normalize_act(get_or<std::string>(j, "hidden_act", c.hidden_act, where), where, true);
  if (c.is_siglip()) c.use_head = get_or<bool>(j, "vision_use_head", true, where);
  c.validate(where);
  return c;
}

json clip_vision_config_to_json(const ClipVisionConfig& c) {
  json j = {{"hidden_size", c.hidden_size},
            {"intermediate_size", c.intermediate_size},
            {"num_hidden_layers", c.num_hidden_layers},
            {"num_attention_heads", c.num_attention_heads},
            {"num_channels", c.num_channels},
            {"image_size", c.image_size},
            {"patch_size", c.patch_size},
            {"layer_norm_eps", c.layer_norm_eps},
            {"attention_dropout", 0.0},
            {"hidden_act", c.hidden_act}};
  if (c.is_siglip()) {  // SiglipVisionConfig's keys
    j["vision_use_head"] = c.use_head;
    j["model_type"] = "siglip_vision_model";
  } else {  // CLIPVisionConfig's
    j["projection_dim"] = c.projection_dim;
    j["initializer_range"] = c.initializer_range;
    j["initializer_factor"] = 1.0;
    j["model_type"] = "clip_vision_model";
  }
  return j;
}

ClipVisionConfig ClipVisionConfig::from_json_file(const std::string& path) {
  json j = read_json_file(path);
  std::string type = get_or<std::string>(j, "model_type", "", path);
  if (type == "clip" || type == "siglip" || (j.contains("vision_config") && j["vision_config"].is_object())) {
    json vc = j.value("vision_config", json::object());
    if (type == "siglip" && !vc.contains("model_type")) vc["model_type"] = "siglip_vision_model";
    return clip_vision_config_from_json(vc, path + " (vision_config)");
  }
  if (!type.empty() && type != "clip_vision_model" && type != "siglip_vision_model")
    throw Error(path + ": model_type '" + type +
                "' is not a vision tower (clip_vision_model, clip, siglip_vision_model or siglip)");
  return clip_vision_config_from_json(j, path);
}

std::string ClipVisionConfig::to_json_string() const {
  json j = clip_vision_config_to_json(*this);
  j["architectures"] = {is_siglip() ? "SiglipVisionModel" : "CLIPVisionModel"};
  j["torch_dtype"] = "float32";
  return j.dump(2) + "\n";
}

void ClipVisionConfig::validate(const std::string& where) const {
  if (hidden_size <= 0 || num_attention_heads <= 0 || hidden_size % num_attention_heads != 0)
    throw Error(where + ": vision hidden_size " + std::to_string(hidden_size) +
                " is not a positive multiple of num_attention_heads " + std::to_string(num_attention_heads));
  if (patch_size <= 0 || image_size <= 0 || image_size % patch_size != 0)
    throw Error(where + ": vision image_size " + std::to_string(image_size) + " is not a multiple of patch_size " +
                std::to_string(patch_size));
  if (num_hidden_layers < 0 || intermediate_size <= 0 || num_channels <= 0)
    throw Error(where + ": bad vision config sizes");
  if (!is_siglip() && hidden_act == "gelu_pytorch_tanh")
    throw Error(where + ": CLIP's hidden_act must be quick_gelu or gelu, got gelu_pytorch_tanh");
}

// ---------------------------------------------------------------- LLaMA

LlamaConfig LlamaConfig::mistral_defaults() {
  LlamaConfig c;
  c.model_type = "mistral";
  c.intermediate_size = 14336;
  c.num_key_value_heads = 8;
  c.max_position_embeddings = 4096 * 32;
  c.sliding_window = 4096;
  return c;
}

namespace {

// Mistral configs: model_type mistral (an LLM or HF text_config) or llava_mistral (original LLaVA-1.6).
bool is_mistral_type(const std::string& type) { return type == "mistral" || type == "llava_mistral"; }

// sliding_window: a number, or null (no window); a missing key is MistralConfig's 4096.
int64_t sliding_window_from_json(const json& j, int64_t fallback, const std::string& where) {
  auto it = j.find("sliding_window");
  if (it == j.end()) return fallback;
  if (it->is_null()) return 0;
  if (!it->is_number_integer() || it->get<int64_t>() <= 0)
    throw Error(where + ": sliding_window must be a positive integer or null, got " + it->dump());
  return it->get<int64_t>();
}

void read_rope_scaling(const json& j, LlamaConfig& c, const std::string& where) {
  auto rs = j.find("rope_scaling");
  if (rs == j.end() || rs->is_null()) return;
  if (!rs->is_object()) throw Error(where + ": rope_scaling must be an object or null");
  std::string type = get_or<std::string>(*rs, "rope_type", get_or<std::string>(*rs, "type", "", where), where);
  if (type == "default") type = "";
  if (!type.empty() && type != "linear" && type != "dynamic" && type != "llama3")
    throw Error(where + ": unsupported rope_scaling type '" + type + "' (supported: linear, dynamic, llama3)");
  c.rope_scaling.type = type;
  c.rope_scaling.factor = get_or<double>(*rs, "factor", 1.0, where);
  c.rope_scaling.low_freq_factor = get_or<double>(*rs, "low_freq_factor", 1.0, where);
  c.rope_scaling.high_freq_factor = get_or<double>(*rs, "high_freq_factor", 4.0, where);
  c.rope_scaling.original_max_position_embeddings =
      get_or<int64_t>(*rs, "original_max_position_embeddings", 8192, where);
}

}  // namespace

LlamaConfig LlamaConfig::qwen2_defaults() {
  LlamaConfig c;
  c.model_type = "qwen2";
  c.vocab_size = 151936;
  c.intermediate_size = 22016;
  c.max_position_embeddings = 32768;
  c.bos_token_id = c.eos_token_id = -1;
  return c;
}

LlamaConfig llama_config_from_json(const json& j, const std::string& where) {
  if (!j.is_object()) throw Error(where + ": text config is not a JSON object");
  // HF LlavaConfig's rule: a text_config without model_type is LLaMA's. An original LLaVA config holds its
  // LLM's keys at top level, under model_type llava_llama / llava (LLaMA) or llava_mistral (Mistral).
  const std::string type = get_or<std::string>(j, "model_type", "llama", where);
  const bool mistral = is_mistral_type(type), qwen2 = type == "qwen2";
  if (!mistral && !qwen2 && type != "llama" && type != "llava_llama" && type != "llava")
    throw Error(where + ": text model_type '" + type + "' is not supported (llama, mistral, qwen2)");
  // transformers 4.37 LlamaConfig / MistralConfig / Qwen2Config defaults
  LlamaConfig c = mistral ? LlamaConfig::mistral_defaults() : qwen2 ? LlamaConfig::qwen2_defaults() : LlamaConfig();
  c.vocab_size = get_or<int64_t>(j, "vocab_size", c.vocab_size, where);
  c.hidden_size = get_or<int64_t>(j, "hidden_size", c.hidden_size, where);
  c.intermediate_size = get_or<int64_t>(j, "intermediate_size", c.intermediate_size, where);
  c.num_hidden_layers = get_or<int64_t>(j, "num_hidden_layers", c.num_hidden_layers, where);
  c.num_attention_heads = get_or<int64_t>(j, "num_attention_heads", c.num_attention_heads, where);
  c.num_key_value_heads =
      get_or<int64_t>(j, "num_key_value_heads", mistral ? c.num_key_value_heads : c.num_attention_heads, where);
  c.head_dim_override = get_or<int64_t>(j, "head_dim", 0, where);
  if (c.head_dim_override == c.hidden_size / std::max<int64_t>(c.num_attention_heads, 1)) c.head_dim_override = 0;
  c.max_position_embeddings = get_or<int64_t>(j, "max_position_embeddings", c.max_position_embeddings, where);
  c.rms_norm_eps = get_or<double>(j, "rms_norm_eps", c.rms_norm_eps, where);
  c.rope_theta = get_or<double>(j, "rope_theta", c.rope_theta, where);
  c.initializer_range = get_or<double>(j, "initializer_range", c.initializer_range, where);
  c.hidden_act = normalize_act(get_or<std::string>(j, "hidden_act", c.hidden_act, where), where, false);
  c.tie_word_embeddings = get_or<bool>(j, "tie_word_embeddings", c.tie_word_embeddings, where);
  c.bos_token_id = get_or<int64_t>(j, "bos_token_id", c.bos_token_id, where);
  c.eos_token_id = get_or<int64_t>(j, "eos_token_id", c.eos_token_id, where);
  c.pad_token_id = get_or<int64_t>(j, "pad_token_id", -1, where);
  if (mistral) {
    // MistralForCausalLM 4.37.2 has no attention bias and no rope scaling: such keys are not read.
    c.sliding_window = sliding_window_from_json(j, c.sliding_window, where);
  } else {
    if (qwen2) {  // its q/k/v biases are the architecture's; the window keys only round-trip
      c.use_sliding_window = get_or<bool>(j, "use_sliding_window", c.use_sliding_window, where);
      c.qwen2_sliding_window = get_or<int64_t>(j, "sliding_window", c.qwen2_sliding_window, where);
      c.max_window_layers = get_or<int64_t>(j, "max_window_layers", c.max_window_layers, where);
    } else {
      c.attention_bias = get_or<bool>(j, "attention_bias", c.attention_bias, where);
    }
    read_rope_scaling(j, c, where);
  }
  c.validate(where);
  return c;
}

json llama_config_to_json(const LlamaConfig& c) {
  auto id_or_null = [](int64_t id) { return id >= 0 ? json(id) : json(nullptr); };
  json j{{"vocab_size", c.vocab_size},
         {"hidden_size", c.hidden_size},
         {"intermediate_size", c.intermediate_size},
         {"num_hidden_layers", c.num_hidden_layers},
         {"num_attention_heads", c.num_attention_heads},
         {"num_key_value_heads", c.num_key_value_heads},
         {"max_position_embeddings", c.max_position_embeddings},
         {"rms_norm_eps", c.rms_norm_eps},
         {"rope_theta", c.rope_theta},
         {"initializer_range", c.initializer_range},
         {"hidden_act", c.hidden_act},
         {"tie_word_embeddings", c.tie_word_embeddings},
         {"attention_dropout", 0.0},
         {"use_cache", true},
         {"bos_token_id", id_or_null(c.bos_token_id)},
         {"eos_token_id", id_or_null(c.eos_token_id)},
         {"pad_token_id", id_or_null(c.pad_token_id)},
         {"model_type", c.model_type}};
  if (c.head_dim_override > 0) j["head_dim"] = c.head_dim_override;
  if (c.is_mistral()) {
    j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
    return j;
  }
  if (c.is_qwen2()) {  // Qwen2Config's keys; its q/k/v bias is fixed by the architecture
    j["use_sliding_window"] = c.use_sliding_window;
    j["sliding_window"] = c.qwen2_sliding_window;
    j["max_window_layers"] = c.max_window_layers;
  } else {
    j["attention_bias"] = c.attention_bias;
    j["pretraining_tp"] = 1;
  }
  if (c.rope_scaling.type.empty()) {
    j["rope_scaling"] = nullptr;
  } else {
    json rs{{"type", c.rope_scaling.type}, {"factor", c.rope_scaling.factor}};
    if (c.rope_scaling.type == "llama3") {
      rs["rope_type"] = "llama3";
      rs["low_freq_factor"] = c.rope_scaling.low_freq_factor;
      rs["high_freq_factor"] = c.rope_scaling.high_freq_factor;
      rs["original_max_position_embeddings"] = c.rope_scaling.original_max_position_embeddings;
    }
    j["rope_scaling"] = rs;
  }
  return j;
}

LlamaConfig LlamaConfig::from_json_file(const std::string& path) {
  json j = read_json_file(path);
  std::string type = get_or<std::string>(j, "model_type", "llama", path);
  if (type != "llama" && type != "mistral" && type != "qwen2")
    throw Error(path + ": model_type '" + type + "' is not a supported language model (llama, mistral or qwen2)");
  return llama_config_from_json(j, path);
}

std::string LlamaConfig::to_json_string() const {
  json j = llama_config_to_json(*this);
  j["architectures"] = {is_mistral() ? "MistralForCausalLM" : is_qwen2() ? "Qwen2ForCausalLM" : "LlamaForCausalLM"};
  j["torch_dtype"] = "float32";
  return j.dump(2) + "\n";
}

void LlamaConfig::validate(const std::string& where) const {
  if (model_type != "llama" && model_type != "mistral" && model_type != "qwen2")
    throw Error(where + ": text model_type '" + model_type + "' is not supported (llama, mistral, qwen2)");
  if (sliding_window < 0) throw Error(where + ": sliding_window must be >= 0 (0: none)");
  if (hidden_size <= 0 || num_attention_heads <= 0 || num_key_value_heads <= 0)
    throw Error(where + ": bad LLaMA sizes (hidden_size, num_attention_heads, num_key_value_heads must be > 0)");
  if (head_dim_override == 0 && hidden_size % num_attention_heads != 0)
    throw Error(where + ": hidden_size " + std::to_string(hidden_size) + " is not a multiple of num_attention_heads " +
                std::to_string(num_attention_heads));
  if (num_attention_heads % num_key_value_heads != 0)
    throw Error(where + ": num_attention_heads " + std::to_string(num_attention_heads) +
                " is not a multiple of num_key_value_heads " + std::to_string(num_key_value_heads));
  if (head_dim() % 2 != 0) throw Error(where + ": head_dim must be even for rotary embeddings");
  if (vocab_size <= 0 || intermediate_size <= 0 || num_hidden_layers < 0) throw Error(where + ": bad LLaMA sizes");
  if (!rope_scaling.type.empty() && rope_scaling.factor <= 0)
    throw Error(where + ": rope_scaling factor must be > 0");
  if (use_sliding_window)
    throw Error(where + ": use_sliding_window true is not supported yet (Qwen2's sliding-window attention)");
}

// ---------------------------------------------------------------- LLaVA

int64_t parse_projector_type(const std::string& type, const std::string& where) {
  if (type == "linear") return 1;
  if (type == "identity") return 0;
  static const std::regex kMlp("^mlp([0-9]+)x_gelu$");
  std::smatch m;
  if (std::regex_match(type, m, kMlp)) {
    int64_t n = std::stoll(m[1].str());
    if (n >= 1 && n <= 64) return n;
  }
  throw Error(where + ": unknown projector type '" + type + "' (linear, mlp{N}x_gelu or identity)");
}

bool LlavaConfig::keeps_cls() const {
  if (!vision.has_cls_token()) return false;
  return vision_feature_select_strategy == "full" || vision_feature_select_strategy == "cls_patch";
}

int64_t LlavaConfig::num_image_tokens() const { return vision.num_patches() + (keeps_cls() ? 1 : 0); }

int64_t LlavaConfig::projector_num_linears() const { return parse_projector_type(projector_type, "projector"); }

int64_t LlavaConfig::vision_layers_needed() const {
  const int64_t n = vision.num_hidden_layers;
  return vision_feature_layer < 0 ? n + 1 + vision_feature_layer : vision_feature_layer;
}

void LlavaConfig::validate(const std::string& where) const {
  vision.validate(where);
  text.validate(where);
  int64_t n = parse_projector_type(projector_type, where);
  if (n == 0 && vision.hidden_size != text.hidden_size)
    throw Error(where + ": identity projector needs vision hidden_size == text hidden_size");
  const std::string& s = vision_feature_select_strategy;
  if (s != "default" && s != "patch" && s != "full" && s != "cls_patch")
    throw Error(where + ": unknown vision feature selection '" + s + "' (patch/default or cls_patch/full)");
  if (vision.is_siglip() && s == "default")
    throw Error(where + ": vision_feature_select_strategy 'default' drops the first feature row, which for SigLIP "
                "(no CLS token) is a real patch, as transformers does; use 'full' (every patch)");
  int64_t idx = vision_layers_needed();
  if (idx < 0 || idx > vision.num_hidden_layers)
    throw Error(where + ": vision_feature_layer " + std::to_string(vision_feature_layer) + " is outside the " +
                std::to_string(vision.num_hidden_layers + 1) + " hidden states of the vision tower");
  const std::string& a = image_aspect_ratio;
  if (!a.empty() && a != "square" && a != "pad" && a != "anyres")
    throw Error(where + ": image_aspect_ratio '" + a + "' is not supported (square, pad or anyres)");
  if (anyres()) {  // the merge type matters only for tiled images (LLaVA's 4-D path ignores it)
    const PatchMerge merge = parse_patch_merge(mm_patch_merge_type);
    check_grid_pinpoints(image_grid_pinpoints, static_cast<int>(vision.image_size), where + ": image_grid_pinpoints");
    // LLaVA asserts a tile's features form the n x n map (no CLS row) before it lays them out spatially
    if (merge != PatchMerge::kFlat && keeps_cls())
      throw Error(where + ": mm_patch_merge_type " + mm_patch_merge_type +
                  " needs vision features without CLS (mm_vision_select_feature patch)");
  }
}

AnyresConfig LlavaConfig::anyres_config() const {
  AnyresConfig a;
  a.pinpoints = image_grid_pinpoints;
  a.tile_size = static_cast<int>(vision.image_size);
  a.patches_per_side = static_cast<int>(vision.grid_size());
  a.tile_positions = static_cast<int>(num_image_tokens());
  a.merge = parse_patch_merge(mm_patch_merge_type);
  return a;
}

LlavaConfig LlavaConfig::from_parts(const LlamaConfig& text, const ClipVisionConfig& vision,
                                    const std::string& projector_type, int64_t vision_feature_layer,
                                    const std::string& select_feature) {
  LlavaConfig c;
  c.text = text;
  c.vision = vision;
  c.projector_type = projector_type;
  c.vision_feature_layer = vision_feature_layer;
  c.vision_feature_select_strategy = select_feature;
  c.validate("model configuration");
  return c;
}

namespace {

bool is_original_llava(const json& j) {
  std::string type = j.value("model_type", "");
  if (type == "llava_llama" || type == "llava_mistral") return true;
  if (j.contains("text_config")) return false;
  return j.contains("mm_vision_tower") || j.contains("mm_projector_type") || j.contains("mm_hidden_size");
}

std::string resolve_dir(const std::string& name, const fs::path& base) {
  if (name.empty()) return "";
  fs::path p(name);
  if (p.is_relative() && fs::is_directory(base / p)) return (base / p).string();
  if (fs::is_directory(p)) return p.string();
  return "";
}

// transformers' LlavaNextConfig default (LLaVA-1.6's list; symmetric, so (h, w) and (w, h) agree).
const std::vector<ImageSize> kLlavaNextDefaultPinpoints = {{336, 672}, {672, 336}, {672, 672}, {1008, 336}, {336, 1008}};

ImageSize swapped(ImageSize s) { return {s.height, s.width}; }

// image_grid_pinpoints as config.json writes it: a list of pairs, or LLaVA-NeXT's "(1x1),...,(3x3)" string.
// height_first: HF llava_next's (height, width) order; converted here, at the boundary, to LLaVA's (w, h).
std::vector<ImageSize> pinpoints_from_json(const json& p, int tile_size, bool height_first, const std::string& where) {
  std::vector<ImageSize> out;
  try {
    out = parse_grid_pinpoints(p.is_string() ? p.get<std::string>() : p.dump(), tile_size);
  } catch (const Error& e) {
    throw Error(where + ": image_grid_pinpoints: " + e.what());
  }
  if (height_first)
    for (ImageSize& s : out) s = swapped(s);
  return out;
}

json pinpoints_to_json(const std::vector<ImageSize>& pinpoints, bool height_first) {
  json out = json::array();
  for (const ImageSize& s : pinpoints)
    out.push_back(height_first ? json{s.height, s.width} : json{s.width, s.height});
  return out;
}

// The LLaVA-1.6 keys: image_aspect_ratio, image_grid_pinpoints, mm_patch_merge_type (after the vision config,
// whose image size is the pinpoints' tile). llava_next: anyres + spatial_unpad unless our extension keys say else.
void read_image_layout(const json& j, LlavaConfig& c, bool llava_next, const std::string& where) {
  c.image_aspect_ratio = get_or<std::string>(j, "image_aspect_ratio", llava_next ? "anyres" : "", where);
  c.mm_patch_merge_type = get_or<std::string>(j, "mm_patch_merge_type", llava_next ? "spatial_unpad" : "flat", where);
  auto p = j.find("image_grid_pinpoints");
  const int tile = static_cast<int>(c.vision.image_size);
  if (p != j.end() && !p->is_null()) c.image_grid_pinpoints = pinpoints_from_json(*p, tile, llava_next, where);
  else if (llava_next) c.image_grid_pinpoints = kLlavaNextDefaultPinpoints;
}

void read_hf_llava(const json& j, LlavaConfig& c, const std::string& where) {
  // HF LlavaConfig / LlavaNextConfig: missing sub-configs take the defaults.
  if (j.contains("text_config") && !j["text_config"].is_null()) {
    c.text = llama_config_from_json(j["text_config"], where + " (text_config)");
  } else {
    c.text = LlamaConfig();
  }
  if (j.contains("vision_config") && !j["vision_config"].is_null()) {
    c.vision = clip_vision_config_from_json(j["vision_config"], where + " (vision_config)");
  } else {
    c.vision = ClipVisionConfig::clip_vit_large_336();
  }
  std::string act = get_or<std::string>(j, "projector_hidden_act", "gelu", where);
  if (act != "gelu") throw Error(where + ": projector_hidden_act '" + act + "' is not supported (only gelu, exact erf)");
  c.projector_type = get_or<std::string>(j, "mm_projector_type", "mlp2x_gelu", where);  // our extension
  c.vision_feature_layer = get_or<int64_t>(j, "vision_feature_layer", -2, where);
  c.vision_feature_select_strategy = get_or<std::string>(j, "vision_feature_select_strategy", "default", where);
  c.image_token_index = get_or<int64_t>(j, "image_token_index", 32000, where);
  c.tokenizer_model_max_length = get_or<int64_t>(j, "tokenizer_model_max_length", 0, where);
  read_image_layout(j, c, get_or<std::string>(j, "model_type", "", where) == "llava_next", where);
}

void read_original_llava(const json& j, LlavaConfig& c, const std::string& where, const std::string& config_dir,
                         const std::string& vision_tower_dir) {
  // original LLaVA: the LLaMA / Mistral keys are at top level.
  c.text = llama_config_from_json(j, where);
  c.projector_type = get_or<std::string>(j, "mm_projector_type", "linear", where);
  c.vision_feature_layer = get_or<int64_t>(j, "mm_vision_select_layer", -2, where);
  c.vision_feature_select_strategy = get_or<std::string>(j, "mm_vision_select_feature", "patch", where);
  c.tokenizer_model_max_length = get_or<int64_t>(j, "tokenizer_model_max_length", 0, where);
  c.mm_vision_tower = get_or<std::string>(j, "mm_vision_tower", "", where);
  c.unfreeze_mm_vision_tower = get_or<bool>(j, "unfreeze_mm_vision_tower", false, where);
  std::string dir = !vision_tower_dir.empty() ? vision_tower_dir : resolve_dir(c.mm_vision_tower, config_dir);
  if (!vision_tower_dir.empty() || (!dir.empty() && !j.contains("vision_config"))) {
    if (!fs::exists(fs::path(dir) / "config.json"))
      throw Error(where + ": vision tower directory '" + dir + "' has no config.json");
    c.vision = ClipVisionConfig::from_json_file((fs::path(dir) / "config.json").string());
  } else if (j.contains("vision_config") && j["vision_config"].is_object()) {
    c.vision = clip_vision_config_from_json(j["vision_config"], where + " (vision_config)");
  } else {
    throw Error(where + ": no vision tower config: no embedded vision_config and mm_vision_tower '" +
                c.mm_vision_tower + "' is not a local directory (pass --vision_tower DIR)");
  }
  int64_t mm_hidden = get_or<int64_t>(j, "mm_hidden_size", c.vision.hidden_size, where);
  if (mm_hidden != c.vision.hidden_size)
    throw Error(where + ": mm_hidden_size " + std::to_string(mm_hidden) + " != vision tower hidden_size " +
                std::to_string(c.vision.hidden_size));
  read_image_layout(j, c, /*llava_next=*/false, where);
}

}  // namespace

std::string resolve_vision_tower_dir(const std::string& mm_vision_tower, const std::string& config_dir) {
  return resolve_dir(mm_vision_tower, fs::path(config_dir));
}

LlavaConfig llava_config_from_json(const json& j, const std::string& where, const std::string& config_dir,
                                   const std::string& vision_tower_dir) {
  LlavaConfig c;
  if (is_original_llava(j)) read_original_llava(j, c, where, config_dir, vision_tower_dir);
  else read_hf_llava(j, c, where);
  c.validate(where);
  return c;
}

LlavaConfig LlavaConfig::from_json_file(const std::string& path, const std::string& vision_tower_dir) {
  json j = read_json_file(path);
  std::string type = j.value("model_type", "");
  if (type != "llava" && type != "llava_next" && type != "llava_llama" && type != "llava_mistral")
    throw Error(path + ": model_type '" + type +
                "' is not a LLaVA model (llava, llava_next, llava_llama or llava_mistral)");
  return llava_config_from_json(j, path, fs::path(path).parent_path().string(), vision_tower_dir);
}

std::string LlavaConfig::to_hf_json_string(const std::string& torch_dtype) const {
  json text_j = llama_config_to_json(text);
  json vision_j = clip_vision_config_to_json(vision);
  const bool next = hf_is_llava_next();
  json j{{"architectures", {next ? "LlavaNextForConditionalGeneration" : "LlavaForConditionalGeneration"}},
         {"model_type", next ? "llava_next" : "llava"},
         {"ignore_index", -100},
         {"image_token_index", image_token_index},
         {"projector_hidden_act", "gelu"},
         {"vision_feature_layer", vision_feature_layer},
         {"vision_feature_select_strategy", keeps_cls() || vision.is_siglip() ? "full" : "default"},
         {"vocab_size", text.vocab_size},
         {"tie_word_embeddings", text.tie_word_embeddings},
         {"torch_dtype", torch_dtype},
         {"transformers_version", next ? "4.39.0" : "4.37.2"},
         {"text_config", text_j},
         {"vision_config", vision_j}};
  j["pad_token_id"] = text.pad_token_id >= 0 ? json(text.pad_token_id) : json(nullptr);
  if (projector_type != "mlp2x_gelu") j["mm_projector_type"] = projector_type;  // not representable in stock HF
  if (tokenizer_model_max_length > 0) j["tokenizer_model_max_length"] = tokenizer_model_max_length;
  if (next) {
    j["image_grid_pinpoints"] = pinpoints_to_json(image_grid_pinpoints, /*height_first=*/true);  // HF's (h, w)
    j["use_image_newline_parameter"] = has_image_newline();
    // our extensions where the model is not stock LlavaNext (anyres + spatial_unpad)
    if (mm_patch_merge_type != "spatial_unpad") j["mm_patch_merge_type"] = mm_patch_merge_type;
    if (!anyres()) j["image_aspect_ratio"] = image_aspect_ratio.empty() ? "square" : image_aspect_ratio;
  } else if (!image_aspect_ratio.empty()) {
    j["image_aspect_ratio"] = image_aspect_ratio;
  }
  return j.dump(2) + "\n";
}

std::string LlavaConfig::to_original_json_string(const std::string& torch_dtype) const {
  if (text.is_qwen2())
    throw Error("the original LLaVA layout (llava_llama) holds LLaMA language models only; save a Qwen2 model in "
                "the HF layout");
  json j = llama_config_to_json(text);
  j["architectures"] = {text.is_mistral() ? "LlavaMistralForCausalLM" : "LlavaLlamaForCausalLM"};
  j["model_type"] = text.is_mistral() ? "llava_mistral" : "llava_llama";
  j["torch_dtype"] = torch_dtype;
  j["mm_vision_tower"] = mm_vision_tower;
  j["mm_hidden_size"] = vision.hidden_size;
  j["mm_projector_type"] = projector_type;
  j["mm_vision_select_layer"] = vision_feature_layer;
  j["mm_vision_select_feature"] = keeps_cls() ? "cls_patch" : "patch";
  j["mm_patch_merge_type"] = mm_patch_merge_type;
  j["mm_use_im_start_end"] = false;
  j["mm_use_im_patch_token"] = false;
  j["use_mm_proj"] = true;
  j["tokenizer_padding_side"] = "right";
  if (!image_aspect_ratio.empty()) j["image_aspect_ratio"] = image_aspect_ratio;
  if (!image_grid_pinpoints.empty()) j["image_grid_pinpoints"] = pinpoints_to_json(image_grid_pinpoints, false);
  if (unfreeze_mm_vision_tower) j["unfreeze_mm_vision_tower"] = true;
  if (tokenizer_model_max_length > 0) j["tokenizer_model_max_length"] = tokenizer_model_max_length;
  j["vision_config"] = clip_vision_config_to_json(vision);  // our extension: the tower travels with the model
  j["transformers_version"] = "4.37.2";
  return j.dump(2) + "\n";
}

std::string detect_model_dir_kind(const std::string& dir) {
  fs::path cfg = fs::path(dir) / "config.json";
  if (!fs::exists(cfg)) throw Error(dir + ": not a model directory (no config.json)");
  json j = read_json_file(cfg.string());
  std::string type = j.value("model_type", "");
  if (type == "llava" || type == "llava_next" || type == "llava_llama" || type == "llava_mistral")
    return is_original_llava(j) ? "llava_llama" : "llava";
  if (type == "llama" || type == "mistral" || type == "qwen2") return "llama";
  if (type == "clip" || type == "clip_vision_model" || is_siglip_type(type)) return "clip";
  if (type == "llava_qwen")
    throw Error(cfg.string() + ": model_type 'llava_qwen' (LLaVA-NeXT's own checkpoint layout) is not supported; "
                "use its transformers conversion (model_type llava, e.g. llava-hf/llava-interleave-qwen-7b-hf)");
  throw Error(cfg.string() + ": unsupported model_type '" + type +
              "' (llava, llava_next, llava_llama, llava_mistral, llama, mistral, qwen2, clip, siglip)");
}

namespace {

LlavaConfig resolve_config(const std::string& model_dir, const ConfigOverrides& o, std::vector<std::string>* notes,
                           std::string* kind_out) {
  const std::string kind = detect_model_dir_kind(model_dir);
  if (kind_out) *kind_out = kind;
  const std::string config_path = (fs::path(model_dir) / "config.json").string();
  if (kind == "clip")
    throw Error(model_dir + ": is a vision tower directory; give it as --vision_tower next to an LLM or LLaVA model "
                "directory");
  auto keeps_cls = [](const std::string& s) { return s == "full" || s == "cls_patch"; };
  LlavaConfig c;
  if (kind == "llama") {
    if (o.vision_tower.empty())
      throw Error(model_dir + ": is a language-model directory; a vision tower directory (--vision_tower) is needed");
    LlamaConfig text = LlamaConfig::from_json_file(config_path);
    ClipVisionConfig vision = ClipVisionConfig::from_json_file((fs::path(o.vision_tower) / "config.json").string());
    c = LlavaConfig::from_parts(text, vision, o.mm_projector_type.empty() ? "linear" : o.mm_projector_type,
                                o.mm_vision_select_layer.value_or(-2),
                                o.mm_vision_select_feature.empty() ? "patch" : o.mm_vision_select_feature);
    c.mm_vision_tower = o.vision_tower;
    c.validate(model_dir);
    return c;
  }
  c = LlavaConfig::from_json_file(config_path, kind == "llava_llama" ? o.vision_tower : "");
  if (!o.mm_projector_type.empty() && o.mm_projector_type != c.projector_type)
    throw Error(model_dir + ": the model's projector is '" + c.projector_type + "' but mm_projector_type '" +
                o.mm_projector_type + "' was asked for");
  if (o.mm_vision_select_layer && *o.mm_vision_select_layer != c.vision_feature_layer) {
    if (notes)
      notes->push_back("vision feature layer " + std::to_string(*o.mm_vision_select_layer) + " (config says " +
                       std::to_string(c.vision_feature_layer) + ")");
    c.vision_feature_layer = *o.mm_vision_select_layer;
  }
  // (a SigLIP tower has no CLS: every selection keeps all its patches)
  if (!o.mm_vision_select_feature.empty() && c.vision.has_cls_token() &&
      keeps_cls(o.mm_vision_select_feature) != c.keeps_cls()) {
    if (notes)
      notes->push_back("vision feature selection '" + o.mm_vision_select_feature + "' (config says '" +
                       c.vision_feature_select_strategy + "')");
    c.vision_feature_select_strategy = o.mm_vision_select_feature;
  }
  c.validate(model_dir);
  return c;
}

}  // namespace

LlavaConfig resolve_llava_config(const std::string& model_dir, const ConfigOverrides& o,
                                 std::vector<std::string>* notes, std::string* kind_out) {
  try {
    return resolve_config(model_dir, o, notes, kind_out);
  } catch (const json::exception& e) {  // a key of the wrong type that a reader did not check itself
    throw Error(model_dir + "/config.json: " + e.what());
  }
}

}  // namespace llava
