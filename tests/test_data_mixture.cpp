// Data mixtures (--data_path mix.yaml, LLaVA-NeXT's format): each sampling strategy with its rounding,
// random:N% with a seed, per-entry image folders, the order of concatenation, and bad mixtures.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <set>

#include "llava/data_mixture.h"
#include "llava/dataset.h"
#include "llava/error.h"
#include "test_support.h"

using namespace llava;
using llava::testing::error_of;

namespace {

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

// A data file of n samples with ids PREFIX0..PREFIX{n-1}; sample k has k + 1 words in its question and an
// image when k is even.
void write_data(const std::string& path, const std::string& prefix, int n, bool jsonl = false) {
  std::string text = jsonl ? "" : "[";
  for (int k = 0; k < n; ++k) {
    std::string question;
    for (int w = 0; w <= k; ++w) question += (w ? " w" : "w");
    const std::string s = "{\"id\": \"" + prefix + std::to_string(k) + "\", " +
                          (k % 2 == 0 ? "\"image\": \"p" + std::to_string(k) + ".png\", " : "") +
                          "\"conversations\": [{\"from\": \"human\", \"value\": \"" + question +
                          "\"}, {\"from\": \"gpt\", \"value\": \"ok\"}]}";
    text += jsonl ? s + "\n" : (k ? ",\n" : "\n") + s;
  }
  write_text(path, jsonl ? text : text + "]");
}

std::vector<std::string> ids(const Dataset& ds) {
  std::vector<std::string> out;
  for (size_t i = 0; i < ds.size(); ++i) out.push_back(ds.id(i));
  return out;
}

class Mixture : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = llava::testing::temp_dir("mixture");
    write_data(dir + "/a.json", "a", 7);
    write_data(dir + "/b.jsonl", "b", 10, /*jsonl=*/true);
  }
  Dataset open(const std::string& yaml, uint64_t seed = 42) {
    write_text(dir + "/mix.yaml", yaml);
    DatasetOpenOptions o;
    o.seed = seed;
    o.log = [this](const std::string& line) { log += line + "\n"; };
    return Dataset::open(dir + "/mix.yaml", "/default_images", o);
  }
  std::string dir, log;
};

}  // namespace

TEST_F(Mixture, StrategiesRoundUpAndConcatenateInOrder) {
  Dataset ds = open(R"(datasets:
  - json_path: a.json
    sampling_strategy: "first:50%"
  - json_path: b.jsonl
    sampling_strategy: "end:10%"
  - json_path: a.json
  - json_path: b.jsonl
    sampling_strategy: "first:12.5%"
  - json_path: a.json
    sampling_strategy: "end:3"
  - json_path: b.jsonl
    sampling_strategy: first:100
  - json_path: a.json
    sampling_strategy: "end:0%"
)");
  // first:50% of 7 = ceil(3.5) = 4; end:10% of 10 = 1; all 7; 12.5% of 10 = ceil(1.25) = 2; end:3; first:100
  // of 10 = all 10; end:0% = none
  std::vector<std::string> want = {"a0", "a1", "a2", "a3", "b9", "a0", "a1", "a2", "a3", "a4", "a5", "a6", "b0", "b1",
                                   "a4", "a5", "a6"};
  for (int k = 0; k < 10; ++k) want.push_back("b" + std::to_string(k));
  EXPECT_EQ(ids(ds), want);
  ASSERT_EQ(ds.parts().size(), 7u);
  EXPECT_EQ(ds.parts()[1].first, 4u);
  EXPECT_EQ(ds.parts()[1].count, 1u);
  EXPECT_EQ(ds.parts()[1].file_samples, 10u);
  EXPECT_EQ(ds.parts()[6].count, 0u);
  EXPECT_EQ(ds.part_of(4), 1u);
  EXPECT_EQ(ds.part_of(ds.size() - 1), 5u);  // the empty last part holds no sample
  // the index values follow the rows: b9 has 10 + 1 words, no image (odd); a4 has 5 + 1, an image
  EXPECT_EQ(ds.modality_length(4), -11);
  EXPECT_EQ(ds.modality_length(14), 6);
  EXPECT_EQ(ds.image_count(14), 1);
  EXPECT_NE(log.find("b.jsonl (end:10%): 1 of 10 samples"), std::string::npos) << log;
  EXPECT_NE(log.find("7 data sets, 27 samples"), std::string::npos) << log;
}

