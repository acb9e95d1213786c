#include "llava/train/batch.h"

#include <algorithm>

namespace llava {
namespace {

const PixelTensor& examples_first_image(const std::vector<Example>& examples) {
  for (const auto& e : examples)
    if (!e.pixels.empty()) return e.pixels.front();
  throw std::logic_error("no image");
}

}  // namespace

Batch collate(std::vector<Example> examples, int pad_id, int model_max_length) {
  Batch b;
  const int64_t B = static_cast<int64_t>(examples.size());
  int64_t T = 0;
  for (const auto& e : examples) T = std::max<int64_t>(T, static_cast<int64_t>(e.input_ids.size()));
  T = std::min<int64_t>(T, model_max_length);  // LLaVA cuts after padding, before image expansion
  b.input_ids = torch::full({B, T}, pad_id, torch::kLong);
  b.labels = torch::full({B, T}, kIgnoreIndex, torch::kLong);
  b.attention_mask = torch::zeros({B, T}, torch::kBool);
  auto ids = b.input_ids.accessor<int64_t, 2>();
  auto labels = b.labels.accessor<int64_t, 2>();
  auto mask = b.attention_mask.accessor<bool, 2>();
  int64_t n_images = 0;
  for (const auto& e : examples) n_images += static_cast<int64_t>(e.pixels.size());
  if (n_images > 0) {
    const PixelTensor& first = examples_first_image(examples);
    b.pixel_values = torch::empty({n_images, first.channels, first.height, first.width}, torch::kFloat);
  }
  float* pixel_out = n_images > 0 ? b.pixel_values.data_ptr<float>() : nullptr;
  for (int64_t i = 0; i < B; ++i) {
    const Example& e = examples[i];
    const int64_t len = std::min<int64_t>(T, static_cast<int64_t>(e.input_ids.size()));
    for (int64_t t = 0; t < len; ++t) {
      ids[i][t] = e.input_ids[t];
      labels[i][t] = e.labels[t];
      mask[i][t] = true;
      b.num_target_tokens += e.labels[t] != kIgnoreIndex;
    }
    b.num_tokens += e.length_with_images;
    b.image_counts.push_back(e.num_images);
    b.sample_indices.push_back(e.index);
    b.sample_ids.push_back(e.id);
    if (!e.warning.empty()) b.warnings.push_back(e.warning);
    for (const PixelTensor& p : e.pixels) {  // one copy, straight into the batch tensor
      TORCH_CHECK(static_cast<int64_t>(p.data.size()) == b.pixel_values[0].numel(),
                  "collate: images of different sizes in one batch");
      std::copy(p.data.begin(), p.data.end(), pixel_out);
      pixel_out += p.data.size();
    }
  }
  return b;
}

}  // namespace llava
