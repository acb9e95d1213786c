// HF transformers 4.37.2 slow LlamaTokenizer over libsentencepiece, plus LLaVA's tokenizer_image_token.
// The reference behaviour (and the fixtures that pin it) is described in
// ../shared/fixtures/tokenizer/README.md; the Python it mirrors is quoted in the comments below.
#include "llava/tokenizer.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "llava/error.h"
#include "llava/text_util.h"
#include "hf_config.h"
#include "llava/bpe_tokenizer.h"
#include "spm_module.h"

namespace llava {
namespace {

const std::string kSpieceUnderline = "\xE2\x96\x81";  // "▁" (U+2581), SentencePiece's space mark
const std::string kImageToken = "<image>";

// A serialized ModelProto fragment: field 3 (normalizer_spec, length-delimited, 2 bytes) holding field 3
// (add_dummy_prefix, varint) = 0. Protobuf merges repeated occurrences of a singular message field, so
// appending it to a model equals HF's `model.normalizer_spec.MergeFrom(NormalizerSpec(add_dummy_prefix=
// False))` without needing sentencepiece_model.pb.h (not shipped by Debian's libsentencepiece-dev).
const std::string kNoDummyPrefixPatch("\x1a\x02\x18\x00", 4);

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

std::vector<int> join_image_chunks(const std::string& prompt, int bos_id,
                                   const std::function<std::vector<int>(const std::string&, size_t)>& encode_chunk) {
  std::vector<int> ids;
  size_t offset = 0;
  for (size_t start = 0, k = 0;; ++k) {
    const size_t pos = prompt.find(kImageToken, start);
    const std::vector<int> chunk =
        encode_chunk(prompt.substr(start, pos == std::string::npos ? std::string::npos : pos - start), k);
    if (k == 0 && !chunk.empty() && bos_id >= 0 && chunk[0] == bos_id) {
      offset = 1;
      ids.push_back(bos_id);
    }
    if (k > 0) ids.push_back(kImageTokenIndex);  // the separator [-200] * (offset + 1), cut by x[offset:]
    if (chunk.size() > offset) ids.insert(ids.end(), chunk.begin() + static_cast<std::ptrdiff_t>(offset), chunk.end());
    if (pos == std::string::npos) break;
    start = pos + kImageToken.size();
  }
  return ids;
}

// llava.mm_utils.tokenizer_image_token (LLaVA and LLaVA-NeXT alike): every chunk is tokenized with the
// tokenizer's special tokens, and the BOS of every chunk after the first is dropped only when the tokenizer
// adds one.
std::vector<int> Tokenizer::encode_with_image_tokens(const std::string& prompt, bool add_special_tokens) const {
  return join_image_chunks(prompt, bos_id(),
                           [&](const std::string& chunk, size_t) { return encode(chunk, add_special_tokens); });
}

std::shared_ptr<const Tokenizer> load_tokenizer(const std::string& model_dir, std::optional<bool> legacy_override) {
  const std::filesystem::path dir(model_dir);
  if (std::filesystem::exists(dir / "tokenizer.model"))
    return std::make_shared<const LlamaTokenizer>(LlamaTokenizer::from_dir(model_dir, legacy_override));
  if (std::filesystem::exists(dir / "tokenizer.json")) {
    if (legacy_override)
      throw Error("tokenizer: '" + model_dir + "': legacy applies to SentencePiece (tokenizer.model) only; this "
                  "folder has a byte-level BPE tokenizer.json");
    return std::make_shared<const BpeTokenizer>(BpeTokenizer::from_dir(model_dir));
  }
  throw Error("tokenizer: '" + model_dir +
              "' has neither tokenizer.model (SentencePiece) nor tokenizer.json (byte-level BPE)");
}

// Special-token strings (from tokenizer_config.json) and their ids; defined here to keep the header small.
struct LlamaTokenizer::Specials {
  std::string bos_text = "<s>", eos_text = "</s>", unk_text = "<unk>";
  int bos = 1, eos = 2, unk = 0;
  int unk_piece_count = 0;  // HF's unk_token_length: pieces of unk_text encoded without dummy prefix
};

LlamaTokenizer LlamaTokenizer::from_dir(const std::string& dir, std::optional<bool> legacy_override) {
  std::string config_path;
  const nlohmann::json cfg = hf::read_tokenizer_config(dir, &config_path);
  const bool legacy = legacy_override ? *legacy_override : hf::config_flag(cfg, "legacy", config_path).value_or(true);
  Specials specials;
  specials.bos_text = hf::special_token_text(cfg, "bos_token", config_path).value_or(specials.bos_text);
  specials.eos_text = hf::special_token_text(cfg, "eos_token", config_path).value_or(specials.eos_text);
  specials.unk_text = hf::special_token_text(cfg, "unk_token", config_path).value_or(specials.unk_text);
  LlamaTokenizer tok = load((std::filesystem::path(dir) / "tokenizer.model").string(), legacy,
                            hf::config_flag(cfg, "add_bos_token", config_path).value_or(true),
                            hf::config_flag(cfg, "add_eos_token", config_path).value_or(false), specials);
  // LlamaTokenizer.__init__'s default is False (the base class's True does not apply).
  tok.clean_up_spaces_ = hf::config_flag(cfg, "clean_up_tokenization_spaces", config_path).value_or(false);
  return tok;
}

LlamaTokenizer LlamaTokenizer::from_model_file(const std::string& model_path, bool legacy, bool add_bos,
                                               bool add_eos) {
  return load(model_path, legacy, add_bos, add_eos, Specials());
}

LlamaTokenizer LlamaTokenizer::load(const std::string& model_path, bool legacy, bool add_bos, bool add_eos,
                                    Specials specials) {
  std::string proto = hf::read_file(model_path);
  // HF get_spm_processor: legacy loads the model as-is; non-legacy turns off the dummy prefix and adds
  // the "▁" itself (only at the start of the text, not after special tokens).
  if (!legacy) proto += kNoDummyPrefixPatch;
  std::string error;
  std::shared_ptr<spm::Model> processor(spm::module().load(proto, &error));
  if (!processor) throw Error("tokenizer: cannot load SentencePiece model '" + model_path + "': " + error);

  LlamaTokenizer tok;
  tok.sp_ = std::move(processor);
  tok.legacy_ = legacy;
  tok.add_bos_ = add_bos;
  tok.add_eos_ = add_eos;
  auto id_of = [&](const std::string& piece) {
    const int id = tok.sp_->piece_to_id(piece);
    if (tok.sp_->id_to_piece(id) != piece)
      throw Error("tokenizer: special token '" + piece + "' is not in the vocabulary of '" + model_path + "'");
    return id;
  };
  specials.bos = id_of(specials.bos_text);
  specials.eos = id_of(specials.eos_text);
  specials.unk = id_of(specials.unk_text);
  std::vector<int> unk_ids;
  tok.sp_->encode(specials.unk_text, &unk_ids);
  specials.unk_piece_count = static_cast<int>(unk_ids.size());
  tok.specials_ = std::make_shared<const Specials>(std::move(specials));
  return tok;
}

// Split on the special-token strings, leftmost first (HF's added-tokens trie; these tokens all start with
// '<' and contain no other '<', so matches can never overlap). Specials are never stripped (lstrip and
// rstrip false). Chunks come out as (text, special id or -1); empty texts are dropped like HF does.
std::vector<std::pair<std::string, int>> LlamaTokenizer::split_specials(const std::string& text) const {
  const std::pair<const std::string*, int> specials[] = {
      {&specials_->bos_text, specials_->bos}, {&specials_->eos_text, specials_->eos},
      {&specials_->unk_text, specials_->unk}};
  std::vector<std::pair<std::string, int>> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t best = std::string::npos, best_len = 0;
    int best_id = -1;
    for (const auto& [s, id] : specials) {
      if (s->empty()) continue;
      const size_t pos = text.find(*s, start);
      if (pos < best || (pos == best && pos != std::string::npos && s->size() > best_len)) {
        best = pos;
        best_len = s->size();
        best_id = id;
      }
    }
    if (best == std::string::npos) {
      out.emplace_back(text.substr(start), -1);
      break;
    }
    if (best > start) out.emplace_back(text.substr(start, best - start), -1);
    out.emplace_back(text.substr(best, best_len), best_id);
    start = best + best_len;
  }
  return out;
}

// LlamaTokenizer._tokenize: in non-legacy mode a chunk starting with a space is encoded as unk + chunk and
// the unk pieces dropped, so that the (disabled) dummy prefix cannot eat or add a leading space.
std::vector<int> LlamaTokenizer::encode_chunk(const std::string& chunk) const {
  std::vector<int> ids;
  if (legacy_ || !(starts_with(chunk, kSpieceUnderline) || starts_with(chunk, " "))) {
    sp_->encode(chunk, &ids);
    return ids;
  }
  sp_->encode(specials_->unk_text + chunk, &ids);
  const size_t n = static_cast<size_t>(specials_->unk_piece_count);
  if (ids.size() >= n) ids.erase(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n));
  return ids;
}

