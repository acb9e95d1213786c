// The mapped data index: JSON Lines, the index cache (built, reused, invalidated, rebuilt), bad input
// (invalid JSON, truncated files, files that change under a run), the index's values against a
// reference written here (LLaVA's modality_lengths with Python's str.split), and samples read from the
// mapped bytes (escaped base64, duplicate keys).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <utime.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "llava/base64.h"
#include "llava/dataset.h"
#include "llava/dataset_index.h"
#include "llava/error.h"
#include "llava/mapped_file.h"
#include "llava/text_util.h"
#include "test_data_support.h"

using namespace llava;
using llava::testing::error_of;
using nlohmann::json;

namespace {

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

// Sets the file's modification time to `seconds` since the epoch (the content stays).
void set_mtime(const std::string& path, time_t seconds) {
  struct utimbuf t {seconds, seconds};
  ASSERT_EQ(::utime(path.c_str(), &t), 0);
}

std::string sample_json(const std::string& id, const std::string& question, bool image) {
  return R"({"id": ")" + id + "\", " + (image ? R"("image": "a.png", )" : "") +
         R"("conversations": [{"from": "human", "value": ")" + question +
         R"("}, {"from": "gpt", "value": "red circle"}]})";
}

// Python's str.isspace() over code points, and len(str.split()): the test's own reference.
bool py_space(uint32_t c) {
  return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}
int py_split_len(const std::string& s) {
  int words = 0;
  bool in_word = false;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<uint8_t>(s[i]);
    const size_t len = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
    for (size_t k = 1; k < len; ++k) cp = cp << 6 | (static_cast<uint8_t>(s[i + k]) & 0x3f);
    i += len;
    if (!py_space(cp) && !in_word) ++words;
    in_word = !py_space(cp);
  }
  return words;
}

// LLaVA's modality_lengths for one sample (sum of len(value.split()), >= 1, + with images), id, image count.
struct Reference {
  std::string id = "?";
  int32_t modality = -1, images = 0;
};
Reference reference_of(const json& j) {
  Reference r;
  if (!j.is_object()) return r;
  if (j.contains("id")) r.id = j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump();
  int words = 0;
  bool has = false;
  for (const char* key : {"image", "images"})
    if (j.contains(key) && !j[key].is_null()) {
      has = true;
      r.images += j[key].is_array() ? static_cast<int32_t>(j[key].size()) : 1;
    }
  if (j.contains("conversations") && j["conversations"].is_array())
    for (const auto& t : j["conversations"])
      if (t.is_object() && t.contains("value") && t["value"].is_string()) words += py_split_len(t["value"]);
  words = std::max(words, 1);
  r.modality = has ? words : -words;
  return r;
}

// Random sample text: unicode and escaped whitespace, duplicate keys, values of every type.
std::string random_text(std::mt19937& g) {
  static const std::vector<std::string> pieces = {
      "a", "bc", " ", "  ", "\\n", "\\t", "\\r", "\\u00a0", "\xc2\xa0", "\xe3\x80\x80", "\\u3000", "\xe2\x80\x83",
      "\\u2028", "\xc2\x85", "\\u001c", "\\u000b", "\xc3\xa9t\xc3\xa9", "\\\"q\\\"", "\\\\", "<image>", "\\/",
      "\xf0\x9f\x98\x80", "x\\u0020y"};
  std::string s;
  const int n = static_cast<int>(g() % 12);
  for (int k = 0; k < n; ++k) s += pieces[g() % pieces.size()];
  if (g() % 4 == 0) s += std::string(70 + g() % 90, 'w') + " tail";  // longer than one 64-byte block
  return s;
}

std::string random_value(std::mt19937& g) {
  switch (g() % 10) {
    case 8: return std::string(1100, '[') + std::string(1100, ']');  // deeper than simdjson goes: nlohmann reads it
    case 9: return "123456789012345678901234567890";
    case 0: return "null";
    case 1: return "3";
    case 2: return "-2.5e3";
    case 3: return "true";
    case 4: return "[1, \"x\", {\"k\": [null]}]";
    case 5: return "{\"a\": {\"b\": false}}";
    default: return "\"" + random_text(g) + "\"";
  }
}

