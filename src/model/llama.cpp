#include "llava/model/llama.h"

#include <cmath>
#include <limits>
#include <mutex>

#include "llava/error.h"
#include "llava/model/attention.h"
#include "llava/model/param_init.h"

namespace llava {

namespace {

torch::Tensor rotate_half(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// [B, kvH, L, hd] -> [B, kvH * n_rep, L, hd]; query head h reads kv head h / n_rep (HF repeat_kv).
torch::Tensor repeat_kv(const torch::Tensor& x, int64_t n_rep) {
  if (n_rep == 1) return x;
  const int64_t b = x.size(0), kvh = x.size(1), l = x.size(2), d = x.size(3);
  return x.unsqueeze(2).expand({b, kvh, n_rep, l, d}).reshape({b, kvh * n_rep, l, d});
}

torch::Tensor inv_freq_for(const LlamaConfig& c, int64_t seq_len, torch::Device device) {
  const int64_t d = c.head_dim();
  auto fopt = torch::TensorOptions().dtype(torch::kFloat).device(device);
  double base = c.rope_theta;
  const RopeScaling& rs = c.rope_scaling;
  if (rs.type == "dynamic" && seq_len > c.max_position_embeddings) {
    base = base * std::pow(rs.factor * seq_len / c.max_position_embeddings - (rs.factor - 1.0),
                           static_cast<double>(d) / (d - 2));
  }
  // 1 / base^(arange(0, d, 2) / d), in fp32 like HF
  torch::Tensor inv = torch::pow(base, torch::arange(0, d, 2, fopt) / static_cast<double>(d)).reciprocal();
  if (rs.type == "llama3") {
    const double old_len = static_cast<double>(rs.original_max_position_embeddings);
    const double low_wavelen = old_len / rs.low_freq_factor, high_wavelen = old_len / rs.high_freq_factor;
    torch::Tensor wavelen = 2 * M_PI / inv;
    torch::Tensor scaled = torch::where(wavelen > low_wavelen, inv / rs.factor, inv);
    torch::Tensor smooth = (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
    torch::Tensor smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled;
    torch::Tensor medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    inv = torch::where(medium, smoothed, scaled);
  }
  return inv;
}

// The default generator that random ops on `device` draw from (dropout in a LoRA adapter).
at::Generator default_generator(const torch::Device& device) {
  return device.is_cpu() ? at::detail::getDefaultCPUGenerator() : at::globalContext().defaultGenerator(device);
}

torch::Tensor get_rng_state(at::Generator& gen) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_rng_state(at::Generator& gen, const torch::Tensor& state) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

// While alive, `gen` runs from `state`; afterwards it continues where it was (torch.random.fork_rng).
class ForkedRng {
 public:
  ForkedRng(at::Generator gen, const torch::Tensor& state) : gen_(std::move(gen)), outer_(get_rng_state(gen_)) {
    set_rng_state(gen_, state);
  }
  ~ForkedRng() { set_rng_state(gen_, outer_); }
  ForkedRng(const ForkedRng&) = delete;
  ForkedRng& operator=(const ForkedRng&) = delete;

 private:
  at::Generator gen_;
  torch::Tensor outer_;
};

// Gradient checkpointing for one decoder layer: forward runs without building a graph (custom Functions
// run their forward under no-grad); backward recomputes the layer with grad on and differentiates it.
// The layer's parameters are inputs of the Function, so the output requires grad whenever any of them
// does (even when the hidden state does not) and their gradients flow through normal AccumulateGrad
// nodes (the gradient reducer's hooks see them). The layer may draw random numbers (LoRA dropout): the
// generator's state is kept from the forward and the recomputation runs from it, so it draws the same masks;
// the generator then continues where it was, so checkpointing does not change the random stream
// (torch.utils.checkpoint's preserve_rng_state). The key-padding mask is an input only when there is one.
struct CheckpointedLayer : public torch::autograd::Function<CheckpointedLayer> {
  // inputs = {hidden, cos, sin, [key-padding mask,] params...}
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, at::TensorList inputs, bool has_mask,
                               int64_t layer_address) {
    auto* layer = reinterpret_cast<LlamaDecoderLayerImpl*>(static_cast<intptr_t>(layer_address));
    ctx->saved_data["layer"] = layer_address;
    ctx->saved_data["has_mask"] = has_mask;
    if (layer->draws_random_numbers()) {  // LoRA dropout in training; a plain layer draws nothing
      at::Generator gen = default_generator(inputs[0].device());
      ctx->saved_data["rng_state"] = get_rng_state(gen);
    }
    const torch::Tensor mask = has_mask ? inputs[3] : torch::Tensor();
    ctx->save_for_backward({inputs[0], inputs[1], inputs[2], mask});
    return layer->forward(inputs[0], mask, inputs[1], inputs[2]);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto* layer = reinterpret_cast<LlamaDecoderLayerImpl*>(static_cast<intptr_t>(ctx->saved_data["layer"].toInt()));
    auto saved = ctx->get_saved_variables();
    const bool has_mask = ctx->saved_data["has_mask"].toBool();
    const torch::Tensor mask = has_mask ? saved[3] : torch::Tensor();
    std::vector<torch::Tensor> params = layer->parameters();
    const size_t n_fixed = has_mask ? 4 : 3;
    torch::autograd::variable_list result(n_fixed + params.size() + 2);  // + the two non-tensor arguments

    torch::AutoGradMode enable_grad(true);
    const bool want_input = ctx->needs_input_grad(0);
    torch::Tensor h = saved[0].detach().requires_grad_(want_input);
    torch::Tensor out;
    if (ctx->saved_data.count("rng_state")) {
      ForkedRng same_draws(default_generator(h.device()), ctx->saved_data["rng_state"].toTensor());
      out = layer->forward(h, mask, saved[1], saved[2]);
    } else {
      out = layer->forward(h, mask, saved[1], saved[2]);
    }
    std::vector<torch::Tensor> wrt;
    std::vector<size_t> slot;
    if (want_input) {
      wrt.push_back(h);
      slot.push_back(0);
    }
    for (size_t i = 0; i < params.size(); ++i) {
      if (params[i].requires_grad() && ctx->needs_input_grad(n_fixed + i)) {
        wrt.push_back(params[i]);
        slot.push_back(n_fixed + i);
      }
    }
    if (wrt.empty() || !out.requires_grad()) return result;
    auto grads = torch::autograd::grad({out}, wrt, {grad_outputs[0]}, /*retain_graph=*/false,
                                       /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t i = 0; i < grads.size(); ++i) result[slot[i]] = grads[i];
    return result;
  }
};

}  // namespace

std::pair<torch::Tensor, torch::Tensor> rotary_cos_sin(const LlamaConfig& c, int64_t seq_len, torch::Device device,
                                                       torch::Dtype dtype) {
  torch::Tensor inv = inv_freq_for(c, seq_len, device);
  torch::Tensor t = torch::arange(seq_len, torch::TensorOptions().dtype(torch::kLong).device(device)).to(torch::kFloat);
  if (c.rope_scaling.type == "linear") t = t / c.rope_scaling.factor;
  torch::Tensor freqs = torch::outer(t, inv);
  torch::Tensor emb = torch::cat({freqs, freqs}, -1);  // [L, hd]
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

namespace {

// the dtype's lowest finite value, like HF's torch.finfo(dtype).min
double lowest_value(torch::Dtype dtype) {
  if (dtype == torch::kDouble) return std::numeric_limits<double>::lowest();
  if (dtype == torch::kHalf) return -65504.0;
  if (dtype == torch::kBFloat16) return -3.3895313892515355e38;
  return std::numeric_limits<float>::lowest();
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> rotary_cos_sin_at(const LlamaConfig& c, const torch::Tensor& position_ids,
                                                          torch::Device device, torch::Dtype dtype) {
  const int64_t max_position = position_ids.max().item<int64_t>();  // the caller's copy: CPU, no device sync
  torch::Tensor pos = position_ids.to(device, torch::kLong);
  auto [cos, sin] = rotary_cos_sin(c, max_position + 1, device, dtype);  // [max_position+1, hd]
  auto rows = [&](const torch::Tensor& table) {
    return table.index_select(0, pos.reshape({-1})).view({pos.size(0), pos.size(1), table.size(1)});
  };
  return {rows(cos), rows(sin)};
}

torch::Tensor key_padding_mask(const torch::Tensor& key_mask, torch::Dtype dtype) {
  const int64_t b = key_mask.size(0), l = key_mask.size(1);
  torch::Tensor pad = key_mask.ne(0).logical_not().view({b, 1, 1, l});
  // a row always keeps a real key: no NaN
  return torch::zeros(pad.sizes(), torch::TensorOptions().dtype(dtype).device(key_mask.device()))
      .masked_fill(pad, lowest_value(dtype));
}

torch::Tensor sliding_window_mask(int64_t tq, int64_t tk, int64_t window, torch::Dtype dtype, torch::Device device) {
  if (window <= 0 || tk <= window) return torch::Tensor();  // every key is within the window
  const auto lopt = torch::TensorOptions().dtype(torch::kLong).device(device);
  torch::Tensor query_pos = torch::arange(tk - tq, tk, lopt).view({tq, 1});  // bottom-right aligned, as causal
  torch::Tensor key_pos = torch::arange(tk, lopt).view({1, tk});
  torch::Tensor outside = (query_pos - key_pos).ge(window);  // 4.37.2: W keys visible, the query's own included
  return torch::zeros({1, 1, tq, tk}, torch::TensorOptions().dtype(dtype).device(device))
      .masked_fill(outside.view({1, 1, tq, tk}), lowest_value(dtype));
}

LlamaRMSNormImpl::LlamaRMSNormImpl(int64_t hidden, double eps) : eps_(eps) {
  weight = register_parameter("weight", init_or_empty({hidden}, [&] { return torch::ones({hidden}); }));
}

torch::Tensor LlamaRMSNormImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = x.to(torch::kFloat);
  torch::Tensor var = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * torch::rsqrt(var + eps_);
  return weight * h.to(x.scalar_type());
}

LlamaAttentionImpl::LlamaAttentionImpl(const LlamaConfig& c)
    : heads_(c.num_attention_heads), kv_heads_(c.num_key_value_heads), head_dim_(c.head_dim()) {
  // LLaMA: attention_bias on all four; Qwen2: bias on q, k, v only
  auto lin = [&](const char* name, int64_t in, int64_t out, bool bias) {
    return register_module(name, std::make_shared<DenseImpl>(in, out, bias));
  };
  q_proj = lin("q_proj", c.hidden_size, heads_ * head_dim_, c.qkv_bias());
  k_proj = lin("k_proj", c.hidden_size, kv_heads_ * head_dim_, c.qkv_bias());
  v_proj = lin("v_proj", c.hidden_size, kv_heads_ * head_dim_, c.qkv_bias());
  o_proj = lin("o_proj", heads_ * head_dim_, c.hidden_size, c.o_proj_bias());
}

std::vector<ProjectionSlot> LlamaAttentionImpl::projections() {
  return {{"q_proj", "q_proj", this, &q_proj},
          {"k_proj", "k_proj", this, &k_proj},
          {"v_proj", "v_proj", this, &v_proj},
          {"o_proj", "o_proj", this, &o_proj}};
}

torch::Tensor LlamaAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& mask, const torch::Tensor& cos,
                                          const torch::Tensor& sin, KVCacheLayer* cache) {
  const int64_t b = x.size(0), l = x.size(1);
  torch::Tensor q = q_proj->forward(x).view({b, l, heads_, head_dim_}).transpose(1, 2);     // [B,H,L,hd]
  torch::Tensor k = k_proj->forward(x).view({b, l, kv_heads_, head_dim_}).transpose(1, 2);  // [B,kvH,L,hd]
  torch::Tensor v = v_proj->forward(x).view({b, l, kv_heads_, head_dim_}).transpose(1, 2);
  const int64_t cb = cos.dim() == 3 ? b : 1;  // per-row positions or one table for all rows
  torch::Tensor c = cos.view({cb, 1, l, head_dim_}), s = sin.view({cb, 1, l, head_dim_});
  q = q * c + rotate_half(q) * s;
  k = k * c + rotate_half(k) * s;
  if (cache) {  // attend to the earlier positions too (causal is bottom-right aligned), then keep ours
    if (cache->keys.defined()) {
      k = torch::cat({cache->keys, k}, 2);
      v = torch::cat({cache->values, v}, 2);
    }
    cache->keys = k;
    cache->values = v;
  }
  const int64_t n_rep = heads_ / kv_heads_;
  torch::Tensor o = attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), mask, /*causal=*/true,
                              use_fused_attention);  // [B,H,L,hd]
  return o_proj->forward(o.transpose(1, 2).reshape({b, l, heads_ * head_dim_}));
}

LlamaMLPImpl::LlamaMLPImpl(const LlamaConfig& c) : silu_(c.hidden_act == "silu") {
  auto lin = [&](const char* name, int64_t in, int64_t out) {
    return register_module(name, std::make_shared<DenseImpl>(in, out, false));
  };
  gate_proj = lin("gate_proj", c.hidden_size, c.intermediate_size);
  up_proj = lin("up_proj", c.hidden_size, c.intermediate_size);
  down_proj = lin("down_proj", c.intermediate_size, c.hidden_size);
}

std::vector<ProjectionSlot> LlamaMLPImpl::projections() {
  return {{"gate_proj", "gate_proj", this, &gate_proj},
          {"up_proj", "up_proj", this, &up_proj},
          {"down_proj", "down_proj", this, &down_proj}};
}

torch::Tensor LlamaMLPImpl::forward(const torch::Tensor& x) {
  torch::Tensor g = gate_proj->forward(x);
  g = silu_ ? torch::silu(g) : torch::gelu(g);
  return down_proj->forward(g * up_proj->forward(x));
}

bool LlamaDecoderLayerImpl::draws_random_numbers() const {
  for (const auto& m : modules())
    if (const auto* p = dynamic_cast<const LinearLayerImpl*>(m.get()); p && p->draws_random_numbers()) return true;
  return false;
}

std::vector<ProjectionSlot> LlamaDecoderLayerImpl::projections() {
  std::vector<ProjectionSlot> out;
  for (ProjectionSlot s : self_attn->projections()) out.push_back({"self_attn." + s.path, s.name, s.owner, s.member});
  for (ProjectionSlot s : mlp->projections()) out.push_back({"mlp." + s.path, s.name, s.owner, s.member});
  return out;
}

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const LlamaConfig& c) {
  self_attn = register_module("self_attn", LlamaAttention(c));
  mlp = register_module("mlp", LlamaMLP(c));
  input_layernorm = register_module("input_layernorm", LlamaRMSNorm(c.hidden_size, c.rms_norm_eps));
  post_attention_layernorm = register_module("post_attention_layernorm", LlamaRMSNorm(c.hidden_size, c.rms_norm_eps));
}

