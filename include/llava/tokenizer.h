#pragma once
// LLaMA tokenizer with the exact behaviour of HF transformers' slow LlamaTokenizer (v4.37.2), over
// libsentencepiece, plus LLaVA's tokenizer_image_token. See ../shared/fixtures/tokenizer/README.md.
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace llava::spm {
class Model;  // libsentencepiece behind a module boundary (src/tokenizer/spm_module.h)
}

namespace llava {

constexpr int kImageTokenIndex = -200;  // LLaVA's IMAGE_TOKEN_INDEX: "<image>" in input_ids
constexpr int kIgnoreIndex = -100;      // label of tokens that are not supervised

class LlamaTokenizer {
 public:
  // dir/tokenizer.model + dir/tokenizer_config.json (legacy, add_bos_token, add_eos_token; missing
  // config = HF defaults: legacy true, bos true, eos false). legacy_override wins over the file.
  static LlamaTokenizer from_dir(const std::string& dir, std::optional<bool> legacy_override = std::nullopt);
  static LlamaTokenizer from_model_file(const std::string& model_path, bool legacy, bool add_bos = true,
                                        bool add_eos = false);

  // tok(text).input_ids: special tokens <s> </s> <unk> written in the text become their ids.
  std::vector<int> encode(const std::string& text) const;
  // LLaVA's tokenizer_image_token: chunks between "<image>" tokenized separately, joined by -200,
  // only the first chunk's BOS kept.
  std::vector<int> encode_with_image_tokens(const std::string& prompt) const;

  std::string id_to_piece(int id) const;  // "<image>" for -200
  int bos_id() const;
  int eos_id() const;
  int unk_id() const;
  int pad_id() const { return unk_id(); }  // LLaVA: pad = unk for every template but v0
  int vocab_size() const;
  bool legacy() const { return legacy_; }

 private:
  struct Specials;  // special-token strings and ids (tokenizer.cpp)
  static LlamaTokenizer load(const std::string& model_path, bool legacy, bool add_bos, bool add_eos,
                             Specials specials);
  std::vector<std::pair<std::string, int>> split_specials(const std::string& text) const;
  std::vector<int> encode_chunk(const std::string& chunk) const;

  std::shared_ptr<spm::Model> sp_;
  std::shared_ptr<const Specials> specials_;
  bool legacy_ = false, add_bos_ = true, add_eos_ = false;
};

// Trains a SentencePiece BPE model (byte fallback, LLaMA-like settings) on a text corpus, one sentence
// per line; writes PREFIX.model. Used by the built-in demo, which must not ship a third-party tokenizer.
void train_sentencepiece(const std::string& corpus_path, const std::string& model_prefix, int vocab_size);

}  // namespace llava
