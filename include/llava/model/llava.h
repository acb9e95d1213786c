#pragma once
// LLaVA: vision tower (CLIP or SigLIP) -> projector -> features spliced at each -200 of input_ids -> LLaMA /
// Mistral / Qwen2 -> shifted CE. LLaVA-1.6 (anyres): each image is P tiles; their features are merged per image
// (flat | spatial | spatial_unpad with image_newline) before the splice, as LLaVA c121f04's
// prepare_inputs_labels_for_multimodal. Module names are HF LlavaForConditionalGeneration's (v4.37):
// "vision_tower.vision_model.*", "multi_modal_projector.linear_1.*", "language_model.model.*",
// "language_model.lm_head.weight" (absent when the LLM ties its output layer to embed_tokens), and
// LlavaNextForConditionalGeneration's "image_newline".
#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "llava/anyres.h"
#include "llava/model/clip.h"
#include "llava/model/config.h"
#include "llava/model/llama.h"
#include "llava/model/projector.h"
#include "llava/model/vision_tower.h"

namespace llava {

// One micro-batch as the model takes it (design.md §1). Token tensors live on the CPU (the merge's
// bookkeeping reads them there, without a device synchronisation); pixels may be on the model's device.
struct LlavaInputs {
  torch::Tensor input_ids;            // [B,T] int64, right-padded; -200 marks an image
  torch::Tensor labels;               // [B,T] int64; -100 = not supervised; undefined = nothing supervised
  torch::Tensor attention_mask;       // [B,T] bool/int (nonzero = real token); undefined = every token real
  torch::Tensor pixel_values;         // [N,3,H,W] float32, the batch's images in sample-then-marker order
  std::vector<int64_t> image_counts;  // per sample, checked against its markers (empty = not checked)
  // anyres only (empty otherwise), one entry per image in marker order. pixel_values is then [sum P, 3, S, S]:
  // each image's P tiles, base tile first. A text-only sample has no entry: the reference's zero dummy image
  // takes a slot only to be used as a 0-row slice (its features never reach the sequence), and the optimizer
  // updates every trainable tensor each step with or without a gradient path through it.
  std::vector<int64_t> image_tiles;    // P per image (1 = base tile only)
  std::vector<ImageSize> image_sizes;  // the decoded image's (width, height), LLaVA's order (image_sizes_from_hf)
  bool anyres() const { return !image_tiles.empty(); }
};

// HF LlavaNext's image_sizes ([N, 2] integer, (height, width) per image) in LLaVA's (width, height) order.
std::vector<ImageSize> image_sizes_from_hf(const torch::Tensor& image_sizes);

// prepare_inputs_labels_for_multimodal's result: what the language model sees. Rows are left-aligned
// (right padding), so no real position ever sees a pad key under the causal mask.
struct MergedInputs {
  torch::Tensor inputs_embeds;   // [B, L, D] (zeros at padding), on the model's device
  torch::Tensor labels;          // [B, L] int64 on the CPU (-100 at image rows, padding and unsupervised tokens)
  std::vector<int64_t> lengths;  // real length of each row after the merge
};

struct LlavaOutput {
  torch::Tensor logits;               // [B, L, V] fp32; undefined unless forward(..., return_logits=true)
  torch::Tensor shift_labels;         // [B, L-1] int64 (CPU): labels[:, 1:] (targets of logits[:, :-1])
  torch::Tensor loss_sum;             // scalar fp32: summed CE over supervised tokens (differentiable)
  int64_t num_target_tokens = 0;      // number of supervised tokens (labels != -100 after the shift)
  torch::Tensor per_sample_loss_sum;  // [B] fp32, detached
  torch::Tensor per_sample_targets;   // [B] int64 (CPU)
  torch::Tensor per_sample_correct;   // [B] int64: argmax == label among the supervised tokens
  std::vector<int64_t> lengths;       // merged length of each sample
  // Mean CE over the batch's supervised tokens (0, still differentiable, when there are none).
  torch::Tensor loss() const;
};

class LlavaForCausalLMImpl : public torch::nn::Module {
 public:
  explicit LlavaForCausalLMImpl(const LlavaConfig& config);
  const LlavaConfig& config() const { return config_; }

  // [N,3,H,W] -> selected vision hidden state [N, P, D_vision] (CLIP: CLS dropped for patch/default).
  // Runs under no-grad when no vision-tower parameter requires grad.
  torch::Tensor vision_features(const torch::Tensor& pixel_values);
  // [N,3,H,W] -> projected features [N, P, D_text] (in the projector's dtype).
  torch::Tensor image_features(const torch::Tensor& pixel_values);

  // The data side's image settings become the model's (LLaVA's train() writes them into model.config):
  // anyres = the pipeline's tiling (nullopt: square / pad, one tile per image; `aspect` names which). An unpad
  // merge on a model without image_newline gets one, N(0, 1/hidden) from `seed` (LLaVA's fresh init). Throws
  // llava::Error when the tiling does not fit the vision tower. Returns notes for the log.
  std::vector<std::string> configure_images(const std::optional<AnyresConfig>& anyres, const std::string& aspect,
                                            uint64_t seed);

  // LLaVA's prepare_inputs_labels_for_multimodal for right-padded rows: the k-th -200 of the batch
  // (row-major) gets image k's feature rows, labelled -100: its P patch rows, or under anyres the merged block
  // of its tiles (mm_patch_merge_type; spatial_unpad: base tile, then each kept row of the unpadded feature map
  // followed by image_newline; a 1-tile image: base + image_newline). All tiles of the batch go through the
  // vision tower in one call. Sequence lengths were checked against
  // --model_max_length when the examples were built (the one place that limit is applied). Throws
  // llava::Error when marker and image counts disagree or a token id is outside the vocabulary.
  MergedInputs merge_inputs(const LlavaInputs& inputs);

  // Forward + shifted cross entropy. By default the output layer runs only on the supervised positions, in
  // chunks (model/lm_loss.h): the same loss without [B,L,V] logits. return_logits=true also returns them.
  LlavaOutput forward(const LlavaInputs& inputs, bool return_logits = false);

  void set_gradient_checkpointing(bool on) { language_model->model->set_gradient_checkpointing(on); }
  // false: the written-out attention even where LibTorch has a fused kernel (tests compare both).
  void set_fused_attention(bool on);
  bool vision_tower_trainable() const;

  std::shared_ptr<VisionTowerImpl> vision_tower;  // ClipVisionModelImpl or SiglipVisionModelImpl
  Projector multi_modal_projector{nullptr};
  LlamaForCausalLM language_model{nullptr};
  torch::Tensor image_newline;  // [D_text], "image_newline"; undefined unless "unpad" in mm_patch_merge_type

 private:
  // Source rows, relative to the image-feature block, of every image's merged block (see merge_inputs).
  struct ImageRows {
    std::vector<int64_t> rows;     // concatenated; row == feature_rows is image_newline
    std::vector<int64_t> offsets;  // image k's rows are [offsets[k], offsets[k + 1])
    int64_t feature_rows = 0;      // rows of the projected features (tiles x tokens)
    bool uses_newline = false;
  };
  ImageRows image_rows(const LlavaInputs& inputs) const;
  void add_image_newline(uint64_t seed);

  LlavaConfig config_;
};
TORCH_MODULE(LlavaForCausalLM);

}  // namespace llava
