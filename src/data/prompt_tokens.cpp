#include "llava/prompt_tokens.h"

namespace llava {

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

PromptTokenizer::PromptTokenizer(const Tokenizer& tokenizer, PromptChunkCache* cache)
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

std::vector<int> PromptTokenizer::encode(const std::string& text, bool image_tokens) {
  if (!image_tokens || text.find("<image>") == std::string::npos) return tok_.encode(text);
  return join_image_chunks(text, tok_.bos_id(), [&](const std::string& chunk, size_t k) {
    return k == 0 ? first_chunk(chunk) : tok_.encode(chunk);
  });
}

size_t PromptTokenizer::length(const std::string& text, bool image_tokens) { return encode(text, image_tokens).size(); }

}  // namespace llava
