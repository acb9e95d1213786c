// BpeTokenizer: exact agreement with HF tokenizers on the shared byte-level BPE fixtures
// (fixtures/bpe-tokenizer/cases.json: Qwen2/Qwen3 and Llama-3 tokenizer.json files), the README's rules one by
// one, decoding, and fixture-free properties on a small byte-level tokenizer.json written here.
#include <gtest/gtest.h>
#include <utf8proc.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "llava/bpe_tokenizer.h"
#include "llava/error.h"
#include "llava/tokenizer.h"
#include "test_support.h"

using llava::BpeTokenizer;
using nlohmann::json;
using Ids = std::vector<int>;

namespace {

std::string fixture_dir(const std::string& name) { return llava::testing::fixture("bpe-tokenizer/" + name); }

template <class T>
std::string join(const std::vector<T>& v) {
  std::ostringstream os;
  for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << json(v[i]).dump();
  return "[" + os.str() + "]";
}

std::vector<std::string> pieces_of(const llava::Tokenizer& tok, const Ids& ids) {
  std::vector<std::string> out;
  for (int id : ids) out.push_back(tok.id_to_piece(id));
  return out;
}

// Loaded once per process (each load is ~0.1-0.2 s); the load time is printed.
const BpeTokenizer& fixture_tokenizer(const std::string& name) {
  static std::map<std::string, BpeTokenizer> loaded;
  auto it = loaded.find(name);
  if (it != loaded.end()) return it->second;
  const auto t0 = std::chrono::steady_clock::now();
  BpeTokenizer tok = BpeTokenizer::from_dir(fixture_dir(name));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ load     ] %s/tokenizer.json: %.3f s\n", name.c_str(), s);
  return loaded.emplace(name, std::move(tok)).first->second;
}

const json& fixture_cases() {
  static const json cases =
      json::parse(llava::testing::read_file(llava::testing::fixture("bpe-tokenizer/cases.json"))).at("cases");
  return cases;
}

// A copy of a fixture tokenizer.json with `edit` applied, written to a temp folder; no tokenizer_config.json.
BpeTokenizer edited_tokenizer(const std::string& name, const std::string& tag, void (*edit)(json&)) {
  json doc = json::parse(llava::testing::read_file(fixture_dir(name) + "/tokenizer.json"));
  edit(doc);
  const std::string dir = llava::testing::temp_dir("bpe_" + tag);
  std::ofstream(dir + "/tokenizer.json") << doc.dump();
  return BpeTokenizer::from_files(dir + "/tokenizer.json", "");
}

// Compares ids (and pieces when given) of one case; reports the first few differences in full.
struct CaseChecker {
  int checked = 0, mismatches = 0;
  void check(const llava::Tokenizer& tok, const json& c, const Ids& got, const Ids& want,
             const std::vector<std::string>* want_pieces = nullptr) {
    ++checked;
    const auto pieces = pieces_of(tok, got);
    if (got == want && (!want_pieces || pieces == *want_pieces)) return;
    if (++mismatches > 8) return;
    size_t at = 0;
    while (at < got.size() && at < want.size() && got[at] == want[at]) ++at;
    ADD_FAILURE() << c.at("tokenizer").get<std::string>() << " " << c.at("kind").get<std::string>() << " case ("
                  << c.value("category", "") << ")\n  text:     " << c.at("text").dump()
                  << "\n  first difference at index " << at << "\n  expected: " << join(want)
                  << (want_pieces ? "\n            " + join(*want_pieces) : "") << "\n  got:      " << join(got)
                  << "\n            " << join(pieces);
  }
};

Ids fixture_encode(const BpeTokenizer& tok, const json& c) {
  const std::string text = c.at("text");
  // Qwen: tok(text) (adds nothing); Llama-3 text cases are recorded without BOS, image cases with it.
  if (c.at("kind") == "image_token") return tok.encode_with_image_tokens(text);
  return tok.encode(text, c.at("tokenizer") == "qwen2");
}

// Unicode NFC by utf8proc directly (the expected text of a Qwen round trip).
std::string nfc(const std::string& s) {
  utf8proc_uint8_t* out = nullptr;
  const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), static_cast<utf8proc_ssize_t>(s.size()),
                              &out, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  EXPECT_GE(n, 0);
  std::string r(reinterpret_cast<const char*>(out), static_cast<size_t>(std::max<utf8proc_ssize_t>(n, 0)));
  std::free(out);
  return r;
}

