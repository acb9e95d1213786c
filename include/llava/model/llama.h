#pragma once
// LLaMA decoder as transformers' LlamaForCausalLM (v4.37.2, eager attention): RMSNorm in fp32, rotate-half
// RoPE (rope_theta, optional linear/dynamic/llama3 scaling), GQA, SwiGLU MLP, final norm, lm_head (tied or not).
// MistralForCausalLM (4.37.2) is the same module with config.sliding_window's mask (sliding_window_mask).
// Qwen2ForCausalLM (config.model_type qwen2) is the same block with q/k/v biases (LlamaConfig::qkv_bias).
// named_parameters() of LlamaForCausalLM are the HF names: "model.embed_tokens.weight", ..., "lm_head.weight".
#include <torch/torch.h>

#include <memory>
#include <utility>
#include <vector>

#include "llava/model/config.h"
#include "llava/model/linear_layer.h"

namespace llava {

// cos/sin tables [L, head_dim] for positions 0..L-1, computed in fp32 and returned in `dtype` (as HF does).
std::pair<torch::Tensor, torch::Tensor> rotary_cos_sin(const LlamaConfig& config, int64_t seq_len,
                                                       torch::Device device, torch::Dtype dtype);
// Per-row positions: [B, L] position_ids (int64, any device) -> cos/sin [B, L, head_dim], the rows of the
// 0..max(position_ids) tables (the same values a row gets from rotary_cos_sin at those positions).
std::pair<torch::Tensor, torch::Tensor> rotary_cos_sin_at(const LlamaConfig& config, const torch::Tensor& position_ids,
                                                          torch::Device device, torch::Dtype dtype);
// Additive key-padding mask [B, 1, 1, L] in `dtype`: 0 for real keys, the dtype's lowest value (HF's
// torch.finfo(dtype).min) for padding. key_mask: [B, L] (bool/int, nonzero = real token). The causal part is
// the attention's own (attention()'s `causal`).
torch::Tensor key_padding_mask(const torch::Tensor& key_mask, torch::Dtype dtype);
// Mistral's sliding window as transformers 4.37.2's eager mask: additive [1, 1, Tq, Tk], the dtype's lowest where
// key j lies `window` or more positions before query i (query i is position Tk - Tq + i, aligned as the causal
// mask), 0 elsewhere: each query sees its last `window` keys, its own included. The causal part stays the
// attention's. Undefined (no mask needed) when window <= 0 or Tk <= window.
torch::Tensor sliding_window_mask(int64_t tq, int64_t tk, int64_t window, torch::Dtype dtype, torch::Device device);

// Keys and values of every position decoded so far, per decoder layer (generation). An attention given a
// layer's entry attends to the cached keys followed by its own and appends its own to the cache.
struct KVCacheLayer {
  torch::Tensor keys, values;  // [B, kvH, T_past, hd], RoPE applied; undefined before the first step
};
struct KVCache {
  std::vector<KVCacheLayer> layers;  // one per decoder layer, filled by LlamaModelImpl::forward
  int64_t length() const { return layers.empty() || !layers[0].keys.defined() ? 0 : layers[0].keys.size(2); }
};

class LlamaRMSNormImpl : public torch::nn::Module {
 public:
  LlamaRMSNormImpl(int64_t hidden, double eps);
  torch::Tensor forward(const torch::Tensor& x);  // w * (x * rsqrt(mean(x^2) + eps)) with the norm in fp32
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(LlamaRMSNorm);

class LlamaAttentionImpl : public torch::nn::Module {
 public:
  explicit LlamaAttentionImpl(const LlamaConfig& config);
  // x [B,L,D]; mask additive key padding [B,1,1,T_past+L] or undefined (causal only); cos/sin [L,hd] or
  // [B,L,hd] (per-row positions); cache: this layer's keys/values of earlier positions (appended to), or null.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask, const torch::Tensor& cos,
                        const torch::Tensor& sin, KVCacheLayer* cache = nullptr);
  std::vector<ProjectionSlot> projections();  // q_proj, k_proj, v_proj, o_proj