torch::Tensor LlamaDecoderLayerImpl::forward(const torch::Tensor& h, const torch::Tensor& mask,
                                             const torch::Tensor& cos, const torch::Tensor& sin, KVCacheLayer* cache) {
  torch::Tensor x = h + self_attn->forward(input_layernorm(h), mask, cos, sin, cache);
  return x + mlp(post_attention_layernorm(x));
}

LlamaModelImpl::LlamaModelImpl(const LlamaConfig& c) : config_(c) {
  auto opts = torch::nn::EmbeddingOptions(c.vocab_size, c.hidden_size);
  if (c.pad_token_id >= 0 && c.pad_token_id < c.vocab_size) opts.padding_idx(c.pad_token_id);  // as HF
  embed_tokens = register_module("embed_tokens", make_embedding(opts));
  auto list = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layers.push_back(LlamaDecoderLayer(c));
    list->push_back(layers.back());
  }
  norm = register_module("norm", LlamaRMSNorm(c.hidden_size, c.rms_norm_eps));
}

torch::Tensor LlamaModelImpl::embed(const torch::Tensor& input_ids) {
  return embed_tokens(input_ids.to(embed_tokens->weight.device()));
}

void LlamaModelImpl::set_fused_attention(bool on) {
  for (auto& l : layers) l->self_attn->use_fused_attention = on;
}

