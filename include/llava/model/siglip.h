#pragma once
// SigLIP vision transformer, as transformers' SiglipVisionModel (v4.37.2 / v4.38.0). Submodules carry the
// checkpoint's names ("vision_model.embeddings.patch_embedding.weight", ...). Against CLIP (clip.h): no CLS
// token, no pre-LayerNorm, a patch embedding with bias, learned position embeddings for the patches only,
// gelu_pytorch_tanh in the MLP; the encoder layers are CLIP's (same structure and names). post_layernorm and
// the attention-pooling head are loaded and saved but never run: LLaVA takes hidden_states, before both.
#include <torch/torch.h>

#include "llava/model/clip.h"
#include "llava/model/config.h"
#include "llava/model/vision_tower.h"

namespace llava {

class SiglipVisionEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit SiglipVisionEmbeddingsImpl(const ClipVisionConfig& config);
  // [N,C,H,W] -> patches (row-major over the grid) + position embeddings, [N, P, D]
  torch::Tensor forward(const torch::Tensor& pixel_values);

  torch::nn::Conv2d patch_embedding{nullptr};        // D x C x p x p, with bias
  torch::nn::Embedding position_embedding{nullptr};  // [P, D]

 private:
  ClipVisionConfig config_;
};
TORCH_MODULE(SiglipVisionEmbeddings);

// nn.MultiheadAttention's parameters under its names (in_proj_weight [3D, D], in_proj_bias [3D], out_proj).
class SiglipPoolingAttentionImpl : public torch::nn::Module {
 public:
  explicit SiglipPoolingAttentionImpl(int64_t hidden);
  torch::Tensor in_proj_weight, in_proj_bias;
  torch::nn::Linear out_proj{nullptr};
};
TORCH_MODULE(SiglipPoolingAttention);

// SiglipMultiheadAttentionPoolingHead: parameters only (LLaVA never pools).
class SiglipPoolingHeadImpl : public torch::nn::Module {
 public:
  explicit SiglipPoolingHeadImpl(const ClipVisionConfig& config);
  torch::Tensor probe;  // [1, 1, D]
  SiglipPoolingAttention attention{nullptr};
  torch::nn::LayerNorm layernorm{nullptr};
  ClipMlp mlp{nullptr};
};
TORCH_MODULE(SiglipPoolingHead);

class SiglipVisionTransformerImpl : public torch::nn::Module {
 public:
  explicit SiglipVisionTransformerImpl(const ClipVisionConfig& config);
  // hidden_states[layer]: 0 = embeddings, k = after encoder layer k, negative from the end; [N, P, D]
  torch::Tensor hidden_state(const torch::Tensor& pixel_values, int64_t layer);

  SiglipVisionEmbeddings embeddings{nullptr};
  ClipEncoder encoder{nullptr};
  torch::nn::LayerNorm post_layernorm{nullptr};  // loaded and saved, unused by LLaVA features
  SiglipPoolingHead head{nullptr};               // only when config.use_head; unused

 private:
  ClipVisionConfig config_;
};
TORCH_MODULE(SiglipVisionTransformer);

class SiglipVisionModelImpl : public VisionTowerImpl {
 public:
  explicit SiglipVisionModelImpl(const ClipVisionConfig& config);  // config.tower must be kSiglip
  const ClipVisionConfig& config() const override { return config_; }
  torch::Tensor hidden_state(const torch::Tensor& pixel_values, int64_t layer) override {
    return vision_model->hidden_state(pixel_values, layer);
  }
  void set_fused_attention(bool on) override;

  SiglipVisionTransformer vision_model{nullptr};

 private:
  ClipVisionConfig config_;
};
TORCH_MODULE(SiglipVisionModel);

}  // namespace llava