std::string random_sample(std::mt19937& g) {
  std::vector<std::string> fields;
  const int n_fields = 1 + static_cast<int>(g() % 6);
  for (int f = 0; f < n_fields; ++f) {
    switch (g() % 7) {
      case 0: fields.push_back("\"id\": " + (g() % 2 ? "\"id" + std::to_string(g() % 100) + "\"" : random_value(g))); break;
      case 1:
      case 2: {
        std::string turns;
        const int n = static_cast<int>(g() % 5);
        for (int t = 0; t < n; ++t) {
          std::string turn;
          if (g() % 6 == 0) turn = random_value(g);
          else
            turn = "{\"from\": \"human\", \"value\": " + (g() % 5 ? "\"" + random_text(g) + "\"" : random_value(g)) +
                   (g() % 5 == 0 ? ", \"value\": \"" + random_text(g) + "\"" : "") + "}";
          turns += (t ? ", " : "") + turn;
        }
        fields.push_back("\"conversations\": " + (g() % 8 ? "[" + turns + "]" : random_value(g)));
        break;
      }
      case 3: fields.push_back("\"image\": " + (g() % 2 ? "[\"a.png\", \"b.png\"]" : random_value(g))); break;
      case 4: fields.push_back("\"images\": " + random_value(g)); break;
      default: fields.push_back("\"other\": " + random_value(g));
    }
  }
  std::string s = "{";
  for (size_t k = 0; k < fields.size(); ++k) s += (k ? ", " : "") + fields[k];
  return g() % 20 == 0 ? random_value(g) : s + "}";  // now and then not an object at all
}

}  // namespace

TEST(WordCount, MatchesPythonSplitOnUnicodeAndLongText) {
  std::mt19937 g(5);
  int compared = 0;
  for (int k = 0; k < 3000; ++k) {
    const std::string text = json::parse("\"" + random_text(g) + random_text(g) + "\"").get<std::string>();
    ASSERT_EQ(python_word_count(text), py_split_len(text)) << json(text).dump();
    ++compared;
  }
  EXPECT_EQ(python_word_count(std::string(200, 'a') + "\xe3\x80\x80" + std::string(63, 'b') + " c"), 3);
  std::printf("  %d strings: word counts equal to the reference\n", compared);
}

// The index's id, modality length and image count equal LLaVA's values (computed here with nlohmann and
// Python's split) for random samples, in both file formats.
TEST(DatasetIndex, ValuesMatchTheReferenceForRandomSamples) {
  std::mt19937 g(11);
  std::vector<std::string> samples;
  for (int k = 0; k < 1500; ++k) samples.push_back(random_sample(g));
  std::string list = "[", lines;
  for (size_t k = 0; k < samples.size(); ++k) {
    list += (k ? ",\n" : "\n") + samples[k];
    lines += samples[k] + "\n";
  }
  list += "\n]";
  for (const std::string& name : {std::string("random.json"), std::string("random.jsonl")}) {
    Dataset ds = Dataset::from_text(name == "random.json" ? list : lines, "", name);
    ASSERT_EQ(ds.size(), samples.size()) << name;
    int with_images = 0;
    for (size_t k = 0; k < samples.size(); ++k) {
      const Reference r = reference_of(json::parse(samples[k]));
      ASSERT_EQ(ds.id(k), r.id) << name << " sample " << k << ": " << samples[k];
      ASSERT_EQ(ds.modality_length(k), r.modality) << name << " sample " << k << ": " << samples[k];
      ASSERT_EQ(ds.image_count(k), r.images) << name << " sample " << k << ": " << samples[k];
      with_images += r.modality > 0;
    }
    std::printf("  %s: %zu samples (%d with images) equal to the reference\n", name.c_str(), samples.size(), with_images);
  }
}

