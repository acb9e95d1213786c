#pragma once
// One sample -> what the model trains on: template -> tokenizer -> input_ids (-200 per image) and
// labels (-100 except answers, LLaVA's preprocess_v1 / preprocess_llama_2 / preprocess_mpt /
// preprocess_plain; LLaVA-NeXT's preprocess_qwen for qwen_1_5, which also supervises the "\n",
// <|im_start|> and <|im_end|> tokens of system and user turns), and the decoded, CLIP/SigLIP-preprocessed
// images (anyres: tiled, include/llava/anyres.h).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "llava/anyres.h"
#include "llava/conversation.h"
#include "llava/dataset.h"
#include "llava/image.h"
#include "llava/tokenizer.h"

namespace llava {

class PromptChunkCache;  // prompt_tokens.h

struct ExampleOptions {
  const Tokenizer* tokenizer = nullptr;
  const ConversationTemplate* conversation = nullptr;
  ImagePlacement placement = ImagePlacement::kFront;
  int model_max_length = 2048;
  int image_feature_positions = 576;  // LLM positions one image occupies (patches, +1 with cls_patch)
  ImageProcessorConfig image_config;
  bool pad_to_square = false;  // --image_aspect_ratio pad
  // --image_aspect_ratio anyres: images are tiled and take their layout's positions (not
  // image_feature_positions). Images are then always decoded, at full size: their sizes decide the tiling.
  std::optional<AnyresConfig> anyres;
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
  std::vector<PixelTensor> pixels;  // one per image, CHW float32; anyres: [P, 3, S, S] (tiles = P)
  int num_images = 0;
  int length_with_images = 0;      // input_ids with each -200 counted as the image's positions
  int num_target_tokens = 0;       // labels != -100
  std::string warning;             // LLaVA's tokenization-mismatch warning, the tile budget's note ("; " between)
  // anyres only (empty otherwise), one entry per image in marker order:
  std::vector<ImageSize> image_sizes;            // the decoded image's (width, height): the model's image_sizes
  std::vector<AnyresImageLayout> image_layouts;  // tiles P, grid, unpad window, LLM positions
  int images_base_only = 0;                      // images cut to the base tile by --max_tiles_per_sample
  // generation prompts only (build_generation_example):
  std::string question;        // the last human turn as the data has it
  std::string reference;       // the final answer the prompt leaves out ("" when the sample ends with a question)
  bool has_reference = false;
};

// Throws llava::Error "sample I (id 'X'): reason" for a bad sample: marker/image count mismatch, an
// image that cannot be read or decoded, a sample longer than model_max_length after image expansion
// (anyres: with every image's real positions; --max_tiles_per_sample is the way to fit such samples).
Example build_example(const Sample& sample, const ExampleOptions& options);

// --image_aspect_ratio as the options resolved it: "anyres", "pad" or "square" (what the model is told).
std::string image_aspect_ratio_name(const ExampleOptions& options);

// The LLM positions a sample's images can take, before they are decoded (the sampler's length estimate for
// --group_by_length_window): image_feature_positions each, or under anyres each image at its most
// (anyres_max_image_positions), images beyond --max_tiles_per_sample at their base tile's.
int64_t estimated_image_positions(int num_images, const ExampleOptions& options);

// The sample as a generation prompt (LLaVA inference): its turns up to and including the last human turn,
// then the template's assistant prompt (render_generation_prompt; plain: the image markers alone, as in
// pre-training), with the same marker rules, image preprocessing and length check as build_example. Every
// label is -100. Throws as build_example, and when the sample has no human turn.
Example build_generation_example(const Sample& sample, const ExampleOptions& options);

// Encoded bytes of a sample's image (file contents, or the base64-decoded bytes).
std::vector<uint8_t> read_image_bytes(const ImageRef& ref, const std::string& context);

}  // namespace llava