TEST_F(Mixture, RandomIsSeededAndShuffled) {
  write_data(dir + "/big.json", "r", 200);
  const std::string yaml = "datasets:\n  - json_path: big.json\n    sampling_strategy: random:33%\n"
                           "  - json_path: big.json\n    sampling_strategy: random:33%\n";
  Dataset one = open(yaml, 7), same = open(yaml, 7), other = open(yaml, 8);
  ASSERT_EQ(one.size(), 2u * 66);  // ceil(33 * 200 / 100) = 66 per entry
  EXPECT_EQ(ids(one), ids(same));
  EXPECT_NE(ids(one), ids(other));
  const std::vector<std::string> all = ids(one);
  const std::vector<std::string> first(all.begin(), all.begin() + 66), second(all.begin() + 66, all.end());
  EXPECT_NE(first, second);  // each entry draws on its own
  std::set<std::string> distinct(first.begin(), first.end());
  EXPECT_EQ(distinct.size(), 66u);
  std::vector<int> rows;
  for (const auto& id : first) rows.push_back(std::stoi(id.substr(1)));
  EXPECT_FALSE(std::is_sorted(rows.begin(), rows.end()));  // LLaVA-NeXT's order: the shuffled one
  EXPECT_GT(*std::max_element(rows.begin(), rows.end()), 150);  // not just the first rows
  // the index values follow the shuffled rows
  for (size_t i = 0; i < first.size(); ++i) {
    const int k = rows[i];
    EXPECT_EQ(one.modality_length(i), (k % 2 == 0 ? 1 : -1) * (k + 2)) << first[i];
  }
  EXPECT_EQ(open("datasets:\n  - json_path: big.json\n    sampling_strategy: random:100%\n", 3).size(), 200u);
}

TEST_F(Mixture, EachEntryMayNameItsImageFolder) {
  Dataset ds = open("datasets:\n  - json_path: a.json\n    image_folder: /entry_images\n    sampling_strategy: first:1\n"
                    "  - json_path: a.json\n    sampling_strategy: first:1\n");
  ASSERT_EQ(ds.size(), 2u);
  EXPECT_EQ(ds.sample(0).images[0].path, "/entry_images/p0.png");
  EXPECT_EQ(ds.sample(1).images[0].path, "/default_images/p0.png");
  EXPECT_EQ(ds.parts()[0].image_folder, "/entry_images");
  EXPECT_EQ(ds.sample(1).index, 1);
}

TEST_F(Mixture, BadMixturesNameTheFileAndTheEntry) {
  std::string m = error_of([&] { open("datasets:\n  - json_path: a.json\n  - json_path: gone.json\n"); });
  EXPECT_NE(m.find("mix.yaml: datasets[1] (gone.json): no such file (looked for " + dir + "/gone.json"),
            std::string::npos)
      << m;
  for (const std::string pct : {"first:150%", "end:-5%", "random:abc%", "first:100.5%"}) {
    m = error_of([&] { open("datasets:\n  - json_path: a.json\n    sampling_strategy: \"" + pct + "\"\n"); });
    EXPECT_NE(m.find("mix.yaml: datasets[0] (a.json): sampling_strategy '" + pct +
                     "': the percentage must be a number between 0 and 100"),
              std::string::npos)
        << m;
  }
  m = error_of([&] { open("datasets:\n  - json_path: a.json\n    sampling_strategy: last:10%\n"); });
  EXPECT_NE(m.find("unknown sampling_strategy 'last:10%'"), std::string::npos) << m;
  m = error_of([&] { open("datasets:\n  - json_path: a.json\n    sampling_stratgy: all\n"); });
  EXPECT_NE(m.find("datasets[0]: unknown key 'sampling_stratgy'"), std::string::npos) << m;
  m = error_of([&] { open("datasets: []\n"); });
  EXPECT_NE(m.find("mix.yaml: 'datasets' must be a non-empty list"), std::string::npos) << m;
  m = error_of([&] { open("- json_path: a.json\n"); });
  EXPECT_NE(m.find("mix.yaml: a data mixture is a map with a 'datasets' list"), std::string::npos) << m;
  write_text(dir + "/broken.json", "[{\"id\": 1,, }]");
  m = error_of([&] { open("datasets:\n  - json_path: broken.json\n"); });
  EXPECT_NE(m.find(dir + "/broken.json: invalid JSON at line 1"), std::string::npos) << m;
  EXPECT_NE(m.find("sample 0"), std::string::npos) << m;
}

TEST(MixtureRows, CountsAsLlavaNextRoundsThem) {
  // (strategy, samples in the file) -> samples kept, worked out by hand from math.ceil(N * n / 100)
  const std::vector<std::tuple<std::string, size_t, uint64_t>> cases = {
      {"all", 9, 9},        {"first:1%", 9, 1},     {"first:0%", 9, 0},   {"end:100%", 9, 9},
      {"first:34%", 3, 2},  {"end:33%", 3, 1},      {"random:50%", 1, 1}, {"first:0.5%", 1000, 5},
      {"first:5", 3, 3},    {"end:2", 3, 2},        {"first:10%", 0, 0},  {" first : 20% ", 10, 2}};
  for (const auto& [strategy, n, want] : cases) {
    const RowSelection sel = select_rows(strategy, n, 1, 0);
    EXPECT_EQ(sel.count, want) << strategy << " of " << n;
    if (strategy.find("random") == std::string::npos) {
      EXPECT_TRUE(sel.rows.empty()) << strategy;
    }
  }
  EXPECT_EQ(select_rows("end:2", 3, 1, 0).first, 1u);
  EXPECT_THROW(check_sampling_strategy("first:-1"), Error);
  EXPECT_THROW(check_sampling_strategy("first:10%:3"), Error);
}
