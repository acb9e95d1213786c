#include "llava/model/generate.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "llava/error.h"

namespace llava {
namespace {

// The merged prompts moved to the right end of their rows: row b's n real positions sit in the last n slots,
// so every row's next token goes into the same slot. Pads are zero embeddings that no real query sees (the key
// mask) and that take position 0 (their own outputs are never read).
struct LeftPadded {
  torch::Tensor embeds;     // [B, L, D] on the model's device
  torch::Tensor key_mask;   // [B, L] bool (CPU), true = real; undefined when no row is padded
  torch::Tensor positions;  // [B, L] int64 (CPU): 0..n-1 over a row's real slots, 0 at padding
};

LeftPadded left_pad(const MergedInputs& merged) {
  const int64_t B = merged.inputs_embeds.size(0), L = merged.inputs_embeds.size(1), D = merged.inputs_embeds.size(2);
  const int64_t zero_row = B * L;  // index of the zero row appended below
  torch::Tensor index = torch::full({B, L}, zero_row, torch::kLong);
  LeftPadded out;
  out.positions = torch::zeros({B, L}, torch::kLong);
  torch::Tensor real = torch::zeros({B, L}, torch::kBool);
  auto idx = index.accessor<int64_t, 2>();
  auto pos = out.positions.accessor<int64_t, 2>();
  auto rea = real.accessor<bool, 2>();
  bool padded = false;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = merged.lengths[b], offset = L - n;
    padded = padded || offset > 0;
    for (int64_t t = 0; t < n; ++t) {
      idx[b][offset + t] = b * L + t;
      pos[b][offset + t] = t;
      rea[b][offset + t] = true;
    }
  }
  const torch::Tensor& e = merged.inputs_embeds;
  torch::Tensor source = torch::cat({e.reshape({B * L, D}), torch::zeros({1, D}, e.options())}, 0);
  out.embeds = source.index_select(0, index.view({-1}).to(e.device())).view({B, L, D});
  if (padded) out.key_mask = real;
  return out;
}

// Restores the module's training flag on scope exit (the trainer may generate in the middle of training).
class EvalModeScope {
 public:
  explicit EvalModeScope(torch::nn::Module& m) : module_(m), was_training_(m.is_training()) { module_.eval(); }
  ~EvalModeScope() { module_.train(was_training_); }
  EvalModeScope(const EvalModeScope&) = delete;
  EvalModeScope& operator=(const EvalModeScope&) = delete;

 private:
  torch::nn::Module& module_;
  bool was_training_;
};

// Records step k's tokens; returns true when every row has stopped.
bool record_step(const torch::Tensor& next, const GenerationConfig& c, std::vector<GenerationOutput>& out) {
  auto tok = next.accessor<int64_t, 1>();
  bool all_done = true;
  for (size_t b = 0; b < out.size(); ++b) {
    if (!out[b].stopped_on_eos) {
      out[b].ids.push_back(tok[b]);
      out[b].stopped_on_eos = c.eos_token_id >= 0 && tok[b] == c.eos_token_id;
    }
    all_done = all_done && out[b].stopped_on_eos;
  }
  return all_done;
}

}  // namespace

void GenerationConfig::validate() const {
  if (max_new_tokens < 0) throw Error("--max_new_tokens must be >= 0, got " + std::to_string(max_new_tokens));
  if (!do_sample) return;
  if (!(temperature > 0) || !std::isfinite(temperature))
    throw Error("--temperature must be > 0 with --do_sample (use greedy decoding instead of 0), got " +
                std::to_string(temperature));
  if (!(top_p > 0 && top_p <= 1)) throw Error("--top_p must be in (0, 1], got " + std::to_string(top_p));
  if (top_k < 0) throw Error("--top_k must be >= 0 (0: off), got " + std::to_string(top_k));
}

torch::Tensor choose_next_tokens(const torch::Tensor& logits, const GenerationConfig& c, at::Generator* generator) {
  if (!c.do_sample) return logits.argmax(-1).to(torch::kCPU, torch::kLong);
  if (!generator) throw Error("generate: sampling (--do_sample) needs a random generator");
  // HF's warpers, in HF's order, on fp32 scores [B, V]; removed ids get -inf.
  constexpr float kRemoved = -std::numeric_limits<float>::infinity();
  torch::Tensor scores = logits.to(torch::kCPU, torch::kFloat);
  const int64_t V = scores.size(-1);
  if (c.temperature != 1.0) scores = scores / c.temperature;
  if (c.top_k > 0) {  // TopKLogitsWarper: drop ids scoring below the k-th best
    const int64_t k = std::min(c.top_k, V);
    torch::Tensor kth = std::get<0>(scores.topk(k, -1)).narrow(-1, k - 1, 1);  // [B, 1]
    scores = scores.masked_fill(scores < kth, kRemoved);
  }
  if (c.top_p < 1.0) {  // TopPLogitsWarper: ascending sort, drop the tail whose mass is <= 1 - top_p
    auto [sorted, order] = scores.sort(-1, /*descending=*/false);
    torch::Tensor drop_sorted = sorted.softmax(-1).cumsum(-1) <= (1.0 - c.top_p);
    drop_sorted.narrow(-1, V - 1, 1).fill_(false);  // the best id always stays
    scores = scores.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), kRemoved);
  }
  return torch::multinomial(scores.softmax(-1), 1, /*replacement=*/false, *generator).view({-1});
}

std::vector<GenerationOutput> generate(LlavaForCausalLMImpl& model, const LlavaInputs& prompts,
                                       const GenerationConfig& config, at::Generator* generator) {
  config.validate();
  if (config.do_sample && !generator) throw Error("generate: sampling (--do_sample) needs a random generator");
  torch::NoGradGuard no_grad;
  EvalModeScope eval_mode(model);
  LlavaInputs in = prompts;
  in.labels = torch::Tensor();
  LeftPadded seq = left_pad(model.merge_inputs(in));
  const int64_t B = seq.embeds.size(0);
  std::vector<GenerationOutput> out(static_cast<size_t>(B));
  if (config.max_new_tokens == 0) return out;

  LlamaForCausalLMImpl& llm = *model.language_model;
  KVCache cache;
  KVCache* kv = config.use_cache ? &cache : nullptr;
  torch::Tensor embeds = seq.embeds, key_mask = seq.key_mask, positions = seq.positions;
  torch::Tensor hidden = llm.model->forward(embeds, key_mask, positions, kv);  // [B, L, D]
  for (int64_t step = 0;; ++step) {
    torch::Tensor logits = llm.logits(hidden.select(1, hidden.size(1) - 1)).to(torch::kFloat);  // [B, V]
    torch::Tensor next = choose_next_tokens(logits, config, generator);                          // [B] CPU
    if (record_step(next, config, out) || step + 1 == config.max_new_tokens) break;
    // The new token enters every row at the next slot; a stopped row keeps going unseen (its ids are final).
    torch::Tensor next_embeds = llm.model->embed(next.view({B, 1}));  // [B, 1, D]
    torch::Tensor next_positions = positions.narrow(1, positions.size(1) - 1, 1) + 1;  // [B, 1]
    positions = torch::cat({positions, next_positions}, 1);
    if (key_mask.defined()) key_mask = torch::cat({key_mask, torch::ones({B, 1}, torch::kBool)}, 1);
    if (kv) {
      hidden = llm.model->forward(next_embeds, key_mask, next_positions, kv);
    } else {
      embeds = torch::cat({embeds, next_embeds}, 1);
      hidden = llm.model->forward(embeds, key_mask, positions);
    }
  }
  return out;
}

}  // namespace llava