// transformers' clean_up_tokenization, written out for the Llama-3 round trip (its config turns it on).
std::string cleaned(std::string s) {
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"}, {" 'm", "'m"},
           {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}})
    for (size_t p = 0; (p = s.find(from, p)) != std::string::npos; p += to.size()) s.replace(p, from.size(), to);
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Every fixture case: ids, pieces and length exactly.

TEST(BpeFixtures, AllCasesMatchHuggingFace) {
  LLAVA_REQUIRE_FIXTURES();
  const json& cases = fixture_cases();
  ASSERT_EQ(cases.size(), 792u) << "cases.json changed: README says 792 cases";
  std::map<std::string, CaseChecker> by_group;  // "qwen2 text", ...
  int flagged = 0;
  for (const auto& c : cases) {
    const std::string name = c.at("tokenizer");
    ASSERT_TRUE(name == "qwen2" || name == "llama3") << name;
    const auto& tok = fixture_tokenizer(name);
    const auto want_pieces = c.at("pieces").get<std::vector<std::string>>();
    flagged += c.contains("flag_disagreement");  // ids hold the fast (tokenizers) behaviour: checked as usual
    by_group[name + " " + c.at("kind").get<std::string>()].check(tok, c, fixture_encode(tok, c),
                                                                  c.at("ids").get<Ids>(), &want_pieces);
  }
  int checked = 0, mismatches = 0;
  for (const auto& [group, r] : by_group) {
    std::printf("[ cases    ] %-18s %3d of %3d match\n", group.c_str(), r.checked - r.mismatches, r.checked);
    checked += r.checked;
    mismatches += r.mismatches;
  }
  std::printf("[ cases    ] all: %d of %d match (%d flagged cases: fast behaviour)\n", checked - mismatches, checked,
              flagged);
  EXPECT_EQ(mismatches, 0) << mismatches << " of " << checked << " cases differ";
  EXPECT_EQ(checked, 792);
  EXPECT_EQ(flagged, 2);
  EXPECT_EQ(by_group["qwen2 text"].checked, 374);
  EXPECT_EQ(by_group["llama3 text"].checked, 374);
  EXPECT_EQ(by_group["qwen2 image_token"].checked, 22);
  EXPECT_EQ(by_group["llama3 image_token"].checked, 22);
}

// split_special_tokens=True / the tokenizer without added tokens: special-token text is ordinary text.
TEST(BpeFixtures, SpecialTokenTextAsPlainText) {
  LLAVA_REQUIRE_FIXTURES();
  std::map<std::string, BpeTokenizer> plain;
  for (const std::string name : {"qwen2", "llama3"})
    plain.emplace(name, edited_tokenizer(name, "noadded_" + name, [](json& d) { d["added_tokens"] = json::array(); }));
  CaseChecker r;
  for (const auto& c : fixture_cases())
    if (c.contains("ids_special_as_text"))
      r.check(plain.at(c.at("tokenizer")), c, plain.at(c.at("tokenizer")).encode(c.at("text"), false),
              c.at("ids_special_as_text").get<Ids>());
  std::printf("[ cases    ] ids_special_as_text: %d of %d match\n", r.checked - r.mismatches, r.checked);
  EXPECT_EQ(r.mismatches, 0);
  EXPECT_EQ(r.checked, 47);  // README: 31 Qwen + 16 Llama-3
}

