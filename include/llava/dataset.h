#pragma once
// The training data: a JSON array in LLaVA's list format, indexed up front (byte range, id, modality
// length per sample) and parsed sample by sample when the sampler asks (lazy, as LLaVA's
// LazySupervisedDataset). Validation of a sample's shape happens in sample(); images are only named here.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "llava/conversation.h"

namespace llava {

struct ImageRef {
  enum class Kind { kPath, kInline };  // kInline: base64 in the JSON, already decoded into bytes
  Kind kind = Kind::kPath;
  std::string path;            // resolved path (kPath)
  std::string where;           // "image[1]", "images[0]": for error messages
  std::vector<uint8_t> bytes;  // encoded image file bytes (kInline)
};

struct Sample {
  int64_t index = 0;
  std::string id;
  std::vector<Turn> turns;  // leading non-human turns dropped, roles alternate human/gpt
  std::vector<ImageRef> images;  // `image` entries first, then `images`
};

class Dataset {
 public:
  // Reads and indexes the file. Invalid JSON is fatal: llava::Error with file, line and column.
  static Dataset open(const std::string& json_path, const std::string& image_folder);
  // From JSON text in memory (tests, demo).
  static Dataset from_text(std::string text, const std::string& image_folder, const std::string& name = "<memory>");

  size_t size() const { return index_.size(); }
  const std::string& path() const { return path_; }
  // The sample's id as a string ("?" when it has none), for messages even about malformed samples.
  const std::string& id(size_t i) const { return index_[i].id; }
  // LLaVA's modality_lengths: word count of all turns, positive with images, negative without.
  int32_t modality_length(size_t i) const { return index_[i].modality_length; }
  bool has_images(size_t i) const { return index_[i].modality_length > 0; }
  // How many images the sample names (`image` and `images` entries), as counted when indexing.
  int32_t image_count(size_t i) const { return index_[i].image_count; }

  // Generation prompts (generate): a conversation may be a single human turn. Training needs an answer, so
  // by default such a sample is malformed.
  void set_allow_unanswered(bool allow) { allow_unanswered_ = allow; }

  // Parses and validates sample i. Throws llava::Error "sample I (id 'X'): reason" for a malformed
  // sample (not an object, no conversations, wrong roles, non-string values, bad image entries).
  Sample sample(size_t i) const;

 private:
  struct Entry {
    uint64_t begin = 0, end = 0;  // byte range of the element in text_
    std::string id;
    int32_t modality_length = 0;
    int32_t image_count = 0;
  };
  void build_index();
  std::shared_ptr<const std::string> text_;
  std::string path_, image_folder_;
  std::vector<Entry> index_;
  bool allow_unanswered_ = false;
};

// true when bytes start like an image file we can decode (JPEG, PNG, GIF, BMP, ...).
bool looks_like_image(const uint8_t* data, size_t size);

}  // namespace llava
