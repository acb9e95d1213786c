#pragma once
// Model directories in and out (local paths only; nothing is downloaded).
//
// Reading (load_llava) accepts:
//   1. an HF LLaVA directory (config.json model_type "llava" with text_config (llama, mistral or qwen2) and
//      vision_config (clip_vision_model or siglip_vision_model); tensors vision_tower.vision_model.*,
//      multi_modal_projector.linear_{1,2}.*, language_model.model.*, language_model.lm_head.weight (none when
//      tie_word_embeddings: the output layer is embed_tokens, one tensor, saved once); transformers >= 4.52's
//      model.language_model.* layout is accepted too), or LlavaNextForConditionalGeneration's (model_type
//      "llava_next": the same names + image_newline; image_grid_pinpoints read as HF's (height, width) and
//      held as LLaVA's (width, height));
//   2. an original-LLaVA directory (model_type "llava_llama" / "llava_mistral", or "llava" with mm_* keys;
//      tensors model.*, lm_head.weight, model.mm_projector.{0,2}.*, LLaVA-1.6's model.image_newline, optionally
//      model.vision_tower.vision_tower.vision_model.*; the tower config is the embedded "vision_config" or comes
//      from the mm_vision_tower (relative to the model dir, or absolute) / --vision_tower dir, and the tower
//      weights from that directory when the checkpoint does not hold them, or when --vision_tower is given,
//      except under unfreeze_mm_vision_tower (LLaVA-1.6), where the checkpoint's copy wins as in c121f04);
//   3. an LLM directory (LLaMA, Mistral or Qwen2 HF format) + options.vision_tower (CLIPVisionModel, CLIPModel,
//      SiglipVisionModel or SiglipModel directory)
//      + optional options.pretrain_mm_mlp_adapter (mm_projector.safetensors/.bin); without it the projector
//      is freshly initialised (PyTorch's default Linear init, seeded) and a note says so.
// Weights: model.safetensors / sharded with model.safetensors.index.json, or pytorch_model.bin[.index.json].
// Every missing or unexpected tensor, shape mismatch or wrong dtype is a llava::Error naming file and tensor.
// The module is built without its default random init (every parameter is then loaded, or initialised
// explicitly as the fresh projector is), so loading draws no random numbers except that projector's.
#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "llava/model/config.h"
#include "llava/model/llava.h"

namespace llava {

struct LoadOptions {
  std::string vision_tower;             // CLIP directory: required with an LLM directory; overrides mm_vision_tower
  std::string pretrain_mm_mlp_adapter;  // projector weights file, loaded over whatever the directory had
  // Used when building LLaVA from an LLM directory (LLaVA's flags); for LLaVA directories a given value must
  // agree with the config (projector type) or overrides it (select layer / feature).
  std::string mm_projector_type;        // "" = "linear" for an LLM dir (LLaVA's default), config's otherwise
  std::optional<int64_t> mm_vision_select_layer;     // unset: config's, -2 for an LLM dir
  std::string mm_vision_select_feature;              // "" : config's, "patch" for an LLM dir
  torch::Dtype dtype = torch::kFloat32;               // parameter dtype after loading
  torch::Device device = torch::kCPU;
  uint64_t seed = 0;                                  // fresh projector init
  // true: safetensors tensors already in the parameter dtype become the parameters' storage, a private
  // copy-on-write mapping of the file: nothing is copied at load, frozen weights stay shared with the page
  // cache, and each page is copied on its first write instead (one fault per 4 KiB page: on the 2-core
  // benchmark VM writing a mapped 1 GiB model once took 3.2 s against 0.4 s for the copying load, so it
  // pays off only when most weights stay frozen). The file must then not be truncated or rewritten in place
  // while the model lives (replacing it by rename, as our writers do, is fine).
  // false: every tensor is copied into memory of its own (in parallel on the intra-op threads).
  bool map_weights = false;
  // --attn_implementation: true (sdpa, flash_attention_2) the fused SDPA kernel where LibTorch has one;
  // false (eager) the attention written out (softmax(q k^T) v as separate ops).
  bool fused_attention = true;
};

struct LoadedLlava {
  LlavaForCausalLM model{nullptr};
  LlavaConfig config;
  std::string format;               // "llava" | "llava_next" | "llava_llama" | "llm+clip"
  std::vector<std::string> notes;   // human-readable remarks (fresh projector, overrides, ...) for the log
};

LoadedLlava load_llava(const std::string& model_dir, const LoadOptions& options = {});
// Loads projector weights (keys "model.mm_projector.0.weight", "mm_projector.0.weight", "0.weight", or HF
// "multi_modal_projector.linear_1.weight") from a .safetensors or .bin file into model's projector.
void load_projector(LlavaForCausalLMImpl& model, const std::string& path);

struct SaveOptions {
  uint64_t max_shard_bytes = 5ull << 30;       // larger models: model-0000i-of-0000n.safetensors + index
  std::string tokenizer_source_dir;            // copies tokenizer.model / tokenizer.json (+ vocab.json,
                                               // merges.txt), tokenizer_config.json, special_tokens_map.json,
                                               // added_tokens.json, preprocessor_config.json,
                                               // chat_template.json when present there
  std::optional<torch::Dtype> dtype;           // convert floating tensors (default: as stored)
  bool atomic = true;  // write DIR.tmp then rename over DIR; false: write straight into DIR (for a caller that
                       // assembles a larger directory and renames it itself)
};

// HF LLaVA directory (config.json model_type llava, text_config, vision_config + safetensors + tokenizer files);
// llava_next (LlavaNextForConditionalGeneration, image_newline) for an anyres model or one with image_newline.
void save_hf_llava(const LlavaForCausalLMImpl& model, const std::string& dir, const SaveOptions& options = {});
// Original LLaVA naming (model_type llava_llama / llava_mistral, model.image_newline; the vision tower and its
// config are included).
void save_original_llava(const LlavaForCausalLMImpl& model, const std::string& dir, const SaveOptions& options = {});
// LLM + CLIP + projector split: DIR/llm (LLaMA dir + tokenizer files), DIR/clip (CLIPVisionModel dir +
// preprocessor_config.json), DIR/mm_projector.safetensors. (No image_newline: LLaVA's projector file has none.)
void save_split(const LlavaForCausalLMImpl& model, const std::string& dir, const SaveOptions& options = {});
// mm_projector.safetensors with original LLaVA names (model.mm_projector.0.weight, ...), written atomically.
void save_projector(const LlavaForCausalLMImpl& model, const std::string& path);

// Checkpoint names of the model's parameters in a format: "llava" (HF), "llava_llama" (original).
std::vector<std::pair<std::string, std::string>> checkpoint_names(const LlavaForCausalLMImpl& model,
                                                                   const std::string& format);

// Random init like HF's _init_weights: Linear/Conv/Embedding/CLIP embeddings ~ N(0, initializer_range)
// (vision_config's for the tower, text_config's otherwise), biases 0, norms 1 (LayerNorm bias 0), the
// embedding's padding row 0. Deterministic for a seed (CPU generator).
LlavaForCausalLM init_random_model(const LlavaConfig& config, uint64_t seed);
// init_random_model + save_hf_llava: what `llava-train init-model` writes.
void write_random_model_dir(const LlavaConfig& config, const std::string& dir, uint64_t seed,
                            const SaveOptions& options = {});

}  // namespace llava