// Qwen2's own 3 added tokens (what LLaVA-OneVision loads): the 23 later Qwen tokens are plain text.
TEST(BpeFixtures, Qwen2AddedTokensOnly) {
  LLAVA_REQUIRE_FIXTURES();
  const BpeTokenizer qwen2 = edited_tokenizer("qwen2", "qwen2_3", [](json& d) {
    json kept = json::array();
    for (const auto& t : d["added_tokens"])
      if (t["id"].get<int>() <= 151645) kept.push_back(t);
    d["added_tokens"] = kept;
  });
  EXPECT_EQ(qwen2.vocab_size(), 151646);
  CaseChecker r;
  int with_field = 0;
  for (const auto& c : fixture_cases()) {
    if (c.at("tokenizer") != "qwen2") continue;
    with_field += c.contains("ids_qwen2_added_tokens_only");
    const Ids want = c.value("ids_qwen2_added_tokens_only", c.at("ids").get<Ids>());
    r.check(qwen2, c, fixture_encode(qwen2, c), want);
  }
  std::printf("[ cases    ] qwen2 with 3 added tokens: %d of %d match (%d with their own ids)\n",
              r.checked - r.mismatches, r.checked, with_field);
  EXPECT_EQ(r.mismatches, 0);
  EXPECT_EQ(r.checked, 396);
  EXPECT_EQ(with_field, 7);
}

// The diagnostic ids of the README: what Llama-3 gives when ignore_merges is ignored. Proves the flag is used.
TEST(BpeFixtures, Llama3WithoutIgnoreMergesGivesTheDiagnosticIds) {
  LLAVA_REQUIRE_FIXTURES();
  EXPECT_TRUE(fixture_tokenizer("llama3").ignores_merges());
  EXPECT_FALSE(fixture_tokenizer("qwen2").ignores_merges());
  const BpeTokenizer merges_only =
      edited_tokenizer("llama3", "llama3_merges", [](json& d) { d["model"]["ignore_merges"] = false; });
  CaseChecker r;
  for (const auto& c : fixture_cases())
    if (c.contains("ids_without_ignore_merges"))
      r.check(merges_only, c, merges_only.encode(c.at("text"), false), c.at("ids_without_ignore_merges").get<Ids>());
  EXPECT_EQ(r.mismatches, 0);
  EXPECT_EQ(r.checked, 10);
}

// llava-interleave-tiny (LLaVA-NeXT's preprocess_qwen with Qwen2's 3 added tokens + "<image>" 151646): every
// sample's prompt gives its input_ids (tokenizer_image_token) and input_ids_hf (<image> as the added token).
TEST(BpeFixtures, LlavaInterleaveTinyPrompts) {
  LLAVA_REQUIRE_FIXTURES();
  const std::string dir = llava::testing::fixture("llava-interleave-tiny");
  const auto tok = llava::load_tokenizer(dir);
  ASSERT_NE(dynamic_cast<const BpeTokenizer*>(tok.get()), nullptr);
  EXPECT_EQ(tok->vocab_size(), 151647);
  EXPECT_EQ(tok->token_to_id("<image>"), 151646);
  EXPECT_EQ(tok->bos_id(), -1);
  EXPECT_EQ(tok->eos_id(), 151645);
  EXPECT_EQ(tok->pad_id(), 151643);
  const json doc = json::parse(llava::testing::read_file(dir + "/expected/samples.json"));
  int checked = 0, matched = 0;
  for (const auto& smp : doc.at("samples")) {
    const std::string prompt = smp.at("prompt");
    const Ids want = smp.at("input_ids").get<Ids>(), want_hf = smp.at("input_ids_hf").get<Ids>();
    const Ids got = tok->encode_with_image_tokens(prompt), got_hf = tok->encode(prompt);
    EXPECT_EQ(got, want) << smp.at("id");
    EXPECT_EQ(got_hf, want_hf) << smp.at("id");
    ++checked;
    matched += got == want && got_hf == want_hf;
  }
  std::printf("[ cases    ] llava-interleave-tiny prompts: %d of %d match\n", matched, checked);
  EXPECT_GT(checked, 0);
}

// ---------------------------------------------------------------------------------------------------------
// The README's rules, one example each (values from the README).

TEST(BpeRules, AddedTokensAreSplitOutFirst) {
  LLAVA_REQUIRE_FIXTURES();
  const auto& qwen = fixture_tokenizer("qwen2");
  EXPECT_EQ(qwen.encode("<|im_start|>user\nHi<|im_end|>"), (Ids{151644, 872, 198, 13048, 151645}));
  // A tokenizer knows only its own added tokens.
  for (const Ids& ids : {fixture_tokenizer("llama3").encode("<|im_start|>", false), qwen.encode("<|begin_of_text|>")}) {
    EXPECT_GT(ids.size(), 1u);
    for (int id : ids) EXPECT_LT(id, 128000) << "an added token id in ordinary text";
  }
  EXPECT_EQ(qwen.token_to_id("<|im_start|>"), 151644);
  EXPECT_EQ(qwen.token_to_id("<think>"), 151667);
  EXPECT_EQ(qwen.token_to_id("Ġworld"), 1879);
  EXPECT_EQ(qwen.token_to_id("<|begin_of_text|>"), -1);
}

