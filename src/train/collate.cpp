#include "llava/train/batch.h"

#include <algorithm>

#include "llava/error.h"

namespace llava {
namespace {

const PixelTensor& examples_first_image(const std::vector<Example>& examples) {
  for (const auto& e : examples)
    if (!e.pixels.empty()) return e.pixels.front();
  throw std::logic_error("no image");
}

}  // namespace

Batch collate(std::vector<Example> examples, int pad_id) {
  Batch b;
  const int64_t B = static_cast<int64_t>(examples.size());
  int64_t T = 0;
  for (const auto& e : examples) T = std::max<int64_t>(T, static_cast<int64_t>(e.input_ids.size()));
  LlavaInputs& in = b.inputs;
  // A tokenizer without a pad token (Llama-3) pads with 0, LLaVA-NeXT's collator's choice; the value is never
  // read (attention_mask marks the real positions).
  in.input_ids = torch::full({B, T}, pad_id >= 0 ? pad_id : 0, torch::kLong);
  in.labels = torch::full({B, T}, kIgnoreIndex, torch::kLong);
  in.attention_mask = torch::zeros({B, T}, torch::kBool);
  auto ids = in.input_ids.accessor<int64_t, 2>();
  auto labels = in.labels.accessor<int64_t, 2>();
  auto mask = in.attention_mask.accessor<bool, 2>();
  int64_t n_images = 0;
  for (const auto& e : examples) n_images += static_cast<int64_t>(e.pixels.size());
  if (n_images > 0) {
    const PixelTensor& first = examples_first_image(examples);
    in.pixel_values = torch::empty({n_images, first.channels, first.height, first.width}, torch::kFloat);
  }
  float* pixel_out = n_images > 0 ? in.pixel_values.data_ptr<float>() : nullptr;
  for (int64_t i = 0; i < B; ++i) {
    const Example& e = examples[i];
    const int64_t len = static_cast<int64_t>(e.input_ids.size());
    for (int64_t t = 0; t < len; ++t) {
      ids[i][t] = e.input_ids[t];
      labels[i][t] = e.labels[t];
      mask[i][t] = true;
    }
    b.num_tokens += e.length_with_images;
    in.image_counts.push_back(e.num_images);
    b.sample_indices.push_back(e.index);
    b.sample_ids.push_back(e.id);
    if (!e.warning.empty()) b.warnings.push_back(e.warning);
    for (const PixelTensor& p : e.pixels) {  // one copy, straight into the batch tensor
      if (static_cast<int64_t>(p.data.size()) != in.pixel_values[0].numel())
        throw Error(sample_context(e.index, e.id) + ": its image has another size than the batch's first");
      std::copy(p.data.begin(), p.data.end(), pixel_out);
      pixel_out += p.data.size();
    }
  }
  return b;
}

}  // namespace llava
