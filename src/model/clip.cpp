#include "llava/model/clip.h"

#include "llava/error.h"
#include "llava/model/attention.h"
#include "llava/model/param_init.h"

namespace llava {

ClipVisionEmbeddingsImpl::ClipVisionEmbeddingsImpl(const ClipVisionConfig& c) : config_(c) {
  class_embedding = register_parameter(
      "class_embedding", init_or_empty({c.hidden_size}, [&] { return torch::randn({c.hidden_size}); }));
  patch_embedding = register_module(
      "patch_embedding",
      make_conv2d(
          torch::nn::Conv2dOptions(c.num_channels, c.hidden_size, c.patch_size).stride(c.patch_size).bias(false)));
  position_embedding = register_module(
      "position_embedding", make_embedding(torch::nn::EmbeddingOptions(c.num_patches() + 1, c.hidden_size)));
}

torch::Tensor ClipVisionEmbeddingsImpl::forward(const torch::Tensor& pixel_values) {
  const auto& w = patch_embedding->weight;
  if (pixel_values.dim() != 4 || pixel_values.size(1) != config_.num_channels ||
      pixel_values.size(2) != config_.image_size || pixel_values.size(3) != config_.image_size)
    throw Error("vision tower: pixel_values must be [N, " + std::to_string(config_.num_channels) + ", " +
                std::to_string(config_.image_size) + ", " + std::to_string(config_.image_size) + "], got " +
                c10::str(pixel_values.sizes()));
  const int64_t n = pixel_values.size(0), p = config_.patch_size, g = config_.grid_size(), d = config_.hidden_size;
  const int64_t c = config_.num_channels;
  // The patch convolution (kernel = stride = patch, no padding) as one matmul over non-overlapping patches:
  // same result as Conv2d, and it runs in every dtype on every device (1.13's CPU conv lacks bf16 paths).
  torch::Tensor x = pixel_values.to(w.device(), w.scalar_type());
  x = x.reshape({n, c, g, p, g, p}).permute({0, 2, 4, 1, 3, 5}).reshape({n, g * g, c * p * p});
  torch::Tensor patches = torch::matmul(x, w.reshape({d, c * p * p}).t());  // [N, P, D]
  torch::Tensor cls = class_embedding.to(patches.scalar_type()).view({1, 1, d}).expand({n, 1, d});
  torch::Tensor emb = torch::cat({cls, patches}, 1);                         // [N, 1+P, D]
  return emb + position_embedding->weight.unsqueeze(0);
}

ClipAttentionImpl::ClipAttentionImpl(const ClipVisionConfig& c)
    : heads_(c.num_attention_heads), head_dim_(c.head_dim()) {
  k_proj = register_module("k_proj", make_linear(torch::nn::LinearOptions(c.hidden_size, c.hidden_size)));
  v_proj = register_module("v_proj", make_linear(torch::nn::LinearOptions(c.hidden_size, c.hidden_size)));
  q_proj = register_module("q_proj", make_linear(torch::nn::LinearOptions(c.hidden_size, c.hidden_size)));
  out_proj = register_module("out_proj", make_linear(torch::nn::LinearOptions(c.hidden_size, c.hidden_size)));
}

torch::Tensor ClipAttentionImpl::forward(const torch::Tensor& x) {
  const int64_t n = x.size(0), t = x.size(1);
  auto heads = [&](const torch::Tensor& y) { return y.view({n, t, heads_, head_dim_}).transpose(1, 2); };
  torch::Tensor q = heads(q_proj(x)), k = heads(k_proj(x)), v = heads(v_proj(x));  // [N,H,T,hd]
  torch::Tensor o = attention(q, k, v, torch::Tensor(), /*causal=*/false, use_fused_attention);
  return out_proj(o.transpose(1, 2).reshape({n, t, heads_ * head_dim_}));
}

ClipMlpImpl::ClipMlpImpl(const ClipVisionConfig& c)
    : quick_gelu_(c.hidden_act == "quick_gelu"), tanh_gelu_(c.hidden_act == "gelu_pytorch_tanh") {
  fc1 = register_module("fc1", make_linear(torch::nn::LinearOptions(c.hidden_size, c.intermediate_size)));
  fc2 = register_module("fc2", make_linear(torch::nn::LinearOptions(c.intermediate_size, c.hidden_size)));
}

torch::Tensor ClipMlpImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = fc1(x);
  if (quick_gelu_) h = h * torch::sigmoid(1.702 * h);
  else h = tanh_gelu_ ? torch::gelu(h, "tanh") : torch::gelu(h);  // gelu_pytorch_tanh (SigLIP) | gelu (erf)
  return fc2(h);
}

ClipEncoderLayerImpl::ClipEncoderLayerImpl(const ClipVisionConfig& c) {
  auto ln = [&] { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)); };
  self_attn = register_module("self_attn", ClipAttention(c));
  layer_norm1 = register_module("layer_norm1", ln());
  mlp = register_module("mlp", ClipMlp(c));
  layer_norm2 = register_module("layer_norm2", ln());
}

torch::Tensor ClipEncoderLayerImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = x + self_attn(layer_norm1(x));
  return h + mlp(layer_norm2(h));
}

ClipEncoderImpl::ClipEncoderImpl(const ClipVisionConfig& c) {
  auto list = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layers.push_back(ClipEncoderLayer(c));
    list->push_back(layers.back());
  }
}

ClipVisionTransformerImpl::ClipVisionTransformerImpl(const ClipVisionConfig& c) : config_(c) {
  auto ln = [&] { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)); };
  embeddings = register_module("embeddings", ClipVisionEmbeddings(c));
  pre_layrnorm = register_module("pre_layrnorm", ln());
  encoder = register_module("encoder", ClipEncoder(c));
  post_layernorm = register_module("post_layernorm", ln());
}

torch::Tensor ClipVisionTransformerImpl::hidden_state(const torch::Tensor& pixel_values, int64_t layer) {
  const int64_t idx = vision_layers_to_run(layer, config_.num_hidden_layers, "vision tower");
  torch::Tensor h = pre_layrnorm(embeddings(pixel_values));  // hidden_states[0]
  for (int64_t i = 0; i < idx; ++i) h = encoder->layers[i]->forward(h);
  return h;
}

ClipVisionModelImpl::ClipVisionModelImpl(const ClipVisionConfig& c) : config_(c) {
  vision_model = register_module("vision_model", ClipVisionTransformer(c));
}

void ClipVisionModelImpl::set_fused_attention(bool on) {
  for (auto& l : vision_model->encoder->layers) l->self_attn->use_fused_attention = on;
}

}  // namespace llava
