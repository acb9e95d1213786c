#pragma once
// What a BpeTokenizer holds after reading tokenizer.json (bpe_load.cpp) and how it encodes (bpe_tokenizer.cpp).
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "llava/bpe_tokenizer.h"
#include "split_regex.h"

namespace llava {

// Added tokens of one kind (matched on raw text, or on normalized text), found leftmost-longest like HF's
// added-vocabulary trie. Buckets by first byte keep the scan to one table look-up per byte.
class AddedTokenMatcher {
 public:
  void add(std::string content, int id);
  bool empty() const { return count_ == 0; }
  // Calls emit(text, -1) for ordinary text and emit(token_text, id) for each added token, in order;
  // empty ordinary pieces are not emitted.
  template <class Emit>
  void split(std::string_view text, Emit&& emit) const;

 private:
  // (content, id), longest first within a bucket
  std::array<std::vector<std::pair<std::string, int>>, 256> by_first_byte_;
  size_t count_ = 0;
};

struct BpeTokenizer::Model {
  struct Merge {
    int rank;
    int id;  // the merged token
  };
  std::string source;                 // tokenizer.json path, for messages
  std::vector<std::string> pieces;    // id -> vocabulary string (byte-level) or added token text; "" = no such id
  std::vector<std::string> id_bytes;  // id -> what the ByteLevel decoder makes of it
  std::vector<uint8_t> known, added, special;         // per id: exists; an added token; one with special=true
  std::unordered_map<std::string, int> token_ids;     // token_to_id: added tokens, then the vocabulary
  std::unordered_map<std::string, int> raw_word_ids;  // raw bytes -> vocabulary id (for ignore_merges)
  std::unordered_map<uint64_t, Merge> merges;         // (left id << 32 | right id) -> rank, merged id
  std::array<int, 256> byte_ids{};                    // the one-byte token of each byte, -1 if none
  AddedTokenMatcher raw_added, normalized_added;
  std::optional<SplitRegex> pre_tokenizer;
  bool nfc = false, ignore_merges = false, clean_up_spaces = true;
  std::vector<int> prefix_ids, suffix_ids;  // added around a text when add_special_tokens
  int bos = -1, eos = -1, pad = -1, unk = -1;

  static std::shared_ptr<const Model> load(const std::string& tokenizer_json_path, const std::string& config_path);

  // Ordinary text (no added tokens in it) -> ids appended to *out.
  void encode_text(std::string_view text, std::vector<int>* out) const;
  // One pre-token (its raw bytes) -> ids appended to *out.
  void encode_word(std::string_view word, std::vector<int>* out) const;
};

template <class Emit>
void AddedTokenMatcher::split(std::string_view text, Emit&& emit) const {
  size_t plain_begin = 0;
  for (size_t i = 0; i < text.size();) {
    const auto& bucket = by_first_byte_[static_cast<unsigned char>(text[i])];
    const std::pair<std::string, int>* found = nullptr;
    for (const auto& token : bucket) {
      if (text.compare(i, token.first.size(), token.first) == 0) {
        found = &token;
        break;
      }
    }
    if (!found) {
      ++i;
      continue;
    }
    if (i > plain_begin) emit(text.substr(plain_begin, i - plain_begin), -1);
    emit(text.substr(i, found->first.size()), found->second);
    i += found->first.size();
    plain_begin = i;
  }
  if (plain_begin < text.size()) emit(text.substr(plain_begin), -1);
}

}  // namespace llava
