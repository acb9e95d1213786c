#include "llava/prompt_tokens.h"

#include <algorithm>

namespace llava {
namespace {

const std::string kImageMarker = "<image>";

}  // namespace

bool PromptChunkCache::find(const std::string& chunk, std::vector<int>& ids) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = chunks_.find(chunk);
  if (it == chunks_.end()) return false;
  ids = it->second;
  return true;
}

void PromptChunkCache::add(const std::string& chunk, const std::vector<int>& ids) {
  std::lock_guard<std::mutex> lock(mu_);
  if (chunks_.size() < kMaxEntries) chunks_.emplace(chunk, ids);
}

PromptTokenizer::PromptTokenizer(const LlamaTokenizer& tokenizer, PromptChunkCache* cache)
    : tok_(tokenizer), cache_(cache && cache->tokenizer() == &tokenizer ? cache : nullptr) {}

const std::vector<int>& PromptTokenizer::first_chunk(const std::string& chunk) {
  if (have_last_ && chunk == last_chunk_) return last_ids_;
  last_chunk_ = chunk;
  have_last_ = true;
  if (cache_ && cache_->find(chunk, last_ids_)) return last_ids_;
  last_ids_ = tok_.encode(chunk);
  if (cache_) cache_->add(chunk, last_ids_);
  return last_ids_;
}

// llava.mm_utils.tokenizer_image_token: every chunk between markers tokenized with its BOS; when the
// first chunk starts with BOS, one BOS is kept and every chunk loses its own (the x[offset:] of the
// separator [-200] * (offset + 1) leaves one -200 per marker).
std::vector<int> PromptTokenizer::encode(const std::string& text, bool image_tokens) {
  const size_t marker = image_tokens ? text.find(kImageMarker) : std::string::npos;
  if (marker == std::string::npos) return tok_.encode(text);
  const std::vector<int>& first = first_chunk(text.substr(0, marker));
  const size_t offset = !first.empty() && first[0] == tok_.bos_id() ? 1 : 0;
  std::vector<int> ids;
  if (offset) ids.push_back(tok_.bos_id());
  ids.insert(ids.end(), first.begin() + static_cast<std::ptrdiff_t>(std::min(offset, first.size())), first.end());
  for (size_t start = marker + kImageMarker.size();;) {
    ids.push_back(kImageTokenIndex);
    const size_t next = text.find(kImageMarker, start);
    const std::vector<int> chunk =
        tok_.encode(text.substr(start, next == std::string::npos ? std::string::npos : next - start));
    if (chunk.size() > offset) ids.insert(ids.end(), chunk.begin() + static_cast<std::ptrdiff_t>(offset), chunk.end());
    if (next == std::string::npos) break;
    start = next + kImageMarker.size();
  }
  return ids;
}

size_t PromptTokenizer::length(const std::string& text, bool image_tokens) { return encode(text, image_tokens).size(); }

}  // namespace llava
