#pragma once
// Typed model configurations read from (and written to) HF-style config.json files:
//   clip_vision_model / clip        -> ClipVisionConfig (tower kClip)
//   siglip_vision_model / siglip    -> ClipVisionConfig (tower kSiglip: SiglipVisionConfig's keys)
//   llama / mistral / qwen2         -> LlamaConfig (model_type says which decoder block; Mistral: the same
//                                      block, its own defaults, sliding_window; Qwen2: q/k/v biases)
//   llava (HF LlavaConfig layout)   -> LlavaConfig (text_config + vision_config)
//   llava_next (HF LlavaNextConfig) -> LlavaConfig (+ anyres: image_grid_pinpoints, read as (height, width))
//   llava_llama / llava_mistral (original LLaVA, 1.5 and 1.6) -> LlavaConfig (LLM keys at top level + mm_* keys)
// Defaults of missing keys are transformers 4.37.2's (CLIPVisionConfig, SiglipVisionConfig, LlamaConfig,
// MistralConfig, Qwen2Config, LlavaConfig; LlavaNextConfig from 4.39). No torch here.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "llava/anyres.h"

namespace llava {

// Which vision transformer a config describes. Both have the same size fields; they differ in the module:
// CLIP has a CLS token, a pre-LayerNorm and a bias-free patch embedding; SigLIP has none of the three, a
// patch-embedding bias and an (unused by LLaVA) attention-pooling head.
enum class VisionTowerType { kClip, kSiglip };

// The vision tower's config: CLIPVisionConfig, or SiglipVisionConfig when tower == kSiglip (same fields but
// projection_dim, which SigLIP has not; its own defaults, see siglip_defaults()).
struct ClipVisionConfig {
  VisionTowerType tower = VisionTowerType::kClip;
  int64_t hidden_size = 768;
  int64_t intermediate_size = 3072;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t num_channels = 3;
  int64_t image_size = 224;
  int64_t patch_size = 32;
  int64_t projection_dim = 512;  // unused by the vision tower; kept so configs round-trip
  double layer_norm_eps = 1e-5;
  double initializer_range = 0.02;
  std::string hidden_act = "quick_gelu";  // quick_gelu | gelu | gelu_pytorch_tanh
  // SigLIP only: vision_use_head. transformers <= 4.40 always builds the attention-pooling head (true);
  // llava-hf's SigLIP checkpoints say false and hold no head tensors. LLaVA never uses it.
  bool use_head = true;

  bool is_siglip() const { return tower == VisionTowerType::kSiglip; }
  bool has_cls_token() const { return !is_siglip(); }
  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  int64_t grid_size() const { return image_size / patch_size; }
  int64_t num_patches() const { return grid_size() * grid_size(); }  // without CLS
  int64_t num_positions() const { return num_patches() + (has_cls_token() ? 1 : 0); }  // the tower's tokens
  // CLIP ViT-L/14-336, LlavaConfig's default vision tower.
  static ClipVisionConfig clip_vit_large_336();
  // SiglipVisionConfig's defaults (768 x 12 layers, 224 px, patch 16, gelu_pytorch_tanh, eps 1e-6).
  static ClipVisionConfig siglip_defaults();
  // config.json of a CLIPVisionModel / SiglipVisionModel (model_type clip_vision_model /
  // siglip_vision_model) or a full CLIPModel / SiglipModel (model_type clip / siglip, vision_config nested).
  // Throws llava::Error naming the file.
  static ClipVisionConfig from_json_file(const std::string& path);
  std::string to_json_string() const;  // a clip_vision_model / siglip_vision_model config.json
  void validate(const std::string& where) const;
};

struct RopeScaling {
  std::string type;  // "" (none) | linear | dynamic | llama3
  double factor = 1.0;
  double low_freq_factor = 1.0, high_freq_factor = 4.0;   // llama3
  int64_t original_max_position_embeddings = 8192;         // llama3
};

// A LLaMA-family decoder (LlamaForCausalLM's block). model_type "qwen2" is Qwen2ForCausalLM: the same block
// with biases on q/k/v (never on o_proj), Qwen2Config's defaults, optional tied embeddings.
struct LlamaConfig {
  // "llama", "mistral" (MistralForCausalLM 4.37.2: LLaMA's block without biases or rope scaling, a sliding
  // window) or "qwen2". Missing keys take that model's defaults; written back as the same model_type.
  std::string model_type = "llama";
  int64_t sliding_window = 0;  // mistral: a query sees its last N keys, its own included; 0 = none (null)
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;
  int64_t head_dim_override = 0;  // config "head_dim" when present; 0 = hidden_size / num_attention_heads
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  double initializer_range = 0.02;
  std::string hidden_act = "silu";
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // llama: bias on q, k, v and o (Qwen2 has its fixed rule, below)
  int64_t bos_token_id = 1, eos_token_id = 2;  // -1 = none (Qwen2Config sets neither)
  int64_t pad_token_id = -1;  // -1 = none (embedding without padding_idx)
  // qwen2: Qwen2Config's window keys, kept so configs round-trip (its sliding_window applies only with
  // use_sliding_window, which is refused, so `sliding_window` above stays 0 for Qwen2).
  bool use_sliding_window = false;
  int64_t qwen2_sliding_window = 4096, max_window_layers = 28;