// A file of many chunks (more than 8 MB: found by one thread, read by others): values in file order, and the
// first invalid sample in the file is the one reported.
TEST(DatasetIndex, LargeFilesReadOnSeveralThreadsKeepFileOrder) {
  std::mt19937 g(23);
  std::vector<std::string> samples;
  std::string list = "[";
  size_t bytes = 0;
  for (int k = 0; bytes < (12u << 20); ++k) {
    samples.push_back(k % 50 ? "{\"id\": \"n" + std::to_string(k) + "\", \"image\": \"a.png\", \"conversations\": [{\"from\": "
                                   "\"human\", \"value\": \"" + std::string(200 + k % 300, 'x') + " " + random_text(g) + "\"}]}"
                             : random_sample(g));
    list += (k ? ",\n" : "\n") + samples.back();
    bytes += samples.back().size();
  }
  Dataset ds = Dataset::from_text(list + "]", "", "large.json");
  ASSERT_EQ(ds.size(), samples.size());
  for (size_t k = 0; k < samples.size(); ++k) {
    const Reference r = reference_of(json::parse(samples[k]));
    ASSERT_EQ(ds.id(k), r.id) << k;
    ASSERT_EQ(ds.modality_length(k), r.modality) << k;
  }
  // two invalid samples far apart: the first one is reported
  const size_t a = samples.size() / 3, b = samples.size() - 10;
  std::string bad = "[";
  for (size_t k = 0; k < samples.size(); ++k) bad += (k ? ",\n" : "\n") + (k == a || k == b ? std::string("{\"id\": nul}") : samples[k]);
  const std::string m = error_of([&] { Dataset::from_text(bad + "]", "", "large_bad.json"); });
  EXPECT_NE(m.find("large_bad.json: invalid JSON at line " + std::to_string(a + 2) + ", column 11: sample " + std::to_string(a) + ":"),
            std::string::npos)
      << m;
  std::printf("  %zu samples (%zu MB): values in file order; the first of two invalid samples reported\n", samples.size(),
              bytes >> 20);
}

TEST(DatasetIndex, JsonLinesOneSamplePerLineBlankLinesSkipped) {
  const std::string text = sample_json("a", "what shape", true) + "\n\n  \r\n" + sample_json("b", "two words here", false) +
                           "\r\n" + sample_json("c", "x", false);  // no newline at the end
  Dataset ds = Dataset::from_text(text, "/img", "data.jsonl");
  ASSERT_EQ(ds.size(), 3u);
  EXPECT_EQ(ds.id(0), "a");
  EXPECT_EQ(ds.id(2), "c");
  EXPECT_EQ(ds.modality_length(0), 4);   // what shape + red circle
  EXPECT_EQ(ds.modality_length(1), -5);  // text-only
  Sample s = ds.sample(0);
  EXPECT_EQ(s.turns[0].value, "what shape");
  ASSERT_EQ(s.images.size(), 1u);
  EXPECT_EQ(s.images[0].path, "/img/a.png");
  EXPECT_EQ(Dataset::from_text("", "", "empty.jsonl").size(), 0u);
  // a UTF-8 byte order mark before the first sample is skipped, in both formats
  EXPECT_EQ(Dataset::from_text("\xEF\xBB\xBF" + text, "", "bom.jsonl").sample(0).id, "a");
  EXPECT_EQ(Dataset::from_text("\xEF\xBB\xBF[" + sample_json("x", "q", false) + "]", "", "bom.json").sample(0).id, "x");
}

TEST(DatasetIndex, InvalidJsonNamesFileLineColumnAndSample) {
  const std::string good = sample_json("g", "q", false);
  // JSON Lines: line 3 is the second sample (the blank line 2 is not one); column 10 is its second ','
  std::string m = error_of([&] { Dataset::from_text(good + "\n\n{\"id\": 2,, }\n" + good, "", "bad.jsonl"); });
  EXPECT_NE(m.find("bad.jsonl: invalid JSON at line 3, column 10: sample 1:"), std::string::npos) << m;
  // a JSON list: sample 2 on line 4, where " {\"id\": tru}" has its '}' (the end of the bad literal) at column 12
  m = error_of([&] { Dataset::from_text("[\n" + good + ",\n" + good + ",\n {\"id\": tru}\n]", "", "bad.json"); });
  EXPECT_NE(m.find("bad.json: invalid JSON at line 4, column 12: sample 2:"), std::string::npos) << m;
  // invalid JSON deep inside a value the index does not otherwise need is found too
  m = error_of([&] { Dataset::from_text("[{\"id\": \"x\", \"other\": [1, {\"k\": nul}]}]", "", "deep.json"); });
  EXPECT_NE(m.find("deep.json: invalid JSON at line 1"), std::string::npos) << m;
  EXPECT_NE(m.find("sample 0"), std::string::npos) << m;
  m = error_of([&] { Dataset::from_text(good + "\n" + good + " trailing\n", "", "t.jsonl"); });
  EXPECT_NE(m.find("t.jsonl: invalid JSON at line 2"), std::string::npos) << m;
  m = error_of([&] { Dataset::from_text(good, "", "one.json"); });  // JSON Lines named .json
  EXPECT_NE(m.find("must be named .jsonl"), std::string::npos) << m;
  // the first problem in the file is the one reported: an invalid sample before the truncation
  m = error_of([&] { Dataset::from_text("[" + good + ",\n{\"id\": tru},\n" + good + ",\n" + good.substr(0, 30), "", "c.json"); });
  EXPECT_NE(m.find("c.json: invalid JSON at line 2"), std::string::npos) << m;
  EXPECT_NE(m.find("sample 1:"), std::string::npos) << m;
  // many samples (read by several threads): the first invalid one of two far apart (column 11: the "}" after "nul")
  std::string many;
  for (int k = 0; k < 5000; ++k) many += (k == 1200 || k == 4000 ? std::string("{\"id\": nul}") : good) + "\n";
  m = error_of([&] { Dataset::from_text(many, "", "many.jsonl"); });
  EXPECT_NE(m.find("many.jsonl: invalid JSON at line 1201, column 11: sample 1200:"), std::string::npos) << m;
}