torch::Tensor LlamaModelImpl::forward(const torch::Tensor& inputs_embeds, const torch::Tensor& key_mask,
                                      const torch::Tensor& position_ids, KVCache* cache) {
  const int64_t l = inputs_embeds.size(1);
  const auto device = inputs_embeds.device();
  const auto dtype = inputs_embeds.scalar_type();
  torch::Tensor mask = key_mask.defined() ? key_padding_mask(key_mask.to(device), dtype) : torch::Tensor();
  const int64_t past = cache ? cache->length() : 0;
  // Mistral: keys older than the window are masked; bottom-right aligned over the cached keys too
  if (torch::Tensor window = sliding_window_mask(l, past + l, config_.sliding_window, dtype, device); window.defined())
    mask = mask.defined() ? mask + window : window;  // [B,1,1,K] + [1,1,L,K]; sums of two lowest become -inf
  if (cache) cache->layers.resize(layers.size());
  torch::Tensor cos, sin;
  if (position_ids.defined()) {
    std::tie(cos, sin) = rotary_cos_sin_at(config_, position_ids, device, dtype);  // [B, L, hd]
  } else {
    std::tie(cos, sin) = rotary_cos_sin(config_, past + l, device, dtype);
    cos = cos.narrow(0, past, l);
    sin = sin.narrow(0, past, l);
  }
  torch::Tensor h = inputs_embeds;
  size_t index = 0;
  for (auto& layer : layers) {
    KVCacheLayer* layer_cache = cache ? &cache->layers[index++] : nullptr;  // generation: nothing to checkpoint
    bool checkpoint = gradient_checkpointing_ && torch::GradMode::is_enabled() && !layer_cache;
    if (checkpoint) {
      std::vector<torch::Tensor> inputs = {h, cos, sin};
      if (mask.defined()) inputs.push_back(mask);
      bool any_grad = h.requires_grad();
      for (auto& p : layer->parameters()) {
        inputs.push_back(p);
        any_grad = any_grad || p.requires_grad();
      }
      if (any_grad) {
        h = CheckpointedLayer::apply(at::TensorList(inputs), mask.defined(),
                                     static_cast<int64_t>(reinterpret_cast<intptr_t>(layer.get())));
        continue;
      }
    }
    h = layer->forward(h, mask, cos, sin, layer_cache);
  }
  return norm(h);
}

LlamaForCausalLMImpl::LlamaForCausalLMImpl(const LlamaConfig& c) : config_(c) {
  model = register_module("model", LlamaModel(c));
  if (!c.tie_word_embeddings)
    lm_head = register_module("lm_head",
                              make_linear(torch::nn::LinearOptions(c.hidden_size, c.vocab_size).bias(false)));
}

const torch::Tensor& LlamaForCausalLMImpl::output_weight() const {
  return lm_head ? lm_head->weight : model->embed_tokens->weight;
}

torch::Tensor LlamaForCausalLMImpl::logits(const torch::Tensor& hidden) {
  return torch::linear(hidden, output_weight());
}

}  // namespace llava
