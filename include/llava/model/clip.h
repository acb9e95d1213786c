#pragma once
// CLIP vision transformer, as transformers' CLIPVisionModel (v4.37.2). Submodules carry the checkpoint's
// names, so named_parameters() of ClipVisionModel are exactly "vision_model.embeddings.class_embedding", ...
#include <torch/torch.h>

#include <vector>

#include "llava/model/config.h"
#include "llava/model/vision_tower.h"

namespace llava {

class ClipVisionEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit ClipVisionEmbeddingsImpl(const ClipVisionConfig& config);
  torch::Tensor forward(const torch::Tensor& pixel_values);  // [N,C,H,W] -> [N, 1+P, D] (CLS first)

  torch::Tensor class_embedding;                          // [D]
  torch::nn::Conv2d patch_embedding{nullptr};             // D x C x p x p, no bias
  torch::nn::Embedding position_embedding{nullptr};       // [1+P, D]

 private:
  ClipVisionConfig config_;
};
TORCH_MODULE(ClipVisionEmbeddings);

class ClipAttentionImpl : public torch::nn::Module {
 public:
  explicit ClipAttentionImpl(const ClipVisionConfig& config);
  torch::Tensor forward(const torch::Tensor& x);  // [N,T,D], no mask

  torch::nn::Linear k_proj{nullptr}, v_proj{nullptr}, q_proj{nullptr}, out_proj{nullptr};
  bool use_fused_attention = true;

 private:
  int64_t heads_, head_dim_;
};
TORCH_MODULE(ClipAttention);

// fc2(act(fc1(x))); act = hidden_act (quick_gelu, gelu, or SigLIP's gelu_pytorch_tanh).
class ClipMlpImpl : public torch::nn::Module {
 public:
  explicit ClipMlpImpl(const ClipVisionConfig& config);
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Linear fc1{nullptr}, fc2{nullptr};

 private:
  bool quick_gelu_, tanh_gelu_;
};
TORCH_MODULE(ClipMlp);

class ClipEncoderLayerImpl : public torch::nn::Module {
 public:
  explicit ClipEncoderLayerImpl(const ClipVisionConfig& config);
  torch::Tensor forward(const torch::Tensor& x);  // pre-LN: x += attn(ln1(x)); x += mlp(ln2(x))

  ClipAttention self_attn{nullptr};
  torch::nn::LayerNorm layer_norm1{nullptr};
  ClipMlp mlp{nullptr};
  torch::nn::LayerNorm layer_norm2{nullptr};
};
TORCH_MODULE(ClipEncoderLayer);

// The encoder stack; SigLIP's has the same layers and names (siglip.h reuses it).
class ClipEncoderImpl : public torch::nn::Module {
 public:
  explicit ClipEncoderImpl(const ClipVisionConfig& config);
  std::vector<ClipEncoderLayer> layers;  // registered as "layers.0", "layers.1", ...
};
TORCH_MODULE(ClipEncoder);

class ClipVisionTransformerImpl : public torch::nn::Module {
 public:
  explicit ClipVisionTransformerImpl(const ClipVisionConfig& config);
  // hidden_states[layer] of HF's output_hidden_states: 0 = pre_layrnorm(embeddings), k = after encoder layer k
  // (1-based), negative counts from the end (-1 = last layer). Only the layers needed are run.
  torch::Tensor hidden_state(const torch::Tensor& pixel_values, int64_t layer);

  ClipVisionEmbeddings embeddings{nullptr};
  torch::nn::LayerNorm pre_layrnorm{nullptr};  // sic: HF's name
  ClipEncoder encoder{nullptr};
  torch::nn::LayerNorm post_layernorm{nullptr};  // loaded and saved, unused by LLaVA features

 private:
  ClipVisionConfig config_;
};
TORCH_MODULE(ClipVisionTransformer);

class ClipVisionModelImpl : public VisionTowerImpl {
 public:
  explicit ClipVisionModelImpl(const ClipVisionConfig& config);
  const ClipVisionConfig& config() const override { return config_; }
  // [N,C,H,W] (any float dtype; cast to the tower's dtype) -> hidden state `layer`, [N, 1+P, D].
  torch::Tensor hidden_state(const torch::Tensor& pixel_values, int64_t layer) override {
    return vision_model->hidden_state(pixel_values, layer);
  }
  void set_fused_attention(bool on) override;

  ClipVisionTransformer vision_model{nullptr};

 private:
  ClipVisionConfig config_;
};
TORCH_MODULE(ClipVisionModel);

}  // namespace llava
