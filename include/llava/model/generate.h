#pragma once
// Text generation with a LLaVA model, as transformers' generate() (v4.37.2) does it for LLaVA: the prompt's
// images are merged once (prepare_inputs_labels_for_multimodal), then one token per step from the logits at
// the last position, with a KV cache. Greedy by default; sampling with HF's warpers in HF's order
// (temperature, top-k, top-p) and torch.multinomial on a seeded CPU generator, so a seed reproduces a run on
// any device. Several prompts run as one batch, left-padded: each row gets a key mask over its padding and
// its own positions 0..n-1, so a row's ids are those it gets alone (up to float rounding of the batched
// matmuls; the fixture test checks they are identical).
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "llava/model/llava.h"

namespace llava {

struct GenerationConfig {
  int64_t max_new_tokens = 128;
  bool do_sample = false;      // false: greedy (argmax; ties go to the lowest id, as torch.argmax)
  double temperature = 1.0;    // sampling only; > 0
  double top_p = 1.0;          // sampling only; (0, 1]: keep the smallest set of ids with this much probability
  int64_t top_k = 50;          // sampling only; 0 = off (HF's default is 50)
  int64_t eos_token_id = 2;    // stop a row right after it; -1: none (every row runs max_new_tokens)
  bool use_cache = true;       // false: a full forward over the whole sequence each step (tests compare)
  // Throws llava::Error naming the flag (--temperature, --top_p, --top_k, --max_new_tokens) when out of range.
  void validate() const;
};

struct GenerationOutput {
  std::vector<int64_t> ids;     // new tokens only; ends with eos_token_id when stopped_on_eos
  bool stopped_on_eos = false;
};

// prompts: a right-padded batch as collate() makes it (input_ids with -200 per image, attention_mask,
// pixel_values, image_counts; labels ignored), on the CPU; pixels may be on the model's device.
// generator: CPU generator for sampling (required when do_sample). Runs under no-grad in eval mode.
std::vector<GenerationOutput> generate(LlavaForCausalLMImpl& model, const LlavaInputs& prompts,
                                       const GenerationConfig& config, at::Generator* generator = nullptr);

// One step's choice from the last position's logits [B, V] (fp32, any device) -> [B] int64 on the CPU.
torch::Tensor choose_next_tokens(const torch::Tensor& logits, const GenerationConfig& config,
                                 at::Generator* generator);

}  // namespace llava
