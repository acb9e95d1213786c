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

// anyres examples carry a layout per image (text-only ones none): their tiles are stacked, P per image.
bool any_anyres(const std::vector<Example>& examples) {
  for (const auto& e : examples)
    if (!e.image_layouts.empty()) return true;
  return false;
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
  // square / pad: [N, 3, H, W], one tile per image; anyres: [sum P, 3, S, S] with P and the size per image
  const bool anyres = any_anyres(examples);
  int64_t n_tiles = 0;
  for (const auto& e : examples)
    for (const PixelTensor& p : e.pixels) n_tiles += p.tiles;
  int64_t tile_numel = 0;
  if (n_tiles > 0) {
    const PixelTensor& first = examples_first_image(examples);
    in.pixel_values = torch::empty({n_tiles, first.channels, first.height, first.width}, torch::kFloat);
    tile_numel = in.pixel_values[0].numel();
  }
  float* pixel_out = n_tiles > 0 ? in.pixel_values.data_ptr<float>() : nullptr;
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
    if (anyres && e.pixels.size() != e.image_sizes.size())
      throw Error(sample_context(e.index, e.id) + ": " + std::to_string(e.pixels.size()) + " anyres images but " +
                  std::to_string(e.image_sizes.size()) + " image sizes");
    for (size_t k = 0; k < e.pixels.size(); ++k) {  // one copy, straight into the batch tensor
      const PixelTensor& p = e.pixels[k];
      if (static_cast<int64_t>(p.data.size()) != p.tiles * tile_numel)
        throw Error(sample_context(e.index, e.id) + ": its image has another size than the batch's first" +
                    (anyres ? " (anyres tiles must all be the vision tower's size)" : ""));
      std::copy(p.data.begin(), p.data.end(), pixel_out);
      pixel_out += p.data.size();
      if (anyres) {
        in.image_tiles.push_back(p.tiles);
        in.image_sizes.push_back(e.image_sizes[k]);
      }
    }
  }
  return b;
}

}  // namespace llava