TEST(BpeRules, QwenNormalizesNfcLlama3DoesNot) {
  LLAVA_REQUIRE_FIXTURES();
  EXPECT_TRUE(fixture_tokenizer("qwen2").normalizes_nfc());
  EXPECT_FALSE(fixture_tokenizer("llama3").normalizes_nfc());
  EXPECT_EQ(fixture_tokenizer("qwen2").encode("e\u0301"), (Ids{963}));
  EXPECT_EQ(fixture_tokenizer("qwen2").encode("\u00e9"), (Ids{963}));
  EXPECT_EQ(fixture_tokenizer("llama3").encode("e\u0301", false), (Ids{68, 54939}));
  EXPECT_EQ(fixture_tokenizer("llama3").encode("\u00e9", false), (Ids{978}));
  // NFC runs after the added-token split: the ">" of <|im_end|> does not compose with U+0338.
  EXPECT_EQ(fixture_tokenizer("qwen2").encode("<|im_end|>\u0338"), (Ids{151645, 136, 116}));
}

TEST(BpeRules, DigitsOneAtATimeOrUpToThree) {
  LLAVA_REQUIRE_FIXTURES();
  EXPECT_EQ(fixture_tokenizer("qwen2").encode("1234567"), (Ids{16, 17, 18, 19, 20, 21, 22}));
  EXPECT_EQ(fixture_tokenizer("llama3").encode("1234567", false), (Ids{4513, 10961, 22}));
}

TEST(BpeRules, RegexDetails) {
  LLAVA_REQUIRE_FIXTURES();
  const auto& qwen = fixture_tokenizer("qwen2");
  EXPECT_EQ(qwen.encode("DON'T"), (Ids{84641, 17323}));                  // contractions, any case
  EXPECT_EQ(qwen.encode("hello   world"), (Ids{14990, 256, 1879}));       // \s+(?!\S) leaves a space to the word
  EXPECT_EQ(qwen.encode("hello\n\nworld"), (Ids{14990, 271, 14615}));
  EXPECT_EQ(qwen.encode("\r\n"), (Ids{319}));
  EXPECT_EQ(qwen.encode(std::string("\0", 1)), (Ids{188}));             // every byte has a token
  EXPECT_EQ(qwen.encode("\xF0\x9F\x98\x80"), (Ids{141334}));               // 😀
}

TEST(BpeRules, Llama3IgnoreMerges) {
  LLAVA_REQUIRE_FIXTURES();
  EXPECT_EQ(fixture_tokenizer("llama3").encode(" vi\u1EC7c", false), (Ids{100769}));
}

TEST(BpeRules, BosAndSpecialIds) {
  LLAVA_REQUIRE_FIXTURES();
  const auto& qwen = fixture_tokenizer("qwen2");
  const auto& llama = fixture_tokenizer("llama3");
  // Qwen: nothing added, ever.
  EXPECT_EQ(qwen.encode("Hello world", true), qwen.encode("Hello world", false));
  EXPECT_EQ(qwen.encode("Hello world"), (Ids{9707, 1879}));
  EXPECT_EQ(qwen.bos_id(), -1);
  EXPECT_EQ(qwen.eos_id(), 151645);  // <|im_end|>
  EXPECT_EQ(qwen.pad_id(), 151643);  // <|endoftext|>
  EXPECT_EQ(qwen.unk_id(), -1);
  EXPECT_EQ(qwen.vocab_size(), 151669);
  // Llama-3: the model input starts with <|begin_of_text|>.
  EXPECT_EQ(llama.encode("Hello world"), (Ids{128000, 9906, 1917}));
  EXPECT_EQ(llama.encode("Hello world", false), (Ids{9906, 1917}));
  EXPECT_EQ(llama.encode(""), (Ids{128000}));
  EXPECT_EQ(llama.bos_id(), 128000);
  EXPECT_EQ(llama.eos_id(), 128001);
  EXPECT_EQ(llama.pad_id(), -1);
  EXPECT_EQ(llama.vocab_size(), 128256);
  EXPECT_EQ(llama.encode_with_image_tokens("<image>\nWhat is in the image?"),
            (Ids{128000, -200, 198, 3923, 374, 304, 279, 2217, 30}));
  EXPECT_EQ(qwen.encode_with_image_tokens("<image>\nWhat is in the image?"),
            (Ids{-200, 198, 3838, 374, 304, 279, 2168, 30}));
  EXPECT_EQ(qwen.id_to_piece(-200), "<image>");
  EXPECT_THROW(qwen.id_to_piece(151669), llava::Error);
}

