#pragma once
// One sample -> what the model trains on: template -> tokenizer -> input_ids (-200 per image) and
// labels (-100 except answers, LLaVA's preprocess_v1 / preprocess_llama_2 / preprocess_plain), and
// the decoded, CLIP-preprocessed images.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "llava/conversation.h"
#include "llava/dataset.h"
#include "llava/image.h"
#include "llava/tokenizer.h"

namespace llava {

class PromptChunkCache;  // prompt_tokens.h

struct ExampleOptions {
  const LlamaTokenizer* tokenizer = nullptr;
  const ConversationTemplate* conversation = nullptr;
  ImagePlacement placement = ImagePlacement::kFront;
  int model_max_length = 2048;
  int image_feature_positions = 576;  // LLM positions one image occupies (patches, +1 with cls_patch)
  ImageProcessorConfig image_config;
  bool pad_to_square = false;  // --image_aspect_ratio pad
  bool load_pixels = true;     // false: skip decoding (preprocess without pixels)
  bool check_images = false;   // decode images even when load_pixels is false (check-data)
  // Tokenizations of the chunk every image prompt starts with, shared by all samples (optional: without it
  // each sample tokenizes that chunk once). make_data_pipeline sets one for its tokenizer.
  std::shared_ptr<PromptChunkCache> prompt_cache;
};

struct Example {
  int64_t index = 0;
  std::string id;
  std::string prompt;  // rendered template text
  std::vector<int32_t> input_ids, labels;
  std::vector<PixelTensor> pixels;  // one per image, CHW float32
  int num_images = 0;
  int length_with_images = 0;      // input_ids with each -200 counted as image_feature_positions
  int num_target_tokens = 0;       // labels != -100
  std::string warning;             // e.g. LLaVA's tokenization-mismatch warning (sample still used)
};

// Throws llava::Error "sample I (id 'X'): reason" for a bad sample: marker/image count mismatch, an
// image that cannot be read or decoded, a sample longer than model_max_length after image expansion.
Example build_example(const Sample& sample, const ExampleOptions& options);

// Encoded bytes of a sample's image (file contents, or the base64-decoded bytes).
std::vector<uint8_t> read_image_bytes(const ImageRef& ref, const std::string& context);

}  // namespace llava
