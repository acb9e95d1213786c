#pragma once
// LLaVA: CLIP vision tower -> projector -> features spliced at each -200 of input_ids -> LLaMA -> shifted CE.
// Module names are HF LlavaForConditionalGeneration's (v4.37): "vision_tower.vision_model.*",
// "multi_modal_projector.linear_1.*", "language_model.model.*", "language_model.lm_head.weight".
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "llava/model/clip.h"
#include "llava/model/config.h"
#include "llava/model/llama.h"
#include "llava/model/projector.h"

namespace llava {

// prepare_inputs_labels_for_multimodal's result: what the language model sees.
struct MergedInputs {
  torch::Tensor inputs_embeds;   // [B, L, D] (zeros at padding)
  torch::Tensor labels;          // [B, L] int64 (-100 at image rows, padding and anything unsupervised)
  torch::Tensor attention_mask;  // [B, L] bool (true = real position)
  std::vector<int64_t> lengths;  // real length of each row after the merge and truncation
};

struct LlavaOutput {
  torch::Tensor logits;               // [B, L, V] fp32; undefined when forward(..., return_logits=false)
  torch::Tensor shift_labels;         // [B, L-1] int64: labels[:, 1:] (targets of logits[:, :-1])
  torch::Tensor loss_sum;             // scalar fp32: summed CE over supervised tokens (differentiable)
  int64_t num_target_tokens = 0;      // number of supervised tokens (labels != -100 after the shift)
  torch::Tensor per_sample_loss_sum;  // [B] fp32, detached
  torch::Tensor per_sample_targets;   // [B] int64
  torch::Tensor per_sample_correct;   // [B] int64: argmax == label among the supervised tokens
  std::vector<int64_t> lengths;       // merged length of each sample (after truncation)
  // Mean CE over the batch's supervised tokens (0, still differentiable, when there are none).
  torch::Tensor loss() const;
};

class LlavaForCausalLMImpl : public torch::nn::Module {
 public:
  explicit LlavaForCausalLMImpl(const LlavaConfig& config);
  const LlavaConfig& config() const { return config_; }

  // [N,3,H,W] -> selected CLIP hidden state [N, P, D_vision] (CLS dropped for patch/default).
  // Runs under no-grad when no vision-tower parameter requires grad.
  torch::Tensor vision_features(const torch::Tensor& pixel_values);
  // [N,3,H,W] -> projected features [N, P, D_text] (in the projector's dtype).
  torch::Tensor image_features(const torch::Tensor& pixel_values);

  // LLaVA's prepare_inputs_labels_for_multimodal for right-padded rows:
  //  input_ids [B,T] int64 with -200 per image; labels [B,T] (-100 = ignored; undefined = all -100);
  //  attention_mask [B,T] (nonzero = real token; undefined = all real); pixel_values [N,3,H,W] with the
  //  images of the batch in sample-then-marker order (undefined or N=0 for a text-only batch);
  //  image_counts: per-sample image count, checked against the markers (empty = not checked);
  //  max_length: truncate every merged row to this many positions (<= 0: no truncation).
  // The k-th -200 of the batch (row-major) gets image k's P feature rows, labelled -100. Throws llava::Error
  // when marker and image counts disagree or a token id is outside the vocabulary.
  MergedInputs merge_inputs(const torch::Tensor& input_ids, const torch::Tensor& labels,
                            const torch::Tensor& attention_mask, const torch::Tensor& pixel_values,
                            const std::vector<int64_t>& image_counts, int64_t max_length);

  // Full forward + shifted cross entropy. return_logits=false skips the [B,L,V] logits and runs lm_head
  // only on the supervised positions (same loss, a fraction of the memory; for training).
  LlavaOutput forward(const torch::Tensor& input_ids, const torch::Tensor& labels,
                      const torch::Tensor& attention_mask, const torch::Tensor& pixel_values,
                      const std::vector<int64_t>& image_counts, int64_t max_length, bool return_logits = true);

  void set_gradient_checkpointing(bool on) { language_model->model->set_gradient_checkpointing(on); }
  // false: the written-out attention even where LibTorch has a fused kernel (tests compare both).
  void set_fused_attention(bool on);
  bool vision_tower_trainable() const;

  ClipVisionModel vision_tower{nullptr};
  Projector multi_modal_projector{nullptr};
  LlamaForCausalLM language_model{nullptr};

 private:
  LlavaConfig config_;
};
TORCH_MODULE(LlavaForCausalLM);

// HF Trainer's weight-decay rule (get_decay_parameter_names with ALL_LAYERNORM_LAYERS incl. LlamaRMSNorm):
// biases and LayerNorm/RMSNorm weights get no weight decay; everything else does.
bool is_no_decay_parameter(const std::string& name);

}  // namespace llava
