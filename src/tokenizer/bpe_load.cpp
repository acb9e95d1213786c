// Reading a HF tokenizer.json (simdjson: the Qwen file is 11 MB, ~10x faster than nlohmann) and
// tokenizer_config.json into a BpeTokenizer::Model. Only what byte-level BPE tokenizers use is accepted;
// anything else is an error that names the file and the field, never a silent approximation.
#include <simdjson.h>

#include <algorithm>
#include <filesystem>

#include "bpe_model.h"
#include "hf_config.h"
#include "llava/error.h"
#include "unicode_bytes.h"

namespace llava {
namespace {

using simdjson::dom::element;

// GPT-2's pattern, what a ByteLevel pre-tokenizer with use_regex true splits with.
const char kGpt2Pattern[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// Typed access to tokenizer.json with errors "FILE: FIELD: reason".
class Json {
 public:
  explicit Json(std::string path) : path_(std::move(path)) {}
  [[noreturn]] void fail(const std::string& field, const std::string& reason) const {
    throw Error("tokenizer: " + path_ + ": " + field + ": " + reason);
  }
  // nullopt when the key is absent or its value is null
  std::optional<element> find(element object, const char* key) const {
    element value;
    if (object.at_key(key).get(value) != simdjson::SUCCESS || value.is_null()) return std::nullopt;
    return value;
  }
  element need(element object, const char* key, const std::string& where) const {
    auto value = find(object, key);
    if (!value) fail(where + "." + key, "missing");
    return *value;
  }
  std::string_view string(element e, const std::string& field) const {
    std::string_view s;
    if (e.get(s) != simdjson::SUCCESS) fail(field, "expected a string");
    return s;
  }
  bool boolean(element e, const std::string& field) const {
    bool b = false;
    if (e.get(b) != simdjson::SUCCESS) fail(field, "expected true or false");
    return b;
  }
  int id(element e, const std::string& field) const {
    int64_t v = 0;
    if (e.get(v) != simdjson::SUCCESS || v < 0 || v > (1 << 30)) fail(field, "expected a token id");
    return static_cast<int>(v);
  }
  bool flag(element object, const char* key, const std::string& where, bool fallback) const {
    auto v = find(object, key);
    return v ? boolean(*v, where + "." + key) : fallback;
  }
  std::string type_of(element object, const std::string& where) const {
    return std::string(string(need(object, "type", where), where + ".type"));
  }

 private:
  std::string path_;
};

void set_piece(BpeTokenizer::Model& m, int id, std::string piece) {
  if (static_cast<size_t>(id) >= m.pieces.size()) {
    m.pieces.resize(static_cast<size_t>(id) + 1);
    m.known.resize(static_cast<size_t>(id) + 1, 0);
    m.added.resize(static_cast<size_t>(id) + 1, 0);
    m.special.resize(static_cast<size_t>(id) + 1, 0);
  }
  m.pieces[static_cast<size_t>(id)] = std::move(piece);
  m.known[static_cast<size_t>(id)] = 1;
}

void load_vocab(const Json& js, element model, BpeTokenizer::Model& m) {
  simdjson::dom::object vocab;
  if (js.need(model, "vocab", "model").get(vocab) != simdjson::SUCCESS) js.fail("model.vocab", "expected an object");
  m.token_ids.reserve(vocab.size() + 1024);
  for (auto [key, value] : vocab) {
    const int id = js.id(value, "model.vocab");
    set_piece(m, id, std::string(key));
    m.token_ids.emplace(std::string(key), id);
  }
}

// "a b" (older files) or ["a", "b"] (newer); rank = position in the list.
void load_merges(const Json& js, element model, BpeTokenizer::Model& m) {
  simdjson::dom::array merges;
  if (js.need(model, "merges", "model").get(merges) != simdjson::SUCCESS) js.fail("model.merges", "expected a list");
  m.merges.reserve(merges.size());
  int rank = 0;
  for (element entry : merges) {
    std::string left, right;
    std::string_view line;
    simdjson::dom::array pair;
    if (entry.get(line) == simdjson::SUCCESS) {
      const size_t space = line.find(' ');
      if (space == std::string_view::npos) js.fail("model.merges[" + std::to_string(rank) + "]", "no space in it");
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else if (entry.get(pair) == simdjson::SUCCESS && pair.size() == 2) {
      left = js.string(pair.at(0), "model.merges");
      right = js.string(pair.at(1), "model.merges");
    } else {
      js.fail("model.merges[" + std::to_string(rank) + "]", "expected \"a b\" or [\"a\", \"b\"]");
    }
    auto id_of = [&](const std::string& token) {
      auto it = m.token_ids.find(token);
      if (it == m.token_ids.end())
        js.fail("model.merges[" + std::to_string(rank) + "]", "a token of it is not in the vocabulary");
      return it->second;
    };
    const uint64_t key = static_cast<uint64_t>(id_of(left)) << 32 | static_cast<uint32_t>(id_of(right));
    m.merges.emplace(key, BpeTokenizer::Model::Merge{rank, id_of(left + right)});  // the first rank wins
    ++rank;
  }
}

void load_model(const Json& js, element root, BpeTokenizer::Model& m) {
  const element model = js.need(root, "model", "tokenizer");
  if (js.type_of(model, "model") != "BPE") js.fail("model.type", "only \"BPE\" is supported");
  if (js.flag(model, "byte_fallback", "model", false)) js.fail("model.byte_fallback", "true is not supported");
  if (js.find(model, "dropout")) {
    double p = 0;
    if (js.need(model, "dropout", "model").get(p) != simdjson::SUCCESS || p != 0.0)
      js.fail("model.dropout", "BPE dropout is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (auto v = js.find(model, key); v && !js.string(*v, std::string("model.") + key).empty())
      js.fail(std::string("model.") + key, "not supported by a byte-level BPE");
  m.ignore_merges = js.flag(model, "ignore_merges", "model", false);
  load_vocab(js, model, m);
  load_merges(js, model, m);
}

void load_added_tokens(const Json& js, element root, BpeTokenizer::Model& m) {
  auto list = js.find(root, "added_tokens");
  if (!list) return;
  simdjson::dom::array tokens;
  if (list->get(tokens) != simdjson::SUCCESS) js.fail("added_tokens", "expected a list");
  for (element t : tokens) {
    const std::string content(js.string(js.need(t, "content", "added_tokens[]"), "added_tokens[].content"));
    const int id = js.id(js.need(t, "id", "added_tokens[]"), "added_tokens[].id");
    for (const char* key : {"single_word", "lstrip", "rstrip"})
      if (js.flag(t, key, "added_tokens[]", false))
        js.fail("added_tokens (id " + std::to_string(id) + ")", std::string(key) + " true is not supported");
    if (content.empty()) js.fail("added_tokens (id " + std::to_string(id) + ")", "empty content");
    const bool special = js.flag(t, "special", "added_tokens[]", false);
    set_piece(m, id, content);
    m.added[static_cast<size_t>(id)] = 1;
    m.special[static_cast<size_t>(id)] = special;
    m.token_ids[content] = id;  // an added token wins over a vocabulary entry of the same text
    // normalized tokens are matched in the normalized text (HF's second added-token pass)
    if (js.flag(t, "normalized", "added_tokens[]", !special))
      m.normalized_added.add(m.nfc ? unicode::nfc(content) : content, id);
    else
      m.raw_added.add(content, id);
  }
}

void load_normalizer(const Json& js, element root, BpeTokenizer::Model& m) {
  auto normalizer = js.find(root, "normalizer");
  if (!normalizer) return;
  std::vector<element> steps{*normalizer};
  if (js.type_of(*normalizer, "normalizer") == "Sequence") {
    steps.clear();
    simdjson::dom::array list;
    if (js.need(*normalizer, "normalizers", "normalizer").get(list) != simdjson::SUCCESS)
      js.fail("normalizer.normalizers", "expected a list");
    for (element e : list) steps.push_back(e);
  }
  for (element step : steps) {
    const std::string type = js.type_of(step, "normalizer");
    if (type != "NFC") js.fail("normalizer", "type \"" + type + "\" is not supported (only NFC)");
    m.nfc = true;
  }
}

// The Split regex and the ByteLevel step; at most one regex split.
void load_pre_tokenizer(const Json& js, const std::string& path, element root, BpeTokenizer::Model& m) {
  const element pre = js.need(root, "pre_tokenizer", "tokenizer");
  std::vector<element> steps{pre};
  if (js.type_of(pre, "pre_tokenizer") == "Sequence") {
    steps.clear();
    simdjson::dom::array list;
    if (js.need(pre, "pretokenizers", "pre_tokenizer").get(list) != simdjson::SUCCESS)
      js.fail("pre_tokenizer.pretokenizers", "expected a list");
    for (element e : list) steps.push_back(e);
  }
  std::optional<std::string> pattern;
  bool byte_level = false;
  auto set_pattern = [&](std::string p) {
    if (pattern) js.fail("pre_tokenizer", "more than one regex split is not supported");
    pattern = std::move(p);
  };
  for (element step : steps) {
    const std::string type = js.type_of(step, "pre_tokenizer");
    if (type == "Split") {
      const element pat = js.need(step, "pattern", "pre_tokenizer.Split");
      if (auto regex = js.find(pat, "Regex"))
        set_pattern(std::string(js.string(*regex, "pre_tokenizer.Split.pattern.Regex")));
      else
        set_pattern("\\Q" + std::string(js.string(js.need(pat, "String", "pre_tokenizer.Split.pattern"), "String")) +
                    "\\E");
      const auto behavior = js.string(js.need(step, "behavior", "pre_tokenizer.Split"), "behavior");
      if (behavior != "Isolated" || js.flag(step, "invert", "pre_tokenizer.Split", false))
        js.fail("pre_tokenizer.Split", "only behavior \"Isolated\" without invert is supported");
    } else if (type == "ByteLevel") {
      if (js.flag(step, "add_prefix_space", "pre_tokenizer.ByteLevel", false))
        js.fail("pre_tokenizer.ByteLevel.add_prefix_space", "true is not supported");
      if (js.flag(step, "use_regex", "pre_tokenizer.ByteLevel", true)) set_pattern(kGpt2Pattern);
      byte_level = true;
    } else {
      js.fail("pre_tokenizer", "type \"" + type + "\" is not supported (Split, ByteLevel)");
    }
  }
  if (!byte_level) js.fail("pre_tokenizer", "no ByteLevel step: not a byte-level BPE");
  if (!pattern) js.fail("pre_tokenizer", "no regex split");
  m.pre_tokenizer.emplace(*pattern, path);
}

// TemplateProcessing's "single" template: special tokens before / after $A.
void load_post_processor(const Json& js, element post, BpeTokenizer::Model& m, bool* has_template) {
  const std::string type = js.type_of(post, "post_processor");
  if (type == "ByteLevel") return;  // offsets only
  if (type == "Sequence") {
    simdjson::dom::array list;
    if (js.need(post, "processors", "post_processor").get(list) != simdjson::SUCCESS)
      js.fail("post_processor.processors", "expected a list");
    for (element e : list) load_post_processor(js, e, m, has_template);
    return;
  }
  if (type != "TemplateProcessing")
    js.fail("post_processor", "type \"" + type + "\" is not supported (ByteLevel, TemplateProcessing)");
  *has_template = true;
  simdjson::dom::array single;
  if (js.need(post, "single", "post_processor").get(single) != simdjson::SUCCESS)
    js.fail("post_processor.single", "expected a list");
  const element specials = js.need(post, "special_tokens", "post_processor");
  bool after_sequence = false;
  for (element item : single) {
    if (js.find(item, "Sequence")) {
      after_sequence = true;
      continue;
    }
    const element special = js.need(item, "SpecialToken", "post_processor.single[]");
    const std::string name(js.string(js.need(special, "id", "SpecialToken"), "post_processor.single[].id"));
    simdjson::dom::array ids;
    if (js.need(js.need(specials, name.c_str(), "post_processor.special_tokens"), "ids", name).get(ids) !=
        simdjson::SUCCESS)
      js.fail("post_processor.special_tokens." + name + ".ids", "expected a list");
    for (element id : ids) (after_sequence ? m.suffix_ids : m.prefix_ids).push_back(js.id(id, name + ".ids"));
  }
}

void check_decoder(const Json& js, element root) {
  auto decoder = js.find(root, "decoder");
  if (!decoder || js.type_of(*decoder, "decoder") != "ByteLevel")
    js.fail("decoder", "a ByteLevel decoder is required");
}

// tokenizer_config.json: special-token ids, BOS/EOS rule (see bpe_tokenizer.h), clean-up flag.
void apply_config(const std::string& config_path, bool has_template, BpeTokenizer::Model& m) {
  const nlohmann::json cfg = config_path.empty() ? nlohmann::json::object() : hf::read_json_object(config_path);
  auto id_of = [&](const char* key) {
    const auto text = hf::special_token_text(cfg, key, config_path);
    if (!text) return -1;
    auto it = m.token_ids.find(*text);
    if (it == m.token_ids.end())
      throw Error("tokenizer: " + config_path + ": " + key + " '" + *text + "' is not a token of " + m.source);
    return it->second;
  };
  m.bos = id_of("bos_token");
  m.eos = id_of("eos_token");
  m.pad = id_of("pad_token");
  m.unk = id_of("unk_token");
  m.clean_up_spaces = hf::config_flag(cfg, "clean_up_tokenization_spaces", config_path).value_or(true);
  if (has_template) return;
  if (hf::config_flag(cfg, "add_bos_token", config_path).value_or(m.bos >= 0) && m.bos >= 0)
    m.prefix_ids = {m.bos};
  if (hf::config_flag(cfg, "add_eos_token", config_path).value_or(false) && m.eos >= 0) m.suffix_ids = {m.eos};
}

// What encoding and decoding look up per id and per byte.
void build_tables(BpeTokenizer::Model& m) {
  m.byte_ids.fill(-1);
  m.id_bytes.resize(m.pieces.size());
  std::string bytes;
  for (size_t id = 0; id < m.pieces.size(); ++id) {
    if (!m.known[id]) continue;
    // ByteLevel decoder: a token whose characters are all in the alphabet is those bytes, else its UTF-8
    const bool byte_level = unicode::byte_level_to_bytes(m.pieces[id], &bytes);
    m.id_bytes[id] = byte_level ? bytes : m.pieces[id];
    if (m.added[id] || !byte_level) continue;
    if (m.ignore_merges) m.raw_word_ids.emplace(bytes, static_cast<int>(id));
    if (bytes.size() == 1) m.byte_ids[static_cast<unsigned char>(bytes[0])] = static_cast<int>(id);
  }
}

}  // namespace

void AddedTokenMatcher::add(std::string content, int id) {
  auto& bucket = by_first_byte_[static_cast<unsigned char>(content[0])];
  bucket.emplace_back(std::move(content), id);
  std::stable_sort(bucket.begin(), bucket.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  ++count_;
}

std::shared_ptr<const BpeTokenizer::Model> BpeTokenizer::Model::load(const std::string& path,
                                                                       const std::string& config_path) {
  auto m = std::make_shared<Model>();
  m->source = path;
  const Json js(path);
  simdjson::dom::parser parser;
  simdjson::padded_string text;
  if (simdjson::padded_string::load(path).get(text) != simdjson::SUCCESS)
    throw Error("tokenizer: cannot read '" + path + "'");
  element root;
  if (const auto err = parser.parse(text).get(root); err != simdjson::SUCCESS)
    throw Error("tokenizer: " + path + ": invalid JSON: " + simdjson::error_message(err));
  try {
    load_normalizer(js, root, *m);  // before the added tokens: normalized ones are stored normalized
    load_model(js, root, *m);
    load_added_tokens(js, root, *m);
    load_pre_tokenizer(js, path, root, *m);
    bool has_template = false;
    if (auto post = js.find(root, "post_processor")) load_post_processor(js, *post, *m, &has_template);
    check_decoder(js, root);
    apply_config(config_path, has_template, *m);
  } catch (const simdjson::simdjson_error& e) {
    throw Error("tokenizer: " + path + ": " + e.what());
  }
  build_tables(*m);
  return m;
}

}  // namespace llava
