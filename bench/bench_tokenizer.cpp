// Tokenizer encoding speed: SentencePiece (LlamaTokenizer, tokenizer.model) vs byte-level BPE (BpeTokenizer,
// tokenizer.json) on the same English + code + CJK text, characters (Unicode code points) per second, one
// thread. The text is cut into documents of ~2000 characters (a prompt's size), each encoded on its own.
//
//   bench_tokenizer --spm DIR --bpe DIR [--bpe DIR ...] [--text FILE] [--chars 400000] [--rounds 5]
//   e.g. build/bench/bench_tokenizer --spm ../shared/fixtures/llava-tiny
//          --bpe ../shared/fixtures/bpe-tokenizer/qwen2 --bpe ../shared/fixtures/bpe-tokenizer/llama3
// Prints one JSON object on stdout: load time and the best of --rounds timings per tokenizer (rounds interleaved
// across tokenizers), and each BPE tokenizer's speed relative to the SentencePiece one.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "llava/bpe_tokenizer.h"
#include "llava/tokenizer.h"

using json = nlohmann::json;

namespace {

// Written for this benchmark: prose, a chat turn, code, numbers, Chinese, Japanese, Korean.
const char* const kSampleText[] = {
    "The photograph shows a small harbour early in the morning. Three fishing boats are tied to the wooden pier, "
    "their nets piled on the decks, and a gull stands on the nearest post. Behind them, the houses of the village "
    "climb the hill in rows of white and ochre walls; a church tower rises above the roofs.\n",
    "USER: What is the man on the left holding, and why might he be doing that?\nASSISTANT: He is holding a "
    "folded umbrella under his arm. The sky is overcast and the pavement is wet, so it probably rained a few "
    "minutes ago and he expects it to start again.\n",
    "def collate(batch, pad_id=0):\n    lengths = [len(x[\"input_ids\"]) for x in batch]\n    width = max(lengths)\n"
    "    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)\n    for i, x in enumerate(batch):\n"
    "        ids[i, : lengths[i]] = torch.tensor(x[\"input_ids\"])\n    return {\"input_ids\": ids, \"lengths\": lengths}\n",
    "for (size_t i = 0; i < n; ++i) {\n  if (scores[i] > best) { best = scores[i]; arg = static_cast<int>(i); }\n}\n"
    "std::printf(\"%d of %zu (%.2f%%)\\n\", arg, n, 100.0 * best);\n",
    "In 2023 the station recorded 1,284 mm of rain, 17% more than in 2022; the wettest day (14 March) alone brought "
    "86.5 mm. Temperatures ranged from -12.4 to 38.9 degrees.\n",
    "这张照片拍摄于一个晴朗的下午。画面中央是一座古老的石桥，桥下的河水清澈见底，几只鸭子在水面上游来游去。"
    "远处的山峦被薄雾笼罩，近处的柳树随风摇曳，整个场景显得宁静而安详。\n",
    "写真には、駅のホームで電車を待つ人々が写っています。左側の女性は本を読んでおり、右側の男の子は窓の外を"
    "眺めています。時計は午前八時十五分を指しています。\n",
    "사진 속에는 공원 벤치에 앉아 있는 노인과 그 옆에서 비둘기에게 모이를 주는 아이가 있습니다.\n",
};

std::string make_text(size_t chars) {
  std::string text;
  size_t count = 0;
  for (size_t k = 0; count < chars; ++k) {
    const std::string part = kSampleText[k % (sizeof kSampleText / sizeof kSampleText[0])];
    text += part;
    for (unsigned char c : part) count += (c & 0xC0) != 0x80;
  }
  return text;
}

size_t code_points(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// Documents of ~2000 characters, cut after a newline.
std::vector<std::string> documents(const std::string& text) {
  std::vector<std::string> docs;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = start, chars = 0;
    while (end < text.size() && (chars < 2000 || text[end - 1] != '\n')) chars += (text[end++] & 0xC0) != 0x80;
    docs.push_back(text.substr(start, end - start));
    start = end;
  }
  return docs;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct Timed {
  std::string name;
  std::shared_ptr<const llava::Tokenizer> tok;
  double load_s = 0;
  size_t tokens = 0;
  std::vector<double> rounds_s;
};

// One round = every tokenizer once over all documents, so that a burst of load on the shared machine hits
// all of them alike; each keeps its best round.
void run_rounds(std::vector<Timed>& all, const std::vector<std::string>& docs, int rounds) {
  for (int r = 0; r < rounds; ++r)
    for (Timed& t : all) {
      size_t tokens = 0;
      const auto t0 = std::chrono::steady_clock::now();
      for (const auto& d : docs) tokens += t.tok->encode(d).size();
      t.rounds_s.push_back(seconds_since(t0));
      t.tokens = tokens;
    }
}

}  // namespace

int main(int argc, char** argv) {
  std::string spm_dir, text_file;
  std::vector<std::string> bpe_dirs;
  size_t chars = 400000;
  int rounds = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i], value = argv[i + 1];
    if (key == "--spm") spm_dir = value;
    else if (key == "--bpe") bpe_dirs.push_back(value);
    else if (key == "--text") text_file = value;
    else if (key == "--chars") chars = std::stoul(value);
    else if (key == "--rounds") rounds = std::max(1, std::stoi(value));
    else {
      std::cerr << "bench_tokenizer: unknown option " << key << "\n";
      return 2;
    }
  }
  if (spm_dir.empty() || bpe_dirs.empty()) {
    std::cerr << "usage: bench_tokenizer --spm DIR --bpe DIR [--bpe DIR ...] [--text FILE] [--chars N] [--rounds R]\n";
    return 2;
  }
  std::string text;
  if (!text_file.empty()) {
    std::ifstream in(text_file, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  } else {
    text = make_text(chars);
  }
  const std::vector<std::string> docs = documents(text);
  const size_t n_chars = code_points(text);

  std::vector<Timed> all;
  auto load = [&](const std::string& name, auto&& make) {
    const auto t0 = std::chrono::steady_clock::now();
    Timed t{name, make(), 0, 0, {}};
    t.load_s = seconds_since(t0);
    all.push_back(std::move(t));
  };
  load("sentencepiece " + spm_dir, [&] { return std::make_shared<const llava::LlamaTokenizer>(llava::LlamaTokenizer::from_dir(spm_dir)); });
  for (const auto& dir : bpe_dirs)
    load("bpe " + dir, [&] { return std::make_shared<const llava::BpeTokenizer>(llava::BpeTokenizer::from_dir(dir)); });
  run_rounds(all, docs, rounds);

  json results = json::array();
  double spm_chars_per_s = 0;
  for (const Timed& t : all) {
    const double best = *std::min_element(t.rounds_s.begin(), t.rounds_s.end());
    const double chars_per_s = static_cast<double>(n_chars) / best;
    json r = {{"name", t.name},       {"load_s", t.load_s}, {"tokens", t.tokens}, {"best_s", best},
              {"rounds_s", t.rounds_s}, {"chars_per_s", chars_per_s},
              {"chars_per_token", static_cast<double>(n_chars) / static_cast<double>(t.tokens)}};
    if (spm_chars_per_s == 0)
      spm_chars_per_s = chars_per_s;
    else
      r["speed_vs_sentencepiece"] = chars_per_s / spm_chars_per_s;
    results.push_back(r);
  }
  std::cout << json{{"text", {{"chars", n_chars}, {"bytes", text.size()}, {"documents", docs.size()},
                              {"source", text_file.empty() ? "built-in sample" : text_file}}},
                    {"tokenizers", results}}
                   .dump(2)
            << "\n";
  return 0;
}