std::vector<int> LlamaTokenizer::encode(const std::string& text, bool add_special_tokens) const {
  std::vector<int> tokens;  // HF's tokenize() result, before BOS/EOS
  bool second_is_special = false;
  if (!text.empty()) {
    // LlamaTokenizer.tokenize (non-legacy): "▁" + text.replace("▁", " "); legacy passes the text as-is.
    const std::string input = legacy_ ? text : kSpieceUnderline + replace_all(text, kSpieceUnderline, " ");
    for (const auto& [chunk, special_id] : split_specials(input)) {
      if (special_id >= 0) {
        second_is_special = second_is_special || tokens.size() == 1;
        tokens.push_back(special_id);
      } else {
        const auto ids = encode_chunk(chunk);
        tokens.insert(tokens.end(), ids.begin(), ids.end());
      }
    }
  }
  // tokenize(): `if tokens[0] == "▁" and tokens[1] in all_special_tokens: tokens = tokens[1:]`, so a text
  // starting with a special token gets no "▁" before it (and "<s></s>" keeps both specials).
  if (!legacy_ && second_is_special && sp_->id_to_piece(tokens[0]) == kSpieceUnderline)
    tokens.erase(tokens.begin());

  std::vector<int> ids;
  ids.reserve(tokens.size() + 2);
  if (add_special_tokens && add_bos_) ids.push_back(specials_->bos);
  ids.insert(ids.end(), tokens.begin(), tokens.end());
  if (add_special_tokens && add_eos_) ids.push_back(specials_->eos);
  return ids;
}