  bool is_qwen2() const { return model_type == "qwen2"; }
  bool qkv_bias() const { return is_qwen2() || attention_bias; }
  bool o_proj_bias() const { return !is_qwen2() && attention_bias; }
  int64_t head_dim() const { return head_dim_override > 0 ? head_dim_override : hidden_size / num_attention_heads; }
  bool is_mistral() const { return model_type == "mistral"; }
  static LlamaConfig mistral_defaults();  // MistralConfig() of transformers 4.37.2 (sliding_window 4096)
  static LlamaConfig qwen2_defaults();    // Qwen2Config() of transformers 4.37.2
  // An LLM directory's config.json (model_type llama, mistral or qwen2).
  static LlamaConfig from_json_file(const std::string& path);
  std::string to_json_string() const;  // its config.json (LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM)
  void validate(const std::string& where) const;
};

struct LlavaConfig {
  ClipVisionConfig vision = ClipVisionConfig::clip_vit_large_336();
  LlamaConfig text;
  // LLaVA's builder names: linear | mlp{N}x_gelu | identity. HF LlavaConfig (projector_hidden_act gelu)
  // is mlp2x_gelu.
  std::string projector_type = "mlp2x_gelu";
  int64_t vision_feature_layer = -2;  // index into hidden_states (0 = embeddings, k = after layer k)
  // HF "default" / LLaVA "patch": drop CLS; HF "full" / LLaVA "cls_patch": keep it. SigLIP has no CLS:
  // "full", "patch" and "cls_patch" all keep every patch (LLaVA-NeXT's SigLIP tower ignores the flag);
  // "default" is refused there (transformers would drop the first real patch).
  std::string vision_feature_select_strategy = "default";
  int64_t image_token_index = 32000;        // HF's in-vocab id (unused: we splice at -200)
  int64_t tokenizer_model_max_length = 0;   // original LLaVA config key; 0 = not given
  std::string mm_vision_tower;              // original LLaVA: where the tower came from (written back)
  // Original LLaVA-1.6 key: the checkpoint's own vision-tower copy wins over mm_vision_tower's weights at load
  // (c121f04 builds the tower eagerly, then the checkpoint overwrites it). Written back as read.
  bool unfreeze_mm_vision_tower = false;
  // LLaVA-1.6 (config.json image_aspect_ratio, image_grid_pinpoints, mm_patch_merge_type): "anyres" means
  // each image reaches the model as [P, 3, S, S] tiles, merged as mm_patch_merge_type says (llava.h).
  std::string image_aspect_ratio;               // "" (not in config.json) | square | pad | anyres
  std::vector<ImageSize> image_grid_pinpoints;  // (width, height), LLaVA's order; HF's llava_next stores (h, w)
  std::string mm_patch_merge_type = "flat";     // flat | spatial | spatial_unpad ("unpad": image_newline exists)