// ---------------------------------------------------------------------------------------------------------
// Decoding (tokenizers' ByteLevel decoder; transformers' clean-up where the config asks for it).

TEST(BpeDecode, RoundTripOfEveryFixtureText) {
  LLAVA_REQUIRE_FIXTURES();
  int checked = 0, mismatches = 0;
  for (const auto& c : fixture_cases()) {
    if (c.at("kind") != "text") continue;
    const std::string name = c.at("tokenizer"), text = c.at("text");
    const auto& tok = fixture_tokenizer(name);
    // Qwen gives back the NFC text (clean-up off in its config); Llama-3 the text, cleaned up (on in its config).
    // The flagged "<|im_end|>\u0338": NFC runs after the added-token split, so nothing composes with its ">".
    const std::string want = name == "qwen2" ? (c.contains("flag_disagreement") ? text : nfc(text)) : cleaned(text);
    const std::string got = tok.decode(c.at("ids").get<Ids>(), false);
    ++checked;
    if (got != want && ++mismatches <= 5)
      ADD_FAILURE() << name << " " << json(text).dump() << "\n  decoded " << json(got).dump() << "\n  expected "
                    << json(want).dump();
  }
  std::printf("[ decode   ] %d of %d fixture texts round-trip\n", checked - mismatches, checked);
  EXPECT_EQ(mismatches, 0);
  EXPECT_EQ(checked, 748);
}

TEST(BpeDecode, SpecialTokensSkippedOnlyWhenSpecial) {
  LLAVA_REQUIRE_FIXTURES();
  const auto& qwen = fixture_tokenizer("qwen2");
  const Ids chat = qwen.encode("<|im_start|>user\nHi<|im_end|>");
  EXPECT_EQ(qwen.decode(chat, false), "<|im_start|>user\nHi<|im_end|>");
  EXPECT_EQ(qwen.decode(chat), "user\nHi");
  // <think> is an added token with special=false: kept.
  EXPECT_EQ(qwen.decode(qwen.encode("<think>x</think>")), "<think>x</think>");
  // -200 and ids that are no token are dropped (tokenizers drops unknown ids).
  EXPECT_EQ(qwen.decode({-200, 9707, 1000000, 1879}), "Hello world");
  const auto& llama = fixture_tokenizer("llama3");
  EXPECT_EQ(llama.decode(llama.encode("Hello world")), "Hello world");
  EXPECT_EQ(llama.decode(llama.encode("Hello world"), false), "<|begin_of_text|>Hello world");
  EXPECT_EQ(llama.decode(llama.encode("Hello , world", false)), "Hello, world");  // clean-up (config: true)
  EXPECT_EQ(qwen.decode(qwen.encode("Hello , world")), "Hello , world");          // (config: false)
}