// PreTrainedTokenizer._decode (v4.37.2) for a LlamaTokenizer, whose only added tokens are its specials:
// convert_ids_to_tokens (skipping the special ids when asked), then convert_tokens_to_string.
std::string LlamaTokenizer::decode(const std::vector<int>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int id : ids) {
    if (id == kImageTokenIndex) continue;
    const std::string piece = id_to_piece(id);  // throws out of range, as sp.IdToPiece does
    if (skip_special_tokens && (id == specials_->bos || id == specials_->eos || id == specials_->unk)) continue;
    tokens.push_back(piece);
  }
  if (tokens.empty()) return "";
  std::string text = tokens_to_string(std::move(tokens));
  return clean_up_spaces_ ? hf::clean_up_tokenization(std::move(text)) : text;
}

// LlamaTokenizer.convert_tokens_to_string (v4.37.2): one leading "▁" is dropped from the first token (the
// one tokenize() adds), special-token text is kept as-is (legacy mode puts a space before it), and the
// runs of ordinary pieces in between go through the SentencePiece decoder.
std::string LlamaTokenizer::tokens_to_string(std::vector<std::string> tokens) const {
  if (starts_with(tokens[0], kSpieceUnderline)) tokens[0].erase(0, kSpieceUnderline.size());
  auto is_special = [&](const std::string& t) {
    return t == specials_->bos_text || t == specials_->eos_text || t == specials_->unk_text;
  };
  std::string out;
  std::vector<std::string> run;
  bool prev_is_special = false;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (is_special(tokens[i])) {
      if (!prev_is_special && i != 0 && legacy_) out += ' ';
      out += sp_->decode_pieces(run) + tokens[i];
      run.clear();
      prev_is_special = true;
    } else {
      run.push_back(std::move(tokens[i]));
      prev_is_special = false;
    }
  }
  return out + sp_->decode_pieces(run);
}

std::string LlamaTokenizer::id_to_piece(int id) const {
  if (id == kImageTokenIndex) return kImageToken;
  if (id < 0 || id >= vocab_size())
    throw Error("tokenizer: id " + std::to_string(id) + " out of range [0, " + std::to_string(vocab_size()) +
                ")");
  return sp_->id_to_piece(id);
}

int LlamaTokenizer::token_to_id(const std::string& token) const {
  const int id = sp_->piece_to_id(token);  // the unknown id for a string that is no piece
  return id >= 0 && sp_->id_to_piece(id) == token ? id : -1;
}

int LlamaTokenizer::bos_id() const { return specials_->bos; }
int LlamaTokenizer::eos_id() const { return specials_->eos; }
int LlamaTokenizer::unk_id() const { return specials_->unk; }
int LlamaTokenizer::vocab_size() const { return sp_->piece_size(); }

void train_sentencepiece(const std::string& corpus_path, const std::string& model_prefix, int vocab_size) {
  if (!std::filesystem::is_regular_file(corpus_path))
    throw Error("train_sentencepiece: corpus '" + corpus_path + "' not found");
  // LLaMA's tokenizer settings: BPE, digits split, byte fallback, identity normalizer, spaces kept.
  const std::vector<std::pair<std::string, std::string>> args = {
      {"input", corpus_path},
      {"model_prefix", model_prefix},
      {"vocab_size", std::to_string(vocab_size)},
      {"model_type", "bpe"},
      {"byte_fallback", "true"},
      {"split_digits", "true"},
      {"add_dummy_prefix", "true"},
      {"remove_extra_whitespaces", "false"},
      {"allow_whitespace_only_pieces", "true"},
      {"normalization_rule_name", "identity"},
      {"character_coverage", "1.0"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"hard_vocab_limit", "false"},
      {"num_threads", "1"},
      {"minloglevel", "1"},  // no per-iteration INFO lines on stderr
  };
  std::string error;
  if (!spm::module().train(args, &error))
    throw Error("train_sentencepiece: training on '" + corpus_path + "' failed: " + error);
}

}  // namespace llava
