#pragma once
// Tokenizing a sample's prompt and its rounds, as the example builder needs it, with less tokenizer work:
// LLaVA's tokenizer_image_token (join_image_chunks, as Tokenizer::encode_with_image_tokens) with the chunk
// before a prompt's first <image> tokenized once instead of for every use. That chunk is the template's system prompt and first role ("A chat between ... USER: ") for every
// image sample with --image_placement front; the builder tokenizes it for the prompt, for the first round
// and for that round's instruction, and again for the next sample. Results are identical to calling the
// tokenizer (tests/test_dataset_index.cpp compares them).
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "llava/tokenizer.h"

namespace llava {

// First chunks already tokenized, shared by the threads of a loader (at most kMaxEntries of them; a
// template has one). Belongs to one tokenizer.
class PromptChunkCache {
 public:
  static constexpr size_t kMaxEntries = 64;
  explicit PromptChunkCache(const Tokenizer& tokenizer) : tokenizer_(&tokenizer) {}
  const Tokenizer* tokenizer() const { return tokenizer_; }
  bool find(const std::string& chunk, std::vector<int>& ids) const;
  void add(const std::string& chunk, const std::vector<int>& ids);

 private:
  const Tokenizer* tokenizer_;
  mutable std::mutex mu_;
  std::map<std::string, std::vector<int>> chunks_;
};

// One sample's tokenizations. `cache` may be null (or made for another tokenizer: then it is not used).
class PromptTokenizer {
 public:
  PromptTokenizer(const Tokenizer& tokenizer, PromptChunkCache* cache);
  // image_tokens: tokenizer.encode_with_image_tokens(text), else tokenizer.encode(text).
  std::vector<int> encode(const std::string& text, bool image_tokens);
  size_t length(const std::string& text, bool image_tokens);

 private:
  const std::vector<int>& first_chunk(const std::string& chunk);
  const Tokenizer& tok_;
  PromptChunkCache* cache_;
  std::string last_chunk_;  // this sample's first chunk and its ids
  std::vector<int> last_ids_;
  bool have_last_ = false;
};

}  // namespace llava