TEST(BpeDecode, ByteLevelBytesAndInvalidUtf8Replaced) {
  LLAVA_REQUIRE_FIXTURES();
  const auto& qwen = fixture_tokenizer("qwen2");
  // bytes_to_unicode: 0xF0 -> 'ð', 0x9F -> 'Ł', 0xED -> 'í', 0xA0 -> 'ł', 0x80 -> 'Ģ', 0xCC -> 'Ì', 0xB8 -> '¸'
  const int f0 = qwen.token_to_id("\u00f0"), x9f = qwen.token_to_id("\u0141"), a = qwen.token_to_id("a");
  const int ed = qwen.token_to_id("\u00ed"), xa0 = qwen.token_to_id("\u0142"), x80 = qwen.token_to_id("\u0122");
  const int cc = qwen.token_to_id("\u00cc"), b8 = qwen.token_to_id("\u00b8");
  for (int id : {f0, x9f, a, ed, xa0, x80, cc, b8}) ASSERT_GE(id, 0);
  EXPECT_EQ(cc, 136);
  EXPECT_EQ(qwen.decode({cc, b8}), "\u0338");              // two byte tokens, one character
  EXPECT_EQ(qwen.decode({cc}), "\uFFFD");                  // a lone lead byte
  EXPECT_EQ(qwen.decode({f0, x9f, a}), "\uFFFD" "a");      // a truncated 4-byte sequence: one U+FFFD
  EXPECT_EQ(qwen.decode({ed, xa0, x80}), "\uFFFD\uFFFD\uFFFD");  // a surrogate: three (maximal subparts)
  EXPECT_EQ(qwen.decode({x80, a}), "\uFFFD" "a");          // a stray continuation byte
  EXPECT_EQ(qwen.decode({141334}), "\xF0\x9F\x98\x80");    // 😀 as one token
}

// ---------------------------------------------------------------------------------------------------------
// Fixture-free: a byte-level tokenizer.json written here (256 byte tokens + a few merges).

namespace {

// GPT-2's bytes_to_unicode, written out independently of the tokenizer.
std::string byte_char(int b) {
  const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  int cp = b;
  if (!printable) {
    cp = 256;
    for (int k = 0; k < b; ++k)
      if (!((k >= 33 && k <= 126) || (k >= 161 && k <= 172) || (k >= 174 && k <= 255))) ++cp;
  }
  utf8proc_uint8_t buf[4];
  return std::string(reinterpret_cast<char*>(buf), static_cast<size_t>(utf8proc_encode_char(cp, buf)));
}

class SmallBpe : public ::testing::Test {
 protected:
  // vocab: 256 bytes (id = byte), then merged tokens; merges in rank order.
  static json make(bool nfc, bool ignore_merges) {
    json vocab = json::object();
    for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
    const std::vector<std::pair<std::string, std::string>> merges = {
        {"a", "b"}, {"b", "c"}, {"ab", "c"}, {byte_char(' '), "a"}, {"x", "y"}, {"xy", "z"},
        {"!", byte_char(0xE1)}, {"!", byte_char(0xE2)}};
    json merge_list = json::array();
    int next = 256;
    for (const auto& [l, r] : merges) {
      if (!vocab.contains(l + r)) vocab[l + r] = next++;
      merge_list.push_back(l + " " + r);
    }
    vocab["xyzw"] = next++;  // in the vocabulary, not buildable by the merges
    const std::string pattern = "(?i:'s|'t)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    return json{
        {"added_tokens", json::array({json{{"id", 300}, {"content", "<|a|>"}, {"special", true}, {"normalized", false}},
                                      json{{"id", 301}, {"content", "<|a|>b"}, {"special", false}, {"normalized", false}},
                                      json{{"id", 302}, {"content", "<s>"}, {"special", true}, {"normalized", false}}})},
        {"normalizer", nfc ? json{{"type", "NFC"}} : json(nullptr)},
        {"pre_tokenizer", {{"type", "Sequence"},
                           {"pretokenizers", json::array({json{{"type", "Split"}, {"pattern", {{"Regex", pattern}}},
                                                               {"behavior", "Isolated"}, {"invert", false}},
                                                          json{{"type", "ByteLevel"}, {"add_prefix_space", false},
                                                               {"use_regex", false}}})}}},
        {"post_processor", {{"type", "ByteLevel"}}},
        {"decoder", {{"type", "ByteLevel"}}},
        {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"ignore_merges", ignore_merges},
                   {"byte_fallback", false}, {"vocab", vocab}, {"merges", merge_list}}}};
  }
  static BpeTokenizer write(const std::string& tag, const json& doc, const json& config = json()) {
    const std::string dir = llava::testing::temp_dir("small_bpe_" + tag);
    std::ofstream(dir + "/tokenizer.json") << doc.dump();
    if (!config.is_null()) std::ofstream(dir + "/tokenizer_config.json") << config.dump();
    return BpeTokenizer::from_dir(dir);
  }
  static int id(const BpeTokenizer& t, const std::string& piece) { return t.token_to_id(piece); }
};

}  // namespace

