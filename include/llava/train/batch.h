#pragma once
// A collated micro-batch, as the model takes it (design.md §1):
//   input_ids/labels [B,T] right-padded, attention_mask [B,T], pixel_values [sum N_b,3,H,W] in
//   sample-then-marker order, image_counts [B].
#include <torch/torch.h>

#include <string>
#include <vector>

#include "llava/example.h"

namespace llava {

struct Batch {
  torch::Tensor input_ids;       // [B,T] int64; -200 marks an image; pad = tokenizer pad id
  torch::Tensor labels;          // [B,T] int64; -100 = not supervised
  torch::Tensor attention_mask;  // [B,T] bool
  torch::Tensor pixel_values;    // [N,3,H,W] float32; undefined when the batch has no image
  std::vector<int64_t> image_counts;
  std::vector<int64_t> sample_indices;
  std::vector<std::string> sample_ids;
  int64_t num_target_tokens = 0;  // labels != -100 (before the shift)
  int64_t num_tokens = 0;         // real positions, images expanded
  int64_t skipped = 0;            // bad samples left out of this batch
  std::vector<std::string> errors;    // one per skipped sample: "sample I (id 'X'): reason"
  std::vector<std::string> warnings;  // e.g. tokenization mismatch
  int64_t size() const { return static_cast<int64_t>(sample_indices.size()); }
};

// LLaVA's DataCollatorForSupervisedDataset: right-pad with pad_id / -100, cut to model_max_length,
// attention_mask = real positions; images concatenated in sample order.
Batch collate(std::vector<Example> examples, int pad_id, int model_max_length);

}  // namespace llava