TEST(DatasetIndex, TruncatedFilesAreErrorsNamingTheFile) {
  const std::string dir = llava::testing::temp_dir("index_truncated");
  const std::string full = "[" + sample_json("a", "q", true) + ", " + sample_json("b", "q", true) + "]";
  write_text(dir + "/cut.json", full.substr(0, full.size() - 30));
  std::string m = error_of([&] { Dataset::open(dir + "/cut.json", ""); });
  EXPECT_NE(m.find(dir + "/cut.json: invalid JSON at line 1"), std::string::npos) << m;
  EXPECT_NE(m.find("unexpected end of file inside sample 1"), std::string::npos) << m;
  write_text(dir + "/cut.jsonl", sample_json("a", "q", true) + "\n" + sample_json("b", "q", true).substr(0, 40));
  m = error_of([&] { Dataset::open(dir + "/cut.jsonl", ""); });
  EXPECT_NE(m.find(dir + "/cut.jsonl: invalid JSON at line 2"), std::string::npos) << m;
  EXPECT_NE(m.find("sample 1"), std::string::npos) << m;
  m = error_of([&] { Dataset::open(dir + "/missing.json", ""); });
  EXPECT_NE(m.find(dir + "/missing.json: cannot open"), std::string::npos) << m;
}

// A file changed in place while a run uses it: sample() refuses (DataFileChanged), whatever the change.
TEST(DatasetIndex, DataFileChangedUnderTheRunIsAnErrorThatSaysSo) {
  const std::string dir = llava::testing::temp_dir("index_changed");
  const std::string path = dir + "/data.json";
  const std::string text = "[" + sample_json("a", "q", false) + ", " + sample_json("b", "q", false) + "]";
  write_text(path, text);
  set_mtime(path, 1600000000);
  Dataset ds = Dataset::open(path, "");
  EXPECT_EQ(ds.sample(1).id, "b");
  {
    std::ofstream grow(path, std::ios::binary | std::ios::app);  // the same inode, longer
    grow << "\n";
  }
  try {
    ds.sample(0);
    FAIL() << "no error for a file that grew";
  } catch (const DataFileChanged& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(path + ": the data file changed while in use (size " + std::to_string(text.size()) + " -> " +
                     std::to_string(text.size() + 1) + " bytes)"),
              std::string::npos)
        << m;
  }
  write_text(path, text);  // truncated back to the indexed size, but rewritten: a new modification time
  set_mtime(path, 1600000100);
  try {
    ds.sample(0);
    FAIL() << "no error for a rewritten file";
  } catch (const DataFileChanged& e) {
    EXPECT_NE(std::string(e.what()).find("modification time changed"), std::string::npos) << e.what();
  }
}

// ---- the index cache

class IndexCache : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = llava::testing::temp_dir("index_cache");
    data = dir + "/data.json";
    cache_dir = dir + "/cache";
    text = "[" + sample_json("a", "one two", true) + ",\n" + sample_json("b", "three", false) + "]";
    write_text(data, text);
    set_mtime(data, 1600000000);
  }
  // Opens the data set with the cache; the lines it logs in `log`.
  Dataset open(bool build = true) {
    log.clear();
    DatasetOpenOptions o;
    o.cache_dir = cache_dir;
    o.build_cache = build;
    o.log = [this](const std::string& line) { log += line + "\n"; };
    return Dataset::open(data, "", o);
  }
  std::string cache_file() const {
    for (const auto& e : std::filesystem::directory_iterator(cache_dir))
      if (e.path().extension() == ".idx") return e.path().string();
    return "";
  }
  bool logged(const std::string& s) const { return log.find(s) != std::string::npos; }
  std::string dir, data, cache_dir, text, log;
};