  bool keeps_cls() const;                   // "full" / "cls_patch" on a tower with a CLS token
  int64_t num_image_tokens() const;         // feature rows per image (patches, +1 with a kept CLS)
  int64_t projector_num_linears() const;    // 0 identity, 1 linear, N mlpNx_gelu
  int64_t vision_layers_needed() const;     // encoder layers that must run for vision_feature_layer
  bool anyres() const { return image_aspect_ratio == "anyres"; }
  // LLaVA's rule: the model has an image_newline parameter iff "unpad" is in mm_patch_merge_type.
  bool has_image_newline() const { return mm_patch_merge_type.find("unpad") != std::string::npos; }
  // anyres.h's geometry of this model: tile = vision image size, n = image_size / patch_size, pinpoints,
  // merge type, positions of a flat tile (num_image_tokens). No tile budget (that is the data side's).
  AnyresConfig anyres_config() const;

  // HF llava / llava_next or original llava_llama / llava_mistral config.json. For original LLaVA the vision config comes from an embedded
  // "vision_config" object, else from vision_tower_dir/config.json (or mm_vision_tower when it is a local
  // directory, absolute or relative to the config's folder). Throws llava::Error naming the file.
  static LlavaConfig from_json_file(const std::string& path, const std::string& vision_tower_dir = "");
  // Builds a LLaVA config from an LLM config, a CLIP config and LLaVA's model flags.
  static LlavaConfig from_parts(const LlamaConfig& text, const ClipVisionConfig& vision,
                                const std::string& projector_type, int64_t vision_feature_layer,
                                const std::string& select_feature);
  // model_type llava; llava_next (LlavaNextForConditionalGeneration) for an anyres model or one with image_newline
  std::string to_hf_json_string(const std::string& torch_dtype = "float32") const;
  std::string to_original_json_string(const std::string& torch_dtype = "float32") const;  // llava_llama / llava_mistral
  bool hf_is_llava_next() const { return anyres() || has_image_newline(); }
  void validate(const std::string& where) const;
};

// "linear" -> 1, "mlp3x_gelu" -> 3, "identity" -> 0; anything else throws llava::Error naming `where`.
int64_t parse_projector_type(const std::string& type, const std::string& where);

// What kind of model directory `dir` is, from its config.json: "llava" (HF LlavaForConditionalGeneration or
// LlavaNextForConditionalGeneration), "llava_llama" (original LLaVA: llava_llama, llava_mistral), "llama" (an
// LLM directory: llama, mistral or qwen2), "clip" (a vision tower: CLIPVisionModel/CLIPModel/SiglipVisionModel/
// SiglipModel).
std::string detect_model_dir_kind(const std::string& dir);

// LLaVA's model flags that shape the configuration (empty / unset: the directory's own, or LLaVA's defaults
// for an LLM directory: linear projector, layer -2, patch features).
struct ConfigOverrides {
  std::string vision_tower;                    // CLIP directory (an LLM directory needs one)
  std::string mm_projector_type;               // must agree with a LLaVA directory's
  std::optional<int64_t> mm_vision_select_layer;
  std::string mm_vision_select_feature;        // patch | cls_patch (| default | full)
};

// THE model configuration of a run, as load_llava builds the model and the data pipeline counts image
// positions (one source for image size, patch size, positions per image): an HF LLaVA directory, an
// original-LLaVA directory (tower config embedded, from --vision_tower, or from mm_vision_tower), or an LLM
// directory + --vision_tower; then the overrides. `notes` (optional) get what the overrides changed.
// `kind` (optional) gets detect_model_dir_kind's answer. Throws llava::Error naming the file.
LlavaConfig resolve_llava_config(const std::string& model_dir, const ConfigOverrides& overrides,
                                 std::vector<std::string>* notes = nullptr, std::string* kind = nullptr);

}  // namespace llava