TEST_F(SmallBpe, MergesByRank) {
  const auto tok = write("rank", make(false, false));
  // "abc": (a,b) rank 0 before (b,c) rank 1 -> ab, then (ab,c) -> abc
  EXPECT_EQ(tok.encode("abc"), (Ids{id(tok, "abc")}));
  // "bcab": (a,b) first -> b c ab; then (b,c) -> bc ab
  EXPECT_EQ(tok.encode("bcab"), (Ids{id(tok, "bc"), id(tok, "ab")}));
  // " ab": (a,b) rank 0 goes before (Ġ,a) rank 3, and (Ġ,ab) is no merge
  EXPECT_EQ(tok.encode(" ab"), (Ids{' ', id(tok, "ab")}));
  EXPECT_EQ(tok.encode(" a"), (Ids{id(tok, byte_char(' ') + "a")}));
}

// \s is Unicode White_Space, as in Oniguruma: U+2000 is (a punctuation run stops before it), U+180E is not
// (PCRE2's own UCP \s would say it is). Seen through merges ("!" + first byte) that only apply within a pre-token.
TEST_F(SmallBpe, WhiteSpaceIsTheUnicodeProperty) {
  const auto tok = write("space", make(false, false));
  EXPECT_EQ(tok.encode("!\xE1\xA0\x8E"), (Ids{id(tok, "!" + byte_char(0xE1)), 0xA0, 0x8E}));  // U+180E
  EXPECT_EQ(tok.encode("!\xE2\x80\x8B"), (Ids{id(tok, "!" + byte_char(0xE2)), 0x80, 0x8B}));  // U+200B
  EXPECT_EQ(tok.encode("!\xE2\x80\x80"), (Ids{'!', 0xE2, 0x80, 0x80}));                         // U+2000
}

TEST_F(SmallBpe, AddedTokensLeftmostLongest) {
  const auto tok = write("added", make(false, false));
  EXPECT_EQ(tok.encode("q<|a|>bq"), (Ids{'q', 301, 'q'}));  // the longer "<|a|>b" wins at the same start
  EXPECT_EQ(tok.encode("<|a|><|a|>"), (Ids{300, 300}));
  EXPECT_EQ(tok.decode({300, 'q', 301}), "q<|a|>b");       // 300 is special (skipped), 301 not
  EXPECT_EQ(tok.decode({300, 'q', 301}, false), "<|a|>q<|a|>b");
}

TEST_F(SmallBpe, NfcOnlyWhenTheFileSaysSo) {
  const auto plain = write("nonfc", make(false, false));
  const auto nfc = write("nfc", make(true, false));
  const std::string decomposed = "e\xCC\x81", composed = "\xC3\xA9";
  EXPECT_EQ(plain.encode(decomposed), (Ids{'e', 0xCC, 0x81}));
  EXPECT_EQ(nfc.encode(decomposed), (Ids{0xC3, 0xA9}));
  EXPECT_EQ(nfc.encode(composed), nfc.encode(decomposed));
  EXPECT_EQ(nfc.encode(std::string("a\0b", 3)), (Ids{'a', 0, 'b'}));  // NUL survives NFC
}

TEST_F(SmallBpe, IgnoreMergesTakesWholeVocabularyWords) {
  const auto merges = write("merges", make(false, false));
  const auto whole = write("whole", make(false, true));
  EXPECT_EQ(merges.encode("xyzw"), (Ids{id(merges, "xyz"), 'w'}));
  EXPECT_EQ(whole.encode("xyzw"), (Ids{id(whole, "xyzw")}));
  EXPECT_EQ(whole.encode("xyzwa"), (Ids{id(whole, "xyz"), 'w', 'a'}));  // not in the vocabulary: merges
}