TEST_F(IndexCache, BuiltThenReusedWithTheSameValues) {
  Dataset first = open();
  EXPECT_TRUE(logged("samples indexed in")) << log;
  const std::string cache = cache_file();
  ASSERT_FALSE(cache.empty()) << log;
  EXPECT_NE(cache.find("data.json."), std::string::npos) << cache;
  EXPECT_TRUE(logged("no cache file; building it")) << log;
  Dataset again = open();
  EXPECT_TRUE(logged("2 samples (cache " + cache + ")")) << log;
  EXPECT_FALSE(logged("indexed in")) << log;  // not scanned again
  ASSERT_EQ(again.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(again.id(i), first.id(i));
    EXPECT_EQ(again.modality_length(i), first.modality_length(i));
    EXPECT_EQ(again.image_count(i), first.image_count(i));
    EXPECT_EQ(again.sample(i).turns[0].value, first.sample(i).turns[0].value);
  }
  EXPECT_EQ(again.modality_length(0), 4);
  EXPECT_EQ(again.modality_length(1), -3);
}

TEST_F(IndexCache, InvalidatedBySizeAndByModificationTime) {
  open();
  // a new sample: another size
  write_text(data, "[" + sample_json("a", "one two", true) + ",\n" + sample_json("b", "three", false) + ",\n" +
                       sample_json("c", "x", false) + "]");
  set_mtime(data, 1600000000);
  Dataset grown = open();
  EXPECT_TRUE(logged("the data file changed (size " + std::to_string(text.size()) + " -> ")) << log;
  EXPECT_TRUE(logged("indexed in")) << log;
  EXPECT_EQ(grown.size(), 3u);
  // the same size, an edited word: only the modification time tells
  write_text(data, "[" + sample_json("a", "one two", true) + ",\n" + sample_json("b", "three", false) + ",\n" +
                       sample_json("d", "y", false) + "]");
  set_mtime(data, 1600000500);
  Dataset edited = open();
  EXPECT_TRUE(logged("the data file changed (modification time changed); rebuilding it")) << log;
  EXPECT_EQ(edited.id(2), "d");
  open();
  EXPECT_TRUE(logged("3 samples (cache ")) << log;
}

TEST_F(IndexCache, OtherVersionCorruptOrTruncatedCachesAreRebuilt) {
  open();
  const std::string cache = cache_file();
  auto rewrite = [&](size_t offset, const std::string& bytes) {
    std::fstream f(cache, std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(static_cast<std::streamoff>(offset));
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  };
  rewrite(8, std::string("\x07\x00\x00\x00", 4));  // the header's version field
  Dataset a = open();
  EXPECT_TRUE(logged("index version 7, this build reads " + std::to_string(DatasetIndex::kVersion) + "; rebuilding it"))
      << log;
  EXPECT_EQ(a.modality_length(0), 4);
  const auto size = std::filesystem::file_size(cache);
  rewrite(size - 3, "zzz");  // inside the id pool
  Dataset b = open();
  EXPECT_TRUE(logged("corrupt: checksum mismatch; rebuilding it")) << log;
  EXPECT_EQ(b.id(1), "b");
  std::filesystem::resize_file(cache, size - 10);
  open();
  EXPECT_TRUE(logged("corrupt: " + std::to_string(size - 10) + " bytes do not match the header")) << log;
  write_text(cache, "not a cache at all, just some text that is long enough to hold a header, really, it is"
                    " longer than one hundred and twenty-eight bytes by now, surely, yes");
  open();
  EXPECT_TRUE(logged("corrupt: not an index cache of this build (bad magic)")) << log;
  open();
  EXPECT_TRUE(logged("2 samples (cache ")) << log;  // rebuilt each time: good again
}

// The multi-rank protocol: a reader (build_cache false) maps the builder's cache; without one it indexes in
// memory and writes nothing.
TEST_F(IndexCache, ReadersMapTheBuildersCacheAndNeverWrite) {
  Dataset lone = open(/*build=*/false);
  EXPECT_TRUE(logged("no cache file; indexing in memory (this process does not write caches)")) << log;
  EXPECT_EQ(lone.size(), 2u);
  EXPECT_FALSE(std::filesystem::exists(cache_dir)) << "a reader wrote " << cache_dir;
  open(/*build=*/true);  // rank 0
  Dataset reader = open(/*build=*/false);  // after the barrier
  EXPECT_TRUE(logged("2 samples (cache ")) << log;
  EXPECT_EQ(reader.modality_length(0), 4);
}

// ---- samples read from the mapped bytes

TEST(DatasetSample, Base64WithJsonEscapesDecodesLikeTheUnescapedText) {
  const auto& d = llava::testing::tiny_data_dir();
  std::vector<uint8_t> png;
  ASSERT_TRUE(base64_decode(d.png_base64, png));
  // JSON escapes inside the base64: "\/" for '/' (as some JSON writers do), "\u0041" for 'A', a "\n" break
  std::string escaped;
  int escapes = 0;
  for (size_t k = 0; k < d.png_base64.size(); ++k) {
    const char c = d.png_base64[k];
    if (k == 40) escaped += "\\n", ++escapes;
    escaped += c == '/' ? std::string("\\/") : c == 'A' ? std::string("\\u0041") : std::string(1, c);
    escapes += c == '/' || c == 'A';
  }
  ASSERT_GT(escapes, 1);
  Dataset ds = Dataset::from_text(R"([{"id": "e", "images": [")" + escaped + R"(", ")" + d.png_base64 +
                                      R"("], "conversations": [{"from": "human", "value": "<image><image>"},
                                      {"from": "gpt", "value": "x"}]}])",
                                  d.image_dir, "esc.json");
  Sample s = ds.sample(0);
  ASSERT_EQ(s.images.size(), 2u);
  for (const ImageRef& ref : s.images) {
    EXPECT_EQ(ref.kind, ImageRef::Kind::kInline);
    EXPECT_EQ(ref.bytes, png) << ref.where;
  }
}

