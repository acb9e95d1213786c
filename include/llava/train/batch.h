#pragma once
// A collated micro-batch: what the model takes (LlavaInputs, design.md §1: input_ids/labels [B,T]
// right-padded, attention_mask [B,T], pixel_values [sum N_b,3,H,W] in sample-then-marker order,
// image_counts [B]; anyres: pixel_values [sum P,3,S,S] + image_tiles / image_sizes per image) and what the
// trainer reports about it.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "llava/example.h"
#include "llava/model/llava.h"

namespace llava {

struct Batch {
  LlavaInputs inputs;  // pad id = the tokenizer's; pixel_values undefined when the batch has no image
  std::vector<int64_t> sample_indices;
  std::vector<std::string> sample_ids;
  int64_t num_tokens = 0;         // real positions, images expanded
  int64_t skipped = 0;            // bad samples left out of this batch
  std::vector<std::string> errors;    // one per skipped sample: "sample I (id 'X'): reason"
  std::vector<std::string> warnings;  // e.g. tokenization mismatch
  int64_t size() const { return static_cast<int64_t>(sample_indices.size()); }
};

// LLaVA's DataCollatorForSupervisedDataset: right-pad with pad_id / -100, attention_mask = real positions;
// images concatenated in sample order (anyres: every image's tiles, with its tile count and original size).
// (Lengths were checked against --model_max_length per example.) pad_id < 0 (the tokenizer has none,
// Llama-3): 0, as LLaVA-NeXT's collator sets it.
Batch collate(std::vector<Example> examples, int pad_id);

}  // namespace llava
