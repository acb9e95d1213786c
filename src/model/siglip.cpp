#include "llava/model/siglip.h"

#include "llava/error.h"
#include "llava/model/param_init.h"
#include "llava/torch_compat.h"

namespace llava {

namespace {

torch::nn::LayerNorm layer_norm(const ClipVisionConfig& c) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps));
}

}  // namespace

SiglipVisionEmbeddingsImpl::SiglipVisionEmbeddingsImpl(const ClipVisionConfig& c) : config_(c) {
  patch_embedding = register_module(
      "patch_embedding",
      make_conv2d(torch::nn::Conv2dOptions(c.num_channels, c.hidden_size, c.patch_size).stride(c.patch_size)));
  position_embedding = register_module(
      "position_embedding", make_embedding(torch::nn::EmbeddingOptions(c.num_patches(), c.hidden_size)));
}

torch::Tensor SiglipVisionEmbeddingsImpl::forward(const torch::Tensor& pixel_values) {
  const ClipVisionConfig& c = config_;
  if (pixel_values.dim() != 4 || pixel_values.size(1) != c.num_channels || pixel_values.size(2) != c.image_size ||
      pixel_values.size(3) != c.image_size)
    throw Error("vision tower (SigLIP): pixel_values must be [N, " + std::to_string(c.num_channels) + ", " +
                std::to_string(c.image_size) + ", " + std::to_string(c.image_size) + "], got " +
                c10::str(pixel_values.sizes()));
  const auto& w = patch_embedding->weight;
  const int64_t n = pixel_values.size(0), p = c.patch_size, g = c.grid_size(), d = c.hidden_size;
  const int64_t ch = c.num_channels;
  // The patch convolution (kernel = stride = patch, "valid") as one matmul over non-overlapping patches, as
  // CLIP's embeddings do (same result as Conv2d; runs in every dtype on every device). Patches come out in
  // Conv2d's flatten(2) order: row-major over the g x g grid.
  torch::Tensor x = pixel_values.to(w.device(), w.scalar_type());
  x = x.reshape({n, ch, g, p, g, p}).permute({0, 2, 4, 1, 3, 5}).reshape({n, g * g, ch * p * p});
  torch::Tensor patches = torch::addmm(patch_embedding->bias, x.reshape({n * g * g, ch * p * p}),
                                       w.reshape({d, ch * p * p}).t())
                              .view({n, g * g, d});  // [N, P, D]
  return patches + position_embedding->weight.unsqueeze(0);
}

SiglipPoolingAttentionImpl::SiglipPoolingAttentionImpl(int64_t hidden) {
  in_proj_weight = register_parameter("in_proj_weight", init_or_empty({3 * hidden, hidden}, [&] {
                                        return torch::randn({3 * hidden, hidden}) / std::sqrt(double(hidden));
                                      }));
  in_proj_bias = register_parameter("in_proj_bias", init_or_empty({3 * hidden}, [&] { return torch::zeros({3 * hidden}); }));
  out_proj = register_module("out_proj", make_linear(torch::nn::LinearOptions(hidden, hidden)));
}

SiglipPoolingHeadImpl::SiglipPoolingHeadImpl(const ClipVisionConfig& c) {
  probe = register_parameter("probe", init_or_empty({1, 1, c.hidden_size}, [&] { return torch::randn({1, 1, c.hidden_size}); }));
  attention = register_module("attention", SiglipPoolingAttention(c.hidden_size));
  layernorm = register_module("layernorm", layer_norm(c));
  mlp = register_module("mlp", ClipMlp(c));
}

SiglipVisionTransformerImpl::SiglipVisionTransformerImpl(const ClipVisionConfig& c) : config_(c) {
  embeddings = register_module("embeddings", SiglipVisionEmbeddings(c));
  encoder = register_module("encoder", ClipEncoder(c));
  post_layernorm = register_module("post_layernorm", layer_norm(c));
  if (c.use_head) head = register_module("head", SiglipPoolingHead(c));
}

torch::Tensor SiglipVisionTransformerImpl::hidden_state(const torch::Tensor& pixel_values, int64_t layer) {
  const int64_t idx = vision_layers_to_run(layer, config_.num_hidden_layers, "vision tower (SigLIP)");
  torch::Tensor h = embeddings(pixel_values);  // hidden_states[0]: no pre-LayerNorm in SigLIP
  for (int64_t i = 0; i < idx; ++i) h = encoder->layers[i]->forward(h);
  return h;
}

SiglipVisionModelImpl::SiglipVisionModelImpl(const ClipVisionConfig& c) : config_(c) {
  if (!c.is_siglip()) throw Error("SiglipVisionModel built from a CLIP vision config");
  vision_model = register_module("vision_model", SiglipVisionTransformer(c));
}

void SiglipVisionModelImpl::set_fused_attention(bool on) {
  for (auto& l : vision_model->encoder->layers) l->self_attn->use_fused_attention = on;
}

}  // namespace llava
