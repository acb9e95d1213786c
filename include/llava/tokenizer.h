#pragma once
// The tokenizer interface of llava-train's data side, its factory, and the SentencePiece implementation:
// HF transformers' slow LlamaTokenizer (v4.37.2) over libsentencepiece (LLaVA-1.5 / Vicuna / Mistral).
// The byte-level BPE implementation (Qwen2, Llama-3; tokenizer.json) is in bpe_tokenizer.h.
// Reference behaviour: ../shared/fixtures/tokenizer/README.md, ../shared/fixtures/bpe-tokenizer/README.md.
#include <functional>
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

// llava.mm_utils.tokenizer_image_token's arithmetic over a chunk encoder: the prompt is split at every
// literal "<image>", chunk k encoded by encode_chunk(text, k), the chunks joined by kImageTokenIndex; when the
// first chunk starts with bos_id, one BOS is kept and every chunk loses its first id.
std::vector<int> join_image_chunks(const std::string& prompt, int bos_id,
                                   const std::function<std::vector<int>(const std::string&, size_t)>& encode_chunk);

// What the data pipeline, the CLI and generation need from a tokenizer. Implementations are immutable
// after loading, so one instance is shared by every loader thread.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // HF's tok(text, add_special_tokens=...).input_ids: the text of an added/special token becomes its id
  // wherever it occurs; add_special_tokens adds what the tokenizer adds around a text (BOS for LLaMA).
  virtual std::vector<int> encode(const std::string& text, bool add_special_tokens = true) const = 0;
  // LLaVA's / LLaVA-NeXT's tokenizer_image_token: the chunks between literal "<image>"s encoded on their
  // own, joined by kImageTokenIndex; only the first chunk keeps its BOS.
  std::vector<int> encode_with_image_tokens(const std::string& prompt, bool add_special_tokens = true) const;
  // HF's tokenizer.decode(ids, skip_special_tokens=...) for this tokenizer family; kImageTokenIndex is
  // never decoded (skipped).
  virtual std::string decode(const std::vector<int>& ids, bool skip_special_tokens = true) const = 0;

  virtual std::string id_to_piece(int id) const = 0;            // "<image>" for -200; throws when out of range
  virtual int token_to_id(const std::string& token) const = 0;  // a piece or added token ("<|im_start|>"); -1 if absent
  virtual int bos_id() const = 0;  // -1 when the tokenizer has none (the same for the three below)
  virtual int eos_id() const = 0;
  virtual int pad_id() const = 0;
  virtual int unk_id() const = 0;
  virtual int vocab_size() const = 0;  // number of ids, added tokens included (HF's len(tokenizer))
};

// model_dir/tokenizer.model -> LlamaTokenizer (SentencePiece; LLaVA loads LLaMA-family tokenizers with
// use_fast=False, and their folders often ship a tokenizer.json too), else model_dir/tokenizer.json ->
// BpeTokenizer. legacy_override applies to SentencePiece only (an error with a tokenizer.json). Throws
// llava::Error naming the folder.
std::shared_ptr<const Tokenizer> load_tokenizer(const std::string& model_dir,
                                                std::optional<bool> legacy_override = std::nullopt);

class LlamaTokenizer : public Tokenizer {
 public:
  // dir/tokenizer.model + dir/tokenizer_config.json (legacy, add_bos_token, add_eos_token,
  // clean_up_tokenization_spaces; missing config = HF defaults: legacy true, bos true, eos false, clean-up
  // false). legacy_override wins over the file.
  static LlamaTokenizer from_dir(const std::string& dir, std::optional<bool> legacy_override = std::nullopt);
  static LlamaTokenizer from_model_file(const std::string& model_path, bool legacy, bool add_bos = true,
                                        bool add_eos = false);

  // Special tokens <s> </s> <unk> written in the text become their ids.
  std::vector<int> encode(const std::string& text, bool add_special_tokens = true) const override;
  // Slow LlamaTokenizer.decode: specials skipped (or kept as their text), one leading "▁" of the first
  // piece dropped, the rest SentencePiece-decoded ("▁" -> space, <0xNN> pieces -> bytes).
  std::string decode(const std::vector<int>& ids, bool skip_special_tokens = true) const override;

  std::string id_to_piece(int id) const override;
  int token_to_id(const std::string& token) const override;
  int bos_id() const override;
  int eos_id() const override;
  int unk_id() const override;
  int pad_id() const override { return unk_id(); }  // LLaVA: pad = unk for every template but v0
  int vocab_size() const override;
  bool legacy() const { return legacy_; }

 private:
  struct Specials;  // special-token strings and ids (tokenizer.cpp)
  static LlamaTokenizer load(const std::string& model_path, bool legacy, bool add_bos, bool add_eos,
                             Specials specials);
  std::vector<std::pair<std::string, int>> split_specials(const std::string& text) const;
  std::vector<int> encode_chunk(const std::string& chunk) const;
  std::string tokens_to_string(std::vector<std::string> tokens) const;

  std::shared_ptr<spm::Model> sp_;
  std::shared_ptr<const Specials> specials_;
  bool legacy_ = false, add_bos_ = true, add_eos_ = false, clean_up_spaces_ = false;
};

// Trains a SentencePiece BPE model (byte fallback, LLaMA-like settings) on a text corpus, one sentence
// per line; writes PREFIX.model. Used by the built-in demo, which must not ship a third-party tokenizer.
void train_sentencepiece(const std::string& corpus_path, const std::string& model_prefix, int vocab_size);

}  // namespace llava