  std::shared_ptr<LinearLayerImpl> q_proj, k_proj, v_proj, o_proj;
  bool use_fused_attention = true;  // attention(): fused where LibTorch has it

 private:
  int64_t heads_, kv_heads_, head_dim_;
};
TORCH_MODULE(LlamaAttention);

class LlamaMLPImpl : public torch::nn::Module {
 public:
  explicit LlamaMLPImpl(const LlamaConfig& config);
  torch::Tensor forward(const torch::Tensor& x);  // down(act(gate(x)) * up(x))
  std::vector<ProjectionSlot> projections();       // gate_proj, up_proj, down_proj

  std::shared_ptr<LinearLayerImpl> gate_proj, up_proj, down_proj;

 private:
  bool silu_;
};
TORCH_MODULE(LlamaMLP);

class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  explicit LlamaDecoderLayerImpl(const LlamaConfig& config);
  torch::Tensor forward(const torch::Tensor& h, const torch::Tensor& mask, const torch::Tensor& cos,
                        const torch::Tensor& sin, KVCacheLayer* cache = nullptr);
  // Whether a forward draws random numbers (a projection with dropout, in training mode).
  bool draws_random_numbers() const;
  std::vector<ProjectionSlot> projections();  // self_attn.q_proj ... mlp.down_proj

  LlamaAttention self_attn{nullptr};
  LlamaMLP mlp{nullptr};
  LlamaRMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(LlamaDecoderLayer);

class LlamaModelImpl : public torch::nn::Module {
 public:
  explicit LlamaModelImpl(const LlamaConfig& config);
  torch::Tensor embed(const torch::Tensor& input_ids);  // ids must be in [0, vocab)
  // inputs_embeds [B,L,D] -> final-normed hidden states [B,L,D]. Positions are 0..L-1 for every row.
  // key_mask [B,L] (nonzero = real token) only where a real position could see padding; right-padded rows
  // need none (under the causal mask a real position only sees earlier, real ones), so pass it undefined and
  // the attention runs without a mask tensor (flash attention where LibTorch has it).
  // Generation: cache holds the earlier positions' keys/values (filled and extended here); key_mask then covers
  // [B, T_past + L]; position_ids [B, L] give each row's positions (left-padded rows), default T_past..T_past+L-1.
  torch::Tensor forward(const torch::Tensor& inputs_embeds, const torch::Tensor& key_mask = {},
                        const torch::Tensor& position_ids = {}, KVCache* cache = nullptr);
  // Recompute each decoder layer in backward instead of keeping its activations (only while grad is on).
  void set_gradient_checkpointing(bool on) { gradient_checkpointing_ = on; }
  bool gradient_checkpointing() const { return gradient_checkpointing_; }
  void set_fused_attention(bool on);
  const LlamaConfig& config() const { return config_; }

  torch::nn::Embedding embed_tokens{nullptr};
  std::vector<LlamaDecoderLayer> layers;  // registered as "layers.0", ...
  LlamaRMSNorm norm{nullptr};

 private:
  LlamaConfig config_;
  bool gradient_checkpointing_ = false;
};
TORCH_MODULE(LlamaModel);

class LlamaForCausalLMImpl : public torch::nn::Module {
 public:
  explicit LlamaForCausalLMImpl(const LlamaConfig& config);
  // hidden [.., D] -> logits [.., V] in the parameters' dtype (lm_head, or embed_tokens when tied).
  torch::Tensor logits(const torch::Tensor& hidden);
  const torch::Tensor& output_weight() const;  // [V, D]: lm_head's weight, or embed_tokens' when tied
  const LlamaConfig& config() const { return config_; }

  LlamaModel model{nullptr};
  torch::nn::Linear lm_head{nullptr};  // null when tie_word_embeddings

 private:
  LlamaConfig config_;
};
TORCH_MODULE(LlamaForCausalLM);

}  // namespace llava