TEST_F(SmallBpe, BosRules) {
  json doc = make(false, false);
  // no config: nothing added
  EXPECT_EQ(write("bos0", doc).encode("a"), (Ids{'a'}));
  // bos_token without add_bos_token: added (Llama-3's first release); add_bos_token false: not
  EXPECT_EQ(write("bos1", doc, {{"bos_token", "<s>"}}).encode("a"), (Ids{302, 'a'}));
  EXPECT_EQ(write("bos2", doc, {{"bos_token", "<s>"}, {"add_bos_token", false}}).encode("a"), (Ids{'a'}));
  EXPECT_EQ(write("bos3", doc, {{"bos_token", "<s>"}}).encode("a", false), (Ids{'a'}));
  // a TemplateProcessing post-processor decides (the updated Llama-3 file), whatever the config says
  doc["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", json::array({json{{"SpecialToken", {{"id", "<|a|>"}, {"type_id", 0}}}},
                              json{{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
      {"special_tokens", {{"<|a|>", {{"id", "<|a|>"}, {"ids", {300}}, {"tokens", {"<|a|>"}}}}}}};
  EXPECT_EQ(write("bos4", doc, {{"bos_token", "<s>"}, {"add_bos_token", false}}).encode("a"), (Ids{300, 'a'}));
  const auto with_bos = write("bos5", make(false, false), {{"bos_token", "<s>"}});
  EXPECT_EQ(with_bos.encode_with_image_tokens("a<image>b"), (Ids{302, 'a', -200, 'b'}));
}

TEST_F(SmallBpe, DecodeRoundTripAndCleanUp) {
  const auto tok = write("decode", make(false, false));  // no config: clean-up on (transformers 4.37.2 default)
  const std::string text = "ab c\t\n\xE4\xB8\xAD\xF0\x9F\x98\x80 x";
  EXPECT_EQ(tok.decode(tok.encode(text)), text);
  EXPECT_EQ(tok.decode(tok.encode("a , b")), "a, b");
  const auto off = write("decode_off", make(false, false), {{"clean_up_tokenization_spaces", false}});
  EXPECT_EQ(off.decode(off.encode("a , b")), "a , b");
}

// One tokenizer is shared by the loader's worker threads: concurrent encodes give the serial result.
TEST_F(SmallBpe, ConcurrentEncodesAgree) {
  const auto tok = write("threads", make(true, false));
  std::vector<std::string> texts;
  for (int i = 0; i < 64; ++i) texts.push_back(std::string(i % 7, ' ') + "abc xyz <|a|>b e\xCC\x81 " + std::to_string(i));
  std::vector<Ids> serial;
  for (const auto& t : texts) serial.push_back(tok.encode(t));
  std::vector<std::thread> threads;
  std::vector<int> wrong(4, 0);
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      for (int round = 0; round < 50; ++round)
        for (size_t i = 0; i < texts.size(); ++i) wrong[k] += tok.encode(texts[i]) != serial[i];
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong, std::vector<int>(4, 0));
}

TEST_F(SmallBpe, ErrorsNameTheFile) {
  json doc = make(false, false);
  doc["normalizer"] = {{"type", "NFKC"}};
  try {
    write("bad_norm", doc);
    ADD_FAILURE() << "NFKC accepted";
  } catch (const llava::Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.json: normalizer"), std::string::npos) << e.what();
  }
  doc = make(false, false);
  doc["model"]["merges"].push_back("q nothere");
  EXPECT_THROW(write("bad_merge", doc), llava::Error);
  EXPECT_THROW(write("bad_bos", make(false, false), {{"bos_token", "<nope>"}}), llava::Error);
  const auto tok = write("utf8", make(false, false));
  EXPECT_THROW(tok.encode("a\xFF"), llava::Error);
  EXPECT_THROW(BpeTokenizer::from_dir(llava::testing::temp_dir("bpe_empty")), llava::Error);
}

TEST_F(SmallBpe, FactoryPicksTheFormat) {
  const std::string dir = llava::testing::temp_dir("bpe_factory");
  try {
    llava::load_tokenizer(dir);
    ADD_FAILURE() << "an empty folder loaded";
  } catch (const llava::Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir), std::string::npos) << e.what();
  }
  std::ofstream(dir + "/tokenizer.json") << make(false, false).dump();
  auto tok = llava::load_tokenizer(dir);
  EXPECT_NE(dynamic_cast<const BpeTokenizer*>(tok.get()), nullptr);
  EXPECT_EQ(tok->encode("abc"), (Ids{tok->token_to_id("abc")}));
  EXPECT_THROW(llava::load_tokenizer(dir, false), llava::Error);  // legacy is SentencePiece's
}
