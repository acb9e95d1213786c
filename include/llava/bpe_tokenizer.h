#pragma once
// Byte-level BPE from a HF tokenizer.json (Qwen2 / Qwen2.5 / Qwen3, Llama-3: LLaVA-NeXT and LLaVA-OneVision),
// with the behaviour of HF `tokenizers` (the fast tokenizer LLaVA-NeXT's AutoTokenizer loads):
//   added tokens split out of the raw text (leftmost, longest) -> normalizer (none or NFC) -> the
//   pre-tokenizer's Split regex -> UTF-8 bytes in the byte-level alphabet -> merges by rank (or, with
//   ignore_merges, a pre-token that is itself in the vocabulary as one id).
// Decoding is the ByteLevel decoder: token strings back to bytes, invalid UTF-8 replaced by U+FFFD.
// Rules and fixtures: ../shared/fixtures/bpe-tokenizer/README.md.
#include <memory>
#include <string>

#include "llava/tokenizer.h"

namespace llava {

class BpeTokenizer : public Tokenizer {
 public:
  // dir/tokenizer.json + dir/tokenizer_config.json (optional): bos/eos/pad/unk tokens, add_bos_token,
  // add_eos_token, clean_up_tokenization_spaces.
  static BpeTokenizer from_dir(const std::string& dir);
  // config_path may be empty (no tokenizer_config.json: no BOS/EOS/pad/unk).
  static BpeTokenizer from_files(const std::string& tokenizer_json_path, const std::string& config_path);

  // BOS/EOS when add_special_tokens: the tokenizer.json's TemplateProcessing post-processor when it has one;
  // otherwise tokenizer_config.json's add_bos_token / add_eos_token, where an absent add_bos_token means
  // "add bos_token if there is one" (the first Llama-3 release's file adds nothing, but Meta's reference and
  // the updated file start every model input with <|begin_of_text|>; Qwen has no BOS).
  std::vector<int> encode(const std::string& text, bool add_special_tokens = true) const override;
  // tokenizers' decode: unknown ids dropped, added tokens with special=true dropped when asked, then
  // clean_up_tokenization when tokenizer_config.json says so (absent: true, transformers 4.37.2's default).
  std::string decode(const std::vector<int>& ids, bool skip_special_tokens = true) const override;

  std::string id_to_piece(int id) const override;  // byte-level form ("Ġworld"), an added token's text
  int token_to_id(const std::string& token) const override;
  int bos_id() const override;
  int eos_id() const override;
  int pad_id() const override;
  int unk_id() const override;
  int vocab_size() const override;

  bool normalizes_nfc() const;  // the file's normalizer is NFC (Qwen)
  bool ignores_merges() const;  // model.ignore_merges (Llama-3)

  struct Model;  // vocabulary, merges, regex, added tokens (bpe_tokenizer.cpp)

 private:
  std::shared_ptr<const Model> model_;
};

}  // namespace llava