// As with nlohmann's objects, a key given twice counts with its last value, in the index and in sample().
TEST(DatasetSample, DuplicateKeysUseTheLastValue) {
  Dataset ds = Dataset::from_text(R"([{"id": "first", "conversations": "not a list", "image": "x.png",
      "conversations": [{"from": "human", "value": "a b c", "value": "only this"}, {"from": "gpt", "value": "ok"}],
      "image": null, "id": "last"}])",
                                  "", "dup.json");
  EXPECT_EQ(ds.id(0), "last");
  EXPECT_EQ(ds.modality_length(0), -3);  // "only this" + "ok", no image (the last `image` is null)
  Sample s = ds.sample(0);
  ASSERT_EQ(s.turns.size(), 2u);
  EXPECT_EQ(s.turns[0].value, "only this");
  EXPECT_TRUE(s.images.empty());
}

// With several problems, the one reported is the first of conversations, image, images (as before).
TEST(DatasetSample, ProblemsAreReportedConversationsFirstThenImages) {
  std::string m = error_of([] {
    Dataset::from_text(R"([{"images": [3], "image": "", "conversations": [{"from": "robot", "value": "a"}]}])", "", "p.json")
        .sample(0);
  });
  EXPECT_NE(m.find("sample 0 (id '?'): conversations[0]: unknown role 'robot'"), std::string::npos) << m;
  m = error_of([] {
    Dataset::from_text(R"([{"images": [3], "image": "", "conversations": [{"from": "human", "value": "a"},
        {"from": "gpt", "value": "b"}]}])", "", "p.json")
        .sample(0);
  });
  EXPECT_NE(m.find("sample 0 (id '?'): image is an empty path"), std::string::npos) << m;
  m = error_of([] { Dataset::from_text("[[1, 2]]", "", "p.json").sample(0); });
  EXPECT_NE(m.find("a sample must be a JSON object, got array"), std::string::npos) << m;
}

TEST(MappedFile, PaddingReadsAsZerosAfterTheEnd) {
  const std::string dir = llava::testing::temp_dir("mapped");
  for (size_t size : {size_t(0), size_t(10), size_t(4096), size_t(8192 - 3)}) {
    write_text(dir + "/f", std::string(size, 'x'));
    auto f = MappedFile::open(dir + "/f");
    ASSERT_EQ(f->size(), size);
    for (size_t k = 0; k < MappedFile::kPadding; ++k) ASSERT_EQ(f->data()[size + k], '\0') << size << " + " << k;
    f->release(0, size);  // pages handed back read the same again
    if (size > 0) {
      EXPECT_EQ(f->data()[size - 1], 'x');
    }
  }
}
