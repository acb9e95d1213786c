#pragma once
// The JSON of one sample, read with simdjson On-Demand straight from the data file's bytes (no copy of the
// sample, no std::string per base64 image). Two reads: the index's (validate the whole sample, take its id,
// image count and LLaVA's modality length) and the sample's (turns and images, when the loader asks).
// Internal to src/data (dataset_index.cpp, dataset.cpp).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "llava/dataset.h"

namespace llava::sample_json {

struct Stats {
  std::string id = "?";         // `id` as a string (other JSON values as nlohmann dumps them)
  int32_t modality_length = 0;  // words of all turns (at least 1), > 0 with images, < 0 without
  int32_t image_count = 0;      // `image` and `images` entries
};

struct Invalid {
  size_t offset = 0;    // byte offset in the sample where the JSON is wrong
  std::string reason;   // nlohmann's parse error (the messages the index always gave)
};

// The index's read of one sample: bytes [json, json + size), of which `readable` are safe to read
// (>= size + MappedFile::kPadding). Validates the whole value. Returns false with `invalid` set when the
// text is not valid JSON. Values are those of LLaVA's LazySupervisedDataset.modality_lengths. Whatever
// simdjson refuses goes to nlohmann, whose verdict and messages are the index's: the rare sample it reads
// (nested deeper than simdjson's 1024 levels) is indexed through it.
bool index_stats(const char* json, size_t size, size_t readable, Stats& stats, Invalid& invalid);

// The loader's read: turns and images of sample `index` (id for messages). Throws llava::Error
// "sample I (id 'X'): reason" for a malformed sample (the checks and messages of dataset.h) and for a
// LLaVA-NeXT video sample (a `video` key: not supported yet); a single human turn only with allow_unanswered
// (generation prompts).
Sample parse_sample(const char* json, size_t size, size_t readable, int64_t index, const std::string& id,
                    const std::string& image_folder, bool allow_unanswered);

}  // namespace llava::sample_json
