// Byte-level BPE encode/decode with HF tokenizers' behaviour (see bpe_tokenizer.h and
// ../shared/fixtures/bpe-tokenizer/README.md); loading is in bpe_load.cpp.
#include "llava/bpe_tokenizer.h"

#include <algorithm>
#include <filesystem>

#include "bpe_model.h"
#include "hf_config.h"
#include "llava/error.h"
#include "unicode_bytes.h"

namespace llava {
namespace {

// A pair of adjacent symbols that a merge joins; ordered so that the heap top is the lowest rank, leftmost.
struct Candidate {
  int rank, pos, left, right, merged;
  bool operator<(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

struct Symbol {
  int id, prev, next;  // id -1: merged into its left neighbour
};

}  // namespace

// HF's BPE::merge_word: start from one symbol per byte, repeatedly apply the merge of lowest rank
// (leftmost on ties) until none applies. A heap of candidate pairs, re-checked when popped, makes it
// O(n log n) in the word length (runs of 1500 equal characters are one pre-token).
void BpeTokenizer::Model::encode_word(std::string_view word, std::vector<int>* out) const {
  if (ignore_merges && word.size() > 1) {  // a pre-token that is a vocabulary entry is that entry
    auto it = raw_word_ids.find(std::string(word));
    if (it != raw_word_ids.end()) {
      out->push_back(it->second);
      return;
    }
  }
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;
  symbols.clear();
  heap.clear();
  for (size_t i = 0; i < word.size(); ++i) {
    const int id = byte_ids[static_cast<unsigned char>(word[i])];
    if (id < 0)
      throw Error("tokenizer: " + source + ": byte " + std::to_string(static_cast<unsigned char>(word[i])) +
                  " has no token in the vocabulary");
    symbols.push_back({id, static_cast<int>(i) - 1, i + 1 < word.size() ? static_cast<int>(i) + 1 : -1});
  }
  auto push_pair = [&](int pos) {  // queue the pair (pos, its right neighbour) if a merge joins it
    const int next = symbols[static_cast<size_t>(pos)].next;
    if (next < 0) return;
    const int left = symbols[static_cast<size_t>(pos)].id, right = symbols[static_cast<size_t>(next)].id;
    auto it = merges.find(static_cast<uint64_t>(left) << 32 | static_cast<uint32_t>(right));
    if (it == merges.end()) return;
    heap.push_back({it->second.rank, pos, left, right, it->second.id});
    std::push_heap(heap.begin(), heap.end());
  };
  for (int pos = 0; pos + 1 < static_cast<int>(symbols.size()); ++pos) push_pair(pos);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const Candidate c = heap.back();
    heap.pop_back();
    Symbol& s = symbols[static_cast<size_t>(c.pos)];
    // stale: one of the two symbols has been merged into something else since the pair was queued
    if (s.id != c.left || s.next < 0 || symbols[static_cast<size_t>(s.next)].id != c.right) continue;
    Symbol& gone = symbols[static_cast<size_t>(s.next)];
    s.id = c.merged;
    s.next = gone.next;
    gone.id = -1;
    if (s.next >= 0) symbols[static_cast<size_t>(s.next)].prev = c.pos;
    if (s.prev >= 0) push_pair(s.prev);
    push_pair(c.pos);
  }
  for (int pos = 0; pos >= 0; pos = symbols[static_cast<size_t>(pos)].next) out->push_back(symbols[static_cast<size_t>(pos)].id);
}

void BpeTokenizer::Model::encode_text(std::string_view text, std::vector<int>* out) const {
  thread_local std::vector<std::pair<size_t, size_t>> pieces;
  pre_tokenizer->split(text, &pieces);
  for (const auto& [begin, end] : pieces) {
    if (end - begin == 1) {
      const int id = byte_ids[static_cast<unsigned char>(text[begin])];
      if (id >= 0) {
        out->push_back(id);
        continue;
      }
    }
    encode_word(text.substr(begin, end - begin), out);
  }
}

BpeTokenizer BpeTokenizer::from_dir(const std::string& dir) {
  const std::filesystem::path d(dir);
  const auto config = d / "tokenizer_config.json";
  return from_files((d / "tokenizer.json").string(), std::filesystem::exists(config) ? config.string() : "");
}

BpeTokenizer BpeTokenizer::from_files(const std::string& tokenizer_json_path, const std::string& config_path) {
  BpeTokenizer tok;
  tok.model_ = Model::load(tokenizer_json_path, config_path);
  return tok;
}

// HF tokenizers' encode: added tokens out of the raw text, the normalizer on what is between them, the
// normalized added tokens out of that, then pre-tokenizer + BPE on each remaining piece on its own.
std::vector<int> BpeTokenizer::encode(const std::string& text, bool add_special_tokens) const {
  const Model& m = *model_;
  if (const size_t bad = unicode::invalid_utf8_offset(text); bad != std::string::npos)
    throw Error("tokenizer: text is not valid UTF-8 (byte offset " + std::to_string(bad) + ")");
  std::vector<int> ids;
  ids.reserve(text.size() / 3 + m.prefix_ids.size() + m.suffix_ids.size() + 1);
  if (add_special_tokens) ids.insert(ids.end(), m.prefix_ids.begin(), m.prefix_ids.end());
  auto encode_plain = [&](std::string_view plain, int normalized_added_id) {
    if (normalized_added_id >= 0)
      ids.push_back(normalized_added_id);
    else
      m.encode_text(plain, &ids);
  };
  m.raw_added.split(text, [&](std::string_view piece, int added_id) {
    if (added_id >= 0) {
      ids.push_back(added_id);
      return;
    }
    const bool ascii = std::all_of(piece.begin(), piece.end(), [](char c) { return (c & 0x80) == 0; });
    const std::string normalized = m.nfc && !ascii ? unicode::nfc(piece) : std::string();  // NFC(ASCII) = ASCII
    const std::string_view plain = m.nfc && !ascii ? std::string_view(normalized) : piece;
    if (m.normalized_added.empty())
      m.encode_text(plain, &ids);
    else
      m.normalized_added.split(plain, encode_plain);
  });
  if (add_special_tokens) ids.insert(ids.end(), m.suffix_ids.begin(), m.suffix_ids.end());
  return ids;
}

// tokenizers' Tokenizer::decode with the ByteLevel decoder: the bytes of every token, joined, read as
// UTF-8 with errors replaced (Rust's from_utf8_lossy = Python's errors="replace").
std::string BpeTokenizer::decode(const std::vector<int>& ids, bool skip_special_tokens) const {
  const Model& m = *model_;
  std::string bytes;
  for (int id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= m.pieces.size() || !m.known[static_cast<size_t>(id)]) continue;
    if (skip_special_tokens && m.special[static_cast<size_t>(id)]) continue;
    bytes += m.id_bytes[static_cast<size_t>(id)];
  }
  std::string text = unicode::utf8_replace_invalid(bytes);
  return m.clean_up_spaces ? hf::clean_up_tokenization(std::move(text)) : text;
}

std::string BpeTokenizer::id_to_piece(int id) const {
  if (id == kImageTokenIndex) return "<image>";
  const Model& m = *model_;
  if (id < 0 || static_cast<size_t>(id) >= m.pieces.size() || !m.known[static_cast<size_t>(id)])
    throw Error("tokenizer: id " + std::to_string(id) + " is not a token of " + m.source);
  return m.pieces[static_cast<size_t>(id)];
}

int BpeTokenizer::token_to_id(const std::string& token) const {
  auto it = model_->token_ids.find(token);
  return it == model_->token_ids.end() ? -1 : it->second;
}

int BpeTokenizer::bos_id() const { return model_->bos; }
int BpeTokenizer::eos_id() const { return model_->eos; }
int BpeTokenizer::pad_id() const { return model_->pad; }
int BpeTokenizer::unk_id() const { return model_->unk; }
int BpeTokenizer::vocab_size() const { return static_cast<int>(model_->pieces.size()); }
bool BpeTokenizer::normalizes_nfc() const { return model_->nfc; }
bool BpeTokenizer::ignores_merges() const { return model_->ignore_merges; }

}  // namespace llava
